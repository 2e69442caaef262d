//! `keelson up`: the daemon.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use super::context::Context;
use super::{CliError, Exit, LogFormat, UpArgs};
use crate::daemon::{LoopConfig, Source, run};
use crate::engine::Engine;
use crate::server::{Shared, router};
use crate::source::git::{GitAuth, GitSource};
use crate::store::Owner;

/// A secret from an environment variable or a file (the file wins), trimmed; never logged.
fn secret(env: &str, file: Option<&PathBuf>) -> Result<Option<String>, CliError> {
    if let Some(f) = file {
        let v = std::fs::read_to_string(f).map_err(|source| CliError::File {
            action: "read the secret file",
            path: f.clone(),
            source,
        })?;
        return Ok(Some(v.trim().to_string()).filter(|v| !v.is_empty()));
    }
    Ok(std::env::var(env)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty()))
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEELSON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// Runs `keelson up` until SIGTERM/SIGINT.
pub async fn run_up(args: &UpArgs) -> Result<Exit, CliError> {
    init_logs(args.log_format);
    let is_local_dir = std::path::Path::new(&args.repo).is_dir();
    let state = args.state_dir.clone().unwrap_or_else(|| {
        if is_local_dir {
            PathBuf::from(&args.repo).join(".keelson")
        } else {
            PathBuf::from(".keelson")
        }
    });
    let source = if args.watch_files {
        if !is_local_dir {
            return Err(CliError::argument(
                "--watch-files needs --repo to be a local directory",
                "drop --watch-files to follow a remote repository",
            ));
        }
        Source::Dir(PathBuf::from(&args.repo))
    } else {
        let url = if is_local_dir {
            std::fs::canonicalize(&args.repo)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| args.repo.clone())
        } else {
            args.repo.clone()
        };
        Source::Git(GitSource {
            url,
            branch: args.branch.clone(),
            path: args.path.clone(),
            dir: state.join("git"),
            auth: GitAuth {
                token: secret(crate::credentials::GIT_TOKEN, args.git_token_file.as_ref())?,
                ssh_key: args.ssh_key.clone(),
                known_hosts: args.known_hosts.clone(),
            },
        })
    };
    let repository = match &args.forge_repo {
        Some(r) => Some(
            r.parse::<crate::forge::RepoSlug>()
                .map_err(|e| CliError::argument(e, "give --forge-repo as owner/name"))?,
        ),
        None => crate::forge::RepoSlug::from_remote(&args.repo),
    };
    match &repository {
        Some(r) => tracing::info!(repository = %r, "webhooks for other repositories are ignored"),
        None => tracing::info!(
            "webhooks are accepted for any repository (set --forge-repo to restrict)"
        ),
    }
    let ctx = Context::new(PathBuf::from(&args.repo), state.clone()).with_store(args.store.clone());
    let store = ctx.store()?;
    // A replica's name goes into its locks and history, so status says who holds what.
    let owner = Owner::this_process(
        &args.replica.as_ref().map_or("keelson up".to_string(), |r| {
            format!("keelson up --replica {r}")
        }),
        crate::clock::now(),
    );
    let providers = ctx.providers();
    // Pull request comments need a Git source (to fetch heads) and a forge token.
    let mut forge_client = None;
    let pull_requests = match (
        &source,
        super::review::forge_token(args.forge_token_file.as_ref())?,
    ) {
        (Source::Git(git), Some(token)) => {
            let forge = crate::forge::github::GitHub::new(
                &args.forge_url,
                token,
                crate::forge::github::Retry::default(),
            )
            .map_err(CliError::Forge)?;
            let forge = Arc::new(forge);
            forge_client = Some(forge.clone());
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            let worker = crate::daemon::pull_request::Worker {
                source: GitSource {
                    dir: state.join("git-pulls"),
                    ..git.clone()
                },
                forge,
                forge_url: args.forge_url.clone(),
                providers: providers.clone(),
                store: store.clone(),
                forge_user: args.forge_user.clone(),
                owner: owner.clone(),
            };
            tokio::spawn(worker.run(rx));
            tracing::info!(forge = %args.forge_url, "pull_request webhooks get plan comments");
            Some(tx)
        }
        _ => None,
    };
    let api_token = secret(crate::credentials::API_TOKEN, args.api_token_file.as_ref())?;
    let identities = super::delivery::identities()?;
    // Sign-in cookies are signed with a key every replica derives from the store's own.
    let cookie_key = store.spec_key()?.derive("keelson dashboard sign-in cookie");
    let reads = Arc::new(crate::server::access::ReadAccess::daemon(
        args.reads.public_read,
        api_token
            .iter()
            .map(|t| crate::identity::digest(t))
            .chain(identities.digests()),
        cookie_key,
    ));
    let shared = Arc::new(Shared {
        status: Default::default(),
        status_json: std::sync::RwLock::new("{}".into()),
        metrics: crate::server::metrics::Metrics::with_analyses(store.clone()),
        trigger: tokio::sync::Notify::new(),
        store: store.clone(),
        api_token,
        identities,
        webhook_secret: secret(
            crate::credentials::WEBHOOK_SECRET,
            args.webhook_secret_file.as_ref(),
        )?,
        pull_requests,
        repository,
        desired: Default::default(),
        events: Default::default(),
        board: Arc::new(crate::dashboard::Board::new(Some(store.clone()))),
        forge: forge_client,
        refresh: tokio::sync::Notify::new(),
        reads,
    });
    let engine = Arc::new(Engine {
        store,
        providers: providers.clone(),
        owner,
        parallelism: args.parallelism,
        stop: Default::default(),
        slots: Default::default(),
        events: shared.events.clone(),
    });
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|source| CliError::Listen {
            addr: args.listen.clone(),
            source,
        })?;
    tracing::info!(listen = %args.listen, source = %source.describe(), state = %state.display(), "keelson up");
    if shared.api_token.is_none() && !shared.identities.has_tokens() {
        tracing::warn!(
            "no API token (KEELSON_API_TOKEN): suspend, resume and sync over HTTP are refused"
        );
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limits = crate::server::Limits {
        head: args.client_timeout.to_std(),
        body: args.client_timeout.to_std(),
        connections: args.max_connections,
    };
    let board = shared.board.clone();
    let server = tokio::spawn(crate::server::serve(
        listener,
        router(shared.clone()),
        limits,
        stop_rx,
    ));
    // Re-plan on file save during local development.
    let _watcher = if let Source::Dir(dir) = &source {
        watch(dir, shared.clone())
    } else {
        None
    };
    let cfg = LoopConfig {
        interval: args.interval.to_std(),
        drift_interval: args.drift_interval.to_std(),
        shutdown_grace: std::time::Duration::from_secs(30),
    };
    run(
        source,
        cfg,
        shared,
        engine,
        providers,
        crate::demo::shutdown_signal(),
    )
    .await;
    board.close();
    let _ = stop_tx.send(true);
    let _ = server.await;
    Ok(Exit::Success)
}

fn watch(dir: &std::path::Path, shared: Arc<Shared>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            let relevant = ev.paths.iter().any(|p| {
                let s = p.to_string_lossy();
                (s.ends_with(".yaml") || s.ends_with(".yml"))
                    && !s.contains("/.keelson/")
                    && !s.contains("/target/")
            });
            if relevant {
                shared.trigger.notify_one();
            }
        }
    })
    .ok()?;
    w.watch(dir, notify::RecursiveMode::Recursive).ok()?;
    Some(w)
}
