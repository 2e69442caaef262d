//! `keelson up` end to end: a real bare Git repository, the real daemon binary, real HTTP.

use std::process::Stdio;
use std::time::Duration;

use hmac::Mac;

use crate::local_target::{Load, free_port};
use crate::support::git;

const ENV: &str = "apiVersion: keelson/v1\nkind: Environment\nmetadata: {name: dev}\nspec:\n  targets: [{name: local, provider: local}]\n";

fn app(version: &str, port: u16, strategy: &str) -> String {
    format!(
        "apiVersion: keelson/v1\nkind: Application\nmetadata: {{name: web}}\nspec:\n  artifact: {{version: \"{version}\"}}\n  workload: {{command: [keelson, demo-app, --port, \"{{port}}\"]}}\n  health: {{http: {{path: /healthz, interval: 200ms, timeout: 500ms}}, timeout: 10s}}\n  clusters:\n    - {{environment: dev, target: local, capacity: {{desired: 1}}, strategy: {strategy}, traffic: {{port: {port}}}}}\n"
    )
}

/// A working copy pushing to a bare repository, and a daemon following it.
struct Fixture {
    work: tempfile::TempDir,
    bare: tempfile::TempDir,
    state: tempfile::TempDir,
    port: u16,
    api: u16,
    daemon: Option<tokio::process::Child>,
}

impl Fixture {
    fn new() -> Self {
        let work = tempfile::tempdir().unwrap();
        let bare = tempfile::tempdir().unwrap();
        git(bare.path(), &["init", "-q", "--bare", "-b", "main"]);
        git(work.path(), &["init", "-q", "-b", "main"]);
        git(
            work.path(),
            &["remote", "add", "origin", bare.path().to_str().unwrap()],
        );
        std::fs::write(work.path().join("env.yaml"), ENV).unwrap();
        Self {
            work,
            bare,
            state: tempfile::tempdir().unwrap(),
            port: free_port(),
            api: free_port(),
            daemon: None,
        }
    }

    /// Commits the app at a version (or raw text) and pushes; returns the commit id.
    fn push(&self, text: &str) -> String {
        std::fs::write(self.work.path().join("web.yaml"), text).unwrap();
        git(self.work.path(), &["add", "-A"]);
        git(self.work.path(), &["commit", "-q", "-m", "change"]);
        git(self.work.path(), &["push", "-q", "-f", "origin", "main"]);
        git(self.work.path(), &["rev-parse", "HEAD"])
    }

    fn start(&mut self, drift: &str) {
        self.start_with(drift, &[]);
    }

    fn start_with(&mut self, drift: &str, env: &[(&str, &str)]) {
        let repo = self.bare.path().to_str().unwrap().to_string();
        let args = [
            "--repo",
            &repo,
            "--interval",
            "300ms",
            "--drift-interval",
            drift,
        ];
        self.spawn(&args, env);
    }

    /// Starts `keelson up` with `args`, on this fixture's API port and state directory.
    fn spawn(&mut self, args: &[&str], env: &[(&str, &str)]) {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
            .envs(env.iter().copied())
            .arg("up")
            .args(args)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.api))
            .arg("--state-dir")
            .arg(self.state.path())
            .env("KEELSON_API_TOKEN", "s3cret-token")
            .env("KEELSON_WEBHOOK_SECRET", "hook-secret")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.state.path().join("daemon.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api)
    }

    async fn status(&self) -> serde_json::Value {
        let (_, body) = http(&self.url("/api/v1/status"), "GET", &[], "").await;
        serde_json::from_str(&body).unwrap_or_default()
    }

    /// Waits until the app answers with `version`.
    async fn wait_version(&self, version: &str, secs: u64) {
        for _ in 0..secs * 10 {
            let (_, body) = http(&format!("http://127.0.0.1:{}/", self.port), "GET", &[], "").await;
            if body.contains(&format!("\"version\":\"{version}\"")) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(self.state.path().join("daemon.log")).unwrap_or_default();
        panic!(
            "{version} never served; daemon log:\n{}",
            &log[log.len().saturating_sub(3000)..]
        );
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(c) = self.daemon.as_mut() {
            let _ = c.start_kill();
        }
        crate::local_target::stop_all(self.state.path());
    }
}

/// One HTTP call; returns status and body ("" and 0 when unreachable).
pub(crate) async fn http(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (status, _, body) = http_with_headers(url, method, headers, body).await;
    (status, body)
}

/// An HTTP call that also returns the answer's headers; status 0 when nothing answered.
pub(crate) async fn http_with_headers(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, hyper::HeaderMap, String) {
    let client = keelson::http_client::client();
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let b = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            (status, headers, String::from_utf8_lossy(&b).into_owned())
        }
        _ => (0, hyper::HeaderMap::new(), String::new()),
    }
}

async fn wait_ready(f: &Fixture) {
    for _ in 0..100 {
        if http(&f.url("/readyz"), "GET", &[], "").await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "daemon never ready: {}",
        std::fs::read_to_string(f.state.path().join("daemon.log")).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_follows_the_branch_keeps_the_last_good_revision_and_follows_force_pushes() {
    let mut f = Fixture::new();
    let rb = "{type: red-black, keepDisabled: 1}";
    f.push(&app("1.0.0", f.port, rb));
    f.start("1m");
    wait_ready(&f).await;
    f.wait_version("1.0.0", 20).await;
    let load = Load::start(f.port, 100);
    let good = f.push(&app("2.0.0", f.port, rb));
    f.wait_version("2.0.0", 20).await;
    // An invalid revision changes nothing; status names the file and line.
    let bad = f.push(&app("3.0.0", f.port, rb).replace("desired: 1", "desired: \"one\""));
    let mut st = serde_json::Value::Null;
    for _ in 0..50 {
        st = f.status().await;
        if st["daemon"]["fetched"] == bad.as_str() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(st["daemon"]["fetched"], bad.as_str(), "{st}");
    assert_eq!(
        st["daemon"]["revision"],
        good.as_str(),
        "the last good revision stays: {st}"
    );
    assert_eq!(st["daemon"]["last_result"], "invalid");
    assert!(
        st["daemon"]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("web.yaml:9:61: spec.clusters[0].capacity.desired"),
        "file:line in status: {st}"
    );
    let (_, metrics) = http(&f.url("/metrics"), "GET", &[], "").await;
    assert!(metrics.contains("keelson_last_sync_success 0"), "{metrics}");
    assert!(
        metrics.contains(&format!("keelson_revision{{revision=\"{good}\"}} 1")),
        "{metrics}"
    );
    // Fixed: converges.
    f.push(&app("3.0.0", f.port, rb));
    f.wait_version("3.0.0", 20).await;
    // Force-push back to the good commit: converges back to it.
    git(f.work.path(), &["reset", "-q", "--hard", &good]);
    git(f.work.path(), &["push", "-q", "-f", "origin", "main"]);
    f.wait_version("2.0.0", 20).await;
    let (_, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    // SIGTERM: a clean exit.
    let pid = f.daemon.as_ref().and_then(|c| c.id()).unwrap();
    // SAFETY: signals the daemon this test started.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let status = tokio::time::timeout(Duration::from_secs(20), f.daemon.as_mut().unwrap().wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

fn sign(body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"hook-secret").unwrap();
    mac.update(body.as_bytes());
    format!(
        "sha256={}",
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_api_auth_drift_and_suspend() {
    let mut f = Fixture::new();
    let canary = "{type: canary, steps: [{weight: 50, pause: 3s}]}";
    f.push(&app("1.0.0", f.port, canary));
    f.start("1s");
    wait_ready(&f).await;
    f.wait_version("1.0.0", 20).await;

    // Webhooks: signatures are checked, other events ignored, big bodies refused.
    let body = r#"{"ref":"refs/heads/main"}"#;
    let hook = f.url("/webhooks/github");
    assert_eq!(
        http(
            &hook,
            "POST",
            &[
                ("x-github-event", "push"),
                ("x-hub-signature-256", &sign(body))
            ],
            body
        )
        .await
        .0,
        202
    );
    assert_eq!(
        http(
            &hook,
            "POST",
            &[
                ("x-github-event", "push"),
                ("x-hub-signature-256", "sha256=00")
            ],
            body
        )
        .await
        .0,
        401
    );
    assert_eq!(
        http(&hook, "POST", &[("x-github-event", "push")], body)
            .await
            .0,
        401
    );
    let ping = r#"{"zen":"hi"}"#;
    let (code, text) = http(
        &hook,
        "POST",
        &[
            ("x-github-event", "ping"),
            ("x-hub-signature-256", &sign(ping)),
        ],
        ping,
    )
    .await;
    assert!(code == 202 && text.contains("ignored"), "{code} {text}");
    let big = "x".repeat(2 * 1024 * 1024);
    assert_eq!(
        http(
            &hook,
            "POST",
            &[
                ("x-github-event", "push"),
                ("x-hub-signature-256", &sign(&big))
            ],
            &big
        )
        .await
        .0,
        413
    );
    // Mutations need the token.
    let suspend = f.url("/api/v1/suspend");
    let sbody = r#"{"cluster": "web", "reason": "incident 9"}"#;
    assert_eq!(
        http(
            &suspend,
            "POST",
            &[("content-type", "application/json")],
            sbody
        )
        .await
        .0,
        401
    );
    assert_eq!(
        http(
            &suspend,
            "POST",
            &[
                ("content-type", "application/json"),
                ("authorization", "Bearer wrong")
            ],
            sbody
        )
        .await
        .0,
        401
    );
    // The token is checked before the body is read: garbage without it is 401, not 400.
    assert_eq!(
        http(
            &suspend,
            "POST",
            &[("content-type", "application/json")],
            "{not json"
        )
        .await
        .0,
        401
    );
    let auth = [
        ("content-type", "application/json"),
        ("authorization", "Bearer s3cret-token"),
    ];
    // An empty scope is not "everything": it must be named.
    let (code, body) = http(&suspend, "POST", &auth, r#"{"reason": "x"}"#).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("name the scope"), "{body}");
    // A scope the specs do not declare is refused, unless forced.
    let (code, body) = http(&suspend, "POST", &auth, r#"{"env": "dve", "reason": "x"}"#).await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("did you mean `dev`?"), "{body}");
    // Who acted is the token's identity, not what the client claims.
    let (code, body) = http(
        &suspend,
        "POST",
        &auth,
        r#"{"cluster": "web", "reason": "x", "who": "someone-else"}"#,
    )
    .await;
    assert_eq!(code, 400, "a claimed identity is refused: {body}");

    // Drift: a group disabled by hand is enabled again within a drift interval.
    let op = r#"{"request": "apply", "cluster": {"environment": "dev", "target": "local", "name": "web"}, "op": {"op": "traffic", "changes": [{"group": "web-v000", "sequence": 0, "from": 100, "to": 0}]}}"#;
    let reply = keelson::provider::local::control::request(
        &f.state.path().join("local"),
        &serde_json::from_str(op).unwrap(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(reply, keelson::provider::local::wire::Reply::Ok);
    f.wait_version("1.0.0", 10).await;
    // Traffic returns at the enable step; the metrics follow when the reconcile finishes.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = http(&f.url("/metrics"), "GET", &[], "").await.1;
        if metrics.contains("keelson_drift_healed_total 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains("keelson_drift_healed_total 1"),
        "{metrics}"
    );

    // Suspend via the API during a canary: it stops at the next step; resume carries on.
    f.push(&app("2.0.0", f.port, canary));
    for _ in 0..100 {
        let st = f.status().await;
        if st["daemon"]["clusters"][0]["server_groups"]
            .as_array()
            .is_some_and(|g| g.len() == 2)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let auth = [
        ("content-type", "application/json"),
        ("authorization", "Bearer s3cret-token"),
    ];
    // Through the CLI, as a person on call would.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args(args)
            .env("KEELSON_SERVER", f.url(""))
            .env("KEELSON_API_TOKEN", "s3cret-token")
            .env("KEELSON_USER", "alice")
            .env("KEELSON_COLOR", "never")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = cli(&["suspend", "--cluster", "web", "--reason", "incident 9"]);
    assert_eq!(code, Some(0), "{out}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let st = f.status().await;
    assert!(
        st["suspends"][0]["reason"] == "incident 9" && st["suspends"][0]["who"] == "api token",
        "{st}"
    );
    let (_, shown) = cli(&["status"]);
    assert!(
        shown.contains("suspended:")
            && shown.contains("incident 9")
            && shown.contains("dev/local/web"),
        "{shown}"
    );
    let (_, served) = http(&format!("http://127.0.0.1:{}/", f.port), "GET", &[], "").await;
    let groups = st["daemon"]["clusters"][0]["server_groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        groups.len(),
        2,
        "stopped part-way with both groups: {st} {served}"
    );
    assert_eq!(
        http(
            &f.url("/api/v1/resume"),
            "POST",
            &auth,
            r#"{"cluster": "web"}"#
        )
        .await
        .0,
        200
    );
    f.wait_version("2.0.0", 20).await;
    for _ in 0..50 {
        let st = f.status().await;
        if st["daemon"]["clusters"][0]["server_groups"]
            .as_array()
            .is_some_and(|g| {
                g.iter().filter(|g| g["enabled"] == true).count() == 1
                    && g.iter()
                        .any(|g| g["enabled"] == true && g["version"] == "2.0.0")
            })
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "did not finish the canary after resume: {}",
        f.status().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_git_protocol_sigterm_mid_rollout_then_restart_converges() {
    let mut f = Fixture::new();
    let canary = "{type: canary, steps: [{weight: 50, pause: 4s}]}";
    f.push(&app("1.0.0", f.port, canary));
    // Serve the bare repository over the network with `git daemon`.
    let git_port = free_port();
    let base = f.bare.path().parent().unwrap().to_path_buf();
    let name = f
        .bare
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    std::fs::write(f.bare.path().join("git-daemon-export-ok"), "").unwrap();
    let pid_file = f.state.path().join("git-daemon.pid");
    let _gitd_guard = KillPidFile(pid_file.clone());
    let mut gitd = tokio::process::Command::new("git")
        .args([
            "daemon",
            "--reuseaddr",
            "--listen=127.0.0.1",
            &format!("--port={git_port}"),
            &format!("--base-path={}", base.display()),
        ])
        .arg(format!("--pid-file={}", pid_file.display()))
        .arg(&base)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("git daemon starts");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = |f: &mut Fixture| {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args([
                "up",
                "--repo",
                &format!("git://127.0.0.1:{git_port}/{name}"),
                "--interval",
                "300ms",
                "--listen",
            ])
            .arg(format!("127.0.0.1:{}", f.api))
            .arg("--state-dir")
            .arg(f.state.path())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(f.state.path().join("daemon.log"))
                    .unwrap(),
            )
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        f.daemon = Some(child);
    };
    start(&mut f);
    wait_ready(&f).await;
    f.wait_version("1.0.0", 20).await;
    f.push(&app("2.0.0", f.port, canary));
    // Wait until the canary is at 50%, then SIGTERM the daemon inside the pause.
    for _ in 0..100 {
        let (_, body) = http(&format!("http://127.0.0.1:{}/", f.port), "GET", &[], "").await;
        if body.contains("2.0.0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = f.daemon.as_ref().and_then(|c| c.id()).unwrap();
    // SAFETY: signals the daemon this test started.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let status = tokio::time::timeout(Duration::from_secs(10), f.daemon.as_mut().unwrap().wait())
        .await
        .expect("exits within the grace period")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(f.state.path().join("daemon.log")).unwrap_or_default();
    assert!(log.contains("shutting down"), "{log}");
    // Restarted, it carries on to the same end state: only 2.0.0 serves.
    start(&mut f);
    wait_ready(&f).await;
    for _ in 0..150 {
        let st = f.status().await;
        let groups = st["daemon"]["clusters"][0]["server_groups"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if groups.iter().filter(|g| g["enabled"] == true).count() == 1
            && groups
                .iter()
                .any(|g| g["enabled"] == true && g["version"] == "2.0.0")
        {
            let _ = gitd.start_kill();
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("did not converge after restart: {}", f.status().await);
}

/// Kills the process named in a pid file when dropped (git daemon forks away from its parent).
struct KillPidFile(std::path::PathBuf);

impl Drop for KillPidFile {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // SAFETY: signals the git daemon this test started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_pull_request_webhook_leads_to_a_plan_comment() {
    const TOKEN: &str = "ghp_daemon0token0secret";
    let stub = crate::github_stub::GitHubStub::start(TOKEN).await;
    let mut f = Fixture::new();
    let rb = "{type: red-black}";
    let base = f.push(&app("1.0.0", f.port, rb));
    let forge = stub.url();
    f.start_with(
        "1m",
        &[
            ("KEELSON_FORGE_URL", &forge),
            ("KEELSON_FORGE_TOKEN", TOKEN),
            ("KEELSON_FORGE_REPO", "acme/deploy"),
        ],
    );
    wait_ready(&f).await;
    f.wait_version("1.0.0", 20).await;
    // The pull request: a branch the forge also exposes as refs/pull/5/head.
    let work = f.work.path();
    git(work, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(work.join("web.yaml"), app("1.1.0", f.port, rb)).unwrap();
    git(work, &["commit", "-qam", "bump"]);
    git(work, &["push", "-q", "origin", "HEAD:refs/pull/5/head"]);
    let head = git(work, &["rev-parse", "HEAD"]);
    let event_of = |repo: &str, action: &str| {
        serde_json::json!({
            "action": action,
            "number": 5,
            "pull_request": {
                "head": {"sha": head, "ref": "feature"},
                "base": {"sha": base, "ref": "main"}
            },
            "repository": {"full_name": repo}
        })
        .to_string()
    };
    let event = |action: &str| event_of("Acme/Deploy", action);
    let send = |body: String| {
        let url = f.url("/webhooks/github");
        async move {
            let sig = sign(&body);
            http(
                &url,
                "POST",
                &[
                    ("x-github-event", "pull_request"),
                    ("x-hub-signature-256", &sig),
                ],
                &body,
            )
            .await
        }
    };
    // An organisation webhook also reports other repositories: those are not ours to plan.
    let (code, body) = send(event_of("acme/website", "synchronize")).await;
    assert_eq!(
        (code, body.trim()),
        (
            202,
            "event for `acme/website` ignored: this daemon follows `acme/deploy`"
        )
    );
    let (code, body) = send(event("synchronize")).await;
    assert_eq!((code, body.trim()), (202, "plan comment queued"));
    let mut comments = Vec::new();
    for _ in 0..200 {
        comments = stub.comments(5);
        if !comments.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(f.state.path().join("daemon.log")).unwrap_or_default();
    assert_eq!(
        comments.len(),
        1,
        "one comment, from our repository; daemon log:\n{log}"
    );
    let c = &comments[0].body;
    assert!(
        c.starts_with("<!-- keelson-plan: env=all part=1 -->"),
        "{c}"
    );
    assert!(c.contains("live state observed"), "{c}");
    assert!(c.contains("-version: 1.0.0\n+version: 1.1.0"), "{c}");
    assert!(c.contains("changed by this pull request"), "{c}");
    let statuses = stub.statuses();
    assert_eq!(statuses[0].0, head);
    assert_eq!(statuses[0].1["state"], "success");
    // Closing a pull request plans nothing.
    let (code, body) = send(event("closed")).await;
    assert_eq!(code, 202);
    assert!(body.contains("ignored"), "{body}");
    // A pull request is not a merge: the cluster stays at 1.0.0.
    f.wait_version("1.0.0", 1).await;
    assert!(!log.contains(TOKEN), "the token leaked into the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_files_replans_when_a_spec_is_saved() {
    let mut f = Fixture::new();
    let rb = "{type: red-black}";
    std::fs::write(f.work.path().join("web.yaml"), app("1.0.0", f.port, rb)).unwrap();
    // A poll interval of an hour: only the file watcher can pick up the change.
    let work = f.work.path().to_str().unwrap().to_string();
    f.spawn(
        &[
            "--repo",
            &work,
            "--watch-files",
            "--interval",
            "1h",
            "--drift-interval",
            "1h",
        ],
        &[],
    );
    wait_ready(&f).await;
    f.wait_version("1.0.0", 20).await;
    std::fs::write(f.work.path().join("web.yaml"), app("1.1.0", f.port, rb)).unwrap();
    f.wait_version("1.1.0", 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_ssh_an_unknown_host_key_is_reported_then_trusted_without_a_restart() {
    let mut f = Fixture::new();
    f.push(&app("1.0.0", f.port, "{type: highlander}"));
    let keys = tempfile::tempdir().unwrap();
    let server = crate::git_ssh::sshd(keys.path());
    let known_hosts = keys.path().join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        crate::git_ssh::user(),
        server.port,
        f.bare.path().display()
    );
    let key = server.dir.join("user_key");
    let args = [
        "--repo",
        url.as_str(),
        "--ssh-key",
        key.to_str().unwrap(),
        "--interval",
        "300ms",
    ];
    f.spawn(
        &args,
        &[("KEELSON_SSH_KNOWN_HOSTS", known_hosts.to_str().unwrap())],
    );
    // The daemon says why it cannot fetch, and how to trust the host.
    let mut last = serde_json::Value::Null;
    for _ in 0..300 {
        last = f.status().await;
        if last["daemon"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("add this line"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = last["daemon"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains(&format!(
            "the ssh host key of [127.0.0.1]:{} (ssh-ed25519 SHA256:",
            server.port
        )) && error.contains(&format!(
            "add this line to {}: [127.0.0.1]:{} ssh-ed25519 ",
            known_hosts.display(),
            server.port
        )) && error.ends_with("nothing is applied until a valid revision is fetched"),
        "{last}"
    );
    // Doing what it says is enough: the next poll fetches and the app is deployed.
    std::fs::write(&known_hosts, crate::git_ssh::line_to_add(&error)).unwrap();
    f.wait_version("1.0.0", 30).await;
}

/// Slow or silent clients do not hold the daemon's connections: a connection that sends
/// nothing, half a request head, or half a body is closed within the client timeout, and past
/// the connection limit the next client is served once a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_within_the_timeouts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut f = Fixture::new();
    f.push(&app("1.0.0", f.port, "{type: highlander}"));
    let repo = f.bare.path().to_str().unwrap().to_string();
    f.spawn(
        &[
            "--repo",
            &repo,
            "--client-timeout",
            "1s",
            "--max-connections",
            "3",
        ],
        &[],
    );
    wait_ready(&f).await;
    let addr = format!("127.0.0.1:{}", f.api);
    // How long the daemon keeps a connection that does `what`; the answer it gave, if any.
    let held = |what: &'static [u8]| {
        let addr = addr.clone();
        async move {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            s.write_all(what).await.unwrap();
            let start = std::time::Instant::now();
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut buf)).await;
            (start.elapsed(), String::from_utf8_lossy(&buf).to_string())
        }
    };
    let (t, _) = held(b"").await;
    assert!(t < Duration::from_secs(3), "silent client held {t:?}");
    let (t, _) = held(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    assert!(t < Duration::from_secs(3), "half a head held {t:?}");
    let (t, answer) =
        held(b"POST /api/v1/sync HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"partial\":")
            .await;
    assert!(t < Duration::from_secs(3), "half a body held {t:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Three idle connections take every slot; the fourth client is served when they are cut.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = std::time::Instant::now();
    let (code, _) = http(&f.url("/healthz"), "GET", &[], "").await;
    assert_eq!(code, 200);
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "served beside three held connections: {:?}",
        start.elapsed()
    );
    drop(idle);
}

/// Credentials in the repository URL never show: not in the status API, not in the log, not in
/// the error of a failed fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_repository_url_are_never_shown() {
    let mut f = Fixture::new();
    let closed = free_port();
    let url = format!("http://bot:tok-SECRET-77@127.0.0.1:{closed}/acme/deploy.git");
    f.spawn(&["--repo", &url, "--interval", "300ms"], &[]);
    let mut st = serde_json::Value::Null;
    for _ in 0..50 {
        st = f.status().await;
        if st["daemon"]["last_error"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = st.to_string();
    assert!(text.contains("bot:***@127.0.0.1"), "{text}");
    assert!(st["daemon"]["last_error"].is_string(), "{text}");
    let log = std::fs::read_to_string(f.state.path().join("daemon.log")).unwrap();
    for shown in [&text, &log] {
        assert!(!shown.contains("tok-SECRET-77"), "{shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_rolls_a_bad_version_back_by_its_own_metrics_with_nobody_watching() {
    let mut f = Fixture::new();
    let canary = "{type: canary, steps: [{weight: 40, pause: 2s}], analysis: {interval: 1s, metrics: [{name: errors, query: error-rate, max: 0.05}]}}";
    f.push(&app("1.0.0", f.port, canary));
    f.start_with("1h", &[("KEELSON_LOCAL_METRICS", "off")]);
    wait_ready(&f).await;
    f.wait_version("1.0.0", 30).await;
    let load = Load::start(f.port, 100);
    let bad =
        app("2.0.0", f.port, canary).replace("\"{port}\"]", "\"{port}\", --error-rate, \"0.3\"]");
    f.push(&bad);
    // The daemon measures, fails the canary, rolls it back, and leaves the spec alone after.
    let mut state = serde_json::Value::Null;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        state = f.status().await["analyses"][0].clone();
        if state["state"] == "failed" {
            break;
        }
    }
    assert_eq!(
        state["state"],
        "failed",
        "{state}\n{}",
        std::fs::read_to_string(f.state.path().join("daemon.log")).unwrap_or_default()
    );
    assert_eq!(state["version"], "2.0.0");
    // Several reconciles later it still serves 1.0.0 alone, and tried 2.0.0 once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (counts, _) = load.finish().await;
    let (_, body) = http(&format!("http://127.0.0.1:{}/", f.port), "GET", &[], "").await;
    assert!(body.contains("\"version\":\"1.0.0\""), "{body}");
    let groups: Vec<String> = f.status().await["daemon"]["clusters"][0]["server_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| g["name"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(groups, ["web-v000"]);
    assert!(
        counts.contains_key("web-v001"),
        "the canary took traffic: {counts:?}"
    );
    let (_, metrics) = http(&f.url("/metrics"), "GET", &[], "").await;
    assert!(
        metrics.contains(
            "keelson_analysis_state{cluster=\"dev/local/web\",version=\"2.0.0\",state=\"failed\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("keelson_analysis_metric_value{cluster=\"dev/local/web\",version=\"2.0.0\",metric=\"errors\",group=\"canary\"} 0."),
        "{metrics}"
    );
    let (_, history) = http(&f.url("/api/v1/status"), "GET", &[], "").await;
    assert_eq!(
        history.matches("\"state\":\"failed\"").count(),
        1,
        "{history}"
    );
}

/// An application `name` on `port` at `version`; `fail` makes its instances never healthy.
fn named_app(name: &str, version: &str, port: u16, fail: bool) -> String {
    let extra = if fail { ", --fail-health" } else { "" };
    format!(
        "apiVersion: keelson/v1\nkind: Application\nmetadata: {{name: {name}}}\nspec:\n  artifact: {{version: \"{version}\"}}\n  workload: {{command: [keelson, demo-app, --port, \"{{port}}\"{extra}]}}\n  health: {{http: {{path: /healthz, interval: 200ms, timeout: 500ms}}, timeout: 1s}}\n  clusters:\n    - {{environment: dev, target: local, capacity: {{desired: 1}}, strategy: {{type: red-black}}, traffic: {{port: {port}}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_over_the_api_act_as_the_tokens_user() {
    let mut f = Fixture::new();
    std::fs::write(
        f.work.path().join("env.yaml"),
        format!("{ENV}  constraints:\n    approval: {{required: true, approvers: [\"group:release-managers\"]}}\n"),
    )
    .unwrap();
    let ids = f.state.path().join("identities.yaml");
    let digest = |t: &str| {
        keelson::identity::digest(t)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    std::fs::write(
        &ids,
        format!(
            "users:\n  - {{name: dave, groups: [release-managers], tokenSha256: {}}}\n  - {{name: carol, groups: [qa-leads], tokenSha256: {}}}\n",
            digest("dave-token"),
            digest("carol-token")
        ),
    )
    .unwrap();
    f.push(&app("1.0.0", f.port, "{type: red-black}"));
    let ids_env = ids.display().to_string();
    f.start_with("1h", &[("KEELSON_IDENTITIES", ids_env.as_str())]);
    // Held for approval: shown in the status.
    let mut outcome = String::new();
    for _ in 0..100 {
        let st = f.status().await;
        outcome = st["daemon"]["clusters"][0]["outcome"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if outcome.contains("awaiting approval") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        outcome.contains("awaiting approval of 1.0.0 by group:release-managers"),
        "{outcome}"
    );
    let body = r#"{"app": "web", "env": "dev"}"#;
    let url = f.url("/api/v1/approve");
    assert_eq!(http(&url, "POST", &[], body).await.0, 401);
    let (code, said) = http(
        &url,
        "POST",
        &[("authorization", "Bearer carol-token")],
        body,
    )
    .await;
    assert!(
        code == 403
            && said.contains("carol may not approve in dev: only group:release-managers may"),
        "{code} {said}"
    );
    let (code, said) = http(
        &url,
        "POST",
        &[("authorization", "Bearer dave-token")],
        body,
    )
    .await;
    assert_eq!(code, 200, "{said}");
    f.wait_version("1.0.0", 20).await;
    // The command line through the API: the token says who acts.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args([
            "pin", "web", "1.0.0", "--env", "dev", "--reason", "freeze", "--server",
        ])
        .arg(f.url(""))
        .env("KEELSON_API_TOKEN", "dave-token")
        .output()
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("Pinned web in dev to 1.0.0"),
        "{text}"
    );
    // Git moves on and approves nothing: the pin holds, and the status says who and why.
    f.push(&app("2.0.0", f.port, "{type: red-black}"));
    let mut controls = serde_json::Value::Null;
    for _ in 0..100 {
        let st = f.status().await;
        controls = st["daemon"]["clusters"][0]["controls"].clone();
        if controls.to_string().contains("Git asks for 2.0.0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        controls
            .to_string()
            .contains("pinned to 1.0.0 by dave: freeze"),
        "{controls}"
    );
    f.wait_version("1.0.0", 1).await;
    let history = std::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(["history", "--state-dir"])
        .arg(f.state.path())
        .output()
        .unwrap();
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(
        history.contains("approve: approved web 1.0.0 in dev  [dave]")
            && history.contains("pin: pinned web to 1.0.0 in dev: freeze  [dave]"),
        "{history}"
    );
    let log = std::fs::read_to_string(f.state.path().join("daemon.log")).unwrap_or_default();
    assert!(
        !log.contains("dave-token") && !log.contains("carol-token"),
        "tokens never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cluster_delays_no_other_and_a_new_commit_supersedes_its_retry() {
    let mut f = Fixture::new();
    let bad_port = free_port();
    let (work, port) = (f.work.path().to_path_buf(), f.port);
    let write = |web: &str, bad: &str, fail: bool| {
        std::fs::write(work.join("bad.yaml"), named_app("bad", bad, bad_port, fail)).unwrap();
        std::fs::write(work.join("web.yaml"), named_app("web", web, port, false)).unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "change"]);
        git(&work, &["push", "-q", "-f", "origin", "main"]);
    };
    write("1.0.0", "1.0.0", true);
    f.start("1h");
    f.wait_version("1.0.0", 20).await;
    // In the same seconds, `bad` keeps failing and `web` moves on at once.
    let pushed = std::time::Instant::now();
    write("1.1.0", "1.0.0", true);
    f.wait_version("1.1.0", 10).await;
    let web_took = pushed.elapsed();
    // The flapping guard leaves `bad` alone after three failures; the metrics count it.
    let mut st = serde_json::Value::Null;
    for _ in 0..300 {
        st = f.status().await;
        let bad = st["daemon"]["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["cluster"] == "dev/local/bad")
            .cloned()
            .unwrap_or_default();
        if bad["controls"].to_string().contains("unhappy") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        st.to_string().contains("unhappy: 3 failed rollouts"),
        "{st}"
    );
    let (_, metrics) = http(&f.url("/metrics"), "GET", &[], "").await;
    assert!(metrics.contains("keelson_unhappy_clusters 1"), "{metrics}");
    // A commit that changes `bad` supersedes its cooldown at once.
    let pushed = std::time::Instant::now();
    write("1.1.0", "1.0.1", false);
    for _ in 0..100 {
        let (_, body) = http(&format!("http://127.0.0.1:{bad_port}/"), "GET", &[], "").await;
        if body.contains("\"version\":\"1.0.1\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, body) = http(&format!("http://127.0.0.1:{bad_port}/"), "GET", &[], "").await;
    assert!(
        body.contains("\"version\":\"1.0.1\""),
        "bad never converged: {body}"
    );
    assert!(
        web_took < Duration::from_secs(10) && pushed.elapsed() < Duration::from_secs(10),
        "web took {web_took:?}, bad's fix {:?}",
        pushed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_notifies_approval_prompts_rollouts_and_rollbacks() {
    let hook = crate::notify::Receiver::start(0, false).await;
    let slack = crate::notify::Receiver::start(0, false).await;
    let gh = crate::github_stub::GitHubStub::start("gh-token-9").await;
    let dead = free_port();
    let mut f = Fixture::new();
    std::fs::write(
        f.work.path().join("env.yaml"),
        format!(
            "{ENV}  constraints: {{approval: required}}\n  notifications:\n    - {{name: audit, type: webhook, urlFrom: {{env: HOOK_URL}}, secretFrom: {{env: HOOK_KEY}}}}\n    - {{name: gone, type: webhook, urlFrom: {{env: DEAD_URL}}, events: [approval-needed]}}\n    - {{name: team, type: slack, urlFrom: {{env: SLACK_URL}}, events: [approval-needed, rollout-succeeded, rolled-back]}}\n    - {{name: gh, type: github-deployments, repository: acme/deploy, tokenFrom: {{env: GH_TOKEN}}, apiUrl: \"{}\"}}\n",
            gh.url()
        ),
    )
    .unwrap();
    let slack_url = slack.url();
    f.push(&named_app("web", "1.0.0", f.port, false));
    let (hook_url, dead_url) = (hook.url(), format!("http://127.0.0.1:{dead}/"));
    f.start_with(
        "1h",
        &[
            ("HOOK_URL", hook_url.as_str()),
            ("HOOK_KEY", "daemon-key"),
            ("DEAD_URL", dead_url.as_str()),
            ("SLACK_URL", slack_url.as_str()),
            ("GH_TOKEN", "gh-token-9"),
            ("KEELSON_NOTIFY_BACKOFF", "20ms"),
        ],
    );
    let kinds = |hook: &crate::notify::Receiver| -> Vec<String> {
        hook.got()
            .iter()
            .map(|r| r.json()["kind"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let wait_for = async |kind: &str| {
        for _ in 0..200 {
            if kinds(&hook).iter().any(|k| k == kind) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no {kind} event: {:?}", kinds(&hook));
    };
    wait_for("approval-needed").await;
    let (code, said) = http(
        &f.url("/api/v1/approve"),
        "POST",
        &[("authorization", "Bearer s3cret-token")],
        r#"{"app": "web", "env": "dev"}"#,
    )
    .await;
    assert_eq!(code, 200, "{said}");
    wait_for("rollout-succeeded").await;
    f.wait_version("1.0.0", 10).await;
    // A version that never becomes healthy: prompted, failed, rolled back, told.
    f.push(&named_app("web", "2.0.0", f.port, true));
    for _ in 0..200 {
        if kinds(&hook)
            .iter()
            .filter(|k| *k == "approval-needed")
            .count()
            == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, said) = http(
        &f.url("/api/v1/approve"),
        "POST",
        &[("authorization", "Bearer s3cret-token")],
        r#"{"app": "web", "env": "dev", "version": "2.0.0"}"#,
    )
    .await;
    assert_eq!(code, 200, "{said}");
    wait_for("rolled-back").await;
    let got = kinds(&hook);
    let pos = |k: &str| got.iter().position(|g| g == k).unwrap();
    assert!(
        pos("approval-needed") < pos("approved")
            && pos("approved") < pos("rollout-started")
            && pos("rollout-succeeded") < pos("rollout-failed")
            && pos("rollout-failed") < pos("rolled-back"),
        "{got:?}"
    );
    assert!(
        got.iter().filter(|k| *k == "approval-needed").count() == 2,
        "one prompt per version, not one per reconcile: {got:?}"
    );
    for r in hook.got() {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"daemon-key").unwrap();
        mac.update(&r.body);
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            r.header("x-keelson-signature"),
            format!("sha256={expected}")
        );
    }
    // Slack got the prompts, the success and the rollback; GitHub a deployment per version.
    let slack_texts: Vec<String> = slack
        .got()
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap_or("").to_string())
        .collect();
    let starts = |k: &str| slack_texts.iter().filter(|t| t.starts_with(k)).count();
    assert_eq!(
        (
            starts("approval-needed"),
            starts("rollout-succeeded"),
            starts("rolled-back")
        ),
        (2, 1, 1),
        "{slack_texts:?}"
    );
    for _ in 0..50 {
        if gh.state.lock().unwrap().deployment_statuses.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    {
        let st = gh.state.lock().unwrap();
        let states: Vec<&str> = st
            .deployment_statuses
            .iter()
            .map(|(_, s)| s["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["in_progress", "success", "in_progress", "failure"]);
    }
    // The receiver that is gone: dead letters in the metrics and the status, no URL shown.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = http(&f.url("/metrics"), "GET", &[], "").await.1;
        if metrics.contains("keelson_notification_dead_letters{destination=\"dev/gone\"} 2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        metrics.contains("keelson_notification_dead_letters{destination=\"dev/gone\"} 2"),
        "{metrics}"
    );
    let status = f.status().await;
    let gone = status["daemon"]["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "gone")
        .cloned()
        .unwrap();
    assert_eq!(gone["dead_letters"], 2, "{gone}");
    let text = status.to_string();
    assert!(
        !text.contains("url-secret-7") && !text.contains("daemon-key"),
        "{text}"
    );
    let log = std::fs::read_to_string(f.state.path().join("daemon.log")).unwrap_or_default();
    assert!(
        !log.contains("url-secret-7") && !log.contains("daemon-key"),
        "secrets never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_names_the_pull_request_behind_the_revision() {
    const TOKEN: &str = "pr-link-token";
    let stub = crate::github_stub::GitHubStub::start(TOKEN).await;
    let mut f = Fixture::new();
    let head = f.push(&app("1.0.0", f.port, "{type: red-black}"));
    stub.state
        .lock()
        .unwrap()
        .pulls
        .push((head, 12, "Bump web to 1.0.0".into()));
    let forge = stub.url();
    f.start_with(
        "1h",
        &[
            ("KEELSON_FORGE_URL", &forge),
            ("KEELSON_FORGE_TOKEN", TOKEN),
            ("KEELSON_FORGE_REPO", "acme/deploy"),
        ],
    );
    wait_ready(&f).await;
    let mut page = String::new();
    for _ in 0..100 {
        page = http(&f.url("/clusters/dev/local/web"), "GET", &[], "")
            .await
            .1;
        if page.contains("brought by") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        page.contains(
            "brought by <a href=\"https://github.com/acme/deploy/pull/12\">#12 Bump web to 1.0.0</a>"
        ),
        "{page}"
    );
}
