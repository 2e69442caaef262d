//! The daemon's HTTP API (axum): health, readiness, metrics, status, suspend/resume, sync and
//! GitHub webhooks.

pub mod access;
mod listen;
pub mod metrics;

pub use listen::{Limits, serve};

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::plan::{Scope, Suspend};
use crate::spec::{AppName, EnvName};
use crate::store::Store;
use metrics::Metrics;

/// Largest webhook body accepted (GitHub sends at most 25 MB; pushes are far smaller).
pub const MAX_WEBHOOK_BYTES: usize = 1024 * 1024;

/// What the daemon shows in `/api/v1/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DaemonStatus {
    /// Where specs come from.
    pub source: String,
    /// The revision in force (the last good one).
    pub revision: Option<String>,
    /// The newest revision fetched (may be invalid).
    pub fetched: Option<String>,
    /// Ready after the first successful sync.
    pub ready: bool,
    /// When the last sync finished.
    pub last_sync: Option<jiff::Timestamp>,
    /// `ok`, `failed`, `invalid` or `fetch-error`.
    pub last_result: String,
    /// The last error, for a person.
    pub last_error: Option<String>,
    /// Diagnostics of the newest revision when it is invalid.
    pub diagnostics: Vec<crate::diag::Diagnostic>,
    /// Per cluster, as last reconciled.
    pub clusters: Vec<ClusterStatus>,
    /// Each notification destination: sent, retried, dead letters (never its secrets).
    pub notifications: Vec<crate::notify::DestinationStatus>,
}

/// One cluster in the status.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// `env/target/name`.
    pub cluster: String,
    /// The version the specs ask for.
    pub desired_version: String,
    /// Server groups: name, version, enabled, weight, healthy, instances.
    pub server_groups: Vec<serde_json::Value>,
    /// The last reconcile's outcome for it.
    pub outcome: String,
    /// Pins, vetoes and the flapping guard, one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub controls: Vec<String>,
    /// Failed reconciles in a row (each cluster backs off on its own).
    pub failures: u32,
}

/// State shared by the server and the reconcile loop.
pub struct Shared {
    /// The status.
    pub status: std::sync::RwLock<DaemonStatus>,
    /// The status serialized once per change: `/api/v1/status` is read far more often than it
    /// changes.
    pub status_json: std::sync::RwLock<Arc<str>>,
    /// Metrics.
    pub metrics: Metrics,
    /// Wakes the reconcile loop (webhook, sync, file change).
    pub trigger: tokio::sync::Notify,
    /// Locks, suspends, history.
    pub store: Arc<dyn Store>,
    /// Bearer token for mutations, acting as `api token`; without it (and without tokens in
    /// `identities`) they are refused.
    pub api_token: Option<String>,
    /// Tokens of named users and their groups (approvals check them).
    pub identities: crate::identity::Identities,
    /// Secret for `X-Hub-Signature-256`; without one webhooks are refused.
    pub webhook_secret: Option<String>,
    /// Where `pull_request` events go to be planned and commented on; `None` without a forge
    /// token.
    pub pull_requests: Option<tokio::sync::mpsc::Sender<PullRequestEvent>>,
    /// The repository whose webhooks count; `None` (unknown) accepts every repository.
    pub repository: Option<crate::forge::RepoSlug>,
    /// The desired state in force, to check what API calls name.
    pub desired: std::sync::RwLock<Option<Arc<crate::model::DesiredState>>>,
    /// Where events go (the engine's notifier).
    pub events: Arc<crate::notify::Events>,
    /// What the dashboard shows.
    pub board: Arc<crate::dashboard::Board>,
    /// The forge, to find the pull request behind a revision (with a Git source and a token).
    pub forge: Option<Arc<crate::forge::github::GitHub>>,
    /// Asks the loop to observe again for the dashboard (a step began or ended).
    pub refresh: tokio::sync::Notify,
    /// Who may read the dashboard and the status.
    pub reads: Arc<access::ReadAccess>,
}

/// A pull request to plan and comment on, from a `pull_request` webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestEvent {
    /// `owner/name` on the forge.
    pub repo: String,
    /// The pull request number.
    pub number: u64,
    /// The head commit.
    pub head_sha: String,
    /// The head branch (used when the forge has no `refs/pull/N/head`).
    pub head_ref: String,
    /// The base commit.
    pub base_sha: String,
    /// The base branch.
    pub base_ref: String,
}

#[derive(Deserialize)]
struct PrPayload {
    action: String,
    number: u64,
    pull_request: PrBody,
    repository: PrRepo,
}

#[derive(Deserialize)]
struct PrBody {
    head: PrRef,
    base: PrRef,
}

#[derive(Deserialize)]
struct PrRef {
    sha: String,
    #[serde(rename = "ref")]
    branch: String,
}

#[derive(Deserialize)]
struct PrRepo {
    full_name: String,
}

/// The repository any webhook payload names.
#[derive(Deserialize)]
struct Named {
    repository: Option<RepoName>,
}

#[derive(Deserialize)]
struct RepoName {
    full_name: String,
}

/// The actions of a `pull_request` event that change what the pull request would merge.
const PR_ACTIONS: [&str; 3] = ["opened", "synchronize", "reopened"];

fn pull_request(s: &Shared, body: &[u8]) -> Response {
    let Some(tx) = &s.pull_requests else {
        return text(
            StatusCode::ACCEPTED,
            "pull_request ignored: plan comments need a forge token (KEELSON_FORGE_TOKEN)\n",
        );
    };
    let p: PrPayload = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("not a pull_request payload: {e}\n"),
            );
        }
    };
    if !PR_ACTIONS.contains(&p.action.as_str()) {
        return text(
            StatusCode::ACCEPTED,
            format!("pull_request action `{}` ignored\n", p.action),
        );
    }
    let ev = PullRequestEvent {
        repo: p.repository.full_name,
        number: p.number,
        head_sha: p.pull_request.head.sha,
        head_ref: p.pull_request.head.branch,
        base_sha: p.pull_request.base.sha,
        base_ref: p.pull_request.base.branch,
    };
    tracing::info!(pr = ev.number, head = %ev.head_sha, "webhook: planning pull request");
    match tx.try_send(ev) {
        Ok(()) => text(StatusCode::ACCEPTED, "plan comment queued\n"),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many pull requests queued; GitHub will redeliver\n",
        ),
    }
}

impl Shared {
    /// Changes the status and refreshes its cached JSON.
    pub fn update_status(&self, f: impl FnOnce(&mut DaemonStatus)) {
        if let Ok(mut st) = self.status.write() {
            f(&mut st);
            let json: Arc<str> = serde_json::to_string(&*st)
                .unwrap_or_else(|_| "{}".into())
                .into();
            if let Ok(mut cache) = self.status_json.write() {
                *cache = json;
            }
        }
    }
}

/// Who the bearer token says acts: a user of the identities file, or `api token` for the
/// daemon's own token; `None` without a token it knows. Every comparison is constant-time.
fn identify(shared: &Shared, headers: &HeaderMap) -> Option<crate::identity::Identity> {
    let given = access::bearer(headers)?;
    if let Some(who) = shared.identities.by_token(given) {
        return Some(who);
    }
    let token = shared.api_token.as_ref()?;
    bool::from(given.as_bytes().ct_eq(token.as_bytes())).then(|| crate::identity::Identity {
        name: API_IDENTITY.into(),
        groups: Vec::new(),
    })
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    identify(shared, headers).is_some()
}

/// Who acts with the daemon's own API token.
const API_IDENTITY: &str = "api token";

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    // A replica that cannot reach its store acts on nothing: not ready.
    if let Err(e) = s.store.ping() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the state store does not answer: {}\n",
                crate::report::chain(&e)
            ),
        );
    }
    let ready = s.status.read().map(|st| st.ready).unwrap_or(false);
    if ready {
        text(StatusCode::OK, "ready\n")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no successful sync yet\n",
        )
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    let daemon = s
        .status_json
        .read()
        .map(|j| j.clone())
        .unwrap_or_else(|_| "{}".into());
    let now = crate::clock::now();
    let suspends = serde_json::to_string(&s.store.suspends(now).unwrap_or_default())
        .unwrap_or_else(|_| "[]".into());
    let locks =
        serde_json::to_string(&s.store.locks().unwrap_or_default()).unwrap_or_else(|_| "[]".into());
    // The newest canary analysis of each cluster, with its measurements.
    let analyses = serde_json::to_string(&s.store.newest_analyses().unwrap_or_default())
        .unwrap_or_else(|_| "[]".into());
    let body = format!(
        "{{\"daemon\":{daemon},\"suspends\":{suspends},\"locks\":{locks},\"analyses\":{analyses}}}"
    );
    ([("content-type", "application/json")], body).into_response()
}

/// The body of suspend and resume calls. The scope is always explicit: one of `env`, `app`,
/// `cluster`, or `"global": true`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeBody {
    /// An environment.
    pub env: Option<String>,
    /// An application.
    pub app: Option<String>,
    /// A cluster selector.
    pub cluster: Option<String>,
    /// Everything.
    #[serde(default)]
    pub global: bool,
    /// Why (suspend only).
    pub reason: Option<String>,
    /// Lapse after this long, e.g. `2h` (suspend only).
    #[serde(rename = "for")]
    pub for_: Option<crate::spec::Duration>,
    /// Suspend a scope the specs do not declare.
    #[serde(default)]
    pub force: bool,
}

fn scope(b: &ScopeBody) -> Result<Scope, String> {
    Ok(match (&b.env, &b.app, &b.cluster, b.global) {
        (Some(e), None, None, false) => {
            Scope::Environment(EnvName::new(e.clone()).map_err(|e| e.to_string())?)
        }
        (None, Some(a), None, false) => {
            Scope::Application(AppName::new(a.clone()).map_err(|e| e.to_string())?)
        }
        (None, None, Some(c), false) => Scope::Cluster(c.clone()),
        (None, None, None, true) => Scope::Global,
        (None, None, None, false) => {
            return Err("name the scope: one of env, app or cluster, or \"global\": true\n".into());
        }
        _ => return Err("give exactly one of env, app, cluster and global\n".into()),
    })
}

/// Checks the bearer token first (before reading anything else), then reads the body.
fn scoped(
    s: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Scope, ScopeBody), Box<Response>> {
    let refuse = |status, why: String| Box::new(text(status, why));
    if !authorized(s, headers) {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required\n".into(),
        ));
    }
    let b: ScopeBody = serde_json::from_slice(body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("not a scope body: {e}\n")))?;
    let sc = scope(&b).map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?;
    Ok((sc, b))
}

/// A suspend or resume as an event: in its environment, or (wider) to every destination.
fn scope_event(
    kind: crate::notify::EventKind,
    sc: &Scope,
    message: String,
    who: &str,
    now: jiff::Timestamp,
) -> crate::notify::Event {
    let e = crate::notify::Event::new(kind, now, message).by(who);
    match sc {
        Scope::Environment(env) => e.in_env(Some(env), None),
        Scope::Application(app) => e.in_env(None, Some(app)),
        Scope::Global | Scope::Cluster(_) => e,
    }
}

/// Who acts through the API: the token's identity, never what the client says.
fn api_identity(s: &Shared, headers: &HeaderMap) -> String {
    identify(s, headers).map_or_else(|| API_IDENTITY.into(), |i| i.name)
}

async fn suspend(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (sc, b) = match scoped(&s, &headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Some(reason) = b.reason.clone().filter(|r| !r.trim().is_empty()) else {
        return text(StatusCode::BAD_REQUEST, "a reason is required\n");
    };
    if !b.force {
        let known = s.desired.read().ok().and_then(|d| d.clone());
        if let Some(why) = known.and_then(|d| sc.unknown_in(&d)) {
            return text(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{why}; send \"force\": true to suspend it anyway\n"),
            );
        }
    }
    let now = crate::clock::now();
    let until = b.for_.and_then(|d| {
        now.checked_add(jiff::SignedDuration::from_millis(
            i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        ))
        .ok()
    });
    let who = api_identity(&s, &headers);
    match s.store.suspend(
        &Suspend {
            scope: sc.clone(),
            who: who.clone(),
            reason: reason.clone(),
            until,
        },
        now,
    ) {
        Ok(()) => {
            s.events.emit(scope_event(
                crate::notify::EventKind::Suspended,
                &sc,
                format!("suspended {sc}: {reason}"),
                &who,
                now,
            ));
            s.metrics.suspends.set(
                i64::try_from(s.store.suspends(now).map(|v| v.len()).unwrap_or(0)).unwrap_or(0),
            );
            Json(serde_json::json!({ "suspended": sc.to_string(), "until": until })).into_response()
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, crate::report::chain(&e)),
    }
}

async fn resume(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (sc, _) = match scoped(&s, &headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let now = crate::clock::now();
    let who = api_identity(&s, &headers);
    match s.store.resume(&sc, &who, now) {
        Ok(n) => {
            if n > 0 {
                s.events.emit(scope_event(
                    crate::notify::EventKind::Resumed,
                    &sc,
                    format!("resumed {sc}"),
                    &who,
                    now,
                ));
            }
            s.metrics.suspends.set(
                i64::try_from(s.store.suspends(now).map(|v| v.len()).unwrap_or(0)).unwrap_or(0),
            );
            s.trigger.notify_one();
            Json(serde_json::json!({ "resumed": sc.to_string(), "lifted": n })).into_response()
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, crate::report::chain(&e)),
    }
}

async fn sync(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return text(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
    }
    s.trigger.notify_one();
    text(StatusCode::ACCEPTED, "sync requested\n")
}

/// The body of a delivery control (`pin`, `unpin`, `veto`, `unveto`, `approve`, `reject`,
/// `retry`); each takes the fields it needs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlBody {
    app: String,
    env: Option<String>,
    version: Option<String>,
    reason: Option<String>,
    until: Option<String>,
    #[serde(default)]
    force: bool,
}

/// A delivery control through the API, as the token's identity; the same checks as the
/// command line's (`crate::controls`), serialised by the store.
async fn control(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(which): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(who) = identify(&s, &headers) else {
        return text(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
    };
    let b: ControlBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("not a {which} body: {e}\n"),
            );
        }
    };
    let Some(desired) = s.desired.read().ok().and_then(|d| d.clone()) else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no valid revision yet: nothing to check the names against\n",
        );
    };
    let now = crate::clock::now();
    let done = run_control(&s, &which, &b, &desired, &who, now);
    match done {
        Ok(d) => {
            tracing::info!(control = %which, who = %who.name, app = %b.app, "{}", d.message);
            if let (Ok(app), env) = (
                AppName::new(b.app.clone()),
                b.env.clone().and_then(|e| EnvName::new(e).ok()),
            ) && let Some(e) = crate::controls::event_of(
                &which,
                &app,
                env.as_ref(),
                b.version.as_deref(),
                &who,
                &d,
                now,
            ) {
                s.events.emit(e);
            }
            s.trigger.notify_one();
            Json(serde_json::json!({"message": d.message, "warning": d.warning})).into_response()
        }
        Err(ControlFailure::Bad(why)) => text(StatusCode::BAD_REQUEST, format!("{why}\n")),
        Err(ControlFailure::Control(e)) => {
            let status = match &e {
                crate::controls::ControlError::Forbidden { .. } => StatusCode::FORBIDDEN,
                crate::controls::ControlError::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                crate::controls::ControlError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let hint = e.hint().map(|h| format!(" ({h})")).unwrap_or_default();
            text(status, format!("{}{hint}\n", crate::report::chain(&e)))
        }
        Err(ControlFailure::Unknown) => text(
            StatusCode::NOT_FOUND,
            format!("no control `{which}`: pin, unpin, veto, unveto, approve, reject, retry\n"),
        ),
    }
}

/// Why a control through the API did not run.
enum ControlFailure {
    Bad(String),
    Control(crate::controls::ControlError),
    Unknown,
}

impl From<crate::controls::ControlError> for ControlFailure {
    fn from(e: crate::controls::ControlError) -> Self {
        Self::Control(e)
    }
}

fn run_control(
    s: &Shared,
    which: &str,
    b: &ControlBody,
    desired: &crate::model::DesiredState,
    who: &crate::identity::Identity,
    now: jiff::Timestamp,
) -> Result<crate::controls::Done, ControlFailure> {
    use crate::controls;
    let store = s.store.as_ref();
    let app = AppName::new(b.app.clone()).map_err(|e| ControlFailure::Bad(e.to_string()))?;
    let env = b
        .env
        .clone()
        .map(EnvName::new)
        .transpose()
        .map_err(|e| ControlFailure::Bad(e.to_string()))?;
    let need_env = || {
        env.clone()
            .ok_or_else(|| ControlFailure::Bad(format!("{which} needs env")))
    };
    let need = |v: &Option<String>, what: &str| {
        v.clone()
            .filter(|x| !x.trim().is_empty())
            .ok_or_else(|| ControlFailure::Bad(format!("{which} needs {what}")))
    };
    Ok(match which {
        "pin" => {
            let until = b
                .until
                .as_deref()
                .map(crate::controls::parse_until)
                .transpose()
                .map_err(ControlFailure::Bad)?;
            let req = controls::PinRequest {
                app,
                env: need_env()?,
                version: need(&b.version, "version")?,
                reason: need(&b.reason, "a reason")?,
                until,
                force: b.force,
            };
            controls::pin(store, desired, who, &req, now)?
        }
        "unpin" => controls::unpin(store, who, &app, &need_env()?, now)?,
        "veto" => {
            let req = controls::VetoRequest {
                app,
                version: need(&b.version, "version")?,
                env,
                reason: need(&b.reason, "a reason")?,
            };
            controls::veto(store, desired, who, &req, now)?
        }
        "unveto" => controls::unveto(
            store,
            who,
            &app,
            &need(&b.version, "version")?,
            env.as_ref(),
            now,
        )?,
        "approve" => controls::approve(
            store,
            desired,
            who,
            &app,
            &need_env()?,
            b.version.as_deref(),
            now,
        )?,
        "reject" => {
            controls::reject(
                store,
                desired,
                who,
                &app,
                &need_env()?,
                &need(&b.reason, "a reason")?,
                now,
            )?
            .0
        }
        "retry" => controls::retry(store, desired, who, &app, &need_env()?, now)?,
        _ => return Err(ControlFailure::Unknown),
    })
}

/// Checks `X-Hub-Signature-256: sha256=<hex>` over the raw body, in constant time.
pub fn verify_signature(secret: &str, body: &[u8], header: Option<&str>) -> bool {
    let Some(hex) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    let Some(sig) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

async fn github(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &s.webhook_secret else {
        return text(
            StatusCode::UNAUTHORIZED,
            "webhooks need a secret (KEELSON_WEBHOOK_SECRET)\n",
        );
    };
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if !verify_signature(secret, &body, sig) {
        return text(
            StatusCode::UNAUTHORIZED,
            "bad or missing X-Hub-Signature-256\n",
        );
    }
    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // An organisation's webhook reports every repository: only this daemon's is acted on
    // (another's pull request #5 would be planned from ours and commented on theirs).
    if let Some(ours) = &s.repository
        && let Ok(Named {
            repository: Some(RepoName { full_name }),
        }) = serde_json::from_slice::<Named>(&body)
        && !ours.is(&full_name)
    {
        return text(
            StatusCode::ACCEPTED,
            format!("event for `{full_name}` ignored: this daemon follows `{ours}`\n"),
        );
    }
    match event {
        "pull_request" => pull_request(&s, &body),
        "push" => {
            tracing::info!(event, "webhook: fetching now");
            s.trigger.notify_one();
            text(StatusCode::ACCEPTED, "sync requested\n")
        }
        _ => text(StatusCode::ACCEPTED, format!("event `{event}` ignored\n")),
    }
}

/// The router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/api/v1/status",
            get(status).route_layer(axum::middleware::from_fn_with_state(
                shared.reads.clone(),
                access::guard,
            )),
        )
        .route("/api/v1/suspend", post(suspend))
        .route("/api/v1/resume", post(resume))
        .route("/api/v1/sync", post(sync))
        .route("/api/v1/{control}", post(control))
        .route(
            "/webhooks/github",
            post(github).layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES)),
        )
        .with_state(shared.clone())
        .merge(crate::dashboard::router(
            shared.board.clone(),
            shared.reads.clone(),
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        // The example from GitHub's documentation.
        let body = b"Hello, World!";
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify_signature(
            "It's a Secret to Everybody",
            body,
            Some(sig)
        ));
        assert!(!verify_signature("wrong", body, Some(sig)));
        assert!(!verify_signature("It's a Secret to Everybody", body, None));
        assert!(!verify_signature(
            "It's a Secret to Everybody",
            body,
            Some("sha256=zz")
        ));
    }
}
