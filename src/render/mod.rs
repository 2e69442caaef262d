//! Rendering plans for people and programs: text, markdown, JSON. Pure functions.

mod markdown;
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
    let line = |field: &str, v: &Option<String>| {
        v.as_ref()
            .map(|v| format!("{field}: {v}\n"))
            .unwrap_or_default()
    };
    let old: String = changes.iter().map(|c| line(&c.field, &c.from)).collect();
    let new: String = changes.iter().map(|c| line(&c.field, &c.to)).collect();
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header("live", "desired")
        .to_string()
}
