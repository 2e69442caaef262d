//! Rolling update: the group in traffic takes the new spec in place and its instances are
//! replaced in batches of `maxUnavailable`, each batch waited on; never all at once. With no
//! group in traffic there is nothing to update: a new group is rolled out as red/black does.

use super::{Position, disable_olds, verify};
use crate::actuation::{Gate, Op, SpecRef};
use crate::model::ServerGroup;
use crate::plan::walk::{self, Walk};
use crate::spec::MaxUnavailable;

/// Instances of `g` not running its spec.
fn outdated(g: &ServerGroup) -> u32 {
    u32::try_from(
        g.instances
            .iter()
            .filter(|i| i.spec_hash != g.spec_hash)
            .count(),
    )
    .unwrap_or(u32::MAX)
}

/// The stages of a rolling update.
pub(super) fn steps(w: &mut Walk, p: &Position, max: MaxUnavailable) {
    let Some(g) = p.new.filter(|g| g.enabled).or(p.olds.first().copied()) else {
        return super::red_black::steps(w, p);
    };
    let d = p.desired;
    let desired = d.capacity.desired;
    let (name, seq) = (g.name.clone(), g.sequence);
    let updated = g.spec_hash == d.spec_hash;
    let running = u32::try_from(g.instances.len()).unwrap_or(u32::MAX);

    // Missing instances come back before any is taken out. (Once the group runs the desired
    // spec, the planner's drift repair starts them, as for every strategy.)
    let missing = if updated {
        0
    } else {
        g.capacity.saturating_sub(running)
    };
    w.op(missing == 0, |_| {
        (missing > 0).then(|| Op::Heal {
            group: name.clone(),
            sequence: seq,
            missing,
        })
    });
    if missing > 0 {
        w.gate(Gate::Healthy {
            group: name.clone(),
            sequence: seq,
            count: g.capacity,
            timeout: d.health.timeout,
        });
    }
    let previous = if updated {
        g.previous.clone()
    } else {
        Some(SpecRef {
            version: g.version.clone(),
            spec_hash: g.spec_hash.clone(),
        })
    };
    w.op(updated, |_| {
        Some(Op::UpdateInPlace {
            group: name.clone(),
            sequence: seq,
            spec: p.spec(),
            previous,
        })
    });
    if g.capacity != desired {
        w.op(false, |sim| walk::resize(sim, &name, seq, desired));
        if desired > g.capacity {
            w.gate(Gate::Healthy {
                group: name.clone(),
                sequence: seq,
                count: desired,
                timeout: d.health.timeout,
            });
        }
    }
    // Healed instances start before the update, so they run the old spec too; instances added
    // by a resize start after it and run the new one.
    let (total, left) = if updated {
        let left = outdated(g).min(desired);
        (running.min(desired).max(left), left)
    } else {
        let total = running.max(g.capacity).min(desired);
        (total, total)
    };
    replace(w, p, g, total, left, max.batch(desired));
    let olds: Vec<&ServerGroup> = p
        .olds
        .iter()
        .copied()
        .filter(|o| o.sequence != seq)
        .collect();
    disable_olds(w, &Position { olds, ..p.clone() });
    verify(
        w,
        &Position {
            in_place: true,
            ..p.clone()
        },
    );
}

/// Replaces the `total` outdated instances of `g` in batches, of which the last `left` are
/// still to do.
fn replace(w: &mut Walk, p: &Position, g: &ServerGroup, total: u32, left: u32, batch: u32) {
    if total == 0 {
        return;
    }
    let d = p.desired;
    let size = d.capacity.desired;
    let (name, seq) = (g.name.clone(), g.sequence);
    let settle = |w: &mut Walk, count| {
        w.gate(Gate::Healthy {
            group: name.clone(),
            sequence: seq,
            count,
            timeout: d.health.timeout,
        })
    };
    if size <= 1 {
        // Replacing the only instance would leave nothing serving: surge by one first.
        let surge = size + 1;
        w.op(left == 0 || g.capacity >= surge, |sim| {
            walk::resize(sim, &name, seq, surge)
        });
        settle(w, surge);
        w.op(left == 0, |_| {
            Some(Op::ReplaceInstances {
                group: name.clone(),
                sequence: seq,
                count: total,
                batch: 1,
                of: 1,
            })
        });
        settle(w, surge);
        w.op(left == 0 && g.capacity <= size, |sim| {
            walk::resize(sim, &name, seq, size)
        });
        return;
    }
    // Never take every instance out at once, whatever maxUnavailable says.
    let batch = batch.clamp(1, size - 1);
    let of = total.div_ceil(batch);
    let replaced = total - left.min(total);
    let mut covered = 0;
    for b in 1..=of {
        let count = (total - covered).min(batch);
        covered += count;
        w.op(covered <= replaced, |_| {
            Some(Op::ReplaceInstances {
                group: name.clone(),
                sequence: seq,
                count,
                batch: b,
                of,
            })
        });
        settle(w, size);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{desired, group, live, position, text};
    use super::super::roll_out;
    use crate::actuation::{SpecRef, rollback_of};
    use crate::model::SpecHash;
    use crate::spec::{Duration, MaxUnavailable, Strategy};

    fn ru(n: u32) -> Strategy {
        Strategy::RollingUpdate {
            max_unavailable: MaxUnavailable::Count(n),
        }
    }

    #[test]
    fn fresh_updates_in_place_and_replaces_in_batches() {
        let d = desired("2.0.0", 4, ru(2));
        let l = live(&d, vec![group(0, "1.0.0", 4, 4, 100)]);
        let r = roll_out(&position(&d, &l));
        assert_eq!(
            text(&r.todo),
            [
                "update web-v000 in place to 2.0.0",
                "replace 2 instances of web-v000 (batch 1/2)",
                "wait until 4 of web-v000 healthy (timeout 30s)",
                "replace 2 instances of web-v000 (batch 2/2)",
                "wait until 4 of web-v000 healthy (timeout 30s)",
            ]
        );
        let ran: Vec<_> = r.todo.iter().filter_map(|s| s.op().cloned()).collect();
        assert_eq!(
            text(&rollback_of(&ran, Duration::from_secs(30)))[0],
            "revert web-v000 in place to 1.0.0"
        );
    }

    #[test]
    fn a_single_instance_surges_first() {
        let d = desired("2.0.0", 1, ru(1));
        let l = live(&d, vec![group(0, "1.0.0", 1, 1, 100)]);
        assert_eq!(
            text(&roll_out(&position(&d, &l)).todo),
            [
                "update web-v000 in place to 2.0.0",
                "resize web-v000 1 -> 2",
                "wait until 2 of web-v000 healthy (timeout 30s)",
                "replace 1 instance of web-v000 (batch 1/1)",
                "wait until 2 of web-v000 healthy (timeout 30s)",
                "resize web-v000 2 -> 1",
            ]
        );
    }

    #[test]
    fn resumed_replaces_only_what_is_left_and_knows_what_to_revert_to() {
        let d = desired("2.0.0", 4, ru(2));
        let mut g = group(0, "2.0.0", 4, 4, 100);
        for i in &mut g.instances[..2] {
            i.spec_hash = SpecHash::from_observed("h-1.0.0");
        }
        g.previous = Some(SpecRef {
            version: "1.0.0".into(),
            spec_hash: SpecHash::from_observed("h-1.0.0"),
        });
        let l = live(&d, vec![g]);
        let r = roll_out(&position(&d, &l));
        assert_eq!(
            text(&r.todo),
            [
                "replace 2 instances of web-v000 (batch 2/2)",
                "wait until 4 of web-v000 healthy (timeout 30s)",
            ]
        );
        assert_eq!(
            text(&rollback_of(&r.done, Duration::from_secs(30))),
            [
                "revert web-v000 in place to 1.0.0",
                "replace 2 instances of web-v000 (batch 1/2)",
                "wait until every instance of web-v000 is healthy (timeout 30s)",
            ]
        );
    }
}
