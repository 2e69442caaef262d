//! The local target with real processes, real ports and real HTTP traffic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keelson::actuation::{Gate, Op, SpecRef, Step, TrafficChange, Verdict};
use keelson::engine::resolve;
use keelson::model::{DesiredCluster, DesiredState, ObservedCluster, Sequence, Stamp};
use keelson::provider::local::LocalProvider;
use keelson::provider::{Provider, ProviderError, TargetRef};

use crate::plan_scenarios::desired;

/// A free port for a traffic proxy, below the kernel's ephemeral range (32768 and up), so an
/// instance port chosen by the kernel meanwhile can never take it. Never the same twice in
/// this test process: tests run side by side, and a port handed to one but not yet bound would
/// look free to another.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<std::collections::BTreeSet<u16>> =
        Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = fastrand::u16(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && GIVEN.lock().unwrap().insert(port)
        {
            return port;
        }
    }
}

/// A state directory whose local target is torn down when dropped, even if the test fails.
pub struct Local {
    pub dir: tempfile::TempDir,
    pub provider: LocalProvider,
}

impl Local {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let provider = LocalProvider::new(dir.path(), PathBuf::from(env!("CARGO_BIN_EXE_keelson")));
        Self { dir, provider }
    }

    pub fn state(&self) -> &Path {
        self.dir.path()
    }

    pub fn agent_pid(&self) -> Option<i32> {
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.dir.path().join("local/agent.json")).ok()?)
                .ok()?;
        info["pid"].as_i64().map(|p| p as i32)
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        stop_all(self.dir.path());
    }
}

/// Stops everything a test ran on the local target of state directory `state`: `keelson down`,
/// then, whatever that managed (a daemon killed mid-step may have had the agent start more),
/// the agent's remaining children and the agent itself.
pub fn stop_all(state: &Path) {
    let _ = std::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
        .arg("down")
        .arg("--state-dir")
        .arg(state)
        .output();
    let Some(pid) = std::fs::read(state.join("local/agent.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["pid"].as_i64())
        .and_then(|p| i32::try_from(p).ok())
    else {
        return;
    };
    let children: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1.split_whitespace().nth(1)?.to_string();
                    after.parse::<i32>().ok()
                })
                == Some(pid)
        })
        .collect();
    for p in children.into_iter().chain([pid]) {
        // SAFETY: only signals processes this test's agent started, and the agent.
        unsafe {
            libc::kill(p, libc::SIGKILL);
        }
    }
}

/// One-cluster specs on the local target with a demo-app workload.
pub fn local_app(
    name: &str,
    version: &str,
    desired_n: u32,
    port: u16,
    extra_args: &str,
) -> DesiredState {
    let text = format!(
        "apiVersion: keelson/v1
kind: Application
metadata: {{name: {name}}}
spec:
  artifact: {{version: \"{version}\"}}
  workload: {{command: [keelson, demo-app, --port, \"{{port}}\"{extra_args}]}}
  health: {{http: {{path: /healthz, interval: 200ms, timeout: 500ms}}, timeout: 20s}}
  clusters:
    - {{environment: dev, target: local, capacity: {{desired: {desired_n}}}, traffic: {{port: {port}}}}}
"
    );
    desired(&[text])
}

pub fn only(d: &DesiredState) -> DesiredCluster {
    d.clusters.values().next().map(|c| (**c).clone()).unwrap()
}

pub async fn observe_one(p: &LocalProvider, c: &DesiredCluster) -> Option<ObservedCluster> {
    let t = TargetRef {
        environment: c.id.environment.clone(),
        target: c.target.clone(),
    };
    p.observe(&t)
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.id == c.id)
}

/// Steady client load against a port; counts answers per server group and failures.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub counts: Arc<Mutex<BTreeMap<String, u64>>>,
    pub failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// ~`rate` requests per second from 4 concurrent clients.
    pub fn start(port: u16, rate: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (s, c, f) = (stop.clone(), counts.clone(), failures.clone());
        let task = tokio::spawn(async move {
            let client = keelson::http_client::client();
            let mut tick =
                tokio::time::interval(Duration::from_micros(1_000_000 / u64::from(rate)));
            let mut running = tokio::task::JoinSet::new();
            while !s.load(Ordering::Acquire) {
                tick.tick().await;
                let (client, c, f) = (client.clone(), c.clone(), f.clone());
                running.spawn(async move {
                    let req = hyper::Request::get(format!("http://127.0.0.1:{port}/"))
                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                        .unwrap();
                    match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
                        Ok(Ok(resp)) if resp.status().is_success() => {
                            let g = resp
                                .headers()
                                .get("x-keelson-server-group")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("?")
                                .to_string();
                            *c.lock().unwrap().entry(g).or_insert(0) += 1;
                        }
                        Ok(Ok(resp)) => f.lock().unwrap().push(format!("status {}", resp.status())),
                        Ok(Err(e)) => f.lock().unwrap().push(format!("error {e}")),
                        Err(_) => f.lock().unwrap().push("timeout".into()),
                    }
                });
                while running.try_join_next().is_some() {}
            }
            while running.join_next().await.is_some() {}
        });
        Self {
            stop,
            counts,
            failures,
            task,
        }
    }

    pub fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.counts.lock().unwrap())
    }

    pub async fn finish(self) -> (BTreeMap<String, u64>, Vec<String>) {
        self.stop.store(true, Ordering::Release);
        let _ = self.task.await;
        let c = self.counts.lock().unwrap().clone();
        let f = self.failures.lock().unwrap().clone();
        (c, f)
    }
}

/// Creates the first server group of `c` with `capacity` instances and puts it in traffic.
pub async fn run_steps(p: &LocalProvider, c: &DesiredCluster, capacity: u32) {
    run(p, c, &create_steps(c, 0, capacity, true)).await;
}

/// The target of `c`.
pub fn target_of(c: &DesiredCluster) -> TargetRef {
    target(c)
}

fn target(c: &DesiredCluster) -> TargetRef {
    TargetRef {
        environment: c.id.environment.clone(),
        target: c.target.clone(),
    }
}

/// Runs one step as the engine would, without its locks and guards: an operation through the
/// provider, a gate polled until it passes.
async fn step(p: &LocalProvider, c: &DesiredCluster, s: &Step) -> Result<(), ProviderError> {
    match s {
        Step::Op(op) => {
            let op = resolve(op, Some(&Arc::new(c.clone()))).map_err(ProviderError::invalid)?;
            p.apply(&target(c), &c.id, &op, &Stamp::new("test-store", 1))
                .await
        }
        Step::Gate(g) => {
            let start = std::time::Instant::now();
            loop {
                let live = observe_one(p, c).await;
                match g.judge(live.as_ref(), start.elapsed()) {
                    Verdict::Pass => return Ok(()),
                    Verdict::Fail(why) | Verdict::Hold(why) => {
                        return Err(ProviderError::invalid(why));
                    }
                    Verdict::Wait(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    }
}

async fn run(p: &LocalProvider, c: &DesiredCluster, steps: &[Step]) {
    for s in steps {
        step(p, c, s)
            .await
            .unwrap_or_else(|e| panic!("step `{s}` failed: {}", e.chain()));
    }
}

fn group(c: &DesiredCluster, n: u32) -> (keelson::model::ServerGroupName, Sequence) {
    let seq = Sequence::new(n).unwrap();
    (keelson::model::ServerGroupName::new(c.name(), seq), seq)
}

/// Traffic weights set at once, from whatever they were.
fn weights(c: &DesiredCluster, to: &[(u32, u8)]) -> Step {
    Step::Op(Op::Traffic {
        changes: to
            .iter()
            .map(|(n, w)| {
                let (group, sequence) = group(c, *n);
                TrafficChange {
                    group,
                    sequence,
                    from: 0,
                    to: *w,
                    share: None,
                }
            })
            .collect(),
    })
}

fn create_steps(c: &DesiredCluster, n: u32, capacity: u32, enable: bool) -> Vec<Step> {
    let (group, sequence) = group(c, n);
    let mut v = vec![
        Step::Op(Op::Create {
            group: group.clone(),
            sequence,
            spec: SpecRef {
                version: c.version.clone(),
                spec_hash: c.spec_hash.clone(),
            },
            capacity,
            weight: 0,
        }),
        Step::Gate(Gate::Healthy {
            group: group.clone(),
            sequence,
            count: capacity,
            timeout: c.health.timeout,
        }),
    ];
    if enable {
        v.push(weights(c, &[(n, 100)]));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_and_traffic_changes_drop_nothing_under_load() {
    let local = Local::new();
    let port = free_port();
    let a = only(&local_app("shop", "1.0.0", 2, port, ""));
    let b = only(&local_app("shop", "2.0.0", 2, port, ""));
    run(&local.provider, &a, &create_steps(&a, 0, 2, true)).await;
    run(&local.provider, &b, &create_steps(&b, 1, 2, false)).await;
    let load = Load::start(port, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = load.take();
    assert!(
        before.keys().all(|g| g == "shop-v000"),
        "only the enabled group serves: {before:?}"
    );
    for w in [10u8, 50, 90] {
        run(&local.provider, &b, &[weights(&b, &[(1, w), (0, 100 - w)])]).await;
        load.take();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let counts = load.take();
        let total: u64 = counts.values().sum();
        let share_b = *counts.get("shop-v001").unwrap_or(&0) as f64 * 100.0 / total as f64;
        assert!(total > 150, "load ran: {counts:?}");
        assert!(
            (share_b - f64::from(w)).abs() <= 5.0,
            "weight {w}%: new group got {share_b:.1}% of {total}"
        );
    }
    let (ga, sa) = group(&a, 0);
    run(
        &local.provider,
        &b,
        &[
            weights(&b, &[(1, 100)]),
            weights(&b, &[(0, 0)]),
            Step::Op(Op::Destroy {
                group: ga,
                sequence: sa,
            }),
        ],
    )
    .await;
    load.take();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (after, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(after.keys().all(|g| g == "shop-v001"), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_under_an_older_epoch_is_refused_and_changes_nothing() {
    let local = Local::new();
    let a = only(&local_app("fence", "1.0.0", 1, free_port(), ""));
    run(&local.provider, &a, &create_steps(&a, 0, 1, true)).await;
    let (t, d) = (target(&a), Arc::new(a.clone()));
    let (group, sequence) = group(&a, 0);
    let resize = |from, to| {
        resolve(
            &Op::Resize {
                group: group.clone(),
                sequence,
                from,
                to,
            },
            Some(&d),
        )
        .unwrap()
    };
    let seen = || async {
        let live = local.provider.observe(&t).await.unwrap();
        let g = &live.iter().find(|c| c.id == a.id).unwrap().server_groups[0];
        (
            g.capacity,
            g.labels.get(keelson::model::labels::EPOCH).cloned(),
        )
    };
    assert_eq!(seen().await, (1, Some("1@test-store".into())));
    // A newer holder acts: its stamp is on the group.
    let newer = Stamp::new("test-store", 5);
    local
        .provider
        .apply(&t, &a.id, &resize(1, 2), &newer)
        .await
        .unwrap();
    assert_eq!(seen().await, (2, Some("5@test-store".into())));
    // The holder it replaced wakes up and tries: refused, and nothing moves.
    let err = local
        .provider
        .apply(&t, &a.id, &resize(2, 1), &Stamp::new("test-store", 4))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Superseded { newer: 5, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "refused: another holder has acted on the cluster (epoch 5 is written on it; this replica holds epoch 4)"
    );
    assert_eq!(seen().await, (2, Some("5@test-store".into())));
    // The same holder goes on.
    local
        .provider
        .apply(&t, &a.id, &resize(2, 1), &newer)
        .await
        .unwrap();
    assert_eq!(seen().await.0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_leaves_traffic_and_is_restarted() {
    let local = Local::new();
    let port = free_port();
    let c = only(&local_app("kill", "1.0.0", 2, port, ""));
    run(&local.provider, &c, &create_steps(&c, 0, 2, true)).await;
    let pids = instance_pids(local.state());
    assert_eq!(pids.len(), 2);
    let load = Load::start(port, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SAFETY: kills one instance this test started.
    unsafe {
        libc::kill(pids[0], libc::SIGKILL);
    }
    // Restarted: back to two healthy instances, with a new pid, and a note saying why.
    let mut restarted = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let live = observe_one(&local.provider, &c).await.unwrap();
        let g = &live.server_groups[0];
        if g.healthy() == 2 && !instance_pids(local.state()).contains(&pids[0]) {
            assert!(
                g.instances
                    .iter()
                    .any(|i| i.note.as_deref().is_some_and(|n| n.contains("restarted"))),
                "{g:?}"
            );
            restarted = true;
            break;
        }
    }
    assert!(restarted, "the killed instance was not restarted");
    let (_, failures) = load.finish().await;
    // Idempotent requests that hit the dying instance are retried on the other one.
    assert!(failures.is_empty(), "{failures:?}");
}

/// Instance pids from the agent's state file.
pub fn instance_pids(state: &Path) -> Vec<i32> {
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("local/state.json")).unwrap_or_default())
            .unwrap_or_default();
    let mut pids = Vec::new();
    for c in s["clusters"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for g in c["groups"].as_object().into_iter().flat_map(|m| m.values()) {
            for i in g["instances"].as_array().into_iter().flatten() {
                pids.push(i["pid"].as_i64().unwrap_or(0) as i32);
            }
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_killed_and_restarted_re_adopts_its_instances() {
    let local = Local::new();
    let port = free_port();
    let c = only(&local_app("adopt", "1.0.0", 2, port, ""));
    run(&local.provider, &c, &create_steps(&c, 0, 2, true)).await;
    let before = observe_one(&local.provider, &c).await.unwrap();
    let pids = instance_pids(local.state());
    let agent = local.agent_pid().unwrap();
    // SAFETY: kills the agent this test started.
    unsafe {
        libc::kill(agent, libc::SIGKILL);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The instances keep running without their agent.
    for p in &pids {
        assert!(
            keelson::provider::local::agent::process::alive(*p as u32),
            "instance {p} died with the agent"
        );
    }
    // Observing starts a new agent, which adopts them; traffic resumes.
    let mut after = None;
    for _ in 0..50 {
        let o = observe_one(&local.provider, &c).await.unwrap();
        if o.server_groups[0].healthy() == 2 {
            after = Some(o);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = after.expect("instances healthy again after the agent restarted");
    assert_ne!(local.agent_pid(), Some(agent));
    assert_eq!(
        instance_pids(local.state()),
        pids,
        "the same processes, adopted, not restarted"
    );
    assert_eq!(
        before, after,
        "the observed state is the same before and after"
    );
    let load = Load::start(port, 100);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (counts, failures) = load.finish().await;
    assert!(
        failures.is_empty() && counts.values().sum::<u64>() > 20,
        "{counts:?} {failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_agent_file_leads_back_to_the_running_agent() {
    let local = Local::new();
    let port = free_port();
    let c = only(&local_app("lost", "1.0.0", 1, port, ""));
    run(&local.provider, &c, &create_steps(&c, 0, 1, true)).await;
    let agent = local.agent_pid().unwrap();
    std::fs::remove_file(local.state().join("local/agent.json")).unwrap();
    // A client that finds no agent starts one, which sees the directory held and exits; the
    // running agent writes its file again and the client finds it.
    let o = observe_one(&local.provider, &c)
        .await
        .expect("observed through the running agent");
    assert_eq!(o.server_groups.len(), 1);
    assert_eq!(local.agent_pid(), Some(agent));
    // Concurrent clients start at most one agent between them.
    std::fs::remove_file(local.state().join("local/agent.json")).unwrap();
    let all = futures::future::join_all((0..4).map(|_| observe_one(&local.provider, &c))).await;
    assert!(all.iter().all(Option::is_some), "{all:?}");
    let log = std::fs::read_to_string(local.state().join("local/agent.log")).unwrap();
    // (At most one per removal: the running agent may write its file back first.)
    assert!(log.matches("another agent serves").count() <= 2, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_conflicts_and_bad_commands_are_clear_and_leave_nothing_running() {
    let local = Local::new();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let c = only(&local_app("busy", "1.0.0", 1, port, ""));
    let err = step(&local.provider, &c, &create_steps(&c, 0, 1, false)[0])
        .await
        .unwrap_err();
    let text = err.chain();
    assert!(
        text.contains(&format!(
            "traffic port {port} is already in use by pid {}",
            std::process::id()
        )),
        "{text}"
    );
    assert!(
        observe_one(&local.provider, &c).await.is_none(),
        "nothing half-created"
    );

    let mut bad = only(&local_app("bad", "1.0.0", 1, free_port(), ""));
    bad.workload.command = vec![
        "no-such-program-keelson".into(),
        "--port".into(),
        "{port}".into(),
    ];
    let err = step(&local.provider, &bad, &create_steps(&bad, 0, 1, false)[0])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("command not found: `no-such-program-keelson --port "),
        "the exact command line: {text}"
    );
    assert!(
        observe_one(&local.provider, &bad).await.is_none(),
        "nothing half-created"
    );
    assert!(instance_pids(local.state()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_exits_at_start_says_why() {
    let local = Local::new();
    let c = only(&local_app(
        "crash",
        "1.0.0",
        1,
        free_port(),
        ", --crash-after, 10ms",
    ));
    run(&local.provider, &c, &create_steps(&c, 0, 1, false)[..1]).await;
    let mut note = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let live = observe_one(&local.provider, &c).await.unwrap();
        if let Some(n) = live.server_groups[0].instances[0].note.clone() {
            note = Some(n);
            break;
        }
    }
    let note = note.expect("a crashed instance carries a note");
    assert!(
        note.contains("exit status: 1") && note.contains("crashing as asked"),
        "{note}"
    );
}
