//! The per-cluster load-balancing proxy on the cluster's traffic port.
//!
//! Routes each request to a healthy instance of an enabled server group, choosing groups by
//! weight (smooth weighted round-robin, as nginx does, so shares are exact over short runs) and
//! instances round-robin. Changing the topology affects new requests at once; requests in flight
//! finish on the instance they started on (counted, so a group can be drained before its
//! instances stop). A connection error on an idempotent request is retried on another instance.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

use crate::http_client::{HttpClient, client};

/// Largest request body the proxy buffers (bodies are buffered so a retry can resend them).
const MAX_BODY: usize = 8 * 1024 * 1024;
/// Attempts per request (first try plus retries on connection errors).
const ATTEMPTS: usize = 3;
/// Headers that belong to one hop and are not forwarded.
const HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

/// Health of instances by id, shared with the probers.
pub type HealthMap = Arc<RwLock<HashMap<String, bool>>>;

/// An instance the proxy may route to.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Instance id.
    pub id: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Requests in flight.
    pub inflight: Arc<AtomicUsize>,
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
}

struct Shared {
    routes: RwLock<Vec<Route>>,
    health: HealthMap,
    picker: Mutex<Picker>,
    client: HttpClient,
}

#[derive(Default)]
struct Picker {
    current: HashMap<String, i64>,
    next_instance: HashMap<String, usize>,
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
    /// Binds the port and starts serving with no routes.
    pub fn start(port: u16, health: HealthMap) -> Result<Self, BindError> {
        let socket =
            tokio::net::TcpSocket::new_v4().map_err(|_| BindError { port, owner: None })?;
        let _ = socket.set_reuseaddr(true);
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .map_err(|_| BindError {
                port,
                owner: super::process::port_owner(port),
            })?;
        let listener = socket.listen(1024).map_err(|_| BindError {
            port,
            owner: super::process::port_owner(port),
        })?;
        let shared = Arc::new(Shared {
            routes: RwLock::new(Vec::new()),
            health,
            picker: Mutex::new(Picker::default()),
            client: client(),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(handle(&s, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Self { shared, task, port })
    }

    /// Replaces the routes; new requests use them at once.
    pub fn set_routes(&self, routes: Vec<Route>) {
        if let Ok(mut r) = self.shared.routes.write() {
            *r = routes;
        }
    }

    /// Stops accepting; requests in flight finish.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
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

fn pick(s: &Shared, tried: &HashSet<String>) -> Option<(String, Backend)> {
    let routes = s.routes.read().ok()?;
    let health = s.health.read().ok()?;
    let candidates: Vec<(&Route, Vec<&Backend>)> = routes
        .iter()
        .filter(|r| r.weight > 0)
        .map(|r| {
            (
                r,
                r.backends
                    .iter()
                    .filter(|b| {
                        !tried.contains(&b.id) && health.get(&b.id).copied().unwrap_or(false)
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, b)| !b.is_empty())
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let mut p = s.picker.lock().ok()?;
    let total: i64 = candidates.iter().map(|(r, _)| i64::from(r.weight)).sum();
    let mut best: Option<(&Route, &Vec<&Backend>, i64)> = None;
    for (r, b) in &candidates {
        let cur = p.current.entry(r.group.clone()).or_insert(0);
        *cur += i64::from(r.weight);
        if best.is_none_or(|(_, _, v)| *cur > v) {
            best = Some((r, b, *cur));
        }
    }
    let (route, backends, _) = best?;
    if let Some(cur) = p.current.get_mut(&route.group) {
        *cur -= total;
    }
    let n = p.next_instance.entry(route.group.clone()).or_insert(0);
    let backend = backends[*n % backends.len()].clone();
    *n = n.wrapping_add(1);
    Some((route.group.clone(), backend))
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!(
        "keelson proxy: {message}\n"
    ))));
    *r.status_mut() = status;
    r
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

async fn handle(s: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large or broken",
            );
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut tried = HashSet::new();
    let mut last_error = String::from("no healthy instance of an enabled server group");
    for _ in 0..ATTEMPTS {
        let Some((group, backend)) = pick(s, &tried) else {
            break;
        };
        tried.insert(backend.id.clone());
        let mut out = Request::builder()
            .method(parts.method.clone())
            .uri(format!("http://127.0.0.1:{}{path}", backend.port));
        for (k, v) in &parts.headers {
            if !HOP.contains(&k.as_str()) {
                out = out.header(k, v);
            }
        }
        let Ok(out) = out.body(Full::new(body.clone())) else {
            return error(StatusCode::BAD_REQUEST, "cannot forward request");
        };
        backend.inflight.fetch_add(1, Ordering::AcqRel);
        let result = async {
            let resp = s.client.request(out).await?;
            let (rparts, rbody) = resp.into_parts();
            let bytes = rbody.collect().await.map(|c| c.to_bytes());
            Ok::<_, hyper_util::client::legacy::Error>((rparts, bytes))
        }
        .await;
        backend.inflight.fetch_sub(1, Ordering::AcqRel);
        match result {
            Ok((rparts, Ok(bytes))) => {
                let mut resp = Response::from_parts(rparts, Full::new(bytes));
                let h = resp.headers_mut();
                for hop in HOP {
                    h.remove(hop);
                }
                if let Ok(v) = HeaderValue::from_str(&group) {
                    h.insert(HeaderName::from_static("x-keelson-server-group"), v);
                }
                if let Ok(v) = HeaderValue::from_str(&backend.id) {
                    h.insert(HeaderName::from_static("x-keelson-instance"), v);
                }
                return resp;
            }
            Ok((_, Err(e))) => {
                last_error = format!("{group}/{}: response broke off: {e}", backend.id);
                if !idempotent(&parts.method) {
                    return error(StatusCode::BAD_GATEWAY, &last_error);
                }
            }
            Err(e) => {
                last_error = format!("{group}/{}: {e}", backend.id);
                // Only a request that never reached the instance is safe to send elsewhere,
                // unless the method is idempotent.
                if !(e.is_connect() || idempotent(&parts.method)) {
                    return error(StatusCode::BAD_GATEWAY, &last_error);
                }
            }
        }
    }
    error(
        if tried.is_empty() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::BAD_GATEWAY
        },
        &last_error,
    )
}
