//! `keelson up`: the GitOps loop. Fetches the branch, applies a revision only if the whole of
//! it validates, reconciles on new revisions, webhooks and a drift timer, and obeys suspends.

mod pace;
pub mod pull_request;
pub mod schedule;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tracing::{info, warn};

use crate::engine::{ClusterOutcome, ClusterReport, Engine, Progress};
use crate::model::{ClusterId, DesiredState, ObservedState};
use crate::observe::{Providers, observe};
use crate::plan::{Selection, plan};
use crate::server::{ClusterStatus, Shared};
use crate::source::SourceSet;
use crate::source::git::GitSource;

/// Where the daemon reads specs.
#[derive(Debug, Clone)]
pub enum Source {
    /// A Git branch.
    Git(GitSource),
    /// A working directory (with `--watch-files`).
    Dir(PathBuf),
}

impl Source {
    /// For status.
    pub fn describe(&self) -> String {
        match self {
            Self::Git(g) => format!(
                "{} ({}){}",
                crate::report::scrub_urls(&g.url),
                g.branch,
                g.path
                    .as_ref()
                    .map(|p| format!(" path {}", p.display()))
                    .unwrap_or_default()
            ),
            Self::Dir(d) => format!("{} (working directory)", d.display()),
        }
    }

    /// Fetches and reads the newest revision: its id and files. Blocking.
    fn fetch(&self, last: Option<&str>) -> Result<(String, Option<SourceSet>), String> {
        match self {
            Self::Git(g) => {
                let commit = g.fetch().map_err(|e| e.to_string())?;
                if last == Some(commit.as_str()) {
                    return Ok((commit, None));
                }
                let files = g.read(&commit).map_err(|e| e.to_string())?;
                Ok((commit, Some(files)))
            }
            Self::Dir(d) => {
                let files = crate::source::read_dir(d).map_err(|e| e.to_string())?;
                let rev = files.content_revision();
                if last == Some(rev.as_str()) {
                    return Ok((rev, None));
                }
                Ok((rev, Some(files)))
            }
        }
    }
}

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Poll interval for new commits.
    pub interval: Duration,
    /// Drift check interval (jittered by up to a tenth).
    pub drift_interval: Duration,
    /// Longest a shutdown waits for steps in flight.
    pub shutdown_grace: Duration,
}

/// Logs steps with tracing, and asks for a fresh look for the dashboard at each.
struct TracingProgress(Arc<Shared>);

impl Progress for TracingProgress {
    fn step(&self, cluster: &ClusterId, index: usize, total: usize, description: &str) {
        info!(cluster = %cluster, step = index + 1, of = total, "{description}");
        self.0.refresh.notify_one();
    }
    fn done(&self, cluster: &ClusterId, outcome: &str, ok: bool) {
        self.0.refresh.notify_one();
        if ok {
            info!(cluster = %cluster, "{outcome}");
        } else {
            warn!(cluster = %cluster, "{outcome}");
        }
    }
    fn note(&self, cluster: &ClusterId, message: &str) {
        info!(cluster = %cluster, "{message}");
    }
}

fn jitter(d: Duration) -> Duration {
    d + d.mul_f64(fastrand::f64() * 0.1)
}

/// The batches in flight, the clusters each runs (to free them if its task dies), and where
/// each cluster reports as soon as it ends (the schedule frees it at once).
struct Batches {
    set: tokio::task::JoinSet<Batch>,
    running: std::collections::HashMap<tokio::task::Id, Vec<ClusterId>>,
    done: tokio::sync::mpsc::UnboundedSender<ClusterReport>,
}

/// A reconcile of some clusters, running.
type Batch = (
    Vec<ClusterId>,
    crate::engine::ApplyReport,
    std::time::Duration,
);

/// Runs the loop until `shutdown` resolves. Each cluster is reconciled on its own schedule
/// with its own backoff ([`schedule`]): a failing cluster does not delay the others, and a
/// revision that changes a cluster supersedes its retry at once. Clusters due together run
/// as one batch; batches run side by side.
pub async fn run(
    source: Source,
    cfg: LoopConfig,
    shared: Arc<Shared>,
    engine: Arc<Engine>,
    providers: Providers,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut last_fetched: Option<String> = None;
    let mut desired: Option<(Arc<DesiredState>, String)> = None;
    // Unchanged files are not parsed again from one revision to the next. Spec hashes seal
    // secrets under the store's key, as every other keelson of this installation does.
    let mut cache = match shared.store.spec_key() {
        Ok(key) => crate::pipeline::Cache::keyed(key),
        Err(e) => {
            tracing::error!("cannot read the spec key: {}", crate::report::chain(&e));
            return;
        }
    };
    let heartbeat = tokio::spawn(heartbeat(shared.clone(), engine.clone()));
    let mut unrecorded: Option<(Option<String>, String)> = None;
    let mut poll = tokio::time::interval(cfg.interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drift_at = tokio::time::Instant::now() + jitter(cfg.drift_interval);
    let mut sched = schedule::Schedule::new(schedule::Backoff::default());
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<ClusterReport>();
    let mut batches = Batches {
        set: tokio::task::JoinSet::new(),
        running: Default::default(),
        done: done_tx,
    };
    let mut outcomes: std::collections::BTreeMap<ClusterId, String> = Default::default();
    let mut fetch_now = true;
    let mut pacer = pace::Pacer::new(std::time::Instant::now());
    shared.update_status(|st| {
        st.source = source.describe();
    });
    loop {
        let wake = sched.next_wake().map(tokio::time::Instant::from_std);
        let looks_due = pacer.due().map(tokio::time::Instant::from_std);
        let mut finished: Option<(Vec<ClusterId>, Option<Batch>)> = None;
        tokio::select! {
            () = &mut shutdown => break,
            _ = poll.tick() => fetch_now = true,
            () = shared.trigger.notified() => {
                fetch_now = true;
                sched.on(schedule::Event::Sync { force: true }, std::time::Instant::now());
            }
            () = tokio::time::sleep_until(drift_at) => {
                sched.on(schedule::Event::Sync { force: false }, std::time::Instant::now());
                drift_at = tokio::time::Instant::now() + jitter(cfg.drift_interval);
            }
            () = async { match wake { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {}
            () = shared.refresh.notified() => {
                if pacer.request(std::time::Instant::now())
                    && let Some((d, rev)) = &desired
                {
                    publish(&shared, &providers, d, rev, &mut pacer).await;
                }
                continue;
            }
            () = async { match looks_due { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                match &desired {
                    Some((d, rev)) => publish(&shared, &providers, d, rev, &mut pacer).await,
                    // Nothing to look at yet: the request is spent, not left due for ever.
                    None => pacer.ran(std::time::Instant::now(), std::time::Duration::ZERO),
                }
                continue;
            }
            Some(r) = done_rx.recv() => {
                reported(&shared, &r, &mut sched, &mut outcomes);
                continue;
            }
            Some(done) = batches.set.join_next_with_id(), if !batches.set.is_empty() => {
                finished = Some(match done {
                    Ok((id, b)) => (batches.running.remove(&id).unwrap_or_default(), Some(b)),
                    Err(e) => {
                        warn!("a reconcile task ended abnormally: {e}");
                        (batches.running.remove(&e.id()).unwrap_or_default(), None)
                    }
                });
            }
        }
        if let Some((ids, batch)) = finished {
            // Reports still queued first, then whatever the batch never reported.
            while let Ok(r) = done_rx.try_recv() {
                reported(&shared, &r, &mut sched, &mut outcomes);
            }
            let now = std::time::Instant::now();
            for id in ids {
                if sched.entry(&id).is_some_and(|e| e.running) {
                    sched.on(
                        schedule::Event::Finished {
                            cluster: id,
                            ok: batch.is_some(),
                        },
                        now,
                    );
                }
            }
            if let (Some(batch), Some((d, rev))) = (batch, &desired) {
                after_batch(&shared, &providers, d, rev, &batch, &sched, &outcomes).await;
            }
            continue;
        }
        if !std::mem::take(&mut fetch_now) {
            if let Some((d, rev)) = &desired {
                start_due(&engine, d, rev, &mut sched, &mut batches, &shared);
            }
            continue;
        }
        // A revision this replica could not record (the store was away): recorded now,
        // unless another replica moved on meanwhile.
        if let Some((from, to)) = &unrecorded
            && shared
                .store
                .advance_last_good_revision(from.as_deref(), to)
                .is_ok()
        {
            unrecorded = None;
        }
        // Fetch: cheap when nothing moved (one round trip, same commit, nothing parsed).
        // What the replicas have in force now, read first: the fetch can only be newer.
        let read = shared.store.last_good_revision();
        // Unread, it is unknown: nothing is recorded from it, and the next poll reads the same
        // commit again to record it then.
        let fleet_read = read.is_ok();
        let fleet_revision = read.ok().flatten();
        let src = source.clone();
        let last = last_fetched.clone();
        let fetched = tokio::task::spawn_blocking(move || src.fetch(last.as_deref()))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match fetched {
            Ok((rev, Some(files))) => {
                last_fetched = Some(rev.clone());
                let span = tracing::info_span!("revision", revision = %rev);
                let _enter = span.enter();
                let checked = crate::pipeline::check_cached(files, &mut cache);
                match checked.desired {
                    Some(d) => {
                        info!(clusters = d.clusters.len(), "new revision is valid");
                        let recorded = if fleet_read {
                            shared
                                .store
                                .advance_last_good_revision(fleet_revision.as_deref(), &rev)
                        } else {
                            last_fetched = None;
                            Ok(true)
                        };
                        match recorded {
                            Ok(true) => {}
                            Ok(false) => {
                                info!("another replica moved the revision in force meanwhile")
                            }
                            Err(e) => {
                                warn!("cannot record the revision: {}", crate::report::chain(&e));
                                unrecorded = Some((fleet_revision.clone(), rev.clone()));
                            }
                        }
                        let d = Arc::new(d);
                        if let Ok(mut known) = shared.desired.write() {
                            *known = Some(d.clone());
                        }
                        // New destinations: a new notifier; the old one drains in the back.
                        if shared.events.current().is_none_or(|n| !n.serves(&d)) {
                            let n = Arc::new(crate::notify::Notifier::start(
                                &d,
                                &crate::notify::Options::from_env(),
                            ));
                            if let Some(old) = shared.events.set(n) {
                                tokio::spawn(async move {
                                    old.flush(Duration::from_secs(30)).await;
                                });
                            }
                        }
                        sched.on(
                            schedule::Event::Revision {
                                clusters: schedule::desired(&d),
                            },
                            std::time::Instant::now(),
                        );
                        desired = Some((d, rev.clone()));
                        shared.board.set_invalid(None);
                        // Which pull request brought it, for the dashboard; best effort.
                        if let (Some(forge), Some(repo)) = (&shared.forge, &shared.repository) {
                            let (forge, repo, board, r) = (
                                forge.clone(),
                                repo.clone(),
                                shared.board.clone(),
                                rev.clone(),
                            );
                            tokio::spawn(async move {
                                if let Ok(pulls) = forge.pulls_of_commit(&repo, &r).await
                                    && let Some(p) = pulls.into_iter().next()
                                {
                                    board.set_pull(&r, p);
                                }
                            });
                        }
                        shared.update_status(|st| {
                            st.fetched = Some(rev.clone());
                            st.diagnostics.clear();
                            st.last_error = None;
                        });
                    }
                    None => {
                        let have_good = desired.is_some();
                        let first = checked
                            .diagnostics
                            .iter()
                            .find(|d| d.is_error())
                            .map(|d| format!("{d}"))
                            .unwrap_or_default();
                        warn!(
                            errors = checked.error_count(),
                            "revision is invalid; keeping the last good revision: {first}"
                        );
                        shared.board.set_invalid(Some(first.clone()));
                        if shared.events.first_time(&format!("invalid {rev}")) {
                            shared.events.emit(
                                crate::notify::Event::new(
                                    crate::notify::EventKind::RevisionInvalid,
                                    crate::clock::now(),
                                    format!(
                                        "revision {rev} is invalid ({} errors), e.g. {first}; {}",
                                        checked.error_count(),
                                        in_force(have_good)
                                    ),
                                )
                                .revision(&rev),
                            );
                        }
                        shared.update_status(|st| {
                            st.fetched = Some(rev.clone());
                            st.last_result = "invalid".into();
                            st.last_error = Some(format!(
                                "revision {rev} is invalid ({} errors), e.g. {first}; {}",
                                checked.error_count(),
                                in_force(have_good)
                            ));
                            st.diagnostics = checked.diagnostics.clone();
                        });
                        shared.metrics.last_sync_success.set(0);
                    }
                }
            }
            Ok((_, None)) => {}
            Err(e) => {
                warn!("fetch failed: {e}");
                let have_good = desired.is_some();
                shared.update_status(|st| {
                    st.last_result = "fetch-error".into();
                    st.last_error = Some(format!("{e}; {}", in_force(have_good)));
                });
                shared.metrics.last_sync_success.set(0);
            }
        }
        let Some((d, rev)) = &desired else { continue };
        start_due(&engine, d, rev, &mut sched, &mut batches, &shared);
    }
    if !batches.set.is_empty() {
        info!("shutting down: stopping at the next step boundary");
        engine.stop.store(true, Ordering::Release);
        let drained = tokio::time::timeout(cfg.shutdown_grace, async {
            while batches.set.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                "steps did not stop within {:?}; exiting anyway",
                cfg.shutdown_grace
            );
            batches.set.abort_all();
        }
    }
    heartbeat.abort();
    info!("stopped");
}

/// Says this replica is alive every few seconds, learns how many share the store (beside
/// others, a replica starts at its own place in the list and acts only on the revision in
/// force), and counts the locks it holds.
async fn heartbeat(shared: Arc<Shared>, engine: Arc<Engine>) {
    let me = &engine.owner;
    let name = me
        .command
        .strip_prefix("keelson up --replica ")
        .map_or_else(|| format!("{}/{}", me.host, me.pid), str::to_string);
    let label = crate::server::metrics::ReplicaLabel {
        replica: name.clone(),
    };
    let mut tick = tokio::time::interval(crate::engine::LOCK_TTL / 3);
    let mut away = false;
    loop {
        tick.tick().await;
        match shared.store.heartbeat(&me.token, crate::engine::LOCK_TTL) {
            Ok(n) => {
                // The store is back: what stopped for it (and backs off) is due at once.
                if std::mem::take(&mut away) {
                    info!("the state store answers again");
                    shared.trigger.notify_one();
                }
                engine.slots.set_replicas(n);
                shared
                    .metrics
                    .replicas
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            Err(e) => {
                away = true;
                tracing::warn!(
                    "cannot say this replica is alive: {}",
                    crate::report::chain(&e)
                );
            }
        }
        if let Ok(locks) = shared.store.locks() {
            let held = locks.iter().filter(|l| l.owner.token == me.token).count();
            shared
                .metrics
                .locks_held
                .get_or_create(&label)
                .set(i64::try_from(held).unwrap_or(i64::MAX));
        }
    }
}

/// Starts a batch of the clusters due now, if any.
fn start_due(
    engine: &Arc<Engine>,
    d: &Arc<DesiredState>,
    rev: &str,
    sched: &mut schedule::Schedule,
    batches: &mut Batches,
    shared: &Arc<Shared>,
) {
    let now = std::time::Instant::now();
    let due = sched.due(now);
    if due.is_empty() {
        return;
    }
    for id in &due {
        sched.on(
            schedule::Event::Started {
                cluster: id.clone(),
            },
            now,
        );
    }
    // Reconciled in a task, so the loop goes on (other clusters, new commits) and a shutdown
    // can stop it at the next step boundary; each cluster is reported as soon as it ends.
    let (e, d2, r2, tx, ids, sh) = (
        engine.clone(),
        d.clone(),
        rev.to_string(),
        batches.done.clone(),
        due.clone(),
        shared.clone(),
    );
    let handle = batches.set.spawn(async move {
        let started = std::time::Instant::now();
        let report = e
            .apply_reporting(
                &d2,
                &r2,
                &Selection::clusters(ids.clone()),
                None,
                Arc::new(TracingProgress(sh)),
                Some(tx),
            )
            .await;
        (ids, report, started.elapsed())
    });
    batches.running.insert(handle.id(), due);
}

/// One cluster's reconcile ended: free it in the schedule (backing off if it failed) and
/// count it.
fn reported(
    shared: &Shared,
    r: &ClusterReport,
    sched: &mut schedule::Schedule,
    outcomes: &mut std::collections::BTreeMap<ClusterId, String>,
) {
    let event = match &r.outcome {
        // Another holder has it, or this replica lost it: not the cluster's failure, and
        // the holder may be gone by the time its lock expires.
        ClusterOutcome::Locked(_) | ClusterOutcome::Interrupted(_) => schedule::Event::Deferred {
            cluster: r.id.clone(),
            after: crate::engine::LOCK_TTL / 5,
        },
        o => schedule::Event::Finished {
            cluster: r.id.clone(),
            ok: !o.is_failure(),
        },
    };
    sched.on(event, std::time::Instant::now());
    let unchanged = r.steps == 0 && r.outcome == ClusterOutcome::Converged;
    outcomes.insert(
        r.id.clone(),
        if unchanged {
            "unchanged".into()
        } else {
            r.outcome.to_string()
        },
    );
    if unchanged {
        return;
    }
    let result = match &r.outcome {
        ClusterOutcome::Converged => "ok",
        ClusterOutcome::Held(_) => "held",
        ClusterOutcome::Refused(_)
        | ClusterOutcome::Locked(_)
        | ClusterOutcome::Foreign(_)
        | ClusterOutcome::Interrupted(_) => "refused",
        ClusterOutcome::Failed { .. } => "failed",
    };
    shared
        .metrics
        .actuations
        .get_or_create(&crate::server::metrics::ResultLabel {
            result: result.into(),
        })
        .inc();
    shared.metrics.steps.inc_by(r.steps as u64);
}

/// Observes and plans against the store's policy: what the status and the dashboard show.
async fn look(
    shared: &Shared,
    providers: &Providers,
    d: &DesiredState,
    rev: &str,
) -> (ObservedState, crate::plan::Policy, crate::plan::Plan) {
    let observed = observe(d, providers).await;
    let policy = shared
        .store
        .policy(crate::clock::now(), None)
        .unwrap_or_else(|_| crate::plan::Policy::at(crate::clock::now()));
    let plan = plan(d, &observed, &policy, rev, &Selection::default());
    (observed, policy, plan)
}

/// Puts a look on the dashboard, keeping its note of an invalid newest revision.
fn show(shared: &Shared, d: &Arc<DesiredState>, observed: ObservedState, plan: crate::plan::Plan) {
    let invalid = shared.board.current().and_then(|s| s.invalid.clone());
    shared.board.publish(crate::dashboard::Snapshot {
        desired: d.clone(),
        observed,
        plan,
        invalid,
        journals: crate::dashboard::journals(shared.store.as_ref()),
    });
}

/// Observes and plans again for the dashboard (a step began or ended), paced.
async fn publish(
    shared: &Shared,
    providers: &Providers,
    d: &Arc<DesiredState>,
    rev: &str,
    pacer: &mut pace::Pacer,
) {
    let started = std::time::Instant::now();
    let (observed, _, plan) = look(shared, providers, d, rev).await;
    show(shared, d, observed, plan);
    pacer.ran(started, started.elapsed());
}

/// After a batch: refresh metrics, status and the dashboard.
async fn after_batch(
    shared: &Shared,
    providers: &Providers,
    d: &Arc<DesiredState>,
    rev: &str,
    batch: &Batch,
    sched: &schedule::Schedule,
    outcomes: &std::collections::BTreeMap<ClusterId, String>,
) {
    let (_, report, took) = batch;
    shared.metrics.reconcile_seconds.observe(took.as_secs_f64());
    let failed = report.failed();
    // What the clusters look like now, for status and for the next plan's count.
    let (observed, policy, after) = look(shared, providers, d, rev).await;
    let healed = report
        .clusters
        .iter()
        .filter(|c| c.drift && c.outcome == ClusterOutcome::Converged)
        .count();
    if healed > 0 {
        info!(clusters = healed, "drift healed");
        shared.metrics.drift_healed.inc_by(healed as u64);
    }
    shared.metrics.plan_changes.set(
        i64::try_from(
            after
                .clusters
                .iter()
                .filter(|c| {
                    !matches!(
                        c.action,
                        crate::plan::Action::Orphan | crate::plan::Action::Held
                    )
                })
                .count(),
        )
        .unwrap_or(0),
    );
    let unhappy = after
        .clusters
        .iter()
        .filter(|c| {
            c.blocked
                .iter()
                .any(|b| matches!(b, crate::plan::Block::Unhappy { .. }))
        })
        .count();
    shared
        .metrics
        .unhappy
        .set(i64::try_from(unhappy).unwrap_or(0));
    shared
        .metrics
        .suspends
        .set(i64::try_from(policy.suspends.len()).unwrap_or(0));
    shared.metrics.revision.clear();
    shared
        .metrics
        .revision
        .get_or_create(&crate::server::metrics::RevisionLabel {
            revision: rev.to_string(),
        })
        .set(1);
    shared
        .metrics
        .last_sync
        .set(jiff::Timestamp::now().as_millisecond() as f64 / 1000.0);
    shared.metrics.last_sync_success.set(i64::from(!failed));
    if sched.failing() > 0 {
        warn!(
            failing = sched.failing(),
            "clusters failing, each retried on its own backoff"
        );
    }
    let notifications = shared
        .events
        .current()
        .map(|n| n.status())
        .unwrap_or_default();
    for n in &notifications {
        let label = crate::server::metrics::DestinationLabel {
            destination: format!("{}/{}", n.environment, n.name),
        };
        shared
            .metrics
            .notifications_sent
            .get_or_create(&label)
            .set(i64::try_from(n.sent).unwrap_or(i64::MAX));
        shared
            .metrics
            .notification_dead_letters
            .get_or_create(&label)
            .set(i64::try_from(n.dead_letters).unwrap_or(i64::MAX));
    }
    shared.update_status(|st| {
        st.notifications = notifications;
        st.revision = Some(rev.to_string());
        st.last_sync = Some(crate::clock::now());
        st.ready = st.ready || !failed;
        st.last_result = if failed { "failed".into() } else { "ok".into() };
        if failed {
            st.last_error = report
                .clusters
                .iter()
                .find(|c| c.outcome.is_failure())
                .map(|c| format!("{}: {}", c.id, c.outcome));
        } else if st.diagnostics.is_empty() {
            st.last_error = None;
        }
        st.clusters = d
            .clusters
            .values()
            .map(|c| ClusterStatus {
                cluster: c.id.to_string(),
                desired_version: c.version.clone(),
                server_groups: observed
                    .clusters
                    .get(&c.id)
                    .map(|l| l.server_groups.iter().map(|g| json!({"name": g.name, "version": g.version, "enabled": g.enabled, "weight": g.weight, "healthy": g.healthy(), "instances": g.instances.len()})).collect())
                    .unwrap_or_default(),
                outcome: outcomes.get(&c.id).cloned().unwrap_or_else(|| "unchanged".into()),
                controls: crate::plan::describe(
                    c,
                    &d.environments.get(&c.id.environment).map(|e| e.flapping).unwrap_or_default(),
                    &policy,
                ),
                failures: sched.entry(&c.id).map_or(0, |e| e.failures),
            })
            .collect();
    });
    show(shared, d, observed, after);
}

/// What stays in force after a failed fetch or an invalid revision, for the status.
fn in_force(have_good: bool) -> &'static str {
    if have_good {
        "the last good revision stays in force"
    } else {
        "nothing is applied until a valid revision is fetched"
    }
}
