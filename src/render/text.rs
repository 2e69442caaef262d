//! The plan as text, Terraform-like: symbols, steps, a field diff and a summary line.

use std::fmt::Write as _;

use super::{Style, field_diff, rollback_ranges, step_range};
use crate::plan::{Action, ClusterPlan, Plan};

fn paint(style: Style, action: Action, t: &str) -> String {
    match action {
        Action::Create => style.good(t),
        Action::RollOut => style.roll(t),
        Action::Resize | Action::Restore | Action::RollBack => style.change(t),
        Action::Cleanup | Action::Prune => style.remove(t),
        Action::Orphan | Action::Unobserved | Action::Held => style.warn(t),
    }
}

/// `Plan: 1 to create, 2 to roll out, 1 to resize, 0 to restore; 2 server groups to destroy.`
pub fn summary_line(plan: &Plan) -> String {
    let s = &plan.summary;
    if !plan.has_changes() && s.unobserved > 0 {
        // Nothing is known about those clusters: do not claim that everything matches.
        return format!(
            "No changes where the targets could be observed ({} clusters); {} cluster(s) not observed.",
            s.unchanged, s.unobserved
        );
    }
    if !plan.has_changes() {
        let mut line = format!(
            "No changes. The live state matches the specs ({} clusters).",
            s.unchanged
        );
        if s.orphans > 0 {
            let _ = write!(line, " {} orphaned cluster(s) reported.", s.orphans);
        }
        let held = plan
            .clusters
            .iter()
            .filter(|c| c.action == crate::plan::Action::Held)
            .count();
        if held > 0 {
            let _ = write!(line, " {held} held by a pin or a veto.");
        }
        return line;
    }
    let mut line = format!(
        "Plan: {} to create, {} to roll out, {} to resize, {} to restore; {} server group{} to destroy.",
        s.create,
        s.roll_out,
        s.resize,
        s.restore,
        s.destroy_server_groups,
        if s.destroy_server_groups == 1 {
            ""
        } else {
            "s"
        }
    );
    if s.roll_back > 0 {
        let _ = write!(line, " {} rollback(s) to finish.", s.roll_back);
    }
    if s.blocked > 0 {
        let _ = write!(line, " {} blocked.", s.blocked);
    }
    if s.orphans > 0 {
        let _ = write!(line, " {} orphaned.", s.orphans);
    }
    if s.unobserved > 0 {
        let _ = write!(line, " {} not observed.", s.unobserved);
    }
    line
}

fn cluster(out: &mut String, c: &ClusterPlan, style: Style) {
    let head = format!("{} {}", c.action.symbol(), c.id);
    let strategy = c
        .strategy
        .filter(|_| matches!(c.action, Action::Create | Action::RollOut))
        .map(|s| format!(" by {s}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{}  {}{}{}",
        style.bold(&paint(style, c.action, &head)),
        c.action.word(),
        strategy,
        if c.drift { " [drift]" } else { "" }
    );
    if !c.reason.is_empty() {
        let _ = writeln!(out, "    {}", c.reason);
    }
    if !c.changes.is_empty() {
        for line in field_diff(&c.changes).lines() {
            let shown = if line.starts_with('+') && !line.starts_with("+++") {
                style.good(line)
            } else if line.starts_with('-') && !line.starts_with("---") {
                style.remove(line)
            } else {
                line.to_string()
            };
            let _ = writeln!(out, "    {shown}");
        }
    }
    for (i, p) in c.steps.iter().enumerate() {
        let _ = writeln!(out, "    {:>2}. {}", i + 1, p.description);
    }
    let ranges = rollback_ranges(c);
    if !ranges.is_empty() {
        let _ = writeln!(out, "    if a step fails, rolled back by:");
        for (first, last, text) in ranges {
            let _ = writeln!(out, "      {}: {text}", step_range(first, last));
        }
    }
    let label = if c.action == Action::Held {
        "! held:"
    } else {
        "! blocked:"
    };
    for b in &c.blocked {
        let _ = writeln!(out, "    {} {b}", style.warn(label));
    }
    out.push('\n');
}

/// The whole plan as text.
pub fn text(plan: &Plan, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Keelson plan for revision {} (observed {})\n",
        plan.revision, plan.observed_fingerprint
    );
    for c in &plan.clusters {
        cluster(&mut out, c, style);
    }
    if !plan.scheduled.is_empty() {
        let _ = writeln!(
            out,
            "Kept for a fast rollback, then destroyed (destroyDisabledAfter):"
        );
        for s in &plan.scheduled {
            let _ = writeln!(
                out,
                "    {} of {}: disabled since {}, destroyed at {}",
                s.group, s.cluster, s.since, s.at
            );
        }
        out.push('\n');
    }
    let _ = writeln!(out, "{}", style.bold(&summary_line(plan)));
    out
}
