//! Walking a rollout: a strategy states every stage from the start, each operation with
//! whether the observation shows it done; the walk splits them into the done prefix (for the
//! rollback) and the steps still to run. One function then serves fresh and resumed rollouts.

use crate::actuation::{
    Gate, Op, SpecRef, Step, TrafficChange, TrafficPrecision, Verdict, effective_shares,
};
use crate::model::{ObservedCluster, Sequence, ServerGroupName};

use super::Sim;

/// What a strategy (or a cross-cutting part of the planner) leaves to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollout {
    /// Operations the observation shows already done, in order: their inverses are part of
    /// every rollback of what follows.
    pub done: Vec<Op>,
    /// The steps still to run.
    pub todo: Vec<Step>,
}

/// The walk over a cluster's stages.
#[derive(Debug, Clone)]
pub struct Walk<'a> {
    live: Option<&'a ObservedCluster>,
    sim: Sim,
    done: Vec<Op>,
    todo: Vec<Step>,
    /// Gates met in the done prefix that the observation does not show passed yet.
    pending: Vec<Gate>,
    /// Repairs to make before anything else moves (missing instances started again).
    first: Vec<Step>,
    moving: bool,
    keep_done: bool,
    precision: TrafficPrecision,
}

impl<'a> Walk<'a> {
    /// A walk from `origin` (the cluster as it was before the rollout began) over a cluster
    /// observed as `live`.
    pub fn new(
        live: Option<&'a ObservedCluster>,
        origin: Sim,
        precision: TrafficPrecision,
    ) -> Self {
        Self {
            live,
            sim: origin,
            done: Vec::new(),
            todo: Vec::new(),
            pending: Vec::new(),
            first: Vec::new(),
            moving: false,
            keep_done: true,
            precision,
        }
    }

    /// The cluster as it stands after the stages so far.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// Keeps no done prefix: what the observation shows done is not this rollout's to undo.
    pub fn forget_done(&mut self) {
        self.keep_done = false;
    }

    /// The steps planned so far.
    pub fn planned(&self) -> &[Step] {
        &self.todo
    }

    /// A stage: `done` when the observation shows it happened; `make` builds the operation from
    /// the cluster as it stands (`None`: nothing to do).
    pub fn op(&mut self, done: bool, make: impl FnOnce(&Sim) -> Option<Op>) {
        if !self.moving && done {
            if let Some(op) = make(&self.sim) {
                let _ = self.sim.apply_op(&op);
                self.done.push(op);
                // Stages after a gate happened, so its time passed; a health gate the
                // observation does not show passed still holds the next stage.
                let live = self.live;
                self.pending.retain(|g| {
                    g.observable() && g.judge(live, std::time::Duration::ZERO) != Verdict::Pass
                });
            }
            return;
        }
        if !self.moving {
            // From here on the plan acts; it starts from what is observed.
            // Gates the observation shows passed are left out; a pause never shows passed, so
            // a resumed rollout holds the pause it was in again.
            self.moving = true;
            self.sim = Sim::of(self.live);
            for step in std::mem::take(&mut self.first) {
                let _ = self.sim.apply(&step);
                self.todo.push(step);
            }
            let live = self.live;
            let pending = std::mem::take(&mut self.pending);
            for g in pending {
                if g.judge(live, std::time::Duration::ZERO) != Verdict::Pass {
                    let g = fit(g, &self.sim);
                    self.sim.pass(&g);
                    self.todo.push(Step::Gate(g));
                }
            }
        }
        if let Some(mut op) = make(&self.sim) {
            let _ = self.sim.apply_op(&op);
            self.annotate(&mut op);
            self.todo.push(Step::Op(op));
        }
    }

    /// A stage that is always planned (a repair): the walk moves from here.
    pub fn act(&mut self, make: impl FnOnce(&Sim) -> Option<Op>) {
        self.op(false, make);
    }

    /// Repairs that come before whatever else moves, or on their own when nothing else does.
    pub fn first(&mut self, steps: Vec<Step>) {
        if self.moving {
            for step in steps {
                let _ = self.sim.apply(&step);
                self.todo.push(step);
            }
        } else {
            self.first.extend(steps);
        }
    }

    /// A gate between stages.
    pub fn gate(&mut self, gate: Gate) {
        if self.moving {
            let gate = fit(gate, &self.sim);
            self.sim.pass(&gate);
            self.todo.push(Step::Gate(gate));
        } else {
            self.pending.push(gate);
        }
    }

    /// Ends a strategy's stages: when all of them are done, the gates it left pending guard
    /// nothing more (what follows are repairs with their own gates).
    pub fn close(&mut self) {
        self.pending.clear();
        if !self.moving {
            // Every stage done: the rollout is over, and what follows (repairs) does not undo
            // it. Replayed from the origin, the done stages may differ from the target in
            // details (a size changed since); what follows starts from what is observed.
            self.done.clear();
            self.sim = Sim::of(self.live);
            let first = std::mem::take(&mut self.first);
            if !first.is_empty() {
                self.moving = true;
                for step in first {
                    let _ = self.sim.apply(&step);
                    self.todo.push(step);
                }
            }
        }
    }

    /// The done prefix and the steps to run.
    pub fn finish(self) -> Rollout {
        Rollout {
            done: if self.keep_done {
                self.done
            } else {
                Vec::new()
            },
            todo: self.todo,
        }
    }

    /// Where traffic moves by whole instances, the share each group will really get.
    fn annotate(&self, op: &mut Op) {
        let (TrafficPrecision::Instances, Op::Traffic { changes }) = (self.precision, op) else {
            return;
        };
        let groups: Vec<(Sequence, (u32, u8))> = self
            .sim
            .groups
            .iter()
            .map(|(s, g)| (*s, (g.capacity, g.weight)))
            .collect();
        let shape: Vec<(u32, u8)> = groups.iter().map(|(_, g)| *g).collect();
        let real = effective_shares(TrafficPrecision::Instances, &shape);
        let exact = effective_shares(TrafficPrecision::Exact, &shape);
        for c in changes {
            if let Some(i) = groups.iter().position(|(s, _)| *s == c.sequence)
                && real[i] != exact[i]
            {
                c.share = Some(real[i]);
            }
        }
    }
}

/// A health gate asks for no more instances than its group will have (its size may have changed
/// since the rollout began; a resize that follows waits for its own).
fn fit(gate: Gate, sim: &Sim) -> Gate {
    match gate {
        Gate::Healthy {
            group,
            sequence,
            count,
            timeout,
        } if sim.groups.contains_key(&sequence) => Gate::Healthy {
            group,
            sequence,
            count: count.min(sim.capacity(sequence)),
            timeout,
        },
        g => g,
    }
}

/// A traffic operation setting `to` weights, from the weights in `sim`; `None` when nothing
/// changes.
pub fn traffic(sim: &Sim, to: &[(ServerGroupName, Sequence, u8)]) -> Option<Op> {
    let changes: Vec<TrafficChange> = to
        .iter()
        .filter(|(_, s, w)| sim.weight(*s) != *w)
        .map(|(g, s, w)| TrafficChange {
            group: g.clone(),
            sequence: *s,
            from: sim.weight(*s),
            to: *w,
            share: None,
        })
        .collect();
    (!changes.is_empty()).then_some(Op::Traffic { changes })
}

/// A resize to `to`, from the capacity in `sim`; `None` when it is that size.
pub fn resize(sim: &Sim, group: &ServerGroupName, seq: Sequence, to: u32) -> Option<Op> {
    let from = sim.capacity(seq);
    (from != to).then(|| Op::Resize {
        group: group.clone(),
        sequence: seq,
        from,
        to,
    })
}

/// A create of `seq` running `spec`.
pub fn create(
    group: &ServerGroupName,
    seq: Sequence,
    spec: SpecRef,
    capacity: u32,
    weight: u8,
) -> Op {
    Op::Create {
        group: group.clone(),
        sequence: seq,
        spec,
        capacity,
        weight,
    }
}
