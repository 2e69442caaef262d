//! `keelson apply`.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::context::{Context, selection};
use super::{ApplyArgs, CliError, Exit, Style};
use crate::engine::{Engine, LogProgress, Progress};
use crate::model::ClusterId;
use crate::observe::observe;
use crate::plan::{Plan, plan};
use crate::store::Owner;

/// One spinner per cluster, on a terminal.
struct BarProgress {
    multi: MultiProgress,
    bars: std::sync::Mutex<std::collections::HashMap<ClusterId, ProgressBar>>,
}

impl BarProgress {
    fn bar(&self, c: &ClusterId) -> ProgressBar {
        let mut bars = self
            .bars
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        bars.entry(c.clone())
            .or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new_spinner());
                b.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                b.set_prefix(c.to_string());
                b.enable_steady_tick(std::time::Duration::from_millis(120));
                b
            })
            .clone()
    }
}

impl Progress for BarProgress {
    fn step(&self, cluster: &ClusterId, index: usize, total: usize, description: &str) {
        self.bar(cluster)
            .set_message(format!("[{}/{total}] {description}", index + 1));
    }

    fn done(&self, cluster: &ClusterId, outcome: &str, ok: bool) {
        let b = self.bar(cluster);
        b.finish_with_message(format!("{} {outcome}", if ok { "✓" } else { "✗" }));
    }

    fn note(&self, cluster: &ClusterId, message: &str) {
        let _ = self.multi.println(format!("{cluster}: {message}"));
    }
}

fn progress() -> Arc<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Arc::new(BarProgress {
            multi: MultiProgress::new(),
            bars: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    } else {
        Arc::new(LogProgress)
    }
}

fn confirm() -> bool {
    eprint!("\nDo you want to apply this plan? Only 'yes' will be accepted: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).is_ok() && line.trim() == "yes"
}

/// Runs `keelson apply`.
pub async fn run(args: &ApplyArgs, style: Style) -> Result<Exit, CliError> {
    let ctx = Context::of(&args.location);
    let sel = selection(&args.env, &args.app)?;
    let Some((desired, revision)) = ctx.load(style, Some("Nothing was changed."))? else {
        return Ok(Exit::Failure);
    };
    let store = ctx.store()?;
    let providers = ctx.providers();
    let now = crate::clock::now();
    let owner = Owner::this_process("keelson apply", now);
    let observed = observe(&desired, &providers).await;
    let policy = store.policy(now, Some(&owner))?;
    let fresh = plan(&desired, &observed, &policy, &revision, &sel);
    let fixed = match &args.plan {
        Some(file) => Some(saved_plan(file, &fresh, &revision, &observed)?),
        None => None,
    };
    let shown = fixed.as_ref().unwrap_or(&fresh);
    print!("{}", crate::render::text(shown, style));
    if !shown.has_changes() {
        let _ = store.set_last_good_revision(&revision);
        return Ok(Exit::Success);
    }
    if !args.auto_approve {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::NeedsConfirmation);
        }
        if !confirm() {
            eprintln!("Apply cancelled; nothing was changed.");
            return Ok(Exit::Failure);
        }
    }
    let engine = Arc::new(Engine {
        store: store.clone(),
        providers,
        owner,
        parallelism: args.parallelism,
        stop: Default::default(),
        slots: Default::default(),
        events: Default::default(),
    });
    let notifier = Arc::new(crate::notify::Notifier::start(
        &desired,
        &crate::notify::Options::from_env(),
    ));
    engine.events.set(notifier.clone());
    let report = engine
        .apply(&desired, &revision, &sel, fixed, progress())
        .await;
    println!();
    for c in &report.clusters {
        println!("{}: {}", c.id, c.outcome);
    }
    // The events of this apply are sent before it exits, within a bounded wait.
    let wait = crate::notify::Options::flush_wait();
    let late = notifier.flush(wait).await;
    if late > 0 {
        eprintln!(
            "{} {late} notification destination(s) did not take every event within {wait:?}",
            style.warn("warning:")
        );
    }
    if report.failed() {
        println!(
            "\n{}",
            style.error("Apply failed: see above. Clusters that failed were rolled back.")
        );
        return Ok(Exit::Failure);
    }
    let _ = store.set_last_good_revision(&revision);
    let held = report
        .clusters
        .iter()
        .filter(|c| matches!(c.outcome, crate::engine::ClusterOutcome::Held(_)))
        .count();
    let done = report
        .clusters
        .iter()
        .filter(|c| c.outcome == crate::engine::ClusterOutcome::Converged)
        .count();
    println!(
        "\nApply complete: {done} cluster(s) converged{}.",
        if held > 0 {
            format!(", {held} held")
        } else {
            String::new()
        }
    );
    Ok(Exit::Success)
}

/// A plan saved with `plan --out`, held to what it says: it must be for these specs and this
/// live state, and what it would do must be exactly what planning now does. The plan that runs
/// is the fresh one (blocks are evaluated now); the file only commits to it.
fn saved_plan(
    file: &std::path::Path,
    fresh: &Plan,
    revision: &str,
    observed: &crate::model::ObservedState,
) -> Result<Plan, CliError> {
    let stale = |why: String| CliError::StalePlan {
        path: file.to_path_buf(),
        why,
    };
    let text = std::fs::read_to_string(file).map_err(|source| CliError::File {
        action: "read",
        path: file.to_path_buf(),
        source,
    })?;
    let parse = |source| CliError::PlanFile {
        path: file.to_path_buf(),
        source,
    };
    // The format first: a plan of another version does not parse as this one, and saying
    // which version it is helps more than where its first unknown field is.
    let raw: serde_json::Value = serde_json::from_str(&text).map_err(parse)?;
    if let Some(v) = raw.get("formatVersion").and_then(serde_json::Value::as_u64)
        && v != u64::from(crate::plan::PLAN_FORMAT)
    {
        return Err(stale(format!(
            "it is in plan format {v}, this keelson reads and writes format {}",
            crate::plan::PLAN_FORMAT
        )));
    }
    let saved: Plan = serde_json::from_value(raw).map_err(parse)?;
    if saved.revision != revision {
        return Err(stale(format!(
            "it was made for revision {}, the specs are now at {revision}",
            saved.revision
        )));
    }
    if saved.observed_fingerprint != observed.fingerprint() {
        return Err(stale(format!(
            "the live state changed since it was made (fingerprint {} is now {})",
            saved.observed_fingerprint,
            observed.fingerprint()
        )));
    }
    // A saved plan is a commitment, not an instruction: what runs is planned now, and only if
    // it is what the file says.
    if let Some(why) = saved.differs_from(fresh) {
        return Err(stale(why));
    }
    Ok(fresh.clone())
}
