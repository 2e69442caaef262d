//! The planner: desired cluster + observed cluster + policy -> steps and blocks.
//!
//! Per cluster: the strategy's walk (a fresh rollout, or where a stopped one stands), then the
//! cross-cutting parts in order (drift, resize, cleanup) on the cluster as the steps so far
//! leave it; every step gets the rollback of everything done before it and itself.

use std::sync::Arc;

use super::strategy::{self, Position};
use super::walk::{Rollout, Walk};
use super::{
    Action, Block, Change, ClusterPlan, Control, PLAN_FORMAT, PendingRollback, Plan, PlannedStep,
    Policy, Sim, Summary, blocks, cleanup, drift, newest_first, newest_sequence, next_sequence,
    resize,
};
use crate::actuation::{Op, Step, TrafficPrecision, rollback_of};
use crate::model::{
    ClusterId, DesiredCluster, DesiredState, ObservedCluster, ObservedState, Sequence, ServerGroup,
    ServerGroupName,
};
use crate::spec::{AppName, Duration, EnvName, Strategy};

/// How long a rollback waits for instances of a cluster no spec declares any more.
const ORPHAN_HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

/// Which clusters to plan; empty lists mean all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only these environments.
    pub environments: Vec<EnvName>,
    /// Only these applications.
    pub apps: Vec<AppName>,
    /// Only these clusters (the daemon reconciles each on its own schedule); a set, for a
    /// pass over thousands asks it thousands of times.
    pub clusters: std::collections::BTreeSet<ClusterId>,
    /// With `clusters`: orphans (no spec, so never scheduled) are planned too.
    pub orphans: bool,
}

impl Selection {
    /// Only these clusters, and the orphans.
    pub fn clusters(clusters: Vec<ClusterId>) -> Self {
        Self {
            clusters: clusters.into_iter().collect(),
            orphans: true,
            ..Self::default()
        }
    }

    /// Whether this cluster (of `app`) is selected.
    pub fn includes_cluster(&self, id: &ClusterId, app: &AppName) -> bool {
        self.includes(&id.environment, app)
            && (self.clusters.is_empty() || self.clusters.contains(id))
    }

    /// Whether a cluster of `app` in `env` is selected.
    pub fn includes(&self, env: &EnvName, app: &AppName) -> bool {
        (self.environments.is_empty() || self.environments.contains(env))
            && (self.apps.is_empty() || self.apps.contains(app))
    }
}

/// Computes the plan. Pure: no I/O, no clock (the time is `policy.now`), deterministic.
pub fn plan(
    desired: &DesiredState,
    observed: &ObservedState,
    policy: &Policy,
    revision: &str,
    selection: &Selection,
) -> Plan {
    // Clusters are planned independently (blocks only read the rest), so they are split over
    // the cores; the order is restored by the sort below.
    let selected: Vec<&Arc<DesiredCluster>> = desired
        .clusters
        .values()
        .filter(|d| selection.includes_cluster(&d.id, &d.app))
        .collect();
    let planned: Vec<Option<ClusterPlan>> = crate::par::map_chunks(&selected, |chunk| {
        chunk
            .iter()
            .map(|d| plan_one(d, desired, observed, policy))
            .collect()
    });
    let unchanged = planned.iter().filter(|p| p.is_none()).count();
    let mut clusters: Vec<ClusterPlan> = planned.into_iter().flatten().collect();
    for live in observed.clusters.values() {
        if desired.clusters.contains_key(&live.id)
            || !(selection.includes_cluster(&live.id, &live.app)
                || selection.orphans && selection.includes(&live.id.environment, &live.app))
        {
            continue;
        }
        let prune = desired
            .environments
            .get(&live.id.environment)
            .is_some_and(|e| e.prune);
        clusters.push(orphan(live, prune, policy));
    }
    // Promotion order reads as the change travels: dev, then staging, then prod.
    let environments = desired.promotion_order();
    let rank =
        |c: &ClusterPlan| crate::model::promotion_rank(&environments, c.id.environment.as_str());
    clusters.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.id.cmp(&b.id)));
    let summary = summarize(&clusters, unchanged);
    let scheduled = scheduled(&selected, observed, policy, &clusters);
    Plan {
        format_version: PLAN_FORMAT,
        revision: revision.to_string(),
        observed_fingerprint: observed.fingerprint(),
        generated_at: policy.now,
        environments,
        clusters,
        summary,
        scheduled,
    }
}

/// The disabled groups `destroyDisabledAfter` will destroy later (not in this plan's steps).
fn scheduled(
    selected: &[&Arc<DesiredCluster>],
    observed: &ObservedState,
    policy: &Policy,
    planned: &[ClusterPlan],
) -> Vec<super::ScheduledCleanup> {
    let mut out = Vec::new();
    for d in selected {
        if d.strategy.destroy_disabled_after().is_none() {
            continue;
        }
        let Some(live) = observed.clusters.get(&d.id) else {
            continue;
        };
        let destroyed_now = |g: &ServerGroupName| {
            planned.iter().filter(|c| c.id == d.id).any(|c| {
                c.steps
                    .iter()
                    .any(|s| matches!(&s.step, Step::Op(Op::Destroy { group, .. }) if group == g))
            })
        };
        for g in live.server_groups.iter().filter(|g| !g.enabled) {
            if destroyed_now(&g.name) {
                continue;
            }
            if let Some(at) = cleanup::deadline(d, &g.name, policy) {
                out.push(super::ScheduledCleanup {
                    cluster: d.id.clone(),
                    group: g.name.clone(),
                    since: policy.disabled_at(&d.id, &g.name).unwrap_or(policy.now),
                    at,
                });
            }
        }
    }
    out
}

/// One desired cluster's plan; `None` when it is as desired.
fn plan_one(
    d: &Arc<DesiredCluster>,
    desired: &DesiredState,
    observed: &ObservedState,
    policy: &Policy,
) -> Option<ClusterPlan> {
    let unavailable = (!observed.unavailable.is_empty())
        .then(|| format!("{}/{}", d.id.environment, d.id.target))
        .and_then(|key| observed.unavailable.get(&key));
    if let Some(reason) = unavailable {
        return Some(ClusterPlan {
            id: d.id.clone(),
            app: d.app.clone(),
            action: Action::Unobserved,
            drift: false,
            strategy: Some(d.strategy.kind()),
            reason: "the target could not be observed; nothing is planned for it".into(),
            changes: Vec::new(),
            done: Vec::new(),
            steps: Vec::new(),
            blocked: vec![Block::TargetUnavailable {
                reason: reason.clone(),
            }],
            desired: Some(Arc::clone(d)),
            control: None,
        });
    }
    let env = desired.environments.get(&d.id.environment);
    let live = observed.clusters.get(&d.id);
    // Pins and vetoes decide which version Git's cluster moves to.
    let controlled = super::controls::controlled(d, policy);
    let d = &controlled.cluster;
    let expired = |g: &ServerGroupName| cleanup::expired(d, g, policy);
    let planned = match policy.rollbacks.iter().find(|r| r.cluster == d.id) {
        Some(pending) => Some(finish_rollback(pending, &d.app, Some(d.strategy.kind()))),
        None => plan_cluster(d, live, observed.precision(d.target.provider), &expired),
    };
    let mut cp = match planned {
        Some(cp) => cp,
        // As desired, but not as Git asks: say what holds it.
        None => held(d, &controlled)?,
    };
    cp.desired = Some(Arc::clone(d));
    if cp.action == Action::Held {
        // Nothing to do: the hold itself is the whole story.
        return Some(cp);
    }
    if let Some(c) = &controlled.control {
        cp.reason = if cp.reason.is_empty() {
            c.to_string()
        } else {
            format!("{c}; {}", cp.reason)
        };
    }
    cp.control.clone_from(&controlled.control);
    cp.blocked = blocks::blocks(d, env, &cp, desired, observed, policy);
    cp.blocked.extend(controlled.block.clone());
    Some(cp)
}

/// The plan of a cluster that is as desired only because a pin or a veto holds it away from
/// Git's version; `None` when nothing holds it.
fn held(d: &Arc<DesiredCluster>, c: &super::controls::Controlled) -> Option<ClusterPlan> {
    let block = match (&c.control, &c.block) {
        (_, Some(b)) => b.clone(),
        (Some(Control::Pinned(p)), None) => Block::Pinned(p.clone()),
        (
            Some(Control::Vetoed {
                version,
                who,
                reason,
                back_to,
            }),
            None,
        ) => Block::Vetoed {
            version: version.clone(),
            who: who.clone(),
            reason: reason.clone(),
            stays_at: Some(back_to.clone()),
        },
        (None, None) => return None,
    };
    Some(ClusterPlan {
        id: d.id.clone(),
        app: d.app.clone(),
        action: Action::Held,
        drift: false,
        strategy: Some(d.strategy.kind()),
        reason: String::new(),
        changes: Vec::new(),
        done: Vec::new(),
        steps: Vec::new(),
        blocked: vec![block],
        desired: None,
        control: None,
    })
}

fn summarize(clusters: &[ClusterPlan], unchanged: usize) -> Summary {
    let mut s = Summary {
        unchanged,
        ..Summary::default()
    };
    for c in clusters {
        match c.action {
            Action::Create => s.create += 1,
            Action::RollOut => s.roll_out += 1,
            Action::Resize => s.resize += 1,
            Action::Restore => s.restore += 1,
            Action::RollBack => s.roll_back += 1,
            Action::Cleanup | Action::Prune | Action::Held => {}
            Action::Orphan => s.orphans += 1,
            Action::Unobserved => s.unobserved += 1,
        }
        s.destroy_server_groups += c
            .steps
            .iter()
            .filter(|p| matches!(p.step, Step::Op(Op::Destroy { .. })))
            .count();
        if !c.blocked.is_empty() {
            s.blocked += 1;
        }
    }
    s
}

/// Instances of `g` still on another spec than their group's.
fn outdated(g: &ServerGroup) -> usize {
    g.instances
        .iter()
        .filter(|i| i.spec_hash != g.spec_hash)
        .count()
}

/// Where the desired cluster stands on the observed one.
pub(crate) fn position<'a>(
    d: &'a DesiredCluster,
    live: Option<&'a ObservedCluster>,
    precision: TrafficPrecision,
) -> Position<'a> {
    let groups: &[ServerGroup] = live.map_or(&[], |l| l.server_groups.as_slice());
    let newest = newest_sequence(groups);
    let ordered = newest
        .map(|n| newest_first(groups.iter(), n))
        .unwrap_or_default();
    let matching = ordered.iter().find(|g| g.spec_hash == d.spec_hash).copied();
    let rolling = matches!(d.strategy, Strategy::RollingUpdate { .. });
    // The rollout's group is the newest; a rolling update's is the one it updated in place.
    let new = matching.filter(|m| Some(m.sequence) == newest || (rolling && m.enabled));
    let sequence = new.map_or_else(
        || next_sequence(&groups.iter().map(|g| g.sequence).collect::<Vec<_>>()),
        |g| g.sequence,
    );
    let olds = ordered
        .into_iter()
        .filter(|g| g.enabled && Some(g.sequence) != new.map(|n| n.sequence))
        .collect();
    let in_place = rolling && new.is_some_and(|n| n.previous.is_some() || outdated(n) > 0);
    Position {
        desired: d,
        live,
        new,
        sequence,
        olds,
        precision,
        in_place,
    }
}

/// Whether a cluster obviously needs nothing: one group in traffic at full weight, running the
/// desired spec at the desired size on every instance, no more disabled groups than kept. The
/// full planning gives no steps for these; most clusters are like this, so they are cheap.
fn converged(d: &DesiredCluster, groups: &[ServerGroup]) -> bool {
    let Some(newest) = newest_sequence(groups) else {
        return false;
    };
    let mut serving = groups.iter().filter(|g| g.enabled);
    let (Some(m), None) = (serving.next(), serving.next()) else {
        return false;
    };
    m.spec_hash == d.spec_hash
        && (m.sequence == newest || matches!(d.strategy, Strategy::RollingUpdate { .. }))
        && m.weight == 100
        && m.capacity == d.capacity.desired
        && m.instances.len() == m.capacity as usize
        && outdated(m) == 0
        && groups.len() <= 1 + d.strategy.keep_disabled() as usize
}

fn plan_cluster(
    d: &DesiredCluster,
    live: Option<&ObservedCluster>,
    precision: TrafficPrecision,
    expired: &dyn Fn(&ServerGroupName) -> bool,
) -> Option<ClusterPlan> {
    let groups: &[ServerGroup] = live.map_or(&[], |l| l.server_groups.as_slice());
    if converged(d, groups) && !groups.iter().any(|g| !g.enabled && expired(&g.name)) {
        return None;
    }
    let mut cp = ClusterPlan {
        id: d.id.clone(),
        app: d.app.clone(),
        action: Action::RollOut,
        drift: false,
        strategy: Some(d.strategy.kind()),
        reason: String::new(),
        changes: Vec::new(),
        done: Vec::new(),
        steps: Vec::new(),
        blocked: Vec::new(),
        // Set by the caller once there is something to do.
        desired: None,
        control: None,
    };
    let p = position(d, live, precision);
    if groups.is_empty() {
        cp.action = Action::Create;
        cp.reason = format!("new cluster: first server group {}", p.name());
        cp.changes = vec![
            change("version", None, Some(d.version.clone())),
            change(
                "capacity.desired",
                None,
                Some(d.capacity.desired.to_string()),
            ),
            change("strategy", None, Some(d.strategy.kind().to_string())),
        ];
        cp.steps = planned(strategy::first(&p), d.health.timeout);
        return Some(cp);
    }
    let newest = newest_sequence(groups).unwrap_or(Sequence::FIRST);
    let matching = newest_first(groups.iter(), newest)
        .into_iter()
        .find(|g| g.spec_hash == d.spec_hash);
    let mut reasons: Vec<String> = Vec::new();
    let mut action: Option<Action> = None;
    let target = matching.filter(|m| p.new.is_some_and(|n| n.sequence == m.sequence));
    let mut w: Walk = match (matching, target) {
        (Some(_), None) => Walk::new(live, Sim::of(live), precision),
        _ => p.walk(),
    };
    // Missing instances of the desired group come back before anything else moves.
    let mut healing = 0;
    if let Some(m) = matching
        && let Some(missing) = drift::heal(&mut w, d, m)
    {
        healing = 2;
        cp.changes.push(change(
            "instances",
            Some((m.capacity - missing).to_string()),
            Some(m.capacity.to_string()),
        ));
        reasons.push(format!("{missing} instance(s) missing"));
        cp.drift = true;
        action = Some(Action::Restore);
    }
    // The group that ends up serving.
    let (serving_name, serving_seq): (ServerGroupName, Sequence);
    match (matching, p.new) {
        (None, _) => {
            strategy::stages(&mut w, &p);
            let from = p
                .olds
                .first()
                .copied()
                .or_else(|| groups.iter().find(|g| g.sequence == newest));
            if let Some(f) = from {
                cp.changes.push(if f.version != d.version {
                    change("version", Some(f.version.clone()), Some(d.version.clone()))
                } else {
                    change(
                        "spec",
                        Some(f.spec_hash.to_string()),
                        Some(d.spec_hash.to_string()),
                    )
                });
                if f.capacity != d.capacity.desired {
                    cp.changes.push(change(
                        "capacity.desired",
                        Some(f.capacity.to_string()),
                        Some(d.capacity.desired.to_string()),
                    ));
                }
            }
            let in_place = w.planned().iter().find_map(|s| match s {
                Step::Op(Op::UpdateInPlace {
                    group, sequence, ..
                }) => Some((group.clone(), *sequence)),
                _ => None,
            });
            (serving_name, serving_seq) = match in_place {
                Some((g, s)) => {
                    reasons.push(format!(
                        "{}; rolling update of {g} in place",
                        change_word(&cp.changes)
                    ));
                    (g, s)
                }
                None => {
                    reasons.push(format!(
                        "{}; new server group {} by {}",
                        change_word(&cp.changes),
                        p.name(),
                        d.strategy.kind()
                    ));
                    (p.name(), p.sequence)
                }
            };
            action = Some(Action::RollOut);
        }
        (Some(m), Some(n)) if m.sequence == n.sequence => {
            let before = w.planned().len();
            strategy::stages(&mut w, &p);
            if w.planned().len() > before + healing {
                if p.olds.is_empty() && !m.enabled {
                    // From observation alone, "disabled by hand" and "stopped before enabling"
                    // look the same; either way the fix is to enable it.
                    reasons.push(format!("{} is disabled and nothing serves", m.name));
                    cp.changes.push(change(
                        "traffic",
                        Some("none".into()),
                        Some(m.name.to_string()),
                    ));
                    cp.drift = true;
                    action = action.or(Some(Action::Restore));
                } else if outdated(m) > 0 {
                    reasons.push(format!("{} instance(s) still on the old spec", outdated(m)));
                    action = Some(Action::RollOut);
                } else {
                    let current = if m.enabled { m.weight } else { 0 };
                    reasons.push(format!(
                        "rollout of {} in progress (traffic {current}%)",
                        m.name
                    ));
                    action = Some(Action::RollOut);
                }
            }
            (serving_name, serving_seq) = (m.name.clone(), m.sequence);
        }
        (Some(m), _) => {
            let restored = drift::restore_traffic(&mut w, d, m, groups);
            w.close();
            if let Some(others) = restored {
                if m.enabled {
                    reasons.push(format!(
                        "{} enabled by hand beside {}",
                        others.join(", "),
                        m.name
                    ));
                    cp.drift = true;
                    action = action.or(Some(Action::Restore));
                } else {
                    reasons.push(format!(
                        "{} runs the desired spec: back in traffic in place of {}",
                        m.name,
                        others.join(", ")
                    ));
                    action = Some(Action::RollOut);
                }
                cp.changes.push(change(
                    "traffic",
                    Some(if others.is_empty() {
                        "none".into()
                    } else {
                        others.join(", ")
                    }),
                    Some(m.name.to_string()),
                ));
            }
            (serving_name, serving_seq) = (m.name.clone(), m.sequence);
        }
    }
    if let Some((from, to)) = resize::resize(&mut w, d, &serving_name, serving_seq) {
        cp.changes.push(change(
            "capacity.desired",
            Some(from.to_string()),
            Some(to.to_string()),
        ));
        reasons.push(format!("capacity {from} -> {to}"));
        action = action.or(Some(Action::Resize));
    }
    let mut all: Vec<(ServerGroupName, Sequence)> = groups
        .iter()
        .map(|g| (g.name.clone(), g.sequence))
        .collect();
    if !all.iter().any(|(_, s)| *s == serving_seq) {
        all.push((serving_name.clone(), serving_seq));
    }
    let keep = d.strategy.keep_disabled();
    let destroyed = cleanup::cleanup(&mut w, &all, serving_seq, keep, expired);
    if destroyed > 0 && matching.is_some() {
        reasons.push(match d.strategy.destroy_disabled_after() {
            Some(after) => format!(
                "{destroyed} server group(s) beyond keepDisabled {keep} or disabled longer than {after}"
            ),
            None => format!("{destroyed} server group(s) beyond keepDisabled {keep}"),
        });
    }
    if destroyed > 0 {
        action = action.or(Some(Action::Cleanup));
    }
    let rollout = w.finish();
    if rollout.todo.is_empty() {
        return None;
    }
    if let Some(a) = action {
        cp.action = a;
    }
    cp.reason = reasons.join("; ");
    cp.done.clone_from(&rollout.done);
    cp.steps = planned(rollout, d.health.timeout);
    Some(cp)
}

/// The planned steps of a rollout, each with what undoes everything up to and including it.
fn planned(rollout: Rollout, health_timeout: Duration) -> Vec<PlannedStep> {
    let mut ran: Vec<Op> = rollout.done;
    rollout
        .todo
        .into_iter()
        .map(|step| {
            if let Step::Op(op) = &step {
                ran.push(op.clone());
            }
            PlannedStep::new(step, rollback_of(&ran, health_timeout))
        })
        .collect()
}

fn change(field: &str, from: Option<String>, to: Option<String>) -> Change {
    Change {
        field: field.into(),
        from,
        to,
    }
}

fn change_word(changes: &[Change]) -> String {
    match changes.first() {
        Some(c) if c.field == "version" => format!(
            "version {} -> {}",
            c.from.as_deref().unwrap_or("?"),
            c.to.as_deref().unwrap_or("?")
        ),
        _ => "workload or health spec changed".to_string(),
    }
}

/// The rest of a rollback that was interrupted (the process died during it): recorded in the
/// store, finished before anything else happens to the cluster.
fn finish_rollback(
    pending: &PendingRollback,
    app: &AppName,
    strategy: Option<crate::spec::StrategyKind>,
) -> ClusterPlan {
    ClusterPlan {
        id: pending.cluster.clone(),
        app: app.clone(),
        action: Action::RollBack,
        drift: false,
        strategy,
        reason: format!(
            "finishing the rollback of revision {} after: {}",
            pending.revision, pending.error
        ),
        changes: Vec::new(),
        done: Vec::new(),
        steps: pending
            .steps
            .iter()
            .cloned()
            .map(|s| PlannedStep::new(s, Vec::new()))
            .collect(),
        blocked: Vec::new(),
        desired: None,
        control: None,
    }
}

fn orphan(live: &ObservedCluster, prune: bool, policy: &Policy) -> ClusterPlan {
    let mut w = Walk::new(Some(live), Sim::of(Some(live)), TrafficPrecision::Exact);
    if prune {
        for g in &live.server_groups {
            let to = [(g.name.clone(), g.sequence, 0)];
            w.act(|sim| super::walk::traffic(sim, &to));
            w.act(|_| {
                Some(Op::Destroy {
                    group: g.name.clone(),
                    sequence: g.sequence,
                })
            });
        }
    }
    let mut blocked: Vec<Block> = Vec::new();
    if let Some(pending) = policy.rollbacks.iter().find(|r| r.cluster == live.id) {
        let mut cp = finish_rollback(pending, &live.app, None);
        cp.blocked = blocks::suspends_and_locks(&live.id, &live.app, policy);
        cp.blocked.extend(blocks::foreign_store(Some(live), policy));
        return cp;
    }
    if prune {
        blocked.extend(blocks::foreign_store(Some(live), policy));
        blocked.extend(blocks::suspends_and_locks(&live.id, &live.app, policy));
    }
    ClusterPlan {
        id: live.id.clone(),
        app: live.app.clone(),
        action: if prune { Action::Prune } else { Action::Orphan },
        drift: false,
        strategy: None,
        reason: if prune {
            "no spec declares this cluster and the environment prunes".into()
        } else {
            "no spec declares this cluster; set `prune: true` on the environment to destroy it"
                .into()
        },
        changes: Vec::new(),
        done: Vec::new(),
        steps: planned(w.finish(), ORPHAN_HEALTH_TIMEOUT),
        blocked,
        desired: None,
        control: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::strategy::fixture::{desired, group, live};
    use super::*;
    use crate::spec::Strategy;

    fn plan_of(d: &DesiredCluster, l: &ObservedCluster) -> Option<ClusterPlan> {
        plan_cluster(d, Some(l), TrafficPrecision::Exact, &|_| false)
    }

    fn texts(cp: &ClusterPlan) -> Vec<String> {
        cp.steps.iter().map(|s| s.description.clone()).collect()
    }

    #[test]
    fn a_converged_cluster_has_no_plan_either_way() {
        let d = desired(
            "1.0.0",
            3,
            Strategy::RedBlack {
                keep_disabled: 1,
                destroy_disabled_after: None,
            },
        );
        let l = live(
            &d,
            vec![group(0, "0.9.0", 3, 3, 0), group(1, "1.0.0", 3, 3, 100)],
        );
        assert!(converged(&d, &l.server_groups));
        assert!(plan_of(&d, &l).is_none());
        // The same cluster without the fast path: the walk finds nothing to do either.
        let p = position(&d, Some(&l), TrafficPrecision::Exact);
        assert!(strategy::roll_out(&p).todo.is_empty());
    }

    #[test]
    fn a_new_version_rolls_out_and_cleans_up_beyond_keep_disabled() {
        let d = desired(
            "2.0.0",
            2,
            Strategy::RedBlack {
                keep_disabled: 1,
                destroy_disabled_after: None,
            },
        );
        let l = live(
            &d,
            vec![group(0, "0.9.0", 2, 2, 0), group(1, "1.0.0", 2, 2, 100)],
        );
        let cp = plan_of(&d, &l).unwrap_or_else(|| unreachable!());
        assert_eq!(cp.action, Action::RollOut);
        assert_eq!(
            texts(&cp),
            [
                "create web-v002 (2.0.0, 2 instances, disabled)",
                "wait until 2 of web-v002 healthy (timeout 30s)",
                "enable web-v002",
                "disable web-v001",
                "destroy web-v000",
            ]
        );
        let last: Vec<String> = cp.steps[4]
            .rollback
            .iter()
            .map(|r| r.description.clone())
            .collect();
        assert_eq!(
            last,
            [
                "shift traffic: web-v001 100%, web-v002 0%",
                "destroy web-v002"
            ]
        );
    }

    #[test]
    fn drift_is_healed_resized_and_restored() {
        let d = desired(
            "1.0.0",
            3,
            Strategy::RedBlack {
                keep_disabled: 1,
                destroy_disabled_after: None,
            },
        );
        let mut g = group(0, "1.0.0", 3, 3, 100);
        g.instances.truncate(1);
        let cp = plan_of(&d, &live(&d, vec![g])).unwrap_or_else(|| unreachable!());
        assert_eq!(cp.action, Action::Restore);
        assert!(cp.drift);
        assert_eq!(
            texts(&cp),
            [
                "restore 2 missing instances of web-v000",
                "wait until 3 of web-v000 healthy (timeout 30s)"
            ]
        );
        let cp = plan_of(
            &desired(
                "1.0.0",
                5,
                Strategy::RedBlack {
                    keep_disabled: 1,
                    destroy_disabled_after: None,
                },
            ),
            &live(&d, vec![group(0, "1.0.0", 3, 3, 100)]),
        )
        .unwrap_or_else(|| unreachable!());
        assert_eq!(cp.action, Action::Resize);
        assert_eq!(
            texts(&cp),
            [
                "resize web-v000 3 -> 5",
                "wait until 5 of web-v000 healthy (timeout 30s)"
            ]
        );
        // An older group enabled by hand beside the desired one is taken out again.
        let cp = plan_of(
            &d,
            &live(
                &d,
                vec![group(0, "0.9.0", 3, 3, 100), group(1, "1.0.0", 3, 3, 100)],
            ),
        )
        .unwrap_or_else(|| unreachable!());
        assert_eq!(texts(&cp), ["disable web-v000"]);
    }

    #[test]
    fn a_spec_reverted_to_a_kept_group_puts_it_back_without_a_new_one() {
        let d = desired(
            "1.0.0",
            2,
            Strategy::RedBlack {
                keep_disabled: 1,
                destroy_disabled_after: None,
            },
        );
        let l = live(
            &d,
            vec![group(0, "1.0.0", 2, 2, 0), group(1, "2.0.0", 2, 2, 100)],
        );
        let cp = plan_of(&d, &l).unwrap_or_else(|| unreachable!());
        assert_eq!(cp.action, Action::RollOut);
        assert_eq!(texts(&cp), ["enable web-v000", "disable web-v001"]);
    }

    #[test]
    fn whole_instances_show_the_share_they_really_give() {
        let d = desired(
            "2.0.0",
            4,
            Strategy::Canary {
                steps: vec![crate::spec::CanaryStep {
                    weight: crate::spec::Percent(10),
                    pause: None,
                }],
                keep_disabled: 1,
                destroy_disabled_after: None,
                analysis: None,
            },
        );
        let l = live(&d, vec![group(0, "1.0.0", 4, 4, 100)]);
        let cp = plan_cluster(&d, Some(&l), TrafficPrecision::Instances, &|_| false)
            .unwrap_or_else(|| unreachable!());
        assert_eq!(
            cp.steps[2].description,
            "shift traffic: web-v001 10% (by instances: 20%), web-v000 90% (by instances: 80%)"
        );
    }
}
