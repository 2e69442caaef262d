//! `rollback`: an older healthy server group back in traffic, through the engine.

use super::context::{Context, target_of};
use super::{CliError, Exit, RollbackArgs, Style};
use crate::actuation::{Op, Step, TrafficChange};
use crate::engine::LogProgress;
use crate::model::Sequence;
use crate::observe::observe;
use crate::plan::{Action, ClusterPlan, PlannedStep};

/// `keelson rollback`.
pub async fn rollback(args: &RollbackArgs, style: Style) -> Result<Exit, CliError> {
    let ctx = Context::of(&args.location);
    let (d, revision) = ctx.desired()?;
    let observed = observe(&d, &ctx.providers()).await;
    let matching: Vec<_> = observed
        .clusters
        .values()
        .filter(|c| c.id.matches(&args.cluster))
        .collect();
    let live = match matching.as_slice() {
        [one] => *one,
        [] => {
            return Err(CliError::argument(
                format!("no live cluster matches `{}`", args.cluster),
                "`keelson status` lists the clusters",
            ));
        }
        many => {
            return Err(CliError::argument(
                format!(
                    "`{}` is ambiguous: {}",
                    args.cluster,
                    many.iter()
                        .map(|c| c.id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "name it as env/target/name",
            ));
        }
    };
    let target_group = match &args.to {
        Some(to) => {
            let seq = to
                .trim_start_matches('v')
                .parse::<u32>()
                .ok()
                .and_then(|n| Sequence::new(n).ok())
                .ok_or_else(|| {
                    CliError::argument(
                        format!("`{to}` is not a server group sequence"),
                        "write it like v003 (0 to 999)",
                    )
                })?;
            live.group(seq).ok_or_else(|| {
                CliError::argument(
                    format!("{} has no server group {seq}", live.id),
                    "`keelson status` lists its server groups",
                )
            })?
        }
        None => {
            let serving: Vec<Sequence> = live
                .server_groups
                .iter()
                .filter(|g| g.enabled)
                .map(|g| g.sequence)
                .collect();
            live.server_groups
                .iter()
                .rev()
                .find(|g| !serving.contains(&g.sequence) && g.healthy() > 0)
                .ok_or_else(|| {
                    CliError::argument(
                        format!(
                            "{} has no healthy disabled server group to roll back to",
                            live.id
                        ),
                        "name one with --to",
                    )
                })?
        }
    };
    if target_group.healthy() == 0 {
        return Err(CliError::argument(
            format!(
                "{} has no healthy instance; rolling back to it would stop traffic",
                target_group.name
            ),
            "pick a group with healthy instances (`keelson status`)",
        ));
    }
    // One traffic change: the group goes back in, every other group out. Its rollback (the
    // same change inverted) is what the engine runs if it fails.
    let mut changes = vec![TrafficChange {
        group: target_group.name.clone(),
        sequence: target_group.sequence,
        from: if target_group.enabled {
            target_group.weight
        } else {
            0
        },
        to: 100,
        share: None,
    }];
    for g in live
        .server_groups
        .iter()
        .filter(|g| g.enabled && g.sequence != target_group.sequence)
    {
        changes.push(TrafficChange {
            group: g.name.clone(),
            sequence: g.sequence,
            from: g.weight,
            to: 0,
            share: None,
        });
    }
    let op = Op::Traffic { changes };
    let timeout = d
        .clusters
        .get(&live.id)
        .map_or(crate::spec::Duration::from_secs(60), |c| c.health.timeout);
    let undo = crate::actuation::rollback_of(std::slice::from_ref(&op), timeout);
    let cp = ClusterPlan {
        id: live.id.clone(),
        app: live.app.clone(),
        action: Action::Restore,
        drift: false,
        strategy: None,
        reason: format!("rollback to {}", target_group.name),
        changes: Vec::new(),
        done: Vec::new(),
        steps: vec![PlannedStep::new(Step::Op(op), undo)],
        blocked: Vec::new(),
        desired: d.clusters.get(&live.id).cloned(),
        control: None,
    };
    let target = target_of(&d, &live.id, "a cluster can be rolled back")?;
    let engine = ctx.engine("keelson rollback")?;
    let report = engine
        .run_cluster(&cp, &target, &revision, &LogProgress)
        .await;
    println!("{}: {}", report.id, report.outcome);
    if report.outcome.is_failure() {
        return Ok(Exit::Failure);
    }
    if let Some(des) = d.clusters.get(&live.id)
        && des.spec_hash != target_group.spec_hash
    {
        println!(
            "{} the specs still want {}; the next apply (or the daemon) rolls forward again unless you revert the spec or run `keelson suspend --cluster {}`.",
            style.warn("note:"),
            des.version,
            live.id
        );
    }
    Ok(Exit::Success)
}
