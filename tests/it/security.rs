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
