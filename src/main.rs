//! The `embtune` binary: expand `--config` → parse → install logging (-v/-q/RUST_LOG) → flag
//! ranges and flags without effect (`cli::ranges`, `cli::applies`) → `cli::run` (or
//! `--print-config`) → print the error chain → exit code. Nothing else.

use clap::FromArgMatches;

fn main() {
    // `embtune … | head` ends quietly like other Unix tools (Rust ignores SIGPIPE, so printing
    // to a closed pipe would panic).
    // SAFETY: restoring a signal's default disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    embtune::runtime::tune_allocator();
    embtune::runtime::tune_threads();
    embtune::runtime::adopt_main_thread();
    if let Err(e) = run() {
        if let Some(i) = e.downcast_ref::<embtune::signals::Interrupted>() {
            eprintln!("{i}");
            std::process::exit(128 + i.signal);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let ex = embtune::cli::config_file::expand(std::env::args_os().collect())?;
    let command = if ex.print_config {
        embtune::cli::config_file::command_for_print()
    } else {
        embtune::cli::config_file::command()
    };
    let matches = command.clone().get_matches_from(ex.args);
    embtune::logging::init(embtune::cli::verbosity(&matches));
    // Before any work: every numeric flag in its range, no flag that would have no effect.
    embtune::cli::ranges::check(&matches, &command)?;
    embtune::cli::applies::check(&matches, &command)?;
    if ex.print_config {
        print!("{}", embtune::cli::config_file::print(&matches)?);
        return Ok(());
    }
    let cli = embtune::cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    embtune::cli::run(cli)
}
