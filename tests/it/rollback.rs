//! A failure at every step of every strategy: the engine rolls back with exactly the operations
//! the plan's rollback column shows for that step, the traffic guard holds after every
//! operation, the cluster ends on its previous version at its previous size, and planning again
//! shows the rollout again, not drift. On the memory provider for every strategy; on the local
//! target, with real processes under load, for canary, rolling red/black and rolling update.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use keelson::actuation::{Capabilities, Gate, Op, Step};
use keelson::engine::{ClusterOutcome, Engine, LogProgress};
use keelson::model::{ClusterId, DesiredState, ObservedCluster, Stamp};
use keelson::observe::{Providers, observe};
use keelson::plan::{Action, ClusterPlan, Plan, Selection, plan};
use keelson::provider::memory::MemoryProvider;
use keelson::provider::{Provider, ProviderError, ProviderOp, TargetRef};
use keelson::spec::ProviderKind;
use keelson::store::{Owner, SqliteStore, Store};

use crate::plan_scenarios::desired;

/// A provider that fails one chosen operation, logs every operation that took effect, and
/// checks the traffic guard's promise after each: a cluster that served still serves.
struct Faulty {
    inner: Arc<dyn Provider>,
    /// The engine's store, where another holder takes the lock before it acts.
    store: Arc<dyn Store>,
    fail_in: Mutex<Option<usize>>,
    usurp: Mutex<Option<Usurp>>,
    /// Once another holder acted, what reaches the target carries its stamp: a target that
    /// compares no stamps (Kubernetes, EC2), so only the engine itself can stop the run.
    lenient: Mutex<Option<Stamp>>,
    log: Mutex<Vec<Op>>,
    violations: Mutex<Vec<String>>,
}

impl Faulty {
    fn new(inner: Arc<dyn Provider>, store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            store,
            fail_in: Mutex::new(None),
            usurp: Mutex::new(None),
            lenient: Mutex::new(None),
            log: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
        })
    }

    /// The `n`th operation from now (0: the next) fails once.
    fn fail_op(&self, n: usize) {
        *self.fail_in.lock().unwrap() = Some(n);
    }

    /// Another holder of the same store, with a newer epoch, acts on the cluster around the
    /// `n`th operation from now.
    fn usurp(&self, u: Usurp) {
        *self.usurp.lock().unwrap() = Some(u);
    }

    fn take_log(&self) -> Vec<Op> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }

    async fn cluster(&self, target: &TargetRef, id: &ClusterId) -> Option<ObservedCluster> {
        self.inner
            .observe(target)
            .await
            .ok()?
            .into_iter()
            .find(|c| &c.id == id)
    }
}

#[async_trait]
impl Provider for Faulty {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn observe(&self, target: &TargetRef) -> Result<Vec<ObservedCluster>, ProviderError> {
        if self.usurp_due(|u| matches!(u, Usurp::Observed(_))) {
            // The engine's holding, as the store has it: the other holder's is the next.
            let store = self.store.identity().unwrap().id;
            for lock in self.store.locks().unwrap() {
                let Some(c) = self
                    .inner
                    .observe(target)
                    .await?
                    .into_iter()
                    .find(|c| c.id.to_string() == lock.cluster)
                else {
                    continue;
                };
                let groups: Vec<_> = c.server_groups.iter().map(|g| g.sequence).collect();
                let theirs = Stamp::new(store.clone(), lock.epoch);
                self.act_as_newer(target, &c.id, &groups, &theirs).await;
            }
        }
        self.inner.observe(target).await
    }

    async fn apply(
        &self,
        target: &TargetRef,
        cluster: &ClusterId,
        op: &ProviderOp,
        stamp: &Stamp,
    ) -> Result<(), ProviderError> {
        {
            let mut f = self.fail_in.lock().unwrap();
            match *f {
                Some(0) => {
                    *f = None;
                    return Err(ProviderError::unavailable(format!(
                        "injected failure of `{}`",
                        op.as_ref_op()
                    )));
                }
                Some(n) => *f = Some(n - 1),
                None => {}
            }
        }
        let before = self
            .cluster(target, cluster)
            .await
            .is_some_and(|c| c.serving());
        let lenient = self.lenient.lock().unwrap().clone();
        self.inner
            .apply(target, cluster, op, lenient.as_ref().unwrap_or(stamp))
            .await?;
        self.log.lock().unwrap().push(op.as_ref_op());
        if self.usurp_due(|u| matches!(u, Usurp::AfterOp(_))) {
            self.act_as_newer(target, cluster, &op.sequences(), stamp)
                .await;
        }
        let after = self
            .cluster(target, cluster)
            .await
            .is_some_and(|c| c.serving());
        if before && !after {
            self.violations.lock().unwrap().push(format!(
                "{cluster} stopped serving after `{}`",
                op.as_ref_op()
            ));
        }
        Ok(())
    }
}

/// When another holder takes the lock and acts, counted in operations of the run (0: the
/// first).
#[derive(Debug, Clone, Copy)]
enum Usurp {
    /// Right after the `n`th operation: the store refuses the write that records it.
    AfterOp(usize),
    /// At the first observation after the `n`th operation: it finds the newer stamp.
    Observed(usize),
}

impl Faulty {
    /// Whether the other holder acts now: a usurp of this kind whose operation has run.
    fn usurp_due(&self, kind: impl Fn(&Usurp) -> bool) -> bool {
        let ran = self.log.lock().unwrap().len();
        let mut u = self.usurp.lock().unwrap();
        match *u {
            Some(Usurp::AfterOp(n) | Usurp::Observed(n))
                if ran > n && u.as_ref().is_some_and(&kind) =>
            {
                *u = None;
                true
            }
            _ => false,
        }
    }

    /// The holder after `stamp`'s takes the lock, then makes a harmless operation on
    /// `groups` (a heal: nothing is missing), which leaves its stamp there; what reaches the
    /// target afterwards carries that stamp.
    async fn act_as_newer(
        &self,
        target: &TargetRef,
        cluster: &ClusterId,
        groups: &[keelson::model::Sequence],
        stamp: &Stamp,
    ) {
        // Its lock came with the next epoch; then it acted.
        let newer = Stamp::new(stamp.store.clone(), stamp.epoch + 1);
        self.store
            .raise_epoch(&cluster.to_string(), newer.epoch)
            .unwrap();
        for &sequence in groups {
            let group = keelson::model::ServerGroupName::new(&cluster.name, sequence);
            let heal = Op::Heal {
                group,
                sequence,
                missing: 0,
            };
            let _ = self.inner.apply(target, cluster, &heal, &newer).await;
        }
        *self.lenient.lock().unwrap() = Some(newer);
    }
}

/// One application `web` on the local target of dev.
fn spec(version: &str, capacity: u32, strategy: &str, port: u16, extra: &str) -> String {
    format!(
        "apiVersion: keelson/v1
kind: Application
metadata: {{name: web}}
spec:
  artifact: {{version: \"{version}\"}}
  workload: {{command: [keelson, demo-app, --port, \"{{port}}\"{extra}]}}
  health: {{http: {{path: /healthz, interval: 200ms, timeout: 500ms}}, timeout: 3s}}
  clusters:
    - {{environment: dev, target: local, capacity: {{desired: {capacity}}}, strategy: {strategy}, traffic: {{port: {port}}}}}
"
    )
}

struct Rig {
    engine: Arc<Engine>,
    faulty: Arc<Faulty>,
    _store: tempfile::TempDir,
}

impl Rig {
    fn new(inner: Arc<dyn Provider>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let faulty = Faulty::new(inner, store.clone());
        let engine = Arc::new(Engine {
            store,
            providers: Providers::new().with(ProviderKind::Local, faulty.clone()),
            owner: Owner::this_process("keelson test", keelson::clock::now()),
            parallelism: 1,
            stop: Default::default(),
            slots: Default::default(),
            events: Default::default(),
        });
        Self {
            engine,
            faulty,
            _store: dir,
        }
    }

    async fn plan(&self, d: &DesiredState) -> Plan {
        // Every step here fails on purpose, one after another: the flapping guard, which
        // would leave the cluster alone after three, is tested elsewhere.
        for id in d.clusters.keys() {
            self.engine
                .store
                .clear_failures(&id.to_string(), "test", keelson::clock::now())
                .unwrap();
        }
        let observed = observe(d, &self.engine.providers).await;
        let policy = self
            .engine
            .store
            .policy(keelson::clock::now(), None)
            .unwrap();
        plan(d, &observed, &policy, "rev", &Selection::default())
    }

    /// Applies until converged; panics on failure.
    async fn converge(&self, d: &DesiredState) {
        let r = self
            .engine
            .apply(d, "rev", &Selection::default(), None, Arc::new(LogProgress))
            .await;
        assert!(!r.failed(), "{r:?}");
        assert!(!self.plan(d).await.has_changes());
        self.faulty.take_log();
    }

    /// Runs exactly `pl`; returns the one cluster's outcome.
    async fn run(&self, d: &DesiredState, pl: &Plan) -> ClusterOutcome {
        let r = self
            .engine
            .apply(
                d,
                "rev",
                &Selection::default(),
                Some(pl.clone()),
                Arc::new(LogProgress),
            )
            .await;
        r.clusters[0].outcome.clone()
    }
}

fn ops(steps: impl IntoIterator<Item = Step>) -> Vec<Op> {
    steps
        .into_iter()
        .filter_map(|s| match s {
            Step::Op(op) => Some(op),
            Step::Gate(_) => None,
        })
        .collect()
}

fn rollback_ops(cp: &ClusterPlan, i: usize) -> Vec<Op> {
    ops(cp.steps[i].rollback.iter().map(|r| r.step.clone()))
}

/// Where a failure is injected: the `n`th operation of the plan, or its first health gate
/// (the new version's instances never become healthy).
#[derive(Debug, Clone, Copy)]
enum Fault {
    Op(usize),
    Health,
}

/// The failure points of a plan: every operation, and the first health gate.
fn faults(cp: &ClusterPlan) -> Vec<(usize, Fault)> {
    let mut out = Vec::new();
    let mut n = 0;
    let mut health = false;
    for (i, s) in cp.steps.iter().enumerate() {
        match &s.step {
            Step::Op(_) => {
                out.push((i, Fault::Op(n)));
                n += 1;
            }
            Step::Gate(Gate::Healthy { .. }) if !health => {
                out.push((i, Fault::Health));
                health = true;
            }
            Step::Gate(_) => {}
        }
    }
    out
}

/// What a cluster must be back to after a rollback.
struct Before<'a> {
    strategy: &'a str,
    version: &'a str,
    capacity: u32,
}

/// Checks one failed run against its plan: the rollback ran exactly the plan's rollback of
/// step `i`, the guard held, the cluster is back on its previous version and size, and the
/// rollout is planned again.
async fn check_rolled_back(
    rig: &Rig,
    d2: &DesiredState,
    cp: &ClusterPlan,
    i: usize,
    outcome: &ClusterOutcome,
    before: &Before<'_>,
) {
    let (strategy, old, capacity) = (before.strategy, before.version, before.capacity);
    let ClusterOutcome::Failed { rollback, .. } = outcome else {
        panic!("{strategy} step {}: not a failure: {outcome:?}", i + 1);
    };
    let ran = rig.faulty.take_log();
    let ran_before: usize = cp.steps[..i]
        .iter()
        .filter(|s| matches!(s.step, Step::Op(_)))
        .count();
    assert_eq!(
        ran[ran_before.min(ran.len())..],
        rollback_ops(cp, i)[..],
        "{strategy}, failure at step {} `{}`: the rollback ran ({rollback}) is the plan's",
        i + 1,
        cp.steps[i].description
    );
    assert_eq!(rig.faulty.violations(), Vec::<String>::new(), "{strategy}");
    let observed = observe(d2, &rig.engine.providers).await;
    if cp.steps[i].rollback.is_empty() {
        // Past the point of no return (an old group destroyed in the cleanup): the new
        // version stays, and the next plan finishes the cleanup.
        let live = observed.clusters.values().next().unwrap();
        assert!(live.serving(), "{strategy} step {}: {live:?}", i + 1);
        let again = rig.plan(d2).await;
        assert!(
            again.clusters.iter().all(|c| c.action == Action::Cleanup),
            "{strategy} step {}: {:?}",
            i + 1,
            again.clusters
        );
        return;
    }
    let live = observed.clusters.values().next().unwrap();
    let serving: Vec<_> = live.server_groups.iter().filter(|g| g.enabled).collect();
    assert_eq!(serving.len(), 1, "{strategy} step {}: {live:?}", i + 1);
    let g = serving[0];
    assert_eq!(
        (g.version.as_str(), g.weight, g.capacity),
        (old, 100, capacity)
    );
    assert!(
        g.instances.iter().all(|x| x.spec_hash == g.spec_hash),
        "{strategy} step {}: every instance runs {old}",
        i + 1
    );
    assert!(
        live.server_groups.iter().all(|g| g.version == old),
        "{strategy} step {}: the new groups are gone: {live:?}",
        i + 1
    );
    let again = rig.plan(d2).await;
    assert_eq!(again.clusters.len(), 1, "{strategy}");
    assert_eq!(again.clusters[0].action, Action::RollOut, "{strategy}");
    assert!(!again.clusters[0].drift, "{strategy}");
}

const STRATEGIES: [(&str, &str); 6] = [
    ("red-black", "{type: red-black, keepDisabled: 1}"),
    (
        "rolling-red-black",
        "{type: rolling-red-black, steps: [25, 50]}",
    ),
    ("highlander", "{type: highlander}"),
    (
        "rolling-update",
        "{type: rolling-update, maxUnavailable: 2}",
    ),
    (
        "canary",
        "{type: canary, steps: [{weight: 10, pause: 30s}, {weight: 50, pause: 1m}]}",
    ),
    ("none", "{type: none}"),
];

#[tokio::test(start_paused = true)]
async fn every_strategy_rolls_back_what_ran_at_every_step() {
    let mut checked = 0;
    for (name, strategy) in STRATEGIES {
        let d1 = desired(&[spec("1.0.0", 4, strategy, 18080, "")]);
        let d2 = desired(&[spec("2.0.0", 4, strategy, 18080, "")]);
        let probe = Rig::new(Arc::new(MemoryProvider::new()));
        probe.converge(&d1).await;
        let reference = probe.plan(&d2).await;
        for (i, fault) in faults(&reference.clusters[0]) {
            let memory = Arc::new(MemoryProvider::new());
            let rig = Rig::new(memory.clone());
            rig.converge(&d1).await;
            let pl = rig.plan(&d2).await;
            let cp = &pl.clusters[0];
            match fault {
                Fault::Op(n) => rig.faulty.fail_op(n),
                Fault::Health => memory.fail_version("2.0.0"),
            }
            let outcome = rig.run(&d2, &pl).await;
            let before = Before {
                strategy: name,
                version: "1.0.0",
                capacity: 4,
            };
            check_rolled_back(&rig, &d2, cp, i, &outcome, &before).await;
            checked += 1;
        }
    }
    assert!(checked >= 25, "{checked} failure points");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_local_target_rollbacks_keep_serving_under_load() {
    for (name, strategy) in [
        (
            "canary",
            "{type: canary, steps: [{weight: 20, pause: 300ms}, {weight: 50, pause: 300ms}]}",
        ),
        (
            "rolling-red-black",
            "{type: rolling-red-black, steps: [50]}",
        ),
        (
            "rolling-update",
            "{type: rolling-update, maxUnavailable: 1}",
        ),
    ] {
        let local = crate::local_target::Local::new();
        let port = crate::local_target::free_port();
        let d1 = desired(&[spec("1.0.0", 2, strategy, port, "")]);
        let d2 = desired(&[spec("2.0.0", 2, strategy, port, "")]);
        let rig = Rig::new(Arc::new(local.provider.clone()));
        rig.converge(&d1).await;
        let load = crate::local_target::Load::start(port, 100);
        let reference = rig.plan(&d2).await;
        for (i, fault) in faults(&reference.clusters[0]) {
            // The cluster is back on 1.0.0 after each failure: the same plan comes again.
            let pl = rig.plan(&d2).await;
            assert_eq!(pl.clusters[0].steps, reference.clusters[0].steps, "{name}");
            let cp = &pl.clusters[0];
            let d = match fault {
                Fault::Op(n) => {
                    rig.faulty.fail_op(n);
                    d2.clone()
                }
                // A version whose instances never pass their health check.
                Fault::Health => continue,
            };
            let outcome = rig.run(&d, &pl).await;
            let before = Before {
                strategy: name,
                version: "1.0.0",
                capacity: 2,
            };
            check_rolled_back(&rig, &d2, cp, i, &outcome, &before).await;
        }
        // The first health gate: a version that never becomes healthy.
        let bad = desired(&[spec("2.0.0", 2, strategy, port, ", --fail-health")]);
        let pl = rig.plan(&bad).await;
        let cp = &pl.clusters[0];
        let i = faults(cp)
            .iter()
            .find_map(|(i, f)| matches!(f, Fault::Health).then_some(*i))
            .unwrap();
        let outcome = rig.run(&bad, &pl).await;
        let before = Before {
            strategy: name,
            version: "1.0.0",
            capacity: 2,
        };
        check_rolled_back(&rig, &bad, cp, i, &outcome, &before).await;
        let (counts, failures) = load.finish().await;
        assert!(
            failures.is_empty(),
            "{name}: {} failed requests: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert!(counts.values().sum::<u64>() > 100, "{name}: load ran");
    }
}

/// Another replica of the same store has taken the lock and acted on the cluster (its newer
/// epoch is in the store and on the groups): the run stops where it is, as an interruption,
/// and rolls nothing back, whether the store refused its write or its observation found the
/// stamp on a target that compares none itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_holders_stamp_stops_the_run_where_it_is() {
    let d1 = desired(&[spec("1.0.0", 2, "{type: red-black}", 18081, "")]);
    let d2 = desired(&[spec("2.0.0", 2, "{type: red-black}", 18081, "")]);
    for (usurp, says) in [
        (Usurp::AfterOp(0), "lost the cluster lock"),
        (
            Usurp::Observed(0),
            "another holder has acted on the cluster (epoch 3 is written on it; this replica holds epoch 2)",
        ),
    ] {
        let rig = Rig::new(Arc::new(MemoryProvider::new()));
        rig.converge(&d1).await;
        let pl = rig.plan(&d2).await;
        rig.faulty.usurp(usurp);
        let outcome = rig.run(&d2, &pl).await;
        assert!(
            matches!(&outcome, ClusterOutcome::Interrupted(why) if why.contains(says)),
            "{usurp:?}: {outcome:?}"
        );
        // The first operation ran; nothing after it, and nothing was rolled back.
        let first: Vec<Op> = ops(pl.clusters[0].steps.iter().map(|s| s.step.clone()))
            .into_iter()
            .take(1)
            .collect();
        assert_eq!(rig.faulty.take_log(), first, "{usurp:?}");
        assert!(rig.faulty.violations().is_empty());
        // It cleared no journal: whoever holds the cluster now goes on from it. (After the
        // store refused its write, the journal does not have the operation that ran just
        // before; the next plan starts from what is live.)
        let journals = rig.engine.store.journals().unwrap();
        let ran = match usurp {
            Usurp::AfterOp(_) => 0,
            Usurp::Observed(_) => 1,
        };
        assert_eq!(
            journals.iter().map(|j| j.ran.len()).collect::<Vec<_>>(),
            [ran],
            "{usurp:?}: {journals:?}"
        );
    }
}

/// Beside other replicas, one whose revision is not the one in force acts on nothing, and
/// neither does one whose store cannot say which revision is in force: acting then is the very
/// mistake the question prevents (a replica paused mid-call wakes up to a call that timed out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_or_unsure_of_the_revision_in_force_acts_on_nothing() {
    let d1 = desired(&[spec("1.0.0", 2, "{type: red-black}", 18083, "")]);
    let d2 = desired(&[spec("2.0.0", 2, "{type: red-black}", 18083, "")]);
    let rig = Rig::new(Arc::new(MemoryProvider::new()));
    rig.converge(&d1).await;
    let pl = rig.plan(&d2).await;
    rig.faulty.take_log();
    rig.engine.slots.set_replicas(2);
    rig.engine.store.set_last_good_revision("newer").unwrap();
    let outcome = rig.run(&d2, &pl).await;
    assert!(
        matches!(&outcome, ClusterOutcome::Interrupted(why) if why.contains("this replica is at revision rev, the replicas at newer")),
        "{outcome:?}"
    );
    assert!(rig.faulty.take_log().is_empty());
    // The store cannot say: the revision it keeps does not read (everything else does).
    let db = rusqlite::Connection::open(rig._store.path().join("keelson.db")).unwrap();
    db.execute_batch("UPDATE meta SET value = x'00ff' WHERE key = 'last_good_revision'")
        .unwrap();
    let outcome = rig.run(&d2, &pl).await;
    assert!(
        matches!(&outcome, ClusterOutcome::Interrupted(why) if why.contains("the state store does not answer")),
        "{outcome:?}"
    );
    assert!(rig.faulty.take_log().is_empty());
    // Alone, there is no one to be behind: it acts.
    db.execute_batch("UPDATE meta SET value = 'newer' WHERE key = 'last_good_revision'")
        .unwrap();
    rig.engine.slots.set_replicas(1);
    assert_eq!(rig.run(&d2, &pl).await, ClusterOutcome::Converged);
}

/// A store restored from an older copy: the target carries an epoch of this store that it
/// never gave out. The run stops there once, the store's epochs go on past it, and the next
/// run converges, rather than every run being stopped by it for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_restored_from_an_older_copy_stops_once_then_goes_on() {
    let d1 = desired(&[spec("1.0.0", 2, "{type: red-black}", 18082, "")]);
    let d2 = desired(&[spec("2.0.0", 2, "{type: red-black}", 18082, "")]);
    let memory = Arc::new(MemoryProvider::new());
    let rig = Rig::new(memory.clone());
    rig.converge(&d1).await;
    // What the copy's later life did: epoch 1000 on the live group.
    let store = rig.engine.store.identity().unwrap().id;
    let c = d1.clusters.values().next().unwrap();
    let target = TargetRef {
        environment: c.id.environment.clone(),
        target: c.target.clone(),
    };
    let seq = keelson::model::Sequence::FIRST;
    let heal = Op::Heal {
        group: keelson::model::ServerGroupName::new(&c.id.name, seq),
        sequence: seq,
        missing: 0,
    };
    memory
        .apply(&target, &c.id, &heal, &Stamp::new(store.clone(), 1000))
        .await
        .unwrap();
    let pl = rig.plan(&d2).await;
    let outcome = rig.run(&d2, &pl).await;
    assert!(
        matches!(&outcome, ClusterOutcome::Interrupted(why) if why.contains("epoch 1000 is written on the cluster, but this store has only given out")),
        "{outcome:?}"
    );
    assert!(rig.faulty.take_log().is_empty(), "nothing ran");
    rig.converge(&d2).await;
    let live = memory.observe(&target).await.unwrap();
    let stamps: BTreeSet<String> = live[0]
        .server_groups
        .iter()
        .filter_map(|g| g.labels.get(keelson::model::labels::EPOCH).cloned())
        .collect();
    assert!(
        stamps.contains(&format!("1001@{store}")),
        "the next holding goes on past the restored epoch: {stamps:?}"
    );
}
