//! Rendering plans for people and programs: text, markdown, JSON. Pure functions.

pub(crate) mod markdown;
mod style;
mod text;

pub use markdown::markdown;
pub use style::Style;
pub use text::{summary_line, text};

use crate::plan::Plan;

/// The plan as stable, pretty JSON (`schemas/plan.schema.json`).
pub fn json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan)
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot serialize plan: {e}\"}}"))
}

/// The changed fields as a unified diff (`--- live` / `+++ desired`).
pub fn field_diff(changes: &[crate::plan::Change]) -> String {
    field_diff_between(changes, "live", "desired")
}

/// The changed fields as a unified diff between two named sides.
pub fn field_diff_between(changes: &[crate::plan::Change], from: &str, to: &str) -> String {
    let line = |field: &str, v: &Option<String>| {
        v.as_ref()
            // One line per field: a newline in a value must not end the diff fence.
            .map(|v| format!("{field}: {}\n", v.replace('\n', "\\n")))
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
