//! Operations: what a provider does to a target. One vocabulary from the planner to the
//! provider's wire; each operation carries the values it changes from, so it can be inverted
//! without looking at the target again.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{Sequence, ServerGroupName, SpecHash};

/// A server group spec by reference: what a plan, the journal and an inverse need to name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecRef {
    /// The artifact version.
    pub version: String,
    /// The hash of the immutable spec.
    pub spec_hash: SpecHash,
}

impl fmt::Display for SpecRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.version)
    }
}

/// One group's traffic before and after an operation. A weight of 0 is out of traffic; weights
/// are the groups' shares of the cluster's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficChange {
    /// The server group.
    pub group: ServerGroupName,
    /// Its sequence.
    pub sequence: Sequence,
    /// Its weight before.
    pub from: u8,
    /// Its weight after.
    pub to: u8,
    /// The share it really gets where the target moves traffic by whole instances, when that
    /// differs from `to` (the planner fills it from the provider's capabilities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<u8>,
}

/// What a provider does to one cluster of a target; every operation is idempotent.
///
/// `S` is how a server group's spec travels: a [`SpecRef`] in plans and the journal, the whole
/// desired cluster when a provider executes it, the agent's own copy on the local wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum Op<S = SpecRef> {
    /// Create a server group; a no-op if it exists.
    Create {
        /// Its name.
        group: ServerGroupName,
        /// Its sequence.
        sequence: Sequence,
        /// What its instances run.
        spec: S,
        /// Instances to start.
        capacity: u32,
        /// Its traffic weight once it has healthy instances (0: out of traffic).
        weight: u8,
    },
    /// Change a group's instance count.
    Resize {
        /// The group.
        group: ServerGroupName,
        /// Its sequence.
        sequence: Sequence,
        /// Instances before.
        from: u32,
        /// Instances after.
        to: u32,
    },
    /// Set the traffic weights of some of a cluster's groups at once.
    Traffic {
        /// The groups whose weight changes, in the order to apply.
        changes: Vec<TrafficChange>,
    },
    /// Give a group a new spec for instances started from now on; the provider keeps the
    /// previous one, so [`Op::RevertInPlace`] can restore it.
    UpdateInPlace {
        /// The group.
        group: ServerGroupName,
        /// Its sequence.
        sequence: Sequence,
        /// The new spec.
        spec: S,
        /// The spec it replaces, where known.
        previous: Option<SpecRef>,
    },
    /// Give a group back the spec it had before an update in place.
    RevertInPlace {
        /// The group.
        group: ServerGroupName,
        /// Its sequence.
        sequence: Sequence,
        /// The spec to restore (the provider refuses if it kept another).
        to: SpecRef,
        /// The spec it leaves.
        from: SpecRef,
    },
    /// Replace up to `count` instances that run another spec than their group's.
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
    /// Start missing instances again.
    Heal {
        /// The group.
        group: ServerGroupName,
        /// Its sequence.
        sequence: Sequence,
        /// Instances missing.
        missing: u32,
    },
    /// Destroy a group and its instances; a no-op if it is gone.
    Destroy {
        /// The group.
        group: ServerGroupName,
        /// Its sequence.
        sequence: Sequence,
    },
}

impl<S> Op<S> {
    /// The same operation with its spec carried as `f` makes it.
    pub fn map_spec<T, E>(self, f: impl FnOnce(S) -> Result<T, E>) -> Result<Op<T>, E> {
        Ok(match self {
            Self::Create {
                group,
                sequence,
                spec,
                capacity,
                weight,
            } => Op::Create {
                group,
                sequence,
                spec: f(spec)?,
                capacity,
                weight,
            },
            Self::UpdateInPlace {
                group,
                sequence,
                spec,
                previous,
            } => Op::UpdateInPlace {
                group,
                sequence,
                spec: f(spec)?,
                previous,
            },
            Self::Resize {
                group,
                sequence,
                from,
                to,
            } => Op::Resize {
                group,
                sequence,
                from,
                to,
            },
            Self::Traffic { changes } => Op::Traffic { changes },
            Self::RevertInPlace {
                group,
                sequence,
                to,
                from,
            } => Op::RevertInPlace {
                group,
                sequence,
                to,
                from,
            },
            Self::ReplaceInstances {
                group,
                sequence,
                count,
                batch,
                of,
            } => Op::ReplaceInstances {
                group,
                sequence,
                count,
                batch,
                of,
            },
            Self::Heal {
                group,
                sequence,
                missing,
            } => Op::Heal {
                group,
                sequence,
                missing,
            },
            Self::Destroy { group, sequence } => Op::Destroy { group, sequence },
        })
    }

    /// The groups it touches, by sequence.
    pub fn sequences(&self) -> Vec<Sequence> {
        match self {
            Self::Traffic { changes } => changes.iter().map(|c| c.sequence).collect(),
            Self::Create { sequence, .. }
            | Self::Resize { sequence, .. }
            | Self::UpdateInPlace { sequence, .. }
            | Self::RevertInPlace { sequence, .. }
            | Self::ReplaceInstances { sequence, .. }
            | Self::Heal { sequence, .. }
            | Self::Destroy { sequence, .. } => vec![*sequence],
        }
    }

    /// The operation with its spec as a reference (for the journal and comparisons).
    pub fn as_ref_op(&self) -> Op<SpecRef>
    where
        S: Clone + AsSpecRef,
    {
        self.clone()
            .map_spec(|s| Ok::<_, std::convert::Infallible>(s.spec_ref()))
            .unwrap_or_else(|e| match e {})
    }

    /// What must hold before it runs, in a sentence (the engine re-checks the guard).
    pub fn guard(&self) -> String {
        match self {
            Self::Create { group, .. } => {
                format!("{group} does not exist yet, or exists with this spec")
            }
            Self::Traffic { changes } => {
                let on: Vec<String> = changes
                    .iter()
                    .filter(|c| c.to > 0)
                    .map(|c| c.group.to_string())
                    .collect();
                if on.is_empty() {
                    "another enabled group serves healthy traffic".into()
                } else {
                    format!("{} healthy", on.join(" and "))
                }
            }
            Self::Resize { group, to, .. } => {
                format!("{group} keeps serving while it moves to {to} instances")
            }
            Self::UpdateInPlace { group, .. } | Self::RevertInPlace { group, .. } => {
                format!("{group} serves healthy traffic")
            }
            Self::ReplaceInstances { group, count, .. } => {
                format!("{group} keeps a healthy instance while {count} are replaced")
            }
            Self::Heal { .. } => "none".into(),
            Self::Destroy { group, .. } => {
                format!("{group} is out of traffic and another group serves")
            }
        }
    }
}

/// A spec that can name itself by reference.
pub trait AsSpecRef {
    /// Its version and hash.
    fn spec_ref(&self) -> SpecRef;
}

impl AsSpecRef for SpecRef {
    fn spec_ref(&self) -> SpecRef {
        self.clone()
    }
}

impl AsSpecRef for std::sync::Arc<crate::model::DesiredCluster> {
    fn spec_ref(&self) -> SpecRef {
        SpecRef {
            version: self.version.clone(),
            spec_hash: self.spec_hash.clone(),
        }
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl<S: fmt::Display> fmt::Display for Op<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Create {
                group,
                spec,
                capacity,
                weight,
                ..
            } => write!(
                f,
                "create {group} ({spec}, {capacity} instance{}, {})",
                plural(*capacity),
                match weight {
                    0 => "disabled".to_string(),
                    100 => "enabled".to_string(),
                    w => format!("weight {w}%"),
                }
            ),
            Self::Resize {
                group, from, to, ..
            } => write!(f, "resize {group} {from} -> {to}"),
            Self::Traffic { changes } => match changes.as_slice() {
                [one] if one.to == 100 && one.share.is_none() => write!(f, "enable {}", one.group),
                [one] if one.to == 0 => write!(f, "disable {}", one.group),
                many => {
                    let parts: Vec<String> = many
                        .iter()
                        .map(|c| match c.share {
                            Some(s) => format!("{} {}% (by instances: {s}%)", c.group, c.to),
                            None => format!("{} {}%", c.group, c.to),
                        })
                        .collect();
                    write!(f, "shift traffic: {}", parts.join(", "))
                }
            },
            Self::UpdateInPlace { group, spec, .. } => {
                write!(f, "update {group} in place to {spec}")
            }
            Self::RevertInPlace { group, to, .. } => {
                write!(f, "revert {group} in place to {to}")
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
                plural(*count)
            ),
            Self::Heal { group, missing, .. } => write!(
                f,
                "restore {missing} missing instance{} of {group}",
                plural(*missing)
            ),
            Self::Destroy { group, .. } => write!(f, "destroy {group}"),
        }
    }
}
