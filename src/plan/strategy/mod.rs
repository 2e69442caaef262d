//! Strategies: each one pure function from (desired cluster, observed position, capabilities)
//! to what is done and what is left, used for fresh and resumed rollouts alike.

mod canary;
mod highlander;
mod none;
mod red_black;
mod rolling_red_black;
mod rolling_update;

use crate::actuation::{Gate, SpecRef, TrafficPrecision};
use crate::model::{DesiredCluster, ObservedCluster, Sequence, ServerGroup, ServerGroupName};
use crate::spec::{Duration, Strategy};

use super::Sim;
use super::walk::{self, Rollout, Walk};

/// Where a cluster stands, as the strategies see it.
#[derive(Debug, Clone)]
pub struct Position<'a> {
    /// What the cluster should be.
    pub desired: &'a DesiredCluster,
    /// The cluster as observed.
    pub live: Option<&'a ObservedCluster>,
    /// The group the rollout moves to, when it exists: the newest group running the desired
    /// spec.
    pub new: Option<&'a ServerGroup>,
    /// Its sequence: its own, or the next free one.
    pub sequence: Sequence,
    /// The groups in traffic besides it, newest first: the rollout moves traffic off them.
    pub olds: Vec<&'a ServerGroup>,
    /// How precisely the target splits traffic.
    pub precision: TrafficPrecision,
    /// Whether the new group was updated in place (a rolling update): it was there before.
    pub in_place: bool,
}

impl Position<'_> {
    /// The new group's name.
    pub fn name(&self) -> ServerGroupName {
        ServerGroupName::new(self.desired.name(), self.sequence)
    }

    /// The desired spec by reference.
    pub fn spec(&self) -> SpecRef {
        SpecRef {
            version: self.desired.version.clone(),
            spec_hash: self.desired.spec_hash.clone(),
        }
    }

    /// The cluster as it was before the rollout began: without the new group, the newest old
    /// group holding the traffic the new one has taken.
    pub fn origin(&self) -> Sim {
        let mut sim = Sim::of(self.live);
        if let Some(n) = self.new.filter(|_| !self.in_place) {
            let taken = sim.groups.remove(&n.sequence).map_or(0, |g| g.weight);
            if let Some(o) = self.olds.first()
                && let Some(g) = sim.groups.get_mut(&o.sequence)
            {
                g.weight = g.weight.saturating_add(taken).min(100);
            }
        }
        sim
    }

    /// A walk over this position.
    pub fn walk(&self) -> Walk<'_> {
        let mut w = Walk::new(self.live, self.origin(), self.precision);
        // With nothing else in traffic, whether the new group was created by this rollout or
        // has served before is not observable: its creation is never taken as undoable.
        if self.olds.is_empty() && !self.in_place {
            w.forget_done();
        }
        w
    }

    /// The new group's observed weight (0 when absent or out of traffic).
    pub fn new_weight(&self) -> u8 {
        self.new.filter(|g| g.enabled).map_or(0, |g| g.weight)
    }
}

/// What is done and left of the desired cluster's rollout at `p`.
#[cfg(test)]
pub fn roll_out(p: &Position) -> Rollout {
    let mut w = p.walk();
    stages(&mut w, p);
    w.finish()
}

/// The stages of the desired cluster's strategy, walked at `p`.
pub fn stages(w: &mut Walk, p: &Position) {
    match &p.desired.strategy {
        Strategy::RedBlack { .. } => red_black::steps(w, p),
        Strategy::RollingRedBlack { steps, pause, .. } => {
            rolling_red_black::steps(w, p, steps, *pause)
        }
        Strategy::Highlander {} => highlander::steps(w, p),
        Strategy::RollingUpdate { max_unavailable } => {
            rolling_update::steps(w, p, *max_unavailable)
        }
        Strategy::Canary { steps, .. } => canary::steps(w, p, steps),
        Strategy::None {} => none::steps(w, p),
    }
    w.close();
}

/// The first server group of a new cluster, whatever the strategy: created out of traffic,
/// waited on, then enabled.
pub fn first(p: &Position) -> Rollout {
    let mut w = p.walk();
    create(&mut w, p, p.desired.capacity.desired, 0);
    healthy(&mut w, p, p.desired.capacity.desired);
    enable_new(&mut w, p);
    w.finish()
}

// Stages the strategies share.

/// Creates the new group with `capacity` instances at `weight`.
fn create(w: &mut Walk, p: &Position, capacity: u32, weight: u8) {
    let (name, seq, spec) = (p.name(), p.sequence, p.spec());
    w.op(p.new.is_some(), |_| {
        Some(walk::create(&name, seq, spec, capacity, weight))
    });
}

/// Waits for `count` healthy instances of the new group.
fn healthy(w: &mut Walk, p: &Position, count: u32) {
    w.gate(Gate::Healthy {
        group: p.name(),
        sequence: p.sequence,
        count,
        timeout: p.desired.health.timeout,
    });
}

/// Gives the new group `weight` and the newest old group the rest.
fn shift(w: &mut Walk, p: &Position, weight: u8) {
    let mut to = vec![(p.name(), p.sequence, weight)];
    for (i, o) in p.olds.iter().enumerate() {
        to.push((
            o.name.clone(),
            o.sequence,
            if i == 0 { 100 - weight } else { 0 },
        ));
    }
    w.op(p.new_weight() >= weight, |sim| walk::traffic(sim, &to));
}

/// Holds a step for its pause: with an analysis, the pause is the window in which the new
/// group is judged against the newest old group; without one (or with nothing to compare
/// against), time passes.
fn hold(w: &mut Walk, p: &Position, weight: u8, pause: Option<Duration>) {
    let Some(pause) = pause else {
        return;
    };
    match (p.desired.strategy.analysis(), p.olds.first()) {
        (Some(a), Some(base)) => w.gate(Gate::Analysis {
            canary: p.name(),
            canary_sequence: p.sequence,
            baseline: base.name.clone(),
            baseline_sequence: base.sequence,
            step: weight,
            window: pause,
            analysis: Box::new(a.clone()),
        }),
        _ => w.gate(Gate::Elapsed { duration: pause }),
    }
}

/// The verification checks, once the new version takes all traffic and before the old groups
/// leave; a new cluster has nothing to go back to, so it has none.
fn verify(w: &mut Walk, p: &Position) {
    if !p.desired.verify.is_empty() && (!p.olds.is_empty() || p.in_place) {
        w.gate(Gate::Verify {
            checks: p.desired.verify.clone(),
        });
    }
}

/// Puts the new group in traffic at full weight.
fn enable_new(w: &mut Walk, p: &Position) {
    let to = [(p.name(), p.sequence, 100)];
    w.op(p.new_weight() == 100, |sim| walk::traffic(sim, &to));
}

/// Takes the old groups out of traffic.
fn disable_olds(w: &mut Walk, p: &Position) {
    for o in &p.olds {
        let to = [(o.name.clone(), o.sequence, 0)];
        w.op(!o.enabled || o.weight == 0, |sim| walk::traffic(sim, &to));
    }
}

#[cfg(test)]
pub(crate) mod fixture {
    //! Plain-data positions for the strategies' unit tests.

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::actuation::Step;
    use crate::model::{ClusterId, ClusterName, Instance, InstanceHealth, ServerGroup, SpecHash};
    use crate::spec::{AppName, EnvName, ProviderKind, TargetName, TargetSpec};

    /// A desired cluster `web` of `capacity` instances at `version` with `strategy`.
    pub fn desired(version: &str, capacity: u32, strategy: Strategy) -> Arc<DesiredCluster> {
        let app = AppName::new("web").unwrap_or_else(|_| unreachable!());
        let env = EnvName::new("dev").unwrap_or_else(|_| unreachable!());
        let target = TargetName::new("local").unwrap_or_else(|_| unreachable!());
        Arc::new(DesiredCluster {
            id: ClusterId {
                environment: env,
                target: target.clone(),
                name: ClusterName::compose(&app, None, None),
            },
            app,
            stack: None,
            detail: None,
            target: TargetSpec {
                name: target,
                provider: ProviderKind::Local,
                kubernetes: None,
                ec2: None,
            },
            labels: BTreeMap::new(),
            capacity: crate::model::CapacityRange {
                min: 0,
                max: 100,
                desired: capacity,
            },
            version: version.into(),
            image: None,
            workload: crate::model::WorkloadSpec {
                command: vec!["app".into()],
                env: BTreeMap::new(),
                secret_env: Vec::new(),
            },
            health: crate::model::Health {
                http: None,
                timeout: crate::spec::Duration::from_secs(30),
            },
            kubernetes: None,
            ec2: None,
            traffic_port: None,
            route: None,
            strategy,
            verify: Vec::new(),
            prometheus: None,
            suspended_by: None,
            spec_hash: SpecHash::from_observed(format!("h-{version}")),
            hash: SpecHash::from_observed(format!("h-{version}")),
            source: crate::model::SourceRef {
                file: "web.yaml".into(),
                line: 1,
            },
            retarget: crate::model::Retarget {
                rest: SpecHash::from_observed("rest"),
                user_data: None,
            },
        })
    }

    /// An observed group of `web`.
    pub fn group(seq: u16, version: &str, capacity: u32, healthy: u32, weight: u8) -> ServerGroup {
        let sequence = Sequence::new(u32::from(seq)).unwrap_or(Sequence::FIRST);
        let hash = SpecHash::from_observed(format!("h-{version}"));
        ServerGroup {
            name: ServerGroupName::new(
                &ClusterName::parse("web").unwrap_or_else(|e| panic!("{e}")),
                sequence,
            ),
            sequence,
            version: version.into(),
            spec_hash: hash.clone(),
            capacity,
            enabled: weight > 0,
            weight,
            instances: (0..capacity)
                .map(|i| Instance {
                    id: format!("i-{seq}-{i}"),
                    spec_hash: hash.clone(),
                    health: if i < healthy {
                        InstanceHealth::Healthy
                    } else {
                        InstanceHealth::Starting
                    },
                    note: None,
                })
                .collect(),
            labels: BTreeMap::new(),
            previous: None,
        }
    }

    /// The observed cluster of `web` with these groups.
    pub fn live(d: &DesiredCluster, groups: Vec<ServerGroup>) -> ObservedCluster {
        ObservedCluster {
            id: d.id.clone(),
            app: d.app.clone(),
            server_groups: groups,
        }
    }

    /// The position of `d` over `live`, as the planner computes it.
    pub fn position<'a>(d: &'a DesiredCluster, live: &'a ObservedCluster) -> Position<'a> {
        super::super::planner::position(d, Some(live), TrafficPrecision::Exact)
    }

    /// Steps as the plan prints them.
    pub fn text(steps: &[Step]) -> Vec<String> {
        steps.iter().map(ToString::to_string).collect()
    }
}
