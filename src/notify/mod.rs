//! Notifications: typed rollout events, routed to each environment's destinations (Slack,
//! signed webhooks, GitHub deployments) through a bounded queue per destination with retries,
//! so a slow or dead receiver never delays a rollout step.

mod deliver;
mod event;
pub mod payload;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use deliver::Options;
pub use event::{Event, EventKind, Severity};

use crate::model::DesiredState;
use crate::spec::{EnvName, Notification, NotificationKind, SecretSource};

/// Counts of one destination, for metrics and status.
#[derive(Debug, Default)]
pub struct Stats {
    /// Delivered.
    pub sent: AtomicU64,
    /// Deliveries retried.
    pub retried: AtomicU64,
    /// Given up on (after retries, or refused by the receiver), or dropped with the queue full.
    pub dead_letters: AtomicU64,
}

/// One destination's counts, read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DestinationStatus {
    /// The environment declaring it.
    pub environment: String,
    /// Its name.
    pub name: String,
    /// Its type.
    pub kind: &'static str,
    /// Delivered.
    pub sent: u64,
    /// Retried.
    pub retried: u64,
    /// Given up on or dropped.
    pub dead_letters: u64,
    /// Why it cannot deliver at all (a secret not set), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// A destination's secrets, read from their sources. Never printed.
#[derive(Clone, Default)]
pub(crate) struct Secrets {
    url: Option<String>,
    key: Option<Vec<u8>>,
    token: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(<redacted>)")
    }
}

/// Reads a secret from its source; the error names the source, never a value.
fn read(source: &SecretSource) -> Result<String, String> {
    if let Some(var) = &source.env {
        return std::env::var(var)
            .map(|v| v.trim().to_string())
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("environment variable {var} is not set"));
    }
    if let Some(file) = &source.file {
        return std::fs::read_to_string(file)
            .map(|v| v.trim().to_string())
            .map_err(|e| format!("cannot read {file}: {}", e.kind()));
    }
    Err("the secret source names neither `env` nor `file`".into())
}

/// Whether `url` may carry notifications: HTTPS, or HTTP to this machine only.
pub fn url_allowed(url: &str) -> Result<(), String> {
    let Ok(u) = url::Url::parse(url) else {
        return Err("not a URL".into());
    };
    match u.scheme() {
        "https" => Ok(()),
        "http" => match u.host() {
            Some(url::Host::Domain("localhost")) => Ok(()),
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() => Ok(()),
            Some(url::Host::Ipv6(ip)) if ip.is_loopback() => Ok(()),
            _ => {
                Err("plain HTTP outside this machine would send events in clear; use HTTPS".into())
            }
        },
        other => Err(format!("`{other}` is not HTTP(S)")),
    }
}

/// A destination's secrets, or why it cannot deliver.
fn secrets(n: &Notification) -> Result<Secrets, String> {
    let mut s = Secrets::default();
    match n.kind {
        NotificationKind::Slack | NotificationKind::Webhook => {
            let src = n
                .url_from
                .as_ref()
                .ok_or_else(|| "it has no urlFrom".to_string())?;
            let url = read(src)?;
            url_allowed(&url).map_err(|why| format!("its URL is refused: {why}"))?;
            s.url = Some(url);
            if let Some(k) = &n.secret_from {
                s.key = Some(read(k)?.into_bytes());
            }
        }
        NotificationKind::GithubDeployments => {
            let src = n
                .token_from
                .as_ref()
                .ok_or_else(|| "it has no tokenFrom".to_string())?;
            s.token = Some(read(src)?);
        }
    }
    Ok(s)
}

/// Every environment's destinations, as one comparable text.
fn config_of(desired: &DesiredState) -> String {
    desired
        .environments
        .values()
        .map(|e| serde_json::to_string(&e.notifications).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A destination as routed: which environment's events of which kinds go to its queue.
struct Route {
    environment: EnvName,
    kinds: Option<BTreeSet<EventKind>>,
    tx: tokio::sync::mpsc::Sender<Event>,
    stats: Arc<Stats>,
}

/// The running destinations of a desired state.
pub struct Notifier {
    routes: Mutex<Vec<Route>>,
    workers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    status: Vec<(DestinationStatus, Arc<Stats>)>,
    config: String,
}

impl Notifier {
    /// Starts a worker per destination declared in `desired`'s environments. Destinations
    /// whose secrets cannot be read are reported in the status and logged, by name only.
    pub fn start(desired: &DesiredState, opts: &Options) -> Self {
        let mut routes = Vec::new();
        let mut workers = Vec::new();
        let mut status = Vec::new();
        for env in desired.environments.values() {
            for n in &env.notifications {
                let stats = Arc::new(Stats::default());
                let mut st = DestinationStatus {
                    environment: env.name.to_string(),
                    name: n.name.clone(),
                    kind: n.kind.as_str(),
                    sent: 0,
                    retried: 0,
                    dead_letters: 0,
                    unavailable: None,
                };
                match secrets(n) {
                    Ok(secrets) => {
                        let (tx, rx) = tokio::sync::mpsc::channel(opts.queue.max(1));
                        workers.push(tokio::spawn(deliver::worker(
                            n.clone(),
                            secrets,
                            rx,
                            stats.clone(),
                            opts.clone(),
                        )));
                        routes.push(Route {
                            environment: env.name.clone(),
                            kinds: n.events.as_ref().map(|k| {
                                k.iter().filter_map(|name| EventKind::parse(name)).collect()
                            }),
                            tx,
                            stats: stats.clone(),
                        });
                    }
                    Err(why) => {
                        tracing::warn!(
                            environment = %env.name,
                            destination = %n.name,
                            "notifications to {} are off: {why}",
                            n.name
                        );
                        st.unavailable = Some(why);
                    }
                }
                status.push((st, stats));
            }
        }
        Self {
            routes: Mutex::new(routes),
            workers: Mutex::new(workers),
            status,
            config: config_of(desired),
        }
    }

    /// Whether `desired` declares the same destinations (so this notifier can stay).
    pub fn serves(&self, desired: &DesiredState) -> bool {
        config_of(desired) == self.config
    }

    /// Queues an event for every destination that takes it; never waits. An event without an
    /// environment goes to every environment's destinations. A full queue drops the event and
    /// counts a dead letter.
    pub fn emit(&self, e: &Event) {
        let Ok(routes) = self.routes.lock() else {
            return;
        };
        for r in routes.iter() {
            if e.environment
                .as_ref()
                .is_some_and(|env| env != &r.environment)
            {
                continue;
            }
            if r.kinds.as_ref().is_some_and(|k| !k.contains(&e.kind)) {
                continue;
            }
            if r.tx.try_send(e.clone()).is_err() {
                r.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(event = %e.kind, "a notification queue is full: event dropped");
            }
        }
    }

    /// Each destination's counts.
    pub fn status(&self) -> Vec<DestinationStatus> {
        self.status
            .iter()
            .map(|(s, stats)| DestinationStatus {
                sent: stats.sent.load(Ordering::Relaxed),
                retried: stats.retried.load(Ordering::Relaxed),
                dead_letters: stats.dead_letters.load(Ordering::Relaxed),
                ..s.clone()
            })
            .collect()
    }

    /// Stops taking events and waits at most `wait` for the queues to drain; returns how many
    /// destinations had not finished.
    pub async fn flush(&self, wait: Duration) -> usize {
        if let Ok(mut routes) = self.routes.lock() {
            routes.clear();
        }
        let workers: Vec<_> = self
            .workers
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        let deadline = tokio::time::Instant::now() + wait;
        let mut late = 0;
        for w in workers {
            let abort = w.abort_handle();
            if tokio::time::timeout_at(deadline, w).await.is_err() {
                abort.abort();
                late += 1;
            }
        }
        late
    }
}

/// Sends one event to `desired`'s destinations and waits (at most the flush wait) for it to
/// go: for commands that act once and exit.
pub async fn tell(desired: &DesiredState, e: Event) {
    let n = Notifier::start(desired, &Options::from_env());
    n.emit(&e);
    n.flush(Options::flush_wait()).await;
}

/// The notifier in force, swapped when the destinations change; emitting with none is a no-op.
#[derive(Default)]
pub struct Events(
    RwLock<Option<Arc<Notifier>>>,
    Mutex<std::collections::HashSet<String>>,
);

impl Events {
    /// Whether `key` is new (then remembered): events about a lasting state (an approval
    /// awaited, a cluster unhappy) are told once, not at every reconcile.
    pub fn first_time(&self, key: &str) -> bool {
        self.1
            .lock()
            .map(|mut seen| {
                if seen.len() > 100_000 {
                    seen.clear();
                }
                seen.insert(key.to_string())
            })
            .unwrap_or(false)
    }

    /// Puts `n` in force; returns the one it replaces.
    pub fn set(&self, n: Arc<Notifier>) -> Option<Arc<Notifier>> {
        self.0.write().ok().and_then(|mut g| g.replace(n))
    }

    /// The notifier in force.
    pub fn current(&self) -> Option<Arc<Notifier>> {
        self.0.read().ok().and_then(|g| g.clone())
    }

    /// Emits an event through the notifier in force.
    pub fn emit(&self, e: Event) {
        if let Some(n) = self.current() {
            n.emit(&e);
        }
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}
