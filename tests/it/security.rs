//! Hardening, each test written as the attack or the accident it keeps out: another user on the
//! machine, a fake agent, a corrupt or lost file, a hostile string. The tests drop to `nobody`
//! where another user is the point (CI runs as root).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use keelson::provider::Provider;

use crate::local_target::{Local, free_port, local_app, observe_one, only};

/// Runs a shell command as `nobody`; returns (exit code, stdout + stderr).
fn as_nobody(script: &str) -> (i32, String) {
    assert_eq!(
        keelson::private::euid(),
        0,
        "these tests switch to another user, which needs root (CI runs as root)"
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o777
}

/// A `create` another user might send: run `sh -c 'id > FILE'` as the agent's user.
fn evil_create(file: &Path) -> String {
    format!(
        r#"{{"request":"apply","cluster":{{"environment":"dev","target":"local","name":"evil"}},"op":{{"op":"create","group":"evil-v000","sequence":0,"capacity":1,"weight":0,"spec":{{"id":{{"environment":"dev","target":"local","name":"evil"}},"app":"evil","traffic_port":null,"group":{{"version":"1","spec_hash":"0000000000000000","command":["sh","-c","id > {}"],"env":{{}},"health":{{"http":null,"timeout":"5s"}},"labels":{{}}}}}}}}}}"#,
        file.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_can_neither_drive_the_agent_nor_read_its_files() {
    let local = Local::new();
    let port = free_port();
    let c = only(&local_app("shop", "1.0.0", 1, port, ""));
    let mut secret = c.clone();
    secret
        .workload
        .env
        .insert("API_TOKEN".into(), "s3cr3t-value".into());
    crate::local_target::run_steps(&local.provider, &secret, 1).await;
    let dir = local.state().join("local");
    let sock = dir.join("agent.sock");
    // Private files in a private directory.
    assert_eq!(mode(&dir), 0o700);
    for f in ["state.json", "agent.json", "agent.log"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&sock), 0o600);
    let proof = tempfile::tempdir().unwrap();
    std::fs::set_permissions(proof.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let pwned = proof.path().join("pwned");
    std::fs::write(proof.path().join("create.json"), evil_create(&pwned)).unwrap();
    // The socket cannot be reached, and the state (with its secret) cannot be read.
    let (code, out) = as_nobody(&format!(
        "curl -sS --max-time 3 --unix-socket {} -H 'content-type: application/json' --data @{} http://agent/v1/ops; echo; cat {}",
        sock.display(),
        proof.path().join("create.json").display(),
        dir.join("state.json").display()
    ));
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Permission denied"), "{out}");
    assert!(!out.contains("s3cr3t-value"), "{out}");
    // Even with the directory and socket opened up by mistake, the agent serves only its own
    // user: the connection is closed unread.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (_, out) = as_nobody(&format!(
        "curl -sS --max-time 3 --unix-socket {} -H 'content-type: application/json' --data @{} http://agent/v1/ops",
        sock.display(),
        proof.path().join("create.json").display(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!pwned.exists(), "another user ran a command: {out}");
    let log = std::fs::read_to_string(dir.join("agent.log")).unwrap();
    assert!(log.contains("refused a connection from uid 65534"), "{log}");
    // And this user's client, seeing the directory opened up, will not believe the agent.
    let err = local
        .provider
        .observe(&crate::local_target::target_of(&c))
        .await
        .unwrap_err();
    assert!(
        err.chain().contains("the directory is mode 755"),
        "{}",
        err.chain()
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(observe_one(&local.provider, &c).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_agent_file_is_not_believed_and_hostile_names_are_refused() {
    let local = Local::new();
    let port = free_port();
    let c = only(&local_app("shop", "1.0.0", 1, port, ""));
    crate::local_target::run_steps(&local.provider, &c, 1).await;
    let dir = local.state().join("local");
    // agent.json naming the right pid with another start time: a later process with that pid.
    let info = dir.join("agent.json");
    let honest = std::fs::read_to_string(&info).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&honest).unwrap();
    v["started"] = (v["started"].as_u64().unwrap() + 1).into();
    std::fs::write(&info, v.to_string()).unwrap();
    let err = local
        .provider
        .observe(&crate::local_target::target_of(&c))
        .await
        .unwrap_err();
    assert!(
        err.chain()
            .contains("is not the process agent.json names (it started at another time)"),
        "{}",
        err.chain()
    );
    std::fs::write(&info, honest).unwrap();
    // A cluster name that would climb out of the state directory is refused on arrival.
    let evil = r#"{"request":"apply","cluster":{"environment":"dev","target":"local","name":"../../../../tmp/keelson-escape"},"op":{"op":"heal","group":"x-v000","sequence":0,"missing":1}}"#;
    let sent: Result<keelson::provider::local::wire::Request, _> = serde_json::from_str(evil);
    assert!(sent.is_err(), "the client's own types refuse it too");
    let raw = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "3",
            "--unix-socket",
            dir.join("agent.sock").to_str().unwrap(),
            "-H",
            "content-type: application/json",
            "--data",
            evil,
            "-w",
            "\n%{http_code}",
            "http://agent/v1/ops",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&raw.stdout);
    assert!(text.trim_end().ends_with("422"), "{text}");
    assert!(text.contains("is not a DNS-1123"), "{text}");
    assert!(!Path::new("/tmp/keelson-escape").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_agent_state_is_refused_not_forgotten() {
    let local = Local::new();
    let port = free_port();
    let c = only(&local_app("shop", "1.0.0", 1, port, ""));
    crate::local_target::run_steps(&local.provider, &c, 1).await;
    let dir = local.state().join("local");
    let pid = local.agent_pid().unwrap();
    // SAFETY: only signals the agent this test started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    std::fs::write(dir.join("state.json"), "{\"clusters\": {tru").unwrap();
    let err = local.provider.start_agent().await.unwrap_err();
    let log = std::fs::read_to_string(dir.join("agent.log")).unwrap();
    assert!(
        log.contains("state.json` is corrupt; refusing to start")
            && log.contains("state.json.prev"),
        "{}\n{log}",
        err.chain()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("state.json")).unwrap(),
        "{\"clusters\": {tru",
        "left as it was"
    );
    // The previous copy restores it, and the instances are adopted again.
    std::fs::rename(dir.join("state.json.prev"), dir.join("state.json")).unwrap();
    local.provider.start_agent().await.unwrap();
    let o = observe_one(&local.provider, &c).await.unwrap();
    assert_eq!(o.server_groups.len(), 1);
}

/// A secret in the specs, in every shape a person writes it, is never printed: not by
/// `validate` (text or JSON), `plan` (text, markdown, JSON), nor a pull request comment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_any_output() {
    let env = "apiVersion: keelson/v1\nkind: Environment\nmetadata: {name: dev}\nspec:\n  targets: [{name: local, provider: local}]\n";
    let app = |env_block: &str| {
        format!(
            "apiVersion: keelson/v1\nkind: Application\nmetadata: {{name: web}}\nspec:\n  artifact: {{version: \"1.0.0\"}}\n  workload:\n    command: [keelson, demo-app, --port, \"{{port}}\"]\n    secretEnv: [LISTED]\n    env:\n{env_block}\n  clusters:\n    - {{environment: dev, target: local, capacity: {{desired: 1}}, traffic: {{port: {}}}}}\n",
            free_port()
        )
    };
    let run = |dir: &Path, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args(args)
            .arg("--repo")
            .arg(dir)
            .env("KEELSON_COLOR", "never")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    // Wrong types: a number, a boolean-looking word, a number under a listed key.
    for (block, secret) in [
        ("      API_TOKEN: 98765432123", "98765432123"),
        ("      DB_PASSWORD: true", "true"),
        ("      LISTED: 4242424242", "4242424242"),
        ("      APIKEY: 13371337", "13371337"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("env.yaml"), env).unwrap();
        std::fs::write(dir.path().join("web.yaml"), app(block)).unwrap();
        for args in [
            &["validate"][..],
            &["validate", "--format", "json"],
            &["plan"],
        ] {
            let out = run(dir.path(), args);
            assert!(out.contains("is not a string"), "{args:?}: {out}");
            let key = block.trim().split(':').next().unwrap();
            assert!(
                !out.contains(&format!("{key}: {secret}")),
                "{args:?}: {out}"
            );
            if secret.len() > 5 {
                assert!(!out.contains(secret), "{args:?} printed the secret: {out}");
            }
        }
    }
    // Valid secrets: by name, by list, and credentials inside a URL.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("env.yaml"), env).unwrap();
    std::fs::write(
        dir.path().join("web.yaml"),
        app("      API_TOKEN: \"tok-111-secret\"\n      LISTED: \"listed-222-secret\"\n      DATABASE_URL: \"postgres://app:pw-333-secret@db:5432/shop\""),
    )
    .unwrap();
    for args in [
        &["plan"][..],
        &["plan", "--format", "json"],
        &["plan", "--format", "markdown"],
        &["validate", "--format", "json"],
    ] {
        let out = run(dir.path(), args);
        for s in ["tok-111-secret", "listed-222-secret", "pw-333-secret"] {
            assert!(!out.contains(s), "{args:?} printed {s}: {out}");
        }
    }
}

/// The store fails closed: deleted, truncated or made anew while the targets hold clusters it
/// never made, it refuses to act (the suspend it held must not silently vanish), and says how
/// to take them over; a row it cannot read is an error, never "no suspend".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_or_corrupt_store_fails_closed() {
    use crate::apply_e2e::Repo;
    let repo = Repo::new();
    let db = repo.path().join(".keelson/keelson.db");
    let forget = |db: &Path| {
        for f in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{f}", db.display()));
        }
    };
    repo.app("1.0.0", "{type: red-black}", 1, "");
    assert_eq!(repo.apply().await.0, 0);
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&repo.path().join(".keelson")), 0o700);
    let (code, _) = repo
        .run(&["suspend", "--cluster", "web", "--reason", "incident 9"])
        .await;
    assert_eq!(code, 0);
    // The store deleted: the suspend is gone with it, and nothing may move.
    forget(&db);
    repo.app("1.1.0", "{type: red-black}", 1, "");
    let (code, plan) = repo.run(&["plan"]).await;
    assert_eq!(code, 0, "{plan}");
    assert!(plan.contains("blocked: made through state store"), "{plan}");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("refused: made through state store"), "{out}");
    assert!(out.contains("keelson adopt"), "{out}");
    // Truncated to nothing: the same.
    std::fs::write(&db, b"").unwrap();
    let (code, out) = repo.apply().await;
    assert_eq!(code, 1, "{out}");
    let (_, status) = repo.run(&["status"]).await;
    assert!(
        status.contains("1.0.0") && !status.contains("web-v001"),
        "{status}"
    );
    // Taken over on purpose, it moves again.
    let (code, out) = repo
        .run(&["adopt", "web", "--reason", "keelson.db lost in a disk swap"])
        .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("taken over from state store"), "{out}");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 0, "{out}");
    let (_, history) = repo.run(&["history"]).await;
    assert!(
        history.contains("keelson.db lost in a disk swap"),
        "{history}"
    );
    // A suspend row that cannot be read stops everything, with the store named.
    assert!(rusqlite_free_edit(&db), "edited the store");
    repo.app("1.2.0", "{type: red-black}", 1, "");
    let (code, out) = repo.apply().await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("keelson.db") && out.contains("a query failed") && out.contains("galaxy"),
        "{out}"
    );
    let (_, history) = repo.run(&["history", "--limit", "200"]).await;
    assert!(!history.contains("1.2.0"), "nothing was done: {history}");
}

/// Writes a suspend with a scope no Keelson writes (with Python's sqlite3, as a person editing
/// the file would).
fn rusqlite_free_edit(db: &Path) -> bool {
    let sql = "INSERT INTO suspends (scope, who, reason, created_at) VALUES ('{\"kind\":\"galaxy\"}', 'x', 'y', '2026-01-01T00:00:00Z');";
    Command::new("python3")
        .args([
            "-c",
            &format!(
                "import sqlite3; c = sqlite3.connect({:?}); c.execute({:?}); c.commit()",
                db.display().to_string(),
                sql
            ),
        ])
        .status()
        .is_ok_and(|s| s.success())
}

/// The smaller findings: an unreachable target is said and fails `status`; a suspend of a scope
/// the specs do not declare is refused (a typo would hold nothing); a reader that goes away
/// does not make a verb panic; a store that cannot be written still answers `history`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_targets_typos_broken_pipes_and_read_only_stores() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args(args)
            .arg("--repo")
            .arg(dir.path())
            .env("KEELSON_COLOR", "never")
            .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    std::fs::write(
        dir.path().join("env.yaml"),
        "apiVersion: keelson/v1\nkind: Environment\nmetadata: {name: prod}\nspec:\n  targets: [{name: k8s, provider: kubernetes, kubernetes: {context: gone, namespace: shop}}]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("web.yaml"),
        "apiVersion: keelson/v1\nkind: Application\nmetadata: {name: web}\nspec:\n  artifact: {version: \"1.0.0\", image: registry.example.com/web}\n  kubernetes: {containerPort: 8080}\n  clusters:\n    - {environment: prod, target: k8s, capacity: {desired: 1}}\n",
    )
    .unwrap();
    let (code, out) = run(&["status"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("target unreachable:") && !out.contains("no server groups"),
        "{out}"
    );
    // A typo holds nothing: refused, with the name it meant.
    let (code, out) = run(&["suspend", "--env", "prd", "--reason", "incident"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no environment `prd` in the specs; did you mean `prod`?"),
        "{out}"
    );
    let (code, out) = run(&["suspend", "--env", "prd", "--reason", "incident", "--force"]);
    assert_eq!(code, 0, "{out}");
    // A reader that is gone: the verb ends quietly (SIGPIPE), no panic.
    let mut fds = [0; 2];
    // SAFETY: pipe writes two new descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just made and are owned here; the read end is dropped.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let out = Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(["history", "--repo"])
        .arg(dir.path())
        .stdout(std::process::Stdio::from(write))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    // A store that cannot be written (another user's, read-only): history still reads it.
    let state = dir.path().join(".keelson");
    let (code, _) = as_nobody("true");
    assert_eq!(code, 0);
    Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(&state)
        .status()
        .unwrap();
    Command::new("chmod")
        .args(["-R", "a-w"])
        .arg(&state)
        .status()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, out) = as_nobody(&format!(
        "{} history --repo {}",
        env!("CARGO_BIN_EXE_keelson"),
        dir.path().display()
    ));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("suspend") && out.contains("incident"), "{out}");
}
