//! What the command line reports: every error keeps its cause (printed as `Caused by:` lines)
//! and, where there is one, a hint; how a verb ended is an [`Exit`] that `main` turns into the
//! process's exit code.

use std::path::PathBuf;

use crate::provider::ProviderError;
use crate::source::SourceError;
use crate::spec::NameError;
use crate::store::StoreError;

/// How a verb ended, when it ran to its end. `main` maps it to the exit code, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success; for `plan --detailed-exitcode`, no changes (0).
    Success,
    /// `plan --detailed-exitcode`: there are changes (2).
    Changes,
    /// The verb ran and what it reports is a failure, already printed: invalid specs, a failed
    /// cluster, a target not observed (1).
    Failure,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Changes => 2,
            Self::Failure => 1,
        }
    }
}

/// Errors of the command line; the core's and the edges' errors come through with their cause.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The repository could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A target's provider failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// A name given on the command line is not valid.
    #[error("`{value}` is not a valid {what} name")]
    Name {
        /// Which kind of name.
        what: &'static str,
        /// What was given.
        value: String,
        /// Why not.
        #[source]
        source: NameError,
    },
    /// The specs do not validate, so nothing that needs them can run.
    #[error("the specs are invalid ({errors} errors)")]
    InvalidSpecs {
        /// How many errors.
        errors: usize,
    },
    /// An argument the command cannot act on, phrased for a person.
    #[error("{what}")]
    Argument {
        /// What is wrong.
        what: String,
        /// What to do, where there is something to say.
        hint: Option<String>,
    },
    /// A file could not be read or written.
    #[error("cannot {action} `{path}`")]
    File {
        /// `read`, `write`, ...
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A saved plan that is not one this version can run.
    #[error("`{path}` is not a keelson plan this version can run")]
    PlanFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A saved plan that no longer matches the specs or the live state.
    #[error("stale plan `{path}`: {why}")]
    StalePlan {
        /// The file.
        path: PathBuf,
        /// What changed.
        why: String,
    },
    /// `apply` without a terminal to confirm on and without `--auto-approve`.
    #[error("apply needs confirmation")]
    NeedsConfirmation,
    /// The daemon's API refused or could not be reached.
    #[error("the daemon at {url}: {what}")]
    Api {
        /// The URL.
        url: String,
        /// What happened.
        what: String,
        /// The cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The forge refused or could not be reached.
    #[error("publishing the plan failed")]
    Forge(#[source] crate::forge::ForgeError),
    /// A socket could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The demo app could not serve.
    #[error("demo-app cannot serve on port {port}")]
    Demo {
        /// The port.
        port: u16,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The local agent could not run.
    #[error(transparent)]
    Agent(#[from] crate::provider::local::agent::AgentError),
    /// The async runtime could not start.
    #[error("cannot start the runtime")]
    Runtime {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// An argument error with what to do.
    pub fn argument(what: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Argument {
            what: what.into(),
            hint: Some(hint.into()),
        }
    }

    /// What a person can do about it, printed as `hint:`.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Argument { hint, .. } => hint.clone(),
            Self::InvalidSpecs { .. } => Some("run `keelson validate` to see every problem".into()),
            Self::StalePlan { path, .. } => Some(format!(
                "run `keelson plan --out {}` again",
                path.display()
            )),
            Self::PlanFile { .. } => Some("plan again with this keelson: `keelson plan --out FILE`".into()),
            Self::NeedsConfirmation => {
                Some("answer on a terminal, or pass --auto-approve".into())
            }
            Self::Forge(e) => e.hint().map(str::to_string),
            Self::Api { what, .. } if what.contains("401") => {
                Some("set KEELSON_API_TOKEN to the daemon's API token".into())
            }
            Self::Name { .. } => Some(
                "names are lowercase letters, digits and '-', starting and ending with a letter or digit".into(),
            ),
            _ => None,
        }
    }
}

/// A name from the command line, checked.
pub fn name<T>(
    what: &'static str,
    value: &str,
    parse: impl FnOnce(String) -> Result<T, NameError>,
) -> Result<T, CliError> {
    parse(value.to_string()).map_err(|source| CliError::Name {
        what,
        value: value.to_string(),
        source,
    })
}
