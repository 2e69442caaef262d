//! The command line: arguments, verbs, output and exit codes.

mod output;
mod validate;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub use output::{Style, render_diagnostics};

/// Keelson: declarative delivery. Edit YAML in Git; Keelson plans and converges your clusters.
#[derive(Debug, Parser)]
#[command(name = "keelson", version, about, long_about = None, propagate_version = true, after_help = "Exit codes: 0 success (plan: no changes), 1 error or invalid, 2 plan has changes (with --detailed-exitcode).")]
pub struct Cli {
    /// When to use colours.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, env = "KEELSON_COLOR", hide_env_values = true)]
    pub color: ColorChoice,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// When to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colours on a terminal only.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Whether to colour stdout.
    pub fn enabled(self) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }
}

/// Output formats for structured results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// For programs; stable and documented.
    Json,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a config repository: schemas, references and rules. Exit 0 valid, 1 invalid.
    Validate(ValidateArgs),
}

/// Arguments of `keelson validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The config repository.
    #[arg(
        long,
        default_value = ".",
        env = "KEELSON_REPO",
        hide_env_values = true
    )]
    pub repo: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let style = Style {
        color: cli.color.enabled(),
    };
    let result = match cli.command {
        Command::Validate(args) => validate::run(&args, style),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", output::error_report(&e, style));
            ExitCode::from(1)
        }
    }
}
