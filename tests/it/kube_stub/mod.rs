//! A Kubernetes API server stand-in, over real HTTP, for the real `kube` client.
//!
//! It speaks the REST protocol of the API server ("API concepts",
//! https://kubernetes.io/docs/reference/using-api/api-concepts/, and the API conventions,
//! https://github.com/kubernetes/community/blob/master/contributors/devel/sig-architecture/api-conventions.md)
//! for pods, services, replicasets (with `scale` and `status`) and leases, so that
//! `kube::Client`, `kube::Api<T>` and `kube::runtime::watcher`/`reflector` work against it
//! unmodified, and simulates the controllers a deployment tool relies on (ReplicaSet
//! controller, kubelet readiness, garbage collector). Each file documents the behaviour it
//! fakes, the section of the conventions it follows, and where it knowingly differs from a real
//! API server:
//!
//! - `handlers.rs`: the verbs, lists, pagination, scale, delete options;
//! - `store.rs`: resourceVersions, history, metadata rules, generation, status, deletion;
//! - `watch.rs`: watch streams, bookmarks, streaming lists, 410 Expired;
//! - `managed.rs`: managedFields and server-side apply;
//! - `patch.rs`: merge, strategic merge and JSON patches;
//! - `selector.rs`: label and field selectors;
//! - `resources.rs`: the served resources, defaulting and validation;
//! - `controller.rs`: the ReplicaSet controller, kubelet and garbage collector;
//! - `discovery.rs`: discovery documents;
//! - `status.rs`: `Status` errors.
//!
//! Authentication: `Authorization: Bearer <token>`; anything else is 401 Unauthorized (a real
//! server with anonymous auth enabled would answer 403 for resources instead).
//!
//! The module does not depend on other test modules: a bench includes it by `#[path]`.

mod controller;
mod discovery;
mod handlers;
mod managed;
mod patch;
mod resources;
mod selector;
mod status;
mod store;
mod watch;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::Response;
use serde_json::Value;

use self::handlers::Req;
use self::status::ApiError;
use self::store::{Inner, WriteOpts};

/// How to run the stand-in.
#[derive(Debug, Clone)]
pub struct StubOptions {
    /// The bearer token clients must send.
    pub token: String,
    /// How long after creation a pod becomes Ready.
    pub ready_after: Duration,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// How many events are retained for watches to resume from.
    pub history: usize,
}

impl Default for StubOptions {
    fn default() -> Self {
        Self {
            token: "kube-stub-token".into(),
            ready_after: Duration::from_millis(100),
            bookmark_interval: Duration::from_secs(1),
            history: 10_000,
        }
    }
}

/// A request as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string ("" if none).
    pub query: String,
    /// The status code answered.
    pub status: u16,
    /// The request's `Content-Type`, if any.
    pub content_type: Option<String>,
}

/// Settings tests may change while the stand-in runs.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// See `StubOptions::ready_after`.
    pub ready_after: Duration,
    /// Images whose pods never become ready.
    pub never_ready: HashSet<String>,
    /// See `StubOptions::bookmark_interval`.
    pub bookmark_interval: Duration,
}

/// State shared by the server, the watches and the controllers.
#[derive(Debug)]
pub(crate) struct Shared {
    store: Mutex<Inner>,
    token: String,
    addr: SocketAddr,
    settings: Mutex<Settings>,
    requests: Mutex<Vec<Recorded>>,
    /// (writes left to fail, status code).
    faults: Mutex<(usize, u16)>,
    /// Threads blocked in `lock` (std's mutex is not fair, so the controllers check this).
    waiting: AtomicUsize,
}

impl Shared {
    /// The store; a poisoned lock (a panic elsewhere) is still usable for a test double.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        if let Ok(guard) = self.store.try_lock() {
            return guard;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let guard = self.store.lock().unwrap_or_else(|e| e.into_inner());
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        guard
    }

    /// Whether a thread is waiting for the store: the controllers then give way.
    pub(crate) fn contended(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// The settings.
    pub(crate) fn settings(&self) -> MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running API server stand-in; dropping it stops the server, its watches and controllers.
pub struct KubeStub {
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
    controller: tokio::task::JoinHandle<()>,
}

impl Drop for KubeStub {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.shutdown = true;
            st.notify();
        }
        self.server.abort();
        self.controller.abort();
    }
}

impl KubeStub {
    /// Starts a stand-in on 127.0.0.1 with an ephemeral port.
    pub async fn start(opts: StubOptions) -> KubeStub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let (bump, _) = tokio::sync::watch::channel(0u64);
        let shared = Arc::new(Shared {
            store: Mutex::new(Inner::new(opts.history, bump)),
            token: opts.token,
            addr,
            settings: Mutex::new(Settings {
                ready_after: opts.ready_after,
                never_ready: HashSet::new(),
                bookmark_interval: opts.bookmark_interval,
            }),
            requests: Mutex::new(vec![]),
            faults: Mutex::new((0, 0)),
            waiting: AtomicUsize::new(0),
        });
        let sh = shared.clone();
        // axum's own 2 MB body limit answers plain text; the size check in `handle` answers
        // a `Status` instead, at the API server's limit.
        let app = axum::Router::new()
            .fallback(
                move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                    let sh = sh.clone();
                    async move { entry(&sh, method, uri, headers, body) }
                },
            )
            .layer(axum::extract::DefaultBodyLimit::disable());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let controller = tokio::spawn(controller::run(shared.clone()));
        KubeStub {
            shared,
            server,
            controller,
        }
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Writes a kubeconfig with one context per (name, default namespace), all pointing at this
    /// server with the token user; the first context is current.
    pub fn write_kubeconfig(&self, path: &Path, contexts: &[(&str, &str)]) {
        std::fs::write(path, self.kubeconfig_yaml(contexts)).expect("write kubeconfig");
    }

    fn kubeconfig_yaml(&self, contexts: &[(&str, &str)]) -> String {
        // Strings are written as JSON strings, which YAML reads the same, so no name needs
        // YAML quoting rules.
        let q = |s: &str| serde_json::to_string(s).expect("strings serialize");
        let mut y = String::from("apiVersion: v1\nkind: Config\n");
        y += &format!(
            "clusters:\n- name: kube-stub\n  cluster:\n    server: {}\n",
            q(&self.url())
        );
        y += &format!(
            "users:\n- name: kube-stub\n  user:\n    token: {}\n",
            q(&self.shared.token)
        );
        y += "contexts:\n";
        for (name, ns) in contexts {
            y += &format!(
                "- name: {}\n  context:\n    cluster: kube-stub\n    user: kube-stub\n    namespace: {}\n",
                q(name),
                q(ns)
            );
        }
        if let Some((first, _)) = contexts.first() {
            y += &format!("current-context: {}\n", q(first));
        }
        y
    }

    /// A kube client for this server (default namespace `default`).
    pub async fn client(&self) -> kube::Client {
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml(&[("kube-stub", "default")]))
                .expect("kubeconfig parses");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kubeconfig loads");
        kube::Client::try_from(config).expect("client builds")
    }

    /// Sets how long after creation pods become Ready (pods not yet ready included).
    pub fn set_ready_after(&self, d: Duration) {
        self.shared.settings().ready_after = d;
    }

    /// Pods with a container of this image never become Ready (a failing readiness probe).
    pub fn never_ready(&self, image: &str) {
        self.shared.settings().never_ready.insert(image.to_string());
    }

    /// The next `n` POST/PUT/PATCH/DELETE requests answer `code` with the matching `Status`
    /// (409 Conflict, 429 TooManyRequests with `Retry-After: 1`, 500 InternalError,
    /// 503 ServiceUnavailable, ...) instead of being served. Note that kube's client retries
    /// 429, 503 and 504 by itself (up to 15 times), so callers only see 409/500-style faults.
    pub fn fail_next_writes(&self, n: usize, code: u16) {
        *self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()) = (n, code);
    }

    /// Ends every open watch stream now, as a lost connection would: the chunked body ends
    /// (no event is sent after this call), and kube's watcher re-watches from the last
    /// resourceVersion it saw. Watches started after this call are not affected.
    pub fn drop_watches(&self) {
        let mut st = self.shared.lock();
        st.drop_epoch += 1;
        st.notify();
    }

    /// Forgets the event history: a watch from a resourceVersion older than the current one
    /// gets 410 Expired (one from the current version has missed nothing and is served, as on
    /// a real server after compaction).
    pub fn compact(&self) {
        self.shared.lock().compact();
    }

    /// A snapshot of the objects of `plural` in `ns`, sorted by name.
    pub fn objects(&self, plural: &str, ns: &str) -> Vec<Value> {
        let res =
            resources::by_plural(plural).unwrap_or_else(|| panic!("unknown resource {plural}"));
        // Deep copies are made after the lock is released, so snapshots do not stall the API.
        let objs: Vec<_> = {
            let st = self.shared.lock();
            st.iter(res, Some(ns)).map(|(_, e)| e.obj.clone()).collect()
        };
        objs.iter().map(|o| o.value.clone()).collect()
    }

    /// The object, if it exists.
    pub fn get(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let res =
            resources::by_plural(plural).unwrap_or_else(|| panic!("unknown resource {plural}"));
        let obj = self.shared.lock().get(res, ns, name).map(|e| e.obj.clone());
        obj.map(|o| o.value.clone())
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Inserts an object without HTTP (fast bulk setup), with the same metadata rules,
    /// validation and events as a create, but keeping the given `.status` (so seeded pods can
    /// be Running and Ready already). Panics if the object is invalid or exists.
    pub fn seed(&self, plural: &str, ns: &str, obj: Value) {
        let res =
            resources::by_plural(plural).unwrap_or_else(|| panic!("unknown resource {plural}"));
        let o = WriteOpts {
            keep_status: true,
            ..WriteOpts::by("kube-stub-seed")
        };
        if let Err(e) = self.shared.lock().create(res, ns, obj, &o) {
            panic!("seed {plural} in {ns}: {}", e.message);
        }
    }
}

/// The largest request body served.
const MAX_BODY: usize = 3 * 1024 * 1024;

fn is_write(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

fn entry(
    shared: &Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let resp = match handle(shared, &method, &uri, &headers, &body) {
        Ok(r) => r,
        Err(e) => handlers::error_response(&e),
    };
    let rec = Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        status: resp.status().as_u16(),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    shared
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(rec);
    resp
}

fn handle(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth.strip_prefix("Bearer ") != Some(shared.token.as_str()) {
        return Err(ApiError::unauthorized());
    }
    if body.len() > MAX_BODY {
        // The API server's --max-request-body-bytes default (3 MiB).
        return Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {MAX_BODY}"),
        ));
    }
    let query = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let req = Req {
        method,
        query,
        headers,
        body,
    };
    let segs: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let route = match segs.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => handlers::route("", "v1", rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => {
            handlers::route(group, version, rest)
        }
        ["healthz" | "livez" | "readyz"] if *method == Method::GET => {
            // The health endpoints answer plain `ok`.
            return Ok(Response::builder()
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(axum::body::Body::from("ok"))
                .unwrap_or_default());
        }
        discovery_path => {
            if *method != Method::GET {
                return Err(ApiError::method_not_allowed(method.as_str()));
            }
            let accept = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let (doc, aggregated) =
                discovery::serve(discovery_path, accept, &shared.addr.to_string())?;
            let mut resp = handlers::json_response(
                200,
                Bytes::from(serde_json::to_vec(&doc).unwrap_or_default()),
            );
            if aggregated && let Ok(v) = discovery::AGGREGATED_CONTENT_TYPE.parse() {
                resp.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            return Ok(resp);
        }
    }?;
    if is_write(method) {
        let mut faults = shared.faults.lock().unwrap_or_else(|e| e.into_inner());
        if faults.0 > 0 {
            faults.0 -= 1;
            let (res, name) = match &route {
                handlers::Route::Collection { res, .. } => {
                    let v: Value = serde_json::from_slice(body).unwrap_or_default();
                    (*res, store::meta_str(&v, "name").to_string())
                }
                handlers::Route::Object { res, name, .. }
                | handlers::Route::Sub { res, name, .. } => (*res, name.clone()),
            };
            return Err(ApiError::injected(faults.1, Some(res), &name));
        }
    }
    handlers::serve(shared, route, &req)
}
