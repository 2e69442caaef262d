//! `keelson apply` end to end through the CLI, on the local target with real processes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::local_target::{Load, free_port};

const ENV: &str = "apiVersion: keelson/v1
kind: Environment
metadata: {name: dev}
spec:
  targets: [{name: local, provider: local}]
";

/// A config repository in a temp dir, with its own state directory and traffic port.
pub struct Repo {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// Environment of every command (and so of the agent the first one starts).
    pub env: Vec<(String, String)>,
}

impl Repo {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("env.yaml"), ENV).unwrap();
        Self {
            dir,
            port: free_port(),
            // No metrics endpoint unless a test asks for one: tests run side by side.
            env: vec![("KEELSON_LOCAL_METRICS".into(), "off".into())],
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the one application with a version, strategy, size and extra demo-app args.
    pub fn app(&self, version: &str, strategy: &str, desired: u32, extra: &str) {
        let text = format!(
            "apiVersion: keelson/v1
kind: Application
metadata: {{name: web}}
spec:
  artifact: {{version: \"{version}\"}}
  workload: {{command: [keelson, demo-app, --port, \"{{port}}\"{extra}]}}
  health: {{http: {{path: /healthz, interval: 200ms, timeout: 500ms}}, timeout: 4s}}
  clusters:
    - {{environment: dev, target: local, capacity: {{desired: {desired}}}, strategy: {strategy}, traffic: {{port: {}}}}}
",
            self.port
        );
        std::fs::write(self.path().join("web.yaml"), text).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_keelson"));
        c.args(args)
            .arg("--repo")
            .arg(self.path())
            .env("KEELSON_COLOR", "never")
            .env("KEELSON_USER", "tester")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .kill_on_drop(true);
        c
    }

    /// Runs a keelson command; returns exit code and stdout+stderr.
    pub async fn run(&self, args: &[&str]) -> (i32, String) {
        let out = self.command(args).output().await.unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    pub async fn apply(&self) -> (i32, String) {
        self.run(&["apply", "--auto-approve"]).await
    }

    pub async fn assert_no_changes(&self) {
        let (code, out) = self.run(&["plan", "--detailed-exitcode"]).await;
        assert_eq!(code, 0, "plan after apply shows no changes:\n{out}");
    }

    pub fn state(&self) -> PathBuf {
        self.path().join(".keelson")
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
            .arg("down")
            .arg("--repo")
            .arg(self.path())
            .output();
        crate::local_target::stop_all(&self.state());
    }
}

fn assert_clean(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_strategy_rolls_out_under_load_without_a_failed_request() {
    let strategies = [
        "{type: red-black, keepDisabled: 1}",
        "{type: rolling-red-black, steps: [50]}",
        "{type: highlander}",
        "{type: rolling-update, maxUnavailable: 1}",
        "{type: canary, steps: [{weight: 20, pause: 500ms}, {weight: 60, pause: 500ms}]}",
        "{type: none}",
    ];
    for s in strategies {
        let repo = Repo::new();
        repo.app("1.0.0", s, 2, "");
        let (code, out) = repo.apply().await;
        assert_eq!(code, 0, "{s}: first apply\n{out}");
        let load = Load::start(repo.port, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        repo.app("2.0.0", s, 2, "");
        let (code, out) = repo.apply().await;
        assert_eq!(code, 0, "{s}: rollout\n{out}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = load.take();
        let (_, failures) = load.finish().await;
        assert_clean(&failures);
        assert!(seen.values().sum::<u64>() > 50, "{s}: load ran: {seen:?}");
        repo.assert_no_changes().await;
        let body = reqwest_get(repo.port).await;
        assert!(body.contains("\"version\":\"2.0.0\""), "{s}: {body}");
    }
}

async fn reqwest_get(port: u16) -> String {
    let client = keelson::http_client::client();
    let req = hyper::Request::get(format!("http://127.0.0.1:{port}/"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_never_becomes_healthy_is_rolled_back() {
    let repo = Repo::new();
    repo.app("1.0.0", "{type: red-black}", 2, "");
    assert_eq!(repo.apply().await.0, 0);
    let load = Load::start(repo.port, 200);
    repo.app("2.0.0", "{type: red-black}", 2, ", --fail-health");
    let (code, out) = repo.apply().await;
    let (counts, failures) = load.finish().await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("0 of 2 instances healthy after 4s"), "{out}");
    assert!(out.contains("rollback: destroy web-v001"), "{out}");
    assert_clean(&failures);
    assert!(
        counts.keys().all(|g| g == "web-v000"),
        "the old version served throughout: {counts:?}"
    );
    let (_, history) = repo.run(&["history"]).await;
    assert!(
        history.contains("failed  step: wait until 2 of web-v001 healthy"),
        "{history}"
    );
    assert!(
        history.contains("ok  rollback: destroy web-v001"),
        "{history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_applies_on_one_cluster_never_both_act() {
    let repo = Repo::new();
    repo.app(
        "1.0.0",
        "{type: canary, steps: [{weight: 50, pause: 2s}]}",
        1,
        "",
    );
    assert_eq!(repo.apply().await.0, 0);
    repo.app(
        "2.0.0",
        "{type: canary, steps: [{weight: 50, pause: 2s}]}",
        1,
        "",
    );
    let first = repo.command(&["apply", "--auto-approve"]).output();
    let second = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        repo.run(&["apply", "--auto-approve"]).await
    };
    let (a, (code_b, out_b)) = tokio::join!(first, second);
    let a = a.unwrap();
    assert_eq!(
        a.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&a.stderr)
    );
    assert_eq!(
        code_b, 1,
        "the second refuses while the first holds the lock:\n{out_b}"
    );
    assert!(
        out_b.contains("refused: locked by") && out_b.contains("keelson apply"),
        "{out_b}"
    );
    repo.assert_no_changes().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_stops_a_canary_at_the_next_step_and_resume_carries_on() {
    let repo = Repo::new();
    let canary = "{type: canary, steps: [{weight: 25, pause: 2s}, {weight: 50, pause: 2s}]}";
    repo.app("1.0.0", canary, 1, "");
    assert_eq!(repo.apply().await.0, 0);
    repo.app("2.0.0", canary, 1, "");
    let load = Load::start(repo.port, 100);
    let apply = repo.command(&["apply", "--auto-approve"]).output();
    let suspend = async {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        repo.run(&["suspend", "--cluster", "web", "--reason", "incident 7"])
            .await
    };
    let (out, (code, sout)) = tokio::join!(apply, suspend);
    assert_eq!(code, 0, "{sout}");
    let out = out.unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("held: suspended (cluster web) by tester: incident 7 during step"),
        "{text}"
    );
    let (_, status) = repo.run(&["status"]).await;
    assert!(
        status.contains("web-v001") && status.contains("enabled 25%"),
        "stopped part-way, still serving:\n{status}"
    );
    let (code, plan) = repo.run(&["plan"]).await;
    assert!(
        code == 0 && plan.contains("blocked: suspended (cluster web)"),
        "{plan}"
    );
    assert_eq!(repo.run(&["resume", "--cluster", "web"]).await.0, 0);
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("create web-v002"),
        "resumes, does not start over:\n{out}"
    );
    let (_, failures) = load.finish().await;
    assert_clean(&failures);
    repo.assert_no_changes().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_plan_file_is_refused() {
    let repo = Repo::new();
    repo.app("1.0.0", "{type: red-black}", 1, "");
    let plan = repo.path().join("plan.json");
    let (code, out) = repo.run(&["plan", "--out", plan.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}");
    repo.app("1.0.1", "{type: red-black}", 1, "");
    let (code, out) = repo
        .run(&["apply", "--auto-approve", "--plan", plan.to_str().unwrap()])
        .await;
    assert_eq!(code, 1);
    assert!(out.contains("it was made for revision"), "{out}");
    // A plan written by an older keelson (format 1) is refused with what to do.
    let old = std::fs::read_to_string(&plan).unwrap().replacen(
        "\"formatVersion\": 2",
        "\"formatVersion\": 1",
        1,
    );
    std::fs::write(&plan, old).unwrap();
    let (code, out) = repo
        .run(&["apply", "--auto-approve", "--plan", plan.to_str().unwrap()])
        .await;
    assert_eq!(code, 1);
    assert!(
        out.contains("it is in plan format 1, this keelson reads and writes format 2")
            && out.contains("hint: run `keelson plan --out"),
        "{out}"
    );
    // A fresh plan file applies exactly, and only as written: a hand-edited one is refused.
    let (code, _) = repo.run(&["plan", "--out", plan.to_str().unwrap()]).await;
    assert_eq!(code, 0);
    let honest = std::fs::read_to_string(&plan).unwrap();
    std::fs::write(&plan, honest.replacen("\"count\": 1", "\"count\": 0", 1)).unwrap();
    let (code, out) = repo
        .run(&["apply", "--auto-approve", "--plan", plan.to_str().unwrap()])
        .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("dev/local/web step 2: the file says `wait until 0 of web-v000 healthy")
            && out.contains("planning now gives `wait until 1 of web-v000 healthy"),
        "{out}"
    );
    std::fs::write(&plan, honest).unwrap();
    let (code, out) = repo
        .run(&["apply", "--auto-approve", "--plan", plan.to_str().unwrap()])
        .await;
    assert_eq!(code, 0, "{out}");
    // The live state moved on since: the same file is stale again.
    let (code, out) = repo
        .run(&["apply", "--auto-approve", "--plan", plan.to_str().unwrap()])
        .await;
    assert_eq!(code, 1);
    assert!(
        out.contains("the live state changed since it was made"),
        "{out}"
    );
}

/// Kill -9 the apply process at many points of a rollout; each time a new apply converges,
/// and clients never see a failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_killed_at_any_point_converges_when_run_again() {
    for (strategy, points) in [
        ("{type: red-black, keepDisabled: 1}", 10u64),
        (
            "{type: canary, steps: [{weight: 30, pause: 400ms}, {weight: 60, pause: 400ms}]}",
            10,
        ),
    ] {
        let repo = Repo::new();
        repo.app("1.0.0", strategy, 2, "");
        assert_eq!(repo.apply().await.0, 0);
        let load = Load::start(repo.port, 200);
        for i in 0..points {
            repo.app(&format!("1.{}.0", i + 1), strategy, 2, "");
            let mut child = repo
                .command(&["apply", "--auto-approve"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            // Spread the kill over the rollout: from just after start to well into it.
            tokio::time::sleep(Duration::from_millis(60 + i * 90)).await;
            let _ = child.start_kill();
            let _ = child.wait().await;
            let (code, out) = repo.apply().await;
            assert_eq!(
                code,
                0,
                "{strategy}, killed after {}ms:\n{out}",
                60 + i * 90
            );
            repo.assert_no_changes().await;
        }
        let (counts, failures) = load.finish().await;
        assert_clean(&failures);
        assert!(counts.values().sum::<u64>() > 200, "{counts:?}");
        // The history is consistent: every step recorded as ok, failed, refused or taken over.
        let (_, history) = repo.run(&["history", "--limit", "1000"]).await;
        assert!(
            !history.contains("  failed  "),
            "no step failed:\n{history}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_puts_the_previous_group_back_under_the_engine() {
    let repo = Repo::new();
    repo.app("1.0.0", "{type: red-black, keepDisabled: 1}", 1, "");
    assert_eq!(repo.apply().await.0, 0);
    repo.app("2.0.0", "{type: red-black, keepDisabled: 1}", 1, "");
    assert_eq!(repo.apply().await.0, 0);
    let load = Load::start(repo.port, 100);
    let (code, out) = repo.run(&["rollback", "web"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("dev/local/web: converged"), "{out}");
    assert!(
        out.contains("the specs still want 2.0.0"),
        "says the next apply rolls forward: {out}"
    );
    let (_, failures) = load.finish().await;
    assert_clean(&failures);
    assert!(
        reqwest_get(repo.port)
            .await
            .contains("\"version\":\"1.0.0\"")
    );
    let (_, history) = repo.run(&["history", "--cluster", "web"]).await;
    assert!(
        history.contains("step: enable web-v000") && history.contains("keelson rollback"),
        "{history}"
    );
    // Nothing to roll back to is a clear error.
    let (code, out) = repo.run(&["rollback", "web", "--to", "v007"]).await;
    assert_eq!(code, 1);
    assert!(out.contains("has no server group v007"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_and_reports_follow_promotion_order() {
    let repo = Repo::new();
    let envs = "apiVersion: keelson/v1
kind: Environment
metadata: {name: staging}
spec:
  dependsOn: [dev]
  targets: [{name: local, provider: local}]
---
apiVersion: keelson/v1
kind: Environment
metadata: {name: prod}
spec:
  dependsOn: [staging]
  targets: [{name: local, provider: local}]
";
    std::fs::write(repo.path().join("more-envs.yaml"), envs).unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let clusters: String = ["dev", "staging", "prod"]
        .iter()
        .zip(ports)
        .map(|(e, p)| {
            format!("    - {{environment: {e}, target: local, capacity: {{desired: 1}}, traffic: {{port: {p}}}}}\n")
        })
        .collect();
    let app = format!(
        "apiVersion: keelson/v1
kind: Application
metadata: {{name: web}}
spec:
  artifact: {{version: \"1.0.0\"}}
  workload: {{command: [keelson, demo-app, --port, \"{{port}}\"]}}
  health: {{http: {{path: /healthz, interval: 200ms, timeout: 500ms}}, timeout: 4s}}
  clusters:
{clusters}"
    );
    std::fs::write(repo.path().join("web.yaml"), app).unwrap();
    let at = |out: &str, what: &str| out.find(what).unwrap_or_else(|| panic!("{what}: {out}"));
    let (code, out) = repo.run(&["plan"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        at(&out, "dev/local/web") < at(&out, "staging/local/web"),
        "{out}"
    );
    assert!(
        at(&out, "staging/local/web") < at(&out, "prod/local/web"),
        "{out}"
    );
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    let dev = at(&out, "dev/local/web: converged");
    let staging = at(&out, "staging/local/web: converged");
    let prod = at(&out, "prod/local/web: converged");
    assert!(dev < staging && staging < prod, "{out}");
}

/// Kill -9 of `apply` while it rolls back: the rollback was journaled, so the next plan says
/// it will finish it, and the next apply does, before anything else; nothing is left half-undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_killed_half_way_is_finished_by_the_next_apply() {
    use tokio::io::AsyncBufReadExt;
    let repo = Repo::new();
    let strategy = "{type: rolling-update, maxUnavailable: 1}";
    // 1.0.0 takes a while to become healthy, so the rollback waits on it and can be killed.
    repo.app("1.0.0", strategy, 2, ", --healthy-after, 2s");
    assert_eq!(repo.apply().await.0, 0);
    let load = Load::start(repo.port, 100);
    repo.app("2.0.0", strategy, 2, ", --fail-health");
    let mut child = repo
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let replacing = line.contains("rollback: replace");
        seen.push(line);
        if replacing {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("rollback: revert web-v000 in place to 1.0.0")),
        "{seen:#?}"
    );
    // The replacement is started; its instance needs 2s to be healthy: kill meanwhile.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let _ = child.start_kill();
    let _ = child.wait().await;

    let (code, plan) = repo.run(&["plan"]).await;
    assert_eq!(code, 0, "{plan}");
    assert!(
        plan.contains("finish rollback") && plan.contains("finishing the rollback of revision"),
        "the interrupted rollback is what comes next:\n{plan}"
    );
    let (code, out) = repo.apply().await;
    assert_eq!(
        code, 1,
        "a finished rollback still reports the failure:\n{out}"
    );
    assert!(out.contains("earlier: web-v000"), "{out}");
    let (_, status) = repo.run(&["status"]).await;
    assert!(
        status.contains("web-v000") && status.contains("1.0.0") && status.contains("2/2 healthy"),
        "{status}"
    );
    // Back where it was: the rollout is planned again, not drift and not another rollback.
    let (code, plan) = repo.run(&["plan", "--detailed-exitcode"]).await;
    assert_eq!(code, 2, "{plan}");
    assert!(
        plan.contains("rolling update of web-v000 in place"),
        "{plan}"
    );
    let (_, history) = repo.run(&["history", "--limit", "100"]).await;
    assert!(
        history.contains("ok  rollback: revert web-v000"),
        "{history}"
    );
    let (_, failures) = load.finish().await;
    assert_clean(&failures);
}
