//! The `embtune` binary: parse → `cli::run` → print the error chain → exit code. Nothing else.

use clap::Parser;

fn main() {
    embtune::runtime::tune_allocator();
    let cli = embtune::cli::Cli::parse();
    if let Err(e) = embtune::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
