//! Rules across documents that a schema cannot express.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use super::{Spec, Specs};
use crate::diag::{Diagnostic, Pos};
use crate::load::Document;
use crate::model::{ClusterName, Sequence, ServerGroupName};
use crate::spec::{Application, Environment, Kind, ProviderKind, Strategy};
use crate::suggest::did_you_mean;

/// Names of documents that failed earlier checks, so references to them are not reported twice.
#[derive(Debug, Default)]
pub struct Broken {
    apps: BTreeSet<String>,
    envs: BTreeSet<String>,
}

impl Broken {
    /// Remembers a document that failed its schema.
    pub fn note(&mut self, doc: &Document) {
        if let Some(name) = doc.root.get("metadata").and_then(|m| m.str_at("name")) {
            match doc.kind {
                Kind::Application => self.apps.insert(name.to_string()),
                Kind::Environment => self.envs.insert(name.to_string()),
            };
        }
    }
}

fn pos(doc: &Document, pointer: &str) -> Pos {
    doc.root.resolve_pointer(pointer).0.pos
}

fn err(
    doc: &Document,
    code: &'static str,
    pointer: &str,
    message: impl Into<String>,
) -> Diagnostic {
    Diagnostic::error(code, &doc.file, message)
        .at(pos(doc, pointer))
        .path(crate::load::yaml::pointer_to_path(pointer))
}

/// Runs every cross-document rule.
pub fn check(specs: &Specs, broken: &Broken, out: &mut Vec<Diagnostic>) {
    unique_names(
        specs
            .applications
            .iter()
            .map(|s| (&s.doc, s.spec.metadata.name.as_str())),
        "application",
        out,
    );
    unique_names(
        specs
            .environments
            .iter()
            .map(|s| (&s.doc, s.spec.metadata.name.as_str())),
        "environment",
        out,
    );
    let envs: BTreeMap<&str, &Spec<Environment>> = specs
        .environments
        .iter()
        .map(|e| (e.spec.metadata.name.as_str(), e))
        .collect();
    for env in &specs.environments {
        check_environment(env, &envs, broken, out);
    }
    dependency_cycles(&specs.environments, out);
    // The first declaration of each cluster identity: its document and index (positions are
    // looked up only for a duplicate).
    let mut identities: HashMap<(String, String, String), (&Document, usize)> = HashMap::new();
    let mut claims = Claims::default();
    let mut seen_apps = BTreeSet::new();
    for app in &specs.applications {
        // A duplicate application is reported once; its clusters would only repeat it.
        if !seen_apps.insert(app.spec.metadata.name.as_str()) {
            continue;
        }
        check_application(app, &envs, broken, &mut identities, &mut claims, out);
    }
}

fn unique_names<'a>(
    items: impl Iterator<Item = (&'a Document, &'a str)>,
    what: &str,
    out: &mut Vec<Diagnostic>,
) {
    let mut seen: HashMap<&str, &Document> = HashMap::new();
    for (doc, name) in items {
        match seen.get(name) {
            Some(first) => out.push(
                err(
                    doc,
                    "duplicate-name",
                    "/metadata/name",
                    format!(
                        "{what} `{name}` is already defined in {}:{}",
                        first.file.display(),
                        pos(first, "/metadata/name").line
                    ),
                )
                .hint(format!(
                    "each {what} is defined once; rename one or remove the duplicate"
                )),
            ),
            None => {
                seen.insert(name, doc);
            }
        }
    }
}

fn check_environment(
    env: &Spec<Environment>,
    envs: &BTreeMap<&str, &Spec<Environment>>,
    broken: &Broken,
    out: &mut Vec<Diagnostic>,
) {
    let doc = &env.doc;
    let spec = &env.spec.spec;
    for (i, dep) in spec.depends_on.iter().enumerate() {
        let p = format!("/spec/dependsOn/{i}");
        if dep == &env.spec.metadata.name {
            out.push(
                err(
                    doc,
                    "depends-on",
                    &p,
                    format!("environment `{dep}` depends on itself"),
                )
                .hint("remove it from dependsOn"),
            );
        } else if !envs.contains_key(dep.as_str()) && !broken.envs.contains(dep.as_str()) {
            out.push(
                err(
                    doc,
                    "depends-on",
                    &p,
                    format!("unknown environment `{dep}`"),
                )
                .hint(suggest_or_list(
                    dep.as_str(),
                    envs.keys().copied(),
                    "environments",
                )),
            );
        }
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, n) in spec.notifications.iter().enumerate() {
        let p = format!("/spec/notifications/{i}");
        if let Some(first) = names.insert(n.name.as_str(), i) {
            out.push(
                err(
                    doc,
                    "notification",
                    &format!("{p}/name"),
                    format!(
                        "notification `{}` is already defined at spec.notifications[{first}]",
                        n.name
                    ),
                )
                .hint("give each destination its own name"),
            );
        }
        if let Some(api) = &n.api_url
            && let Err(why) = crate::notify::url_allowed(api)
        {
            out.push(
                err(doc, "notification", &format!("{p}/apiUrl"), why)
                    .hint("use the forge's https:// address"),
            );
        }
    }
    let mut targets: HashMap<&str, usize> = HashMap::new();
    for (i, t) in spec.targets.iter().enumerate() {
        let p = format!("/spec/targets/{i}");
        if let Some(first) = targets.insert(t.name.as_str(), i) {
            out.push(
                err(
                    doc,
                    "duplicate-target",
                    &format!("{p}/name"),
                    format!(
                        "target `{}` is already defined at spec.targets[{first}]",
                        t.name
                    ),
                )
                .hint("give each target of an environment its own name"),
            );
        }
        if t.kubernetes.is_some() && t.provider != ProviderKind::Kubernetes {
            out.push(
                err(
                    doc,
                    "target",
                    &format!("{p}/kubernetes"),
                    format!(
                        "`kubernetes` settings on a `{}` target",
                        t.provider.as_str()
                    ),
                )
                .hint("remove them, or set `provider: kubernetes`"),
            );
        }
        if t.ec2.is_some() && t.provider != ProviderKind::Ec2 {
            out.push(
                err(
                    doc,
                    "target",
                    &format!("{p}/ec2"),
                    format!("`ec2` settings on a `{}` target", t.provider.as_str()),
                )
                .hint("remove them, or set `provider: ec2`"),
            );
        }
    }
    for (i, w) in spec.constraints.windows.iter().enumerate() {
        let p = format!("/spec/constraints/windows/{i}");
        if jiff::tz::TimeZone::get(&w.timezone).is_err() {
            out.push(
                err(
                    doc,
                    "timezone",
                    &format!("{p}/timezone"),
                    format!("unknown time zone `{}`", w.timezone),
                )
                .hint("use an IANA time zone name such as `Europe/Berlin` or `UTC`"),
            );
        }
        if w.start == w.end {
            out.push(
                err(
                    doc,
                    "window",
                    &format!("{p}/end"),
                    format!("window starts and ends at {}", w.start),
                )
                .hint("give the window a length; a window may wrap past midnight (22:00 to 02:00)"),
            );
        }
    }
    if let Some(s) = &spec.defaults.strategy {
        check_strategy(doc, "/spec/defaults/strategy", s, out);
    }
    if let Some(p) = &spec.analysis.prometheus {
        // The address is printed in plans and status: credentials in it would be too.
        let authority = p
            .address
            .split("://")
            .nth(1)
            .unwrap_or("")
            .split('/')
            .next();
        if authority.is_some_and(|a| a.contains('@')) {
            out.push(
                err(
                    doc,
                    "secret",
                    "/spec/analysis/prometheus/address",
                    "the Prometheus address holds credentials, and addresses are printed in plans and status",
                )
                .hint("remove them from the address; put a token in a file and name it in bearerTokenFile")
                .redact(),
            );
        }
    }
}

/// What an EC2 cluster needs that the schema cannot say: an image, instance settings and a
/// route for its listener rule.
fn check_ec2_cluster(
    doc: &Document,
    p: &str,
    cluster: &str,
    spec: &crate::spec::ApplicationSpec,
    c: &crate::spec::ClusterSpec,
    out: &mut Vec<Diagnostic>,
) {
    if spec.artifact.ami.is_none() {
        out.push(
            err(doc, "ec2", p, format!("cluster `{cluster}` runs on an EC2 target but the application has no `artifact.ami`"))
                .hint("add spec.artifact.ami, the machine image the instances boot from, e.g. ami-0abcdef1234567890"),
        );
    }
    if spec.ec2.is_none() {
        out.push(
            err(doc, "ec2", p, format!("cluster `{cluster}` runs on an EC2 target but the application has no `ec2` section"))
                .hint("add spec.ec2 with at least instanceType and port, e.g. ec2: {instanceType: t3.small, port: 8080}"),
        );
    }
    if !c
        .traffic
        .as_ref()
        .is_some_and(|t| t.host.is_some() || t.path.is_some())
    {
        out.push(
            err(doc, "ec2", p, format!("cluster `{cluster}` runs on an EC2 target, where it takes traffic through a rule on the load balancer's listener, and has no host or path to route"))
                .hint("add traffic: {host: hello.example.com} or traffic: {path: \"/hello/*\"}"),
        );
    }
}

fn suggest_or_list<'a>(
    word: &str,
    names: impl Iterator<Item = &'a str> + Clone,
    what: &str,
) -> String {
    match did_you_mean(word, names.clone()) {
        Some(s) => format!("did you mean `{s}`?"),
        None => {
            let all: Vec<&str> = names.collect();
            if all.is_empty() {
                format!("no {what} are defined")
            } else {
                format!("defined {what}: {}", all.join(", "))
            }
        }
    }
}

fn dependency_cycles(envs: &[Spec<Environment>], out: &mut Vec<Diagnostic>) {
    let graph: BTreeMap<&str, Vec<&str>> = envs
        .iter()
        .map(|e| {
            (
                e.spec.metadata.name.as_str(),
                e.spec
                    .spec
                    .depends_on
                    .iter()
                    .map(|d| d.as_str())
                    .filter(|d| *d != e.spec.metadata.name.as_str())
                    .collect(),
            )
        })
        .collect();
    // Depth-first search with colours; each cycle is reported once, at its smallest member.
    let mut state: HashMap<&str, u8> = HashMap::new();
    let mut reported: BTreeSet<Vec<&str>> = BTreeSet::new();
    for &start in graph.keys() {
        let mut path: Vec<&str> = Vec::new();
        visit(start, &graph, &mut state, &mut path, &mut reported);
    }
    for cycle in reported {
        let Some(first) = cycle.first() else { continue };
        let Some(env) = envs
            .iter()
            .find(|e| e.spec.metadata.name.as_str() == *first)
        else {
            continue;
        };
        let mut shown: Vec<&str> = cycle.clone();
        shown.push(first);
        out.push(
            err(
                &env.doc,
                "dependency-cycle",
                "/spec/dependsOn",
                format!("dependsOn forms a cycle: {}", shown.join(" -> ")),
            )
            .hint("promotion must flow one way; remove one of these dependencies"),
        );
    }
}

fn visit<'a>(
    n: &'a str,
    g: &BTreeMap<&'a str, Vec<&'a str>>,
    state: &mut HashMap<&'a str, u8>,
    path: &mut Vec<&'a str>,
    found: &mut BTreeSet<Vec<&'a str>>,
) {
    match state.get(n) {
        Some(2) => return,
        Some(1) => {
            if let Some(i) = path.iter().position(|p| *p == n) {
                let mut cycle: Vec<&str> = path[i..].to_vec();
                // Rotate so the smallest name leads: the same cycle is found once.
                if let Some(min) = cycle
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, v)| **v)
                    .map(|(i, _)| i)
                {
                    cycle.rotate_left(min);
                }
                found.insert(cycle);
            }
            return;
        }
        _ => {}
    }
    state.insert(n, 1);
    path.push(n);
    for &next in g.get(n).map(Vec::as_slice).unwrap_or(&[]) {
        if g.contains_key(next) {
            visit(next, g, state, path, found);
        }
    }
    path.pop();
    state.insert(n, 2);
}

fn check_strategy(doc: &Document, p: &str, s: &Strategy, out: &mut Vec<Diagnostic>) {
    match s {
        Strategy::Canary { steps, .. } => {
            for (i, w) in steps.windows(2).enumerate() {
                if w[1].weight <= w[0].weight {
                    out.push(
                        err(
                            doc,
                            "strategy",
                            &format!("{p}/steps/{}/weight", i + 1),
                            format!(
                                "canary weight {} does not increase on the previous step's {}",
                                w[1].weight.0, w[0].weight.0
                            ),
                        )
                        .hint("canary weights must strictly increase, e.g. 10, 25, 50"),
                    );
                }
            }
        }
        Strategy::RollingRedBlack { steps, .. } => {
            for (i, w) in steps.windows(2).enumerate() {
                if w[1] <= w[0] {
                    out.push(
                        err(doc, "strategy", &format!("{p}/steps/{}", i + 1), format!("rolling percentage {} does not increase on the previous step's {}", w[1].0, w[0].0))
                            .hint("percentages are cumulative and must strictly increase, e.g. 25, 50, 100"),
                    );
                }
            }
        }
        _ => {}
    }
    check_analysis(doc, p, s, out);
}

/// The pauses of a strategy with their pointers: the analysis windows.
fn pauses(p: &str, s: &Strategy) -> Vec<(String, crate::spec::Duration)> {
    match s {
        Strategy::Canary { steps, .. } => steps
            .iter()
            .enumerate()
            .filter(|(_, c)| c.weight.0 < 100)
            .filter_map(|(i, c)| c.pause.map(|d| (format!("{p}/steps/{i}/pause"), d)))
            .collect(),
        Strategy::RollingRedBlack { pause, .. } => pause
            .map(|d| vec![(format!("{p}/pause"), d)])
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// A strategy's analysis on its own: queries, placeholders, scores and windows.
fn check_analysis(doc: &Document, p: &str, s: &Strategy, out: &mut Vec<Diagnostic>) {
    use crate::analysis::query::{BuiltinQuery, PLACEHOLDERS, unknown_placeholders};
    let Some(a) = s.analysis() else {
        return;
    };
    let ap = format!("{p}/analysis");
    for (i, m) in a.metrics.iter().enumerate() {
        let mp = format!("{ap}/metrics/{i}");
        match a.provider {
            crate::spec::AnalysisProvider::Builtin => {
                if m.query.parse::<BuiltinQuery>().is_err() {
                    let names: Vec<&str> = BuiltinQuery::ALL.iter().map(|q| q.as_str()).collect();
                    out.push(
                        err(
                            doc,
                            "analysis",
                            &format!("{mp}/query"),
                            format!("`{}` is not a builtin query", m.query),
                        )
                        .hint(format!(
                            "{} For PromQL, set `provider: prometheus`.",
                            did_you_mean(&m.query, &names)
                                .map(|s| format!("Did you mean `{s}`?"))
                                .unwrap_or_else(|| format!(
                                    "The builtin queries are {}.",
                                    names.join(", ")
                                ))
                        )),
                    );
                }
                if m.baseline_query.is_some() {
                    out.push(
                        err(
                            doc,
                            "analysis",
                            &format!("{mp}/baselineQuery"),
                            "a builtin analysis measures the baseline with the same query",
                        )
                        .hint("remove baselineQuery, or set `provider: prometheus`"),
                    );
                }
            }
            crate::spec::AnalysisProvider::Prometheus => {
                let queries = [
                    ("query", Some(&m.query)),
                    ("baselineQuery", m.baseline_query.as_ref()),
                ];
                for (field, q) in queries {
                    let Some(q) = q else { continue };
                    for unknown in unknown_placeholders(q) {
                        out.push(
                            err(
                                doc,
                                "analysis",
                                &format!("{mp}/{field}"),
                                format!("unknown placeholder `{{{{{unknown}}}}}` in the query"),
                            )
                            .hint(format!(
                                "{}The placeholders are {}.",
                                did_you_mean(&unknown, PLACEHOLDERS)
                                    .map(|s| format!("Did you mean `{{{{{s}}}}}`? "))
                                    .unwrap_or_default(),
                                PLACEHOLDERS.map(|p| format!("{{{{{p}}}}}")).join(", ")
                            )),
                        );
                    }
                }
            }
        }
    }
    if let Some(score) = a.score
        && score.marginal > score.pass
    {
        out.push(
            err(
                doc,
                "analysis",
                &format!("{ap}/score"),
                format!(
                    "the marginal score ({}) is above the passing score ({})",
                    score.marginal, score.pass
                ),
            )
            .hint("make marginal <= pass, e.g. {pass: 90, marginal: 75}"),
        );
    }
    if a.interval < crate::spec::Duration::from_secs(1) {
        out.push(
            err(
                doc,
                "analysis",
                &format!("{ap}/interval"),
                format!(
                    "an analysis interval of {} measures too often to mean anything",
                    a.interval
                ),
            )
            .hint("make the interval at least 1s; 10s or more is usual"),
        );
    }
    let windows = pauses(p, s);
    if windows.is_empty() {
        let hint = match s {
            Strategy::RollingRedBlack { .. } => "add `pause` to the strategy, e.g. pause: 1m",
            _ => "give the canary's steps a pause, e.g. {weight: 10, pause: 1m}",
        };
        out.push(
            err(
                doc,
                "analysis",
                &ap,
                "the analysis never runs: it measures during pauses, and no step has one",
            )
            .hint(hint),
        );
    }
    for (pointer, pause) in windows {
        if pause < a.interval {
            out.push(
                err(
                    doc,
                    "analysis",
                    &pointer,
                    format!(
                        "the pause ({pause}) is shorter than the analysis interval ({}): the step would end before one measurement",
                        a.interval
                    ),
                )
                .hint(format!("make the pause at least {}, or the interval shorter", a.interval)),
            );
        }
    }
}

/// Verification commands' placeholders.
fn check_verify(
    doc: &Document,
    p: &str,
    checks: &[crate::spec::VerifyCheck],
    out: &mut Vec<Diagnostic>,
) {
    for (i, c) in checks.iter().enumerate() {
        for unknown in crate::verify::unknown_placeholders(&c.command) {
            out.push(
                err(
                    doc,
                    "verify",
                    &format!("{p}/{i}/command"),
                    format!("unknown placeholder `{{{unknown}}}` in check `{}`", c.name),
                )
                .hint(format!(
                    "the placeholders are {}",
                    crate::verify::PLACEHOLDERS
                        .map(|p| format!("{{{p}}}"))
                        .join(", ")
                )),
            );
        }
    }
}

/// Who made a claim first: `environment/target` or cluster, file and position.
type Claimant = (String, PathBuf, Pos);
/// A Kubernetes (context, namespace, cluster name).
type KubeName = (Option<String>, String, String);

/// What clusters claim on shared ground, with where each claim was first made.
#[derive(Default)]
struct Claims {
    /// Local traffic ports: one machine, one port each.
    ports: HashMap<u16, Claimant>,
    /// Kubernetes names: the names of a cluster's ReplicaSets and Service, with the claim's
    /// path in its document (a clash is reported at both claims).
    names: HashMap<KubeName, (Claimant, String)>,
}

fn check_application<'a>(
    app: &'a Spec<Application>,
    envs: &BTreeMap<&str, &Spec<Environment>>,
    broken: &Broken,
    identities: &mut HashMap<(String, String, String), (&'a Document, usize)>,
    claims: &mut Claims,
    out: &mut Vec<Diagnostic>,
) {
    let doc = &app.doc;
    let spec = &app.spec.spec;
    let name = &app.spec.metadata.name;
    // Versions and images are printed in plans, comments and names of things: one line, no
    // control characters (a line break in a version could forge a heading in a comment).
    let one_line = [
        (
            "/spec/artifact/version",
            "version",
            Some(&spec.artifact.version),
        ),
        (
            "/spec/artifact/image",
            "image",
            spec.artifact.image.as_ref(),
        ),
    ];
    for (pointer, what, value) in one_line {
        if let Some(v) = value
            && let Some(at) = v.chars().position(char::is_control)
        {
            out.push(
                err(
                    doc,
                    "control-character",
                    pointer,
                    format!(
                        "the {what} has a line break or another control character (character {})",
                        at + 1
                    ),
                )
                .hint(format!(
                    "write the {what} on one line, without control characters"
                )),
            );
        }
    }
    for (i, key) in spec.workload.secret_env.iter().enumerate() {
        let in_cluster = spec.clusters.iter().any(|c| c.env.contains_key(key));
        if !spec.workload.env.contains_key(key) && !in_cluster {
            out.push(
                Diagnostic::warning(
                    "secret-env",
                    &doc.file,
                    format!("secretEnv names `{key}`, which no env sets"),
                )
                .at(pos(doc, &format!("/spec/workload/secretEnv/{i}")))
                .path(format!("spec.workload.secretEnv[{i}]"))
                .hint("remove it, or set the variable in workload.env"),
            );
        }
    }
    check_verify(doc, "/spec/verify", &spec.verify, out);
    for (i, c) in spec.clusters.iter().enumerate() {
        let p = format!("/spec/clusters/{i}");
        let cluster = ClusterName::compose(name, c.stack.as_deref(), c.detail.as_deref());
        let env = envs.get(c.environment.as_str());
        let mut provider = None;
        let mut target = None;
        match env {
            None if broken.envs.contains(c.environment.as_str()) => {}
            None => out.push(
                err(
                    doc,
                    "unknown-environment",
                    &format!("{p}/environment"),
                    format!("unknown environment `{}`", c.environment),
                )
                .hint(suggest_or_list(
                    c.environment.as_str(),
                    envs.keys().copied(),
                    "environments",
                )),
            ),
            Some(e) => match e.spec.spec.targets.iter().find(|t| t.name == c.target) {
                Some(t) => {
                    provider = Some(t.provider);
                    target = Some(t);
                }
                None => out.push(
                    err(
                        doc,
                        "unknown-target",
                        &format!("{p}/target"),
                        format!(
                            "environment `{}` has no target `{}`",
                            c.environment, c.target
                        ),
                    )
                    .hint(suggest_or_list(
                        c.target.as_str(),
                        e.spec.spec.targets.iter().map(|t| t.name.as_str()),
                        "targets",
                    )),
                ),
            },
        }
        let identity = (
            c.environment.to_string(),
            c.target.to_string(),
            cluster.to_string(),
        );
        if let Some((first, j)) = identities.get(&identity) {
            let (file, at) = (&first.file, pos(first, &format!("/spec/clusters/{j}")));
            out.push(
                err(
                    doc,
                    "duplicate-cluster",
                    &p,
                    format!(
                        "cluster `{cluster}` on {}/{} is already declared at {}:{}",
                        c.environment,
                        c.target,
                        file.display(),
                        at.line
                    ),
                )
                .hint("give one of them a different stack or detail"),
            );
        } else {
            identities.insert(identity, (doc, i));
        }
        let sg = ServerGroupName::new(&cluster, Sequence::FIRST);
        if sg.as_str().len() > 63 {
            out.push(
                err(
                    doc,
                    "name-length",
                    &p,
                    format!(
                        "server group names of `{cluster}` (`{sg}`) are longer than 63 characters"
                    ),
                )
                .hint("shorten the application name, stack or detail"),
            );
        }
        let cap = c.capacity;
        if let Some(min) = cap.min
            && min > cap.desired
        {
            out.push(
                err(
                    doc,
                    "capacity",
                    &format!("{p}/capacity"),
                    format!("min ({min}) is greater than desired ({})", cap.desired),
                )
                .hint("make min <= desired <= max"),
            );
        }
        if let Some(max) = cap.max
            && max < cap.desired
        {
            out.push(
                err(
                    doc,
                    "capacity",
                    &format!("{p}/capacity"),
                    format!("max ({max}) is less than desired ({})", cap.desired),
                )
                .hint("make min <= desired <= max"),
            );
        }
        if let Some(s) = &c.strategy {
            check_strategy(doc, &format!("{p}/strategy"), s, out);
        }
        if let Some(v) = &c.verify {
            check_verify(doc, &format!("{p}/verify"), v, out);
        }
        let own = c.strategy.is_some();
        let effective = c
            .strategy
            .as_ref()
            .or_else(|| env.and_then(|e| e.spec.spec.defaults.strategy.as_ref()));
        if let (Some(a), Some(e)) = (effective.and_then(Strategy::analysis), env) {
            let at = if own {
                format!("{p}/strategy/analysis")
            } else {
                p.clone()
            };
            let from = if own {
                String::new()
            } else {
                format!(" (from environment `{}`'s default strategy)", c.environment)
            };
            match a.provider {
                crate::spec::AnalysisProvider::Builtin => {
                    if let Some(k) = provider.filter(|k| *k != ProviderKind::Local) {
                        out.push(
                            err(doc, "analysis", &at, format!("cluster `{cluster}` runs on a {} target, and its builtin analysis{from} reads the local target's proxy counters", k.as_str()))
                                .hint("set `provider: prometheus` in the analysis, and spec.analysis.prometheus in the environment"),
                        );
                    }
                }
                crate::spec::AnalysisProvider::Prometheus => {
                    if e.spec.spec.analysis.prometheus.is_none() {
                        out.push(
                            err(doc, "analysis", &at, format!("the analysis of cluster `{cluster}`{from} queries Prometheus, and environment `{}` sets no Prometheus address", c.environment))
                                .hint(format!("add to environment `{}`: spec.analysis.prometheus.address, e.g. http://prometheus.monitoring:9090", c.environment)),
                        );
                    }
                }
            }
        }
        let checks = c.verify.as_ref().unwrap_or(&spec.verify);
        let uses_url = checks
            .iter()
            .any(|v| v.command.iter().any(|a| a.contains("{url}")));
        if uses_url
            && provider == Some(ProviderKind::Local)
            && c.traffic.as_ref().and_then(|t| t.port).is_none()
        {
            let at = if c.verify.is_some() {
                format!("{p}/verify")
            } else {
                p.clone()
            };
            out.push(
                err(doc, "verify", &at, format!("a verification check of cluster `{cluster}` uses {{url}}, and the cluster has no traffic port"))
                    .hint("give the cluster `traffic: {port: ...}`, or drop {url} from the check"),
            );
        }
        if provider == Some(ProviderKind::Kubernetes) {
            if spec.artifact.image.is_none() {
                out.push(
                    err(doc, "kubernetes", &p, format!("cluster `{cluster}` runs on a Kubernetes target but the application has no `artifact.image`"))
                        .hint("add spec.artifact.image, the repository without a tag, e.g. registry.example.com/shop/hello; the tag is artifact.version"),
                );
            }
            if spec.kubernetes.is_none() {
                out.push(
                    err(doc, "kubernetes", &p, format!("cluster `{cluster}` runs on a Kubernetes target but the application has no `kubernetes` section"))
                        .hint("add spec.kubernetes with at least containerPort, e.g. kubernetes: {containerPort: 8080}"),
                );
            }
            // The Service is named after the cluster, and Service names are DNS-1035 labels.
            if !cluster
                .as_str()
                .starts_with(|ch: char| ch.is_ascii_lowercase())
            {
                out.push(
                    err(doc, "kubernetes", &p, format!("cluster `{cluster}` runs on a Kubernetes target, where its Service is named after it and must start with a letter"))
                        .hint("rename the application to start with a letter"),
                );
            }
            if let Some(k) = target.and_then(|t| t.kubernetes.as_ref()) {
                let here = format!("{}/{}", c.environment, c.target);
                let key = (k.context.clone(), k.namespace.clone(), cluster.to_string());
                match claims.names.get(&key) {
                    // The same environment and target is a duplicate cluster, reported above.
                    Some(((other, _, _), _)) if *other == here => {}
                    Some(((other, file, at), path)) => {
                        let ns = format!(
                            "namespace `{}`{}",
                            k.namespace,
                            k.context
                                .as_ref()
                                .map(|c| format!(" of context `{c}`"))
                                .unwrap_or_default()
                        );
                        let hint = "give each environment its own namespace, or one of the clusters a stack or detail";
                        let here_at = pos(doc, &p);
                        out.push(
                            err(
                                doc,
                                "kubernetes-names",
                                &p,
                                format!(
                                    "cluster `{cluster}` on {here} and on {other} ({}:{}) share {ns}, so their ReplicaSets and Service would have the same names",
                                    file.display(),
                                    at.line,
                                ),
                            )
                            .hint(hint),
                        );
                        // The first claim is as much at fault: say so where it is written too.
                        out.push(
                            Diagnostic::error(
                                "kubernetes-names",
                                file,
                                format!(
                                    "cluster `{cluster}` on {other} and on {here} ({}:{}) share {ns}, so their ReplicaSets and Service would have the same names",
                                    doc.file.display(),
                                    here_at.line,
                                ),
                            )
                            .at(*at)
                            .path(path.clone())
                            .hint(hint),
                        );
                    }
                    None => {
                        claims.names.insert(
                            key,
                            (
                                (here, doc.file.clone(), pos(doc, &p)),
                                crate::load::yaml::pointer_to_path(&p),
                            ),
                        );
                    }
                }
            }
        }
        if provider == Some(ProviderKind::Ec2) {
            check_ec2_cluster(doc, &p, cluster.as_str(), spec, c, out);
        }
        if provider == Some(ProviderKind::Local) {
            if spec.workload.command.is_empty() {
                out.push(
                    err(doc, "workload", &p, format!("cluster `{cluster}` runs on the local target but the application has no `workload.command`"))
                        .hint("add spec.workload.command, e.g. [\"keelson\", \"demo-app\", \"--port\", \"{port}\"]"),
                );
            }
            if let Some(t) = &c.traffic
                && t.port.is_none()
            {
                out.push(
                    err(doc, "traffic-port", &format!("{p}/traffic"), format!("cluster `{cluster}` runs on the local target, which takes traffic on a port, and its `traffic` has none"))
                        .hint("add traffic.port, e.g. traffic: {port: 8080}; host and path are for EC2 targets"),
                );
            }
            if let Some(port) = c.traffic.as_ref().and_then(|t| t.port) {
                let tp = format!("{p}/traffic/port");
                if port < 1024 {
                    out.push(
                        err(doc, "traffic-port", &tp, format!("traffic port {} is below 1024, which the local target, running unprivileged, cannot bind", port))
                            .hint("choose a port from 1024 to 65535, e.g. 8080"),
                    );
                }
                match claims.ports.get(&port) {
                    Some((other, file, at)) => out.push(
                        err(
                            doc,
                            "duplicate-port",
                            &tp,
                            format!(
                                "traffic port {} is already used by `{other}` at {}:{}",
                                port,
                                file.display(),
                                at.line
                            ),
                        )
                        .hint("local clusters share one machine; give each its own traffic port"),
                    ),
                    None => {
                        claims.ports.insert(
                            port,
                            (
                                format!("{}/{cluster}", c.environment),
                                doc.file.clone(),
                                pos(doc, &tp),
                            ),
                        );
                    }
                }
            }
        }
    }
}
