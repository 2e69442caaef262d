//! Rendering plans for people and programs: text, markdown, JSON. Pure functions.

mod analysis;
pub(crate) mod markdown;
pub mod md;
mod style;
mod text;

pub use analysis::analysis;
pub use markdown::markdown;
pub use style::Style;
pub use text::{summary_line, text};

use crate::plan::Plan;

/// The plan as stable, pretty JSON (`schemas/plan.schema.json`).
pub fn json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan)
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot serialize plan: {e}\"}}"))
}

/// What undoes a cluster's steps if one fails, as runs of steps that share one rollback:
/// `(first, last, rollback)` with 1-based step numbers, the rollback's steps joined by
/// `, then `. Empty when no step has anything to undo.
pub fn rollback_ranges(c: &crate::plan::ClusterPlan) -> Vec<(usize, usize, String)> {
    if c.steps.iter().all(|s| s.rollback.is_empty()) {
        return Vec::new();
    }
    let mut out: Vec<(usize, usize, String)> = Vec::new();
    for (i, s) in c.steps.iter().enumerate() {
        let text = if s.rollback.is_empty() {
            "nothing to undo".to_string()
        } else {
            s.rollback
                .iter()
                .map(|r| r.description.as_str())
                .collect::<Vec<_>>()
                .join(", then ")
        };
        match out.last_mut() {
            Some((_, last, t)) if *t == text => *last = i + 1,
            _ => out.push((i + 1, i + 1, text)),
        }
    }
    out
}

/// `step 3` or `steps 3-5`.
pub fn step_range(first: usize, last: usize) -> String {
    if first == last {
        format!("step {first}")
    } else {
        format!("steps {first}-{last}")
    }
}

/// The changed fields as a unified diff (`--- live` / `+++ desired`).
pub fn field_diff(changes: &[crate::plan::Change]) -> String {
    field_diff_between(changes, "live", "desired")
}

/// The changed fields as a unified diff between two named sides.
pub fn field_diff_between(changes: &[crate::plan::Change], from: &str, to: &str) -> String {
    let line = |field: &str, v: &Option<String>| {
        v.as_ref()
            // One line per field: a line break (or another control character) in a value must
            // not end the line, nor the diff fence.
            .map(|v| {
                let v: String = v
                    .chars()
                    .map(|c| match c {
                        '\n' => "\\n".to_string(),
                        c if c.is_control() => format!("\\u{{{:x}}}", u32::from(c)),
                        c => c.to_string(),
                    })
                    .collect();
                format!("{field}: {v}\n")
            })
            .unwrap_or_default()
    };
    let old: String = changes.iter().map(|c| line(&c.field, &c.from)).collect();
    let new: String = changes.iter().map(|c| line(&c.field, &c.to)).collect();
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(from, to)
        .to_string()
}
