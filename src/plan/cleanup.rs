//! Cleanup: disabled groups beyond what the strategy keeps for a fast rollback are destroyed,
//! oldest first, and only while another group serves.

use super::walk::{self, Walk};
use crate::actuation::Op;
use crate::model::{Sequence, ServerGroupName};

/// Destroys groups out of traffic (as the cluster will stand after the steps so far) beyond the
/// `keep` newest, counting back round the sequence circle from `newest`. Returns how many.
pub fn cleanup(
    w: &mut Walk,
    groups: &[(ServerGroupName, Sequence)],
    newest: Sequence,
    keep: u32,
) -> usize {
    if !w.sim().groups.values().any(|g| g.weight > 0) {
        // Nothing will be in traffic: no group is surplus.
        return 0;
    }
    let modulus = i32::from(Sequence::MAX) + 1;
    let mut out: Vec<&(ServerGroupName, Sequence)> = groups
        .iter()
        .filter(|(_, s)| w.sim().groups.get(s).is_some_and(|g| g.weight == 0))
        .collect();
    out.sort_by_key(|(_, s)| (i32::from(newest.get()) - i32::from(s.get())).rem_euclid(modulus));
    let doomed: Vec<&(ServerGroupName, Sequence)> =
        out.into_iter().skip(keep as usize).rev().collect();
    for (name, seq) in &doomed {
        let to = [(name.clone(), *seq, 0)];
        w.act(|sim| walk::traffic(sim, &to));
        w.act(|_| {
            Some(Op::Destroy {
                group: name.clone(),
                sequence: *seq,
            })
        });
    }
    doomed.len()
}
