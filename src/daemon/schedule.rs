//! Per-cluster scheduling for the daemon: each cluster has its own due time and backoff, so one
//! failing cluster never delays the others, and a revision that changes a cluster's desired
//! state supersedes its pending retry at once (newest commit wins). Clock-free: `now` is passed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::model::{ClusterId, SpecHash};
use crate::spec::{AppName, EnvName};

/// How retries back off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub first: Duration,
    /// The cap: each further failure doubles the delay up to this.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(2),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The starting delay; capped too, so `first > max` cannot exceed `max`.
    fn start(&self) -> Duration {
        self.first.min(self.max)
    }

    /// The delay after `d`: doubled, capped, never overflowing.
    fn next(&self, d: Duration) -> Duration {
        d.saturating_mul(2).min(self.max)
    }
}

/// What the loop tells the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new valid revision: every desired cluster with its hash, its app, and for each environment the environments that depend on it directly.
    Revision {
        /// Every desired cluster; clusters absent from it are dropped.
        clusters: Vec<Desired>,
    },
    /// Someone asked for a sync, a webhook arrived or the drift timer fired: every cluster not waiting out a failure is due now; `force` makes failing ones due too.
    Sync {
        /// Whether failing clusters are due now too, cutting their backoff short.
        force: bool,
    },
    /// A reconcile of `cluster` started.
    Started {
        /// The cluster.
        cluster: ClusterId,
    },
    /// A reconcile of `cluster` ended; `ok` false when it failed (it is retried with backoff).
    Finished {
        /// The cluster.
        cluster: ClusterId,
        /// Whether it succeeded.
        ok: bool,
    },
    /// A reconcile of `cluster` did not get to act (another holder had its lock, or this
    /// replica lost it): due again after `after`, with no failure counted.
    Deferred {
        /// The cluster.
        cluster: ClusterId,
        /// How long until it is tried again.
        after: Duration,
    },
}

/// One desired cluster as the schedule needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The cluster.
    pub id: ClusterId,
    /// Its application: promotion only reaches clusters of the same app.
    pub app: AppName,
    /// Its desired state's hash: a change supersedes any pending retry.
    pub hash: SpecHash,
    /// Environments whose clusters of the same app wait on this one's environment (dependsOn).
    pub dependents: Vec<EnvName>,
}

/// What the schedule needs of a revision: each cluster with its hash, app and the
/// environments that wait on its environment.
pub fn desired(d: &crate::model::DesiredState) -> Vec<Desired> {
    d.clusters
        .values()
        .map(|c| Desired {
            id: c.id.clone(),
            app: c.app.clone(),
            hash: c.hash.clone(),
            dependents: d
                .environments
                .values()
                .filter(|e| e.depends_on.contains(&c.id.environment))
                .map(|e| e.name.clone())
                .collect(),
        })
        .collect()
}

/// Where one cluster stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its application.
    pub app: AppName,
    /// The hash of its latest desired state.
    pub hash: SpecHash,
    /// Environments promoted when it finishes ok.
    pub dependents: Vec<EnvName>,
    /// When it is next due; `None` when converged (waiting for the next Sync or Revision).
    pub due: Option<Instant>,
    /// Whether a reconcile is in flight.
    pub running: bool,
    /// Failures in a row since the last success or change of desired state.
    pub failures: u32,
    /// The delay the next failure waits.
    pub delay: Duration,
    /// The desired state changed mid-reconcile: due again as soon as the step in flight ends.
    superseded: bool,
    /// Dropped from the latest revision while running: removed when it finishes.
    removed: bool,
    /// A sync or a promotion came while it ran: due again once it finishes (ok or not).
    pending: bool,
}

impl Entry {
    /// Due at `now`, unless already due earlier.
    fn due_by(&mut self, now: Instant) {
        self.due = Some(self.due.map_or(now, |d| d.min(now)));
    }
}

/// Every cluster's schedule, with two indexes kept beside it so that the loop's questions (when
/// to wake, what is due, whom a success promotes) cost the answer, not a scan of every cluster:
/// a reconcile of thousands of clusters reports each one, and each report asks them again.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    backoff: Backoff,
    clusters: BTreeMap<ClusterId, Entry>,
    /// `(due, id)` of every entry that is due at some time and not running.
    wakes: BTreeSet<(Instant, ClusterId)>,
    /// Each application's clusters.
    by_app: BTreeMap<AppName, BTreeSet<ClusterId>>,
}

/// When an entry wakes the loop: due, and not running.
fn wake_of(e: &Entry) -> Option<Instant> {
    if e.running { None } else { e.due }
}

impl Schedule {
    /// An empty schedule that retries with `backoff`.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            ..Self::default()
        }
    }

    /// Changes one entry, keeping the wake index true.
    fn change<R>(&mut self, id: &ClusterId, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        let e = self.clusters.get_mut(id)?;
        let before = wake_of(e);
        let r = f(e);
        let after = wake_of(e);
        if before != after {
            if let Some(t) = before {
                self.wakes.remove(&(t, id.clone()));
            }
            if let Some(t) = after {
                self.wakes.insert((t, id.clone()));
            }
        }
        Some(r)
    }

    /// Drops one entry and its index rows.
    fn remove(&mut self, id: &ClusterId) {
        let Some(e) = self.clusters.remove(id) else {
            return;
        };
        if let Some(t) = wake_of(&e) {
            self.wakes.remove(&(t, id.clone()));
        }
        if let Some(ids) = self.by_app.get_mut(&e.app) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_app.remove(&e.app);
            }
        }
    }

    /// Builds both indexes again, after a change to every entry.
    fn reindex(&mut self) {
        self.wakes = self
            .clusters
            .iter()
            .filter_map(|(id, e)| wake_of(e).map(|t| (t, id.clone())))
            .collect();
        self.by_app.clear();
        for (id, e) in &self.clusters {
            self.by_app
                .entry(e.app.clone())
                .or_default()
                .insert(id.clone());
        }
    }

    /// Applies an event at `now`.
    pub fn on(&mut self, event: Event, now: Instant) {
        match event {
            Event::Revision { clusters } => self.revision(clusters, now),
            Event::Sync { force } => {
                for e in self.clusters.values_mut() {
                    if force || e.failures == 0 {
                        if e.running {
                            // A pin or a veto made during a rollout: look again once it stops.
                            e.pending = true;
                        } else {
                            e.due_by(now);
                        }
                    }
                }
                self.reindex();
            }
            Event::Started { cluster } => {
                self.change(&cluster, |e| {
                    e.running = true;
                    e.due = None;
                });
            }
            Event::Finished { cluster, ok } => self.finished(&cluster, ok, now),
            Event::Deferred { cluster, after } => {
                if self.clusters.get(&cluster).is_some_and(|e| e.removed) {
                    self.remove(&cluster);
                    return;
                }
                self.change(&cluster, |e| {
                    e.running = false;
                    e.pending = false;
                    let at = if std::mem::take(&mut e.superseded) {
                        now
                    } else {
                        now.checked_add(after).unwrap_or(now)
                    };
                    e.due_by(at);
                });
            }
        }
    }

    fn revision(&mut self, desired: Vec<Desired>, now: Instant) {
        let start = self.backoff.start();
        let wanted: BTreeMap<ClusterId, Desired> =
            desired.into_iter().map(|d| (d.id.clone(), d)).collect();
        // A running cluster must stay until its Finished arrives, or that event would be lost.
        self.clusters.retain(|id, e| {
            let keep = wanted.contains_key(id);
            e.removed = !keep;
            keep || e.running
        });
        for (id, d) in wanted {
            let Some(e) = self.clusters.get_mut(&id) else {
                let entry = Entry {
                    app: d.app,
                    hash: d.hash,
                    dependents: d.dependents,
                    due: Some(now),
                    running: false,
                    failures: 0,
                    delay: start,
                    superseded: false,
                    removed: false,
                    pending: false,
                };
                self.clusters.insert(id, entry);
                continue;
            };
            e.app = d.app;
            e.dependents = d.dependents;
            if e.hash == d.hash {
                continue;
            }
            e.hash = d.hash;
            if e.running {
                e.superseded = true;
            } else {
                // Newest commit wins: a retry of the old state is no longer worth waiting for.
                e.failures = 0;
                e.delay = start;
                e.due_by(now);
            }
        }
        self.reindex();
    }

    fn finished(&mut self, id: &ClusterId, ok: bool, now: Instant) {
        let start = self.backoff.start();
        let backoff = self.backoff;
        let Some(e) = self.clusters.get(id) else {
            return;
        };
        if e.removed {
            self.remove(id);
            return;
        }
        let promote = self.change(id, |e| {
            e.running = false;
            if e.superseded {
                // The step in flight applied an old state; apply the new one next, whatever
                // happened. No promotion either: dependents wait for this environment's new
                // state.
                e.superseded = false;
                e.failures = 0;
                e.delay = start;
                e.due = Some(now);
                return None;
            }
            let pending = std::mem::take(&mut e.pending);
            if !ok {
                e.failures = e.failures.saturating_add(1);
                // An unrepresentable instant retries at once rather than never.
                e.due = Some(now.checked_add(e.delay).unwrap_or(now));
                e.delay = backoff.next(e.delay);
                return None;
            }
            e.failures = 0;
            e.delay = start;
            e.due = pending.then_some(now);
            (!e.dependents.is_empty()).then(|| (e.app.clone(), e.dependents.clone()))
        });
        let Some(Some((app, dependents))) = promote else {
            return;
        };
        let others: Vec<ClusterId> = self
            .by_app
            .get(&app)
            .map(|ids| {
                ids.iter()
                    .filter(|o| dependents.contains(&o.environment))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for other in others {
            self.change(&other, |o| {
                if o.running {
                    o.pending = true;
                } else {
                    o.due_by(now);
                }
            });
        }
    }

    /// Clusters due at `now` and not running, in id order.
    pub fn due(&self, now: Instant) -> Vec<ClusterId> {
        let mut due: Vec<ClusterId> = self
            .wakes
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| id.clone())
            .collect();
        due.sort_unstable();
        due
    }

    /// When the next cluster not running falls due, if any.
    pub fn next_wake(&self) -> Option<Instant> {
        self.wakes.first().map(|(t, _)| *t)
    }

    /// One cluster's entry.
    pub fn entry(&self, id: &ClusterId) -> Option<&Entry> {
        self.clusters.get(id)
    }

    /// Clusters currently failing (failures > 0).
    pub fn failing(&self) -> usize {
        self.clusters.values().filter(|e| e.failures > 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ClusterName;
    use crate::spec::TargetName;

    fn id(env: &str, name: &str) -> ClusterId {
        ClusterId {
            environment: EnvName::new(env).unwrap(),
            target: TargetName::new("local").unwrap(),
            name: ClusterName::parse(name).unwrap(),
        }
    }

    fn want(env: &str, name: &str, app: &str, hash: &str, dependents: &[&str]) -> Desired {
        Desired {
            id: id(env, name),
            app: AppName::new(app).unwrap(),
            hash: SpecHash::from_observed(hash),
            dependents: dependents
                .iter()
                .map(|d| EnvName::new(*d).unwrap())
                .collect(),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Runs one reconcile of `c` at `at` and reports it.
    fn run(s: &mut Schedule, c: &ClusterId, ok: bool, at: Instant) {
        s.on(Event::Started { cluster: c.clone() }, at);
        s.on(
            Event::Finished {
                cluster: c.clone(),
                ok,
            },
            at,
        );
    }

    fn revision(s: &mut Schedule, clusters: Vec<Desired>, at: Instant) {
        s.on(Event::Revision { clusters }, at);
    }

    #[test]
    fn failing_cluster_backs_off_without_delaying_others() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Backoff {
            first: secs(2),
            max: secs(10),
        });
        let bad = id("dev", "web");
        let good = id("dev", "api");
        let clusters = vec![
            want("dev", "web", "web", "h1", &[]),
            want("dev", "api", "api", "h1", &[]),
        ];
        revision(&mut s, clusters, t0);
        assert_eq!(s.due(t0), vec![good.clone(), bad.clone()]);
        run(&mut s, &good, true, t0);
        let mut t = t0;
        for expected in [2, 4, 8, 10, 10] {
            run(&mut s, &bad, false, t);
            assert_eq!(s.entry(&bad).unwrap().due, Some(t + secs(expected)));
            // A Sync before the retry is due makes the healthy cluster due, not the failing one.
            s.on(Event::Sync { force: false }, t + secs(1));
            assert_eq!(s.due(t + secs(1)), vec![good.clone()]);
            run(&mut s, &good, true, t + secs(1));
            assert!(
                s.due(t + secs(expected) - Duration::from_millis(1))
                    .is_empty()
            );
            t += secs(expected);
            assert_eq!(s.due(t), vec![bad.clone()]);
        }
        assert_eq!(s.entry(&bad).unwrap().failures, 5);
        assert_eq!(s.failing(), 1);
    }

    #[test]
    fn a_cluster_another_holder_has_is_tried_again_soon_with_no_failure_counted() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Backoff::default());
        let web = id("dev", "web");
        revision(&mut s, vec![want("dev", "web", "web", "h1", &[])], t0);
        for round in 0..5u64 {
            let at = t0 + secs(3 * round);
            assert_eq!(s.due(at), vec![web.clone()], "round {round}");
            s.on(
                Event::Started {
                    cluster: web.clone(),
                },
                at,
            );
            s.on(
                Event::Deferred {
                    cluster: web.clone(),
                    after: secs(3),
                },
                at,
            );
            assert_eq!(s.entry(&web).unwrap().due, Some(at + secs(3)));
        }
        let e = s.entry(&web).unwrap();
        assert_eq!((e.failures, e.delay), (0, secs(2)), "no backoff grows");
        assert_eq!(s.failing(), 0);
        // Superseded while it waited on the lock: due at once.
        s.on(
            Event::Started {
                cluster: web.clone(),
            },
            t0 + secs(15),
        );
        revision(
            &mut s,
            vec![want("dev", "web", "web", "h2", &[])],
            t0 + secs(15),
        );
        s.on(
            Event::Deferred {
                cluster: web.clone(),
                after: secs(3),
            },
            t0 + secs(16),
        );
        assert_eq!(s.due(t0 + secs(16)), vec![web]);
    }

    #[test]
    fn changed_hash_supersedes_backoff_but_same_hash_does_not() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Backoff::default());
        let web = id("dev", "web");
        revision(&mut s, vec![want("dev", "web", "web", "h1", &[])], t0);
        run(&mut s, &web, false, t0);
        run(&mut s, &web, false, t0 + secs(2));
        let t1 = t0 + secs(3);
        revision(&mut s, vec![want("dev", "web", "web", "h1", &[])], t1);
        assert!(s.due(t1).is_empty());
        assert_eq!(s.entry(&web).unwrap().failures, 2);
        revision(&mut s, vec![want("dev", "web", "web", "h2", &[])], t1);
        assert_eq!(s.due(t1), vec![web.clone()]);
        let e = s.entry(&web).unwrap();
        assert_eq!((e.failures, e.delay), (0, secs(2)));
        assert_eq!(s.failing(), 0);
    }

    #[test]
    fn running_cluster_with_changed_hash_is_due_right_after_a_failed_finish() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Backoff::default());
        let web = id("dev", "web");
        revision(&mut s, vec![want("dev", "web", "web", "h1", &[])], t0);
        s.on(
            Event::Started {
                cluster: web.clone(),
            },
            t0,
        );
        revision(
            &mut s,
            vec![want("dev", "web", "web", "h2", &[])],
            t0 + secs(1),
        );
        assert!(
            s.due(t0 + secs(1)).is_empty(),
            "running clusters are never due"
        );
        let t1 = t0 + secs(5);
        s.on(
            Event::Finished {
                cluster: web.clone(),
                ok: false,
            },
            t1,
        );
        assert_eq!(s.due(t1), vec![web.clone()]);
        let e = s.entry(&web).unwrap();
        assert_eq!((e.failures, e.superseded), (0, false));
        assert_eq!(e.hash, SpecHash::from_observed("h2"));
        // The next failure backs off normally again.
        run(&mut s, &web, false, t1);
        assert_eq!(s.entry(&web).unwrap().due, Some(t1 + secs(2)));
    }

    #[test]
    fn success_promotes_same_app_dependents_only() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Backoff::default());
        let dev = id("dev", "web");
        let stg_web = id("staging", "web");
        let stg_api = id("staging", "api");
        revision(
            &mut s,
            vec![
                want("dev", "web", "web", "h1", &["staging"]),
                want("staging", "web", "web", "h1", &[]),
                want("staging", "api", "api", "h1", &[]),
            ],
            t0,
        );
        for c in s.due(t0) {
            run(&mut s, &c, true, t0);
        }
        assert!(s.due(t0).is_empty());
        let t1 = t0 + secs(30);
        run(&mut s, &dev, true, t1);
        assert_eq!(s.due(t1), vec![stg_web.clone()]);
        assert_eq!(s.entry(&stg_api).unwrap().due, None);
        // A failure promotes nothing.
        run(&mut s, &stg_web, true, t1);
        run(&mut s, &dev, false, t1 + secs(1));
        assert!(s.due(t1 + secs(1)).is_empty());
    }

    #[test]
    fn forced_sync_makes_failing_cluster_due() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Backoff::default());
        let web = id("dev", "web");
        revision(&mut s, vec![want("dev", "web", "web", "h1", &[])], t0);
        run(&mut s, &web, false, t0);
        s.on(Event::Sync { force: false }, t0 + secs(1));
        assert!(s.due(t0 + secs(1)).is_empty());
        s.on(Event::Sync { force: true }, t0 + secs(1));
        assert_eq!(s.due(t0 + secs(1)), vec![web]);
    }

    #[test]
    fn dropped_cluster_disappears_after_it_finishes() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Backoff::default());
        let web = id("dev", "web");
        let api = id("dev", "api");
        let db = id("dev", "db");
        revision(
            &mut s,
            vec![
                want("dev", "web", "web", "h1", &[]),
                want("dev", "api", "api", "h1", &[]),
                want("dev", "db", "db", "h1", &[]),
            ],
            t0,
        );
        s.on(
            Event::Started {
                cluster: api.clone(),
            },
            t0,
        );
        revision(
            &mut s,
            vec![want("dev", "db", "db", "h1", &[])],
            t0 + secs(1),
        );
        assert!(s.entry(&web).is_none());
        assert!(s.entry(&api).is_some(), "kept until its reconcile ends");
        s.on(
            Event::Finished {
                cluster: api.clone(),
                ok: false,
            },
            t0 + secs(2),
        );
        assert!(s.entry(&api).is_none());
        assert_eq!(s.due(t0 + secs(60)), vec![db]);
        assert_eq!(s.failing(), 0);
    }

    #[test]
    fn next_wake_is_earliest_due_of_idle_clusters() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Backoff::default());
        assert_eq!(s.next_wake(), None);
        let (a, b, c) = (id("dev", "a"), id("dev", "b"), id("dev", "c"));
        let clusters = vec![
            want("dev", "a", "a", "h1", &[]),
            want("dev", "b", "b", "h1", &[]),
            want("dev", "c", "c", "h1", &[]),
        ];
        revision(&mut s, clusters, t0);
        assert_eq!(s.next_wake(), Some(t0));
        for x in [&a, &b, &c] {
            s.on(Event::Started { cluster: x.clone() }, t0);
        }
        assert_eq!(s.next_wake(), None);
        s.on(
            Event::Finished {
                cluster: b.clone(),
                ok: false,
            },
            t0 + secs(1),
        );
        s.on(
            Event::Finished {
                cluster: a.clone(),
                ok: false,
            },
            t0 + secs(3),
        );
        assert_eq!(s.next_wake(), Some(t0 + secs(3)));
        s.on(Event::Started { cluster: b.clone() }, t0 + secs(3));
        assert_eq!(s.next_wake(), Some(t0 + secs(5)));
        s.on(
            Event::Finished {
                cluster: c,
                ok: true,
            },
            t0 + secs(4),
        );
        assert_eq!(s.next_wake(), Some(t0 + secs(5)));
    }

    #[test]
    fn a_sync_during_a_run_makes_the_cluster_due_when_it_ends() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Backoff::default());
        let web = id("dev", "web");
        revision(&mut s, vec![want("dev", "web", "web", "h1", &[])], t0);
        s.on(
            Event::Started {
                cluster: web.clone(),
            },
            t0,
        );
        // A pin arrives mid-rollout: nothing to start now, the cluster is busy.
        s.on(Event::Sync { force: true }, t0 + secs(1));
        assert!(s.due(t0 + secs(1)).is_empty());
        // The rollout stops at its step boundary (held, not failed): looked at again at once.
        s.on(
            Event::Finished {
                cluster: web.clone(),
                ok: true,
            },
            t0 + secs(2),
        );
        assert_eq!(s.due(t0 + secs(2)), vec![web.clone()]);
        // Without a sync in between, a finished cluster waits for the next one.
        run(&mut s, &web, true, t0 + secs(3));
        assert!(s.due(t0 + secs(3)).is_empty());
    }

    /// The indexes agree with the entries: what a scan of every entry would answer.
    fn consistent(s: &Schedule, now: Instant) {
        let scanned: BTreeSet<(Instant, ClusterId)> = s
            .clusters
            .iter()
            .filter_map(|(id, e)| wake_of(e).map(|t| (t, id.clone())))
            .collect();
        assert_eq!(s.wakes, scanned);
        let scanned_wake = s
            .clusters
            .values()
            .filter(|e| !e.running)
            .filter_map(|e| e.due)
            .min();
        assert_eq!(s.next_wake(), scanned_wake);
        let scanned_due: Vec<ClusterId> = s
            .clusters
            .iter()
            .filter(|(_, e)| !e.running && e.due.is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(s.due(now), scanned_due);
        for (id, e) in &s.clusters {
            assert!(s.by_app.get(&e.app).is_some_and(|ids| ids.contains(id)));
        }
        assert_eq!(
            s.by_app.values().map(BTreeSet::len).sum::<usize>(),
            s.clusters.len()
        );
    }

    #[test]
    fn the_indexes_answer_as_a_scan_would_through_any_events() {
        let envs = ["dev", "staging", "prod"];
        let apps = ["web", "api", "db", "queue"];
        let t0 = Instant::now();
        for seed in 0..200u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut s = Schedule::new(Backoff::default());
            let mut now = t0;
            for _ in 0..60 {
                now += Duration::from_millis(rng.u64(0..3000));
                let cluster = id(envs[rng.usize(..envs.len())], apps[rng.usize(..apps.len())]);
                let event = match rng.u8(0..6) {
                    0 => {
                        let mut clusters = Vec::new();
                        for e in envs {
                            for a in apps {
                                if rng.u8(0..4) == 0 {
                                    continue;
                                }
                                let deps: &[&str] = match e {
                                    "dev" => &["staging"],
                                    "staging" => &["prod"],
                                    _ => &[],
                                };
                                let hash = format!("h{}", rng.u8(0..3));
                                clusters.push(want(e, a, a, &hash, deps));
                            }
                        }
                        Event::Revision { clusters }
                    }
                    1 => Event::Sync { force: rng.bool() },
                    2 | 3 => Event::Started { cluster },
                    4 => Event::Finished {
                        cluster,
                        ok: rng.bool(),
                    },
                    _ => Event::Deferred {
                        cluster,
                        after: Duration::from_millis(rng.u64(0..5000)),
                    },
                };
                s.on(event, now);
                consistent(&s, now);
            }
        }
    }
}
