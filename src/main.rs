//! The `embtune` binary: expand `--config` → parse → install logging (-v/-q/RUST_LOG) →
//! `cli::run` (or `--print-config`) → print the error chain → exit code. Nothing else.

use clap::FromArgMatches;

fn main() {
    embtune::runtime::tune_allocator();
    embtune::runtime::tune_threads();
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let ex = embtune::cli::config_file::expand(std::env::args_os().collect())?;
    let matches = embtune::cli::config_file::command().get_matches_from(ex.args);
    embtune::logging::init(embtune::cli::verbosity(&matches));
    if ex.print_config {
        print!("{}", embtune::cli::config_file::print(&matches)?);
        return Ok(());
    }
    let cli = embtune::cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    embtune::cli::run(cli)
}
