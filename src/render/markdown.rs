//! The plan as GitHub-flavoured markdown: a summary, a table per environment, and one
//! collapsible section per environment and cluster.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{field_diff, summary_line};
use crate::plan::{Action, ClusterPlan, Plan};

fn headline(plan: &Plan) -> String {
    let changing = plan
        .clusters
        .iter()
        .filter(|c| c.action != Action::Orphan)
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

fn escape(s: &str) -> String {
    s.replace('<', "&lt;").replace('>', "&gt;")
}

fn cluster(out: &mut String, c: &ClusterPlan) {
    let strategy = c
        .strategy
        .filter(|_| matches!(c.action, Action::Create | Action::RollOut))
        .map(|s| format!(" by {s}"))
        .unwrap_or_default();
    let blocked = if c.blocked.is_empty() { "" } else { " ⛔" };
    let _ = writeln!(
        out,
        "<details><summary><code>{} {}</code> {}{}{}{}</summary>\n",
        escape(c.action.symbol()),
        c.id.name,
        c.action.word(),
        strategy,
        if c.drift { " (drift)" } else { "" },
        blocked
    );
    if !c.reason.is_empty() {
        let _ = writeln!(out, "{}\n", escape(&c.reason));
    }
    if !c.changes.is_empty() {
        let _ = writeln!(out, "```diff\n{}```\n", field_diff(&c.changes));
    }
    for (i, p) in c.steps.iter().enumerate() {
        let _ = writeln!(out, "{}. {}", i + 1, escape(&p.description));
    }
    if !c.steps.is_empty() {
        out.push('\n');
    }
    for b in &c.blocked {
        let _ = writeln!(out, "> ⛔ **blocked**: {}\n", escape(&b.to_string()));
    }
    out.push_str("</details>\n\n");
}

/// The whole plan as markdown.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### Keelson plan: {}\n", headline(plan));
    let _ = writeln!(
        out,
        "Revision `{}` · observed `{}` · {}\n",
        plan.revision,
        plan.observed_fingerprint,
        summary_line(plan)
    );
    let mut envs: BTreeMap<String, Vec<&ClusterPlan>> = BTreeMap::new();
    for c in &plan.clusters {
        envs.entry(c.id.environment.to_string())
            .or_default()
            .push(c);
    }
    if envs.is_empty() {
        return out;
    }
    out.push_str("| environment | create | roll out | resize | restore | destroy | blocked | orphans |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (env, cs) in &envs {
        let n = |a: Action| cs.iter().filter(|c| c.action == a).count();
        let destroy: usize = cs
            .iter()
            .map(|c| {
                c.steps
                    .iter()
                    .filter(|p| matches!(p.step, crate::plan::Step::Destroy { .. }))
                    .count()
            })
            .sum();
        let blocked = cs.iter().filter(|c| !c.blocked.is_empty()).count();
        let _ = writeln!(
            out,
            "| {env} | {} | {} | {} | {} | {destroy} | {blocked} | {} |",
            n(Action::Create),
            n(Action::RollOut),
            n(Action::Resize),
            n(Action::Restore),
            n(Action::Orphan)
        );
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
            cluster(&mut out, c);
        }
        out.push_str("</details>\n\n");
    }
    out
}
