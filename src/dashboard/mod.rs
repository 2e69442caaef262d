//! The dashboard: what is live where, what is moving and why not, in a browser. Served by the
//! daemon (`keelson up`) and by `keelson ui` from the snapshots they publish; read-only, under
//! the same read rule as `/api/v1/status` (`crate::server::access`). Pages are server-rendered
//! and complete without JavaScript; Server-Sent Events push the overview cells (and a
//! cluster's groups) that changed, never the page.

pub mod render;
pub mod view;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::model::{DesiredState, ObservedState};
use crate::plan::Plan;
use crate::server::access::ReadAccess;
use crate::store::{Journal, Store};

/// What the pages are rendered from: one consistent view.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The desired state in force.
    pub desired: Arc<DesiredState>,
    /// The live state.
    pub observed: ObservedState,
    /// The plan against it.
    pub plan: Plan,
    /// When the newest revision is invalid: its first error, with file and line.
    pub invalid: Option<String>,
    /// The rollouts under way, by cluster: what ran so far.
    pub journals: BTreeMap<String, Journal>,
}

impl Snapshot {
    /// The overview's content.
    pub fn overview(&self) -> view::Overview {
        view::overview(
            &self.desired,
            &self.observed,
            &self.plan,
            &self.journals,
            self.invalid.clone(),
        )
    }
}

/// The rollouts under way in `store`, by cluster; none when it cannot say.
pub fn journals(store: &dyn Store) -> BTreeMap<String, Journal> {
    store
        .journals()
        .unwrap_or_default()
        .into_iter()
        .map(|j| (j.cluster.clone(), j))
        .collect()
}

/// Where the newest snapshot is published; pages and event streams read it.
pub struct Board {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    /// The pull request that brought a revision, where the forge said.
    pull: RwLock<Option<(String, crate::forge::PullRef)>>,
    changed: tokio::sync::watch::Sender<u64>,
    /// Set when the server stops: event streams end, so connections can close.
    closed: std::sync::atomic::AtomicBool,
    store: Option<Arc<dyn Store>>,
}

impl Board {
    /// An empty board; `store` gives cluster pages their history and analyses.
    pub fn new(store: Option<Arc<dyn Store>>) -> Self {
        Self {
            snapshot: RwLock::new(None),
            pull: RwLock::new(None),
            changed: tokio::sync::watch::channel(0).0,
            closed: std::sync::atomic::AtomicBool::new(false),
            store,
        }
    }

    /// Publishes a new snapshot and wakes every event stream.
    pub fn publish(&self, s: Snapshot) {
        if let Ok(mut g) = self.snapshot.write() {
            *g = Some(Arc::new(s));
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Ends every event stream (the server is stopping); pages still answer.
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Marks the newest revision invalid (or valid again) without a new observation.
    pub fn set_invalid(&self, invalid: Option<String>) {
        let Some(mut s) = self.current().map(|s| (*s).clone()) else {
            return;
        };
        if s.invalid != invalid {
            s.invalid = invalid;
            self.publish(s);
        }
    }

    /// Records the pull request that brought `revision`.
    pub fn set_pull(&self, revision: &str, pull: crate::forge::PullRef) {
        if let Ok(mut g) = self.pull.write() {
            *g = Some((revision.to_string(), pull));
        }
    }

    /// The pull request that brought `revision`, if known.
    pub fn pull(&self, revision: &str) -> Option<crate::forge::PullRef> {
        self.pull
            .read()
            .ok()
            .and_then(|g| g.clone())
            .filter(|(r, _)| r == revision)
            .map(|(_, p)| p)
    }

    /// The newest snapshot.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.read().ok().and_then(|g| g.clone())
    }
}

/// Gzip, when the client takes it and the page is worth it.
pub fn gzip(headers: &HeaderMap, body: &str) -> Option<Vec<u8>> {
    let takes = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    if !takes || body.len() < 4096 {
        return None;
    }
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut z, body.as_bytes()).ok()?;
    z.finish().ok()
}

fn html_page(headers: &HeaderMap, status: StatusCode, body: String) -> Response {
    let mut resp = match gzip(headers, &body) {
        Some(z) => (status, [(header::CONTENT_ENCODING, "gzip")], z).into_response(),
        None => (status, body).into_response(),
    };
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::VARY,
        header::HeaderValue::from_static("accept-encoding"),
    );
    resp
}

async fn overview(
    State(b): State<Arc<Board>>,
    headers: HeaderMap,
    Query(f): Query<render::Filter>,
) -> Response {
    overview_page(&b, &headers, &f)
}

/// An application's deep link: the overview with its row only.
async fn application(
    State(b): State<Arc<Board>>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> Response {
    let known = b
        .current()
        .is_none_or(|s| s.desired.clusters.values().any(|c| c.app.as_str() == app));
    if !known {
        return html_page(
            &headers,
            StatusCode::NOT_FOUND,
            render::not_found(&format!("No application {app} in the specs.")),
        );
    }
    let f = render::Filter {
        app,
        exact: true,
        ..Default::default()
    };
    overview_page(&b, &headers, &f)
}

fn overview_page(b: &Board, headers: &HeaderMap, f: &render::Filter) -> Response {
    match b.current() {
        Some(s) => html_page(headers, StatusCode::OK, render::overview(&s.overview(), f)),
        None => html_page(
            headers,
            StatusCode::SERVICE_UNAVAILABLE,
            render::not_found(
                "No valid revision observed yet; this page fills in after the first sync.",
            ),
        ),
    }
}

/// The parts of a cluster page, by its id.
fn cluster_page(b: &Board, s: &Snapshot, id: &str) -> Option<String> {
    let cid = crate::store::parse_cluster(id)?;
    if !s.desired.clusters.contains_key(&cid) && !s.observed.clusters.contains_key(&cid) {
        return None;
    }
    let history = b
        .store
        .as_ref()
        .and_then(|st| st.history(Some(id), 50).ok())
        .unwrap_or_default();
    let analysis = b
        .store
        .as_ref()
        .and_then(|st| st.latest_analysis(id).ok().flatten());
    let spec = s
        .desired
        .clusters
        .get(&cid)
        .and_then(|c| c.strategy.analysis());
    Some(render::cluster(
        id,
        &render::Context {
            revision: &s.plan.revision,
            pull: b.pull(&s.plan.revision),
        },
        s.observed.clusters.get(&cid),
        s.plan.clusters.iter().find(|c| c.id == cid),
        s.journals.get(id),
        analysis.as_ref().map(|a| (a, spec)),
        &history,
    ))
}

async fn cluster(
    State(b): State<Arc<Board>>,
    headers: HeaderMap,
    Path((env, target, name)): Path<(String, String, String)>,
) -> Response {
    let id = format!("{env}/{target}/{name}");
    match b.current().and_then(|s| cluster_page(&b, &s, &id)) {
        Some(page) => html_page(&headers, StatusCode::OK, page),
        None => html_page(
            &headers,
            StatusCode::NOT_FOUND,
            render::not_found(&format!("No cluster {id} in the specs or on the targets.")),
        ),
    }
}

/// `?cluster=ID` adds that cluster's groups to the stream.
#[derive(Debug, serde::Deserialize)]
struct Follow {
    cluster: Option<String>,
}

/// The server groups of a cluster as the cluster page shows them.
fn groups_html(s: &Snapshot, id: &str) -> String {
    let live = crate::store::parse_cluster(id).and_then(|c| s.observed.clusters.get(&c));
    let ctx = render::Context {
        revision: &s.plan.revision,
        pull: None,
    };
    let page = render::cluster(id, &ctx, live, None, None, None, &[]);
    // The groups' box only: what the live script swaps in.
    let start = page.find("<div class=\"groups\"");
    let inner = start.and_then(|i| {
        let open = page[i..].find('>')? + i + 1;
        let close = page[open..].find("</div></section>")? + open;
        Some(page[open..close].to_string())
    });
    inner.unwrap_or_default()
}

async fn events(State(b): State<Arc<Board>>, Query(f): Query<Follow>) -> impl IntoResponse {
    struct Conn {
        board: Arc<Board>,
        rx: tokio::sync::watch::Receiver<u64>,
        last: Option<view::Overview>,
        groups: Option<String>,
        follow: Option<String>,
    }
    // The page may be older than this stream: the first message brings every cell as it is
    // now, later ones only what changed.
    let conn = Conn {
        rx: b.changed.subscribe(),
        last: None,
        groups: None,
        follow: f.cluster,
        board: b,
    };
    let stream = futures::stream::unfold(conn, |mut c| async move {
        loop {
            if c.last.is_some() || c.board.current().is_none() {
                c.rx.changed().await.ok()?;
            }
            if c.board.is_closed() {
                return None;
            }
            let s = c.board.current()?;
            let mut out = Vec::new();
            let now = s.overview();
            let cells = match &c.last {
                Some(before) => view::changed(before, &now),
                None => now
                    .rows
                    .iter()
                    .flat_map(|r| r.cells.iter().flatten().cloned())
                    .collect(),
            };
            c.last = Some(now);
            if !cells.is_empty() {
                out.push(
                    SseEvent::default()
                        .event("cells")
                        .data(render::update(&cells)),
                );
            }
            if let Some(id) = &c.follow {
                let g = groups_html(&s, id);
                if c.groups.as_ref() != Some(&g) {
                    let msg = serde_json::json!({"cluster": id, "html": g});
                    out.push(SseEvent::default().event("groups").data(msg.to_string()));
                    c.groups = Some(g);
                }
            }
            if !out.is_empty() {
                let items: Vec<Result<SseEvent, std::convert::Infallible>> =
                    out.into_iter().map(Ok).collect();
                return Some((futures::stream::iter(items), c));
            }
        }
    });
    let flat = futures::StreamExt::flatten(stream);
    Sse::new(flat).keep_alive(KeepAlive::default())
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        render::CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        render::JS,
    )
        .into_response()
}

/// Where to go after signing in: a path on this server, never another site (and nothing a
/// header could not carry).
fn local_path(next: &str) -> &str {
    let plain = next
        .bytes()
        .all(|b| (0x21..0x7f).contains(&b) && b != b'\\');
    if plain && next.starts_with('/') && !next.starts_with("//") {
        next
    } else {
        "/"
    }
}

/// The sign-in form's fields.
#[derive(serde::Deserialize)]
struct SignIn {
    token: String,
    #[serde(default)]
    next: String,
}

async fn sign_in_form(
    State(access): State<Arc<ReadAccess>>,
    headers: HeaderMap,
    Query(f): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let next = local_path(f.get("next").map_or("/", String::as_str));
    html_page(
        &headers,
        StatusCode::OK,
        render::sign_in(next, "", access.has_tokens()),
    )
}

/// Checks the token and, when it is known, signs the browser in with its digest and sends it
/// back where it was going.
async fn sign_in(
    State(access): State<Arc<ReadAccess>>,
    headers: HeaderMap,
    axum::Form(f): axum::Form<SignIn>,
) -> Response {
    let next = local_path(&f.next);
    let Some(digest) = access.knows(f.token.trim()) else {
        return html_page(
            &headers,
            StatusCode::UNAUTHORIZED,
            render::sign_in(next, "That token is not known here.", access.has_tokens()),
        );
    };
    let cookie = access.sign_in_cookie(&digest, &headers, crate::clock::now().as_second());
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, next.to_string()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

/// The dashboard's routes: `/`, `/a/{app}`, `/c/{env}/{target}/{name}` (also under
/// `/clusters/`, the longer name) and `/events` under the read rule; `/sign-in` and `/assets/*` open.
pub fn router(board: Arc<Board>, access: Arc<ReadAccess>) -> Router {
    let guarded = Router::new()
        .route("/", get(overview))
        .route("/a/{app}", get(application))
        .route("/c/{env}/{target}/{name}", get(cluster))
        .route("/clusters/{env}/{target}/{name}", get(cluster))
        .route("/events", get(events))
        .route_layer(axum::middleware::from_fn_with_state(
            access.clone(),
            crate::server::access::guard,
        ))
        .route("/assets/style.css", get(css))
        .route("/assets/live.js", get(js))
        .with_state(board);
    let sign = Router::new()
        .route("/sign-in", get(sign_in_form).post(sign_in))
        .with_state(access);
    guarded.merge(sign)
}
