//! The planner: desired cluster + observed cluster + policy -> steps and blocks.

use std::sync::Arc;

use super::{
    Action, Block, Change, ClusterPlan, PLAN_FORMAT, Plan, PlannedStep, Policy, Share, Sim, Step,
    Summary, check_invariant, in_window, next_sequence,
};
use crate::model::{
    DesiredCluster, DesiredEnvironment, DesiredState, ObservedCluster, ObservedState, Sequence,
    ServerGroup, ServerGroupName,
};
use crate::spec::{AppName, EnvName, Strategy};

/// Which clusters to plan; empty lists mean all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only these environments.
    pub environments: Vec<EnvName>,
    /// Only these applications.
    pub apps: Vec<AppName>,
}

impl Selection {
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
        .filter(|d| selection.includes(&d.id.environment, &d.app))
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
            || !selection.includes(&live.id.environment, &live.app)
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
    Plan {
        format_version: PLAN_FORMAT,
        revision: revision.to_string(),
        observed_fingerprint: observed.fingerprint(),
        generated_at: policy.now,
        environments,
        clusters,
        summary,
    }
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
            steps: Vec::new(),
            blocked: vec![Block::TargetUnavailable {
                reason: reason.clone(),
            }],
            desired: Some(Arc::clone(d)),
        });
    }
    let env = desired.environments.get(&d.id.environment);
    let mut cp = plan_cluster(d, observed.clusters.get(&d.id))?;
    cp.desired = Some(Arc::clone(d));
    cp.blocked = blocks(d, env, &cp, desired, observed, policy);
    Some(cp)
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
            Action::Cleanup | Action::Prune => {}
            Action::Orphan => s.orphans += 1,
            Action::Unobserved => s.unobserved += 1,
        }
        s.destroy += c
            .steps
            .iter()
            .filter(|p| matches!(p.step, Step::Destroy { .. }))
            .count();
        if !c.blocked.is_empty() {
            s.blocked += 1;
        }
    }
    s
}

fn sg(d: &DesiredCluster, seq: Sequence) -> ServerGroupName {
    ServerGroupName::new(d.name(), seq)
}

/// Orders groups newest first, going back round the sequence circle from `newest`.
fn newest_first<'a>(
    groups: impl Iterator<Item = &'a ServerGroup>,
    newest: Sequence,
) -> Vec<&'a ServerGroup> {
    let mut v: Vec<&ServerGroup> = groups.collect();
    let modulus = i32::from(Sequence::MAX) + 1;
    v.sort_by_key(|g| (i32::from(newest.get()) - i32::from(g.sequence.get())).rem_euclid(modulus));
    v
}

/// The newest group of a cluster by the circle rule of [`next_sequence`].
fn newest_sequence(groups: &[ServerGroup]) -> Option<Sequence> {
    if groups.is_empty() {
        return None;
    }
    let seqs: Vec<Sequence> = groups.iter().map(|g| g.sequence).collect();
    let next = next_sequence(&seqs);
    // The newest is the last one in use before `next`, going backwards.
    let mut s = next;
    for _ in 0..=Sequence::MAX {
        s = Sequence::new(
            u32::from(s.get())
                .checked_sub(1)
                .unwrap_or(u32::from(Sequence::MAX)),
        )
        .unwrap_or(Sequence::FIRST);
        if seqs.contains(&s) {
            return Some(s);
        }
    }
    None
}

fn plan_cluster(d: &DesiredCluster, live: Option<&ObservedCluster>) -> Option<ClusterPlan> {
    let groups: &[ServerGroup] = live.map_or(&[], |l| l.server_groups.as_slice());
    let newest = newest_sequence(groups);
    let matching = newest.and_then(|n| {
        newest_first(groups.iter(), n)
            .into_iter()
            .find(|g| g.spec_hash == d.spec_hash)
    });
    let mut cp = ClusterPlan {
        id: d.id.clone(),
        app: d.app.clone(),
        action: Action::RollOut,
        drift: false,
        strategy: Some(d.strategy.kind()),
        reason: String::new(),
        changes: Vec::new(),
        steps: Vec::new(),
        blocked: Vec::new(),
        // Set by the caller once there is something to do: most clusters have nothing.
        desired: None,
    };
    let mut steps: Vec<Step> = Vec::new();
    match matching {
        Some(m) => {
            converge_existing(d, m, groups, newest, &mut cp, &mut steps);
        }
        None if groups.is_empty() => {
            cp.action = Action::Create;
            cp.reason = format!("new cluster: first server group {}", sg(d, Sequence::FIRST));
            cp.changes.push(Change {
                field: "version".into(),
                from: None,
                to: Some(d.version.clone()),
            });
            cp.changes.push(Change {
                field: "capacity.desired".into(),
                from: None,
                to: Some(d.capacity.desired.to_string()),
            });
            cp.changes.push(Change {
                field: "strategy".into(),
                from: None,
                to: Some(d.strategy.kind().to_string()),
            });
            let seq = Sequence::FIRST;
            steps.push(create(d, seq, d.capacity.desired, false));
            steps.push(wait(d, seq, d.capacity.desired));
            steps.push(Step::Enable {
                group: sg(d, seq),
                sequence: seq,
            });
            cp.steps = steps.into_iter().map(PlannedStep::from).collect();
            return Some(cp);
        }
        None => {
            let serving: Vec<&ServerGroup> = newest
                .map(|n| newest_first(groups.iter().filter(|g| g.enabled), n))
                .unwrap_or_default();
            let from = serving
                .first()
                .copied()
                .or_else(|| newest.and_then(|n| groups.iter().find(|g| g.sequence == n)));
            if let Some(f) = from {
                if f.version != d.version {
                    cp.changes.push(Change {
                        field: "version".into(),
                        from: Some(f.version.clone()),
                        to: Some(d.version.clone()),
                    });
                } else {
                    cp.changes.push(Change {
                        field: "spec".into(),
                        from: Some(f.spec_hash.to_string()),
                        to: Some(d.spec_hash.to_string()),
                    });
                }
                if f.capacity != d.capacity.desired {
                    cp.changes.push(Change {
                        field: "capacity.desired".into(),
                        from: Some(f.capacity.to_string()),
                        to: Some(d.capacity.desired.to_string()),
                    });
                }
            }
            if let (Strategy::RollingUpdate { max_unavailable }, Some(g)) =
                (&d.strategy, serving.first())
            {
                // In place: the serving group takes the new spec, instances are replaced in batches.
                cp.reason = format!(
                    "{}; rolling update of {} in place",
                    change_word(&cp.changes),
                    g.name
                );
                let running = u32::try_from(g.instances.len()).unwrap_or(u32::MAX);
                if running < g.capacity {
                    // Restore missing instances before taking any out.
                    steps.push(Step::Heal {
                        group: g.name.clone(),
                        sequence: g.sequence,
                        missing: g.capacity - running,
                    });
                    steps.push(Step::WaitHealthy {
                        group: g.name.clone(),
                        sequence: g.sequence,
                        count: g.capacity,
                        timeout: d.health.timeout,
                    });
                }
                steps.push(Step::UpdateInPlace {
                    group: g.name.clone(),
                    sequence: g.sequence,
                    version: d.version.clone(),
                    spec_hash: d.spec_hash.clone(),
                });
                if g.capacity != d.capacity.desired {
                    steps.push(Step::Resize {
                        group: g.name.clone(),
                        sequence: g.sequence,
                        from: g.capacity,
                        to: d.capacity.desired,
                    });
                    if d.capacity.desired > g.capacity {
                        steps.push(wait(d, g.sequence, d.capacity.desired));
                    }
                }
                // Healed instances start before the update, so they run the old spec too;
                // instances added by the resize start after it and run the new one.
                let outdated = running.max(g.capacity).min(d.capacity.desired);
                replace_batches(
                    d,
                    g,
                    outdated,
                    max_unavailable.batch(d.capacity.desired),
                    &mut steps,
                );
                for o in groups.iter().filter(|o| o.sequence != g.sequence) {
                    if o.enabled {
                        steps.push(Step::Disable {
                            group: o.name.clone(),
                            sequence: o.sequence,
                        });
                    }
                    steps.push(Step::Destroy {
                        group: o.name.clone(),
                        sequence: o.sequence,
                    });
                }
                cp.steps = steps.into_iter().map(PlannedStep::from).collect();
                return Some(cp);
            }
            let seqs: Vec<Sequence> = groups.iter().map(|g| g.sequence).collect();
            let seq = next_sequence(&seqs);
            cp.reason = format!(
                "{}; new server group {} by {}",
                change_word(&cp.changes),
                sg(d, seq),
                d.strategy.kind()
            );
            roll_out(d, seq, &serving, &mut steps);
            cleanup(d, seq, groups, &mut steps);
            cp.steps = steps.into_iter().map(PlannedStep::from).collect();
            return Some(cp);
        }
    }
    if steps.is_empty() {
        return None;
    }
    cp.steps = steps.into_iter().map(PlannedStep::from).collect();
    Some(cp)
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

fn create(d: &DesiredCluster, seq: Sequence, capacity: u32, enabled: bool) -> Step {
    Step::CreateServerGroup {
        group: sg(d, seq),
        sequence: seq,
        version: d.version.clone(),
        spec_hash: d.spec_hash.clone(),
        capacity,
        enabled,
    }
}

fn wait(d: &DesiredCluster, seq: Sequence, count: u32) -> Step {
    Step::WaitHealthy {
        group: sg(d, seq),
        sequence: seq,
        count,
        timeout: d.health.timeout,
    }
}

fn replace_batches(
    d: &DesiredCluster,
    g: &ServerGroup,
    outdated: u32,
    batch: u32,
    steps: &mut Vec<Step>,
) {
    if outdated == 0 {
        return;
    }
    let size = d.capacity.desired;
    if size <= 1 {
        // Replacing the only instance would leave nothing serving: surge by one first.
        let surge = size + 1;
        steps.push(Step::Resize {
            group: g.name.clone(),
            sequence: g.sequence,
            from: size,
            to: surge,
        });
        steps.push(Step::WaitHealthy {
            group: g.name.clone(),
            sequence: g.sequence,
            count: surge,
            timeout: d.health.timeout,
        });
        steps.push(Step::ReplaceInstances {
            group: g.name.clone(),
            sequence: g.sequence,
            count: outdated,
            batch: 1,
            of: 1,
        });
        steps.push(Step::WaitHealthy {
            group: g.name.clone(),
            sequence: g.sequence,
            count: surge,
            timeout: d.health.timeout,
        });
        steps.push(Step::Resize {
            group: g.name.clone(),
            sequence: g.sequence,
            from: surge,
            to: size,
        });
        return;
    }
    // Never take every instance out at once, whatever maxUnavailable says.
    let batch = batch.clamp(1, size - 1);
    let of = outdated.div_ceil(batch);
    let mut left = outdated;
    for b in 1..=of {
        let count = left.min(batch);
        left -= count;
        steps.push(Step::ReplaceInstances {
            group: g.name.clone(),
            sequence: g.sequence,
            count,
            batch: b,
            of,
        });
        steps.push(Step::WaitHealthy {
            group: g.name.clone(),
            sequence: g.sequence,
            count: size,
            timeout: d.health.timeout,
        });
    }
}

/// Shares giving `new` weight `w` and the rest to the newest serving old group.
fn shares(d: &DesiredCluster, new: Sequence, w: u8, olds: &[&ServerGroup]) -> Vec<Share> {
    let mut v = vec![Share {
        group: sg(d, new),
        sequence: new,
        weight: w,
    }];
    for (i, o) in olds.iter().enumerate() {
        v.push(Share {
            group: o.name.clone(),
            sequence: o.sequence,
            weight: if i == 0 { 100 - w } else { 0 },
        });
    }
    v
}

/// A new server group `seq` rolled out by the cluster's strategy over the serving `olds`.
fn roll_out(d: &DesiredCluster, seq: Sequence, olds: &[&ServerGroup], steps: &mut Vec<Step>) {
    let desired = d.capacity.desired;
    let new = sg(d, seq);
    match (&d.strategy, olds.is_empty()) {
        (Strategy::RollingRedBlack { steps: pcts, .. }, false) => {
            let mut pcts: Vec<u8> = pcts.iter().map(|p| p.0).collect();
            if pcts.last() != Some(&100) {
                pcts.push(100);
            }
            let mut size = 0;
            for (i, p) in pcts.iter().enumerate() {
                let n = (desired * u32::from(*p))
                    .div_ceil(100)
                    .max(1)
                    .min(desired.max(1));
                if i == 0 {
                    steps.push(create(d, seq, n, false));
                } else if n != size {
                    steps.push(Step::Resize {
                        group: new.clone(),
                        sequence: seq,
                        from: size,
                        to: n,
                    });
                }
                size = n;
                steps.push(wait(d, seq, n));
                if *p < 100 {
                    steps.push(Step::Shift {
                        shares: shares(d, seq, *p, olds),
                    });
                }
            }
            traffic_finish(d, seq, olds, steps);
        }
        (Strategy::Canary { steps: cs, .. }, false) => {
            steps.push(create(d, seq, desired, false));
            steps.push(wait(d, seq, desired));
            for c in cs.iter().filter(|c| c.weight.0 < 100) {
                steps.push(Step::Shift {
                    shares: shares(d, seq, c.weight.0, olds),
                });
                if let Some(p) = c.pause {
                    steps.push(Step::Pause { duration: p });
                }
            }
            traffic_finish(d, seq, olds, steps);
        }
        (Strategy::None {}, _) => {
            steps.push(create(d, seq, desired, true));
            steps.push(wait(d, seq, desired));
            for o in olds {
                steps.push(Step::Disable {
                    group: o.name.clone(),
                    sequence: o.sequence,
                });
            }
        }
        _ => {
            steps.push(create(d, seq, desired, false));
            steps.push(wait(d, seq, desired));
            traffic_finish(d, seq, olds, steps);
        }
    }
}

/// Full traffic to `seq`, then the old groups out.
fn traffic_finish(d: &DesiredCluster, seq: Sequence, olds: &[&ServerGroup], steps: &mut Vec<Step>) {
    steps.push(Step::Enable {
        group: sg(d, seq),
        sequence: seq,
    });
    for o in olds {
        steps.push(Step::Disable {
            group: o.name.clone(),
            sequence: o.sequence,
        });
    }
}

/// Destroys groups other than `keep` beyond what the strategy keeps disabled, oldest first.
fn cleanup(d: &DesiredCluster, keep: Sequence, groups: &[ServerGroup], steps: &mut Vec<Step>) {
    let others = newest_first(groups.iter().filter(|g| g.sequence != keep), keep);
    let kept = d.strategy.keep_disabled() as usize;
    let mut doomed: Vec<&ServerGroup> = others.into_iter().skip(kept).collect();
    doomed.reverse();
    for g in doomed {
        let disabled_in_plan = steps
            .iter()
            .any(|s| matches!(s, Step::Disable { sequence, .. } if *sequence == g.sequence));
        if g.enabled && !disabled_in_plan {
            steps.push(Step::Disable {
                group: g.name.clone(),
                sequence: g.sequence,
            });
        }
        steps.push(Step::Destroy {
            group: g.name.clone(),
            sequence: g.sequence,
        });
    }
}

/// The matching group exists: finish a rollout in progress, heal drift, resize, clean up.
fn converge_existing(
    d: &DesiredCluster,
    m: &ServerGroup,
    groups: &[ServerGroup],
    newest: Option<Sequence>,
    cp: &mut ClusterPlan,
    steps: &mut Vec<Step>,
) {
    let desired = d.capacity.desired;
    let mut reasons: Vec<String> = Vec::new();
    let mut action = None;
    if m.capacity != desired {
        steps.push(Step::Resize {
            group: m.name.clone(),
            sequence: m.sequence,
            from: m.capacity,
            to: desired,
        });
        if desired > m.capacity {
            steps.push(wait(d, m.sequence, desired));
        }
        cp.changes.push(Change {
            field: "capacity.desired".into(),
            from: Some(m.capacity.to_string()),
            to: Some(desired.to_string()),
        });
        reasons.push(format!("capacity {} -> {desired}", m.capacity));
        action = Some(Action::Resize);
    }
    // A rolling update in progress: instances still on the old spec.
    let outdated = u32::try_from(
        m.instances
            .iter()
            .filter(|i| i.spec_hash != m.spec_hash)
            .count(),
    )
    .unwrap_or(0);
    if outdated > 0 {
        let batch = match d.strategy {
            Strategy::RollingUpdate { max_unavailable } => max_unavailable.batch(desired),
            _ => 1,
        };
        replace_batches(d, m, outdated, batch, steps);
        reasons.push(format!("{outdated} instance(s) still on the old spec"));
        action = Some(Action::RollOut);
    }
    let running = u32::try_from(m.instances.len()).unwrap_or(0);
    if m.capacity == desired && running < desired {
        steps.push(Step::Heal {
            group: m.name.clone(),
            sequence: m.sequence,
            missing: desired - running,
        });
        steps.push(wait(d, m.sequence, desired));
        cp.changes.push(Change {
            field: "instances".into(),
            from: Some(running.to_string()),
            to: Some(desired.to_string()),
        });
        reasons.push(format!("{} instance(s) missing", desired - running));
        cp.drift = true;
        action = action.or(Some(Action::Restore));
    }
    let others_enabled: Vec<&ServerGroup> = newest
        .map(|n| {
            newest_first(
                groups
                    .iter()
                    .filter(|g| g.sequence != m.sequence && g.enabled),
                n,
            )
        })
        .unwrap_or_default();
    let fully_in = m.enabled && (m.weight == 100 || others_enabled.is_empty());
    if !fully_in || !others_enabled.is_empty() {
        let is_newest = newest == Some(m.sequence);
        if !m.enabled && others_enabled.is_empty() {
            if m.healthy() < desired {
                steps.push(wait(d, m.sequence, desired));
            }
            steps.push(Step::Enable {
                group: m.name.clone(),
                sequence: m.sequence,
            });
            // From observation alone, "disabled by hand" and "stopped before enabling" look
            // the same; either way the fix is to enable it.
            reasons.push(format!("{} is disabled and nothing serves", m.name));
            cp.changes.push(Change {
                field: "traffic".into(),
                from: Some("none".into()),
                to: Some(m.name.to_string()),
            });
            cp.drift = true;
            action = action.or(Some(Action::Restore));
        } else if is_newest {
            // A rollout stopped part-way: carry on from where traffic is now.
            if m.healthy() < desired && !steps.iter().any(|s| matches!(s, Step::WaitHealthy { .. }))
            {
                steps.push(wait(d, m.sequence, desired));
            }
            let current = if m.enabled { m.weight } else { 0 };
            match &d.strategy {
                Strategy::Canary { steps: cs, .. } => {
                    // How long traffic has been at this weight is not observable: a rollout
                    // resumed after a crash holds the current step's pause again.
                    if let Some(p) = cs
                        .iter()
                        .find(|c| c.weight.0 == current)
                        .and_then(|c| c.pause)
                    {
                        steps.push(Step::Pause { duration: p });
                    }
                    for c in cs
                        .iter()
                        .filter(|c| c.weight.0 > current && c.weight.0 < 100)
                    {
                        steps.push(Step::Shift {
                            shares: shares(d, m.sequence, c.weight.0, &others_enabled),
                        });
                        if let Some(p) = c.pause {
                            steps.push(Step::Pause { duration: p });
                        }
                    }
                }
                Strategy::RollingRedBlack { steps: ps, .. } => {
                    for p in ps.iter().filter(|p| p.0 > current && p.0 < 100) {
                        steps.push(Step::Shift {
                            shares: shares(d, m.sequence, p.0, &others_enabled),
                        });
                    }
                }
                _ => {}
            }
            if !(m.enabled && m.weight == 100) {
                steps.push(Step::Enable {
                    group: m.name.clone(),
                    sequence: m.sequence,
                });
            }
            for o in &others_enabled {
                steps.push(Step::Disable {
                    group: o.name.clone(),
                    sequence: o.sequence,
                });
            }
            reasons.push(format!(
                "rollout of {} in progress (traffic {current}%)",
                m.name
            ));
            action = action.or(Some(Action::RollOut));
        } else {
            // An older group was enabled by hand next to the desired one.
            if !m.enabled || m.weight < 100 {
                steps.push(Step::Enable {
                    group: m.name.clone(),
                    sequence: m.sequence,
                });
            }
            for o in &others_enabled {
                steps.push(Step::Disable {
                    group: o.name.clone(),
                    sequence: o.sequence,
                });
            }
            let names: Vec<String> = others_enabled.iter().map(|o| o.name.to_string()).collect();
            reasons.push(format!(
                "{} enabled by hand beside {}",
                names.join(", "),
                m.name
            ));
            cp.changes.push(Change {
                field: "traffic".into(),
                from: Some(names.join(", ")),
                to: Some(m.name.to_string()),
            });
            cp.drift = true;
            action = action.or(Some(Action::Restore));
        }
    }
    let before = steps.len();
    cleanup(d, m.sequence, groups, steps);
    if steps.len() > before {
        let n = steps[before..]
            .iter()
            .filter(|s| matches!(s, Step::Destroy { .. }))
            .count();
        reasons.push(format!(
            "{n} server group(s) beyond keepDisabled {}",
            d.strategy.keep_disabled()
        ));
        action = action.or(Some(Action::Cleanup));
    }
    if let Some(a) = action {
        cp.action = a;
    }
    cp.reason = reasons.join("; ");
}

fn orphan(live: &ObservedCluster, prune: bool, policy: &Policy) -> ClusterPlan {
    let mut steps = Vec::new();
    if prune {
        for g in &live.server_groups {
            if g.enabled {
                steps.push(Step::Disable {
                    group: g.name.clone(),
                    sequence: g.sequence,
                });
            }
            steps.push(Step::Destroy {
                group: g.name.clone(),
                sequence: g.sequence,
            });
        }
    }
    let mut blocked = Vec::new();
    if prune {
        blocked.extend(suspends_and_locks(&live.id, &live.app, policy));
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
        steps: steps.into_iter().map(PlannedStep::from).collect(),
        blocked,
        desired: None,
    }
}

fn suspends_and_locks(id: &crate::model::ClusterId, app: &AppName, policy: &Policy) -> Vec<Block> {
    let mut out = Vec::new();
    for s in &policy.suspends {
        if s.until.is_none_or(|u| u > policy.now) && s.scope.covers(id, app) {
            out.push(Block::Suspended {
                scope: s.scope.to_string(),
                who: s.who.clone(),
                reason: s.reason.clone(),
                until: s.until,
            });
        }
    }
    for l in &policy.locks {
        if &l.cluster == id && l.expires > policy.now {
            out.push(Block::Locked {
                owner: l.owner.clone(),
                reason: l.reason.clone(),
                expires: l.expires,
            });
        }
    }
    out
}

fn blocks(
    d: &DesiredCluster,
    env: Option<&DesiredEnvironment>,
    cp: &ClusterPlan,
    desired: &DesiredState,
    observed: &ObservedState,
    policy: &Policy,
) -> Vec<Block> {
    let mut out = Vec::new();
    if let Some(by) = &d.suspended_by {
        out.push(Block::SuspendedInSpec { by: by.clone() });
    }
    out.extend(suspends_and_locks(&d.id, &d.app, policy));
    if let Some(env) = env {
        if !in_window(&env.windows, policy.now) {
            out.push(Block::OutsideWindow {
                windows: env
                    .windows
                    .iter()
                    .map(|w| {
                        let days: Vec<&str> = w.days.iter().map(|d| d.as_str()).collect();
                        format!("{} {}-{} {}", days.join(","), w.start, w.end, w.timezone)
                    })
                    .collect(),
            });
        }
        let new_version = matches!(cp.action, Action::Create | Action::RollOut);
        if new_version && env.approval == crate::spec::Approval::Required {
            let approved = policy
                .approvals
                .iter()
                .any(|a| a.environment == env.name && a.app == d.app && a.version == d.version);
            if !approved {
                out.push(Block::AwaitingApproval {
                    version: d.version.clone(),
                });
            }
        }
        if new_version {
            let waiting: Vec<String> = env
                .depends_on
                .iter()
                .filter(|up| {
                    let upstream: Vec<&Arc<DesiredCluster>> = desired
                        .clusters
                        .values()
                        .filter(|c| &c.id.environment == *up && c.app == d.app)
                        .collect();
                    !upstream.is_empty()
                        && !upstream.iter().any(|u| {
                            observed.clusters.get(&u.id).is_some_and(|l| {
                                l.server_groups.iter().any(|g| {
                                    g.serving()
                                        && g.version == d.version
                                        && g.healthy() >= u.capacity.desired.min(1)
                                })
                            })
                        })
                })
                .map(ToString::to_string)
                .collect();
            if !waiting.is_empty() {
                out.push(Block::Promotion {
                    waiting_on: waiting,
                    version: d.version.clone(),
                });
            }
        }
    }
    let steps: Vec<Step> = cp.steps.iter().map(|p| p.step.clone()).collect();
    if let Err((step, reason)) = check_invariant(Sim::of(observed.clusters.get(&d.id)), &steps) {
        out.push(Block::GuardRefused { step, reason });
    }
    out
}
