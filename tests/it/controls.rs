//! Delivery controls through the binary on the local target: pin (during a rollout, expiry),
//! veto (of the live version under load, of a Git bump), approvers and identities, reject,
//! the flapping guard, and timed cleanup.

use std::time::Duration;

use crate::apply_e2e::Repo;
use crate::local_target::Load;

/// The dev environment with extra `spec` lines.
fn env(repo: &Repo, extra: &str) {
    let text = format!(
        "apiVersion: keelson/v1\nkind: Environment\nmetadata: {{name: dev}}\nspec:\n  targets: [{{name: local, provider: local}}]\n{extra}"
    );
    std::fs::write(repo.path().join("env.yaml"), text).unwrap();
}

fn assert_clean(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

/// Which version answers on the traffic port, by its group header.
async fn serving(repo: &Repo) -> String {
    let (_, status) = repo.run(&["status", "--format", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
    v[0]["server_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["enabled"] == true && g["weight"] == 100)
        .map(|g| g["version"].as_str().unwrap_or("?").to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_stops_a_rollout_at_a_step_returns_to_the_pin_and_lapses() {
    let repo = Repo::new();
    let canary = "{type: canary, steps: [{weight: 25, pause: 2s}, {weight: 50, pause: 2s}]}";
    repo.app("1.0.0", canary, 2, "");
    assert_eq!(repo.apply().await.0, 0);
    repo.app("2.0.0", canary, 2, "");
    let load = Load::start(repo.port, 100);
    let apply = repo.command(&["apply", "--auto-approve"]).output();
    let lapses = tokio::time::Instant::now() + Duration::from_millis(1200 + 25_000);
    let pin = async {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        repo.run(&[
            "pin",
            "web",
            "1.0.0",
            "--env",
            "dev",
            "--reason",
            "incident 42",
            "--until",
            "25s",
        ])
        .await
    };
    let (out, (code, said)) = tokio::join!(apply, pin);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("Pinned web in dev to 1.0.0 until"), "{said}");
    let out = out.unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("held: pinned to 1.0.0 by tester: incident 42 during step"),
        "the rollout stops at the next step boundary:\n{text}"
    );
    // The plan goes back to the pin: the old group, kept, takes the traffic again.
    let (code, plan) = repo.run(&["plan", "--detailed-exitcode"]).await;
    assert_eq!(code, 2, "{plan}");
    assert!(
        plan.contains("pinned to 1.0.0 by tester: incident 42 (until ")
            && plan.contains("; Git asks for 2.0.0")
            && plan.contains("enable web-v000"),
        "{plan}"
    );
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(serving(&repo).await, "1.0.0");
    // Held there: a plan with nothing to do that says why.
    let (code, plan) = repo.run(&["plan", "--detailed-exitcode"]).await;
    assert_eq!(code, 0, "{plan}");
    assert!(
        plan.contains("= dev/local/web  held")
            && plan.contains("! held: pinned to 1.0.0 by tester: incident 42"),
        "{plan}"
    );
    let (_, status) = repo.run(&["status"]).await;
    assert!(
        status.contains("control: pinned to 1.0.0 by tester: incident 42"),
        "{status}"
    );
    let (_, failures) = load.finish().await;
    assert_clean(&failures);
    // A pin to a version never seen is refused, unless forced.
    let (code, out) = repo
        .run(&["pin", "web", "9.9.9", "--env", "dev", "--reason", "x"])
        .await;
    assert!(
        code == 1 && out.contains("never existed") && out.contains("known: 1.0.0, 2.0.0"),
        "{out}"
    );
    let (code, out) = repo
        .run(&[
            "pin",
            "web",
            "1.0.0",
            "--env",
            "dev",
            "--reason",
            "x",
            "--until",
            "5 minutes",
        ])
        .await;
    assert!(code != 0 && out.contains("neither a duration"), "{out}");
    // The pin lapses by itself: history says so and Git's version rolls out.
    tokio::time::sleep_until(lapses + Duration::from_secs(1)).await;
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(serving(&repo).await, "2.0.0");
    let (_, history) = repo.run(&["history"]).await;
    assert!(
        history.contains("pin: pinned web to 1.0.0 in dev: incident 42")
            && history.contains("pin-lapsed: the pin of web to 1.0.0 in dev by tester lapsed"),
        "{history}"
    );
    repo.assert_no_changes().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_veto_rolls_the_live_version_back_under_load_and_blocks_a_git_bump() {
    let repo = Repo::new();
    let rb = "{type: red-black, keepDisabled: 1}";
    repo.app("1.0.0", rb, 2, "");
    assert_eq!(repo.apply().await.0, 0);
    repo.app("2.0.0", rb, 2, "");
    assert_eq!(repo.apply().await.0, 0);
    let load = Load::start(repo.port, 100);
    let (code, out) = repo
        .run(&[
            "veto",
            "web",
            "2.0.0",
            "--env",
            "dev",
            "--reason",
            "corrupts carts",
        ])
        .await;
    assert_eq!(code, 0, "{out}");
    let (code, plan) = repo.run(&["plan", "--detailed-exitcode"]).await;
    assert!(
        code == 2
            && plan.contains(
                "2.0.0 is vetoed by tester: corrupts carts; back to 1.0.0, the last version live and healthy here"
            ),
        "{plan}"
    );
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(serving(&repo).await, "1.0.0");
    let (_, failures) = load.finish().await;
    assert_clean(&failures);
    // Git asks for another bad version, vetoed everywhere: a visible hold, not an error loop.
    let (code, _) = repo
        .run(&["veto", "web", "3.0.0", "--reason", "known bad build"])
        .await;
    assert_eq!(code, 0);
    repo.app("3.0.0", rb, 2, "");
    let (code, plan) = repo.run(&["plan", "--detailed-exitcode"]).await;
    assert!(
        code == 0
            && plan.contains(
                "! held: 3.0.0 is vetoed by tester: known bad build; it stays at 1.0.0, the last version live and healthy here"
            ),
        "{plan}"
    );
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(serving(&repo).await, "1.0.0");
    // A vetoed version cannot be pinned.
    let (code, out) = repo
        .run(&["pin", "web", "2.0.0", "--env", "dev", "--reason", "x"])
        .await;
    assert!(code == 1 && out.contains("is vetoed in dev"), "{out}");
    let (_, history) = repo.run(&["history"]).await;
    assert!(
        history.contains("veto: vetoed web 2.0.0 in dev: corrupts carts  [tester]")
            && history.contains("veto: vetoed web 3.0.0 in every environment: known bad build"),
        "{history}"
    );
    // Lifted: Git's version goes out.
    let (code, _) = repo.run(&["unveto", "web", "3.0.0"]).await;
    assert_eq!(code, 0);
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(serving(&repo).await, "3.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_approvers_approve_and_a_rejection_vetoes() {
    let mut repo = Repo::new();
    env(
        &repo,
        "  constraints:\n    approval: {required: true, approvers: [alice, \"group:release-managers\"]}\n",
    );
    repo.app("1.0.0", "{type: highlander}", 2, "");
    let (code, plan) = repo.run(&["plan"]).await;
    assert!(
        code == 0 && plan.contains("awaiting approval of 1.0.0 by alice or group:release-managers"),
        "{plan}"
    );
    let (code, out) = repo.run(&["approve", "--env", "dev", "--app", "web"]).await;
    assert!(
        code == 1
            && out
                .contains("tester may not approve in dev: only alice, group:release-managers may"),
        "{out}"
    );
    let (code, out) = repo
        .run(&["approve", "--env", "dev", "--app", "web", "--as", "alice"])
        .await;
    assert!(code == 1 && out.contains("needs `allowAs: true`"), "{out}");
    let ids = repo.path().join("identities.yaml");
    std::fs::write(
        &ids,
        "allowAs: true\nusers:\n  - {name: bob, groups: [release-managers]}\n  - {name: carol, groups: [qa-leads]}\n",
    )
    .unwrap();
    repo.env
        .push(("KEELSON_IDENTITIES".into(), ids.display().to_string()));
    let (code, out) = repo
        .run(&["approve", "--env", "dev", "--app", "web", "--as", "carol"])
        .await;
    assert!(code == 1 && out.contains("(carol is in qa-leads)"), "{out}");
    let (code, out) = repo
        .run(&["approve", "--env", "dev", "--app", "web", "--as", "bob"])
        .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(repo.apply().await.0, 0);
    // The next version waits; bob rejects it: vetoed in dev, not deployed, a visible hold.
    repo.app("2.0.0", "{type: highlander}", 2, "");
    let (code, out) = repo
        .run(&[
            "reject",
            "web",
            "--env",
            "dev",
            "--reason",
            "not this week",
            "--as",
            "bob",
        ])
        .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Rejected web 2.0.0 in dev"), "{out}");
    let (code, plan) = repo.run(&["plan", "--detailed-exitcode"]).await;
    assert!(
        code == 0 && plan.contains("2.0.0 is vetoed by bob: rejected: not this week"),
        "{plan}"
    );
    assert_eq!(serving(&repo).await, "1.0.0");
    let (_, history) = repo.run(&["history"]).await;
    assert!(
        history.contains("approve: approved web 1.0.0 in dev  [bob]")
            && history.contains("veto: vetoed web 2.0.0 in dev: rejected: not this week  [bob]"),
        "{history}"
    );
    // Nothing awaits a decision any more: a second rejection is refused.
    let (code, out) = repo
        .run(&[
            "reject", "web", "--env", "dev", "--reason", "again", "--as", "bob",
        ])
        .await;
    assert!(code == 1 && out.contains("awaits a decision"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flapping_guard_stops_after_max_attempts_until_a_retry_or_a_new_commit() {
    let repo = Repo::new();
    env(
        &repo,
        "  constraints:\n    flapping: {maxAttempts: 2, window: 10m, cooldown: 1h}\n",
    );
    let rb = "{type: red-black}";
    repo.app("1.0.0", rb, 2, "");
    assert_eq!(repo.apply().await.0, 0);
    repo.app("2.0.0", rb, 2, ", --fail-health");
    for attempt in 1..=2 {
        let (code, out) = repo.apply().await;
        assert!(
            code == 1 && out.contains("rolled back"),
            "attempt {attempt}:\n{out}"
        );
    }
    // Left alone now: held, with the last error and what to do.
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("unhappy: 2 failed rollouts of this desired state; left alone until")
            && out.contains("`keelson retry web --env dev`"),
        "{out}"
    );
    let (_, status) = repo.run(&["status"]).await;
    assert!(
        status.contains("control: unhappy: 2 failed rollouts"),
        "{status}"
    );
    // `retry` tries again at once (and it fails again).
    let (code, out) = repo.run(&["retry", "web", "--env", "dev"]).await;
    assert!(
        code == 0 && out.contains("2 failed rollout(s) forgotten"),
        "{out}"
    );
    let (code, out) = repo.apply().await;
    assert!(code == 1 && out.contains("rolled back"), "{out}");
    // A new commit changes the desired state: tried at once, and it converges.
    repo.app("2.0.1", rb, 2, "");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(serving(&repo).await, "2.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_groups_are_destroyed_once_disabled_longer_than_destroy_disabled_after() {
    let repo = Repo::new();
    let rb = "{type: red-black, keepDisabled: 2, destroyDisabledAfter: 1h}";
    repo.app("1.0.0", rb, 2, "");
    assert_eq!(repo.apply().await.0, 0);
    repo.app("2.0.0", rb, 2, "");
    assert_eq!(repo.apply().await.0, 0);
    // Recorded when first seen disabled; the plan says when it goes.
    let (code, plan) = repo.run(&["plan", "--detailed-exitcode"]).await;
    assert!(
        code == 0
            && plan.contains("Kept for a fast rollback, then destroyed (destroyDisabledAfter):")
            && plan.contains("web-v000 of dev/local/web: disabled since "),
        "{plan}"
    );
    // The test's clock: the store says it was disabled two hours ago.
    let store = keelson::store::SqliteStore::open(&repo.state()).unwrap();
    use keelson::store::Store;
    let two_hours_ago = keelson::clock::now() - jiff::SignedDuration::from_hours(2);
    store
        .note_disabled("dev/local/web", &[], two_hours_ago)
        .unwrap();
    store
        .note_disabled(
            "dev/local/web",
            &["dev/local/web/web-v000".into()],
            two_hours_ago,
        )
        .unwrap();
    drop(store);
    let (code, plan) = repo.run(&["plan", "--detailed-exitcode"]).await;
    assert!(
        code == 2 && plan.contains("disabled longer than 1h") && plan.contains("destroy web-v000"),
        "{plan}"
    );
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    let (_, status) = repo.run(&["status", "--format", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let groups: Vec<&str> = v[0]["server_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["web-v001"], "{status}");
    repo.assert_no_changes().await;
}
