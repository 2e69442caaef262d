//! A review as GitHub-flavoured markdown: the verdict, a table per environment, what will hold
//! the change, and one collapsible block per environment and cluster, split into comments of
//! at most 65,536 characters, each marked so the next run finds and edits it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::split::{GITHUB_COMMENT_LIMIT, Limits, Section, split};
use super::{ClusterDelta, Outcome, Review, plural};
use crate::model::ClusterId;
use crate::plan::{Block, ClusterPlan, Plan};
use crate::render::markdown::{
    TABLE_HEADER, by_environment, cluster_block, promotion_sort, table_row,
};
use crate::render::md;

/// What a comment needs besides the review.
#[derive(Debug, Clone)]
pub struct CommentContext {
    /// What the comments cover, in their marker: `all`, or an environment.
    pub scope: String,
    /// When the plan was made.
    pub now: jiff::Timestamp,
    /// Prefix of links to spec files at head, e.g.
    /// `https://github.com/o/r/blob/<sha>/` (diagnostics link to `file#Lline`).
    pub blob_url: Option<String>,
    /// Where the whole plan can be read when a part is truncated (a CI log, the daemon).
    pub full_plan: Option<String>,
    /// Largest comment, in bytes.
    pub max: usize,
}

impl CommentContext {
    /// A context with GitHub's size limit and no links.
    pub fn new(scope: impl Into<String>, now: jiff::Timestamp) -> Self {
        Self {
            scope: scope.into(),
            now,
            blob_url: None,
            full_plan: None,
            max: GITHUB_COMMENT_LIMIT,
        }
    }
}

/// The hidden marker that identifies part `part` of Keelson's comments for `scope`.
pub fn marker(scope: &str, part: usize) -> String {
    format!("<!-- keelson-plan: env={scope} part={part} -->")
}

/// The scope and part of a comment Keelson wrote, from its first line.
pub fn parse_marker(body: &str) -> Option<(String, usize)> {
    let line = body.lines().next()?.trim();
    let inner = line
        .strip_prefix("<!-- keelson-plan: ")?
        .strip_suffix("-->")?;
    let mut scope = None;
    let mut part = None;
    for kv in inner.split_whitespace() {
        match kv.split_once('=') {
            Some(("env", v)) => scope = Some(v.to_string()),
            Some(("part", v)) => part = v.parse().ok(),
            _ => {}
        }
    }
    Some((scope?, part?))
}

/// The comments to post, in order.
pub fn parts(review: &Review, ctx: &CommentContext) -> Vec<String> {
    let pointer = ctx.full_plan.as_deref().map_or_else(
        || "run `keelson plan` locally".to_string(),
        |p| format!("see the full plan: {p}"),
    );
    let limits = Limits {
        max: ctx.max,
        truncated_note: format!(
            "\n> ✂️ **Truncated**: this is too long for a comment; {pointer}.\n\n"
        ),
    };
    split(&sections(review, ctx), &limits, |i, n| {
        let mut h = marker(&ctx.scope, i);
        h.push('\n');
        if n > 1 {
            let _ = writeln!(h, "<sub>Keelson plan, part {i} of {n}</sub>\n");
        }
        h
    })
}

/// The review as sections for [`split`].
pub fn sections(review: &Review, ctx: &CommentContext) -> Vec<Section> {
    let mut out = vec![Section::Block(title(review, ctx))];
    match &review.outcome {
        Outcome::Invalid { diagnostics } => {
            out.push(Section::Block(format!(
                "Head {} does not validate, so nothing was planned. Merged as it is, it \
                 would not be applied: Keelson keeps the last good revision.\n\n",
                md::code(&review.head)
            )));
            for d in diagnostics {
                out.push(Section::Block(diagnostic(d, ctx)));
            }
            out.push(Section::Block("\n".into()));
        }
        Outcome::Planned {
            plan,
            delta,
            base_invalid,
        } => planned(&mut out, plan, delta, *base_invalid),
    }
    out.push(Section::Block(format!(
        "<sub>Keelson {} · {}</sub>\n",
        env!("CARGO_PKG_VERSION"),
        ctx.full_plan.as_deref().map_or_else(
            || "`keelson plan` shows this plan locally".into(),
            |p| { format!("full plan: {p}") }
        )
    )));
    out
}

fn title(review: &Review, ctx: &CommentContext) -> String {
    format!(
        "### Keelson plan: {}\n\nHead {} against base {} · {} · {}\n\n",
        review.headline(),
        md::code(&review.head),
        md::code(&review.base),
        review.live,
        ctx.now.strftime("%Y-%m-%d %H:%M UTC")
    )
}

fn diagnostic(d: &crate::diag::Diagnostic, ctx: &CommentContext) -> String {
    let file = d.file.display().to_string();
    let place = match d.pos {
        Some(p) => format!("{file}:{}:{}", p.line, p.col),
        None => file.clone(),
    };
    // The file name is the pull request author's: quoted as code, percent-encoded in the link.
    let shown = md::code(&place);
    let place = match (&ctx.blob_url, d.pos) {
        (Some(url), Some(p)) => format!("[{shown}]({url}{}#L{})", md::url_path(&file), p.line),
        (Some(url), None) => format!("[{shown}]({url}{})", md::url_path(&file)),
        (None, _) => shown,
    };
    let path = if d.path.is_empty() {
        String::new()
    } else {
        format!(" {}", md::code(&d.path))
    };
    let mut s = format!(
        "- **{}** {place}{path}: {}\n",
        if d.is_error() { "error" } else { "warning" },
        md::quoted(&d.message)
    );
    if let Some(h) = &d.hint {
        let _ = writeln!(s, "  <br>→ {}", md::quoted(h));
    }
    s
}

/// `a`, `b` and 3 more.
fn names(ids: &[&ClusterId], max: usize) -> String {
    let mut s: Vec<String> = ids
        .iter()
        .take(max)
        .map(|i| md::code(&i.to_string()))
        .collect();
    if ids.len() > max {
        s.push(format!("{} more", ids.len() - max));
    }
    s.join(", ")
}

fn planned(out: &mut Vec<Section>, plan: &Plan, delta: &super::Delta, base_invalid: bool) {
    let mut intro = String::new();
    if base_invalid {
        intro.push_str(
            "> [!NOTE]\n> Base does not validate, so every cluster counts as changed by this pull request.\n\n",
        );
    }
    let changed: Vec<&ClusterId> = delta.keys().collect();
    let pending: Vec<&ClusterId> = plan
        .clusters
        .iter()
        .filter(|c| !delta.contains_key(&c.id) && c.action != crate::plan::Action::Orphan)
        .map(|c| &c.id)
        .collect();
    if changed.is_empty() {
        intro.push_str("This pull request changes no cluster's desired state.");
    } else {
        let _ = write!(
            intro,
            "This pull request changes {}: {}.",
            plural(changed.len(), "cluster"),
            names(&changed, 10)
        );
    }
    if !pending.is_empty() {
        let _ = write!(
            intro,
            " {} already {} from live (drift or an unfinished rollout) whatever is merged: {}.",
            plural(pending.len(), "other cluster"),
            if pending.len() == 1 {
                "differs"
            } else {
                "differ"
            },
            names(&pending, 10)
        );
    }
    intro.push_str("\n\n");
    out.push(Section::Block(intro));
    let envs = by_environment(plan);
    if !envs.is_empty() {
        let mut table = TABLE_HEADER.to_string();
        for (env, cs) in &envs {
            table.push_str(&table_row(env, cs));
        }
        table.push('\n');
        out.push(Section::Block(table));
    }
    if let Some(w) = warnings(plan) {
        out.push(Section::Block(w));
    }
    // Clusters whose settings change without anything to do on the target still get a block,
    // so a reviewer sees every change.
    let mut quiet: BTreeMap<String, Vec<(&ClusterId, &ClusterDelta)>> = BTreeMap::new();
    for (id, d) in delta {
        if !plan.clusters.iter().any(|c| &c.id == id) {
            quiet
                .entry(id.environment.to_string())
                .or_default()
                .push((id, d));
        }
    }
    let mut names: Vec<&str> = envs
        .iter()
        .map(|(e, _)| e.as_str())
        .chain(quiet.keys().map(String::as_str))
        .collect();
    promotion_sort(plan, &mut names);
    names.dedup();
    for env in names {
        let cs = envs
            .iter()
            .find(|(e, _)| e == env)
            .map(|(_, cs)| cs.as_slice())
            .unwrap_or_default();
        let qs = quiet.get(env).map(Vec::as_slice).unwrap_or_default();
        let ours = cs.iter().filter(|c| delta.contains_key(&c.id)).count() + qs.len();
        let mut items: Vec<String> = cs.iter().map(|c| cluster(c, delta)).collect();
        items.extend(qs.iter().map(|(id, d)| settings_only(id, d)));
        out.push(Section::Group {
            open: format!(
                "<details><summary><b>{env}</b>: {}, {ours} changed by this pull request</summary>\n\n",
                plural(cs.len() + qs.len(), "cluster")
            ),
            continued: format!("<details><summary><b>{env}</b> (continued)</summary>\n\n"),
            close: "</details>\n\n".into(),
            items,
        });
    }
}

fn cluster(c: &ClusterPlan, delta: &super::Delta) -> String {
    match delta.get(&c.id) {
        Some(ClusterDelta::Removed) => {
            cluster_block(c, " · <b>removed by this pull request</b>", &c.changes)
        }
        Some(d) => {
            let mut block = cluster_block(c, " · <b>changed by this pull request</b>", &[]);
            // The reviewer's own change: base against head, field by field.
            let diff = crate::render::field_diff_between(d.changes(), "base", "head");
            let at = block.find("</summary>\n\n").map_or(0, |i| i + 12);
            block.insert_str(at, &format!("```diff\n{diff}```\n\n"));
            block
        }
        None => cluster_block(c, " · not from this pull request", &c.changes),
    }
}

fn settings_only(id: &ClusterId, d: &ClusterDelta) -> String {
    format!(
        "<details><summary><code>= {}</code> settings only, nothing to do on the target · <b>changed by this pull request</b></summary>\n\n```diff\n{}```\n\n</details>\n\n",
        md::html(id.name.as_str()),
        crate::render::field_diff_between(d.changes(), "base", "head")
    )
}

/// Everything that will hold the change, once per cause, with the clusters it holds.
fn warnings(plan: &Plan) -> Option<String> {
    let mut causes: BTreeMap<String, Vec<&ClusterId>> = BTreeMap::new();
    for c in &plan.clusters {
        for b in &c.blocked {
            let icon = match b {
                Block::Suspended { .. } | Block::SuspendedInSpec { .. } => "⏸️",
                Block::Locked { .. } => "🔒",
                Block::OutsideWindow { .. }
                | Block::AwaitingApproval { .. }
                | Block::AnalysisHeld { .. } => "⏳",
                Block::Promotion { .. } => "⏭️",
                Block::Pinned(_) => "📌",
                Block::Vetoed { .. } | Block::Unhappy { .. } => "⛔",
                Block::GuardRefused { .. }
                | Block::TargetUnavailable { .. }
                | Block::ForeignStore { .. }
                | Block::AnalysisFailed { .. } => "⛔",
            };
            causes
                .entry(format!("{icon} {}", md::quoted(&b.to_string())))
                .or_default()
                .push(&c.id);
        }
    }
    if causes.is_empty() {
        return None;
    }
    let mut s = "#### What will hold these changes\n\n".to_string();
    for (cause, ids) in causes {
        let _ = writeln!(s, "- {cause}: {}", names(&ids, 10));
    }
    s.push('\n');
    Some(s)
}
