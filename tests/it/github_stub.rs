//! A local HTTP server that answers like GitHub's REST API for what Keelson calls: issue
//! comments (list with `Link` pagination, create, edit, delete) and commit statuses. It checks
//! the bearer token, refuses bodies over 65,536 characters with 422 as GitHub does, records
//! every request, and can be told to fail the next requests (502, 403 with `Retry-After`).
//! Deployments and deployment statuses are checked against GitHub's documented fields: `ref`
//! required, `required_contexts` an array, `environment` a string; a status's `state` one of
//! error, failure, inactive, in_progress, queued, pending, success, on a deployment that
//! exists (404 otherwise). Unlike GitHub, `ref` is not resolved against the repository.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A comment as the stub keeps it.
#[derive(Debug, Clone)]
pub struct StubComment {
    pub id: u64,
    pub issue: u64,
    pub body: String,
    pub author: String,
}

/// A request as the stub saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub at: std::time::Instant,
}

/// A failure to answer with, instead of serving a request.
#[derive(Debug, Clone)]
pub struct Fault {
    pub status: u16,
    pub retry_after: Option<u64>,
}

#[derive(Debug, Default)]
pub struct StubState {
    pub comments: Vec<StubComment>,
    pub statuses: Vec<(String, Value)>,
    /// Pull requests by the commits they hold: number and title.
    pub pulls: Vec<(String, u64, String)>,
    /// Deployments made: id and request body.
    pub deployments: Vec<(u64, Value)>,
    /// Deployment statuses: deployment id and request body.
    pub deployment_statuses: Vec<(u64, Value)>,
    pub seen: Vec<Seen>,
    pub faults: VecDeque<Fault>,
    pub next_id: u64,
    pub token: String,
    pub per_page_max: usize,
    /// The account the token is; `None`: `GET /user` answers 403, as for an installation
    /// token (GitHub Actions' GITHUB_TOKEN).
    pub login: Option<String>,
}

/// A running stub.
pub struct GitHubStub {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<StubState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitHubStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GitHubStub {
    /// Starts a stub that accepts `token`.
    pub async fn start(token: &str) -> Self {
        let state = Arc::new(Mutex::new(StubState {
            next_id: 1000,
            token: token.to_string(),
            per_page_max: 100,
            login: Some("keelson-bot".into()),
            ..Default::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let st = state.clone();
        let app =
            axum::Router::new().fallback(move |m: Method, uri: Uri, h: HeaderMap, b: Bytes| {
                let st = st.clone();
                async move { handle(&st, addr, m, uri, h, b) }
            });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn comments(&self, issue: u64) -> Vec<StubComment> {
        let st = self.state.lock().unwrap();
        st.comments
            .iter()
            .filter(|c| c.issue == issue)
            .cloned()
            .collect()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn statuses(&self) -> Vec<(String, Value)> {
        self.state.lock().unwrap().statuses.clone()
    }

    pub fn fail_next(&self, faults: &[Fault]) {
        self.state
            .lock()
            .unwrap()
            .faults
            .extend(faults.iter().cloned());
    }

    /// Adds a comment as if a person (`alice`) wrote it.
    pub fn add_comment(&self, issue: u64, body: &str) -> u64 {
        self.add_comment_as(issue, body, "alice")
    }

    /// Adds a comment by `author`.
    pub fn add_comment_as(&self, issue: u64, body: &str, author: &str) -> u64 {
        let mut st = self.state.lock().unwrap();
        st.next_id += 1;
        let id = st.next_id;
        st.comments.push(StubComment {
            id,
            issue,
            body: body.into(),
            author: author.into(),
        });
        id
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(
            json!({ "message": message, "documentation_url": "https://docs.github.com/rest" }),
        ),
    )
        .into_response()
}

fn comment_json(c: &StubComment, addr: SocketAddr) -> Value {
    json!({
        "id": c.id,
        "body": c.body,
        "user": { "login": c.author, "type": if c.author.ends_with("[bot]") || c.author == "keelson-bot" { "Bot" } else { "User" } },
        "html_url": format!("http://{addr}/acme/deploy/pull/{}#issuecomment-{}", c.issue, c.id),
    })
}

fn handle(
    st: &Mutex<StubState>,
    addr: SocketAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = st.lock().unwrap();
    let resp = serve(&mut st, addr, &method, &uri, &headers, &body);
    st.seen.push(Seen {
        method: method.to_string(),
        path: uri.to_string(),
        status: resp.status().as_u16(),
        at: std::time::Instant::now(),
    });
    resp
}

fn serve(
    st: &mut StubState,
    addr: SocketAddr,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {}", st.token) && auth != format!("token {}", st.token) {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    if headers.get("user-agent").is_none() {
        return error(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
        );
    }
    if let Some(f) = st.faults.pop_front() {
        let status = StatusCode::from_u16(f.status).unwrap();
        let mut resp = error(
            status,
            if f.status == 403 {
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
            } else {
                "Server Error"
            },
        );
        if let Some(s) = f.retry_after {
            resp.headers_mut()
                .insert("retry-after", s.to_string().parse().unwrap());
        }
        return resp;
    }
    let segs: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let json_body = || serde_json::from_slice::<Value>(body).ok();
    let text_of = |v: &Value| v.get("body").and_then(Value::as_str).map(String::from);
    match (method.as_str(), segs.as_slice()) {
        // An installation token may not read `/user`: GitHub answers 403.
        ("GET", ["user"]) => match &st.login {
            Some(login) => axum::Json(json!({ "login": login, "type": "Bot" })).into_response(),
            None => error(
                StatusCode::FORBIDDEN,
                "Resource not accessible by integration",
            ),
        },
        ("GET", ["repos", _, _, "issues", n, "comments"]) => {
            let issue: u64 = n.parse().unwrap_or(0);
            let q: Vec<(String, String)> = uri
                .query()
                .unwrap_or("")
                .split('&')
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.into(), v.into())))
                .collect();
            let get = |k: &str, d: usize| {
                q.iter()
                    .find(|(qk, _)| qk == k)
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(d)
            };
            let per_page = get("per_page", 30).min(st.per_page_max).max(1);
            let page = get("page", 1).max(1);
            let all: Vec<&StubComment> = st.comments.iter().filter(|c| c.issue == issue).collect();
            let items: Vec<Value> = all
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|c| comment_json(c, addr))
                .collect();
            let mut resp = axum::Json(Value::Array(items)).into_response();
            if page * per_page < all.len() {
                let next = format!(
                    "<http://{addr}{}?per_page={per_page}&page={}>; rel=\"next\"",
                    uri.path(),
                    page + 1
                );
                resp.headers_mut().insert("link", next.parse().unwrap());
            }
            resp
        }
        ("POST", ["repos", _, _, "issues", n, "comments"]) => {
            let Some(text) = json_body().as_ref().and_then(text_of) else {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid request.\n\n\"body\" wasn't supplied.",
                );
            };
            if text.chars().count() > 65_536 {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Validation Failed: body is too long (maximum is 65536 characters)",
                );
            }
            st.next_id += 1;
            let c = StubComment {
                id: st.next_id,
                issue: n.parse().unwrap_or(0),
                body: text,
                author: st
                    .login
                    .clone()
                    .unwrap_or_else(|| "github-actions[bot]".into()),
            };
            let v = comment_json(&c, addr);
            st.comments.push(c);
            (StatusCode::CREATED, axum::Json(v)).into_response()
        }
        ("PATCH", ["repos", _, _, "issues", "comments", id]) => {
            let Some(text) = json_body().as_ref().and_then(text_of) else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request.");
            };
            if text.chars().count() > 65_536 {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Validation Failed: body is too long (maximum is 65536 characters)",
                );
            }
            let id: u64 = id.parse().unwrap_or(0);
            match st.comments.iter_mut().find(|c| c.id == id) {
                Some(c) => {
                    c.body = text;
                    let v = comment_json(c, addr);
                    axum::Json(v).into_response()
                }
                None => error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        ("DELETE", ["repos", _, _, "issues", "comments", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let before = st.comments.len();
            st.comments.retain(|c| c.id != id);
            if st.comments.len() == before {
                error(StatusCode::NOT_FOUND, "Not Found")
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        }
        ("GET", ["repos", o, r, "commits", sha, "pulls"]) => {
            let found: Vec<Value> = st
                .pulls
                .iter()
                .filter(|(s, _, _)| s == sha)
                .map(|(_, n, t)| {
                    json!({"number": n, "title": t, "html_url": format!("https://github.com/{o}/{r}/pull/{n}"), "state": "closed"})
                })
                .collect();
            axum::Json(Value::Array(found)).into_response()
        }
        ("GET", ["repos", _, _, "deployments"]) => {
            let env = uri
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("environment="))
                .unwrap_or("")
                .to_string();
            let ids: Vec<Value> = st
                .deployments
                .iter()
                .rev()
                .filter(|(_, d)| env.is_empty() || d["environment"] == env.as_str())
                .map(|(id, d)| json!({"id": id, "environment": d["environment"]}))
                .collect();
            axum::Json(Value::Array(ids)).into_response()
        }
        ("POST", ["repos", _, _, "deployments"]) => {
            let Some(v) = json_body() else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request.");
            };
            if v.get("ref")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid request.\n\n\"ref\" wasn't supplied.",
                );
            }
            if v.get("required_contexts").is_some_and(|c| !c.is_array())
                || v.get("environment").is_some_and(|e| !e.is_string())
                || v.get("auto_merge").is_some_and(|a| !a.is_boolean())
            {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request.");
            }
            st.next_id += 1;
            let id = st.next_id;
            st.deployments.push((id, v.clone()));
            (
                StatusCode::CREATED,
                axum::Json(json!({"id": id, "ref": v["ref"], "environment": v["environment"]})),
            )
                .into_response()
        }
        ("POST", ["repos", _, _, "deployments", id, "statuses"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            if !st.deployments.iter().any(|(d, _)| *d == id) {
                return error(StatusCode::NOT_FOUND, "Not Found");
            }
            let Some(v) = json_body() else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request.");
            };
            let state = v.get("state").and_then(Value::as_str).unwrap_or("");
            if ![
                "error",
                "failure",
                "inactive",
                "in_progress",
                "queued",
                "pending",
                "success",
            ]
            .contains(&state)
            {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Validation Failed: state is not included in the list",
                );
            }
            if v.get("environment_url").is_some_and(|u| !u.is_string()) {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request.");
            }
            st.next_id += 1;
            st.deployment_statuses.push((id, v.clone()));
            (
                StatusCode::CREATED,
                axum::Json(json!({"id": st.next_id, "state": state})),
            )
                .into_response()
        }
        ("POST", ["repos", _, _, "statuses", sha]) => {
            let Some(v) = json_body() else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request.");
            };
            let state = v.get("state").and_then(Value::as_str).unwrap_or("");
            if !["error", "failure", "pending", "success"].contains(&state) {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Validation Failed: state is not included in the list",
                );
            }
            let desc = v.get("description").and_then(Value::as_str).unwrap_or("");
            if desc.chars().count() > 140 {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Validation Failed: description is too long (maximum is 140 characters)",
                );
            }
            st.statuses.push((sha.to_string(), v.clone()));
            (StatusCode::CREATED, axum::Json(v)).into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}
