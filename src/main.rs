//! The `keelson` binary: parse arguments, run, map to an exit code.

use std::process::ExitCode;

use clap::Parser;

// Loading a repository allocates many small strings; mimalloc makes that markedly faster
// than the system allocator (see benches/core.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    keelson::cli::run(keelson::cli::Cli::parse())
}
