//! The dashboard's pages, server-rendered HTML (maud): usable with JavaScript off; the small
//! embedded script only applies live updates.

use maud::{DOCTYPE, Markup, html};

use super::view::{Cell, Overview, State};
use crate::model::{ObservedCluster, ServerGroup};
use crate::plan::ClusterPlan;
use crate::store::{AnalysisRecord, HistoryEntry, Journal};

/// The stylesheet, embedded.
pub const CSS: &str = include_str!("assets/style.css");
/// The live-update script, embedded.
pub const JS: &str = include_str!("assets/live.js");

/// What the overview is filtered by (query parameters `app`, `env`, `state`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Filter {
    /// Applications whose name contains this.
    #[serde(default)]
    pub app: String,
    /// One environment.
    #[serde(default)]
    pub env: String,
    /// One state.
    #[serde(default)]
    pub state: String,
    /// Only the application named `app` exactly (its deep link, `/a/NAME`).
    #[serde(skip)]
    pub exact: bool,
}

impl Filter {
    /// Whether the overview shows this application's row.
    fn shows_app(&self, app: &str) -> bool {
        self.app.is_empty()
            || if self.exact {
                app == self.app
            } else {
                app.contains(&self.app)
            }
    }
}

fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Keelson" }
                link rel="stylesheet" href="/assets/style.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Site" {
                        a.brand href="/" { "Keelson" }
                    }
                }
                main id="main" { (body) }
                script src="/assets/live.js" defer {}
            }
        }
    }
}

/// One cell, kept small with short elements (the version in `i`, health in `small`): the overview
/// of 6,000 clusters must stay under a megabyte. The live script finds a cell by its link.
fn cell_markup(c: &Cell) -> Markup {
    let name = c.cluster.rsplit('/').next().unwrap_or(&c.cluster);
    html! {
        p class=(c.state.as_str()) {
            a href=(c.href) { (name) } " "
            b { (c.state.as_str()) } " "
            i { @if c.live.is_empty() { "none" } @else { (c.live) } }
            @if c.live != c.wanted { " " span.git { "Git " (c.wanted) } }
            " " small { (c.healthy) "/" (c.instances) " healthy" }
            @if !c.why.is_empty() { br; span.why { (c.why) } }
        }
    }
}

/// The overview page.
pub fn overview(o: &Overview, f: &Filter) -> String {
    let envs: Vec<(usize, &String)> = o
        .environments
        .iter()
        .enumerate()
        .filter(|(_, e)| f.env.is_empty() || **e == f.env)
        .collect();
    let shown = |c: &Cell| f.state.is_empty() || c.state.as_str() == f.state;
    let body = html! {
        h1 { "What is live where" }
        p.revision {
            "Revision " code { (o.revision) }
            @if let Some(bad) = &o.invalid {
                " · " strong.invalid role="alert" { "newest revision invalid: " (bad) }
            }
        }
        form.filters method="get" action="/" role="search" aria-label="Filter" {
            label { "Application " input type="search" name="app" value=(f.app); }
            label { "Environment "
                select name="env" {
                    option value="" { "all" }
                    @for e in &o.environments { option value=(e) selected[*e == f.env] { (e) } }
                }
            }
            label { "State "
                select name="state" {
                    option value="" { "all" }
                    @for s in State::ALL { option value=(s.as_str()) selected[s.as_str() == f.state] { (s.as_str()) } }
                }
            }
            button type="submit" { "Filter" }
        }
        table.overview {
            caption.sr { "Applications by environment, in promotion order" }
            thead { tr {
                th scope="col" { "Application" }
                @for (_, e) in &envs { th scope="col" { a href={ "/?env=" (e) } { (e) } } }
            } }
            tbody {
                @for r in o.rows.iter().filter(|r| f.shows_app(&r.app)) {
                    @if envs.iter().any(|(i, _)| r.cells[*i].iter().any(&shown)) {
                        tr {
                            th { a href={ "/a/" (r.app) } { (r.app) } }
                            @for (i, _) in &envs {
                                td { @for c in r.cells[*i].iter().filter(|c| shown(c)) { (cell_markup(c)) } }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Overview", body).into_string()
}

fn group_markup(g: &ServerGroup) -> Markup {
    let traffic = if g.enabled {
        format!("{}%", g.weight)
    } else {
        "disabled".into()
    };
    html! {
        section.group.enabled[g.enabled] aria-label=(g.name) {
            h3 { (g.name) }
            dl {
                dt { "Version" } dd { (g.version) }
                dt { "Capacity" } dd { (g.capacity) }
                dt { "Healthy" } dd.health { (g.healthy()) "/" (g.instances.len()) }
                dt { "Traffic" } dd.traffic { (traffic) }
            }
        }
    }
}

/// One measurement of a metric: the canary's value and the baseline's, where there are.
type Point = (Option<f64>, Option<f64>);

/// A small chart per metric: the canary's value (solid) against the baseline's (dashed), one
/// point per measurement, and the metric's fixed threshold (`max` or `min`) where it has one.
fn charts(r: &AnalysisRecord, spec: Option<&crate::spec::Analysis>) -> Markup {
    let mut names: Vec<&str> = r
        .measurements
        .iter()
        .flat_map(|m| m.metrics.iter().map(|x| x.name.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    let (w, h) = (240.0_f64, 60.0_f64);
    html! {
        @for name in names {
            @let points: Vec<Point> = r.measurements.iter().filter_map(|m| {
                let x = m.metrics.iter().find(|x| x.name == name)?;
                Some((x.canary.value(), x.baseline.as_ref().and_then(|b| b.value())))
            }).collect();
            @let threshold = spec
                .and_then(|a| a.metrics.iter().find(|m| m.name == name))
                .and_then(|m| m.max.or(m.min))
                .map(|t| t.get());
            @let max = points.iter().flat_map(|(c, b)| [*c, *b]).flatten().chain(threshold).fold(1e-9_f64, f64::max);
            @let line = |pick: fn(&Point) -> Option<f64>| -> String {
                let n = points.len().max(2) - 1;
                points.iter().enumerate().filter_map(|(i, p)| {
                    let v = pick(p)?;
                    Some(format!("{:.1},{:.1}", i as f64 * w / n as f64, h - v / max * h))
                }).collect::<Vec<_>>().join(" ")
            };
            figure.chart {
                svg role="img" aria-label=(format!("{name}: canary (solid) against baseline (dashed), {} measurements{}", points.len(), threshold.map(|t| format!(", threshold {t}")).unwrap_or_default())) viewBox=(format!("0 0 {w} {h}")) width=(w) height=(h) {
                    @if let Some(t) = threshold {
                        @let y = format!("{:.1}", h - t / max * h);
                        line.threshold x1="0" x2=(w) y1=(y) y2=(y) {}
                    }
                    polyline.baseline points=(line(|p| p.1)) {}
                    polyline.canary points=(line(|p| p.0)) {}
                }
                figcaption { (name) }
            }
        }
    }
}

/// A revision as people read it: its first 12 characters.
fn short(revision: &str) -> &str {
    revision
        .char_indices()
        .nth(12)
        .map_or(revision, |(i, _)| &revision[..i])
}

/// Where a cluster page's revision came from.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The revision in force.
    pub revision: &'a str,
    /// The pull request that brought it, where the forge said.
    pub pull: Option<crate::forge::PullRef>,
}

/// A cluster's page: its server groups side by side, its plan, its analysis, its verification
/// checks and its history.
pub fn cluster(
    id: &str,
    ctx: &Context<'_>,
    live: Option<&ObservedCluster>,
    plan: Option<&ClusterPlan>,
    journal: Option<&Journal>,
    analysis: Option<(&AnalysisRecord, Option<&crate::spec::Analysis>)>,
    history: &[HistoryEntry],
) -> String {
    let verified: Vec<&HistoryEntry> = history
        .iter()
        .rev()
        .filter(|e| e.action == "verify")
        .take(10)
        .collect();
    let body = html! {
        nav aria-label="Breadcrumb" { a href="/" { "Overview" } " / " span { (id) } }
        h1 { (id) }
        p.revision {
            "Revision " code { (ctx.revision) }
            @if let Some(pr) = &ctx.pull {
                ", brought by " a href=(pr.html_url) { "#" (pr.number) " " (pr.title) }
            }
        }
        section aria-labelledby="groups" {
            h2 id="groups" { "Server groups" }
            div.groups data-cluster=(id) {
                @match live {
                    Some(l) if !l.server_groups.is_empty() => { @for g in &l.server_groups { (group_markup(g)) } }
                    _ => { p { "No server groups." } }
                }
            }
        }
        section aria-labelledby="plan" {
            h2 id="plan" { "Plan" }
            // A journal with nothing left to do is a run that ended without clearing it.
            @if let (Some(j), Some(_)) = (journal, plan) {
                p.standing {
                    strong { "Under way" } " for revision " code { (short(&j.revision)) } " · "
                    (super::view::standing(j, plan.map_or(&[][..], |p| &p.steps[..])))
                }
                @if !j.ran.is_empty() {
                    h3 { "Done" }
                    ol.done { @for op in &j.ran { li { (op) } } }
                }
                @if let Some(r) = &j.rollback {
                    h3 { "Rolling back" }
                    p.why { (r.error) }
                    ol.rollback { @for (i, s) in r.steps.iter().enumerate() { li.done[i < r.done] { (s) } } }
                }
            }
            @match plan {
                None => p { "As desired: nothing to do." },
                Some(p) => {
                    p { strong { (p.action.word()) } " · " (p.reason) }
                    @if !p.steps.is_empty() {
                        @if journal.is_some() { h3 { "Next" } }
                        ol.steps { @for s in &p.steps { li { (s.description) } } }
                    }
                    @for b in &p.blocked { p.blocked { "Held: " (b.to_string()) } }
                }
            }
        }
        @if let Some((a, spec)) = analysis {
            section aria-labelledby="analysis" {
                h2 id="analysis" { "Canary analysis" }
                p { (a.version) " " (a.state.outcome()) }
                (charts(a, spec))
            }
        }
        @if !verified.is_empty() {
            section aria-labelledby="verify" {
                h2 id="verify" { "Verification" }
                ul.verify {
                    @for e in &verified {
                        li.(e.result) { (e.at.strftime("%Y-%m-%d %H:%M:%S")) " · " (e.result) ": " (e.detail) }
                    }
                }
            }
        }
        section aria-labelledby="history" {
            h2 id="history" { "History" }
            @if history.is_empty() { p { "Nothing yet." } }
            @else {
                table.history {
                    thead { tr { th scope="col" { "When" } th scope="col" { "What" } th scope="col" { "Who" } th scope="col" { "Revision" } th scope="col" { "Outcome" } } }
                    tbody {
                        @for e in history.iter().rev() {
                            tr { td { (e.at.strftime("%Y-%m-%d %H:%M:%S")) } td { (e.action) ": " (e.detail) } td { (e.who) } td { code { (short(&e.revision)) } } td { (e.result) } }
                        }
                    }
                }
            }
        }
    };
    page(id, body).into_string()
}

/// A page for a cluster the specs do not declare.
pub fn not_found(what: &str) -> String {
    page(
        "Not found",
        html! { h1 { "Not found" } p { (what) } p { a href="/" { "Back to the overview" } } },
    )
    .into_string()
}

/// The sign-in page: a token opens the dashboard to a browser on another host. `why` says why
/// it is shown; without tokens there is nothing to sign in with, and it says so.
pub fn sign_in(next: &str, why: &str, has_tokens: bool) -> String {
    page(
        "Sign in",
        html! {
            h1 { "Sign in" }
            @if !why.is_empty() { p.why role="alert" { (why) } }
            @if has_tokens {
                form.sign-in method="post" action="/sign-in" {
                    input type="hidden" name="next" value=(next);
                    label { "API token " input type="password" name="token" autocomplete="current-password" required; }
                    button type="submit" { "Sign in" }
                }
                p { "The browser keeps a digest of the token for 12 hours; it lets you read, never act." }
            }
        },
    )
    .into_string()
}

/// Cells as the live script applies them: JSON, escaped for an SSE `data:` line.
pub fn update(cells: &[Cell]) -> String {
    serde_json::to_string(cells).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{Measurement, MetricResult, Outcome, Sample};
    use crate::model::SpecHash;
    use crate::store::{AnalysisState, AnalysisWindow};

    #[test]
    fn a_chart_per_metric_with_its_threshold() {
        let at: jiff::Timestamp = "2026-11-23T08:00:00Z".parse().unwrap();
        let m = |v: f64| Measurement {
            at,
            step: 10,
            metrics: vec![MetricResult {
                name: "errors".into(),
                canary: Sample::Value(v),
                baseline: Some(Sample::Value(0.01)),
                outcome: Outcome::Pass,
                why: None,
            }],
            outcome: Outcome::Pass,
            score: None,
        };
        let r = AnalysisRecord {
            id: "x".into(),
            cluster: "prod/local/web".into(),
            revision: "r".into(),
            version: "2.0.0".into(),
            spec_hash: SpecHash::from_observed("h"),
            hash: SpecHash::from_observed("hh"),
            canary: "web-v002".into(),
            baseline: "web-v001".into(),
            provider: crate::spec::AnalysisProvider::Builtin,
            started: at,
            updated: at,
            state: AnalysisState::Running,
            windows: vec![AnalysisWindow {
                step: 10,
                started: at,
                expected: 3,
                approved_by: None,
                from: 0,
            }],
            measurements: vec![m(0.0), m(0.02), m(0.1)],
            counted_from: 0,
        };
        let spec: crate::spec::Analysis = serde_json::from_value(serde_json::json!({
            "provider": "builtin",
            "interval": "1s",
            "metrics": [{"name": "errors", "query": "error-rate", "max": 0.05}],
        }))
        .unwrap();
        let svg = charts(&r, Some(&spec)).into_string();
        assert!(
            svg.contains(
                "errors: canary (solid) against baseline (dashed), 3 measurements, threshold 0.05"
            ),
            "{svg}"
        );
        // The highest value (0.1) is at the top; the threshold halfway up.
        assert!(
            svg.contains(r#"<line class="threshold" x1="0" x2="240" y1="30.0" y2="30.0">"#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"points="0.0,60.0 120.0,48.0 240.0,0.0""#),
            "{svg}"
        );
        assert!(!charts(&r, None).into_string().contains("threshold"));
    }
}
