//! Delivering one destination's events, in order, with retries: backoff with jitter on 5xx,
//! 429 and timeouts, honouring `Retry-After`; what cannot be delivered is a dead letter.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Event, EventKind, Secrets, Stats, payload};
use crate::spec::{Notification, NotificationKind};

/// How deliveries are made.
#[derive(Debug, Clone)]
pub struct Options {
    /// Events a destination's queue holds before new ones are dropped.
    pub queue: usize,
    /// Tries per event, the first included.
    pub attempts: u32,
    /// The first backoff; doubled each retry, jittered.
    pub backoff: Duration,
    /// The longest wait between tries, whatever `Retry-After` asks.
    pub max_wait: Duration,
    /// The longest one request may take.
    pub timeout: Duration,
}

impl Options {
    /// The defaults, with the first backoff from `KEELSON_NOTIFY_BACKOFF` (e.g. `100ms`).
    pub fn from_env() -> Self {
        let mut o = Self::default();
        if let Some(d) = std::env::var("KEELSON_NOTIFY_BACKOFF")
            .ok()
            .and_then(|v| v.parse::<crate::spec::Duration>().ok())
        {
            o.backoff = d.to_std();
        }
        o
    }

    /// How long a command waits at exit for its events to go out: `KEELSON_NOTIFY_WAIT`, or
    /// 10 s.
    pub fn flush_wait() -> Duration {
        std::env::var("KEELSON_NOTIFY_WAIT")
            .ok()
            .and_then(|v| v.parse::<crate::spec::Duration>().ok())
            .map_or(Duration::from_secs(10), |d| d.to_std())
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            queue: 256,
            attempts: 5,
            backoff: Duration::from_millis(500),
            max_wait: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why one try failed.
enum Failed {
    /// Worth another try, after this long if the receiver said.
    Retry(Option<Duration>, String),
    /// Not worth another.
    Permanent(String),
}

/// How an HTTP answer ends a try.
fn judge(status: reqwest::StatusCode, headers: &reqwest::header::HeaderMap) -> Result<(), Failed> {
    if status.is_success() {
        return Ok(());
    }
    let after = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Err(Failed::Retry(after, format!("it answered {status}")))
    } else {
        Err(Failed::Permanent(format!("it answered {status}")))
    }
}

/// Sends one request, built afresh for each try, until it succeeds or the tries run out.
async fn with_retries(
    opts: &Options,
    stats: &Stats,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<(), String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tried = match build().send().await {
            Ok(r) => judge(r.status(), r.headers()),
            Err(e) => Err(transport(&e)),
        };
        match tried {
            Ok(()) => return Ok(()),
            Err(Failed::Permanent(why)) => return Err(why),
            Err(Failed::Retry(_, why)) if attempt >= opts.attempts.max(1) => {
                return Err(format!("{why}, {attempt} tries"));
            }
            Err(Failed::Retry(after, _)) => {
                stats.retried.fetch_add(1, Ordering::Relaxed);
                let backoff = opts
                    .backoff
                    .saturating_mul(2u32.saturating_pow(attempt - 1))
                    .mul_f64(1.0 + fastrand::f64() * 0.5);
                tokio::time::sleep(after.unwrap_or(backoff).min(opts.max_wait)).await;
            }
        }
    }
}

/// A transport error as a try's failure, without the URL (it may hold a secret).
fn transport(e: &reqwest::Error) -> Failed {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    Failed::Retry(None, format!("cannot reach it ({what})"))
}

/// GitHub deployments in flight and live, per GitHub environment.
#[derive(Default)]
struct Deployments {
    /// The deployment of the rollout in flight, and its version.
    current: HashMap<String, (u64, Option<String>)>,
    /// The deployment last reported a success: made inactive when another replaces it.
    live: HashMap<String, u64>,
}

/// Delivers a destination's events in order until its queue closes.
pub(super) async fn worker(
    n: Notification,
    secrets: Secrets,
    mut rx: tokio::sync::mpsc::Receiver<Event>,
    stats: Arc<Stats>,
    opts: Options,
) {
    let http = match reqwest::Client::builder()
        .user_agent(concat!("keelson/", env!("CARGO_PKG_VERSION")))
        .timeout(opts.timeout)
        .connect_timeout(opts.timeout)
        .build()
    {
        Ok(c) => c,
        Err(_) => return,
    };
    let github = match (n.kind, &secrets.token, &n.repository) {
        (NotificationKind::GithubDeployments, Some(token), Some(repo)) => {
            let retry = crate::forge::github::Retry {
                attempts: opts.attempts,
                base: opts.backoff,
                max_wait: opts.max_wait,
            };
            let api = n
                .api_url
                .as_deref()
                .unwrap_or(crate::forge::github::DEFAULT_API);
            match (
                crate::forge::github::GitHub::new(
                    api,
                    crate::forge::github::Token::new(token.clone()),
                    retry,
                ),
                repo.parse::<crate::forge::RepoSlug>(),
            ) {
                (Ok(gh), Ok(slug)) => Some((gh, slug)),
                _ => None,
            }
        }
        _ => None,
    };
    let mut deployments = Deployments::default();
    while let Some(mut e) = rx.recv().await {
        if e.link.is_none() {
            e.link.clone_from(&n.environment_url);
        }
        let done = match n.kind {
            NotificationKind::Slack => {
                let body = payload::slack(&e);
                let url = secrets.url.clone().unwrap_or_default();
                with_retries(&opts, &stats, || http.post(&url).json(&body)).await
            }
            NotificationKind::Webhook => {
                let body = payload::webhook_body(&e);
                let url = secrets.url.clone().unwrap_or_default();
                let signature = secrets.key.as_ref().map(|k| payload::signature(k, &body));
                with_retries(&opts, &stats, || {
                    let req = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-keelson-event", e.kind.as_str())
                        .header("x-keelson-event-id", &e.id)
                        .body(body.clone());
                    match &signature {
                        Some(s) => req.header("x-keelson-signature", s),
                        None => req,
                    }
                })
                .await
            }
            NotificationKind::GithubDeployments => match &github {
                Some((gh, repo)) => deploy(gh, repo, &n, &e, &mut deployments).await,
                None => Err("the repository is not owner/name".into()),
            },
        };
        match done {
            Ok(()) => {
                stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => {
                stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(destination = %n.name, event = %e.kind, id = %e.id, "notification not delivered: {why}");
            }
        }
    }
}

/// A rollout event as GitHub deployments: a deployment per environment and version when a
/// rollout starts (`in_progress`), then `success` (the one it replaces `inactive`) or
/// `failure`. Other events are not deployments and are left out.
async fn deploy(
    gh: &crate::forge::github::GitHub,
    repo: &crate::forge::RepoSlug,
    n: &Notification,
    e: &Event,
    d: &mut Deployments,
) -> Result<(), String> {
    let Some(env) = payload::github_environment(e) else {
        return Ok(());
    };
    let url = n.environment_url.as_deref();
    let err = |e: crate::forge::ForgeError| crate::report::chain(&e);
    let current = |d: &mut Deployments| {
        d.current
            .get(&env)
            .filter(|(_, v)| *v == e.to_version)
            .map(|(id, _)| *id)
    };
    let state = match e.kind {
        EventKind::RolloutStarted => "in_progress",
        EventKind::RolloutSucceeded => "success",
        EventKind::RolloutFailed | EventKind::RolledBack => "failure",
        _ => return Ok(()),
    };
    if e.kind == EventKind::RolledBack && current(d).is_none() {
        // Its failure is already on the deployment.
        return Ok(());
    }
    let id = match current(d) {
        Some(id) if e.kind != EventKind::RolloutStarted => id,
        _ => {
            let id = gh
                .create_deployment(repo, &payload::github_deployment(e, &env))
                .await
                .map_err(err)?;
            d.current.insert(env.clone(), (id, e.to_version.clone()));
            id
        }
    };
    gh.create_deployment_status(repo, id, &payload::github_status(state, e, url))
        .await
        .map_err(err)?;
    if state == "success" {
        // The one it replaces: remembered, or (a new process) the newest other deployment
        // GitHub lists for this environment.
        let old = match d.live.insert(env.clone(), id) {
            Some(old) => Some(old),
            None => gh
                .deployments(repo, &env)
                .await
                .map_err(err)?
                .into_iter()
                .find(|other| *other != id),
        };
        if let Some(old) = old.filter(|old| *old != id) {
            gh.create_deployment_status(repo, old, &payload::github_status("inactive", e, url))
                .await
                .map_err(err)?;
        }
        d.current.remove(&env);
    }
    if state == "failure" {
        d.current.remove(&env);
    }
    Ok(())
}
