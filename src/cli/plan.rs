//! `keelson plan`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{CliError, PlanArgs, PlanFormat, Style, render_diagnostics};
use crate::model::DesiredState;
use crate::observe::{Providers, observe};
use crate::pipeline::check;
use crate::plan::{Plan, Selection, plan};
use crate::provider::kubernetes::KubernetesProvider;
use crate::provider::local::LocalProvider;
use crate::source::{SourceSet, read_dir};
use crate::spec::{AppName, EnvName, ProviderKind};

/// The state directory: `--state-dir`, else `<repo>/.keelson`.
pub fn state_dir(repo: &Path, explicit: Option<&PathBuf>) -> PathBuf {
    explicit.cloned().unwrap_or_else(|| repo.join(".keelson"))
}

/// The providers this build has, for a state directory.
pub fn providers(state: &Path) -> Providers {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("keelson"));
    // The Kubernetes provider reads no kubeconfig until a Kubernetes target is observed.
    Providers::new()
        .with(
            ProviderKind::Local,
            std::sync::Arc::new(LocalProvider::new(state, exe)),
        )
        .with(
            ProviderKind::Kubernetes,
            std::sync::Arc::new(KubernetesProvider::new()),
        )
}

/// Parses `--env`/`--app` filters.
pub fn selection(envs: &[String], apps: &[String]) -> Result<Selection, CliError> {
    let bad = |what: &str, v: &str| CliError::Usage(format!("`{v}` is not a valid {what} name"));
    Ok(Selection {
        environments: envs
            .iter()
            .map(|e| EnvName::new(e.clone()).map_err(|_| bad("environment", e)))
            .collect::<Result<_, _>>()?,
        apps: apps
            .iter()
            .map(|a| AppName::new(a.clone()).map_err(|_| bad("application", a)))
            .collect::<Result<_, _>>()?,
    })
}

/// Loads, validates, observes and plans; prints diagnostics and returns `None` when invalid.
pub async fn compute(
    repo: &Path,
    state: &Path,
    sel: &Selection,
    style: Style,
) -> Result<Option<Plan>, CliError> {
    let Some((desired, revision)) = load_desired(repo, style, None)? else {
        return Ok(None);
    };
    let observed = observe(&desired, &providers(state)).await;
    // Suspends, locks and approvals live in the store; plans show them even though they only
    // stop actuation.
    let store = super::apply::store(state)?;
    let policy = store
        .policy(crate::clock::now(), None)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(Some(plan(&desired, &observed, &policy, &revision, sel)))
}

/// The text of each source file, to quote lines in diagnostics.
pub fn source_texts(sources: &SourceSet) -> HashMap<PathBuf, String> {
    sources
        .files
        .iter()
        .filter_map(|f| {
            std::str::from_utf8(&f.bytes)
                .ok()
                .map(|t| (f.path.clone(), t.to_string()))
        })
        .collect()
}

/// Reads and checks the specs with their revision; when they are invalid, prints every problem,
/// the summary and `note` on stderr and returns `None`.
pub fn load_desired(
    repo: &Path,
    style: Style,
    note: Option<&str>,
) -> Result<Option<(DesiredState, String)>, CliError> {
    let sources = read_dir(repo)?;
    let revision = sources.content_revision();
    let texts = source_texts(&sources);
    let checked = check(sources);
    match checked.desired {
        Some(desired) => Ok(Some((desired, revision))),
        None => {
            eprint!(
                "{}",
                render_diagnostics(
                    &checked.diagnostics,
                    |p: &Path| texts.get(p).map(String::as_str),
                    style
                )
            );
            eprintln!("{}", super::validate::summary(&checked, style));
            if let Some(n) = note {
                eprintln!("{n}");
            }
            Ok(None)
        }
    }
}

/// Runs `keelson plan`.
pub async fn run(args: &PlanArgs, style: Style) -> Result<ExitCode, CliError> {
    let state = args.location.state();
    let sel = selection(&args.env, &args.app)?;
    if let Some(base) = &args.base {
        return super::review::plan_between(args, base, &sel, style).await;
    }
    let Some(pl) = compute(&args.location.repo, &state, &sel, style).await? else {
        return Ok(ExitCode::from(1));
    };
    let out = match args.format {
        PlanFormat::Text => crate::render::text(&pl, style),
        PlanFormat::Markdown => crate::render::markdown(&pl),
        PlanFormat::Json => crate::render::json(&pl) + "\n",
    };
    print!("{out}");
    if let Some(file) = &args.out {
        std::fs::write(file, crate::render::json(&pl) + "\n").map_err(|source| {
            CliError::Write {
                path: file.clone(),
                source,
            }
        })?;
        eprintln!(
            "Saved the plan to {}; run `keelson apply --plan {}` to execute exactly this plan.",
            file.display(),
            file.display()
        );
    }
    Ok(if !args.detailed_exitcode {
        ExitCode::SUCCESS
    } else if pl.summary.unobserved > 0 {
        // The plan is incomplete: "no changes" (0) would be a claim it cannot make.
        ExitCode::from(1)
    } else if pl.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
