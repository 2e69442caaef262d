//! Running plans: rounds of concurrent clusters, each step guarded and recorded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::Progress;
use crate::model::{ClusterId, DesiredState, ObservedCluster};
use crate::observe::{Providers, observe};
use crate::plan::{Block, ClusterPlan, Plan, Selection, Sim, Step, plan};
use crate::provider::{LeaseOutcome, Provider, TargetRef};
use crate::store::{HistoryEntry, LockOutcome, Owner, Store};

/// How long a lock lasts unless renewed; renewed every third of it while working.
const LOCK_TTL: Duration = Duration::from_secs(30);
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
            Self::Locked(_) | Self::Refused(_) | Self::Failed { .. }
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
}

fn holds(blocks: &[Block]) -> Vec<String> {
    blocks.iter().map(ToString::to_string).collect()
}

impl Engine {
    fn now(&self) -> jiff::Timestamp {
        crate::clock::now()
    }

    fn record(
        &self,
        cluster: &ClusterId,
        action: &str,
        detail: &str,
        revision: &str,
        result: &str,
    ) {
        let e = HistoryEntry {
            at: self.now(),
            cluster: cluster.to_string(),
            action: action.into(),
            detail: detail.into(),
            who: self.owner.to_string(),
            revision: revision.into(),
            result: result.into(),
        };
        if let Err(err) = self.store.record(&e) {
            eprintln!("warning: cannot record history: {err}");
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
        let mut results: BTreeMap<ClusterId, ClusterReport> = BTreeMap::new();
        let single = fixed.is_some();
        let mut fixed = fixed;
        for _ in 0..ROUNDS {
            let pl = match fixed.take() {
                Some(p) => p,
                None => {
                    let observed = observe(desired, &self.providers).await;
                    let policy = match self.store.policy(self.now(), Some(&self.owner)) {
                        Ok(p) => p,
                        Err(e) => {
                            for c in desired.clusters.keys() {
                                results.insert(
                                    c.clone(),
                                    ClusterReport {
                                        id: c.clone(),
                                        outcome: ClusterOutcome::Failed {
                                            error: e.to_string(),
                                            rollback: "nothing was done".into(),
                                        },
                                        steps: 0,
                                        drift: false,
                                    },
                                );
                            }
                            break;
                        }
                    };
                    plan(desired, &observed, &policy, revision, sel)
                }
            };
            let mut runnable = Vec::new();
            for cp in pl.clusters {
                if results.get(&cp.id).is_some_and(|r| {
                    r.outcome.is_failure() || r.outcome == ClusterOutcome::Converged
                }) {
                    continue;
                }
                if cp.steps.is_empty() {
                    continue;
                }
                let locked = cp.blocked.iter().find_map(|b| match b {
                    Block::Locked { owner, .. } => Some(owner.clone()),
                    _ => None,
                });
                let refused = cp.blocked.iter().find_map(|b| match b {
                    Block::GuardRefused { reason, step } => {
                        Some(format!("step {}: {reason}", step + 1))
                    }
                    _ => None,
                });
                let outcome = if let Some(by) = locked {
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
                        results.insert(
                            cp.id.clone(),
                            ClusterReport {
                                id: cp.id.clone(),
                                outcome: o,
                                steps: 0,
                                drift: false,
                            },
                        );
                    }
                    None => runnable.push(cp),
                }
            }
            if runnable.is_empty() {
                break;
            }
            let sem = Arc::new(Semaphore::new(self.parallelism.max(1)));
            let mut tasks = tokio::task::JoinSet::new();
            for cp in runnable {
                let Some(target) = desired
                    .environments
                    .get(&cp.id.environment)
                    .and_then(|e| e.targets.iter().find(|t| t.name == cp.id.target))
                    .cloned()
                else {
                    continue;
                };
                let target = TargetRef {
                    environment: cp.id.environment.clone(),
                    target,
                };
                let (me, sem, progress, revision) = (
                    self.clone(),
                    sem.clone(),
                    progress.clone(),
                    revision.to_string(),
                );
                tasks.spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    me.run_cluster(&cp, &target, &revision, progress.as_ref())
                        .await
                });
            }
            let mut progressed = false;
            while let Some(done) = tasks.join_next().await {
                if let Ok(r) = done {
                    progressed |= r.outcome == ClusterOutcome::Converged;
                    results.insert(r.id.clone(), r);
                }
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

    async fn observe_one(
        &self,
        provider: &dyn Provider,
        target: &TargetRef,
        id: &ClusterId,
    ) -> Result<Option<ObservedCluster>, String> {
        provider
            .observe(target)
            .await
            .map(|all| all.into_iter().find(|c| &c.id == id))
            .map_err(|e| e.to_string())
    }

    /// Runs one cluster's steps under its lock, checking suspends and the guard before each.
    pub async fn run_cluster(
        &self,
        cp: &ClusterPlan,
        target: &TargetRef,
        revision: &str,
        progress: &dyn Progress,
    ) -> ClusterReport {
        let id = &cp.id;
        let report = |outcome, steps| ClusterReport {
            id: id.clone(),
            outcome,
            steps,
            drift: cp.drift,
        };
        let Some(provider) = self.providers.get(target.target.provider).cloned() else {
            return report(
                ClusterOutcome::Failed {
                    error: format!(
                        "no {} provider in this build",
                        target.target.provider.as_str()
                    ),
                    rollback: "nothing was done".into(),
                },
                0,
            );
        };
        let key = id.to_string();
        let reason = self
            .owner
            .command
            .trim_start_matches("keelson ")
            .to_string();
        match self
            .store
            .acquire_lock(&key, &self.owner, &reason, LOCK_TTL, self.now())
        {
            Ok(LockOutcome::Held(l)) => {
                self.record(id, "apply", "cluster is locked", revision, "refused");
                return report(
                    ClusterOutcome::Locked(format!(
                        "{} ({}) until {}",
                        l.owner, l.reason, l.expires_at
                    )),
                    0,
                );
            }
            Ok(LockOutcome::Acquired { took_over: Some(l) }) => {
                progress.note(id, &format!("took over the expired lock of {}", l.owner))
            }
            Ok(LockOutcome::Acquired { took_over: None }) => {}
            Err(e) => {
                return report(
                    ClusterOutcome::Failed {
                        error: e.to_string(),
                        rollback: "nothing was done".into(),
                    },
                    0,
                );
            }
        }
        // The target's own lock (a Kubernetes Lease) guards against instances with other stores.
        let holder = self.owner.holder();
        let refused = match provider.acquire_lease(target, id, &holder, LOCK_TTL).await {
            Ok(LeaseOutcome::Acquired) => None,
            Ok(LeaseOutcome::Held { holder, until }) => {
                self.record(id, "apply", "cluster lease is held", revision, "refused");
                Some(ClusterOutcome::Locked(format!("{holder} until {until}")))
            }
            Err(e) => Some(ClusterOutcome::Failed {
                error: format!("cannot take the cluster's lease: {e}"),
                rollback: "nothing was done".into(),
            }),
        };
        if let Some(outcome) = refused {
            if let Err(e) = self.store.release_lock(&key, &self.owner) {
                progress.note(id, &format!("cannot release the lock: {e}"));
            }
            return report(outcome, 0);
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = {
            let (store, owner, key, lost) = (
                self.store.clone(),
                self.owner.clone(),
                key.clone(),
                lost.clone(),
            );
            let (provider, target, id, holder) =
                (provider.clone(), target.clone(), id.clone(), holder.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LOCK_TTL / 3).await;
                    let leased = matches!(
                        provider.renew_lease(&target, &id, &holder, LOCK_TTL).await,
                        Ok(true)
                    );
                    if !leased
                        || !matches!(
                            store.renew_lock(&key, &owner, LOCK_TTL, crate::clock::now()),
                            Ok(true)
                        )
                    {
                        lost.store(true, Ordering::Release);
                        return;
                    }
                }
            })
        };
        let outcome = self
            .steps(cp, provider.as_ref(), target, revision, progress, &lost)
            .await;
        renewer.abort();
        if let Err(e) = provider.release_lease(target, id, &holder).await {
            progress.note(id, &format!("cannot release the lease: {e}"));
        }
        if let Err(e) = self.store.release_lock(&key, &self.owner) {
            progress.note(id, &format!("cannot release the lock: {e}"));
        }
        progress.done(id, &outcome.0.to_string(), !outcome.0.is_failure());
        report(outcome.0, outcome.1)
    }

    async fn steps(
        &self,
        cp: &ClusterPlan,
        provider: &dyn Provider,
        target: &TargetRef,
        revision: &str,
        progress: &dyn Progress,
        lost: &AtomicBool,
    ) -> (ClusterOutcome, usize) {
        let id = &cp.id;
        let total = cp.steps.len();
        for (i, ps) in cp.steps.iter().enumerate() {
            // Break-glass is checked at every step boundary.
            match self.store.suspends(self.now()) {
                Ok(s) => {
                    let app = &cp.app;
                    if let Some(s) = s.iter().find(|s| s.scope.covers(id, app)) {
                        let why = format!("suspended ({}) by {}: {}", s.scope, s.who, s.reason);
                        self.record(id, "step", &ps.description, revision, "suspended");
                        return (
                            ClusterOutcome::Held(vec![format!(
                                "{why}; stopped before step {}/{total}",
                                i + 1
                            )]),
                            i,
                        );
                    }
                }
                Err(e) => {
                    return (
                        ClusterOutcome::Failed {
                            error: e.to_string(),
                            rollback: "stopped before the step".into(),
                        },
                        i,
                    );
                }
            }
            if self.stop.load(Ordering::Acquire) {
                return (
                    ClusterOutcome::Held(vec![format!(
                        "shutting down; stopped before step {}/{total}",
                        i + 1
                    )]),
                    i,
                );
            }
            if let Step::Pause { duration } = &ps.step {
                // Pauses can be long: wait in slices so shutdown and suspends are not held up.
                progress.step(id, i, total, &ps.description);
                let end = tokio::time::Instant::now() + duration.to_std();
                while tokio::time::Instant::now() < end {
                    if self.stop.load(Ordering::Acquire) {
                        return (
                            ClusterOutcome::Held(vec![format!(
                                "shutting down during step {}/{total}",
                                i + 1
                            )]),
                            i,
                        );
                    }
                    tokio::time::sleep(
                        (end - tokio::time::Instant::now()).min(Duration::from_millis(100)),
                    )
                    .await;
                }
                self.record(id, "step", &ps.description, revision, "ok");
                continue;
            }
            if lost.load(Ordering::Acquire) {
                return (
                    ClusterOutcome::Failed {
                        error: "lost the cluster lock".into(),
                        rollback: "stopped before the step".into(),
                    },
                    i,
                );
            }
            // The traffic guard, against a fresh observation.
            let fresh = match self.observe_one(provider, target, id).await {
                Ok(f) => f,
                Err(e) => {
                    return self
                        .fail(
                            cp,
                            provider,
                            target,
                            revision,
                            progress,
                            i,
                            format!("cannot observe the target: {e}"),
                        )
                        .await;
                }
            };
            let mut sim = Sim::of(fresh.as_ref());
            // Pruning removes a cluster no spec declares any more: it is meant to stop serving.
            let serving = sim.serving() && cp.action != crate::plan::Action::Prune;
            let verdict = sim.apply(&ps.step).and_then(|()| {
                if serving && !sim.serving() {
                    Err(format!(
                        "after `{}` no enabled server group would have a healthy instance",
                        ps.step
                    ))
                } else {
                    Ok(())
                }
            });
            if let Err(why) = verdict {
                self.record(id, "step", &ps.description, revision, "refused");
                return (
                    ClusterOutcome::Refused(format!(
                        "step {}/{total} `{}`: {why}",
                        i + 1,
                        ps.description
                    )),
                    i,
                );
            }
            progress.step(id, i, total, &ps.description);
            match super::execute(provider, target, id, cp.desired.as_deref(), &ps.step).await {
                Ok(()) => self.record(id, "step", &ps.description, revision, "ok"),
                Err(e) => {
                    let mut msg = e.to_string();
                    let mut src = std::error::Error::source(&e);
                    while let Some(s) = src {
                        msg.push_str(&format!(": {s}"));
                        src = s.source();
                    }
                    self.record(id, "step", &ps.description, revision, "failed");
                    return self
                        .fail(cp, provider, target, revision, progress, i, msg)
                        .await;
                }
            }
        }
        (ClusterOutcome::Converged, total)
    }

    /// Rolls a cluster back after step `i` failed: the last healthy group takes all traffic,
    /// groups this plan created are disabled and destroyed.
    #[allow(clippy::too_many_arguments)]
    async fn fail(
        &self,
        cp: &ClusterPlan,
        provider: &dyn Provider,
        target: &TargetRef,
        revision: &str,
        progress: &dyn Progress,
        i: usize,
        error: String,
    ) -> (ClusterOutcome, usize) {
        let id = &cp.id;
        progress.note(id, &format!("step {} failed: {error}; rolling back", i + 1));
        let created: Vec<_> = cp
            .steps
            .iter()
            .filter_map(|s| match s.step {
                Step::CreateServerGroup { sequence, .. } => Some(sequence),
                _ => None,
            })
            .collect();
        let rollback = match self.observe_one(provider, target, id).await {
            Err(e) => format!("could not observe the cluster to roll back: {e}"),
            Ok(None) => "nothing to roll back".into(),
            Ok(Some(live)) => {
                let mut actions = Vec::new();
                // The last healthy group not created by this plan, newest first.
                let good = live
                    .server_groups
                    .iter()
                    .rev()
                    .filter(|g| !created.contains(&g.sequence) && g.healthy() > 0)
                    .max_by_key(|g| (g.enabled, g.sequence));
                if let Some(g) = good
                    && !(g.enabled && g.weight == 100)
                {
                    match provider.set_traffic(id, g.sequence, true, 100).await {
                        Ok(()) => actions.push(format!("re-enabled {}", g.name)),
                        Err(e) => actions.push(format!("could not re-enable {}: {e}", g.name)),
                    }
                }
                for g in live
                    .server_groups
                    .iter()
                    .filter(|g| created.contains(&g.sequence))
                {
                    if good.is_some() || g.healthy() == 0 {
                        let _ = provider.set_traffic(id, g.sequence, false, 0).await;
                        match provider.destroy(id, g.sequence).await {
                            Ok(()) => actions.push(format!("disabled and destroyed {}", g.name)),
                            Err(e) => actions.push(format!("could not destroy {}: {e}", g.name)),
                        }
                    }
                }
                if actions.is_empty() {
                    "no change needed; the previous group still serves".into()
                } else {
                    actions.join(", ")
                }
            }
        };
        self.record(id, "rollback", &rollback, revision, "ok");
        (ClusterOutcome::Failed { error, rollback }, i)
    }
}
