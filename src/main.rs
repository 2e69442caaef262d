//! The `keelson` binary: parse arguments, run, map to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    keelson::cli::run(keelson::cli::Cli::parse())
}
