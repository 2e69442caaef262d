//! Replicas benchmark (a bench binary): one, then three `keelson up` replicas on one real
//! PostgreSQL, following 3,000 local-target clusters with nothing to actuate (a global suspend
//! holds every one, so each reconcile observes, reads the store and plans, and acts on
//! nothing). Reports the CPU each replica used and the store transactions per reconcile.
//!
//! `cargo bench --bench replicas`. Failover after `kill -9` is measured by the integration
//! test `replicas::three_replicas_share_sixty_clusters_and_survive_a_kill_mid_canary`.

#[allow(dead_code)]
#[path = "../tests/it/pg.rs"]
mod pg;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLUSTERS: usize = 3000;
const WINDOW: Duration = Duration::from_secs(60);
const DRIFT: &str = "5s";

const ENV: &str = "apiVersion: keelson/v1\nkind: Environment\nmetadata: {name: dev}\nspec:\n  targets: [{name: local, provider: local}]\n";

fn app(i: usize) -> String {
    format!(
        "apiVersion: keelson/v1\nkind: Application\nmetadata: {{name: a{i}}}\nspec:\n  artifact: {{version: \"1.0.0\"}}\n  workload: {{command: [keelson, demo-app, --port, \"{{port}}\"]}}\n  clusters:\n    - {{environment: dev, target: local, capacity: {{desired: 1}}, strategy: {{type: red-black}}, traffic: {{port: {}}}}}\n",
        20000 + i
    )
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let ok = Command::new("git")
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "git {args:?}");
}

/// User and system CPU seconds a process has used so far (from /proc).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15; `after` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

fn xacts(pg: &pg::Postgres) -> u64 {
    pg.query(
        "bench",
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'bench'",
    )
    .trim()
    .parse()
    .unwrap_or(0)
}

fn reconciles(api: u16) -> u64 {
    let out = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{api}/metrics")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .find(|l| l.starts_with("keelson_reconcile_duration_seconds_count"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

struct Replica {
    child: Child,
    api: u16,
}

fn start(url: &str, repo: &std::path::Path, state: &std::path::Path, name: &str) -> Replica {
    let api = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_keelson"))
        .arg("up")
        .arg("--repo")
        .arg(repo)
        .args(["--interval", "2s", "--drift-interval", DRIFT])
        .args(["--listen", &format!("127.0.0.1:{api}")])
        .arg("--state-dir")
        .arg(state)
        .args(["--store", url, "--replica", name, "--log-format", "json"])
        .env("KEELSON_STORE_PASSWORD", pg::PASSWORD)
        .env("KEELSON_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("keelson up starts");
    Replica { child, api }
}

fn run(replicas: usize) {
    let pg = pg::Postgres::start();
    let url = pg.database("bench");
    let repo = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(repo.path().join("env.yaml"), ENV).unwrap();
    for i in 0..CLUSTERS {
        std::fs::write(repo.path().join(format!("a{i}.yaml")), app(i)).unwrap();
    }
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "3,000 apps"]);
    let suspended = Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args([
            "suspend",
            "--reason",
            "benchmark: nothing to actuate",
            "--store",
            &url,
        ])
        .arg("--state-dir")
        .arg(state.path())
        .arg("--repo")
        .arg(repo.path())
        .env("KEELSON_STORE_PASSWORD", pg::PASSWORD)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(suspended, "keelson suspend");
    let mut all: Vec<Replica> = (0..replicas)
        .map(|i| start(&url, repo.path(), state.path(), &format!("r{i}")))
        .collect();
    // Past start-up: the first fetch, parse and plan.
    std::thread::sleep(Duration::from_secs(30));
    let cpu0: Vec<f64> = all.iter().map(|r| cpu_seconds(r.child.id())).collect();
    let rec0: Vec<u64> = all.iter().map(|r| reconciles(r.api)).collect();
    let x0 = xacts(&pg);
    let t0 = Instant::now();
    std::thread::sleep(WINDOW);
    let secs = t0.elapsed().as_secs_f64();
    let x1 = xacts(&pg);
    let cpu: Vec<f64> = all
        .iter()
        .zip(&cpu0)
        .map(|(r, c)| (cpu_seconds(r.child.id()) - c) / secs * 100.0)
        .collect();
    let recs: u64 = all
        .iter()
        .zip(&rec0)
        .map(|(r, c)| reconciles(r.api).saturating_sub(*c))
        .sum();
    let per = if recs == 0 {
        0.0
    } else {
        (x1 - x0) as f64 / recs as f64
    };
    println!(
        "{replicas} replica(s), {CLUSTERS} clusters, nothing to actuate, drift every {DRIFT}: CPU per replica {} % of a core; {recs} reconciles in {secs:.0} s, {} store transactions, {per:.0} per reconcile",
        cpu.iter()
            .map(|c| format!("{c:.1}"))
            .collect::<Vec<_>>()
            .join(" / "),
        x1 - x0
    );
    for r in &mut all {
        let _ = r.child.kill();
        let _ = r.child.wait();
    }
    let _ = Command::new(env!("CARGO_BIN_EXE_keelson"))
        .arg("down")
        .arg("--state-dir")
        .arg(state.path())
        .output();
}

fn main() {
    // `cargo test --all-targets` runs bench binaries too: only `cargo bench` measures.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    run(1);
    run(3);
}
