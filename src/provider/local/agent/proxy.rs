//! The per-cluster load-balancing proxy on the cluster's traffic port.
//!
//! Routes each request to a healthy instance of an enabled server group, choosing groups by
//! weight (smooth weighted round-robin, as nginx does, so shares are exact over short runs) and
//! instances round-robin. Changing the routes affects new requests at once; requests in flight
//! finish on the instance they started on (counted until their response body ends, so a group
//! can be drained before its instances stop). A connection error on an idempotent request is
//! retried on another instance.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinHandle;

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

type ProxyBody = BoxBody<Bytes, hyper::Error>;
type ForwardClient = Client<HttpConnector, ProxyBody>;

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
}

struct Table {
    routes: Vec<Route>,
    headers: Vec<Option<HeaderValue>>,
}

#[derive(Default)]
struct Picker {
    current: Vec<i64>,
    next: Vec<usize>,
}

struct Shared {
    table: RwLock<Arc<Table>>,
    picker: Mutex<Picker>,
    client: ForwardClient,
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
    pub fn start(port: u16) -> Result<Self, BindError> {
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
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(connector);
        let shared = Arc::new(Shared {
            table: RwLock::new(Arc::new(Table {
                routes: Vec::new(),
                headers: Vec::new(),
            })),
            picker: Mutex::new(Picker::default()),
            client,
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
        let headers = routes
            .iter()
            .map(|r| HeaderValue::from_str(&r.group).ok())
            .collect();
        let n = routes.len();
        if let Ok(mut t) = self.shared.table.write() {
            *t = Arc::new(Table { routes, headers });
        }
        if let Ok(mut p) = self.shared.picker.lock() {
            p.current = vec![0; n];
            p.next.resize(n, 0);
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

/// Picks (route index, backend) by smooth weighted round-robin, skipping `tried` backends.
fn pick(table: &Table, picker: &Mutex<Picker>, tried: &[Arc<str>]) -> Option<(usize, Backend)> {
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
            return Some((i, backends[n].clone()));
        }
    }
    None
}

/// A response body that counts its request as in flight until it ends or is dropped.
struct Tracked {
    inner: Incoming,
    inflight: Option<Arc<AtomicUsize>>,
}

impl Tracked {
    fn finish(&mut self) {
        if let Some(c) = self.inflight.take() {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.finish();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("keelson proxy: {message}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

async fn handle(s: &Shared, req: Request<Incoming>) -> Response<ProxyBody> {
    let (parts, body) = req.into_parts();
    // Bodies are buffered so a retry can resend them; most requests have none.
    let has_body = parts.headers.contains_key(hyper::header::TRANSFER_ENCODING)
        || parts
            .headers
            .get(hyper::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let body = if has_body {
        match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => Some(b.to_bytes()),
            Err(_) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large or broken",
                );
            }
        }
    } else {
        None
    };
    let pq = parts.uri.path_and_query().cloned();
    let table = match s.table.read() {
        Ok(t) => t.clone(),
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "routing table unavailable",
            );
        }
    };
    let mut headers = parts.headers;
    for hop in HOP {
        headers.remove(hop);
    }
    // Kept only for idempotent requests, which may be retried on another instance.
    let saved = if idempotent(&parts.method) || has_body {
        headers.clone()
    } else {
        hyper::HeaderMap::new()
    };
    let mut tried: Vec<Arc<str>> = Vec::new();
    let mut last_error = String::from("no healthy instance of an enabled server group");
    for _ in 0..ATTEMPTS {
        let Some((route, backend)) = pick(&table, &s.picker, &tried) else {
            break;
        };
        let mut uri = Uri::builder().scheme("http").authority(&*backend.authority);
        uri = match &pq {
            Some(pq) => uri.path_and_query(pq.clone()),
            None => uri.path_and_query("/"),
        };
        let Ok(uri) = uri.build() else {
            return error(StatusCode::BAD_REQUEST, "cannot forward request");
        };
        let mut out = Request::new(body.clone().map_or_else(empty, |b| {
            Full::new(b).map_err(|never| match never {}).boxed()
        }));
        *out.method_mut() = parts.method.clone();
        *out.uri_mut() = uri;
        // The first attempt takes the headers as they are; a retry needs a copy.
        *out.headers_mut() = if tried.is_empty() {
            std::mem::take(&mut headers)
        } else {
            saved.clone()
        };
        backend.inflight.fetch_add(1, Ordering::AcqRel);
        match s.client.request(out).await {
            Ok(resp) => {
                let (mut rparts, rbody) = resp.into_parts();
                for hop in HOP {
                    rparts.headers.remove(hop);
                }
                if let Some(Some(v)) = table.headers.get(route) {
                    rparts
                        .headers
                        .insert(HeaderName::from_static("x-keelson-server-group"), v.clone());
                }
                if let Ok(v) = HeaderValue::from_str(&backend.id) {
                    rparts
                        .headers
                        .insert(HeaderName::from_static("x-keelson-instance"), v);
                }
                let tracked = Tracked {
                    inner: rbody,
                    inflight: Some(backend.inflight.clone()),
                };
                return Response::from_parts(rparts, tracked.boxed());
            }
            Err(e) => {
                backend.inflight.fetch_sub(1, Ordering::AcqRel);
                last_error = format!("{}/{}: {e}", table.routes[route].group, backend.id);
                // Only a request that never reached the instance is safe to send elsewhere,
                // unless the method is idempotent.
                if !(e.is_connect() || idempotent(&parts.method)) {
                    return error(StatusCode::BAD_GATEWAY, &last_error);
                }
                tried.push(backend.id.clone());
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
