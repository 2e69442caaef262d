//! One cluster's plan under its lock: operations run through the provider, gates polled at the
//! provider's pace, the suspend and the traffic guard checked before every step (with the
//! core's own rules), every operation journaled, and a failure rolled back from the journal.

use std::sync::Arc;
use std::time::Duration;

use super::lock::{ClusterLock, Refusal};
use super::{ClusterOutcome, ClusterReport, Engine, Progress};
use crate::actuation::{Gate, Op, Step, Verdict, rollback_of};
use crate::model::{ClusterId, DesiredCluster, ObservedCluster, Stamp};
use crate::notify::{Event, EventKind};
use crate::plan::{Action, ClusterPlan, Sim, guard_step};
use crate::provider::{Provider, ProviderError, ProviderOp, TargetRef};
use crate::store::{Journal, RollbackProgress, Write};

/// How often a long gate says where it stands.
const SAY_EVERY: Duration = Duration::from_secs(10);

/// How one step ended.
pub(super) enum Stepped {
    Done,
    /// Stop here without failing (suspend, shutdown): why.
    Held(String),
    /// Stop here until a person decides (an analysis held): why.
    Undecided(String),
    /// The guard refused it: why.
    Refused(String),
    /// It failed: why.
    Failed(String),
}

/// How a cluster's run was planned, for the checks made once its lock is taken.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Planned {
    /// The [`basis`] of the observation the plan was made on.
    pub(super) basis: Option<u64>,
    /// Beside other replicas: how many clusters are held or free to move (for the share).
    pub(super) wanting: Option<usize>,
}

/// What a cluster's run needs besides the engine.
pub(super) struct Run<'a> {
    pub(super) engine: &'a Engine,
    pub(super) cp: &'a ClusterPlan,
    pub(super) provider: Arc<dyn Provider>,
    pub(super) target: &'a TargetRef,
    pub(super) revision: &'a str,
    pub(super) progress: &'a dyn Progress,
    pub(super) lock: &'a ClusterLock,
    /// What this holding writes on the groups it acts on: the store and the lock's epoch.
    pub(super) stamp: Stamp,
    /// Why the holding was found lost on the target, where it was.
    pub(super) superseded: std::sync::OnceLock<String>,
}

impl Engine {
    /// Why this replica must not act at `revision`, if it must not: beside other replicas it
    /// acts only on the revision in force, so that one that woke up behind (paused, cut off)
    /// does not take clusters back to what it last fetched. A store that cannot say stops it
    /// too: acting then is exactly the mistake the question is there to prevent. (A working
    /// directory's `dir:` revision, from `keelson apply`, is not comparable.)
    fn behind(&self, revision: &str) -> Option<String> {
        if self.slots.replicas() <= 1 || revision.starts_with("dir:") {
            return None;
        }
        match self.store.last_good_revision() {
            Ok(Some(in_force)) if in_force != revision && !in_force.starts_with("dir:") => {
                Some(format!(
                    "this replica is at revision {revision}, the replicas at {in_force}; it acts once it has fetched that"
                ))
            }
            Ok(_) => None,
            Err(e) => Some(super::store_silent(crate::report::chain(&e))),
        }
    }

    /// An event about `cp`'s cluster, with its versions and revision, to the notifier.
    pub(super) fn emit(&self, cp: &ClusterPlan, revision: &str, kind: EventKind, message: String) {
        let from = cp
            .changes
            .iter()
            .find(|c| c.field == "version")
            .and_then(|c| c.from.clone());
        let to = cp.desired.as_ref().map(|d| d.version.clone());
        self.events.emit(
            Event::new(kind, self.now(), message)
                .on(&cp.id, &cp.app)
                .versions(from, to)
                .revision(revision),
        );
    }

    /// Tells the notifier how a cluster's run ended.
    fn announce(&self, cp: &ClusterPlan, revision: &str, outcome: &ClusterOutcome, steps: usize) {
        let rollout = matches!(cp.action, Action::Create | Action::RollOut);
        let version = cp
            .desired
            .as_ref()
            .map_or("?", |d| d.version.as_str())
            .to_string();
        match outcome {
            ClusterOutcome::Converged if steps > 0 && cp.action == Action::RollBack => self.emit(
                cp,
                revision,
                EventKind::RolledBack,
                "an interrupted rollback was finished".into(),
            ),
            ClusterOutcome::Converged if steps > 0 && rollout => self.emit(
                cp,
                revision,
                EventKind::RolloutSucceeded,
                format!("{version} is live and healthy"),
            ),
            ClusterOutcome::Converged if steps > 0 && cp.drift => self.emit(
                cp,
                revision,
                EventKind::DriftHealed,
                format!("drift put right: {}", cp.reason),
            ),
            ClusterOutcome::Held(why)
                if why
                    .iter()
                    .any(|w| w.contains("canary analysis inconclusive")) =>
            {
                self.emit(
                    cp,
                    revision,
                    EventKind::AnalysisInconclusive,
                    why.join("; "),
                );
            }
            ClusterOutcome::Failed { error, rollback } => {
                if error.contains("canary analysis failed") {
                    self.emit(cp, revision, EventKind::AnalysisFailed, error.clone());
                }
                self.emit(
                    cp,
                    revision,
                    EventKind::RolloutFailed,
                    format!("{version} failed: {error}"),
                );
                if !rollback.contains("failed") {
                    self.emit(
                        cp,
                        revision,
                        EventKind::RolledBack,
                        format!("rolled back: {rollback}"),
                    );
                }
            }
            _ => {}
        }
    }

    /// Records what the delivery controls count: a rollout that converged is a version live
    /// and healthy here; one that failed counts against the flapping guard.
    fn remember(&self, cp: &ClusterPlan, outcome: &ClusterOutcome, lock: &ClusterLock) {
        let Some(d) = cp
            .desired
            .as_ref()
            .filter(|_| cp.action != Action::RollBack)
        else {
            return;
        };
        let now = self.now();
        let written = match outcome {
            ClusterOutcome::Converged if !cp.steps.is_empty() => self.store.fenced(
                &lock.fence(),
                Write::Deployed(&crate::plan::Deployed {
                    cluster: d.id.clone(),
                    app: d.app.clone(),
                    artifact: d.artifact(),
                    spec_hash: d.spec_hash.clone(),
                    rest: d.retarget.rest.clone(),
                    at: now,
                }),
            ),
            ClusterOutcome::Failed { error, .. } => self.store.fenced(
                &lock.fence(),
                Write::Failure(&crate::plan::Failure {
                    cluster: d.id.clone(),
                    hash: d.hash.clone(),
                    at: now,
                    error: error.clone(),
                }),
            ),
            _ => Ok(()),
        };
        if let Err(e) = written {
            tracing::warn!("cannot record: {}", crate::report::chain(&e));
        }
    }

    /// Runs one cluster's steps under its lock, checking suspends and the guard before each.
    pub async fn run_cluster(
        &self,
        cp: &ClusterPlan,
        target: &TargetRef,
        revision: &str,
        progress: &dyn Progress,
    ) -> ClusterReport {
        self.run_planned(cp, Planned::default(), target, revision, progress)
            .await
    }

    /// [`Engine::run_cluster`] for a plan made as `planned` says: once the lock is taken the
    /// cluster is observed again, and if another holder changed it meanwhile (another
    /// replica, another `apply`) nothing runs; the next plan starts from what is there.
    pub(super) async fn run_planned(
        &self,
        cp: &ClusterPlan,
        planned: Planned,
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
        if let Some(why) = self.behind(revision) {
            return report(ClusterOutcome::Interrupted(why), 0);
        }
        if let Some(wanting) = planned.wanting
            && super::run::over_share(self.slots.held(), wanting, self.slots.replicas())
        {
            return report(
                ClusterOutcome::Locked(format!(
                    "another replica: this one holds its share ({} of {wanting} clusters held or free to move, among {} replicas)",
                    self.slots.held(),
                    self.slots.replicas()
                )),
                0,
            );
        }
        let reason = self
            .owner
            .command
            .trim_start_matches("keelson ")
            .to_string();
        let lock = match ClusterLock::acquire(
            self.store.clone(),
            &self.owner,
            provider.clone(),
            target,
            id,
            &reason,
        )
        .await
        {
            Ok(l) => l,
            Err(Refusal::Held(by)) => {
                // Beside other replicas a held lock is the normal case, tried again every few
                // seconds: not worth a history entry each time.
                if self.slots.replicas() <= 1 {
                    self.record(id, "apply", "cluster is locked", revision, "refused");
                }
                return report(ClusterOutcome::Locked(by), 0);
            }
            // The store does not answer: nothing was done, and the cluster is taken up again
            // as soon as it does, with no failure counted.
            Err(Refusal::Unavailable(why)) => {
                return report(ClusterOutcome::Interrupted(why), 0);
            }
            Err(Refusal::Failed(why)) => {
                return report(
                    ClusterOutcome::Failed {
                        error: why,
                        rollback: "nothing was done".into(),
                    },
                    0,
                );
            }
        };
        // Asked again under the lock: a replica paused between the first question and the lock
        // (SIGSTOP, a VM freeze) wakes up holding a fresh lock and an old revision.
        if let Some(why) = self.behind(revision) {
            let _ = lock.release().await;
            return report(ClusterOutcome::Interrupted(why), 0);
        }
        let _holding = self.slots.hold();
        if let Some(prev) = &lock.took_over {
            progress.note(id, &format!("took over the expired lock of {prev}"));
        }
        let stamp = match self.store.identity() {
            Ok(me) => Stamp::new(me.id, lock.epoch),
            Err(e) => {
                let _ = lock.release().await;
                return report(
                    ClusterOutcome::Interrupted(super::store_silent(crate::report::chain(&e))),
                    0,
                );
            }
        };
        let run = Run {
            engine: self,
            cp,
            provider,
            target,
            revision,
            progress,
            lock: &lock,
            stamp,
            superseded: std::sync::OnceLock::new(),
        };
        if let Some(planned_on) = planned.basis {
            let changed = match &run.observe().await {
                Ok(now) => basis(now.as_ref()) != planned_on,
                Err(_) => false,
            };
            if changed {
                let _ = lock.release().await;
                // As if locked: the daemon comes back to it shortly, planned afresh.
                return report(
                    ClusterOutcome::Locked(
                        "another holder, which changed the cluster after it was planned; it is planned again".into(),
                    ),
                    0,
                );
            }
        }
        let rollout = matches!(cp.action, Action::Create | Action::RollOut);
        if rollout {
            self.emit(
                cp,
                revision,
                EventKind::RolloutStarted,
                format!(
                    "rolling out {} by {}",
                    cp.desired.as_ref().map_or("?", |d| d.version.as_str()),
                    cp.strategy.map_or("its strategy", |s| s.as_str())
                ),
            );
        }
        let (outcome, steps) = if cp.action == Action::RollBack {
            run.finish_rollback().await
        } else {
            run.steps().await
        };
        // A run stopped by a lost lock is not held by a person, nor a failure of the cluster
        // (a rollback stopped half-way by it too): it is taken up again soon, by whoever
        // holds the lock then, and counts nothing against the flapping guard.
        let outcome = match outcome {
            ClusterOutcome::Held(why) if lock.lost() => ClusterOutcome::Interrupted(why.join("; ")),
            ClusterOutcome::Failed { error, rollback } if lock.lost() => {
                ClusterOutcome::Interrupted(format!("{error}; rollback: {rollback}"))
            }
            o => o,
        };
        self.remember(cp, &outcome, &lock);
        for problem in lock.release().await {
            progress.note(id, &problem);
        }
        self.announce(cp, revision, &outcome, steps);
        progress.done(id, &outcome.to_string(), !outcome.is_failure());
        report(outcome, steps)
    }
}

/// What a plan rests on in an observed cluster: its groups' names, versions, specs, capacity,
/// state and traffic (not instance health, which moves by itself).
pub(super) fn basis(live: Option<&ObservedCluster>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for g in live.map_or(&[][..], |l| l.server_groups.as_slice()) {
        (
            &g.name,
            &g.version,
            &g.spec_hash,
            g.capacity,
            g.enabled,
            g.weight,
        )
            .hash(&mut h);
    }
    h.finish()
}

impl Run<'_> {
    pub(super) fn id(&self) -> &ClusterId {
        &self.cp.id
    }

    pub(super) fn desired(&self) -> Option<&Arc<DesiredCluster>> {
        self.cp.desired.as_ref()
    }

    fn health_timeout(&self) -> crate::spec::Duration {
        self.desired()
            .map_or(crate::spec::Duration::from_secs(60), |d| d.health.timeout)
    }

    /// A history entry of this run, naming who acted and the lock's epoch, written under
    /// the lock's fence.
    pub(super) fn record(&self, action: &str, detail: &str, result: &str) {
        let mut e = self
            .engine
            .entry(self.id(), action, detail, self.revision, result);
        e.who = format!("{} epoch {}", e.who, self.lock.epoch);
        self.write(Write::History(&e), "record history");
    }

    /// A write under the lock's fence; one refused because another holder took the lock
    /// stops this run at its next check.
    pub(super) fn write(&self, w: Write<'_>, what: &str) {
        match self.engine.store.fenced(&self.lock.fence(), w) {
            Ok(()) => {}
            Err(e) => {
                if matches!(e, crate::store::StoreError::Fenced { .. }) {
                    self.lock.mark_lost();
                }
                self.progress.note(
                    self.id(),
                    &format!("cannot {what}: {}", crate::report::chain(&e)),
                );
            }
        }
    }

    fn journal(&self, j: &Journal) {
        self.write(Write::Journal(j), "journal the rollout");
    }

    fn forget(&self) {
        self.write(Write::ClearJournal, "clear the journal");
    }

    /// The cluster as it is now. A newer holder's stamp on it means this holding is lost:
    /// the run stops at the next check, whatever the observation is for.
    pub(super) async fn observe(&self) -> Result<Option<ObservedCluster>, ProviderError> {
        let id = self.id();
        let live = self
            .provider
            .observe(self.target)
            .await
            .map(|all| all.into_iter().find(|c| &c.id == id))?;
        if let Some(newer) = live.as_ref().and_then(|l| self.stamp.superseded_on(l)) {
            self.superseded(newer);
        }
        Ok(live)
    }

    /// Another holder has acted on the cluster (its epoch is on the target): this one stops
    /// where it is, rolling nothing back, and says so once.
    fn superseded(&self, newer: u64) -> String {
        let why = self.superseded.get_or_init(|| {
            let cluster = self.id().to_string();
            // An epoch the store never gave out is no holder's: the store was restored from
            // an older copy. Its epochs go on from there, and the next holding acts.
            let why = match self.engine.store.raise_epoch(&cluster, newer) {
                Ok(before) if before < newer => format!(
                    "epoch {newer} is written on the cluster, but this store has only given out {before} (was it restored from an older copy?); its epochs now go on from {newer}, and the cluster is taken up again"
                ),
                Ok(_) => self.stamp.superseded_why(newer),
                Err(e) => format!(
                    "{}; {}",
                    self.stamp.superseded_why(newer),
                    super::store_silent(crate::report::chain(&e))
                ),
            };
            tracing::warn!(%cluster, "{why}");
            self.progress.note(self.id(), &why);
            why
        });
        self.lock.mark_lost();
        why.clone()
    }

    /// The operation with this store's mark on the groups it makes (`keelson.io/store`): a
    /// store made anew later sees clusters it never made.
    fn marked(&self, op: ProviderOp) -> ProviderOp {
        op.map_spec(|d| {
            let mut d = Arc::unwrap_or_clone(d);
            d.labels.insert(
                crate::model::labels::STORE.to_string(),
                self.stamp.store.clone(),
            );
            Ok::<_, std::convert::Infallible>(Arc::new(d))
        })
        .unwrap_or_else(|e| match e {})
    }

    /// Why the cluster must not move now (suspend, shutdown, a lost lock), if it must not.
    pub(super) fn stop_reason(&self) -> Result<Option<String>, String> {
        if self.engine.stop.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(Some("shutting down".into()));
        }
        match self.stop_reason_in_store() {
            Ok(why) => Ok(why),
            // Without its store a replica cannot know its lock, suspends or pins: it stops
            // where it is, rolling nothing back, and goes on from the journal once the store
            // answers.
            Err(e) => {
                self.lock.mark_lost();
                Ok(Some(super::store_silent(e)))
            }
        }
    }

    /// [`Run::stop_reason`]'s part that reads the store.
    fn stop_reason_in_store(&self) -> Result<Option<String>, String> {
        let now = self.engine.now();
        let suspends = self
            .engine
            .store
            .suspends(now)
            .map_err(|e| crate::report::chain(&e))?;
        if let Some(b) = crate::plan::suspended(&suspends, self.id(), &self.cp.app, now).first() {
            return Ok(Some(b.to_string()));
        }
        if let Some(why) = self.controlled_away(now)? {
            return Ok(Some(why));
        }
        if self.lock.lost() {
            // Not a failure to roll back: another replica may hold the lock and go on.
            return Ok(Some(self.superseded.get().cloned().unwrap_or_else(|| {
                "lost the cluster lock (not renewed in time, or taken by another replica)".into()
            })));
        }
        Ok(None)
    }

    /// Why a pin or a veto made since the plan was made sends the cluster elsewhere, if one
    /// does: the rollout stops at this step boundary and the next plan goes there.
    fn controlled_away(&self, now: jiff::Timestamp) -> Result<Option<String>, String> {
        let Some(d) = self
            .cp
            .desired
            .as_ref()
            .filter(|_| self.cp.action != Action::RollBack)
        else {
            return Ok(None);
        };
        let store = &self.engine.store;
        let env = &d.id.environment;
        // Unreadable controls hold the cluster where it stands (the store does not answer:
        // see `stop_reason`); they never roll it back.
        let (pins, vetoes) = match (store.pins(), store.vetoes()) {
            (Ok(p), Ok(v)) => (p, v),
            (Err(e), _) | (_, Err(e)) => {
                return Err(format!(
                    "cannot read pins and vetoes: {}",
                    crate::report::chain(&e)
                ));
            }
        };
        let vetoed = |version: &str| vetoes.iter().any(|v| v.covers(&d.app, version, env));
        // A pin to a vetoed version does not hold: the veto wins.
        if let Some(p) = pins.iter().find(|p| {
            &p.environment == env
                && p.app == d.app
                && p.in_force(now)
                && p.artifact.version != d.version
                && !vetoed(&p.artifact.version)
        }) {
            return Ok(Some(format!(
                "pinned to {} by {}: {}",
                p.artifact.version, p.who, p.reason
            )));
        }
        if let Some(v) = vetoes.iter().find(|v| v.covers(&d.app, &d.version, env)) {
            return Ok(Some(format!(
                "{} is vetoed by {}: {}",
                v.version, v.who, v.reason
            )));
        }
        Ok(None)
    }

    /// The plan's steps, then a rollback if one fails.
    async fn steps(&self) -> (ClusterOutcome, usize) {
        let total = self.cp.steps.len();
        let mut journal = Journal {
            cluster: self.id().to_string(),
            revision: self.revision.to_string(),
            health_timeout: self.health_timeout(),
            ran: self.cp.done.clone(),
            rollback: None,
        };
        self.journal(&journal);
        for (i, ps) in self.cp.steps.iter().enumerate() {
            let at = format!("step {}/{total}", i + 1);
            match self.stop_reason() {
                // Another holder may be acting: nothing more is written or done here.
                Ok(Some(why)) if self.lock.lost() => {
                    return (
                        ClusterOutcome::Held(vec![format!("{why}; stopped before {at}")]),
                        i,
                    );
                }
                Ok(Some(why)) => {
                    self.record("step", &ps.description, "held");
                    self.forget();
                    return (
                        ClusterOutcome::Held(vec![format!("{why}; stopped before {at}")]),
                        i,
                    );
                }
                Ok(None) => {}
                Err(why) => return self.roll_back(journal, i, why).await,
            }
            self.progress.step(self.id(), i, total, &ps.description);
            // Pruning removes a cluster no spec declares any more: it is meant to stop serving.
            let meant_to_stop = self.cp.action == Action::Prune;
            match self.step(&ps.step, meant_to_stop).await {
                Stepped::Done => {
                    if let Step::Op(op) = &ps.step {
                        journal.ran.push(op.clone());
                        self.journal(&journal);
                    }
                    self.record("step", &ps.description, "ok");
                    self.engine.emit(
                        self.cp,
                        self.revision,
                        EventKind::StepCompleted,
                        format!("{at}: {}", ps.description),
                    );
                }
                Stepped::Held(why) => {
                    // A lost holding writes nothing more: the journal is the next holder's.
                    if !self.lock.lost() {
                        self.record("step", &ps.description, "held");
                        self.forget();
                    }
                    return (ClusterOutcome::Held(vec![format!("{why} during {at}")]), i);
                }
                Stepped::Undecided(why) => {
                    self.record("step", &ps.description, "held");
                    // The journal stays: `keelson reject` rolls back from what ran.
                    return (ClusterOutcome::Held(vec![format!("{why} (at {at})")]), i);
                }
                Stepped::Refused(why) => {
                    self.record("step", &ps.description, "refused");
                    if journal.ran.len() > self.cp.done.len() {
                        // Part of this rollout ran (traffic may sit on a group that turned
                        // unhealthy since): undo it, under the same guard, rather than leave
                        // the cluster where the guard stopped it.
                        let why = format!(
                            "{at} `{}` refused by the traffic guard: {why}",
                            ps.description
                        );
                        return self.roll_back(journal, i, why).await;
                    }
                    self.forget();
                    return (
                        ClusterOutcome::Refused(format!("{at} `{}`: {why}", ps.description)),
                        i,
                    );
                }
                Stepped::Failed(why) => {
                    self.record("step", &ps.description, "failed");
                    // The failed operation may have half-happened: undo it too (every inverse
                    // is idempotent).
                    if let Step::Op(op) = &ps.step {
                        journal.ran.push(op.clone());
                    }
                    return self.roll_back(journal, i, why).await;
                }
            }
        }
        self.forget();
        self.end_analysis(crate::store::AnalysisState::Passed);
        (ClusterOutcome::Converged, total)
    }

    /// Runs one step: an operation after the guard passed against a fresh observation, or a
    /// gate polled until it answers.
    async fn step(&self, step: &Step, meant_to_stop: bool) -> Stepped {
        match step {
            Step::Gate(g @ Gate::Analysis { .. }) => self.analyse(g).await,
            Step::Gate(Gate::Verify { checks }) => self.verify(checks).await,
            Step::Gate(g) => self.gate(g).await,
            Step::Op(op) => {
                let live = match self.observe().await {
                    Ok(l) => l,
                    Err(e) => {
                        return Stepped::Failed(format!(
                            "cannot observe the target: {}",
                            e.chain()
                        ));
                    }
                };
                if let Some(why) = self.superseded.get() {
                    return Stepped::Held(why.clone());
                }
                let mut sim = Sim::of(live.as_ref());
                if let Err(why) = guard_step(&mut sim, step, meant_to_stop) {
                    return Stepped::Refused(why);
                }
                let resolved = match resolve(op, self.desired()) {
                    Ok(r) => self.marked(r),
                    Err(why) => return Stepped::Failed(why),
                };
                match self
                    .provider
                    .apply(self.target, self.id(), &resolved, &self.stamp)
                    .await
                {
                    Ok(()) => Stepped::Done,
                    Err(ProviderError::Superseded { newer, .. }) => {
                        Stepped::Held(self.superseded(newer))
                    }
                    Err(e) => Stepped::Failed(format!("`{op}` failed: {}", e.chain())),
                }
            }
        }
    }

    /// Polls a gate at the provider's interval until it passes or fails; stops early for a
    /// shutdown or a suspend.
    async fn gate(&self, gate: &Gate) -> Stepped {
        let poll = self.provider.capabilities().poll;
        let opened = tokio::time::Instant::now();
        let mut said = opened;
        loop {
            let open = opened.elapsed();
            let verdict = match gate {
                // Time alone: nothing to observe.
                Gate::Elapsed { .. } => gate.judge(None, open),
                _ => match self.observe().await {
                    Ok(live) => gate.judge(live.as_ref(), open),
                    // A target that does not answer is waited on like an unhealthy group.
                    Err(e) => match gate.judge(None, open) {
                        Verdict::Fail(why) => {
                            Verdict::Fail(format!("{why}; last observation failed: {}", e.chain()))
                        }
                        _ => Verdict::Wait(format!("cannot observe the target: {}", e.chain())),
                    },
                },
            };
            // Another holder acted meanwhile: whatever the gate says is for it to act on.
            if let Some(why) = self.superseded.get() {
                return Stepped::Held(why.clone());
            }
            match verdict {
                Verdict::Pass => return Stepped::Done,
                Verdict::Fail(why) => return Stepped::Failed(why),
                Verdict::Hold(why) => return Stepped::Undecided(why),
                Verdict::Wait(why) => {
                    if said.elapsed() >= SAY_EVERY {
                        self.progress.note(self.id(), &format!("waiting: {why}"));
                        said = tokio::time::Instant::now();
                    }
                }
            }
            match self.stop_reason() {
                Ok(Some(why)) => return Stepped::Held(why),
                Ok(None) => {}
                Err(why) => return Stepped::Failed(why),
            }
            let wait = match gate {
                // A pause sleeps to its end in slices, so a shutdown is not held up.
                Gate::Elapsed { duration } => duration
                    .to_std()
                    .saturating_sub(opened.elapsed())
                    .min(Duration::from_millis(100)),
                _ => poll,
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Rolls the cluster back after step `i` failed: the inverses of what ran, from the
    /// journal, in reverse order; journaled as it goes so a crash does not leave it half-done.
    async fn roll_back(
        &self,
        mut journal: Journal,
        i: usize,
        error: String,
    ) -> (ClusterOutcome, usize) {
        self.progress.note(
            self.id(),
            &format!("step {} failed: {error}; rolling back", i + 1),
        );
        // An analysis still running ends with its rollout (one that failed says so itself).
        self.end_analysis(crate::store::AnalysisState::Abandoned {
            why: format!("the rollout failed at step {}: {error}", i + 1),
        });
        let steps = rollback_of(&journal.ran, journal.health_timeout);
        journal.rollback = Some(RollbackProgress {
            error: error.clone(),
            steps,
            done: 0,
        });
        self.journal(&journal);
        let rollback = self.rollback_steps(journal).await;
        (ClusterOutcome::Failed { error, rollback }, i)
    }

    /// Finishes a rollback an earlier run did not (the plan's steps are what is left of it).
    async fn finish_rollback(&self) -> (ClusterOutcome, usize) {
        let journal = match self.engine.store.journal(&self.id().to_string()) {
            Ok(Some(j)) if j.rollback.is_some() => j,
            Ok(_) => {
                return (
                    ClusterOutcome::Failed {
                        error: "the journal of the interrupted rollback is gone".into(),
                        rollback: "nothing was done; plan again".into(),
                    },
                    0,
                );
            }
            Err(e) => {
                return (
                    ClusterOutcome::Failed {
                        error: crate::report::chain(&e),
                        rollback: "nothing was done".into(),
                    },
                    0,
                );
            }
        };
        let error = journal
            .rollback
            .as_ref()
            .map(|r| r.error.clone())
            .unwrap_or_default();
        let total = self.cp.steps.len();
        let rollback = self.rollback_steps(journal).await;
        (
            ClusterOutcome::Failed {
                error: format!("earlier: {error}"),
                rollback,
            },
            total,
        )
    }

    /// Runs the journal's rollback from where it stands; says what it did.
    async fn rollback_steps(&self, mut journal: Journal) -> String {
        let Some(mut rb) = journal.rollback.take() else {
            return "nothing to undo".into();
        };
        let mut did: Vec<String> = Vec::new();
        let summary = |did: &[String], tail: Option<String>| {
            let mut s = if did.is_empty() {
                "nothing to undo".to_string()
            } else {
                did.join("; ")
            };
            if let Some(t) = tail {
                s.push_str(&format!("; {t}"));
            }
            s
        };
        while rb.done < rb.steps.len() {
            let step = rb.steps[rb.done].clone();
            if let Ok(Some(why)) = self.stop_reason() {
                journal.rollback = Some(rb);
                self.journal(&journal);
                self.record("rollback", &format!("stopped: {why}"), "held");
                return summary(
                    &did,
                    Some(format!("stopped ({why}); the next apply finishes it")),
                );
            }
            self.progress.note(self.id(), &format!("rollback: {step}"));
            match self.step(&step, false).await {
                Stepped::Done => {
                    self.record("rollback", &step.to_string(), "ok");
                    did.push(step.to_string());
                    rb.done += 1;
                    journal.rollback = Some(rb.clone());
                    self.journal(&journal);
                }
                Stepped::Held(why) | Stepped::Undecided(why) => {
                    journal.rollback = Some(rb);
                    self.journal(&journal);
                    self.record("rollback", &step.to_string(), "held");
                    return summary(
                        &did,
                        Some(format!("stopped ({why}); the next apply finishes it")),
                    );
                }
                Stepped::Refused(why) | Stepped::Failed(why) => {
                    journal.rollback = Some(rb);
                    self.journal(&journal);
                    self.record("rollback", &format!("{step}: {why}"), "failed");
                    return summary(
                        &did,
                        Some(format!(
                            "could not `{step}`: {why}; the cluster stays as it is, and the next apply tries the rest of the rollback again"
                        )),
                    );
                }
            }
        }
        self.forget();
        self.record("rollback", &summary(&did, None), "ok");
        summary(&did, None)
    }
}

/// The operation as the provider takes it: specs by reference resolved to the desired cluster,
/// which must be the spec the plan named.
pub fn resolve(op: &Op, desired: Option<&Arc<DesiredCluster>>) -> Result<ProviderOp, String> {
    op.clone().map_spec(|spec| match desired {
        Some(d) if d.spec_hash == spec.spec_hash => Ok(Arc::clone(d)),
        Some(d) => Err(format!(
            "`{op}` names spec {} ({}), but the cluster's spec is now {} ({}); plan again",
            spec.spec_hash, spec.version, d.spec_hash, d.version
        )),
        None => Err(format!(
            "`{op}` needs the cluster's spec, and no spec declares the cluster"
        )),
    })
}
