//! Drift: what changed on the target without Keelson, put back. Missing instances are started
//! again; a group running the desired spec that lost its traffic (disabled by hand, or an older
//! group enabled by hand beside it) becomes the one group in traffic again.

use super::walk::{self, Walk};
use crate::actuation::{Gate, Op, Step};
use crate::model::{DesiredCluster, ServerGroup};

/// Starts the missing instances of `g` and waits for them, before anything else moves; says
/// how many were missing.
pub fn heal(w: &mut Walk, d: &DesiredCluster, g: &ServerGroup) -> Option<u32> {
    let running = u32::try_from(g.instances.len()).unwrap_or(u32::MAX);
    if running >= g.capacity {
        return None;
    }
    let missing = g.capacity - running;
    w.first(vec![
        Step::Op(Op::Heal {
            group: g.name.clone(),
            sequence: g.sequence,
            missing,
        }),
        Step::Gate(Gate::Healthy {
            group: g.name.clone(),
            sequence: g.sequence,
            count: g.capacity,
            timeout: d.health.timeout,
        }),
    ]);
    Some(missing)
}

/// Makes `m` the one group in traffic: waits for it to be healthy, enables it, then takes the
/// others out. Returns the groups that were in traffic instead, if anything changed.
pub fn restore_traffic(
    w: &mut Walk,
    d: &DesiredCluster,
    m: &ServerGroup,
    groups: &[ServerGroup],
) -> Option<Vec<String>> {
    let others: Vec<&ServerGroup> = groups
        .iter()
        .filter(|g| g.sequence != m.sequence && w.sim().weight(g.sequence) > 0)
        .collect();
    let m_alone = w.sim().weight(m.sequence) > 0 && others.is_empty();
    if m_alone {
        return None;
    }
    if m.healthy() < d.capacity.desired.min(m.capacity) {
        w.gate(Gate::Healthy {
            group: m.name.clone(),
            sequence: m.sequence,
            count: d.capacity.desired.min(m.capacity),
            timeout: d.health.timeout,
        });
    }
    let to = [(m.name.clone(), m.sequence, 100)];
    w.act(|sim| walk::traffic(sim, &to));
    for o in &others {
        let to = [(o.name.clone(), o.sequence, 0)];
        w.act(|sim| walk::traffic(sim, &to));
    }
    Some(others.iter().map(|o| o.name.to_string()).collect())
}
