//! The traffic guard as a simulation: play a cluster's steps forward and check, after every
//! step, that a cluster that served traffic still has an enabled, healthy server group.
//!
//! Like omicron's blippy for blueprints: the planner runs it on every plan, the property tests
//! on every generated plan, and the engine checks each step with [`guard_step`] against a fresh
//! observation, so the rule and its message live here only.

use std::collections::BTreeMap;

use crate::actuation::{Gate, Op, Step};
use crate::model::{ObservedCluster, Sequence};

/// A server group as the simulation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimGroup {
    /// Target size.
    pub capacity: u32,
    /// Instances running (healthy or not).
    pub running: u32,
    /// Healthy instances.
    pub healthy: u32,
    /// Instances running another spec than the group's (a rolling update under way).
    pub outdated: u32,
    /// Of those, the healthy ones.
    pub outdated_healthy: u32,
    /// Traffic weight; 0 is out of traffic.
    pub weight: u8,
}

impl SimGroup {
    /// Whether it takes traffic and has a healthy instance.
    pub fn serving(&self) -> bool {
        self.weight > 0 && self.healthy > 0
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
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        for g in live.map(|l| l.server_groups.as_slice()).unwrap_or(&[]) {
            let outdated = g.instances.iter().filter(|i| i.spec_hash != g.spec_hash);
            s.groups.insert(
                g.sequence,
                SimGroup {
                    capacity: g.capacity,
                    running: count(g.instances.len()),
                    healthy: g.healthy(),
                    outdated: count(outdated.clone().count()),
                    outdated_healthy: count(
                        outdated
                            .filter(|i| i.health == crate::model::InstanceHealth::Healthy)
                            .count(),
                    ),
                    weight: if g.enabled { g.weight } else { 0 },
                },
            );
        }
        s
    }

    /// Whether any group serves.
    pub fn serving(&self) -> bool {
        self.groups.values().any(SimGroup::serving)
    }

    /// A group's weight (0 when absent).
    pub fn weight(&self, seq: Sequence) -> u8 {
        self.groups.get(&seq).map_or(0, |g| g.weight)
    }

    /// A group's capacity (0 when absent).
    pub fn capacity(&self, seq: Sequence) -> u32 {
        self.groups.get(&seq).map_or(0, |g| g.capacity)
    }

    /// Applies a step as if it succeeded; returns why the cluster would stop serving *during*
    /// the step, if it would.
    pub fn apply<S>(&mut self, step: &Step<S>) -> Result<(), String> {
        match step {
            Step::Op(op) => self.apply_op(op),
            Step::Gate(g) => {
                self.pass(g);
                Ok(())
            }
        }
    }

    /// Applies a gate as passed.
    pub fn pass(&mut self, gate: &Gate) {
        match gate {
            Gate::Healthy {
                sequence, count, ..
            } => {
                if let Some(g) = self.groups.get_mut(sequence) {
                    g.healthy = g.healthy.max((*count).min(g.capacity));
                    g.running = g.running.max(g.healthy);
                }
            }
            Gate::Settled { sequence, .. } => {
                if let Some(g) = self.groups.get_mut(sequence) {
                    g.healthy = g.capacity;
                    g.running = g.capacity;
                }
            }
            Gate::Elapsed { .. } | Gate::Analysis { .. } | Gate::Verify { .. } => {}
        }
    }

    /// Applies an operation as if it succeeded (see [`Sim::apply`]).
    pub fn apply_op<S>(&mut self, op: &Op<S>) -> Result<(), String> {
        match op {
            Op::Create {
                sequence,
                capacity,
                weight,
                ..
            } => {
                self.groups.entry(*sequence).or_insert(SimGroup {
                    capacity: *capacity,
                    running: *capacity,
                    healthy: 0,
                    outdated: 0,
                    outdated_healthy: 0,
                    weight: *weight,
                });
            }
            Op::Traffic { changes } => {
                for c in changes {
                    if let Some(g) = self.groups.get_mut(&c.sequence) {
                        g.weight = c.to;
                    }
                }
            }
            Op::Resize { sequence, to, .. } => {
                if let Some(g) = self.groups.get_mut(sequence) {
                    g.capacity = *to;
                    g.running = *to;
                    g.healthy = g.healthy.min(*to);
                    g.outdated = g.outdated.min(*to);
                    g.outdated_healthy = g.outdated_healthy.min(g.outdated).min(g.healthy);
                }
            }
            Op::UpdateInPlace { sequence, .. } | Op::RevertInPlace { sequence, .. } => {
                // The instances on the group's spec become the outdated ones, and back.
                if let Some(g) = self.groups.get_mut(sequence) {
                    g.outdated = g.running.saturating_sub(g.outdated);
                    g.outdated_healthy = g.healthy.saturating_sub(g.outdated_healthy);
                }
            }
            Op::ReplaceInstances {
                sequence, count, ..
            } => {
                // A batch takes out up to `count` outdated instances, unhealthy ones first
                // (they cost no capacity); a healthy one taken out serves no more until its
                // replacement passes a health gate.
                let others = self
                    .groups
                    .iter()
                    .any(|(s, g)| s != sequence && g.serving());
                if let Some(g) = self.groups.get_mut(sequence) {
                    let taken = (*count).min(g.outdated);
                    let unhealthy = g.outdated.saturating_sub(g.outdated_healthy);
                    let lost = taken.saturating_sub(unhealthy).min(g.healthy);
                    if g.serving() && g.healthy <= lost && !others {
                        return Err(format!(
                            "replacing {lost} of {} healthy instances leaves none serving",
                            g.healthy
                        ));
                    }
                    g.healthy -= lost;
                    g.outdated -= taken;
                    g.outdated_healthy -= lost.min(g.outdated_healthy);
                }
            }
            Op::Heal { sequence, .. } => {
                if let Some(g) = self.groups.get_mut(sequence) {
                    g.running = g.capacity;
                }
            }
            Op::Destroy { sequence, .. } => {
                self.groups.remove(sequence);
            }
        }
        Ok(())
    }
}

/// The guard for one step: whether running `step` on a cluster as `sim` shows it would leave a
/// cluster that serves without a serving group. `meant_to_stop` is true where that is the point
/// (pruning a cluster no spec declares). The planner, the property tests and the engine all
/// call this, so the rule and its words live here.
pub fn guard_step<S: std::fmt::Display>(
    sim: &mut Sim,
    step: &Step<S>,
    meant_to_stop: bool,
) -> Result<(), String> {
    let was_serving = sim.serving() && !meant_to_stop;
    sim.apply(step)?;
    if was_serving && !sim.serving() {
        return Err(format!(
            "after `{step}` no enabled server group would have a healthy instance"
        ));
    }
    Ok(())
}

/// Plays `steps` on `sim`; returns the index and reason of the first step after which a cluster
/// that was serving would serve no more.
pub fn check_invariant<S: std::fmt::Display>(
    mut sim: Sim,
    steps: &[Step<S>],
    meant_to_stop: bool,
) -> Result<(), (usize, String)> {
    for (i, step) in steps.iter().enumerate() {
        guard_step(&mut sim, step, meant_to_stop).map_err(|e| (i, e))?;
    }
    Ok(())
}
