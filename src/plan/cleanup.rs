//! Cleanup: disabled groups beyond what the strategy keeps for a fast rollback, or disabled
//! longer than it keeps them (`destroyDisabledAfter`), are destroyed, oldest first, and only
//! while another group serves.

use super::Policy;
use super::walk::{self, Walk};
use crate::actuation::Op;
use crate::model::{DesiredCluster, Sequence, ServerGroupName};

/// Destroys groups out of traffic (as the cluster will stand after the steps so far) beyond the
/// `keep` newest, counting back round the sequence circle from `newest`, and those `expired`
/// says were disabled too long. Returns how many.
pub fn cleanup(
    w: &mut Walk,
    groups: &[(ServerGroupName, Sequence)],
    newest: Sequence,
    keep: u32,
    expired: &dyn Fn(&ServerGroupName) -> bool,
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
    let doomed: Vec<&(ServerGroupName, Sequence)> = out
        .into_iter()
        .enumerate()
        .filter(|(i, (name, _))| *i >= keep as usize || expired(name))
        .map(|(_, g)| g)
        .rev()
        .collect();
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

/// When a disabled group of `d` is destroyed under `destroyDisabledAfter`: the time it was
/// first seen disabled (recorded in the store; now, if not yet) plus that delay. `None` when
/// the strategy keeps disabled groups however long.
pub fn deadline(
    d: &DesiredCluster,
    group: &ServerGroupName,
    policy: &Policy,
) -> Option<jiff::Timestamp> {
    let after =
        jiff::SignedDuration::try_from(d.strategy.destroy_disabled_after()?.to_std()).ok()?;
    let since = policy.disabled_at(&d.id, group).unwrap_or(policy.now);
    since.checked_add(after).ok()
}

/// Whether a disabled group of `d` has been disabled longer than its strategy keeps it.
pub fn expired(d: &DesiredCluster, group: &ServerGroupName, policy: &Policy) -> bool {
    deadline(d, group, policy).is_some_and(|t| t <= policy.now)
}
