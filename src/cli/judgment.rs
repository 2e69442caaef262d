//! `approve CLUSTER`, `reject` and `retry`: a person's decision on a canary analysis, kept in
//! the store and audited.

use super::api::who;
use super::context::{Context, target_of};
use super::{CliError, Exit, Location, RejectArgs, RetryArgs};
use crate::actuation::rollback_of;
use crate::engine::LogProgress;
use crate::plan::{Action, ClusterPlan, PlannedStep, Selection};
use crate::store::{AnalysisRecord, HistoryEntry, Journal, RollbackProgress, Store};

/// The newest analysis of the one cluster `selector` names.
fn newest(store: &dyn Store, selector: &str) -> Result<AnalysisRecord, CliError> {
    let records = store.analyses(Some(selector), usize::MAX)?;
    let mut clusters: Vec<&str> = records.iter().map(|r| r.cluster.as_str()).collect();
    clusters.sort_unstable();
    clusters.dedup();
    match clusters.as_slice() {
        [] => Err(CliError::argument(
            format!("no canary analysis of a cluster matching `{selector}`"),
            "`keelson status` shows each cluster's analysis",
        )),
        [_] => records.into_iter().next().ok_or_else(|| {
            CliError::argument(format!("no analysis of `{selector}`"), "check the name")
        }),
        many => Err(CliError::argument(
            format!("`{selector}` names several clusters: {}", many.join(", ")),
            "name it as env/target/name",
        )),
    }
}

/// Refuses a decision on `cluster`'s analysis by someone its environment does not list as an
/// approver (when it lists any).
fn may_decide(ctx: &Context, cluster: &str) -> Result<(), CliError> {
    let Some(id) = crate::store::parse_cluster(cluster) else {
        return Ok(());
    };
    let Ok((d, _)) = ctx.desired() else {
        return Ok(());
    };
    let approvers = d
        .environments
        .get(&id.environment)
        .map(|e| e.approvers.clone())
        .unwrap_or_default();
    let me = super::delivery::identities()?.named(&who());
    if me.may_approve(&approvers) {
        return Ok(());
    }
    Err(CliError::argument(
        format!(
            "{} may not decide on {cluster}: only {} may",
            me.name,
            approvers.join(", ")
        ),
        "ask one of them",
    ))
}

/// Saves a decision and audits it.
fn decide(
    store: &dyn Store,
    r: &AnalysisRecord,
    action: &str,
    detail: String,
) -> Result<(), CliError> {
    store.put_analysis(r)?;
    store.record(&HistoryEntry {
        at: crate::clock::now(),
        cluster: r.cluster.clone(),
        action: action.into(),
        detail,
        who: who(),
        revision: r.revision.clone(),
        result: "ok".into(),
    })?;
    Ok(())
}

/// The refusal of a decision that does not apply, as a command-line error.
fn refused(e: crate::store::NotApplicable) -> CliError {
    CliError::argument(
        e.to_string(),
        "`keelson status` shows where the analysis stands",
    )
}

/// `keelson approve CLUSTER`: a held analysis goes on at the next apply.
pub fn approve(location: &Location, selector: &str) -> Result<Exit, CliError> {
    let ctx = Context::of(location);
    let store = ctx.store()?;
    let mut r = newest(store.as_ref(), selector)?;
    may_decide(&ctx, &r.cluster)?;
    r.approve(&who(), crate::clock::now()).map_err(refused)?;
    decide(
        store.as_ref(),
        &r,
        "analysis-approve",
        format!("{} goes on after its analysis held", r.version),
    )?;
    println!(
        "Approved: the rollout of {} on {} goes on at the next apply (or the daemon's next sync); later windows are still analysed.",
        r.version, r.cluster
    );
    Ok(Exit::Success)
}

/// `keelson retry CLUSTER`: a failed or rejected spec may roll out again.
pub fn retry(args: &RetryArgs) -> Result<Exit, CliError> {
    let ctx = Context::of(&args.actor.location);
    let store = ctx.store()?;
    let mut r = newest(store.as_ref(), &args.cluster)?;
    r.retry(&who(), crate::clock::now()).map_err(refused)?;
    decide(
        store.as_ref(),
        &r,
        "analysis-retry",
        format!("{} may roll out again", r.version),
    )?;
    println!(
        "{} on {} rolls out again, analysis and all, at the next apply (or the daemon's next sync).",
        r.version, r.cluster
    );
    Ok(Exit::Success)
}

/// `keelson reject CLUSTER`: the analysis ends and its rollout is rolled back now, from what
/// ran (the journal; without one, what the live state shows done).
pub async fn reject(args: &RejectArgs) -> Result<Exit, CliError> {
    let ctx = Context::of(&args.actor.location);
    let store = ctx.store()?;
    let mut r = newest(store.as_ref(), &args.cluster)?;
    may_decide(&ctx, &r.cluster)?;
    let who = who();
    r.reject(&who, &args.reason, crate::clock::now())
        .map_err(refused)?;
    let (d, revision) = ctx.desired()?;
    let Some(id) = crate::store::parse_cluster(&r.cluster) else {
        return Err(CliError::argument(
            format!("`{}` is not a cluster", r.cluster),
            "this is a bug in Keelson; please report it",
        ));
    };
    let desired = d.clusters.get(&id).cloned();
    let error = format!("rejected by {who}: {}", args.reason);
    let journal = match store.journal(&r.cluster)? {
        Some(j) if j.rollback.is_some() => j,
        found => {
            let ran = match found {
                Some(j) => j.ran,
                None => {
                    // No journal: what the live state shows this rollout did.
                    let observed = crate::observe::observe(&d, &ctx.providers()).await;
                    let policy = store.policy(crate::clock::now(), None)?;
                    let sel = Selection {
                        environments: vec![id.environment.clone()],
                        apps: desired.iter().map(|c| c.app.clone()).collect(),
                        ..Selection::default()
                    };
                    crate::plan::plan(&d, &observed, &policy, &revision, &sel)
                        .clusters
                        .into_iter()
                        .find(|c| c.id == id)
                        .map(|c| c.done)
                        .unwrap_or_default()
                }
            };
            let timeout = desired
                .as_ref()
                .map_or(crate::spec::Duration::from_secs(60), |c| c.health.timeout);
            Journal {
                cluster: r.cluster.clone(),
                revision: revision.clone(),
                health_timeout: timeout,
                rollback: Some(RollbackProgress {
                    error: error.clone(),
                    steps: rollback_of(&ran, timeout),
                    done: 0,
                }),
                ran,
            }
        }
    };
    store.put_journal(&journal)?;
    decide(store.as_ref(), &r, "analysis-reject", error.clone())?;
    let Some(desired) = desired else {
        println!(
            "Rejected. No spec declares {} any more: the next apply finishes its rollback.",
            r.cluster
        );
        return Ok(Exit::Success);
    };
    let steps: Vec<PlannedStep> = journal
        .rollback
        .iter()
        .flat_map(|rb| rb.steps.iter().skip(rb.done))
        .map(|s| PlannedStep::new(s.clone(), Vec::new()))
        .collect();
    let target = target_of(&d, &id, "the rollback runs")?;
    let cp = ClusterPlan {
        id: id.clone(),
        app: desired.app.clone(),
        action: Action::RollBack,
        drift: false,
        strategy: None,
        reason: error,
        changes: Vec::new(),
        done: Vec::new(),
        steps,
        blocked: Vec::new(),
        desired: Some(desired),
        control: None,
    };
    let engine = ctx.engine("keelson reject")?;
    let report = engine
        .run_cluster(&cp, &target, &revision, &LogProgress)
        .await;
    println!("{}: {}", report.id, report.outcome);
    println!(
        "{} is not rolled out again until its spec changes or someone runs `keelson retry {}`.",
        r.version, r.cluster
    );
    // Rolled back all the way when its journal is gone; otherwise the next apply finishes it.
    if store.journal(&r.cluster)?.is_some() {
        return Ok(Exit::Failure);
    }
    Ok(Exit::Success)
}
