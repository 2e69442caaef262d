//! Resize: the group in traffic brought to the desired capacity, in place.

use super::walk::{self, Walk};
use crate::actuation::Gate;
use crate::model::{DesiredCluster, Sequence, ServerGroupName};

/// Resizes group `seq` to the desired capacity (as it will stand after the steps so far), and
/// waits for new instances; returns the sizes from and to when it does.
pub fn resize(
    w: &mut Walk,
    d: &DesiredCluster,
    group: &ServerGroupName,
    seq: Sequence,
) -> Option<(u32, u32)> {
    let from = w.sim().capacity(seq);
    let to = d.capacity.desired;
    if from == to || !w.sim().groups.contains_key(&seq) {
        return None;
    }
    w.act(|sim| walk::resize(sim, group, seq, to));
    if to > from {
        w.gate(Gate::Healthy {
            group: group.clone(),
            sequence: seq,
            count: to,
            timeout: d.health.timeout,
        });
    }
    Some((from, to))
}
