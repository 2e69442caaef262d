//! The per-cluster load-balancing proxy on the cluster's traffic port.
//!
//! Routes each request to a healthy instance of an enabled server group, choosing groups by
//! weight (smooth weighted round-robin, as nginx does, so shares are exact over short runs) and
//! instances round-robin. Changing the routes affects new requests at once; requests in flight
//! finish on the instance they started on (counted until their response body ends, so a group
//! can be drained before its instances stop). A connection error on an idempotent request is
//! retried on another instance, and a refused connection on any request.
//!
//! HTTP/1.1 is framed by hand ([`h1`], on `httparse`) rather than through hyper's server and
//! client: on loopback the proxy's cost is its share of two cores beside the instances and the
//! clients, and hyper's header maps, pool and per-connection dispatch task cost it 40 µs of
//! CPU a request against 23-27 µs now (see `benches/README.md`).

pub mod budget;
mod forward;
pub mod h1;
pub mod stats;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Idle connections kept per instance for clients to come.
const POOL_PER_INSTANCE: usize = 64;

/// An instance the proxy may route to.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Instance id, sent back in `X-Keelson-Instance`.
    pub id: Arc<str>,
    /// `127.0.0.1:port`.
    pub authority: Arc<str>,
    /// Requests in flight.
    pub inflight: Arc<AtomicUsize>,
    /// Set by the instance's health prober.
    pub healthy: Arc<AtomicBool>,
}

impl Backend {
    /// A backend for an instance on a local port.
    pub fn new(id: &str, port: u16, inflight: Arc<AtomicUsize>, healthy: Arc<AtomicBool>) -> Self {
        Self {
            id: id.into(),
            authority: format!("127.0.0.1:{port}").into(),
            inflight,
            healthy,
        }
    }
}

/// A server group as the proxy sees it.
#[derive(Debug, Clone)]
pub struct Route {
    /// Group name, sent back in `X-Keelson-Server-Group`.
    pub group: String,
    /// Weight among enabled groups; 0 takes no new requests.
    pub weight: u8,
    /// Its instances.
    pub backends: Vec<Backend>,
    /// What it served, counted.
    pub stats: Arc<stats::GroupStats>,
}

struct Table {
    routes: Vec<Route>,
    /// `X-Keelson-Server-Group` per route, `None` when not a valid header value.
    groups: Vec<Option<Vec<u8>>>,
}

#[derive(Default)]
struct Picker {
    current: Vec<i64>,
    next: Vec<usize>,
}

struct Shared {
    table: RwLock<Arc<Table>>,
    picker: Mutex<Picker>,
    /// Idle upstream connections by instance address, for new client connections.
    pool: Mutex<HashMap<Arc<str>, Vec<TcpStream>>>,
    /// `host` for requests that came without one: the traffic address they were sent to.
    host: Vec<u8>,
    /// Set by [`Proxy::stop`]: connections close instead of taking another request.
    stopped: AtomicBool,
}

impl Shared {
    fn table(&self) -> Option<Arc<Table>> {
        self.table.read().ok().map(|t| t.clone())
    }

    /// An idle connection to `authority` from the pool.
    fn take(&self, authority: &Arc<str>) -> Option<TcpStream> {
        self.pool.lock().ok()?.get_mut(authority)?.pop()
    }

    /// Returns an idle connection to the pool, unless the pool is full or the instance is
    /// no longer routed to.
    fn give(&self, authority: &Arc<str>, stream: TcpStream) {
        let routed = self.table().is_some_and(|t| {
            t.routes
                .iter()
                .any(|r| r.backends.iter().any(|b| b.authority == *authority))
        });
        if !routed {
            return;
        }
        if let Ok(mut pool) = self.pool.lock() {
            let idle = pool.entry(authority.clone()).or_default();
            if idle.len() < POOL_PER_INSTANCE {
                idle.push(stream);
            }
        }
    }
}

/// A running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    /// The port it listens on.
    pub port: u16,
}

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
#[error("traffic port {port} is already in use{}; choose another `traffic.port` or stop what holds it", owner.as_ref().map(|o| format!(" by {o}")).unwrap_or_default())]
pub struct BindError {
    /// The port.
    pub port: u16,
    /// Who holds it, if known.
    pub owner: Option<String>,
}

impl Proxy {
    /// Binds the port and starts serving with no routes, within the process's connection
    /// budget.
    pub fn start(port: u16) -> Result<Self, BindError> {
        Self::start_within(port, budget::Budget::process())
    }

    /// Binds the port and starts serving with no routes, holding at most what `budget` allows.
    pub fn start_within(port: u16, budget: Arc<budget::Budget>) -> Result<Self, BindError> {
        let busy = || BindError {
            port,
            owner: super::process::port_owner(port),
        };
        let socket = tokio::net::TcpSocket::new_v4().map_err(|_| busy())?;
        let _ = socket.set_reuseaddr(true);
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .map_err(|_| busy())?;
        let listener = socket.listen(1024).map_err(|_| busy())?;
        let shared = Arc::new(Shared {
            table: RwLock::new(Arc::new(Table {
                routes: Vec::new(),
                groups: Vec::new(),
            })),
            picker: Mutex::new(Picker::default()),
            pool: Mutex::new(HashMap::new()),
            host: format!("127.0.0.1:{port}").into_bytes(),
            stopped: AtomicBool::new(false),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of file descriptors anyway (other processes' share): the connection
                    // stays in the backlog, so without a pause this loop would spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                // Past the budget this client waits (and the ones after it in the backlog)
                // while an idle connection closes for it.
                let permit = budget.admit().await;
                let _ = stream.set_nodelay(true);
                tokio::spawn(forward::serve(s.clone(), stream, budget.clone(), permit));
            }
        });
        Ok(Self { shared, task, port })
    }

    /// Replaces the routes; new requests use them at once.
    pub fn set_routes(&self, routes: Vec<Route>) {
        let groups = routes
            .iter()
            .map(|r| h1::valid_value(r.group.as_bytes()).then(|| r.group.clone().into_bytes()))
            .collect();
        let n = routes.len();
        // Connections to instances no longer routed to are closed.
        if let Ok(mut pool) = self.shared.pool.lock() {
            pool.retain(|a, _| {
                routes
                    .iter()
                    .any(|r| r.backends.iter().any(|b| b.authority == *a))
            });
        }
        if let Ok(mut t) = self.shared.table.write() {
            *t = Arc::new(Table { routes, groups });
        }
        if let Ok(mut p) = self.shared.picker.lock() {
            p.current = vec![0; n];
            p.next.resize(n, 0);
        }
    }

    /// Stops accepting; requests in flight finish, and their connections then close.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        self.task.abort();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until none of `backends` has a request in flight, or `timeout` passes.
pub async fn drain(backends: &[Arc<AtomicUsize>], timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while backends.iter().any(|b| b.load(Ordering::Acquire) > 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Picks (route index, backend index) by smooth weighted round-robin, skipping `tried`
/// instances.
fn pick(table: &Table, picker: &Mutex<Picker>, tried: &[Arc<str>]) -> Option<(usize, usize)> {
    let usable = |b: &Backend| {
        b.healthy.load(Ordering::Relaxed) && !tried.iter().any(|t| Arc::ptr_eq(t, &b.id))
    };
    let mut p = picker.lock().ok()?;
    if p.current.len() != table.routes.len() {
        p.current = vec![0; table.routes.len()];
        p.next.resize(table.routes.len(), 0);
    }
    let mut total = 0i64;
    let mut best: Option<usize> = None;
    for (i, r) in table.routes.iter().enumerate() {
        if r.weight == 0 || !r.backends.iter().any(usable) {
            continue;
        }
        let w = i64::from(r.weight);
        total += w;
        p.current[i] += w;
        if best.is_none_or(|b| p.current[i] > p.current[b]) {
            best = Some(i);
        }
    }
    let i = best?;
    p.current[i] -= total;
    let backends = &table.routes[i].backends;
    for _ in 0..backends.len() {
        let n = p.next[i] % backends.len();
        p.next[i] = p.next[i].wrapping_add(1);
        if usable(&backends[n]) {
            return Some((i, n));
        }
    }
    None
}
