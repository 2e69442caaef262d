//! The traffic guard as a simulation: play a cluster's steps forward and check, after every
//! step, that a cluster that served traffic still has an enabled, healthy server group.
//!
//! Like omicron's blippy for blueprints: the planner runs it on every plan, the property tests
//! on every generated plan, and the engine re-checks the same rule against fresh observation.

use std::collections::BTreeMap;

use super::Step;
use crate::model::{ObservedCluster, Sequence};

/// A server group as the simulation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimGroup {
    /// Target size.
    pub capacity: u32,
    /// Healthy instances.
    pub healthy: u32,
    /// In traffic.
    pub enabled: bool,
    /// Traffic weight.
    pub weight: u8,
}

impl SimGroup {
    fn serving(&self) -> bool {
        self.enabled && self.weight > 0 && self.healthy > 0
    }
}

/// A cluster as the simulation sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sim {
    /// Groups by sequence.
    pub groups: BTreeMap<Sequence, SimGroup>,
}

impl Sim {
    /// The simulation of an observed cluster (or an empty one).
    pub fn of(live: Option<&ObservedCluster>) -> Self {
        let mut s = Self::default();
        for g in live.map(|l| l.server_groups.as_slice()).unwrap_or(&[]) {
            s.groups.insert(
                g.sequence,
                SimGroup {
                    capacity: g.capacity,
                    healthy: g.healthy(),
                    enabled: g.enabled,
                    weight: g.weight,
                },
            );
        }
        s
    }

    /// Whether any group serves.
    pub fn serving(&self) -> bool {
        self.groups.values().any(SimGroup::serving)
    }

    /// Applies a step as if it succeeded; returns why the cluster would stop serving *during*
    /// the step, if it would.
    pub fn apply(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::CreateServerGroup {
                sequence,
                capacity,
                enabled,
                ..
            } => {
                self.groups.entry(*sequence).or_insert(SimGroup {
                    capacity: *capacity,
                    healthy: 0,
                    enabled: *enabled,
                    weight: if *enabled { 100 } else { 0 },
                });
            }
            Step::WaitHealthy {
                sequence, count, ..
            } => {
                if let Some(g) = self.groups.get_mut(sequence) {
                    g.healthy = g.healthy.max((*count).min(g.capacity));
                }
            }
            Step::Enable { sequence, .. } => {
                if let Some(g) = self.groups.get_mut(sequence) {
                    g.enabled = true;
                    g.weight = 100;
                }
            }
            Step::Disable { sequence, .. } => {
                if let Some(g) = self.groups.get_mut(sequence) {
                    g.enabled = false;
                }
            }
            Step::Shift { shares } => {
                for s in shares {
                    if let Some(g) = self.groups.get_mut(&s.sequence) {
                        g.enabled = true;
                        g.weight = s.weight;
                    }
                }
            }
            Step::Resize { sequence, to, .. } => {
                if let Some(g) = self.groups.get_mut(sequence) {
                    g.capacity = *to;
                    g.healthy = g.healthy.min(*to);
                }
            }
            Step::Pause { .. } | Step::UpdateInPlace { .. } => {}
            Step::ReplaceInstances {
                sequence, count, ..
            } => {
                // While a batch is replaced, `count` instances are out.
                let others = self
                    .groups
                    .iter()
                    .any(|(s, g)| s != sequence && g.serving());
                if let Some(g) = self.groups.get_mut(sequence)
                    && g.serving()
                    && g.healthy <= *count
                    && !others
                {
                    return Err(format!(
                        "replacing {count} of {} healthy instances leaves none serving",
                        g.healthy
                    ));
                }
            }
            Step::Heal { sequence, .. } => {
                if let Some(g) = self.groups.get_mut(sequence) {
                    g.healthy = g.capacity;
                }
            }
            Step::Destroy { sequence, .. } => {
                self.groups.remove(sequence);
            }
        }
        Ok(())
    }
}

/// Plays `steps` on `sim`; returns the index and reason of the first step after which a cluster
/// that was serving would serve no more.
pub fn check_invariant(mut sim: Sim, steps: &[Step]) -> Result<(), (usize, String)> {
    let was_serving = sim.serving();
    for (i, step) in steps.iter().enumerate() {
        sim.apply(step).map_err(|e| (i, e))?;
        if was_serving && !sim.serving() {
            return Err((
                i,
                format!("after `{step}` no enabled server group would have a healthy instance"),
            ));
        }
    }
    Ok(())
}
