//! Pull request comments: golden comments for the cases a reviewer meets, the split property,
//! and `keelson pr-comment` end to end against a local server that answers like GitHub.

use std::path::Path;
use std::time::Duration;

use keelson::model::{ClusterName, DesiredState, ObservedState};
use keelson::plan::{Policy, Scope, Selection, Suspend};
use keelson::review::comment::{CommentContext, marker, parts};
use keelson::review::split::balanced;
use keelson::review::{Live, Outcome, Review, planned};
use keelson::source::SourceSet;
use keelson::spec::EnvName;
use proptest::prelude::*;

use crate::github_stub::{Fault, GitHubStub};
use crate::support::git;

const ENVS: &str = "apiVersion: keelson/v1
kind: Environment
metadata: {name: dev}
spec:
  targets: [{name: local, provider: local}]
---
apiVersion: keelson/v1
kind: Environment
metadata: {name: staging}
spec:
  dependsOn: [dev]
  targets: [{name: local, provider: local}]
---
apiVersion: keelson/v1
kind: Environment
metadata: {name: prod}
spec:
  dependsOn: [staging]
  prune: true
  targets: [{name: local, provider: local}]
";

/// An application with a cluster in each of `envs` (`env:desired`), on ports from `port`.
fn app(name: &str, version: &str, envs: &[(&str, u32)], port: u16, extra_env: &str) -> String {
    let clusters: String = envs
        .iter()
        .enumerate()
        .map(|(i, (e, n))| {
            format!(
                "    - {{environment: {e}, target: local, capacity: {{desired: {n}}}, strategy: {{type: red-black}}, traffic: {{port: {}}}}}\n",
                port + i as u16
            )
        })
        .collect();
    format!(
        "apiVersion: keelson/v1
kind: Application
metadata: {{name: {name}}}
spec:
  artifact: {{version: \"{version}\"}}
  workload:
    command: [keelson, demo-app, --port, \"{{port}}\"]
    env: {{LOG_LEVEL: info{extra_env}}}
  health: {{http: {{path: /healthz}}, timeout: 30s}}
  clusters:
{clusters}"
    )
}

fn files(apps: &[(&str, String)]) -> SourceSet {
    let mut files = vec![("environments.yaml".to_string(), ENVS.to_string())];
    files.extend(
        apps.iter()
            .map(|(name, text)| (format!("apps/{name}.yaml"), text.clone())),
    );
    crate::support::sources(&files)
}

fn compiled(apps: &[(&str, String)]) -> Option<DesiredState> {
    keelson::pipeline::check(files(apps)).desired
}

fn now() -> jiff::Timestamp {
    "2026-11-23T10:00:00Z".parse().unwrap()
}

/// Reviews head against base, with base assumed live.
fn review(base: &[(&str, String)], head: &[(&str, String)], policy: &Policy) -> Review {
    let b = compiled(base).expect("base is valid");
    let checked = keelson::pipeline::check(files(head));
    let outcome = match checked.desired {
        None => Outcome::Invalid {
            diagnostics: checked.diagnostics,
        },
        Some(h) => planned(
            Some(&b),
            &h,
            &ObservedState::assuming_converged(&b),
            policy,
            "0123456789abcdef0123456789abcdef01234567",
            &Selection::default(),
        ),
    };
    Review {
        base: "def5678".into(),
        head: "0123456".into(),
        live: Live::AssumedBase,
        outcome,
    }
}

fn ctx() -> CommentContext {
    let mut c = CommentContext::new("all", now());
    c.blob_url = Some(
        "https://github.com/acme/deploy/blob/0123456789abcdef0123456789abcdef01234567/".into(),
    );
    c
}

fn base_apps() -> Vec<(&'static str, String)> {
    vec![
        (
            "web",
            app(
                "web",
                "1.0.0",
                &[("dev", 1), ("staging", 2), ("prod", 3)],
                20000,
                ", DB_PASSWORD: hunter2",
            ),
        ),
        (
            "api",
            app("api", "2.0.0", &[("dev", 1), ("prod", 3)], 20100, ""),
        ),
    ]
}

fn comment(r: &Review) -> String {
    let ps = parts(r, &ctx());
    for p in &ps {
        assert!(p.len() <= 65_536 && balanced(p), "{p}");
    }
    ps.join("\n<!-- next comment -->\n")
}

#[test]
fn golden_no_changes() {
    let r = review(&base_apps(), &base_apps(), &Policy::at(now()));
    assert_eq!(r.status().1, "no changes");
    insta::assert_snapshot!("pr_no_changes", comment(&r));
}

#[test]
fn golden_one_rollout() {
    let mut head = base_apps();
    head[1].1 = app("api", "2.1.0", &[("dev", 1), ("prod", 3)], 20100, "");
    let r = review(&base_apps(), &head, &Policy::at(now()));
    insta::assert_snapshot!("pr_one_rollout", comment(&r));
}

#[test]
fn golden_many_environments_with_a_secret_changed() {
    let head = vec![
        (
            "web",
            app(
                "web",
                "1.1.0",
                &[("dev", 1), ("staging", 2), ("prod", 3)],
                20000,
                ", DB_PASSWORD: correct-horse",
            ),
        ),
        // Capacity only in prod; the dev cluster is removed.
        ("api", app("api", "2.0.0", &[("prod", 5)], 20101, "")),
        ("jobs", app("jobs", "0.1.0", &[("dev", 1)], 20200, "")),
    ];
    let r = review(&base_apps(), &head, &Policy::at(now()));
    let text = comment(&r);
    assert!(
        !text.contains("hunter2") && !text.contains("correct-horse"),
        "{text}"
    );
    assert!(
        text.contains("workload.env.DB_PASSWORD: ******** (changed)"),
        "{text}"
    );
    insta::assert_snapshot!("pr_many_environments", text);
}

#[test]
fn golden_invalid_head() {
    let mut head = base_apps();
    head[0].1 = head[0]
        .1
        .replace("capacity: {desired: 2}", "capacty: {desired: 2}");
    head[1].1 = head[1]
        .1
        .replace("capacity: {desired: 3}", "capacity: {desired: -3}");
    let r = review(&base_apps(), &head, &Policy::at(now()));
    assert_eq!(
        r.status(),
        (
            keelson::review::StatusState::Failure,
            "invalid: 2 errors in 2 files".to_string()
        )
    );
    let text = comment(&r);
    assert!(
        text.contains("/blob/0123456789abcdef0123456789abcdef01234567/apps/web.yaml#L"),
        "{text}"
    );
    insta::assert_snapshot!("pr_invalid_head", text);
}

#[test]
fn golden_suspended_environment() {
    let mut head = base_apps();
    head[1].1 = app("api", "2.0.1", &[("dev", 1), ("prod", 3)], 20100, "");
    let mut policy = Policy::at(now());
    policy.suspends.push(Suspend {
        scope: Scope::Environment(EnvName::new("dev".to_string()).unwrap()),
        who: "alice".into(),
        reason: "incident 4711".into(),
        until: None,
    });
    let r = review(&base_apps(), &head, &policy);
    let text = comment(&r);
    assert!(text.contains("What will hold these changes"), "{text}");
    insta::assert_snapshot!("pr_suspended_environment", text);
}

/// Strips a part's heading and, where a group continues from the previous part, the seam.
fn rejoin(parts: &[String]) -> String {
    let mut whole = String::new();
    for p in parts {
        let mut body = p.split_once('\n').map_or("", |(_, b)| b);
        if let Some(rest) = body.strip_prefix("<sub>Keelson plan, part ") {
            body = rest.split_once("</sub>\n\n").map_or("", |(_, b)| b);
        }
        if body.starts_with("<details><summary><b>")
            && let Some((first, rest)) = body.split_once("\n\n")
            && first.ends_with("(continued)</summary>")
        {
            whole = whole
                .strip_suffix("</details>\n\n")
                .expect("a continued group was closed")
                .to_string();
            body = rest;
        }
        whole.push_str(body);
    }
    whole
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// For plans of 1 to 5,000 clusters: every part is under the limit, every fence and
    /// `<details>` is balanced in each part, and the parts put back together are the whole.
    #[test]
    fn parts_fit_balance_and_rejoin(
        n in 1usize..5_000,
        envs in 1usize..5,
        ours in 0usize..100,
        max in prop_oneof![Just(65_536usize), 4_000usize..65_536],
    ) {
        let mut head = base_apps();
        head[0].1 = app("web", "1.1.0", &[("dev", 1), ("staging", 2), ("prod", 3)], 20000, ", DB_PASSWORD: x");
        let r = review(&base_apps(), &head, &Policy::at(now()));
        let Outcome::Planned { plan, delta, base_invalid } = r.outcome.clone() else {
            panic!("valid");
        };
        let template = plan.clusters[0].clone();
        let changed = delta.values().next().cloned().expect("a change");
        let mut big = plan.clone();
        let mut big_delta = keelson::review::Delta::new();
        big.clusters = (0..n)
            .map(|i| {
                let mut c = template.clone();
                c.id.environment = EnvName::new(format!("env{}", i % envs)).unwrap();
                c.id.name = ClusterName::parse(format!("svc{i:05}")).unwrap();
                if i % 100 < ours {
                    big_delta.insert(c.id.clone(), changed.clone());
                }
                c
            })
            .collect();
        big.clusters.sort_by(|a, b| a.id.cmp(&b.id));
        let r = Review { outcome: Outcome::Planned { plan: big, delta: big_delta, base_invalid }, ..r };
        let mut c = ctx();
        c.max = max;
        let ps = parts(&r, &c);
        for (i, p) in ps.iter().enumerate() {
            prop_assert!(p.len() <= max, "part {} is {} bytes", i + 1, p.len());
            prop_assert!(p.chars().count() <= 65_536);
            prop_assert!(balanced(p), "part {} is unbalanced", i + 1);
            prop_assert!(p.starts_with(&marker("all", i + 1)));
        }
        c.max = usize::MAX;
        let whole = parts(&r, &c);
        prop_assert_eq!(whole.len(), 1);
        let whole = whole[0].split_once('\n').map(|(_, b)| b.to_string()).unwrap_or_default();
        prop_assert_eq!(rejoin(&ps), whole);
    }
}

/// A Git working copy with the base on `main` and a change on `feature`.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new(apps: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "-b", "main"]);
        let r = Self { dir };
        r.write(apps);
        r.commit("base");
        git(r.path(), &["checkout", "-q", "-b", "feature"]);
        r
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, apps: &[(&str, String)]) {
        let _ = std::fs::remove_dir_all(self.path().join("apps"));
        std::fs::create_dir_all(self.path().join("apps")).unwrap();
        std::fs::write(self.path().join("environments.yaml"), ENVS).unwrap();
        for (name, text) in apps {
            std::fs::write(self.path().join(format!("apps/{name}.yaml")), text).unwrap();
        }
    }

    fn commit(&self, msg: &str) -> String {
        git(self.path(), &["add", "-A"]);
        git(self.path(), &["commit", "-q", "--allow-empty", "-m", msg]);
        git(self.path(), &["rev-parse", "HEAD"])
    }
}

const TOKEN: &str = "ghp_test0token0never0printed";

/// Runs `keelson pr-comment` against the stub; returns exit code and all output.
async fn pr_comment(repo: &Repo, stub: &GitHubStub, token: &str, extra: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args([
            "pr-comment",
            "--base",
            "main",
            "--head",
            "feature",
            "--pr",
            "7",
            "--live",
            "base",
        ])
        .arg("--repo")
        .arg(repo.path())
        .args(["--forge-url", &stub.url(), "--forge-repo", "acme/deploy"])
        .args(extra)
        .env("KEELSON_FORGE_TOKEN", token)
        .env("KEELSON_COLOR", "never")
        .env_remove("GITHUB_TOKEN")
        .env_remove("GITHUB_RUN_ID")
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(TOKEN), "the token leaked: {text}");
    (out.status.code().unwrap_or(-1), text)
}

fn many_apps(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let name = format!("svc{i:03}");
            let text = app(&name, "1.0.0", &[("dev", 1)], 30000 + i as u16, "");
            (name, text)
        })
        .collect()
}

fn borrowed(v: &[(String, String)]) -> Vec<(&str, String)> {
    v.iter().map(|(n, t)| (n.as_str(), t.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_comment_creates_edits_in_place_and_deletes_surplus_parts() {
    let stub = GitHubStub::start(TOKEN).await;
    let human = stub.add_comment(7, "Looks good to me");
    let repo = Repo::new(&base_apps());
    // Many new clusters: the plan needs several comments.
    let mut head = base_apps();
    let extra = many_apps(150);
    head.extend(borrowed(&extra));
    repo.write(&head);
    let sha = repo.commit("150 services");
    let (code, out) = pr_comment(&repo, &stub, TOKEN, &[]).await;
    assert_eq!(code, 0, "{out}");
    let first = stub.comments(7);
    let ours: Vec<_> = first.iter().filter(|c| c.id != human).collect();
    assert!(ours.len() >= 2, "{} comments", ours.len());
    for (i, c) in ours.iter().enumerate() {
        assert!(c.body.starts_with(&marker("all", i + 1)), "{}", c.body);
        assert!(
            c.body
                .contains(&format!("part {} of {}", i + 1, ours.len()))
        );
    }
    let statuses = stub.statuses();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].0, sha);
    assert_eq!(statuses[0].1["context"], "keelson/plan");
    assert_eq!(statuses[0].1["state"], "success");
    assert!(
        statuses[0].1["description"]
            .as_str()
            .unwrap()
            .contains("150 clusters will change (150 create)")
    );

    // The same plan again: nothing is written.
    let writes = |s: &GitHubStub| s.seen().iter().filter(|r| r.method != "GET").count();
    let before = writes(&stub);
    let (code, out) = pr_comment(&repo, &stub, TOKEN, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(writes(&stub), before + 1, "only the status is set again");

    // A shorter plan: the first comment is edited in place, the surplus parts deleted.
    let mut head = base_apps();
    head[1].1 = app("api", "2.1.0", &[("dev", 1), ("prod", 3)], 20100, "");
    repo.write(&head);
    repo.commit("just api");
    let (code, out) = pr_comment(&repo, &stub, TOKEN, &[]).await;
    assert_eq!(code, 0, "{out}");
    let after = stub.comments(7);
    assert_eq!(after.len(), 2, "the person's comment and one part");
    assert!(after.iter().any(|c| c.id == human));
    let part = after.iter().find(|c| c.id != human).unwrap();
    assert_eq!(part.id, ours[0].id, "edited in place");
    assert!(part.body.contains("`dev/local/api`") && !part.body.contains("part 1 of"));
    let seen = stub.seen();
    assert_eq!(
        seen.iter().filter(|r| r.method == "DELETE").count(),
        ours.len() - 1
    );
    assert!(out.contains("0 comment(s) posted, 1 edited"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_comment_retries_502_and_waits_out_secondary_rate_limits() {
    let stub = GitHubStub::start(TOKEN).await;
    let repo = Repo::new(&base_apps());
    let mut head = base_apps();
    head[1].1 = app("api", "2.1.0", &[("dev", 1), ("prod", 3)], 20100, "");
    repo.write(&head);
    repo.commit("bump");
    stub.fail_next(&[
        Fault {
            status: 502,
            retry_after: None,
        },
        Fault {
            status: 403,
            retry_after: Some(1),
        },
    ]);
    // The account named, so the first call is the comments' (not `GET /user`).
    let (code, out) = pr_comment(&repo, &stub, TOKEN, &["--forge-user", "keelson-bot"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(stub.comments(7).len(), 1);
    let seen = stub.seen();
    let statuses: Vec<u16> = seen.iter().map(|s| s.status).collect();
    assert_eq!(&statuses[..3], &[502, 403, 200], "{seen:?}");
    assert!(
        seen[0].path.ends_with("/issues/7/comments?per_page=100"),
        "{seen:?}"
    );
    assert!(
        seen[1].path == seen[0].path && seen[2].path == seen[0].path,
        "the same call, retried"
    );
    assert!(
        seen[2].at.duration_since(seen[1].at) >= Duration::from_millis(950),
        "Retry-After: 1 was not waited out: {:?}",
        seen[2].at.duration_since(seen[1].at)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_comment_reports_bad_credentials_and_invalid_heads_without_leaking_the_token() {
    let stub = GitHubStub::start(TOKEN).await;
    let repo = Repo::new(&base_apps());
    let mut head = base_apps();
    head[0].1 = head[0]
        .1
        .replace("capacity: {desired: 2}", "capacty: {desired: 2}");
    repo.write(&head);
    let sha = repo.commit("typo");
    // A wrong token: a clear error, nothing posted, and the wrong token is not printed either.
    let wrong = "ghp_wrong0token0also0secret";
    let (code, out) = pr_comment(&repo, &stub, wrong, &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("answered 401: Bad credentials"), "{out}");
    assert!(out.contains("check the token"), "{out}");
    assert!(!out.contains(wrong), "{out}");
    assert!(stub.comments(7).is_empty());
    // The right token: the errors are posted with links, the status fails, the exit code is 1.
    let (code, out) = pr_comment(&repo, &stub, TOKEN, &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("apps/web.yaml:"),
        "the log shows the problem: {out}"
    );
    let c = stub.comments(7);
    assert_eq!(c.len(), 1);
    assert!(
        c[0].body.contains("❌ invalid: 1 error in 1 file"),
        "{}",
        c[0].body
    );
    assert!(
        c[0].body
            .contains(&format!("/acme/deploy/blob/{sha}/apps/web.yaml#L")),
        "{}",
        c[0].body
    );
    let st = stub.statuses();
    assert_eq!(st[0].1["state"], "failure");
    // --dry-run prints the comments and posts nothing.
    let before = stub.seen().len();
    let (code, out) = pr_comment(&repo, &stub, TOKEN, &["--dry-run"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&marker("all", 1)), "{out}");
    assert_eq!(stub.seen().len(), before);
}

/// Renders markdown as GitHub would (GFM with autolinks), for checking what a reader sees.
fn gfm(md: &str) -> String {
    let mut o = comrak::Options::default();
    o.extension.autolink = true;
    o.extension.table = true;
    o.extension.strikethrough = true;
    o.render.r#unsafe = true;
    comrak::markdown_to_html(md, &o)
}

/// A comment carrying Keelson's hidden marker, written by someone else, is neither edited nor
/// believed: Keelson posts its own and says so. In GitHub Actions, whose token cannot ask the
/// forge who it is, Keelson's comments are github-actions[bot]'s; elsewhere, without a way to
/// tell, it refuses rather than guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_marker_is_ignored() {
    let stub = GitHubStub::start(TOKEN).await;
    let forged = format!("{}\n### Keelson plan: ✅ no changes", marker("all", 1));
    let mallory = stub.add_comment_as(7, &forged, "mallory");
    let repo = Repo::new(&base_apps());
    let mut head = base_apps();
    head[0].1 = head[0].1.replace("1.0.0", "1.1.0");
    repo.write(&head);
    repo.commit("1.1.0");
    let (code, out) = pr_comment(&repo, &stub, TOKEN, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "comment {mallory} by mallory carries Keelson's marker"
        )),
        "{out}"
    );
    let all = stub.comments(7);
    assert_eq!(
        all.iter()
            .find(|c| c.id == mallory)
            .map(|c| c.body.as_str()),
        Some(forged.as_str()),
        "left as mallory wrote it"
    );
    let ours: Vec<_> = all.iter().filter(|c| c.author == "keelson-bot").collect();
    assert_eq!(ours.len(), 1);
    assert!(ours[0].body.contains("1 cluster will change") || ours[0].body.contains("will change"));
    assert!(
        !stub
            .seen()
            .iter()
            .any(|s| s.method == "PATCH" && s.path.ends_with(&mallory.to_string())),
        "never edited"
    );
    // A token that may not ask who it is: refused without a name, outside GitHub Actions.
    stub.state.lock().unwrap().login = None;
    let (code, out) = pr_comment(&repo, &stub, TOKEN, &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot tell which comments are Keelson's own")
            && out.contains("--forge-user"),
        "{out}"
    );
    // Named, it edits its own comment in place.
    let (code, out) = pr_comment(&repo, &stub, TOKEN, &["--forge-user", "keelson-bot"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        stub.comments(7)
            .iter()
            .filter(|c| c.author == "keelson-bot")
            .count(),
        1
    );
}

/// Strings from the pull request (a version, a file name) render as text: no forged heading,
/// image or link, nothing swallowed by a fence. A line break in a version is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_render_harmless() {
    let stub = GitHubStub::start(TOKEN).await;
    let repo = Repo::new(&base_apps());
    let mut head = base_apps();
    let hostile = "1.1.0 ![x](https://evil.example/p.png) [login](https://evil.example) **b** <img src=x> ```` www.evil.example";
    head[0].1 = head[0].1.replace("\"1.0.0\"", &format!("{hostile:?}"));
    repo.write(&head);
    repo.commit("hostile");
    let (code, out) = pr_comment(&repo, &stub, TOKEN, &[]).await;
    assert_eq!(code, 0, "{out}");
    let body = stub.comments(7)[0].body.clone();
    let html = gfm(&body);
    assert_eq!(
        html.matches("<h3").count(),
        1,
        "only Keelson's heading: {html}"
    );
    for bad in [
        "<img",
        "href=\"https://evil",
        "href=\"http://www.evil",
        "<strong>b</strong>",
    ] {
        assert!(!html.contains(bad), "rendered {bad}: {html}");
    }
    assert!(
        html.contains("<li>create web-v001"),
        "the steps survive: {html}"
    );
    // A version with a line break does not validate, so nothing is planned from it.
    head[0].1 = head[0].1.replace(
        &format!("{hostile:?}"),
        "\"1.2.0\\n\\n### Keelson plan: ✅ no changes\"",
    );
    repo.write(&head);
    repo.commit("newline");
    let (code, _) = pr_comment(&repo, &stub, TOKEN, &[]).await;
    assert_eq!(code, 1);
    let body = stub.comments(7)[0].body.clone();
    let html = gfm(&body);
    assert!(body.contains("control character"), "{body}");
    assert_eq!(html.matches("<h3").count(), 1, "{html}");
}
