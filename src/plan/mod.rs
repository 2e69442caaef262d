//! Planning: a pure function of desired state, observed state and policy to a [`Plan`].
//!
//! The plan leaves no choices to execution: sequences, capacities, weights and step order are
//! fixed here; it records what it was based on (config revision, observed fingerprint) so a
//! stale plan is refused; and a cluster that may not move says why.

mod blocks;
mod cleanup;
mod controls;
mod drift;
mod guard;
mod planner;
mod policy;
mod resize;
mod sequence;
mod strategy;
mod walk;
mod window;

use serde::{Deserialize, Serialize};

pub use blocks::suspended;
pub use controls::{Controlled, controlled, describe, unhappy};
pub use guard::{Sim, SimGroup, check_invariant, guard_step};
pub use planner::{Selection, plan};
pub use policy::{
    AnalysisVerdict, Approval, Deployed, Failure, Lock, PendingRollback, Pin, Policy, Scope,
    Stores, Suspend, Veto,
};
pub use sequence::{newest_first, newest_sequence, next_sequence};
pub use window::in_window;

use crate::actuation::Step;
use crate::model::{ClusterId, DesiredCluster, SpecHash};
use crate::spec::{AppName, EnvName, StrategyKind};

/// The version of the plan's JSON shape (`schemas/plan.schema.json`). Version 2 made steps
/// operations or gates, each with the rollback it would run.
pub const PLAN_FORMAT: u32 = 2;

/// What a plan does to one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// A new cluster: its first server group.
    Create,
    /// A new version or spec: a new server group rolled out by the strategy.
    RollOut,
    /// Only capacity changed: resize in place.
    Resize,
    /// Live state drifted from desired: restore it.
    Restore,
    /// Destroy disabled server groups beyond `keepDisabled`.
    Cleanup,
    /// An orphaned cluster in an environment with pruning on: destroy it.
    Prune,
    /// An orphaned cluster, reported only (pruning is off).
    Orphan,
    /// The target could not be observed: nothing is planned.
    Unobserved,
    /// A rollback was interrupted: finish it.
    RollBack,
    /// Held where it is by a pin or a veto, though Git asks for another version.
    Held,
}

impl Action {
    /// The symbol in text plans.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Create => "+",
            Self::RollOut => ">>",
            Self::Resize | Self::Restore => "~",
            Self::Cleanup | Self::Prune => "-",
            Self::Orphan => "?",
            Self::Unobserved => "!",
            Self::RollBack => "<<",
            Self::Held => "=",
        }
    }

    /// The word in text plans.
    pub fn word(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::RollOut => "roll out",
            Self::Resize => "resize",
            Self::Restore => "restore (drift)",
            Self::Cleanup => "clean up",
            Self::Prune => "prune",
            Self::Orphan => "orphan",
            Self::Unobserved => "not observed",
            Self::RollBack => "finish rollback",
            Self::Held => "held",
        }
    }
}

/// Why a cluster will not move now.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum Block {
    /// A break-glass suspend covers it.
    Suspended {
        /// Where the suspend applies.
        scope: String,
        /// Who.
        who: String,
        /// Why.
        reason: String,
        /// Until when.
        until: Option<jiff::Timestamp>,
    },
    /// `suspended: true` in a spec.
    SuspendedInSpec {
        /// Application, environment or cluster.
        by: String,
    },
    /// Another actuation holds the cluster's lock.
    Locked {
        /// The holder.
        owner: String,
        /// What for.
        reason: String,
        /// When it lapses.
        expires: jiff::Timestamp,
    },
    /// Outside every deployment window of the environment.
    OutsideWindow {
        /// The windows, as written.
        windows: Vec<String>,
    },
    /// The environment needs approval of this version.
    AwaitingApproval {
        /// The version.
        version: String,
        /// Who may approve it (users and `group:NAME`s); anyone when empty.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        approvers: Vec<String>,
    },
    /// An upstream environment does not run this version healthy yet.
    Promotion {
        /// The environments still to pass.
        waiting_on: Vec<String>,
        /// The version.
        version: String,
    },
    /// A step would leave the serving cluster without a healthy enabled group.
    GuardRefused {
        /// The step's number, 1-based as printed.
        step: usize,
        /// Why.
        reason: String,
    },
    /// The target could not be observed.
    TargetUnavailable {
        /// Why.
        reason: String,
    },
    /// Its canary analysis holds for a person to decide.
    AnalysisHeld {
        /// The cluster, as the commands that decide take it.
        cluster: String,
        /// The version.
        version: String,
        /// What it came to and why (`holds: ...`).
        why: String,
    },
    /// Its canary analysis failed (or was rejected): not tried again as it is.
    AnalysisFailed {
        /// The cluster, as `keelson retry` takes it.
        cluster: String,
        /// The version.
        version: String,
        /// Why.
        why: String,
    },
    /// Pinned: held at a version whatever Git asks for.
    Pinned(PinHold),
    /// The version it would move to is vetoed.
    Vetoed {
        /// The vetoed version.
        version: String,
        /// Who vetoed it.
        who: String,
        /// Why.
        reason: String,
        /// The version it stays at, the last live and healthy here; `None` when none was
        /// recorded, and it is held as it is.
        stays_at: Option<String>,
    },
    /// The flapping guard: its rollouts of this desired state keep failing.
    Unhappy {
        /// Failed rollouts within the window.
        attempts: u32,
        /// When it is tried again (unless its desired state changes or someone retries).
        until: jiff::Timestamp,
        /// The last error.
        error: String,
        /// The command that tries again at once.
        retry: String,
    },
    /// Another state store made the cluster: this one may be a deleted store made anew.
    ForeignStore {
        /// The store that made it.
        theirs: String,
        /// This store.
        ours: String,
        /// When this store was made.
        created: jiff::Timestamp,
    },
}

impl std::fmt::Display for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Suspended {
                scope,
                who,
                reason,
                until,
            } => {
                write!(f, "suspended ({scope}) by {who}: {reason}")?;
                if let Some(u) = until {
                    write!(f, " until {u}")?;
                }
                Ok(())
            }
            Self::SuspendedInSpec { by } => write!(f, "suspended in the {by} spec"),
            Self::Locked {
                owner,
                reason,
                expires,
            } => write!(f, "locked by {owner} ({reason}) until {expires}"),
            Self::OutsideWindow { windows } => {
                write!(f, "outside the deployment windows: {}", windows.join("; "))
            }
            Self::AwaitingApproval { version, approvers } if approvers.is_empty() => {
                write!(f, "awaiting approval of {version} (keelson approve)")
            }
            Self::AwaitingApproval { version, approvers } => write!(
                f,
                "awaiting approval of {version} by {} (keelson approve)",
                approvers.join(" or ")
            ),
            Self::Promotion {
                waiting_on,
                version,
            } => write!(
                f,
                "waiting for {version} to be live and healthy in {}",
                waiting_on.join(", ")
            ),
            Self::GuardRefused { step, reason } => {
                write!(f, "traffic guard refuses step {step}: {reason}")
            }
            Self::TargetUnavailable { reason } => write!(f, "target unavailable: {reason}"),
            Self::AnalysisHeld {
                cluster,
                version,
                why,
            } => write!(
                f,
                "the canary analysis of {version} {why}; `keelson approve {cluster}` goes on, `keelson reject {cluster}` rolls back"
            ),
            Self::AnalysisFailed {
                cluster,
                version,
                why,
            } => write!(
                f,
                "the canary analysis of {version} {why}; it is not rolled out again until its spec changes or someone runs `keelson retry {cluster}`"
            ),
            Self::Pinned(p) => p.fmt(f),
            Self::Vetoed {
                version,
                who,
                reason,
                stays_at,
            } => {
                write!(f, "{version} is vetoed by {who}: {reason}; ")?;
                match stays_at {
                    Some(v) => write!(f, "it stays at {v}, the last version live and healthy here"),
                    None => f.write_str(
                        "no other version was recorded live and healthy here, so it is held as it is (the traffic guard never leaves it without traffic); a new version in Git or `keelson unveto` moves it",
                    ),
                }
            }
            Self::Unhappy {
                attempts,
                until,
                error,
                retry,
            } => write!(
                f,
                "unhappy: {attempts} failed rollouts of this desired state; left alone until {until} unless it changes or someone runs `{retry}`; last error: {error}"
            ),
            Self::ForeignStore {
                theirs,
                ours,
                created,
            } => write!(
                f,
                "made through state store {theirs}, not this one ({ours}, made {created}): if keelson.db was deleted or replaced, restore it; to take the cluster over, run `keelson adopt`"
            ),
        }
    }
}

/// A changed field, for the diff.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Change {
    /// The field, e.g. `version` or `capacity.desired`.
    pub field: String,
    /// Live value (absent for a new cluster).
    pub from: Option<String>,
    /// Desired value (absent when destroyed).
    pub to: Option<String>,
}

/// A step of a rollback, with its description.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RollbackStep {
    /// The operation or gate.
    #[serde(flatten)]
    pub step: Step,
    /// One line for people.
    pub description: String,
}

/// A step with what guards it and what undoes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlannedStep {
    /// The operation or gate.
    #[serde(flatten)]
    pub step: Step,
    /// One line for people.
    pub description: String,
    /// What must hold before it runs.
    pub guard: String,
    /// What runs if it fails: the inverse of every operation up to and including it (those a
    /// resumed rollout did before too), in reverse order. The engine computes its rollback from
    /// what ran with the same function.
    pub rollback: Vec<RollbackStep>,
}

impl PlannedStep {
    /// A step and the rollback that undoes everything up to it.
    pub fn new(step: Step, rollback: Vec<Step>) -> Self {
        Self {
            description: step.to_string(),
            guard: step.guard(),
            rollback: rollback
                .into_iter()
                .map(|s| RollbackStep {
                    description: s.to_string(),
                    step: s,
                })
                .collect(),
            step,
        }
    }
}

/// The plan for one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPlan {
    /// Environment, target and name.
    pub id: ClusterId,
    /// The application.
    pub app: AppName,
    /// What happens.
    pub action: Action,
    /// Whether this restores drift.
    pub drift: bool,
    /// The strategy used.
    pub strategy: Option<StrategyKind>,
    /// Why, in a sentence.
    pub reason: String,
    /// Changed fields.
    pub changes: Vec<Change>,
    /// Operations of this rollout the observation shows already done (a resumed rollout):
    /// part of every rollback of what follows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<crate::actuation::Op>,
    /// The ordered steps.
    pub steps: Vec<PlannedStep>,
    /// What stops it now; empty when it may go ahead.
    pub blocked: Vec<Block>,
    /// The desired cluster the steps build (absent for orphans), so a saved plan is complete.
    pub desired: Option<std::sync::Arc<DesiredCluster>>,
    /// A pin or veto that changed the version Git asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<Control>,
}

/// A pin that holds a cluster at a version, and what Git asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PinHold {
    /// The pinned version.
    pub version: String,
    /// The version Git asks for.
    pub wanted: String,
    /// Who pinned it.
    pub who: String,
    /// Why.
    pub reason: String,
    /// When the pin lapses, if ever.
    pub until: Option<jiff::Timestamp>,
}

impl std::fmt::Display for PinHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pinned to {} by {}: {}",
            self.version, self.who, self.reason
        )?;
        if let Some(u) = self.until {
            write!(f, " (until {u})")?;
        }
        if self.wanted != self.version {
            write!(f, "; Git asks for {}", self.wanted)?;
        }
        Ok(())
    }
}

/// How a pin or a veto changed the version a cluster moves to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum Control {
    /// Pinned to another version than Git's.
    Pinned(PinHold),
    /// The version asked for is vetoed: back to the last one live and healthy here.
    Vetoed {
        /// The vetoed version.
        version: String,
        /// Who vetoed it.
        who: String,
        /// Why.
        reason: String,
        /// The version deployed instead.
        back_to: String,
    },
}

impl std::fmt::Display for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pinned(p) => p.fmt(f),
            Self::Vetoed {
                version,
                who,
                reason,
                back_to,
            } => write!(
                f,
                "{version} is vetoed by {who}: {reason}; back to {back_to}, the last version live and healthy here"
            ),
        }
    }
}

impl ClusterPlan {
    /// Whether it may be applied now.
    pub fn ready(&self) -> bool {
        self.blocked.is_empty()
    }
}

/// Counts for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Clusters created.
    pub create: usize,
    /// Clusters rolled out.
    pub roll_out: usize,
    /// Clusters resized.
    pub resize: usize,
    /// Clusters restored from drift.
    pub restore: usize,
    /// Clusters whose interrupted rollback is finished.
    pub roll_back: usize,
    /// Server groups destroyed (cleanup, highlander, prune), not clusters.
    pub destroy_server_groups: usize,
    /// Orphaned clusters reported.
    pub orphans: usize,
    /// Clusters blocked.
    pub blocked: usize,
    /// Clusters whose target could not be observed.
    pub unobserved: usize,
    /// Clusters already as desired.
    pub unchanged: usize,
}

/// A whole plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The JSON shape version.
    pub format_version: u32,
    /// The config revision the plan is for (Git commit or content hash).
    pub revision: String,
    /// Fingerprint of the observed state it was computed against.
    pub observed_fingerprint: SpecHash,
    /// When it was computed.
    pub generated_at: jiff::Timestamp,
    /// Environments in promotion order (each after those it depends on).
    #[serde(default)]
    pub environments: Vec<EnvName>,
    /// Clusters with changes or blocks, by environment in promotion order, then by id.
    pub clusters: Vec<ClusterPlan>,
    /// Counts.
    pub summary: Summary,
    /// Disabled server groups kept for now and when `destroyDisabledAfter` destroys them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scheduled: Vec<ScheduledCleanup>,
}

/// A disabled server group kept for a fast rollback until a set time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledCleanup {
    /// The cluster.
    pub cluster: ClusterId,
    /// The server group.
    pub group: crate::model::ServerGroupName,
    /// Since when it is disabled (as first seen).
    pub since: jiff::Timestamp,
    /// When it is destroyed.
    pub at: jiff::Timestamp,
}

impl Plan {
    /// Whether the plan changes anything (orphans reported and held clusters do not count).
    pub fn has_changes(&self) -> bool {
        self.clusters
            .iter()
            .any(|c| !matches!(c.action, Action::Orphan | Action::Unobserved | Action::Held))
    }

    /// The plan's operations and gates per cluster, for comparing two plans of the same
    /// revision (a saved plan against a fresh one): everything that would be done, nothing else.
    pub fn commitments(&self) -> Vec<(&ClusterId, Vec<&Step>)> {
        self.clusters
            .iter()
            .filter(|c| !c.steps.is_empty())
            .map(|c| (&c.id, c.steps.iter().map(|s| &s.step).collect()))
            .collect()
    }

    /// Where `self` (a saved plan) first commits to something `now` (planning again) does not,
    /// in words; `None` when they commit to the same operations and gates.
    pub fn differs_from(&self, now: &Plan) -> Option<String> {
        let (saved, fresh) = (self.commitments(), now.commitments());
        for (id, steps) in &saved {
            let Some((_, again)) = fresh.iter().find(|(i, _)| i == id) else {
                return Some(format!("it has steps for {id}, and planning now has none"));
            };
            for (n, (a, b)) in steps.iter().zip(again).enumerate() {
                if a != b {
                    return Some(format!(
                        "{id} step {}: the file says `{a}`, planning now gives `{b}`",
                        n + 1
                    ));
                }
            }
            if steps.len() != again.len() {
                return Some(format!(
                    "{id}: the file has {} steps, planning now gives {}",
                    steps.len(),
                    again.len()
                ));
            }
        }
        fresh
            .iter()
            .find(|(id, _)| !saved.iter().any(|(i, _)| i == id))
            .map(|(id, _)| format!("planning now has steps for {id}, and the file has none"))
    }
}
