//! Rollback: what undoes the operations that ran. The plan's rollback column and the engine's
//! rollback both come from [`rollback_of`], so they cannot disagree.
//!
//! It is the inverse of the operations that ran, taken as a whole rather than one by one, so
//! it passes through no state the rollout never had and stays safe under the traffic guard:
//! groups shrunk are grown back and waited on first; then one traffic change puts every group
//! back at its weight before the rollout (groups it created at none); then groups updated in
//! place get their previous spec back and their instances replaced again as they were (same
//! batches, same surge); then groups grown are shrunk back; last, groups it created go. Once a
//! group that served before the rollout is destroyed, nothing can be undone.

use std::collections::BTreeMap;

use super::{Gate, Op, SpecRef, Step, TrafficChange};
use crate::model::{Sequence, ServerGroupName};
use crate::spec::Duration;

/// What the operations that ran did to one group.
#[derive(Debug)]
struct Group {
    name: ServerGroupName,
    created: bool,
    destroyed: bool,
    /// Weight before the first change and after the last.
    weight: Option<(u8, u8)>,
    /// Capacity before the first resize and after the last.
    capacity: Option<(u32, u32)>,
    /// An update in place: the spec to go back to, the spec it left, and the resizes and
    /// replacements that followed it, to run again towards the previous spec.
    in_place: Option<(SpecRef, SpecRef, Vec<Op>)>,
}

/// The record of group `seq`, noting the order groups are first met in.
fn entry<'a>(
    order: &mut Vec<Sequence>,
    groups: &'a mut BTreeMap<Sequence, Group>,
    seq: Sequence,
    name: &ServerGroupName,
) -> &'a mut Group {
    if !order.contains(&seq) {
        order.push(seq);
    }
    groups.entry(seq).or_insert_with(|| Group {
        name: name.clone(),
        created: false,
        destroyed: false,
        weight: None,
        capacity: None,
        in_place: None,
    })
}

/// The steps that undo `ran` (operations in the order they ran); `health_timeout` bounds the
/// waits for instances started again. Empty when there is nothing to undo.
pub fn rollback_of(ran: &[Op], health_timeout: Duration) -> Vec<Step> {
    // Groups in the order the operations first touched them.
    let mut order: Vec<Sequence> = Vec::new();
    let mut groups: BTreeMap<Sequence, Group> = BTreeMap::new();
    for op in ran {
        match op {
            Op::Create {
                group,
                sequence,
                weight,
                ..
            } => {
                let g = entry(&mut order, &mut groups, *sequence, group);
                g.created = true;
                g.weight = Some((0, *weight));
            }
            Op::Traffic { changes } => {
                for c in changes {
                    let g = entry(&mut order, &mut groups, c.sequence, &c.group);
                    g.weight = Some((g.weight.map_or(c.from, |(first, _)| first), c.to));
                }
            }
            Op::Resize {
                group,
                sequence,
                from,
                to,
            } => {
                let g = entry(&mut order, &mut groups, *sequence, group);
                match &mut g.in_place {
                    Some((_, _, tail)) => tail.push(op.clone()),
                    None => g.capacity = Some((g.capacity.map_or(*from, |(first, _)| first), *to)),
                }
            }
            Op::ReplaceInstances {
                group, sequence, ..
            } => {
                let g = entry(&mut order, &mut groups, *sequence, group);
                if let Some((_, _, tail)) = &mut g.in_place {
                    tail.push(op.clone());
                }
            }
            Op::UpdateInPlace {
                group,
                sequence,
                spec,
                previous,
            } => {
                let g = entry(&mut order, &mut groups, *sequence, group);
                match (&mut g.in_place, previous) {
                    // Updated twice: back to what it had before the first.
                    (Some((_, now, _)), _) => *now = spec.clone(),
                    (None, Some(p)) => g.in_place = Some((p.clone(), spec.clone(), Vec::new())),
                    // Nothing known to go back to.
                    (None, None) => {}
                }
            }
            Op::RevertInPlace {
                group,
                sequence,
                to,
                from,
            } => {
                let g = entry(&mut order, &mut groups, *sequence, group);
                if g.in_place.is_none() {
                    g.in_place = Some((from.clone(), to.clone(), Vec::new()));
                }
            }
            Op::Destroy { group, sequence } => {
                entry(&mut order, &mut groups, *sequence, group).destroyed = true;
            }
            // Healed instances are what the group should have: nothing to give back.
            Op::Heal { .. } => {}
        }
    }
    // A group that served before and was destroyed cannot be brought back: the rollout is past
    // its point of no return, and taking the new group out would leave nothing serving.
    if groups
        .values()
        .any(|g| g.destroyed && !g.created && g.weight.is_some_and(|(first, _)| first > 0))
    {
        return Vec::new();
    }
    let mut out: Vec<Step> = Vec::new();
    let name = |_: &Sequence, g: &Group| g.name.clone();
    let kept = |g: &&Group| !g.created && !g.destroyed;
    // 1. Shrunk groups grow back before traffic returns to them.
    for seq in &order {
        let g = &groups[seq];
        if let (true, None, Some((first, last))) = (kept(&g), &g.in_place, g.capacity)
            && first > last
        {
            out.push(Step::Op(Op::Resize {
                group: name(seq, g),
                sequence: *seq,
                from: last,
                to: first,
            }));
            out.push(Step::Gate(Gate::Healthy {
                group: name(seq, g),
                sequence: *seq,
                count: first,
                timeout: health_timeout,
            }));
        }
    }
    // 2. Every group back at its weight, created groups out; gainers first.
    let mut changes: Vec<TrafficChange> = order
        .iter()
        .filter_map(|seq| {
            let g = &groups[seq];
            let (first, last) = g.weight?;
            let to = if g.created { 0 } else { first };
            (!g.destroyed && to != last).then(|| TrafficChange {
                group: name(seq, g),
                sequence: *seq,
                from: last,
                to,
                share: None,
            })
        })
        .collect();
    changes.sort_by_key(|c| c.to < c.from);
    if !changes.is_empty() {
        out.push(Step::Op(Op::Traffic { changes }));
    }
    // 3. Groups updated in place get their previous spec back, then the rolling update runs
    //    again towards it, as it ran.
    for seq in &order {
        let g = &groups[seq];
        let Some((previous, now, tail)) = g.in_place.as_ref().filter(|_| kept(&g)) else {
            continue;
        };
        out.push(Step::Op(Op::RevertInPlace {
            group: name(seq, g),
            sequence: *seq,
            to: previous.clone(),
            from: now.clone(),
        }));
        for op in tail {
            out.push(Step::Op(op.clone()));
            match op {
                Op::Resize { from, to, .. } if to > from => out.push(Step::Gate(Gate::Healthy {
                    group: name(seq, g),
                    sequence: *seq,
                    count: *to,
                    timeout: health_timeout,
                })),
                Op::ReplaceInstances { .. } => out.push(Step::Gate(Gate::Settled {
                    group: name(seq, g),
                    sequence: *seq,
                    timeout: health_timeout,
                })),
                _ => {}
            }
        }
        // The size it had before the update, if the update changed it.
        let before = tail.iter().find_map(|op| match op {
            Op::Resize { from, .. } => Some(*from),
            _ => None,
        });
        let after = tail.iter().rev().find_map(|op| match op {
            Op::Resize { to, .. } => Some(*to),
            _ => None,
        });
        if let (Some(before), Some(after)) = (before, after)
            && before != after
        {
            out.push(Step::Op(Op::Resize {
                group: name(seq, g),
                sequence: *seq,
                from: after,
                to: before,
            }));
        }
    }
    // 4. Grown groups shrink back once traffic is back where it was.
    for seq in &order {
        let g = &groups[seq];
        if let (true, None, Some((first, last))) = (kept(&g), &g.in_place, g.capacity)
            && first < last
        {
            out.push(Step::Op(Op::Resize {
                group: name(seq, g),
                sequence: *seq,
                from: last,
                to: first,
            }));
        }
    }
    // 5. What the rollout created goes, newest first.
    for seq in order.iter().rev() {
        let g = &groups[seq];
        if g.created && !g.destroyed {
            out.push(Step::Op(Op::Destroy {
                group: name(seq, g),
                sequence: *seq,
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuation::SpecRef;
    use crate::model::{ClusterName, ServerGroupName, SpecHash};

    fn sg(n: u16) -> (ServerGroupName, Sequence) {
        let seq = Sequence::new(u32::from(n)).unwrap();
        (
            ServerGroupName::new(
                &ClusterName::parse("web").unwrap_or_else(|e| panic!("{e}")),
                seq,
            ),
            seq,
        )
    }

    fn spec(v: &str) -> SpecRef {
        SpecRef {
            version: v.into(),
            spec_hash: SpecHash::from_observed(format!("hash-{v}")),
        }
    }

    fn shift(new: u8, new_from: u8, old: u8, old_from: u8) -> Op {
        let ((n, ns), (o, os)) = (sg(1), sg(0));
        Op::Traffic {
            changes: vec![
                TrafficChange {
                    group: n,
                    sequence: ns,
                    from: new_from,
                    to: new,
                    share: None,
                },
                TrafficChange {
                    group: o,
                    sequence: os,
                    from: old_from,
                    to: old,
                    share: None,
                },
            ],
        }
    }

    fn text(steps: &[Step]) -> Vec<String> {
        steps.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_canary_is_undone_in_one_traffic_change_then_the_new_group_goes() {
        let (n, ns) = sg(1);
        let ran = vec![
            Op::Create {
                group: n.clone(),
                sequence: ns,
                spec: spec("2.0.0"),
                capacity: 3,
                weight: 0,
            },
            shift(10, 0, 90, 100),
            shift(50, 10, 50, 90),
        ];
        assert_eq!(
            text(&rollback_of(&ran, Duration::from_secs(30))),
            [
                "shift traffic: web-v000 100%, web-v001 0%",
                "destroy web-v001"
            ]
        );
        assert_eq!(
            text(&rollback_of(&ran[..1], Duration::from_secs(30))),
            ["destroy web-v001"]
        );
        assert!(rollback_of(&[], Duration::from_secs(30)).is_empty());
    }

    #[test]
    fn an_update_in_place_is_reverted_then_its_batches_replaced_again() {
        let (g, s) = sg(0);
        let replace = |batch| Op::ReplaceInstances {
            group: g.clone(),
            sequence: s,
            count: 2,
            batch,
            of: 2,
        };
        let ran = vec![
            Op::UpdateInPlace {
                group: g.clone(),
                sequence: s,
                spec: spec("2.0.0"),
                previous: Some(spec("1.0.0")),
            },
            Op::Resize {
                group: g.clone(),
                sequence: s,
                from: 4,
                to: 5,
            },
            replace(1),
            replace(2),
        ];
        assert_eq!(
            text(&rollback_of(&ran, Duration::from_secs(30))),
            [
                "revert web-v000 in place to 1.0.0",
                "resize web-v000 4 -> 5",
                "wait until 5 of web-v000 healthy (timeout 30s)",
                "replace 2 instances of web-v000 (batch 1/2)",
                "wait until every instance of web-v000 is healthy (timeout 30s)",
                "replace 2 instances of web-v000 (batch 2/2)",
                "wait until every instance of web-v000 is healthy (timeout 30s)",
                "resize web-v000 5 -> 4",
            ]
        );
        // Without a known previous spec there is nothing to revert to.
        let blind = vec![
            Op::UpdateInPlace {
                group: g.clone(),
                sequence: s,
                spec: spec("2.0.0"),
                previous: None,
            },
            replace(1),
        ];
        assert!(rollback_of(&blind, Duration::from_secs(30)).is_empty());
    }

    #[test]
    fn a_single_instance_is_surged_again_to_be_replaced_back() {
        let (g, s) = sg(0);
        let resize = |from, to| Op::Resize {
            group: g.clone(),
            sequence: s,
            from,
            to,
        };
        let ran = vec![
            Op::UpdateInPlace {
                group: g.clone(),
                sequence: s,
                spec: spec("2.0.0"),
                previous: Some(spec("1.0.0")),
            },
            resize(1, 2),
            Op::ReplaceInstances {
                group: g.clone(),
                sequence: s,
                count: 1,
                batch: 1,
                of: 1,
            },
            resize(2, 1),
        ];
        assert_eq!(
            text(&rollback_of(&ran, Duration::from_secs(30))),
            [
                "revert web-v000 in place to 1.0.0",
                "resize web-v000 1 -> 2",
                "wait until 2 of web-v000 healthy (timeout 30s)",
                "replace 1 instance of web-v000 (batch 1/1)",
                "wait until every instance of web-v000 is healthy (timeout 30s)",
                "resize web-v000 2 -> 1",
            ]
        );
    }

    #[test]
    fn a_rolling_red_black_goes_back_in_one_traffic_change() {
        let (n, ns) = sg(1);
        let ran = vec![
            Op::Create {
                group: n.clone(),
                sequence: ns,
                spec: spec("2.0.0"),
                capacity: 1,
                weight: 0,
            },
            shift(25, 0, 75, 100),
            Op::Resize {
                group: n.clone(),
                sequence: ns,
                from: 1,
                to: 2,
            },
            shift(50, 25, 50, 75),
        ];
        assert_eq!(
            text(&rollback_of(&ran, Duration::from_secs(30))),
            [
                "shift traffic: web-v000 100%, web-v001 0%",
                "destroy web-v001"
            ]
        );
    }

    #[test]
    fn a_shrink_is_grown_back_and_waited_on() {
        let (g, s) = sg(0);
        let ran = vec![Op::Resize {
            group: g,
            sequence: s,
            from: 4,
            to: 2,
        }];
        assert_eq!(
            text(&rollback_of(&ran, Duration::from_secs(30))),
            [
                "resize web-v000 2 -> 4",
                "wait until 4 of web-v000 healthy (timeout 30s)"
            ]
        );
    }
}
