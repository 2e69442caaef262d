//! `keelson plan`.

use super::context::{Context, selection};
use super::{CliError, Exit, PlanArgs, PlanFormat, Style};
use crate::observe::observe;
use crate::plan::{Plan, Selection, plan};

/// Loads, validates, observes and plans; prints diagnostics and returns `None` when invalid.
pub async fn compute(
    ctx: &Context,
    sel: &Selection,
    style: Style,
) -> Result<Option<Plan>, CliError> {
    let Some((desired, revision)) = ctx.load(style, None)? else {
        return Ok(None);
    };
    let observed = observe(&desired, &ctx.providers()).await;
    // Suspends, locks and approvals live in the store; plans show them even though they only
    // stop actuation.
    let policy = ctx.reading_store()?.policy(crate::clock::now(), None)?;
    Ok(Some(plan(&desired, &observed, &policy, &revision, sel)))
}

/// Runs `keelson plan`.
pub async fn run(args: &PlanArgs, style: Style) -> Result<Exit, CliError> {
    let ctx = Context::of(&args.location);
    let sel = selection(&args.env, &args.app)?;
    if let Some(base) = &args.base {
        return super::review::plan_between(&ctx, args, base, &sel, style).await;
    }
    let Some(pl) = compute(&ctx, &sel, style).await? else {
        return Ok(Exit::Failure);
    };
    let out = match args.format {
        PlanFormat::Text => crate::render::text(&pl, style),
        PlanFormat::Markdown => crate::render::markdown(&pl),
        PlanFormat::Json => crate::render::json(&pl) + "\n",
    };
    print!("{out}");
    if let Some(file) = &args.out {
        std::fs::write(file, crate::render::json(&pl) + "\n").map_err(|source| CliError::File {
            action: "write",
            path: file.clone(),
            source,
        })?;
        eprintln!(
            "Saved the plan to {}; run `keelson apply --plan {}` to execute exactly this plan.",
            file.display(),
            file.display()
        );
    }
    Ok(if !args.detailed_exitcode {
        Exit::Success
    } else if pl.summary.unobserved > 0 {
        // The plan is incomplete: "no changes" (0) would be a claim it cannot make.
        Exit::Failure
    } else if pl.has_changes() {
        Exit::Changes
    } else {
        Exit::Success
    })
}
