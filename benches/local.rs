//! Local target benchmark (a bench binary): proxy overhead against calling an instance
//! directly, time from "create a server group of 3" to "all healthy and in traffic", Keelson's
//! own overhead in a red/black of 3 instances, the CPU of one builtin canary measurement and
//! how long after its window closes an analysis reaches its verdict, and an apply of 50
//! clusters at parallelism 4.
//!
//! `cargo bench --bench local`. Real processes on 127.0.0.1; everything is torn down at the end.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use keelson::engine::{Engine, LogProgress, Progress};
use keelson::model::{ClusterId, DesiredState};
use keelson::observe::Providers;
use keelson::plan::Selection;
use keelson::provider::local::LocalProvider;
use keelson::spec::ProviderKind;
use keelson::store::{Owner, SqliteStore};

const ENV: &str = "apiVersion: keelson/v1\nkind: Environment\nmetadata: {name: dev}\nspec:\n  targets: [{name: local, provider: local}]\n";

fn app(name: &str, version: &str, desired: u32, port: u16, strategy: &str) -> String {
    format!(
        "apiVersion: keelson/v1\nkind: Application\nmetadata: {{name: {name}}}\nspec:\n  artifact: {{version: \"{version}\"}}\n  workload: {{command: [keelson, demo-app, --port, \"{{port}}\"]}}\n  health: {{http: {{path: /healthz, interval: 1s, timeout: 500ms}}, timeout: 20s}}\n  clusters:\n    - {{environment: dev, target: local, capacity: {{desired: {desired}}}, strategy: {strategy}, traffic: {{port: {port}}}}}\n"
    )
}

fn desired(apps: &[String]) -> DesiredState {
    let mut files = vec![keelson::source::SourceFile {
        path: "env.yaml".into(),
        bytes: ENV.as_bytes().to_vec(),
    }];
    for (i, a) in apps.iter().enumerate() {
        files.push(keelson::source::SourceFile {
            path: format!("a{i}.yaml").into(),
            bytes: a.as_bytes().to_vec(),
        });
    }
    let checked = keelson::pipeline::check(keelson::source::SourceSet {
        files,
        diagnostics: vec![],
    });
    match checked.desired {
        Some(d) => d,
        None => panic!("invalid bench specs: {:?}", checked.diagnostics.first()),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// `c` keep-alive clients hammering `port` for `secs`; returns (requests/s, p50, p99).
async fn load(port: u16, c: usize, secs: u64) -> (f64, Duration, Duration) {
    let client = keelson::http_client::client();
    let end = Instant::now() + Duration::from_secs(secs);
    let lat = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (client, lat) = (client.clone(), lat.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while Instant::now() < end {
                let req = hyper::Request::get(format!("http://127.0.0.1:{port}/"))
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                let t = Instant::now();
                if let Ok(resp) = client.request(req).await {
                    let _ = resp.into_body().collect().await;
                    mine.push(t.elapsed());
                }
            }
            lat.lock().map(|mut l| l.extend(mine)).ok();
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut v = lat.lock().map(|l| l.clone()).unwrap_or_default();
    v.sort();
    let n = v.len().max(1);
    (v.len() as f64 / secs as f64, v[n / 2], v[n * 99 / 100])
}

struct Timeline(Mutex<Vec<(Instant, String)>>);

impl Progress for Timeline {
    fn step(&self, _c: &ClusterId, _i: usize, _t: usize, d: &str) {
        self.0
            .lock()
            .map(|mut v| v.push((Instant::now(), d.to_string())))
            .ok();
    }
    fn done(&self, _c: &ClusterId, _o: &str, _ok: bool) {
        self.0
            .lock()
            .map(|mut v| v.push((Instant::now(), "done".into())))
            .ok();
    }
    fn note(&self, _c: &ClusterId, _m: &str) {}
}

fn rss_mib(pid: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map_or(0.0, |k| k / 1024.0)
}

/// Stops everything the bench started, even when it panics.
struct Teardown(PathBuf, PathBuf);

impl Drop for Teardown {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.0)
            .arg("down")
            .arg("--state-dir")
            .arg(&self.1)
            .output();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_keelson"));
    let _teardown = Teardown(exe.clone(), dir.path().to_path_buf());
    let provider = Arc::new(LocalProvider::new(dir.path(), exe.clone()));
    let providers = Providers::new().with(ProviderKind::Local, provider.clone());

    // 1. Create 3 instances -> all healthy and in traffic; and the app's own start time.
    let port = free_port();
    let d = desired(&[app("bench", "1.0.0", 3, port, "{type: red-black}")]);
    let c = d.clusters.values().next().cloned().expect("one cluster");
    let direct_port = free_port();
    let t = Instant::now();
    let mut child = tokio::process::Command::new(&exe)
        .args(["demo-app", "--port", &direct_port.to_string()])
        .kill_on_drop(true)
        .spawn()
        .expect("demo-app starts");
    let client = keelson::http_client::client();
    while !keelson::http_client::probe(
        &client,
        &format!("http://127.0.0.1:{direct_port}/healthz"),
        Duration::from_millis(200),
    )
    .await
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let app_start = t.elapsed();
    let steps = keelson::plan::plan(
        &d,
        &keelson::model::ObservedState::default(),
        &keelson::plan::Policy::at(keelson::clock::now()),
        "b",
        &Selection::default(),
    );
    provider
        .start_agent()
        .await
        .expect("the local agent starts");
    // Through the engine, as apply runs it: lock, guard, journal, health gate polled at the
    // local provider's interval.
    let store = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let first = Engine {
        store: store.clone(),
        providers: providers.clone(),
        owner: Owner::this_process("bench", keelson::clock::now()),
        parallelism: 1,
        stop: Default::default(),
        slots: Default::default(),
        events: Default::default(),
    };
    let target = keelson::provider::TargetRef {
        environment: c.id.environment.clone(),
        target: c.target.clone(),
    };
    let t = Instant::now();
    let r = first
        .run_cluster(&steps.clusters[0], &target, "b", &LogProgress)
        .await;
    assert_eq!(r.outcome, keelson::engine::ClusterOutcome::Converged);
    let create = t.elapsed();
    println!(
        "create server group of 3 -> all healthy and in traffic: {create:?} (demo-app alone starts in {app_start:?})"
    );

    // 2. Proxy overhead: one instance directly vs the proxy in front of three.
    let (rps_d, p50_d, p99_d) = load(direct_port, 8, 3).await;
    let (rps_p, p50_p, p99_p) = load(port, 8, 3).await;
    println!("direct: {rps_d:.0} req/s, p50 {p50_d:?}, p99 {p99_d:?}");
    println!("proxy:  {rps_p:.0} req/s, p50 {p50_p:?}, p99 {p99_p:?}");
    println!(
        "proxy adds p50 {:?}; throughput {:.0}% of direct",
        p50_p.saturating_sub(p50_d),
        rps_p * 100.0 / rps_d
    );
    let _ = child.kill().await;

    // 3. Red/black of 3 instances through the engine: total minus health waits.
    let engine = Arc::new(Engine {
        store,
        providers: providers.clone(),
        owner: Owner::this_process("bench", keelson::clock::now()),
        parallelism: 4,
        stop: Default::default(),
        slots: Default::default(),
        events: Default::default(),
    });
    let d2 = desired(&[app("bench", "2.0.0", 3, port, "{type: red-black}")]);
    let timeline = Arc::new(Timeline(Mutex::new(Vec::new())));
    let t = Instant::now();
    let report = engine
        .apply(&d2, "b2", &Selection::default(), None, timeline.clone())
        .await;
    let total = t.elapsed();
    assert!(!report.failed(), "{report:?}");
    let events = timeline.0.lock().map(|v| v.clone()).unwrap_or_default();
    let waits: Duration = events
        .windows(2)
        .filter(|w| w[0].1.starts_with("wait until"))
        .map(|w| w[1].0 - w[0].0)
        .sum();
    println!(
        "red/black of 3 instances: total {total:?}, health waits {waits:?}, Keelson's own overhead {:?}",
        total.saturating_sub(waits)
    );

    // 4. Canary analysis: the CPU one builtin measurement costs (both sides of the agent's
    // socket), and the time from a window's close to its verdict, under load.
    analysis(&engine, provider.clone(), dir.path()).await;

    // 5. 50 clusters at once, parallelism 4.
    // A port the OS just handed out can come back: take 50 distinct ones.
    let mut ports = std::collections::BTreeSet::new();
    while ports.len() < 50 {
        ports.insert(free_port());
    }
    let apps: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| app(&format!("fleet-{i}"), "1.0.0", 1, port, "{type: red-black}"))
        .collect();
    let d50 = desired(&apps);
    let t = Instant::now();
    let report = engine
        .apply(
            &d50,
            "b50",
            &Selection::default(),
            None,
            Arc::new(Timeline(Mutex::new(Vec::new()))),
        )
        .await;
    assert!(!report.failed(), "{report:?}");
    println!(
        "apply of 50 new clusters (1 instance each), parallelism 4: {:?}",
        t.elapsed()
    );
    let agent_pid = std::fs::read_to_string(dir.path().join("local/agent.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["pid"].as_i64())
        .unwrap_or(0);
    println!(
        "peak RSS: this process (the engine) {:.1} MiB, the local agent {:.1} MiB",
        rss_mib("self"),
        rss_mib(&agent_pid.to_string())
    );
    let stopped = provider.down(None).await.map(|s| s.len()).unwrap_or(0);
    println!("stopped {stopped} server groups");
}

/// CPU seconds this process has used.
fn own_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// CPU seconds process `pid` has used (`/proc/<pid>/stat`, clock ticks of 10 ms).
fn cpu_of(pid: i64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // utime and stime are fields 14 and 15; after the command's ')' they are the 12th and 13th.
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

async fn analysis(engine: &Arc<Engine>, provider: Arc<LocalProvider>, state: &std::path::Path) {
    use keelson::analysis::MetricsSource;
    use keelson::provider::Provider;
    let port = free_port();
    let canary = "{type: canary, steps: [{weight: 50, pause: 4s}], analysis: {interval: 1s, metrics: [{name: errors, query: error-rate, max: 0.05, maxIncrease: 0.01}, {name: latency, query: p95-latency, maxRatio: 1.5}]}}";
    let v1 = desired(&[app("judged", "1.0.0", 2, port, canary)]);
    let r = engine
        .apply(
            &v1,
            "a1",
            &Selection::default(),
            None,
            Arc::new(Timeline(Mutex::new(Vec::new()))),
        )
        .await;
    assert!(!r.failed(), "{r:?}");
    let v2 = desired(&[app("judged", "2.0.0", 2, port, canary)]);
    // The verdict: from the analysis step to the next one, less the window.
    let timeline = Arc::new(Timeline(Mutex::new(Vec::new())));
    let traffic = tokio::spawn(load(port, 4, 9));
    let t = Instant::now();
    let r = engine
        .apply(&v2, "a2", &Selection::default(), None, timeline.clone())
        .await;
    assert!(!r.failed(), "{r:?}");
    let total = t.elapsed();
    let _ = traffic.await;
    let events = timeline.0.lock().map(|v| v.clone()).unwrap_or_default();
    let window = events
        .windows(2)
        .find(|w| w[0].1.starts_with("analyse"))
        .map(|w| w[1].0 - w[0].0)
        .unwrap_or_default();
    println!(
        "canary analysis, a 4s window of 4 measurements under load: the next step starts {:?} after the window opened, {:?} after it closed (rollout {total:?})",
        window,
        window.saturating_sub(Duration::from_secs(4))
    );

    // One builtin measurement, end to end: the counters of both groups read over the agent's
    // socket twice (start and end of the interval), differenced, and every metric judged.
    let c = v2.clusters.values().next().cloned().expect("one cluster");
    let live = provider
        .observe(&keelson::provider::TargetRef {
            environment: c.id.environment.clone(),
            target: c.target.clone(),
        })
        .await
        .expect("observe");
    let groups = &live[0].server_groups;
    let group = |i: usize| keelson::analysis::Group {
        name: groups[i].name.clone(),
        sequence: groups[i].sequence,
        version: groups[i].version.clone(),
    };
    let subject = keelson::analysis::Subject {
        cluster: c.id.clone(),
        app: c.app.clone(),
        canary: group(groups.len() - 1),
        baseline: group(0),
    };
    let source = keelson::analysis::builtin::Builtin {
        provider: provider.clone() as Arc<dyn Provider>,
        target: keelson::provider::TargetRef {
            environment: c.id.environment.clone(),
            target: c.target.clone(),
        },
    };
    let analysis = c.strategy.analysis().cloned().expect("an analysis");
    let agent_pid = std::fs::read_to_string(state.join("local/agent.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["pid"].as_i64())
        .unwrap_or(0);
    let n = 1000;
    let (cpu0, agent0, t) = (own_cpu(), cpu_of(agent_pid), Instant::now());
    for _ in 0..n {
        let mark = source.begin(&subject).await;
        std::hint::black_box(
            keelson::analysis::measure(
                &source,
                &subject,
                &analysis,
                mark,
                Duration::from_secs(1),
                50,
                keelson::clock::now(),
            )
            .await,
        );
    }
    let wall = t.elapsed() / n;
    let mine = (own_cpu() - cpu0) / f64::from(n) * 1e6;
    let agent = (cpu_of(agent_pid) - agent0) / f64::from(n) * 1e6;
    println!(
        "builtin measurement of one cluster (2 metrics): {:.0} us of CPU here + {:.0} us in the agent = {:.0} us, {wall:?} wall",
        mine,
        agent,
        mine + agent
    );
}
