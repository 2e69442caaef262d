//! Planner scenarios: converge an in-memory target to one state, change the specs or the live
//! state, and check the plan (golden text, markdown and JSON) and that executing it converges.

use std::path::PathBuf;
use std::sync::Arc;

use keelson::actuation::{Gate, Op, Step, Verdict};
use keelson::engine::resolve;
use keelson::model::{DesiredState, ObservedState, Stamp};
use keelson::observe::{Providers, observe};
use keelson::plan::{Lock, Plan, Policy, Scope, Selection, Suspend, plan};
use keelson::provider::memory::MemoryProvider;
use keelson::provider::{Provider, TargetRef};
use keelson::render::{Style, json, markdown, text};
use keelson::source::{SourceFile, SourceSet};
use keelson::spec::ProviderKind;

const ENVS: &str = "apiVersion: keelson/v1
kind: Environment
metadata: {name: dev}
spec:
  targets: [{name: local, provider: local}]
---
apiVersion: keelson/v1
kind: Environment
metadata: {name: prod}
spec:
  dependsOn: [dev]
  prune: true
  targets: [{name: local, provider: local}]
";

/// An application with one dev cluster.
pub fn app(name: &str, version: &str, desired: u32, strategy: &str, port: u16) -> String {
    format!(
        "apiVersion: keelson/v1
kind: Application
metadata: {{name: {name}}}
spec:
  artifact: {{version: \"{version}\"}}
  workload: {{command: [keelson, demo-app, --port, \"{{port}}\"]}}
  health: {{http: {{path: /healthz}}, timeout: 30s}}
  clusters:
    - {{environment: dev, target: local, capacity: {{desired: {desired}}}, strategy: {strategy}, traffic: {{port: {port}}}}}
"
    )
}

/// Compiles specs (with the standard environments); panics on invalid specs.
pub fn desired(apps: &[String]) -> DesiredState {
    let mut files = vec![("envs.yaml".to_string(), ENVS.to_string())];
    for (i, a) in apps.iter().enumerate() {
        files.push((format!("app{i}.yaml"), a.clone()));
    }
    let checked = keelson::pipeline::check(crate::support::sources(&files));
    checked
        .desired
        .unwrap_or_else(|| panic!("invalid specs: {:?}", checked.diagnostics))
}

pub fn policy() -> Policy {
    Policy::at("2026-11-23T10:00:00Z".parse().unwrap())
}

pub fn providers(p: &Arc<MemoryProvider>) -> Providers {
    Providers::new().with(ProviderKind::Local, p.clone())
}

/// Executes every ready cluster's steps (operations through the provider, gates judged against
/// the live state, pauses taken as passed), checking the traffic guard against a fresh
/// observation after each step; repeats until the plan has nothing ready. Returns the rounds.
pub async fn converge(d: &DesiredState, p: &Arc<MemoryProvider>, policy: &Policy) -> usize {
    let providers = providers(p);
    for round in 0..6 {
        let observed = observe(d, &providers).await;
        let pl = plan(d, &observed, policy, "test", &Selection::default());
        let ready: Vec<_> = pl
            .clusters
            .iter()
            .filter(|c| c.ready() && !c.steps.is_empty())
            .collect();
        if ready.is_empty() {
            return round;
        }
        for c in ready {
            // Pruning is meant to stop a cluster serving; the guard covers everything else.
            let serving_before = c.action != keelson::plan::Action::Prune
                && observed.clusters.get(&c.id).is_some_and(|l| l.serving());
            let target = target_of(d, &c.id);
            for s in &c.steps {
                run_step(p, &target, c, &s.step).await;
                let now = observe(d, &providers).await;
                if serving_before {
                    assert!(
                        now.clusters.get(&c.id).is_some_and(|l| l.serving())
                            || matches!(s.step, Step::Op(Op::Destroy { .. }))
                                && c.desired.is_none(),
                        "{} stopped serving after `{}`",
                        c.id,
                        s.description
                    );
                }
            }
        }
    }
    panic!("did not converge in 6 rounds");
}

/// The target a cluster lives on.
pub fn target_of(d: &DesiredState, id: &keelson::model::ClusterId) -> TargetRef {
    let e = &d.environments[&id.environment];
    TargetRef {
        environment: e.name.clone(),
        target: e
            .targets
            .iter()
            .find(|t| t.name == id.target)
            .cloned()
            .expect("the cluster's target is declared"),
    }
}

/// Runs one step against the memory provider: an operation resolved against the plan's desired
/// cluster, a gate that must pass at once (instances there are healthy when started).
pub async fn run_step(
    p: &Arc<MemoryProvider>,
    target: &TargetRef,
    c: &keelson::plan::ClusterPlan,
    step: &Step,
) {
    match step {
        Step::Op(op) => {
            let op = resolve(op, c.desired.as_ref()).unwrap();
            p.apply(target, &c.id, &op, &Stamp::new("test-store", 1))
                .await
                .unwrap();
        }
        // What an analysis or a check measures is not in memory: taken as passed here, judged
        // for real in `analysis.rs`.
        Step::Gate(Gate::Analysis { .. } | Gate::Verify { .. }) => {}
        Step::Gate(g @ Gate::Elapsed { .. }) => {
            assert_eq!(
                g.judge(None, g_elapsed(g)),
                Verdict::Pass,
                "{g} passes once its time is up"
            );
        }
        Step::Gate(g) => {
            let live = p.snapshot().into_iter().find(|l| l.id == c.id);
            assert_eq!(
                g.judge(live.as_ref(), std::time::Duration::ZERO),
                Verdict::Pass,
                "{}: `{g}` does not pass",
                c.id
            );
        }
    }
}

fn g_elapsed(g: &Gate) -> std::time::Duration {
    match g {
        Gate::Elapsed { duration } => duration.to_std(),
        _ => std::time::Duration::ZERO,
    }
}

async fn observed(d: &DesiredState, p: &Arc<MemoryProvider>) -> ObservedState {
    observe(d, &providers(p)).await
}

fn render_all(pl: &Plan) -> String {
    format!(
        "{}\n===== markdown\n{}",
        text(pl, Style::default()),
        markdown(pl)
    )
}

fn snapshot(name: &str, pl: &Plan) {
    insta::assert_snapshot!(format!("plan_{name}"), render_all(pl));
    insta::assert_snapshot!(format!("plan_{name}_json"), json(pl));
}

/// Converges `before`, applies `mutate` to the live state, plans `after`.
async fn scenario(
    before: &[String],
    after: &[String],
    mutate: impl FnOnce(&MemoryProvider),
) -> (Plan, Arc<MemoryProvider>, DesiredState) {
    let p = Arc::new(MemoryProvider::new());
    let pol = policy();
    if !before.is_empty() {
        converge(&desired(before), &p, &pol).await;
    }
    mutate(&p);
    let d = desired(after);
    let pl = plan(
        &d,
        &observed(&d, &p).await,
        &pol,
        "rev-after",
        &Selection::default(),
    );
    (pl, p, d)
}

fn rb() -> &'static str {
    "{type: red-black, keepDisabled: 1}"
}

#[tokio::test(start_paused = true)]
async fn new_cluster_then_no_changes() {
    let apps = vec![app("hello", "1.0.0", 2, rb(), 18080)];
    let (pl, p, d) = scenario(&[], &apps, |_| {}).await;
    assert_eq!(pl.summary.create, 1);
    assert!(
        pl.clusters[0].steps[0]
            .description
            .starts_with("create hello-v000"),
        "{}",
        pl.clusters[0].steps[0].description
    );
    snapshot("new_cluster", &pl);
    converge(&d, &p, &policy()).await;
    let again = plan(
        &d,
        &observed(&d, &p).await,
        &policy(),
        "rev",
        &Selection::default(),
    );
    assert!(!again.has_changes(), "{}", text(&again, Style::default()));
    snapshot("no_changes", &again);
    let twice = plan(
        &d,
        &observed(&d, &p).await,
        &policy(),
        "rev",
        &Selection::default(),
    );
    assert_eq!(json(&again), json(&twice), "planning is deterministic");
}

#[tokio::test(start_paused = true)]
async fn each_strategy_rolls_out_a_new_version() {
    let strategies = [
        ("red_black", "{type: red-black, keepDisabled: 1}"),
        (
            "rolling_red_black",
            "{type: rolling-red-black, steps: [25, 50]}",
        ),
        ("highlander", "{type: highlander}"),
        (
            "rolling_update",
            "{type: rolling-update, maxUnavailable: 2}",
        ),
        (
            "canary",
            "{type: canary, steps: [{weight: 10, pause: 30s}, {weight: 50, pause: 1m}]}",
        ),
        ("none", "{type: none}"),
    ];
    for (name, s) in strategies {
        let (pl, p, d) = scenario(
            &[app("hello", "1.0.0", 4, s, 18080)],
            &[app("hello", "1.1.0", 4, s, 18080)],
            |_| {},
        )
        .await;
        assert_eq!(pl.summary.roll_out, 1, "{name}");
        assert!(
            pl.clusters[0].blocked.is_empty(),
            "{name}: {:?}",
            pl.clusters[0].blocked
        );
        snapshot(&format!("rollout_{name}"), &pl);
        converge(&d, &p, &policy()).await;
        let live = p.snapshot();
        let serving: Vec<_> = live[0]
            .server_groups
            .iter()
            .filter(|g| g.serving())
            .collect();
        assert_eq!(serving.len(), 1, "{name}: one group serves at the end");
        assert_eq!(serving[0].version, "1.1.0", "{name}");
        assert_eq!(serving[0].instances.len(), 4, "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn capacity_only_change_resizes_in_place() {
    let (pl, _, _) = scenario(
        &[app("hello", "1.0.0", 2, rb(), 18080)],
        &[app("hello", "1.0.0", 5, rb(), 18080)],
        |_| {},
    )
    .await;
    assert_eq!(pl.summary.resize, 1);
    assert!(
        pl.clusters[0]
            .steps
            .iter()
            .all(|s| !matches!(s.step, Step::Op(Op::Create { .. })))
    );
    snapshot("resize", &pl);
}

#[tokio::test(start_paused = true)]
async fn drift_is_restored() {
    let apps = vec![app("hello", "1.0.0", 3, rb(), 18080)];
    let d = desired(&apps);
    let id = d.clusters.keys().next().cloned().unwrap();
    let p = Arc::new(MemoryProvider::new());
    converge(&d, &p, &policy()).await;
    // A group disabled by hand, nothing else serving.
    p.set_weight(&id, keelson::model::Sequence::FIRST, 0);
    let pl = plan(
        &d,
        &observed(&d, &p).await,
        &policy(),
        "rev",
        &Selection::default(),
    );
    assert_eq!(pl.summary.restore, 1);
    assert!(pl.clusters[0].drift);
    snapshot("drift_disabled", &pl);
    converge(&d, &p, &policy()).await;
    assert!(p.snapshot()[0].serving());
}

#[tokio::test(start_paused = true)]
async fn old_groups_beyond_keep_disabled_are_cleaned_up() {
    let p = Arc::new(MemoryProvider::new());
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        converge(
            &desired(&[app(
                "hello",
                v,
                1,
                "{type: red-black, keepDisabled: 5}",
                18080,
            )]),
            &p,
            &policy(),
        )
        .await;
    }
    assert_eq!(p.snapshot()[0].server_groups.len(), 3);
    let d = desired(&[app(
        "hello",
        "1.2.0",
        1,
        "{type: red-black, keepDisabled: 1}",
        18080,
    )]);
    let pl = plan(
        &d,
        &observed(&d, &p).await,
        &policy(),
        "rev",
        &Selection::default(),
    );
    assert_eq!(pl.summary.destroy_server_groups, 1);
    snapshot("cleanup", &pl);
}

#[tokio::test(start_paused = true)]
async fn orphans_are_reported_or_pruned() {
    let both = vec![
        app("hello", "1.0.0", 1, rb(), 18080),
        app("gone", "1.0.0", 1, rb(), 18081),
    ];
    let (pl, _, _) = scenario(&both, &both[..1], |_| {}).await;
    assert_eq!(pl.summary.orphans, 1);
    assert!(!pl.has_changes(), "a reported orphan is not a change");
    snapshot("orphan_reported", &pl);
}

#[tokio::test(start_paused = true)]
async fn suspends_locks_and_guards_block() {
    let d = desired(&[app("hello", "1.1.0", 2, rb(), 18080)]);
    let id = d.clusters.keys().next().cloned().unwrap();
    let p = Arc::new(MemoryProvider::new());
    converge(
        &desired(&[app("hello", "1.0.0", 2, rb(), 18080)]),
        &p,
        &policy(),
    )
    .await;
    let mut pol = policy();
    pol.suspends.push(Suspend {
        scope: Scope::Environment("dev".parse_name()),
        who: "alice".into(),
        reason: "incident 42".into(),
        until: None,
    });
    pol.locks.push(Lock {
        cluster: id.clone(),
        owner: "host-a pid 7 keelson apply".into(),
        reason: "apply".into(),
        expires: "2026-11-23T10:05:00Z".parse().unwrap(),
    });
    let pl = plan(
        &d,
        &observed(&d, &p).await,
        &pol,
        "rev",
        &Selection::default(),
    );
    assert_eq!(pl.clusters[0].blocked.len(), 2);
    assert_eq!(pl.summary.blocked, 1);
    snapshot("suspended_locked", &pl);
    // An expired suspend no longer blocks.
    pol.suspends[0].until = Some("2026-11-23T09:00:00Z".parse().unwrap());
    pol.locks.clear();
    let pl = plan(
        &d,
        &observed(&d, &p).await,
        &pol,
        "rev",
        &Selection::default(),
    );
    assert!(pl.clusters[0].blocked.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_rollout_stopped_part_way_carries_on() {
    let canary = "{type: canary, steps: [{weight: 10, pause: 30s}, {weight: 50, pause: 1m}]}";
    let p = Arc::new(MemoryProvider::new());
    converge(
        &desired(&[app("hello", "1.0.0", 2, canary, 18080)]),
        &p,
        &policy(),
    )
    .await;
    let d = desired(&[app("hello", "1.1.0", 2, canary, 18080)]);
    let first = plan(
        &d,
        &observed(&d, &p).await,
        &policy(),
        "rev",
        &Selection::default(),
    );
    let c = &first.clusters[0];
    let target = target_of(&d, &c.id);
    // Run the first four steps (create, wait, shift 10%, pause), then "crash".
    for s in &c.steps[..4] {
        run_step(&p, &target, c, &s.step).await;
    }
    let resumed = plan(
        &d,
        &observed(&d, &p).await,
        &policy(),
        "rev",
        &Selection::default(),
    );
    let steps: Vec<&str> = resumed.clusters[0]
        .steps
        .iter()
        .map(|s| s.description.as_str())
        .collect();
    // The pause of the current step is held again (its elapsed time is not observable), then
    // the rollout goes on at the next weight, not from scratch.
    assert_eq!(steps[0], "pause 30s", "{steps:?}");
    assert!(steps[1].contains("50%"), "{steps:?}");
    assert!(!steps.iter().any(|s| s.starts_with("create")), "{steps:?}");
    snapshot("canary_resume", &resumed);
    converge(&d, &p, &policy()).await;
}

#[tokio::test(start_paused = true)]
async fn promotion_waits_for_upstream() {
    let prod = "apiVersion: keelson/v1
kind: Application
metadata: {name: hello}
spec:
  artifact: {version: \"2.0.0\"}
  workload: {command: [keelson, demo-app, --port, \"{port}\"]}
  clusters:
    - {environment: dev, target: local, capacity: {desired: 1}, traffic: {port: 18080}}
    - {environment: prod, target: local, stack: prod, capacity: {desired: 1}, traffic: {port: 18081}}
"
    .to_string();
    let d = desired(&[prod]);
    let p = Arc::new(MemoryProvider::new());
    let pl = plan(
        &d,
        &observed(&d, &p).await,
        &policy(),
        "rev",
        &Selection::default(),
    );
    let prod_plan = pl
        .clusters
        .iter()
        .find(|c| c.id.environment.as_str() == "prod")
        .unwrap();
    assert!(
        matches!(prod_plan.blocked[0], keelson::plan::Block::Promotion { .. }),
        "{:?}",
        prod_plan.blocked
    );
    snapshot("promotion_blocked", &pl);
    assert_eq!(converge(&d, &p, &policy()).await, 2, "dev first, then prod");
}

trait ParseName {
    fn parse_name(self) -> keelson::spec::EnvName;
}

impl ParseName for &str {
    fn parse_name(self) -> keelson::spec::EnvName {
        keelson::spec::EnvName::new(self).unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn secrets_never_appear_in_plans() {
    let spec = app("vault", "1.0.0", 1, rb(), 18080).replace(
        "workload: {command: [keelson, demo-app, --port, \"{port}\"]}",
        "workload: {command: [keelson, demo-app, --port, \"{port}\"], env: {DB_PASSWORD: hunter2, API_TOKEN: abc123, LOG_LEVEL: debug, OTHER: s3cr3t}, secretEnv: [OTHER]}",
    );
    let d = desired(&[spec]);
    let p = Arc::new(MemoryProvider::new());
    let pl = plan(
        &d,
        &observed(&d, &p).await,
        &policy(),
        "rev",
        &Selection::default(),
    );
    let all = format!(
        "{}{}{}",
        json(&pl),
        text(&pl, Style::default()),
        markdown(&pl)
    );
    for secret in ["hunter2", "abc123", "s3cr3t"] {
        assert!(!all.contains(secret), "{secret} leaked");
    }
    assert!(all.contains("debug"), "ordinary values are shown");
    // The real values still reach the provider.
    converge(&d, &p, &policy()).await;
    assert!(d.clusters.values().next().unwrap().workload.env["DB_PASSWORD"] == "hunter2");
}

#[tokio::test(start_paused = true)]
async fn orphans_in_a_pruning_environment_are_destroyed() {
    let prod_app = |name: &str, port: u16| {
        format!(
            "apiVersion: keelson/v1
kind: Application
metadata: {{name: {name}}}
spec:
  artifact: {{version: \"1.0.0\"}}
  workload: {{command: [keelson, demo-app, --port, \"{{port}}\"]}}
  clusters:
    - {{environment: dev, target: local, capacity: {{desired: 1}}, traffic: {{port: {port}}}}}
    - {{environment: prod, target: local, stack: prod, capacity: {{desired: 1}}, traffic: {{port: {}}}}}
",
            port + 1
        )
    };
    let both = vec![prod_app("keep", 18100), prod_app("gone", 18110)];
    let p = Arc::new(MemoryProvider::new());
    converge(&desired(&both), &p, &policy()).await;
    let d = desired(&both[..1]);
    let pl = plan(
        &d,
        &observed(&d, &p).await,
        &policy(),
        "rev",
        &Selection::default(),
    );
    let actions: Vec<(String, keelson::plan::Action)> = pl
        .clusters
        .iter()
        .map(|c| (c.id.to_string(), c.action))
        .collect();
    // prod prunes, dev does not.
    assert!(
        actions.contains(&("prod/local/gone-prod".into(), keelson::plan::Action::Prune)),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("dev/local/gone".into(), keelson::plan::Action::Orphan)),
        "{actions:?}"
    );
    snapshot("prune", &pl);
    converge(&d, &p, &policy()).await;
    let left: Vec<String> = p.snapshot().iter().map(|c| c.id.to_string()).collect();
    assert!(
        !left.contains(&"prod/local/gone-prod".to_string())
            && left.contains(&"dev/local/gone".to_string()),
        "{left:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn windows_and_approvals_hold_new_versions() {
    let envs_with = |constraints: &str| {
        format!(
            "apiVersion: keelson/v1\nkind: Environment\nmetadata: {{name: dev}}\nspec:\n  targets: [{{name: local, provider: local}}]\n  constraints: {constraints}\n"
        )
    };
    let app_text = app("gated", "1.0.0", 1, rb(), 18080);
    let compile = |env: String| {
        let files = vec![
            SourceFile {
                path: PathBuf::from("envs.yaml"),
                bytes: env.into_bytes(),
            },
            SourceFile {
                path: PathBuf::from("app.yaml"),
                bytes: app_text.clone().into_bytes(),
            },
        ];
        keelson::pipeline::check(SourceSet {
            files,
            diagnostics: vec![],
        })
        .desired
        .expect("valid")
    };
    let p = Arc::new(MemoryProvider::new());
    // Policy time is Monday 2026-11-23 11:00 in Berlin.
    let closed = compile(envs_with(
        "{windows: [{days: [tue], start: \"09:00\", end: \"17:00\", timezone: Europe/Berlin}]}",
    ));
    let pl = plan(
        &closed,
        &observed(&closed, &p).await,
        &policy(),
        "rev",
        &Selection::default(),
    );
    assert!(
        matches!(&pl.clusters[0].blocked[..], [keelson::plan::Block::OutsideWindow { windows }] if windows[0] == "tue 09:00-17:00 Europe/Berlin"),
        "{:?}",
        pl.clusters[0].blocked
    );
    let open = compile(envs_with(
        "{windows: [{days: [mon], start: \"09:00\", end: \"17:00\", timezone: Europe/Berlin}], approval: required}",
    ));
    let pl = plan(
        &open,
        &observed(&open, &p).await,
        &policy(),
        "rev",
        &Selection::default(),
    );
    assert!(
        matches!(&pl.clusters[0].blocked[..], [keelson::plan::Block::AwaitingApproval { version, .. }] if version == "1.0.0"),
        "{:?}",
        pl.clusters[0].blocked
    );
    snapshot("awaiting_approval", &pl);
    let mut approved = policy();
    approved.approvals.push(keelson::plan::Approval {
        environment: "dev".parse_name(),
        app: keelson::spec::AppName::new("gated").unwrap(),
        version: "1.0.0".into(),
    });
    let pl = plan(
        &open,
        &observed(&open, &p).await,
        &approved,
        "rev",
        &Selection::default(),
    );
    assert!(
        pl.clusters[0].blocked.is_empty(),
        "{:?}",
        pl.clusters[0].blocked
    );
}

#[tokio::test(start_paused = true)]
async fn a_canary_with_analysis_and_checks_shows_its_criteria_and_what_holds_it() {
    let strategy = "{type: canary, steps: [{weight: 10, pause: 30s}, {weight: 50, pause: 1m}], analysis: {interval: 10s, failureLimit: 1, inconclusiveLimit: 2, score: {pass: 90, marginal: 75}, metrics: [{name: errors, query: error-rate, max: 0.05, maxIncrease: 0.01}, {name: latency, query: p95-latency, maxRatio: 1.25}]}}";
    let with_checks = |version: &str| {
        app("hello", version, 4, strategy, 18080).replace(
            "  clusters:",
            "  verify:\n    - {name: smoke, command: [curl, -fsS, \"{url}/healthz\"], timeout: 30s}\n  clusters:",
        )
    };
    let (pl, p, d) = scenario(&[with_checks("1.0.0")], &[with_checks("1.1.0")], |_| {}).await;
    assert!(
        pl.clusters[0].blocked.is_empty(),
        "{:?}",
        pl.clusters[0].blocked
    );
    let gates: Vec<&str> = pl.clusters[0]
        .steps
        .iter()
        .filter_map(|s| match &s.step {
            Step::Gate(Gate::Analysis { .. }) => Some("analysis"),
            Step::Gate(Gate::Verify { .. }) => Some("verify"),
            _ => None,
        })
        .collect();
    assert_eq!(gates, ["analysis", "analysis", "verify"]);
    snapshot("canary_analysis", &pl);

    // Held for a person, then failed: the same spec waits, or is not tried again.
    let id = pl.clusters[0].id.clone();
    let cluster = &d.clusters[&id];
    for held in [true, false] {
        let mut pol = policy();
        pol.verdicts.push(keelson::plan::AnalysisVerdict {
            cluster: id.clone(),
            version: "1.1.0".into(),
            spec_hash: cluster.spec_hash.clone(),
            hash: cluster.hash.clone(),
            held,
            why: if held {
                "holds: 3 inconclusive measurement(s), 2 tolerated; last: no data for any metric (no requests in the interval)".into()
            } else {
                "failed: 2 failed measurement(s), 1 tolerated; last: score 50; errors 0.31 (baseline 0): fail, above max 0.05".into()
            },
        });
        let blocked = plan(
            &d,
            &observed(&d, &p).await,
            &pol,
            "rev-after",
            &Selection::default(),
        );
        snapshot(
            if held {
                "analysis_held"
            } else {
                "analysis_failed"
            },
            &blocked,
        );
        // Another spec (a new version) is not held by the verdict on this one.
        let next = desired(&[with_checks("1.2.0")]);
        let free = plan(
            &next,
            &observed(&next, &p).await,
            &pol,
            "rev-next",
            &Selection::default(),
        );
        assert!(
            free.clusters[0].blocked.is_empty(),
            "{:?}",
            free.clusters[0].blocked
        );
    }
}

/// What the store would have recorded live and healthy for `d`'s one cluster at `at`.
fn deployed_of(d: &DesiredState, at: &str) -> keelson::plan::Deployed {
    let c = d.clusters.values().next().unwrap();
    keelson::plan::Deployed {
        cluster: c.id.clone(),
        app: c.app.clone(),
        artifact: c.artifact(),
        spec_hash: c.spec_hash.clone(),
        rest: c.retarget.rest.clone(),
        at: at.parse().unwrap(),
    }
}

#[tokio::test(start_paused = true)]
async fn pins_vetoes_and_the_flapping_guard_in_plans_and_comments() {
    let rb = "{type: red-black, keepDisabled: 1, destroyDisabledAfter: 24h}";
    let v1 = desired(&[app("hello", "1.0.0", 2, rb, 18080)]);
    let v11 = desired(&[app("hello", "1.1.0", 2, rb, 18080)]);
    let p = Arc::new(MemoryProvider::new());
    converge(&v1, &p, &policy()).await;
    converge(&v11, &p, &policy()).await;
    let id = v1.clusters.keys().next().cloned().unwrap();
    let mut pol = policy();
    pol.deployed = vec![
        deployed_of(&v1, "2026-11-20T10:00:00Z"),
        deployed_of(&v11, "2026-11-22T10:00:00Z"),
    ];
    pol.disabled_since.insert(
        "dev/local/hello/hello-v000".into(),
        "2026-11-23T08:00:00Z".parse().unwrap(),
    );
    let pin = keelson::plan::Pin {
        environment: id.environment.clone(),
        app: keelson::spec::AppName::new("hello").unwrap(),
        artifact: v1.clusters.values().next().unwrap().artifact(),
        who: "alice".into(),
        reason: "incident 42".into(),
        until: Some("2026-11-23T18:00:00Z".parse().unwrap()),
        at: "2026-11-23T09:00:00Z".parse().unwrap(),
    };
    let veto = |version: &str, env: bool| keelson::plan::Veto {
        app: keelson::spec::AppName::new("hello").unwrap(),
        version: version.into(),
        environment: env.then(|| id.environment.clone()),
        who: "bob".into(),
        reason: "corrupts carts".into(),
        at: "2026-11-23T09:30:00Z".parse().unwrap(),
    };
    let v12 = desired(&[app("hello", "1.2.0", 2, rb, 18080)]);
    // Pinned to 1.0.0 while Git asks for 1.2.0: back to the kept group.
    pol.pins = vec![pin];
    let pl = plan(
        &v12,
        &observed(&v12, &p).await,
        &pol,
        "rev",
        &Selection::default(),
    );
    assert_eq!(pl.clusters[0].action, keelson::plan::Action::RollOut);
    assert_eq!(pl.clusters[0].steps[0].description, "enable hello-v000");
    snapshot("controls_pinned", &pl);
    // The live version vetoed: back to the last one recorded live and healthy.
    pol.pins.clear();
    pol.vetoes = vec![veto("1.1.0", true)];
    let pl = plan(
        &v11,
        &observed(&v11, &p).await,
        &pol,
        "rev",
        &Selection::default(),
    );
    assert!(matches!(
        pl.clusters[0].control,
        Some(keelson::plan::Control::Vetoed { ref back_to, .. }) if back_to == "1.0.0"
    ));
    snapshot("controls_vetoed", &pl);
    // Git asks for a version vetoed everywhere: held at the live one, with the cleanup to come;
    // and the flapping guard on a cluster whose rollouts keep failing.
    pol.vetoes = vec![veto("1.2.0", false)];
    let both = desired(&[
        app("hello", "1.2.0", 2, rb, 18080),
        app("shop", "2.0.0", 2, rb, 18081),
    ]);
    let shop = both
        .clusters
        .values()
        .find(|c| c.app.as_str() == "shop")
        .unwrap();
    pol.failures = (0..3)
        .map(|i| keelson::plan::Failure {
            cluster: shop.id.clone(),
            hash: shop.hash.clone(),
            at: format!("2026-11-23T09:5{i}:00Z").parse().unwrap(),
            error: "health: 0/2 healthy after 30s".into(),
        })
        .collect();
    let pl = plan(
        &both,
        &observed(&both, &p).await,
        &pol,
        "rev",
        &Selection::default(),
    );
    assert!(!pl.has_changes() || pl.clusters.iter().any(|c| c.app.as_str() == "shop"));
    assert_eq!(pl.scheduled.len(), 1);
    snapshot("controls_held", &pl);
    // The lines `status` shows for each cluster.
    let limits = keelson::spec::Flapping::default();
    let lines: Vec<String> = both
        .clusters
        .values()
        .flat_map(|c| {
            keelson::plan::describe(c, &limits, &pol)
                .into_iter()
                .map(move |l| format!("{}  control: {l}", c.id))
        })
        .collect();
    insta::assert_snapshot!("controls_status_lines", lines.join("\n"));
    // The pull request comment says the same.
    let review = keelson::review::Review {
        base: "abc1234".into(),
        head: "def5678".into(),
        live: keelson::review::Live::Observed,
        outcome: keelson::review::planned(
            Some(&v11),
            &both,
            &observed(&both, &p).await,
            &pol,
            "def5678",
            &Selection::default(),
        ),
    };
    let ctx = keelson::review::comment::CommentContext::new("all", policy().now);
    insta::assert_snapshot!(
        "controls_pr_comment",
        keelson::review::comment::parts(&review, &ctx).join("\n----- next part\n")
    );
}
