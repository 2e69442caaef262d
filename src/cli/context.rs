//! The composition root: where the command line opens the store, builds the providers and
//! loads the specs. Every verb receives a [`Context`]; nothing else builds these.
//!
//! A new target is registered here, in [`Context::providers`], and nowhere else.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::{CliError, Location, Style, render_diagnostics};
use crate::model::DesiredState;
use crate::observe::Providers;
use crate::pipeline::check_keyed;
use crate::plan::Selection;
use crate::provider::ec2::Ec2Provider;
use crate::provider::kubernetes::KubernetesProvider;
use crate::provider::local::LocalProvider;
use crate::source::{SourceSet, read_dir};
use crate::spec::{AppName, EnvName, ProviderKind};
use crate::store::{PgStore, SqliteStore, Store};

/// Where a verb works and what it works with.
pub struct Context {
    /// The config repository.
    pub repo: PathBuf,
    /// The state directory.
    pub state: PathBuf,
    /// A shared store's URL (`--store`); SQLite in `state` without one.
    pub store_url: Option<String>,
    store: OnceLock<Arc<dyn Store>>,
    providers: OnceLock<Providers>,
}

/// The shared store's password: from the file KEELSON_STORE_PASSWORD_FILE names, else
/// KEELSON_STORE_PASSWORD, else none (the URL's, or the server trusts this client).
fn store_password() -> Result<Option<String>, CliError> {
    if let Some(path) = std::env::var_os(crate::credentials::STORE_PASSWORD_FILE) {
        let path = PathBuf::from(path);
        return std::fs::read_to_string(&path)
            .map(|p| Some(p.trim_end_matches(['\n', '\r']).to_string()))
            .map_err(|source| CliError::File {
                action: "read the store password",
                path,
                source,
            });
    }
    Ok(std::env::var(crate::credentials::STORE_PASSWORD).ok())
}

/// The state directory: `--state-dir`, else `<repo>/.keelson`.
pub fn state_dir(repo: &Path, explicit: Option<&PathBuf>) -> PathBuf {
    explicit.cloned().unwrap_or_else(|| repo.join(".keelson"))
}

impl Context {
    /// A context for a repository and a state directory.
    pub fn new(repo: PathBuf, state: PathBuf) -> Self {
        Self {
            repo,
            state,
            store_url: None,
            store: OnceLock::new(),
            providers: OnceLock::new(),
        }
    }

    /// The context of `--repo` and `--state-dir`.
    pub fn of(location: &Location) -> Self {
        Self::new(
            location.repo.clone(),
            state_dir(&location.repo, location.state_dir.as_ref()),
        )
        .with_store(location.store.clone())
    }

    /// The same context on a shared store (`None`: SQLite in the state directory).
    pub fn with_store(mut self, url: Option<String>) -> Self {
        self.store_url = url.filter(|u| !u.is_empty());
        self
    }

    /// The state store, opened on first use.
    pub fn store(&self) -> Result<Arc<dyn Store>, CliError> {
        if let Some(s) = self.store.get() {
            return Ok(s.clone());
        }
        let opened: Arc<dyn Store> = match &self.store_url {
            None => Arc::new(SqliteStore::open(&self.state)?),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Arc::new(PgStore::open(url, store_password()?.as_deref())?)
            }
            Some(_) => {
                return Err(CliError::Argument {
                    what: "--store takes a postgres:// URL".into(),
                    hint: Some(
                        "write postgres://USER@HOST:PORT/DATABASE, or leave --store out for SQLite in the state directory".into(),
                    ),
                });
            }
        };
        Ok(self.store.get_or_init(|| opened).clone())
    }

    /// The state store for verbs that only read it (`status`, `history`, `locks`, `plan`): when
    /// it cannot be opened for writing (read-only), it is opened for reading.
    pub fn reading_store(&self) -> Result<Arc<dyn Store>, CliError> {
        match self.store() {
            Ok(s) => Ok(s),
            Err(e) if self.store_url.is_some() => Err(e),
            Err(e) => match SqliteStore::open_read_only(&self.state) {
                Ok(s) => {
                    let s: Arc<dyn Store> = Arc::new(s);
                    Ok(self.store.get_or_init(|| s).clone())
                }
                Err(_) => Err(e),
            },
        }
    }

    /// The providers of this build: one registration per target kind.
    pub fn providers(&self) -> Providers {
        self.providers
            .get_or_init(|| {
                let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("keelson"));
                // The Kubernetes provider reads no kubeconfig until a Kubernetes target is used.
                Providers::new()
                    .with(
                        ProviderKind::Local,
                        Arc::new(LocalProvider::new(&self.state, exe)),
                    )
                    .with(
                        ProviderKind::Kubernetes,
                        Arc::new(KubernetesProvider::new()),
                    )
                    .with(ProviderKind::Ec2, Arc::new(Ec2Provider::new()))
            })
            .clone()
    }

    /// An engine acting as `command` (e.g. `keelson rollback`) on one cluster at a time.
    pub fn engine(&self, command: &str) -> Result<crate::engine::Engine, CliError> {
        Ok(crate::engine::Engine {
            store: self.store()?,
            providers: self.providers(),
            owner: crate::store::Owner::this_process(command, crate::clock::now()),
            parallelism: 1,
            stop: Default::default(),
            slots: Default::default(),
            events: Default::default(),
        })
    }

    /// The local target's provider (for `down`).
    pub fn local(&self) -> LocalProvider {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("keelson"));
        LocalProvider::new(&self.state, exe)
    }

    /// Reads and checks the specs with their revision; when they are invalid, prints every
    /// problem, the summary and `note` on stderr and returns `None`.
    pub fn load(
        &self,
        style: Style,
        note: Option<&str>,
    ) -> Result<Option<(DesiredState, String)>, CliError> {
        let sources = read_dir(&self.repo)?;
        let revision = sources.content_revision();
        let texts = source_texts(&sources);
        let checked = check_keyed(sources, self.reading_store()?.spec_key()?);
        match checked.desired {
            Some(desired) => Ok(Some((desired, revision))),
            None => {
                eprint!(
                    "{}",
                    render_diagnostics(
                        &checked.diagnostics,
                        |p: &Path| texts.get(p).map(String::as_str),
                        style
                    )
                );
                eprintln!("{}", super::validate::summary(&checked, style));
                if let Some(n) = note {
                    eprintln!("{n}");
                }
                Ok(None)
            }
        }
    }

    /// The specs, or an error saying they are invalid (for verbs that only read them).
    pub fn desired(&self) -> Result<(DesiredState, String), CliError> {
        let sources = read_dir(&self.repo)?;
        let revision = sources.content_revision();
        let checked = check_keyed(sources, self.reading_store()?.spec_key()?);
        let errors = checked.error_count();
        checked
            .desired
            .map(|d| (d, revision))
            .ok_or(CliError::InvalidSpecs { errors })
    }
}

/// The text of each source file, to quote lines in diagnostics.
pub fn source_texts(sources: &SourceSet) -> HashMap<PathBuf, String> {
    sources
        .files
        .iter()
        .filter_map(|f| {
            std::str::from_utf8(&f.bytes)
                .ok()
                .map(|t| (f.path.clone(), t.to_string()))
        })
        .collect()
}

/// Parses `--env`/`--app` filters.
pub fn selection(envs: &[String], apps: &[String]) -> Result<Selection, CliError> {
    Ok(Selection {
        environments: envs
            .iter()
            .map(|e| super::error::name("environment", e, EnvName::new))
            .collect::<Result<_, _>>()?,
        apps: apps
            .iter()
            .map(|a| super::error::name("application", a, AppName::new))
            .collect::<Result<_, _>>()?,
        clusters: Default::default(),
        orphans: false,
    })
}

/// The target a cluster lives on, as the specs declare it.
pub fn target_of(
    d: &DesiredState,
    id: &crate::model::ClusterId,
    what: &str,
) -> Result<crate::provider::TargetRef, CliError> {
    d.environments
        .get(&id.environment)
        .and_then(|e| e.targets.iter().find(|t| t.name == id.target))
        .map(|t| crate::provider::TargetRef {
            environment: id.environment.clone(),
            target: t.clone(),
        })
        .ok_or_else(|| {
            CliError::argument(
                format!("no target {} in the specs", id.target),
                format!("{what} only on a target the specs declare"),
            )
        })
}
