//! Why a cluster may not move now: suspends, locks, windows, approvals, promotion and the
//! traffic guard. The engine asks the same functions at every step boundary.

use std::sync::Arc;

use super::{Block, ClusterPlan, Policy, Suspend, check_invariant, in_window};
use crate::model::{
    ClusterId, DesiredCluster, DesiredEnvironment, DesiredState, ObservedCluster, ObservedState,
};
use crate::plan::{Action, Sim};
use crate::spec::AppName;

/// The suspends in force at `now` that cover a cluster of `app`, as blocks.
pub fn suspended(
    suspends: &[Suspend],
    id: &ClusterId,
    app: &AppName,
    now: jiff::Timestamp,
) -> Vec<Block> {
    suspends
        .iter()
        .filter(|s| s.until.is_none_or(|u| u > now) && s.scope.covers(id, app))
        .map(|s| Block::Suspended {
            scope: s.scope.to_string(),
            who: s.who.clone(),
            reason: s.reason.clone(),
            until: s.until,
        })
        .collect()
}

/// Another state store's mark on a live cluster, as a block.
pub fn foreign_store(live: Option<&ObservedCluster>, policy: &Policy) -> Option<Block> {
    let seen = live?.server_groups.iter().filter_map(|g| {
        g.labels
            .get(crate::model::labels::STORE)
            .map(String::as_str)
    });
    policy
        .stores
        .foreign(seen)
        .map(|theirs| Block::ForeignStore {
            theirs,
            ours: policy.stores.ours.clone(),
            created: policy.stores.created,
        })
}

/// Suspends and locks held by others.
pub fn suspends_and_locks(id: &ClusterId, app: &AppName, policy: &Policy) -> Vec<Block> {
    let mut out = suspended(&policy.suspends, id, app, policy.now);
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

/// Everything that stops a desired cluster's plan now.
pub fn blocks(
    d: &Arc<DesiredCluster>,
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
    out.extend(foreign_store(observed.clusters.get(&d.id), policy));
    out.extend(suspends_and_locks(&d.id, &d.app, policy));
    // Finishing a rollback is never held by windows, approvals or promotion: it makes the
    // cluster safe again.
    if let Some(env) = env.filter(|_| cp.action != Action::RollBack) {
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
        out.extend(super::unhappy(d, &env.flapping, policy));
        // Going back (a pin or a veto) to a version that was live and healthy here is not a
        // new version: no approval or promotion holds it. Anything else is.
        let back = cp.control.is_some()
            && policy
                .deployed
                .iter()
                .any(|r| r.cluster == d.id && r.artifact == d.artifact());
        let rolls = matches!(cp.action, Action::Create | Action::RollOut);
        if rolls {
            out.extend(analysis_verdict(d, policy));
        }
        let new_version = rolls && !back;
        if new_version && env.approval == crate::spec::Approval::Required {
            let approved = policy
                .approvals
                .iter()
                .any(|a| a.environment == env.name && a.app == d.app && a.version == d.version);
            if !approved {
                out.push(Block::AwaitingApproval {
                    version: d.version.clone(),
                    approvers: env.approvers.clone(),
                });
            }
        }
        if new_version {
            let waiting = promotion_waiting(d, env, desired, observed);
            if !waiting.is_empty() {
                out.push(Block::Promotion {
                    waiting_on: waiting,
                    version: d.version.clone(),
                });
            }
        }
    }
    if let Err((step, reason)) = check_invariant(
        Sim::of(observed.clusters.get(&d.id)),
        &cp.steps.iter().map(|p| p.step.clone()).collect::<Vec<_>>(),
        false,
    ) {
        out.push(Block::GuardRefused {
            step: step + 1,
            reason,
        });
    }
    out
}

/// An analysis that holds or failed this very spec of the cluster, as a block.
fn analysis_verdict(d: &DesiredCluster, policy: &Policy) -> Option<Block> {
    let v = policy
        .verdicts
        .iter()
        .find(|v| v.cluster == d.id && v.spec_hash == d.spec_hash && v.hash == d.hash)?;
    let (cluster, version, why) = (d.id.to_string(), v.version.clone(), v.why.clone());
    Some(if v.held {
        Block::AnalysisHeld {
            cluster,
            version,
            why,
        }
    } else {
        Block::AnalysisFailed {
            cluster,
            version,
            why,
        }
    })
}

/// The environments `env` depends on where this version is not yet live and healthy.
fn promotion_waiting(
    d: &DesiredCluster,
    env: &DesiredEnvironment,
    desired: &DesiredState,
    observed: &ObservedState,
) -> Vec<String> {
    env.depends_on
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
                        // All of its traffic: a canary still under way upstream has not
                        // passed there yet.
                        l.server_groups.iter().any(|g| {
                            g.serving()
                                && g.weight == 100
                                && g.version == d.version
                                && g.healthy() >= u.capacity.desired.min(1)
                        })
                    })
                })
        })
        .map(ToString::to_string)
        .collect()
}
