//! `keelson validate`.

use std::path::Path;

use serde::Serialize;

use super::{CliError, Exit, Format, Style, ValidateArgs, render_diagnostics};
use crate::diag::Diagnostic;
use crate::pipeline::{Checked, check};
use crate::source::read_dir;

/// The JSON output of `keelson validate --format json` (documented in the README).
#[derive(Debug, Serialize)]
pub struct ValidateReport<'a> {
    /// Whether the repository is valid.
    pub valid: bool,
    /// Application documents read.
    pub applications: usize,
    /// Environment documents read.
    pub environments: usize,
    /// Clusters compiled (0 when invalid).
    pub clusters: usize,
    /// Error count.
    pub errors: usize,
    /// Warning count.
    pub warnings: usize,
    /// Every diagnostic, sorted by file and position.
    pub diagnostics: &'a [Diagnostic],
}

/// Runs `keelson validate`.
pub fn run(args: &ValidateArgs, style: Style) -> Result<Exit, CliError> {
    let sources = read_dir(&args.repo)?;
    let texts = super::context::source_texts(&sources);
    let checked = check(sources);
    let valid = checked.desired.is_some();
    match args.format {
        Format::Json => {
            let report = report(&checked);
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
        }
        Format::Text => {
            let text = render_diagnostics(
                &checked.diagnostics,
                |p: &Path| texts.get(p).map(String::as_str),
                style,
            );
            print!("{text}");
            println!("{}", summary(&checked, style));
        }
    }
    Ok(if valid { Exit::Success } else { Exit::Failure })
}

fn report(c: &Checked) -> ValidateReport<'_> {
    ValidateReport {
        valid: c.desired.is_some(),
        applications: c.applications,
        environments: c.environments,
        clusters: c.desired.as_ref().map_or(0, |d| d.clusters.len()),
        errors: c.error_count(),
        warnings: c.warning_count(),
        diagnostics: &c.diagnostics,
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The one-line summary: `3 applications, 3 environments, 7 clusters: valid`.
pub fn summary(c: &Checked, style: Style) -> String {
    let counts = format!(
        "{}, {}, {}",
        plural(c.applications, "application"),
        plural(c.environments, "environment"),
        plural(
            c.desired.as_ref().map_or(0, |d| d.clusters.len()),
            "cluster"
        )
    );
    let warnings = match c.warning_count() {
        0 => String::new(),
        n => format!(" ({})", plural(n, "warning")),
    };
    match &c.desired {
        Some(_) => format!("{counts}: {}{warnings}", style.good("valid")),
        None => format!(
            "{counts}: {} ({}{})",
            style.error("invalid"),
            plural(c.error_count(), "error"),
            if c.warning_count() > 0 {
                format!(", {}", plural(c.warning_count(), "warning"))
            } else {
                String::new()
            }
        ),
    }
}
