//! Reviewing a change to the specs, as in a pull request: the plan of head against the live
//! state, with what head changes relative to base marked, rendered as comments a forge accepts.
//! Pure: the CLI and the daemon gather the inputs and publish the result.

pub mod comment;
pub mod delta;
pub mod split;

use serde::Serialize;

use crate::diag::Diagnostic;
use crate::model::{DesiredState, ObservedState};
use crate::plan::{Action, Plan, Policy, Selection, plan};
pub use delta::{ClusterDelta, Delta, compare};

/// Where the live state of a review came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Live {
    /// Observed on the targets.
    Observed,
    /// Assumed to be base, converged (for CI jobs that cannot reach the targets).
    AssumedBase,
}

impl std::fmt::Display for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Observed => "live state observed",
            Self::AssumedBase => "live state assumed to match base",
        })
    }
}

/// What reviewing head found.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Outcome {
    /// Head does not validate: its problems instead of a plan.
    Invalid {
        /// Every problem, with file and line.
        diagnostics: Vec<Diagnostic>,
    },
    /// Head's plan, and what head changes relative to base.
    Planned {
        /// Head against the live state (boxed: a plan is large beside a list of problems).
        plan: Box<Plan>,
        /// Head against base's desired state.
        delta: Delta,
        /// Base did not validate, so every cluster counts as changed.
        base_invalid: bool,
    },
}

/// A change under review.
#[derive(Debug, Clone, Serialize)]
pub struct Review {
    /// Base, for people: a short commit id or a directory.
    pub base: String,
    /// Head, likewise.
    pub head: String,
    /// Where the live state came from.
    pub live: Live,
    /// The result.
    pub outcome: Outcome,
}

/// Plans head against `observed` and compares it with base (`None` when base is invalid).
pub fn planned(
    base: Option<&DesiredState>,
    head: &DesiredState,
    observed: &ObservedState,
    policy: &Policy,
    revision: &str,
    selection: &Selection,
) -> Outcome {
    let plan = plan(head, observed, policy, revision, selection);
    let empty = DesiredState::default();
    let mut delta = compare(base.unwrap_or(&empty), head);
    delta.retain(|id, _| {
        let app = head
            .clusters
            .get(id)
            .or_else(|| base.and_then(|b| b.clusters.get(id)))
            .map(|c| &c.app);
        app.is_some_and(|app| selection.includes(&id.environment, app))
    });
    Outcome::Planned {
        plan: Box::new(plan),
        delta,
        base_invalid: base.is_none(),
    }
}

/// The state of a commit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusState {
    /// Head validates and was planned.
    Success,
    /// Head does not validate.
    Failure,
}

impl Review {
    /// Clusters the plan changes (reported orphans and unobserved targets do not count).
    pub fn changing(&self) -> usize {
        match &self.outcome {
            Outcome::Invalid { .. } => 0,
            Outcome::Planned { plan, .. } => plan
                .clusters
                .iter()
                .filter(|c| !matches!(c.action, Action::Orphan | Action::Unobserved | Action::Held))
                .count(),
        }
    }

    /// The one-line verdict, e.g. `⚠️ 3 clusters will change`.
    pub fn headline(&self) -> String {
        match &self.outcome {
            Outcome::Invalid { diagnostics } => {
                let errors: Vec<&Diagnostic> =
                    diagnostics.iter().filter(|d| d.is_error()).collect();
                let mut files: Vec<&std::path::Path> =
                    errors.iter().map(|d| d.file.as_path()).collect();
                files.sort();
                files.dedup();
                format!(
                    "❌ invalid: {} in {}",
                    plural(errors.len(), "error"),
                    plural(files.len(), "file")
                )
            }
            Outcome::Planned { plan, delta, .. } => {
                let n = self.changing();
                if n == 0 {
                    return "✅ no changes".into();
                }
                let mut kinds: Vec<String> = Vec::new();
                for a in [
                    Action::Create,
                    Action::RollOut,
                    Action::Resize,
                    Action::Restore,
                    Action::Cleanup,
                    Action::Prune,
                ] {
                    let k = plan.clusters.iter().filter(|c| c.action == a).count();
                    if k > 0 {
                        kinds.push(format!("{k} {}", a.word()));
                    }
                }
                let blocked = plan.clusters.iter().filter(|c| !c.ready()).count();
                let mut line = format!(
                    "⚠️ {} will change ({})",
                    plural(n, "cluster"),
                    kinds.join(", ")
                );
                if blocked > 0 {
                    line.push_str(&format!(", {blocked} held"));
                }
                if delta.is_empty() {
                    line = format!("✅ no changes from this pull request; {line}");
                }
                line
            }
        }
    }

    /// The commit status: its state and a description of at most 140 characters.
    pub fn status(&self) -> (StatusState, String) {
        let state = match self.outcome {
            Outcome::Invalid { .. } => StatusState::Failure,
            Outcome::Planned { .. } => StatusState::Success,
        };
        // Forges show the description on one line next to the check; drop the emoji.
        let text = self
            .headline()
            .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_string();
        (state, shorten(&text, 140))
    }
}

/// `1 cluster`, `2 clusters`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}
