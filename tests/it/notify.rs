//! Notifications through the binary: local HTTP receivers stand in for Slack and for a webhook
//! consumer, the GitHub stand-in takes deployments; from `keelson apply` (and the daemon in
//! `daemon.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::Mac;
use serde_json::Value;

use crate::apply_e2e::Repo;

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A local HTTP receiver: answers 500 to its first `fail` requests, or never answers when
/// `hang`, and records every request.
pub struct Receiver {
    pub port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start(fail: usize, hang: bool) -> Self {
        let got: Arc<Mutex<Vec<Received>>> = Default::default();
        let failing = Arc::new(AtomicUsize::new(fail));
        let (g, f) = (got.clone(), failing.clone());
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let (g, f) = (g.clone(), f.clone());
            async move {
                g.lock().unwrap().push(Received {
                    headers,
                    body: body.to_vec(),
                });
                if hang {
                    tokio::time::sleep(Duration::from_secs(600)).await;
                }
                if f.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                StatusCode::OK
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { port, got, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook?token=url-secret-7", self.port)
    }

    pub fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

/// The dev environment with `notifications` (YAML list items, indented for `spec`).
fn env_with(repo: &Repo, notifications: &str) {
    std::fs::write(
        repo.path().join("env.yaml"),
        format!(
            "apiVersion: keelson/v1\nkind: Environment\nmetadata: {{name: dev}}\nspec:\n  targets: [{{name: local, provider: local}}]\n  notifications:\n{notifications}"
        ),
    )
    .unwrap();
}

/// Verifies `X-Keelson-Signature` as the README says a receiver should.
fn verifies(key: &str, r: &Received) -> bool {
    let Some(hex) = r.header("x-keelson-signature").strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(&r.body);
    mac.verify_slice(&sig).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_rollout_reaches_slack_and_a_signed_webhook_with_retries() {
    let slack = Receiver::start(0, false).await;
    // The webhook consumer answers 500 three times, then 200.
    let hook = Receiver::start(3, false).await;
    let mut repo = Repo::new();
    let key = repo.path().join("hook.key");
    std::fs::write(&key, "hmac-key-s3cret\n").unwrap();
    env_with(
        &repo,
        &format!(
            "    - {{name: team, type: slack, urlFrom: {{env: SLACK_URL}}, events: [rollout-started, rollout-succeeded, rollout-failed]}}\n    - {{name: audit, type: webhook, urlFrom: {{env: HOOK_URL}}, secretFrom: {{file: \"{}\"}}}}\n",
            key.display()
        ),
    );
    repo.env.extend([
        ("SLACK_URL".to_string(), slack.url()),
        ("HOOK_URL".to_string(), hook.url()),
        ("KEELSON_NOTIFY_BACKOFF".to_string(), "50ms".to_string()),
    ]);
    let canary = "{type: canary, steps: [{weight: 25, pause: 1s}]}";
    repo.app("1.0.0", canary, 2, "");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    repo.app("2.0.0", canary, 2, "");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    for secret in ["url-secret-7", "hmac-key-s3cret"] {
        assert!(!out.contains(secret), "a secret in the output:\n{out}");
    }
    // The webhook: every event once (retried deliveries share an id), in order, signed.
    let got = hook.got();
    let mut ids: Vec<String> = Vec::new();
    for r in &got {
        let id = r.header("x-keelson-event-id").to_string();
        assert_eq!(r.json()["id"], id.as_str());
        if ids.last() != Some(&id) {
            ids.push(id);
        }
        assert!(
            verifies("hmac-key-s3cret", r),
            "signature of {:?}",
            r.json()
        );
        assert!(!verifies("another-key", r));
    }
    assert_eq!(
        got.len(),
        ids.len() + 3,
        "three 500s, each retried with the same id"
    );
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ids.len(),
        "no event delivered twice once accepted"
    );
    let kinds: Vec<String> = {
        let mut seen = std::collections::BTreeSet::new();
        got.iter()
            .filter(|r| seen.insert(r.header("x-keelson-event-id").to_string()))
            .map(|r| r.json()["kind"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let second: Vec<&str> = kinds
        .iter()
        .map(String::as_str)
        .skip_while(|k| *k != "rollout-succeeded")
        .skip(1)
        .collect();
    assert_eq!(
        second.first().copied(),
        Some("rollout-started"),
        "{kinds:?}"
    );
    assert!(
        second.contains(&"step-completed") && second.last() == Some(&"rollout-succeeded"),
        "{kinds:?}"
    );
    let last = got.last().unwrap().json();
    assert_eq!(
        (
            last["environment"].as_str(),
            last["application"].as_str(),
            last["cluster"].as_str(),
            last["toVersion"].as_str(),
            last["fromVersion"].as_str(),
        ),
        (
            Some("dev"),
            Some("web"),
            Some("dev/local/web"),
            Some("2.0.0"),
            Some("1.0.0")
        ),
        "{last}"
    );
    // Slack: only what it asked for, coloured by severity.
    let slack_kinds: Vec<String> = slack
        .got()
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(slack_kinds.len(), 4, "{slack_kinds:?}");
    assert!(
        slack_kinds
            .iter()
            .all(|t| t.starts_with("rollout-started") || t.starts_with("rollout-succeeded")),
        "{slack_kinds:?}"
    );
    let done = slack.got().last().unwrap().json();
    assert_eq!(done["attachments"][0]["color"], "#2eb886", "{done}");
    // Nothing secret in the status or the plan either.
    for args in [&["status", "--format", "json"][..], &["plan"][..]] {
        let (_, text) = repo.run(args).await;
        assert!(
            !text.contains("url-secret-7") && !text.contains("hmac-key"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_does_not_slow_the_rollout() {
    let rb = "{type: red-black}";
    // The same rollout without notifications, for the time it takes.
    let plain = Repo::new();
    plain.app("1.0.0", rb, 2, "");
    let started = Instant::now();
    assert_eq!(plain.apply().await.0, 0);
    let alone = started.elapsed();
    let hang = Receiver::start(0, true).await;
    let mut repo = Repo::new();
    env_with(
        &repo,
        "    - {name: audit, type: webhook, urlFrom: {env: HOOK_URL}}\n",
    );
    repo.env.extend([
        ("HOOK_URL".to_string(), hang.url()),
        ("KEELSON_NOTIFY_WAIT".to_string(), "1s".to_string()),
    ]);
    repo.app("1.0.0", rb, 2, "");
    let started = Instant::now();
    let (code, out) = repo.apply().await;
    let with = started.elapsed();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("did not take every event within 1s"), "{out}");
    // At most the one-second wait at exit more (and some slack for a busy machine).
    assert!(
        with < alone + Duration::from_secs(4),
        "with a hanging receiver {with:?}, without {alone:?}"
    );
    assert!(!hang.got().is_empty(), "the receiver was called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_become_github_deployments_with_statuses() {
    let gh = crate::github_stub::GitHubStub::start("gh-token-9").await;
    let mut repo = Repo::new();
    env_with(
        &repo,
        &format!(
            "    - {{name: gh, type: github-deployments, repository: acme/deploy, tokenFrom: {{env: GH_TOKEN}}, apiUrl: \"{}\", environmentUrl: \"https://dev.example.com\"}}\n",
            gh.url()
        ),
    );
    repo.env
        .push(("GH_TOKEN".to_string(), "gh-token-9".to_string()));
    let rb = "{type: red-black}";
    repo.app("1.0.0", rb, 2, "");
    assert_eq!(repo.apply().await.0, 0);
    repo.app("2.0.0", rb, 2, "");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("gh-token-9"), "{out}");
    let st = gh.state.lock().unwrap();
    let envs: Vec<(&str, &str)> = st
        .deployments
        .iter()
        .map(|(_, d)| {
            (
                d["environment"].as_str().unwrap(),
                d["payload"]["version"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(envs, [("web-dev", "1.0.0"), ("web-dev", "2.0.0")]);
    let (first, second) = (st.deployments[0].0, st.deployments[1].0);
    let states: Vec<(u64, &str)> = st
        .deployment_statuses
        .iter()
        .map(|(id, s)| (*id, s["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            (first, "in_progress"),
            (first, "success"),
            (second, "in_progress"),
            (second, "success"),
            (first, "inactive"),
        ]
    );
    assert!(
        st.deployment_statuses
            .iter()
            .all(|(_, s)| s["environment_url"] == "https://dev.example.com")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_tells_of_approval_prompts_and_rollbacks() {
    let hook = Receiver::start(0, false).await;
    let mut repo = Repo::new();
    std::fs::write(
        repo.path().join("env.yaml"),
        "apiVersion: keelson/v1\nkind: Environment\nmetadata: {name: dev}\nspec:\n  targets: [{name: local, provider: local}]\n  constraints: {approval: required}\n  notifications:\n    - {name: audit, type: webhook, urlFrom: {env: HOOK_URL}, events: [approval-needed, approved, rollout-failed, rolled-back]}\n",
    )
    .unwrap();
    repo.env.push(("HOOK_URL".to_string(), hook.url()));
    let rb = "{type: red-black}";
    repo.app("1.0.0", rb, 2, "");
    let (code, out) = repo.apply().await;
    assert!(code == 0 && out.contains("awaiting approval"), "{out}");
    let (code, _) = repo.run(&["approve", "--env", "dev", "--app", "web"]).await;
    assert_eq!(code, 0);
    assert_eq!(repo.apply().await.0, 0);
    repo.app("2.0.0", rb, 2, ", --fail-health");
    let (code, _) = repo
        .run(&[
            "approve",
            "--env",
            "dev",
            "--app",
            "web",
            "--version",
            "2.0.0",
        ])
        .await;
    assert_eq!(code, 0);
    let (code, out) = repo.apply().await;
    assert!(code == 1 && out.contains("rolled back"), "{out}");
    let kinds: Vec<String> = hook
        .got()
        .iter()
        .map(|r| r.json()["kind"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "approval-needed",
            "approved",
            "approved",
            "rollout-failed",
            "rolled-back"
        ],
        "the prompt, both approvals (from the command line), the failure and its rollback"
    );
}
