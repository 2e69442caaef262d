//! Following a repository over Git's smart HTTP protocol with a token: the real
//! `git http-backend` behind a small CGI bridge that demands HTTP Basic credentials, as a
//! forge does for private repositories.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine;
use keelson::source::git::{GitAuth, GitSource};
use tokio::io::AsyncWriteExt;

use crate::support::bare_repo;

const TOKEN: &str = "ghs_test0token";

struct Server {
    root: PathBuf,
    /// Requests answered with 401.
    refused: AtomicUsize,
}

/// Runs `git http-backend` for one request (RFC 3875 CGI), if the credentials are right.
async fn cgi(
    State(s): State<Arc<Server>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        s.refused.fetch_add(1, Ordering::AcqRel);
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Basic realm=\"git\"")
            .body(Body::empty())
            .unwrap();
    }
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", &s.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", "x-access-token")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&body).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap().stdout;
    let (at, sep) = match out.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => (i, 4),
        None => (out.windows(2).position(|w| w == b"\n\n").unwrap(), 2),
    };
    let mut response = Response::builder();
    for line in String::from_utf8_lossy(&out[..at]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("status") {
            let code: u16 = value.trim()[..3].parse().unwrap();
            response = response.status(code);
        } else {
            response = response.header(name.trim(), value.trim());
        }
    }
    response.body(Body::from(out[at + sep..].to_vec())).unwrap()
}

/// A bare repository `specs.git` with one commit, served over HTTP; returns (url, commit).
async fn serve(dir: &Path) -> (String, String, Arc<Server>) {
    let root = dir.join("served");
    std::fs::create_dir_all(&root).unwrap();
    let (_, commit) = bare_repo(&root, "specs.git");
    let server = Arc::new(Server {
        root,
        refused: AtomicUsize::new(0),
    });
    let app = Router::new().fallback(cgi).with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.1:{port}/specs.git"), commit, server)
}

fn source(url: &str, dir: &Path, token: Option<&str>) -> GitSource {
    GitSource {
        url: url.to_string(),
        branch: "main".into(),
        path: None,
        dir: dir.to_path_buf(),
        auth: GitAuth {
            token: token.map(str::to_string),
            ssh_key: None,
            known_hosts: None,
        },
    }
}

/// Fetches on a blocking thread, giving up after 20 s (a credential loop would never end).
async fn fetch(src: GitSource) -> Result<String, String> {
    let job = tokio::task::spawn_blocking(move || src.fetch().map_err(|e| e.to_string()));
    tokio::time::timeout(Duration::from_secs(20), job)
        .await
        .expect("fetch gives up on bad credentials instead of asking again forever")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_repository_is_followed_over_http_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let (url, commit, server) = serve(dir.path()).await;

    let src = source(&url, &dir.path().join("clone"), Some(TOKEN));
    assert_eq!(fetch(src.clone()).await, Ok(commit.clone()));
    let files = src.read(&commit).unwrap();
    assert_eq!(files.files.len(), 1);
    assert_eq!(files.files[0].path, PathBuf::from("env.yaml"));

    // A wrong token fails with Git's answer, after a bounded number of tries.
    let before = server.refused.load(Ordering::Acquire);
    let wrong = source(&url, &dir.path().join("wrong"), Some("ghs_wrong"));
    let e = fetch(wrong).await.unwrap_err();
    let tries = server.refused.load(Ordering::Acquire) - before;
    assert!(tries <= 2, "{tries} refused requests: {e}");
    assert!(
        e.contains("the remote refused the token (KEELSON_GIT_TOKEN"),
        "{e}"
    );
    assert!(
        !e.contains("ghs_wrong"),
        "the token leaked into the error: {e}"
    );

    // No token at all says what to set.
    let none = source(&url, &dir.path().join("none"), None);
    let e = fetch(none).await.unwrap_err();
    assert!(e.contains("KEELSON_GIT_TOKEN"), "{e}");
}
