//! The `keelson` binary: parse arguments, run, map to an exit code.

use std::process::ExitCode;

use clap::Parser;

// Loading a repository allocates many small strings; mimalloc makes that markedly faster
// than the system allocator (see benches/core.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes are decided here, once: 0 success (plan: no changes), 2 plan has changes (with
/// --detailed-exitcode), 1 an error or a failure the verb reported.
fn main() -> ExitCode {
    let cli = keelson::cli::Cli::parse();
    let style = cli.style();
    match keelson::cli::run(cli) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            eprintln!("{}", keelson::cli::error_report(&e, style));
            ExitCode::from(1)
        }
    }
}
