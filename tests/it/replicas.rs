//! Three `keelson up` replicas on one real PostgreSQL and 60 local-target clusters: the work
//! is spread, a replica killed mid-canary is taken over and its canary finished with no failed
//! request, and no cluster ever has two holders at once (checked over the whole history).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::daemon::http;
use crate::local_target::{Load, free_port};
use crate::pg::{PASSWORD, Postgres};
use crate::support::git;

const ENV: &str = "apiVersion: keelson/v1\nkind: Environment\nmetadata: {name: dev}\nspec:\n  targets: [{name: local, provider: local}]\n";
const CLUSTERS: usize = 60;

fn app(name: &str, version: &str, port: u16, strategy: &str) -> String {
    format!(
        "apiVersion: keelson/v1\nkind: Application\nmetadata: {{name: {name}}}\nspec:\n  artifact: {{version: \"{version}\"}}\n  workload: {{command: [keelson, demo-app, --port, \"{{port}}\"]}}\n  health: {{http: {{path: /healthz, interval: 200ms, timeout: 500ms}}, timeout: 10s}}\n  clusters:\n    - {{environment: dev, target: local, capacity: {{desired: 1}}, strategy: {strategy}, traffic: {{port: {port}}}}}\n"
    )
}

struct Replica {
    name: String,
    api: u16,
    child: tokio::process::Child,
}

struct Fleet {
    pg: Postgres,
    url: String,
    work: tempfile::TempDir,
    bare: tempfile::TempDir,
    state: tempfile::TempDir,
    ports: Vec<u16>,
    replicas: Vec<Replica>,
}

impl Fleet {
    fn new(clusters: usize) -> Self {
        let pg = Postgres::start();
        let url = pg.database("fleet");
        let (work, bare) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        git(bare.path(), &["init", "-q", "--bare", "-b", "main"]);
        git(work.path(), &["init", "-q", "-b", "main"]);
        git(
            work.path(),
            &["remote", "add", "origin", bare.path().to_str().unwrap()],
        );
        std::fs::write(work.path().join("env.yaml"), ENV).unwrap();
        Self {
            pg,
            url,
            work,
            bare,
            state: tempfile::tempdir().unwrap(),
            ports: (0..clusters).map(|_| free_port()).collect(),
            replicas: Vec::new(),
        }
    }

    /// Writes every app at `version` (app 0 with `first`'s strategy) and pushes.
    fn push(&self, version: &str, first: &str) {
        for (i, port) in self.ports.iter().enumerate() {
            let strategy = if i == 0 { first } else { "{type: red-black}" };
            std::fs::write(
                self.work.path().join(format!("a{i}.yaml")),
                app(&format!("a{i}"), version, *port, strategy),
            )
            .unwrap();
        }
        git(self.work.path(), &["add", "-A"]);
        git(self.work.path(), &["commit", "-q", "-m", version]);
        git(self.work.path(), &["push", "-q", "-f", "origin", "main"]);
    }

    fn start(&mut self, name: &str) {
        let log = std::fs::File::create(self.state.path().join(format!("{name}.log"))).unwrap();
        let api = free_port();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
            .arg("up")
            .args(["--repo", self.bare.path().to_str().unwrap()])
            .args(["--interval", "300ms", "--drift-interval", "1h"])
            .args(["--listen", &format!("127.0.0.1:{api}")])
            .arg("--state-dir")
            .arg(self.state.path())
            .args(["--store", &self.url, "--replica", name])
            .env("KEELSON_STORE_PASSWORD", PASSWORD)
            .env("KEELSON_API_TOKEN", "s3cret-token")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.replicas.push(Replica {
            name: name.into(),
            api,
            child,
        });
    }

    fn logs(&self) -> String {
        self.replicas
            .iter()
            .map(|r| {
                let log =
                    std::fs::read_to_string(self.state.path().join(format!("{}.log", r.name)))
                        .unwrap_or_default();
                format!(
                    "--- {}:\n{}",
                    r.name,
                    &log[log.len().saturating_sub(2000)..]
                )
            })
            .collect()
    }

    /// Waits until every cluster answers with `version`.
    async fn converged(&self, version: &str, secs: u64) {
        let started = Instant::now();
        let mut left: BTreeSet<u16> = self.ports.iter().copied().collect();
        while !left.is_empty() && started.elapsed() < Duration::from_secs(secs) {
            for port in left.clone() {
                let (_, body) = http(&format!("http://127.0.0.1:{port}/"), "GET", &[], "").await;
                if body.contains(&format!("\"version\":\"{version}\"")) {
                    left.remove(&port);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut seen = String::new();
        for port in &left {
            let i = self.ports.iter().position(|p| p == port).unwrap_or(0);
            for r in &self.replicas {
                let (_, st) = http(
                    &format!("http://127.0.0.1:{}/api/v1/status", r.api),
                    "GET",
                    &[],
                    "",
                )
                .await;
                let st: serde_json::Value = serde_json::from_str(&st).unwrap_or_default();
                let c = st["daemon"]["clusters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["cluster"] == format!("dev/local/a{i}"))
                    .cloned()
                    .unwrap_or_default();
                seen.push_str(&format!("{} sees a{i}: {c}\n", r.name));
            }
        }
        assert!(
            left.is_empty(),
            "{seen}{} clusters never served {version}: ports {left:?} of {:?}\n{}\nlocks:\n{}\nlast history:\n{}",
            left.len(),
            self.ports,
            self.logs(),
            self.pg.query("fleet", "SELECT cluster, owner, expires_at, epoch, now() FROM locks WHERE token <> ''"),
            self.pg.query("fleet", "SELECT id, cluster, action, detail, who, result FROM history ORDER BY id DESC LIMIT 40")
        );
    }

    /// (history id, cluster, replica, epoch) of every step a replica took, in order.
    fn steps(&self) -> Vec<(u64, String, String, u64)> {
        self.pg
            .query(
                "fleet",
                "SELECT id, cluster, who FROM history WHERE action IN ('step', 'rollback') ORDER BY id",
            )
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, '|');
                let (id, cluster, who) = (f.next()?, f.next()?, f.next()?);
                let replica = who.split("--replica ").nth(1)?.split(')').next()?.to_string();
                let epoch = who.rsplit("epoch ").next()?.trim().parse().ok()?;
                Some((id.parse().ok()?, cluster.to_string(), replica, epoch))
            })
            .collect()
    }

    /// Each replica's `/readyz` status code.
    async fn readiness(&self) -> Vec<u16> {
        let mut codes = Vec::new();
        for r in &self.replicas {
            codes.push(
                http(
                    &format!("http://127.0.0.1:{}/readyz", r.api),
                    "GET",
                    &[],
                    "",
                )
                .await
                .0,
            );
        }
        codes
    }

    /// Waits until every replica's `/readyz` answers `code`.
    async fn all_ready(&self, code: u16, secs: u64) {
        for _ in 0..secs * 10 {
            if self.readiness().await.iter().all(|c| *c == code) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "readyz never all {code}: {:?}\n{}",
            self.readiness().await,
            self.logs()
        );
    }

    fn max_history(&self) -> u64 {
        self.pg
            .query("fleet", "SELECT coalesce(max(id), 0) FROM history")
            .trim()
            .parse()
            .unwrap()
    }

    /// Waits until the lock of `cluster` is held and its history has a step matching `like`;
    /// answers the holder's replica name and pid.
    async fn holder_once(&self, cluster: &str, like: &str) -> (String, i32) {
        for _ in 0..300 {
            let row = self.pg.query(
                "fleet",
                &format!("SELECT owner FROM locks WHERE cluster = '{cluster}' AND token <> ''"),
            );
            let seen = self.pg.query(
                "fleet",
                &format!("SELECT count(*) FROM history WHERE cluster = '{cluster}' AND action = 'step' AND detail LIKE '{like}'"),
            );
            if !row.trim().is_empty() && seen.trim() != "0" {
                let owner: serde_json::Value = serde_json::from_str(row.trim()).unwrap();
                let name = owner["command"]
                    .as_str()
                    .unwrap()
                    .rsplit(' ')
                    .next()
                    .unwrap()
                    .to_string();
                return (name, i32::try_from(owner["pid"].as_i64().unwrap()).unwrap());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{cluster} never reached {like}\n{}", self.logs());
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            let _ = r.child.start_kill();
        }
        crate::local_target::stop_all(self.state.path());
    }
}

/// Every cluster's steps, in the order written, never go back to an older epoch, and each
/// epoch belongs to one replica: no two holders acted on a cluster at once.
fn one_holder_at_a_time(steps: &[(u64, String, String, u64)]) {
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    let mut holder: BTreeMap<(&str, u64), &str> = BTreeMap::new();
    for (id, cluster, replica, epoch) in steps {
        let prev = last.insert(cluster, *epoch).unwrap_or(0);
        assert!(
            *epoch >= prev,
            "history {id}: {cluster} went back from epoch {prev} to {epoch}"
        );
        let first = holder.entry((cluster, *epoch)).or_insert(replica);
        assert_eq!(
            first, replica,
            "history {id}: {cluster} epoch {epoch} acted on by two replicas"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_share_sixty_clusters_and_survive_a_kill_mid_canary() {
    let mut fleet = Fleet::new(CLUSTERS);
    let canary = "{type: canary, steps: [{weight: 25, pause: 3s}, {weight: 50, pause: 3s}, {weight: 75, pause: 3s}]}";
    fleet.push("1.0.0", canary);
    for name in ["r0", "r1", "r2"] {
        fleet.start(name);
    }
    fleet.converged("1.0.0", 180).await;
    // The work is spread: each replica created at least a sixth of the clusters.
    let steps = fleet.steps();
    let mut by: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (_, cluster, replica, _) in &steps {
        by.entry(replica).or_default().insert(cluster);
    }
    let spread: BTreeMap<&str, usize> = by.iter().map(|(r, c)| (*r, c.len())).collect();
    eprintln!("clusters acted on per replica: {spread:?}");
    assert_eq!(spread.len(), 3, "{spread:?}");
    assert!(
        spread.values().all(|n| *n >= CLUSTERS / 6),
        "each replica acts on at least a sixth: {spread:?}"
    );
    assert_eq!(
        by.values().flatten().collect::<BTreeSet<_>>().len(),
        CLUSTERS
    );
    // No cluster was created twice: a replica whose plan went stale while another acted
    // finds that out under the lock and plans again.
    let twice = fleet.pg.query(
        "fleet",
        "SELECT cluster, count(*) FROM history WHERE action = 'step' AND detail LIKE 'create %' GROUP BY cluster HAVING count(*) > 1",
    );
    assert!(twice.trim().is_empty(), "created twice: {twice}");

    // A canary on a0 under load; the replica holding it is killed mid-rollout.
    let load = Load::start(fleet.ports[0], 50);
    fleet.push("2.0.0", canary);
    let (victim, pid) = fleet.holder_once("dev/local/a0", "%25%").await;
    let killed = Instant::now();
    // SAFETY: kill has no memory preconditions; pid is the replica's, started by this test.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    // Another replica takes the cluster over and finishes the canary.
    let mut taken = None;
    for _ in 0..600 {
        let by = fleet.pg.query(
            "fleet",
            "SELECT who FROM history WHERE cluster = 'dev/local/a0' AND action = 'lock-takeover' ORDER BY id DESC LIMIT 1",
        );
        if !by.trim().is_empty() && taken.is_none() {
            taken = Some((killed.elapsed(), by));
        }
        let (_, body) = http(
            &format!("http://127.0.0.1:{}/", fleet.ports[0]),
            "GET",
            &[],
            "",
        )
        .await;
        let done = fleet.pg.query(
            "fleet",
            "SELECT count(*) FROM locks WHERE cluster = 'dev/local/a0' AND token <> ''",
        );
        if taken.is_some() && body.contains("\"version\":\"2.0.0\"") && done.trim() == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (took, by) = taken.unwrap_or_else(|| panic!("nobody took a0 over\n{}", fleet.logs()));
    eprintln!("{victim} killed; a0 taken over after {took:?} by {by}");
    assert!(!by.contains(&format!("--replica {victim}")), "{by}");
    assert!(
        took < Duration::from_secs(15),
        "taken over after {took:?}, past the 15 s lock"
    );
    fleet.converged("2.0.0", 120).await;
    let (_, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "requests failed across the kill: {failures:?}"
    );
    one_holder_at_a_time(&fleet.steps());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_replica_loses_its_clusters_and_a_database_restart_pauses_everyone() {
    let mut fleet = Fleet::new(12);
    let canary = "{type: canary, steps: [{weight: 25, pause: 40s}, {weight: 50, pause: 1s}]}";
    fleet.push("1.0.0", canary);
    for name in ["r0", "r1", "r2"] {
        fleet.start(name);
    }
    fleet.converged("1.0.0", 120).await;
    // Each replica learns from its heartbeat how many share the store.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = http(
            &format!("http://127.0.0.1:{}/metrics", fleet.replicas[0].api),
            "GET",
            &[],
            "",
        )
        .await
        .1;
        if metrics.contains("keelson_replicas 3") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.contains("keelson_replicas 3"), "{metrics}");
    assert!(
        metrics.contains("keelson_cluster_locks_held{replica=\"r0\"}"),
        "{metrics}"
    );
    let load = Load::start(fleet.ports[0], 50);

    // SIGSTOP the replica in a0's canary pause, past its lock; change the desired state.
    fleet.push("2.0.0", canary);
    let (victim, pid) = fleet.holder_once("dev/local/a0", "%25%").await;
    // SAFETY: kill has no memory preconditions; pid is a replica this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let stopped = Instant::now();
    let mut taken = None;
    for _ in 0..600 {
        let by = fleet.pg.query(
            "fleet",
            "SELECT who FROM history WHERE cluster = 'dev/local/a0' AND action = 'lock-takeover' ORDER BY id DESC LIMIT 1",
        );
        if !by.trim().is_empty() {
            taken = Some((stopped.elapsed(), by));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (took, by) = taken
        .unwrap_or_else(|| panic!("nobody took a0 from the paused {victim}\n{}", fleet.logs()));
    eprintln!("{victim} paused; a0 taken over after {took:?} by {by}");
    assert!(
        took >= Duration::from_secs(10),
        "a paused holder's lock is not taken early: {took:?}"
    );
    assert!(!by.contains(&format!("--replica {victim}")), "{by}");
    fleet.push("3.0.0", "{type: red-black}");
    fleet.converged("3.0.0", 120).await;
    let before_wake = fleet.max_history();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    // It did nothing on the clusters it lost: every step of its own since it woke is under a
    // lock it took again afterwards (an epoch newer than any before it woke), never under the
    // holding it lost.
    let steps = fleet.steps();
    let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
    for (id, cluster, _, epoch) in &steps {
        if *id <= before_wake {
            let e = newest.entry(cluster).or_insert(0);
            *e = (*e).max(*epoch);
        }
    }
    let after: Vec<_> = steps
        .iter()
        .filter(|(id, _, replica, _)| *id > before_wake && *replica == victim)
        .collect();
    eprintln!("steps of {victim} after it woke, each under a new lock: {after:?}");
    let late: Vec<_> = after
        .iter()
        .filter(|(_, cluster, _, epoch)| {
            *epoch <= newest.get(cluster.as_str()).copied().unwrap_or(0)
        })
        .collect();
    assert!(
        late.is_empty(),
        "{victim} acted under a lost lock after waking: {late:?}\n{}",
        fleet.logs()
    );
    let log = std::fs::read_to_string(fleet.state.path().join(format!("{victim}.log")))
        .unwrap_or_default();
    eprintln!(
        "late writes refused by the fence: {}",
        log.matches("changed hands").count()
    );
    fleet.converged("3.0.0", 5).await;

    // PostgreSQL goes away mid-rollout: every replica reports not ready and acts on
    // nothing; once it is back they finish, with no step done twice.
    fleet.push("4.0.0", "{type: canary, steps: [{weight: 50, pause: 4s}]}");
    let _ = fleet.holder_once("dev/local/a0", "%50%").await;
    fleet.pg.down();
    fleet.all_ready(503, 20).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    fleet.pg.up();
    fleet.all_ready(200, 60).await;
    fleet.converged("4.0.0", 120).await;
    let twice = fleet.pg.query(
        "fleet",
        "SELECT cluster, detail, count(*) FROM history WHERE action = 'step' AND result = 'ok' AND (detail LIKE 'create %' OR detail LIKE 'enable %') GROUP BY cluster, detail HAVING count(*) > 1",
    );
    assert!(twice.trim().is_empty(), "steps done twice: {twice}");
    let (_, failures) = load.finish().await;
    assert!(failures.is_empty(), "requests to a0 failed: {failures:?}");
    one_holder_at_a_time(&fleet.steps());
}

/// A database that answers nothing (a frozen host, a network that drops packets): every store
/// call gives up within its limit, the replicas report not ready while their API keeps
/// answering at once, and once the database answers again they finish the rollout, with no
/// step done twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_database_is_noticed_and_the_replicas_keep_answering() {
    let mut fleet = Fleet::new(4);
    fleet.push("1.0.0", "{type: red-black}");
    for name in ["r0", "r1"] {
        fleet.start(name);
    }
    fleet.converged("1.0.0", 120).await;
    fleet.all_ready(200, 30).await;
    // Keelson's credentials stay with Keelson: neither the local agent the replicas started
    // nor the instances it runs have them in their environment.
    let agent: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fleet.state.path().join("local/agent.json")).unwrap(),
    )
    .unwrap();
    let agent = agent["pid"].as_i64().unwrap().to_string();
    let children = std::process::Command::new("pgrep")
        .args(["-P", &agent])
        .output()
        .unwrap();
    let pids: Vec<String> = std::iter::once(agent)
        .chain(
            String::from_utf8_lossy(&children.stdout)
                .lines()
                .map(str::to_string),
        )
        .collect();
    assert!(pids.len() > 4, "the agent and its instances: {pids:?}");
    for pid in &pids {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let env = String::from_utf8_lossy(&env);
        assert!(!env.is_empty(), "{pid} has an environment");
        for secret in [PASSWORD, "s3cret-token"] {
            assert!(
                !env.contains(secret),
                "process {pid} was handed a credential"
            );
        }
    }
    fleet.push("2.0.0", "{type: canary, steps: [{weight: 50, pause: 3s}]}");
    let _ = fleet.holder_once("dev/local/a0", "%50%").await;
    fleet.pg.freeze();
    let frozen = Instant::now();
    fleet.all_ready(503, 30).await;
    let noticed = frozen.elapsed();
    assert!(
        noticed < Duration::from_secs(15),
        "not ready only after {noticed:?}, longer than a lock lasts"
    );
    // While the store's calls wait, the daemons' other work goes on: their API answers now.
    for _ in 0..5 {
        for r in &fleet.replicas {
            let asked = Instant::now();
            let url = format!("http://127.0.0.1:{}/healthz", r.api);
            let (code, _) = http(&url, "GET", &[], "").await;
            let took = asked.elapsed();
            assert_eq!(
                code, 200,
                "{}: /healthz while the database is frozen",
                r.name
            );
            assert!(
                took < Duration::from_secs(1),
                "{}: /healthz took {took:?} while the database is frozen",
                r.name
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let held = frozen.elapsed();
    fleet.pg.thaw();
    fleet.all_ready(200, 60).await;
    fleet.converged("2.0.0", 120).await;
    eprintln!("a frozen database: not ready after {noticed:?}; frozen for {held:?}");
    let twice = fleet.pg.query(
        "fleet",
        "SELECT cluster, detail, count(*) FROM history WHERE action = 'step' AND result = 'ok' AND (detail LIKE 'create %' OR detail LIKE 'enable %') GROUP BY cluster, detail HAVING count(*) > 1",
    );
    assert!(twice.trim().is_empty(), "steps done twice: {twice}");
    one_holder_at_a_time(&fleet.steps());
}
