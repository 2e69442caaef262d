//! Running plans: rounds of concurrent clusters, each step guarded and recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::Semaphore;

use super::Progress;
use crate::model::{ClusterId, DesiredState, ObservedState};
use crate::observe::{Providers, observe};
use crate::plan::{Block, Plan, Policy, Selection, plan};
use crate::provider::TargetRef;
use crate::store::{HistoryEntry, Owner, Store};

/// Most planning rounds of one apply (each round may unblock the next environment).
const ROUNDS: usize = 8;

/// How one cluster ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterOutcome {
    /// All steps done.
    Converged,
    /// Not moved: suspended, outside a window, awaiting approval or promotion.
    Held(Vec<String>),
    /// Another actuation holds its lock.
    Locked(String),
    /// The traffic guard refused a step.
    Refused(String),
    /// Another state store made the cluster (see `keelson adopt`).
    Foreign(String),
    /// Stopped because this process lost the cluster's lock (paused past it, or the store
    /// went away): why. Taken up again at the next pass, by whoever holds the lock then.
    Interrupted(String),
    /// A step failed; the cluster was rolled back (or the rollback failed too).
    Failed {
        /// What failed.
        error: String,
        /// What the rollback did.
        rollback: String,
    },
}

impl ClusterOutcome {
    /// Whether this outcome makes the run fail (exit 1).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Self::Locked(_)
                | Self::Refused(_)
                | Self::Foreign(_)
                | Self::Interrupted(_)
                | Self::Failed { .. }
        )
    }
}

impl std::fmt::Display for ClusterOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Converged => f.write_str("converged"),
            Self::Held(why) => write!(f, "held: {}", why.join("; ")),
            Self::Locked(by) => write!(f, "refused: locked by {by}"),
            Self::Refused(why) => write!(f, "refused by the traffic guard: {why}"),
            Self::Foreign(why) => write!(f, "refused: {why}"),
            Self::Interrupted(why) => write!(f, "interrupted: {why}; taken up again next"),
            Self::Failed { error, rollback } => {
                write!(f, "failed: {error}\n  rollback: {rollback}")
            }
        }
    }
}

/// One cluster's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterReport {
    /// The cluster.
    pub id: ClusterId,
    /// How it ended.
    pub outcome: ClusterOutcome,
    /// Steps executed.
    pub steps: usize,
    /// Whether the cluster was restored from drift.
    pub drift: bool,
}

/// The result of an apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Per cluster, by environment in promotion order, then by id.
    pub clusters: Vec<ClusterReport>,
}

impl ApplyReport {
    /// Whether any cluster failed or was refused.
    pub fn failed(&self) -> bool {
        self.clusters.iter().any(|c| c.outcome.is_failure())
    }
}

/// The engine.
pub struct Engine {
    /// Locks, suspends, history.
    pub store: Arc<dyn Store>,
    /// Providers by kind.
    pub providers: Providers,
    /// Who acts.
    pub owner: Owner,
    /// Clusters moved at once.
    pub parallelism: usize,
    /// Set to stop every cluster at its next step boundary (shutdown).
    pub stop: Arc<AtomicBool>,
    /// Clusters moved at once, shared by every apply of this engine.
    pub slots: Slots,
    /// Where rollout events go (nowhere until a notifier is set).
    pub events: Arc<crate::notify::Events>,
}

/// How many clusters move at once: in all, and per provider (a rate-limited cloud API takes
/// fewer). Made on first use and shared by every apply of an engine, so batches the daemon
/// runs side by side share them too.
#[derive(Debug, Default)]
pub struct Slots {
    all: std::sync::OnceLock<Arc<Semaphore>>,
    per_provider: std::sync::Mutex<BTreeMap<crate::spec::ProviderKind, Arc<Semaphore>>>,
    /// How many replicas share the store (the daemon's heartbeat says; 0 or 1: alone).
    replicas: std::sync::atomic::AtomicUsize,
    /// Cluster locks this engine holds now.
    held: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts one held cluster lock while it lives.
pub(super) struct Holding(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Whether a replica holding `held` cluster locks declines another, when `wanting` clusters
/// are held or free to move and `replicas` share them: it holds more than an even split
/// already (so it ends with one more at most, for the races between replicas). Never all of
/// them at once: the replica holding least holds no more than an even split of what is held,
/// which is less than what is held or free, so it takes the free cluster.
pub(super) fn over_share(held: usize, wanting: usize, replicas: usize) -> bool {
    replicas > 1 && held > wanting.div_ceil(replicas)
}

impl Slots {
    /// Says how many replicas share the store now.
    pub fn set_replicas(&self, n: usize) {
        self.replicas.store(n, std::sync::atomic::Ordering::Release);
    }

    /// How many replicas share the store (1 when alone).
    pub fn replicas(&self) -> usize {
        self.replicas
            .load(std::sync::atomic::Ordering::Acquire)
            .max(1)
    }

    /// How many cluster locks this engine holds now.
    pub(super) fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Counts a cluster lock just taken, until the answer is dropped.
    pub(super) fn hold(&self) -> Holding {
        self.held.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Holding(self.held.clone())
    }

    fn all(&self, parallelism: usize) -> Arc<Semaphore> {
        self.all
            .get_or_init(|| Arc::new(Semaphore::new(parallelism.clamp(1, Semaphore::MAX_PERMITS))))
            .clone()
    }

    fn provider(&self, kind: crate::spec::ProviderKind, batch: usize) -> Arc<Semaphore> {
        match self.per_provider.lock() {
            Ok(mut m) => m
                .entry(kind)
                .or_insert_with(|| Arc::new(Semaphore::new(batch)))
                .clone(),
            Err(_) => Arc::new(Semaphore::new(batch)),
        }
    }
}

fn holds(blocks: &[Block]) -> Vec<String> {
    blocks.iter().map(ToString::to_string).collect()
}

impl Engine {
    pub(super) fn now(&self) -> jiff::Timestamp {
        crate::clock::now()
    }

    /// Keeps what the delivery controls need from an observation: each cluster the plan
    /// leaves as it is, serving its desired version healthy, is recorded live and healthy
    /// (where a veto goes back to); when groups were disabled (for `destroyDisabledAfter`).
    fn note(
        &self,
        desired: &DesiredState,
        observed: &ObservedState,
        policy: &Policy,
        pl: &Plan,
        sel: &Selection,
    ) {
        let now = self.now();
        let warn = |e: crate::store::StoreError| {
            tracing::warn!("cannot record: {}", crate::report::chain(&e));
        };
        let moving: BTreeSet<&ClusterId> = pl.clusters.iter().map(|c| &c.id).collect();
        for d in desired.clusters.values() {
            if !sel.includes_cluster(&d.id, &d.app) {
                continue;
            }
            let Some(live) = observed.clusters.get(&d.id) else {
                continue;
            };
            if d.strategy.destroy_disabled_after().is_some() {
                let disabled: Vec<String> = live
                    .server_groups
                    .iter()
                    .filter(|g| !g.enabled)
                    .map(|g| Policy::disabled_key(&d.id, &g.name))
                    .collect();
                let known = disabled
                    .iter()
                    .all(|k| policy.disabled_since.contains_key(k));
                let stale = live
                    .server_groups
                    .iter()
                    .any(|g| g.enabled && policy.disabled_at(&d.id, &g.name).is_some());
                if !known || stale {
                    self.store
                        .note_disabled(&d.id.to_string(), &disabled, now)
                        .unwrap_or_else(warn);
                }
            }
            if moving.contains(&d.id) {
                continue;
            }
            let healthy = live.server_groups.iter().any(|g| {
                g.enabled
                    && g.spec_hash == d.spec_hash
                    && g.capacity > 0
                    && g.healthy() == g.capacity
            });
            let newest = policy.deployed.iter().rev().find(|r| r.cluster == d.id);
            let same = newest.is_some_and(|r| {
                r.spec_hash == d.spec_hash
                    && r.artifact == d.artifact()
                    && r.rest == d.retarget.rest
            });
            if healthy && !same {
                self.store
                    .record_deployed(&crate::plan::Deployed {
                        cluster: d.id.clone(),
                        app: d.app.clone(),
                        artifact: d.artifact(),
                        spec_hash: d.spec_hash.clone(),
                        rest: d.retarget.rest.clone(),
                        at: now,
                    })
                    .unwrap_or_else(warn);
            }
        }
    }

    /// A history entry of this engine's, now.
    pub(super) fn entry(
        &self,
        cluster: &ClusterId,
        action: &str,
        detail: &str,
        revision: &str,
        result: &str,
    ) -> HistoryEntry {
        HistoryEntry {
            at: self.now(),
            cluster: cluster.to_string(),
            action: action.into(),
            detail: detail.into(),
            who: self.owner.to_string(),
            revision: revision.into(),
            result: result.into(),
        }
    }

    pub(super) fn record(
        &self,
        cluster: &ClusterId,
        action: &str,
        detail: &str,
        revision: &str,
        result: &str,
    ) {
        let e = self.entry(cluster, action, detail, revision, result);
        if let Err(err) = self.store.record(&e) {
            tracing::warn!("cannot record history: {}", crate::report::chain(&err));
        }
    }

    /// Applies the desired state: plans against fresh observation, runs every ready cluster,
    /// and plans again while that unblocks more (promotion from one environment to the next).
    /// With `fixed`, runs exactly that plan once.
    pub async fn apply(
        self: &Arc<Self>,
        desired: &DesiredState,
        revision: &str,
        sel: &Selection,
        fixed: Option<Plan>,
        progress: Arc<dyn Progress>,
    ) -> ApplyReport {
        self.apply_reporting(desired, revision, sel, fixed, progress, None)
            .await
    }

    /// [`Engine::apply`], sending each selected cluster's report on `each` as soon as it
    /// ends (the daemon's schedule frees it at once); with `each`, a cluster is run at most
    /// once (the schedule promotes dependents itself).
    pub async fn apply_reporting(
        self: &Arc<Self>,
        desired: &DesiredState,
        revision: &str,
        sel: &Selection,
        fixed: Option<Plan>,
        progress: Arc<dyn Progress>,
        each: Option<tokio::sync::mpsc::UnboundedSender<ClusterReport>>,
    ) -> ApplyReport {
        let report = |r: &ClusterReport| {
            if let Some(tx) = &each {
                let _ = tx.send(r.clone());
            }
        };
        let mut results: BTreeMap<ClusterId, ClusterReport> = BTreeMap::new();
        let single = fixed.is_some();
        if let Err(e) = self.store.lapse_pins(self.now()) {
            tracing::warn!("cannot lapse pins: {}", crate::report::chain(&e));
        }
        let mut fixed = fixed;
        for _ in 0..ROUNDS {
            // What each cluster looked like when planned: checked again under its lock.
            let mut basis: BTreeMap<ClusterId, u64> = BTreeMap::new();
            let pl = match fixed.take() {
                Some(p) => p,
                None => {
                    let observed = observe(desired, &self.providers).await;
                    for c in desired.clusters.keys() {
                        basis.insert(c.clone(), super::cluster::basis(observed.clusters.get(c)));
                    }
                    let policy = match self.store.policy(self.now(), Some(&self.owner)) {
                        Ok(p) => p,
                        Err(e) => {
                            // Nothing was done: every cluster not yet done with is taken up
                            // again once the store answers, with no failure counted. Each is
                            // reported, or the daemon would take it as done and leave it.
                            let why = super::store_silent(crate::report::chain(&e));
                            for c in desired.clusters.values() {
                                if !sel.includes_cluster(&c.id, &c.app)
                                    || results.contains_key(&c.id)
                                {
                                    continue;
                                }
                                let r = ClusterReport {
                                    id: c.id.clone(),
                                    outcome: ClusterOutcome::Interrupted(why.clone()),
                                    steps: 0,
                                    drift: false,
                                };
                                report(&r);
                                results.insert(c.id.clone(), r);
                            }
                            break;
                        }
                    };
                    let pl = plan(desired, &observed, &policy, revision, sel);
                    self.note(desired, &observed, &policy, &pl, sel);
                    if each.is_some() {
                        // What the plan leaves alone is done with at once.
                        let planned: BTreeSet<&ClusterId> =
                            pl.clusters.iter().map(|p| &p.id).collect();
                        for c in desired.clusters.values() {
                            if sel.includes_cluster(&c.id, &c.app)
                                && !results.contains_key(&c.id)
                                && !planned.contains(&c.id)
                            {
                                let r = ClusterReport {
                                    id: c.id.clone(),
                                    outcome: ClusterOutcome::Converged,
                                    steps: 0,
                                    drift: false,
                                };
                                report(&r);
                                results.insert(c.id.clone(), r);
                            }
                        }
                    }
                    pl
                }
            };
            let mut runnable = Vec::new();
            for cp in pl.clusters {
                if results.get(&cp.id).is_some_and(|r| {
                    each.is_some()
                        || r.outcome.is_failure()
                        || r.outcome == ClusterOutcome::Converged
                }) {
                    continue;
                }
                if cp.steps.is_empty() {
                    // Nothing to run: done with, as what the plan leaves alone is.
                    if each.is_some() {
                        let r = ClusterReport {
                            id: cp.id.clone(),
                            outcome: ClusterOutcome::Converged,
                            steps: 0,
                            drift: false,
                        };
                        report(&r);
                        results.insert(cp.id.clone(), r);
                    }
                    continue;
                }
                let locked = cp.blocked.iter().find_map(|b| match b {
                    Block::Locked { owner, .. } => Some(owner.clone()),
                    _ => None,
                });
                let refused = cp.blocked.iter().find_map(|b| match b {
                    Block::GuardRefused { reason, step } => Some(format!("step {step}: {reason}")),
                    _ => None,
                });
                let foreign = cp.blocked.iter().find_map(|b| match b {
                    Block::ForeignStore { .. } => Some(b.to_string()),
                    _ => None,
                });
                for b in &cp.blocked {
                    let (kind, key) = match b {
                        Block::AwaitingApproval { version, .. } => (
                            crate::notify::EventKind::ApprovalNeeded,
                            format!("approval {} {version}", cp.id),
                        ),
                        Block::Unhappy { until, .. } => (
                            crate::notify::EventKind::ClusterUnhappy,
                            format!("unhappy {} {until}", cp.id),
                        ),
                        _ => continue,
                    };
                    // Told once, not at every reconcile that finds it still waiting.
                    if self.events.first_time(&key) {
                        self.emit(&cp, revision, kind, b.to_string());
                    }
                }
                let outcome = if let Some(why) = foreign {
                    Some(ClusterOutcome::Foreign(why))
                } else if let Some(by) = locked {
                    Some(ClusterOutcome::Locked(by))
                } else if let Some(why) = refused {
                    Some(ClusterOutcome::Refused(why))
                } else if !cp.blocked.is_empty() {
                    Some(ClusterOutcome::Held(holds(&cp.blocked)))
                } else {
                    None
                };
                match outcome {
                    Some(o) => {
                        let r = ClusterReport {
                            id: cp.id.clone(),
                            outcome: o,
                            steps: 0,
                            drift: false,
                        };
                        report(&r);
                        results.insert(cp.id.clone(), r);
                    }
                    None => runnable.push(cp),
                }
            }
            // With other replicas on the store, this one begins at its own place in the list,
            // so replicas rarely want one cluster at once, and takes no more than its share of
            // the clusters held or free to move (see `over_share`: never all of them decline).
            let wanting = (self.slots.replicas() > 1 && !runnable.is_empty())
                .then(|| self.store.locks().ok())
                .flatten()
                .map(|held| held.len() + runnable.len());
            if self.slots.replicas() > 1 && runnable.len() > 1 {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                self.owner.token.hash(&mut h);
                let at = usize::try_from(h.finish() % runnable.len() as u64).unwrap_or(0);
                runnable.rotate_left(at);
            }
            if runnable.is_empty() {
                break;
            }
            // Shared by every apply of this engine (the daemon runs batches side by side).
            let sem = self.slots.all(self.parallelism);
            let mut tasks = tokio::task::JoinSet::new();
            let mut running: BTreeMap<tokio::task::Id, ClusterId> = BTreeMap::new();
            for cp in runnable {
                let Some(target) = desired
                    .environments
                    .get(&cp.id.environment)
                    .and_then(|e| e.targets.iter().find(|t| t.name == cp.id.target))
                    .cloned()
                else {
                    // Compiled desired state names only declared targets: never seen, but
                    // reported rather than left unanswered.
                    let r = ClusterReport {
                        id: cp.id.clone(),
                        outcome: ClusterOutcome::Failed {
                            error: format!(
                                "environment {} declares no target {}",
                                cp.id.environment, cp.id.target
                            ),
                            rollback: "nothing was done".into(),
                        },
                        steps: 0,
                        drift: false,
                    };
                    report(&r);
                    results.insert(cp.id.clone(), r);
                    continue;
                };
                let target = TargetRef {
                    environment: cp.id.environment.clone(),
                    target,
                };
                let kind = target.target.provider;
                let batch = self
                    .providers
                    .get(kind)
                    .map_or(usize::MAX, |p| p.capabilities().batch)
                    .clamp(1, Semaphore::MAX_PERMITS);
                let mine = self.slots.provider(kind, batch);
                let (me, sem, progress, revision) = (
                    self.clone(),
                    sem.clone(),
                    progress.clone(),
                    revision.to_string(),
                );
                let planned_on = basis.get(&cp.id).copied();
                let id = cp.id.clone();
                let task = tasks.spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    let _mine = mine.acquire_owned().await;
                    let run = super::cluster::Planned {
                        basis: planned_on,
                        wanting,
                    };
                    me.run_planned(&cp, run, &target, &revision, progress.as_ref())
                        .await
                });
                running.insert(task.id(), id);
            }
            let mut progressed = false;
            while let Some(done) = tasks.join_next_with_id().await {
                let r = match done {
                    Ok((_, r)) => r,
                    // A run that panicked is a failure of its cluster, reported like any other.
                    Err(e) => match running.remove(&e.id()) {
                        Some(id) => ClusterReport {
                            id,
                            outcome: ClusterOutcome::Failed {
                                error: format!("the run ended abnormally: {e}"),
                                rollback: "not attempted".into(),
                            },
                            steps: 0,
                            drift: false,
                        },
                        None => continue,
                    },
                };
                progressed |= r.outcome == ClusterOutcome::Converged;
                report(&r);
                results.insert(r.id.clone(), r);
            }
            if single || !progressed {
                break;
            }
        }
        // Reported as plans are: by environment in promotion order, then by id.
        let order = desired.promotion_order();
        let mut clusters: Vec<ClusterReport> = results.into_values().collect();
        clusters.sort_by_key(|c| crate::model::promotion_rank(&order, c.id.environment.as_str()));
        ApplyReport { clusters }
    }
}

#[cfg(test)]
mod tests {
    use super::over_share;

    #[test]
    fn a_replica_declines_past_its_share_and_alone_never() {
        // 60 clusters to move among three replicas: 20 each, and one more for races (one
        // holding 20 still takes the 21st).
        assert!(!over_share(20, 60, 3));
        assert!(over_share(21, 60, 3));
        assert!(
            !over_share(1000, 60, 1),
            "alone, a replica takes everything"
        );
    }

    #[test]
    fn some_replica_always_takes_a_free_cluster() {
        // Whatever the holdings, the replica holding least (at most the even split of what is
        // held, `held / replicas`) is under its share while a cluster is free.
        for replicas in 2..=6 {
            for wanting in 1..=60 {
                for held in 0..wanting {
                    assert!(
                        !over_share(held / replicas, wanting, replicas),
                        "{replicas} replicas, {held} held of {wanting}"
                    );
                }
            }
        }
    }
}
