//! Plan steps: the operations a strategy expands to, each with its guard and its rollback.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{Sequence, ServerGroupName, SpecHash};
use crate::spec::Duration;

/// One group's share of traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Share {
    /// The server group.
    pub group: ServerGroupName,
    /// Its sequence.
    pub sequence: Sequence,
    /// Percent of the cluster's traffic.
    pub weight: u8,
}

/// One operation on one cluster. Steps run in order; each is idempotent on the provider.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum Step {
    /// Create a server group, out of traffic unless `enabled`.
    CreateServerGroup {
        /// Its name.
        group: ServerGroupName,
        /// Its sequence.
        sequence: Sequence,
        /// The artifact version.
        version: String,
        /// The spec hash it runs.
        spec_hash: SpecHash,
        /// Instances to start.
        capacity: u32,
        /// Whether it joins traffic as soon as instances are healthy.
        enabled: bool,
    },
    /// Wait until `count` instances of a group are healthy, or fail after `timeout`.
    WaitHealthy {
        /// The group.
        group: ServerGroupName,
        /// Its sequence.
        sequence: Sequence,
        /// Healthy instances needed.
        count: u32,
        /// Deadline.
        timeout: Duration,
    },
    /// Put a group in traffic at full weight.
    Enable {
        /// The group.
        group: ServerGroupName,
        /// Its sequence.
        sequence: Sequence,
    },
    /// Set traffic weights of enabled groups (canary, rolling red/black).
    Shift {
        /// Weights, summing to 100.
        shares: Vec<Share>,
    },
    /// Take a group out of traffic; its instances keep running.
    Disable {
        /// The group.
        group: ServerGroupName,
        /// Its sequence.
        sequence: Sequence,
    },
    /// Change a group's instance count.
    Resize {
        /// The group.
        group: ServerGroupName,
        /// Its sequence.
        sequence: Sequence,
        /// Current size.
        from: u32,
        /// New size.
        to: u32,
    },
    /// Hold before the next step (canary analysis hook point).
    Pause {
        /// How long.
        duration: Duration,
    },
    /// Give a group a new spec for instances started from now on (rolling update).
    UpdateInPlace {
        /// The group.
        group: ServerGroupName,
        /// Its sequence.
        sequence: Sequence,
        /// The new version.
        version: String,
        /// The new spec hash.
        spec_hash: SpecHash,
    },
    /// Replace `count` instances that run an old spec, at most `count` at a time.
    ReplaceInstances {
        /// The group.
        group: ServerGroupName,
        /// Its sequence.
        sequence: Sequence,
        /// Instances in this batch.
        count: u32,
        /// Batch number, 1-based.
        batch: u32,
        /// Number of batches.
        of: u32,
    },
    /// Start missing instances again (drift).
    Heal {
        /// The group.
        group: ServerGroupName,
        /// Its sequence.
        sequence: Sequence,
        /// Instances missing or unhealthy.
        missing: u32,
    },
    /// Destroy a group and its instances.
    Destroy {
        /// The group.
        group: ServerGroupName,
        /// Its sequence.
        sequence: Sequence,
    },
}

impl Step {
    /// The group the step acts on, if one.
    pub fn sequence(&self) -> Option<Sequence> {
        match self {
            Self::CreateServerGroup { sequence, .. }
            | Self::WaitHealthy { sequence, .. }
            | Self::Enable { sequence, .. }
            | Self::Disable { sequence, .. }
            | Self::Resize { sequence, .. }
            | Self::UpdateInPlace { sequence, .. }
            | Self::ReplaceInstances { sequence, .. }
            | Self::Heal { sequence, .. }
            | Self::Destroy { sequence, .. } => Some(*sequence),
            Self::Shift { .. } | Self::Pause { .. } => None,
        }
    }

    /// What must hold before the step may run (re-checked by the engine against a fresh
    /// observation).
    pub fn guard(&self) -> String {
        match self {
            Self::CreateServerGroup { group, .. } => {
                format!("{group} does not exist yet, or exists with this spec")
            }
            Self::WaitHealthy { .. } | Self::Pause { .. } => {
                "cluster still serves from a healthy enabled group".into()
            }
            Self::Enable { group, .. } => format!("{group} has healthy instances"),
            Self::Shift { shares } => {
                let names: Vec<String> = shares
                    .iter()
                    .filter(|s| s.weight > 0)
                    .map(|s| s.group.to_string())
                    .collect();
                format!("{} healthy", names.join(" and "))
            }
            Self::Disable { group, .. } => {
                format!("another enabled group serves healthy traffic without {group}")
            }
            Self::Resize { to, group, .. } => {
                format!("{group} keeps serving while it moves to {to} instances")
            }
            Self::UpdateInPlace { group, .. } => format!("{group} serves healthy traffic"),
            Self::ReplaceInstances { group, count, .. } => {
                format!("{group} keeps a healthy instance while {count} are replaced")
            }
            Self::Heal { .. } => "none".into(),
            Self::Destroy { group, .. } => {
                format!("{group} is out of traffic and the replacement is enabled and healthy")
            }
        }
    }

    /// What happens to the cluster if this step fails.
    pub fn rollback(&self) -> String {
        match self {
            Self::CreateServerGroup { group, .. } | Self::WaitHealthy { group, .. } => {
                format!("disable {group}; the previous group keeps serving")
            }
            Self::Enable { group, .. } => {
                format!("disable {group}; re-enable the last healthy group")
            }
            Self::Shift { .. } | Self::Pause { .. } => {
                "shift all traffic back to the last healthy group".into()
            }
            Self::Disable { group, .. } => format!("re-enable {group}"),
            Self::Resize { group, from, .. } => format!("resize {group} back to {from}"),
            Self::UpdateInPlace { group, .. } | Self::ReplaceInstances { group, .. } => {
                format!("restore {group}'s previous spec and replace the new instances")
            }
            Self::Heal { .. } => "none (retried at the next reconcile)".into(),
            Self::Destroy { .. } => "none (nothing serves from it)".into(),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CreateServerGroup {
                group,
                version,
                capacity,
                enabled,
                ..
            } => {
                write!(
                    f,
                    "create {group} ({version}, {capacity} instance{}{})",
                    if *capacity == 1 { "" } else { "s" },
                    if *enabled { ", enabled" } else { ", disabled" }
                )
            }
            Self::WaitHealthy {
                group,
                count,
                timeout,
                ..
            } => write!(
                f,
                "wait until {count} of {group} healthy (timeout {timeout})"
            ),
            Self::Enable { group, .. } => write!(f, "enable {group}"),
            Self::Shift { shares } => {
                let parts: Vec<String> = shares
                    .iter()
                    .map(|s| format!("{} {}%", s.group, s.weight))
                    .collect();
                write!(f, "shift traffic: {}", parts.join(", "))
            }
            Self::Disable { group, .. } => write!(f, "disable {group}"),
            Self::Resize {
                group, from, to, ..
            } => write!(f, "resize {group} {from} -> {to}"),
            Self::Pause { duration } => write!(f, "pause {duration}"),
            Self::UpdateInPlace { group, version, .. } => {
                write!(f, "update {group} in place to {version}")
            }
            Self::ReplaceInstances {
                group,
                count,
                batch,
                of,
                ..
            } => write!(
                f,
                "replace {count} instance{} of {group} (batch {batch}/{of})",
                if *count == 1 { "" } else { "s" }
            ),
            Self::Heal { group, missing, .. } => write!(
                f,
                "restore {missing} missing instance{} of {group}",
                if *missing == 1 { "" } else { "s" }
            ),
            Self::Destroy { group, .. } => write!(f, "destroy {group}"),
        }
    }
}
