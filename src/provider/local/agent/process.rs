//! Instances as processes: start in their own process group (so they outlive the agent and the
//! CLI), stop with SIGTERM then SIGKILL, check liveness, read the tail of their logs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Why an instance could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The program does not exist or is not executable.
    #[error("command not found: `{0}`")]
    NotFound(String),
    /// Any other spawn failure.
    #[error("cannot start `{command}`: {message}")]
    Spawn {
        /// The command line.
        command: String,
        /// What failed.
        message: String,
    },
}

/// A started instance.
#[derive(Debug)]
pub struct Started {
    /// The child, for reaping.
    pub child: Child,
    /// Its process id (also its process group id).
    pub pid: u32,
}

/// A free TCP port on 127.0.0.1, chosen by the kernel.
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// The command line with `{port}` replaced; `keelson` means this very binary, so examples work
/// from a fresh clone without installing it.
pub fn resolve(command: &[String], port: u16) -> Vec<String> {
    let mut out: Vec<String> = command
        .iter()
        .map(|a| a.replace("{port}", &port.to_string()))
        .collect();
    if out.first().is_some_and(|c| c == "keelson")
        && let Ok(exe) = std::env::current_exe()
    {
        // A binary replaced since the agent started (a rebuild, an upgrade) reads as
        // "<path> (deleted)": the new binary at the same path is the one to run.
        let path = exe.display().to_string();
        out[0] = match path.strip_suffix(" (deleted)") {
            Some(p) if std::path::Path::new(p).exists() => p.to_string(),
            _ => path,
        };
    }
    out
}

/// Starts one instance with its environment, logging to `log`.
pub fn start(
    command: &[String],
    env: &BTreeMap<String, String>,
    log: &Path,
) -> Result<Started, StartError> {
    let line = command.join(" ");
    let Some((program, args)) = command.split_first() else {
        return Err(StartError::NotFound(line));
    };
    if let Some(dir) = log.parent() {
        let _ = crate::private::dir(dir);
    }
    let spawn_err = |message: String| StartError::Spawn {
        command: line.clone(),
        message,
    };
    let out = crate::private::append(log)
        .map_err(|e| spawn_err(format!("log file {}: {e}", log.display())))?;
    let err = out.try_clone().map_err(|e| spawn_err(e.to_string()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(false);
    // The agent raised its own open-file limit for its proxies; instances run with the limit
    // they would have on their own.
    // SAFETY: the closure only calls setrlimit, which is async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(super::proxy::budget::restore_original_limit);
    }
    match cmd.spawn() {
        Ok(child) => {
            let pid = child.id().unwrap_or(0);
            Ok(Started { child, pid })
        }
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Err(StartError::NotFound(line))
        }
        Err(e) => Err(spawn_err(e.to_string())),
    }
}

/// Whether a process exists (and is not a zombie we could reap).
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    if !exists {
        return false;
    }
    // A zombie still "exists"; read its state.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => exists,
    }
}

fn signal_group(pid: u32, sig: i32) {
    if let Ok(p) = i32::try_from(pid)
        && p > 0
    {
        // SAFETY: signals the instance's own process group, created with process_group(0).
        unsafe {
            libc::kill(-p, sig);
        }
    }
}

/// Stops an instance: SIGTERM to its process group, then SIGKILL after `grace`.
pub async fn stop(pid: u32, mut child: Option<Child>, grace: Duration) {
    signal_group(pid, libc::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        if let Some(c) = child.as_mut() {
            if matches!(c.try_wait(), Ok(Some(_))) {
                return;
            }
        } else if !alive(pid) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            signal_group(pid, libc::SIGKILL);
            if let Some(mut c) = child {
                let _ = tokio::time::timeout(Duration::from_secs(2), c.wait()).await;
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(log: &Path, n: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The log file of an instance.
pub fn log_path(state_dir: &Path, cluster: &str, instance: &str) -> PathBuf {
    state_dir
        .join("logs")
        .join(cluster)
        .join(format!("{instance}.log"))
}

/// Who listens on a local TCP port, if Linux's /proc can tell: `pid 1234 (nginx)`.
pub fn port_owner(port: u16) -> Option<String> {
    let hex = format!(":{port:04X}");
    let mut inode = None;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address, state 0A = LISTEN, inode at column 9.
            if cols.len() > 9 && cols[1].ends_with(&hex) && cols[3] == "0A" {
                inode = Some(cols[9].to_string());
            }
        }
    }
    let needle = format!("socket:[{}]", inode?);
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.chars().all(|c| c.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == needle) {
                let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                return Some(format!("pid {pid} ({})", comm.trim()));
            }
        }
    }
    None
}
