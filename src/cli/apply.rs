//! `keelson apply`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::plan::{load_desired, providers, selection};
use super::{ApplyArgs, CliError, Style};
use crate::engine::{Engine, LogProgress, Progress};
use crate::model::ClusterId;
use crate::observe::observe;
use crate::plan::{Plan, plan};
use crate::store::{Owner, SqliteStore, Store};

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

/// Opens the store under a state directory.
pub fn store(state: &Path) -> Result<Arc<dyn Store>, CliError> {
    Ok(Arc::new(
        SqliteStore::open(state).map_err(|e| CliError::Usage(e.to_string()))?,
    ))
}

fn confirm() -> bool {
    eprint!("\nDo you want to apply this plan? Only 'yes' will be accepted: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).is_ok() && line.trim() == "yes"
}

/// Runs `keelson apply`.
pub async fn run(args: &ApplyArgs, style: Style) -> Result<ExitCode, CliError> {
    let state = args.location.state();
    let sel = selection(&args.env, &args.app)?;
    let Some((desired, revision)) =
        load_desired(&args.location.repo, style, Some("Nothing was changed."))?
    else {
        return Ok(ExitCode::from(1));
    };
    let store = store(&state)?;
    let providers = providers(&state);
    let now = crate::clock::now();
    let owner = Owner::this_process("keelson apply", now);
    let fixed = match &args.plan {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                CliError::Usage(format!("cannot read plan `{}`: {e}", file.display()))
            })?;
            let saved: Plan = serde_json::from_str(&text).map_err(|e| {
                CliError::Usage(format!("`{}` is not a keelson plan: {e}", file.display()))
            })?;
            if saved.revision != revision {
                return Err(CliError::Usage(format!(
                    "stale plan: it was made for revision {}, the specs are now at {revision}; run `keelson plan --out {}` again",
                    saved.revision,
                    file.display()
                )));
            }
            let observed = observe(&desired, &providers).await;
            if saved.observed_fingerprint != observed.fingerprint() {
                return Err(CliError::Usage(format!(
                    "stale plan: the live state changed since it was made (fingerprint {} is now {}); run `keelson plan --out {}` again",
                    saved.observed_fingerprint,
                    observed.fingerprint(),
                    file.display()
                )));
            }
            // Plans are saved with secret values masked; the specs are at the plan's revision,
            // so take each cluster's full spec from them.
            let mut saved = saved;
            for c in &mut saved.clusters {
                if c.desired.is_some() {
                    c.desired = desired.clusters.get(&c.id).cloned();
                }
            }
            Some(saved)
        }
        None => None,
    };
    let shown = match &fixed {
        Some(p) => p.clone(),
        None => {
            let observed = observe(&desired, &providers).await;
            let policy = store
                .policy(now, Some(&owner))
                .map_err(|e| CliError::Usage(e.to_string()))?;
            plan(&desired, &observed, &policy, &revision, &sel)
        }
    };
    print!("{}", crate::render::text(&shown, style));
    if !shown.has_changes() {
        let _ = store.set_last_good_revision(&revision);
        return Ok(ExitCode::SUCCESS);
    }
    if !args.auto_approve {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Usage(
                "apply needs confirmation: answer on a terminal, or pass --auto-approve".into(),
            ));
        }
        if !confirm() {
            eprintln!("Apply cancelled; nothing was changed.");
            return Ok(ExitCode::from(1));
        }
    }
    let engine = Arc::new(Engine {
        store: store.clone(),
        providers,
        owner,
        parallelism: args.parallelism,
        stop: Default::default(),
    });
    let report = engine
        .apply(&desired, &revision, &sel, fixed, progress())
        .await;
    println!();
    for c in &report.clusters {
        println!("{}: {}", c.id, c.outcome);
    }
    if report.failed() {
        println!(
            "\n{}",
            style.error("Apply failed: see above. Clusters that failed were rolled back.")
        );
        return Ok(ExitCode::from(1));
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
    Ok(ExitCode::SUCCESS)
}
