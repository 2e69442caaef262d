//! The plan as GitHub-flavoured markdown: a summary, a table per environment, and one
//! collapsible section per environment and cluster.

use std::fmt::Write as _;

use super::md;
use super::{field_diff, rollback_ranges, step_range, summary_line};
use crate::plan::{Action, Change, ClusterPlan, Plan};

fn headline(plan: &Plan) -> String {
    let changing = plan
        .clusters
        .iter()
        .filter(|c| !matches!(c.action, Action::Orphan | Action::Held))
        .count();
    if changing == 0 {
        "✅ no changes".to_string()
    } else {
        format!(
            "⚠️ {changing} cluster{} will change",
            if changing == 1 { "" } else { "s" }
        )
    }
}

/// One cluster as a collapsible block: its action, `note` (e.g. a badge), `changes` as a diff
/// fence, its steps and what blocks it.
pub(crate) fn cluster_block(c: &ClusterPlan, note: &str, changes: &[Change]) -> String {
    let mut out = String::new();
    let strategy = c
        .strategy
        .filter(|_| matches!(c.action, Action::Create | Action::RollOut))
        .map(|s| format!(" by {s}"))
        .unwrap_or_default();
    let blocked = if c.action == Action::Held {
        " 📌"
    } else if c.blocked.is_empty() {
        ""
    } else {
        " ⛔"
    };
    let _ = writeln!(
        out,
        "<details><summary><code>{} {}</code> {}{}{}{}{note}</summary>\n",
        md::html(c.action.symbol()),
        md::html(c.id.name.as_str()),
        c.action.word(),
        strategy,
        if c.drift { " (drift)" } else { "" },
        blocked
    );
    if !c.reason.is_empty() {
        let _ = writeln!(out, "{}\n", md::paragraph(&c.reason));
    }
    if !changes.is_empty() {
        let _ = writeln!(out, "```diff\n{}```\n", field_diff(changes));
    }
    for (i, p) in c.steps.iter().enumerate() {
        let _ = writeln!(out, "{}. {}", i + 1, md::quoted(&p.description));
    }
    if !c.steps.is_empty() {
        out.push('\n');
    }
    let ranges = rollback_ranges(c);
    if !ranges.is_empty() {
        out.push_str("If a step fails, it is rolled back by:\n");
        for (first, last, text) in ranges {
            let _ = writeln!(out, "- {}: {}", step_range(first, last), md::quoted(&text));
        }
        out.push('\n');
    }
    let (icon, word) = if c.action == Action::Held {
        ("📌", "held")
    } else {
        ("⛔", "blocked")
    };
    for b in &c.blocked {
        let _ = writeln!(out, "> {icon} **{word}**: {}\n", md::quoted(&b.to_string()));
    }
    out.push_str("</details>\n\n");
    out
}

/// The header of the per-environment count table.
pub(crate) const TABLE_HEADER: &str = "| environment | create | roll out | resize | restore | groups to destroy | blocked | orphans |\n|---|---:|---:|---:|---:|---:|---:|---:|\n";

/// One row of the count table.
pub(crate) fn table_row(env: &str, cs: &[&ClusterPlan]) -> String {
    let n = |a: Action| cs.iter().filter(|c| c.action == a).count();
    let destroy: usize = cs
        .iter()
        .map(|c| {
            c.steps
                .iter()
                .filter(|p| {
                    matches!(
                        p.step,
                        crate::actuation::Step::Op(crate::actuation::Op::Destroy { .. })
                    )
                })
                .count()
        })
        .sum();
    let blocked = cs.iter().filter(|c| !c.blocked.is_empty()).count();
    format!(
        "| {env} | {} | {} | {} | {} | {destroy} | {blocked} | {} |\n",
        n(Action::Create),
        n(Action::RollOut),
        n(Action::Resize),
        n(Action::Restore),
        n(Action::Orphan)
    )
}

/// The plan's clusters by environment, in the plan's order (promotion order).
pub(crate) fn by_environment(plan: &Plan) -> Vec<(String, Vec<&ClusterPlan>)> {
    let mut envs: Vec<(String, Vec<&ClusterPlan>)> = Vec::new();
    for c in &plan.clusters {
        match envs.last_mut() {
            Some((e, cs)) if *e == c.id.environment.as_str() => cs.push(c),
            _ => envs.push((c.id.environment.to_string(), vec![c])),
        }
    }
    envs
}

/// Sorts environment names into the plan's promotion order; names it does not know go last,
/// by name.
pub(crate) fn promotion_sort(plan: &Plan, names: &mut [&str]) {
    let rank = |n: &str| crate::model::promotion_rank(&plan.environments, n);
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
}

/// The whole plan as markdown.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### Keelson plan: {}\n", headline(plan));
    let _ = writeln!(
        out,
        "Revision {} · observed {} · {}\n",
        md::code(&plan.revision),
        md::code(plan.observed_fingerprint.as_str()),
        summary_line(plan)
    );
    if !plan.scheduled.is_empty() {
        out.push_str("Kept for a fast rollback, then destroyed (`destroyDisabledAfter`):\n\n");
        for s in &plan.scheduled {
            let _ = writeln!(
                out,
                "- {} of {}: disabled since {}, destroyed at {}",
                md::code(s.group.as_str()),
                md::code(&s.cluster.to_string()),
                s.since,
                s.at
            );
        }
        out.push('\n');
    }
    let envs = by_environment(plan);
    if envs.is_empty() {
        return out;
    }
    out.push_str(TABLE_HEADER);
    for (env, cs) in &envs {
        out.push_str(&table_row(env, cs));
    }
    out.push('\n');
    for (env, cs) in &envs {
        let _ = writeln!(
            out,
            "<details><summary><b>{env}</b>: {} cluster{}</summary>\n",
            cs.len(),
            if cs.len() == 1 { "" } else { "s" }
        );
        for c in cs {
            out.push_str(&cluster_block(c, "", &c.changes));
        }
        out.push_str("</details>\n\n");
    }
    out
}
