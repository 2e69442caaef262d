//! Verification checks: commands run once a new version takes all traffic, before the old
//! groups go. A check passes when its command exits 0 within its timeout; otherwise its
//! process group is killed and the rollout rolls back, with the exit status and the last lines
//! of output in the reason.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::spec::VerifyCheck;

/// The placeholders a check's command may hold, as `{name}`.
pub const PLACEHOLDERS: [&str; 4] = ["url", "version", "cluster", "environment"];

/// Lines of output kept for the reason a check failed.
const TAIL_LINES: usize = 10;
/// Bytes of output kept while a check runs (its last ones).
const KEEP_BYTES: usize = 16 * 1024;

/// What placeholders stand for.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    /// The cluster's traffic URL, e.g. `http://127.0.0.1:18082`.
    pub url: Option<String>,
    /// The version rolled out.
    pub version: String,
    /// The cluster (`env/target/name`).
    pub cluster: String,
    /// Its environment.
    pub environment: String,
}

/// The `{name}` placeholders (a lowercase word in braces) of an argument.
fn placeholders(arg: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close)
                if close > 0
                    && after[..close]
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '-') =>
            {
                out.push(&after[..close]);
                rest = &after[close + 1..];
            }
            _ => rest = after,
        }
    }
    out
}

/// Placeholders in a command that are not known.
pub fn unknown_placeholders(command: &[String]) -> Vec<String> {
    command
        .iter()
        .flat_map(|a| placeholders(a))
        .filter(|p| !PLACEHOLDERS.contains(p))
        .map(str::to_string)
        .collect()
}

/// The command with its placeholders filled in; `Err` names one that has no value here (a
/// `{url}` on a cluster without a traffic address).
pub fn command_for(check: &VerifyCheck, vars: &Vars) -> Result<Vec<String>, String> {
    check
        .command
        .iter()
        .map(|arg| {
            let mut out = arg.clone();
            for p in placeholders(arg) {
                let value = match p {
                    "url" => vars.url.clone().ok_or_else(|| {
                        format!(
                            "check `{}` uses {{url}}, and {} has no traffic address",
                            check.name, vars.cluster
                        )
                    })?,
                    "version" => vars.version.clone(),
                    "cluster" => vars.cluster.clone(),
                    "environment" => vars.environment.clone(),
                    _ => continue,
                };
                out = out.replace(&format!("{{{p}}}"), &value);
            }
            Ok(out)
        })
        .collect()
}

/// Keeps the last bytes written to it.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        if self.0.len() > KEEP_BYTES {
            let cut = self.0.len() - KEEP_BYTES;
            self.0.drain(..cut);
        }
    }

    /// The last lines, with credentials a verbose client printed (`Authorization:`,
    /// `Cookie:` headers) taken out: they go to the history.
    fn lines(&self) -> String {
        let text = String::from_utf8_lossy(&self.0);
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let lower = l.to_ascii_lowercase();
                match ["authorization:", "cookie:", "proxy-authorization:"]
                    .iter()
                    .find_map(|h| lower.find(h).map(|at| at + h.len()))
                {
                    Some(end) => format!("{} (redacted)", &l[..end]),
                    None => l.to_string(),
                }
            })
            .collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }
}

async fn drain(mut from: impl AsyncRead + Unpin, into: Arc<Mutex<Tail>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if let Ok(mut t) = into.lock() {
            t.push(&buf[..n]);
        }
    }
}

/// Runs one check's command (already filled in); `Err` says why it failed, with the last
/// lines of its output.
pub async fn run(name: &str, argv: &[String], timeout: Duration) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err(format!("check `{name}` has no command"));
    };
    let mut cmd = tokio::process::Command::new(program);
    crate::credentials::withhold(|k| {
        cmd.env_remove(k);
    });
    let mut child = match cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills whatever it started too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Err(format!("check `{name}`: cannot run `{program}`: {e}")),
    };
    let tail = Arc::new(Mutex::new(Tail::default()));
    let readers = [
        child
            .stdout
            .take()
            .map(|o| tokio::spawn(drain(o, tail.clone()))),
        child
            .stderr
            .take()
            .map(|e| tokio::spawn(drain(e, tail.clone()))),
    ];
    let status = tokio::time::timeout(timeout, child.wait()).await;
    let timed_out = status.is_err();
    if timed_out && let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: signals the check's own process group, created with process_group(0).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = child.wait().await;
    }
    for r in readers.into_iter().flatten() {
        // Output still held open by a stray grandchild is not waited for long.
        let _ = tokio::time::timeout(Duration::from_secs(1), r).await;
    }
    let output = tail.lock().map(|t| t.lines()).unwrap_or_default();
    let with_output = |what: String| {
        if output.is_empty() {
            what
        } else {
            format!("{what}; its last output:\n{output}")
        }
    };
    match status {
        Err(_) => Err(with_output(format!(
            "check `{name}` did not finish within {}s and was killed",
            timeout.as_secs_f64()
        ))),
        Ok(Err(e)) => Err(format!("check `{name}`: cannot wait for it: {e}")),
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(with_output(format!("check `{name}` failed ({s})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(command: &[&str]) -> VerifyCheck {
        VerifyCheck {
            name: "smoke".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            timeout: crate::spec::Duration::from_secs(5),
        }
    }

    #[test]
    fn fills_placeholders_and_finds_unknown_ones() {
        let c = check(&[
            "curl",
            "-fsS",
            "{url}/healthz",
            "-H",
            "x: {version}",
            "{\"a\":1}",
        ]);
        let vars = Vars {
            url: Some("http://127.0.0.1:9".into()),
            version: "2.0.0".into(),
            cluster: "prod/local/web".into(),
            environment: "prod".into(),
        };
        assert_eq!(
            command_for(&c, &vars).unwrap(),
            [
                "curl",
                "-fsS",
                "http://127.0.0.1:9/healthz",
                "-H",
                "x: 2.0.0",
                "{\"a\":1}"
            ]
        );
        assert!(
            command_for(&c, &Vars::default())
                .unwrap_err()
                .contains("{url}")
        );
        assert_eq!(
            unknown_placeholders(&["{urll}/x".to_string(), "{port}".to_string()]),
            ["urll", "port"]
        );
    }

    #[tokio::test]
    async fn runs_commands_and_reports_how_they_failed() {
        let sh = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
        assert_eq!(
            run("ok", &sh("exit 0"), Duration::from_secs(5)).await,
            Ok(())
        );
        let e = run(
            "bad",
            &sh("echo one; echo two >&2; echo '> Authorization: Bearer s3cr3t'; exit 3"),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(
            !e.contains("s3cr3t") && e.contains("Authorization: (redacted)"),
            "{e}"
        );
        assert!(e.starts_with("check `bad` failed (exit status: 3)"), "{e}");
        assert!(e.contains("one") && e.contains("two"), "{e}");
        // A timeout kills the whole group, grandchildren too, and does not wait for them.
        let started = std::time::Instant::now();
        let e = run(
            "slow",
            &sh("sleep 30 & sleep 30"),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(e.contains("did not finish within 0.3s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
