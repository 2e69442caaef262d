//! The local agent's control channel: HTTP/1 over a Unix socket in the agent's 0700 directory,
//! the way Docker and containerd guard theirs. The agent serves only peers running as its own
//! user (`SO_PEERCRED`); the client talks only to an agent that runs as its own user, is the
//! process `agent.json` names, and was started when `agent.json` says. Traffic ports stay TCP:
//! they are the applications' traffic, not control.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};

use super::wire::{AgentInfo, Reply, Request};
use crate::private::euid;

/// The socket's file name in the agent's directory.
pub const SOCKET: &str = "agent.sock";
/// Where the agent says who it is.
pub const INFO: &str = "agent.json";
/// The longest path a Unix socket address holds on Linux (108 bytes with the final NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Why the agent could not be reached, or was not believed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No agent answers for this directory.
    #[error("no local agent runs for `{0}`")]
    NotRunning(PathBuf),
    /// Something answers, but it is not this user's agent: it is not talked to.
    #[error("refusing to talk to the local agent of `{dir}`: {why}")]
    NotOurs {
        /// The agent's directory.
        dir: PathBuf,
        /// What failed to check out.
        why: String,
    },
    /// The socket's path is too long for a Unix socket address.
    #[error(
        "the local agent's socket `{0}` is longer than a Unix socket path may be ({MAX_SOCKET_PATH} bytes); use a shorter --state-dir"
    )]
    PathTooLong(PathBuf),
    /// The call failed on the way.
    #[error("the local agent of `{dir}` did not answer `{what}`")]
    Call {
        /// The agent's directory.
        dir: PathBuf,
        /// The request.
        what: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A process's start time in clock ticks since boot (`/proc/<pid>/stat`, field 22): with the
/// pid, it tells one process from a later one given the same pid.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The socket of the agent of `dir`, checked for length.
pub fn socket(dir: &Path) -> Result<PathBuf, ControlError> {
    let path = dir.join(SOCKET);
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(ControlError::PathTooLong(path));
    }
    Ok(path)
}

/// The agent's listener: connections from other users are closed unread.
pub struct Guarded {
    listener: UnixListener,
    uid: u32,
}

impl Guarded {
    /// Binds the socket of `dir` (which must be private already), replacing a stale one.
    pub fn bind(dir: &Path) -> std::io::Result<Self> {
        let path = socket(dir).map_err(std::io::Error::other)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        crate::private::tighten(&path)?;
        Ok(Self {
            listener,
            uid: euid(),
        })
    }
}

impl axum::serve::Listener for Guarded {
    type Io = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => match stream.peer_cred() {
                    Ok(c) if c.uid() == self.uid => return (stream, addr),
                    Ok(c) => eprintln!(
                        "keelson local-agent: refused a connection from uid {} (pid {:?}): only uid {} may drive this agent",
                        c.uid(),
                        c.pid(),
                        self.uid
                    ),
                    Err(e) => eprintln!(
                        "keelson local-agent: refused a connection whose peer is unknown: {e}"
                    ),
                },
                Err(e) => {
                    eprintln!("keelson local-agent: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// Writes `agent.json` (0600): this process, and when it started.
pub fn advertise(dir: &Path, metrics: Option<String>) -> std::io::Result<AgentInfo> {
    let pid = std::process::id();
    let info = AgentInfo {
        pid,
        started: start_time(pid).unwrap_or(0),
        metrics,
    };
    crate::private::replace(
        &dir.join(INFO),
        &serde_json::to_vec(&info).map_err(std::io::Error::other)?,
    )?;
    Ok(info)
}

/// Connects to the agent of `dir` and checks it is this user's: the directory is this user's
/// and private, the peer runs as this user, and it is the process `agent.json` names, started
/// when it says.
async fn connect(dir: &Path) -> Result<UnixStream, ControlError> {
    let not_ours = |why: String| ControlError::NotOurs {
        dir: dir.to_path_buf(),
        why,
    };
    let me = euid();
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(_) => return Err(ControlError::NotRunning(dir.to_path_buf())),
    };
    {
        use std::os::unix::fs::MetadataExt;
        if meta.uid() != me {
            return Err(not_ours(format!(
                "the directory belongs to uid {}, not to you (uid {me})",
                meta.uid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(not_ours(format!(
                "the directory is mode {:o}: others could have replaced the agent; `chmod 700` it, then run `keelson down` and try again",
                meta.mode() & 0o777
            )));
        }
    }
    let info: AgentInfo = std::fs::read(dir.join(INFO))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ControlError::NotRunning(dir.to_path_buf()))?;
    let stream = UnixStream::connect(socket(dir)?)
        .await
        .map_err(|_| ControlError::NotRunning(dir.to_path_buf()))?;
    let peer = stream.peer_cred().map_err(|e| ControlError::Call {
        dir: dir.to_path_buf(),
        what: "who are you",
        source: Box::new(e),
    })?;
    if peer.uid() != me {
        return Err(not_ours(format!(
            "the process answering runs as uid {}, not as you (uid {me}); it may be impersonating the agent",
            peer.uid()
        )));
    }
    let pid = peer.pid().and_then(|p| u32::try_from(p).ok());
    if pid != Some(info.pid) {
        return Err(not_ours(format!(
            "pid {pid:?} answers, but {INFO} names pid {}",
            info.pid
        )));
    }
    if info.started != 0 && start_time(info.pid) != Some(info.started) {
        return Err(not_ours(format!(
            "pid {} is not the process {INFO} names (it started at another time)",
            info.pid
        )));
    }
    Ok(stream)
}

/// Whether this user's agent runs for `dir` and answers. One that does not answer (gone, dying,
/// or not yet serving) is not running; one that cannot be believed is an error.
pub async fn alive(dir: &Path) -> Result<bool, ControlError> {
    match get(dir, "/v1/health", "health").await {
        Ok(_) => Ok(true),
        Err(ControlError::NotRunning(_) | ControlError::Call { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sends one request to the agent of `dir` and returns its reply.
pub async fn request(dir: &Path, req: &Request, timeout: Duration) -> Result<Reply, ControlError> {
    let what = match req {
        Request::Observe { .. } => "observe",
        Request::Apply { .. } => "apply",
        Request::Traffic { .. } => "traffic",
        Request::Down { .. } => "down",
    };
    let body = serde_json::to_vec(req).map_err(|e| ControlError::Call {
        dir: dir.to_path_buf(),
        what,
        source: Box::new(e),
    })?;
    let answer = tokio::time::timeout(timeout, exchange(dir, "POST", "/v1/ops", body, what))
        .await
        .map_err(|_| ControlError::Call {
            dir: dir.to_path_buf(),
            what,
            source: format!("no answer within {timeout:?}").into(),
        })??;
    serde_json::from_slice(&answer).map_err(|e| ControlError::Call {
        dir: dir.to_path_buf(),
        what,
        source: Box::new(e),
    })
}

async fn get(dir: &Path, path: &str, what: &'static str) -> Result<Bytes, ControlError> {
    tokio::time::timeout(
        Duration::from_secs(2),
        exchange(dir, "GET", path, Vec::new(), what),
    )
    .await
    .map_err(|_| ControlError::Call {
        dir: dir.to_path_buf(),
        what,
        source: "no answer within 2s".into(),
    })?
}

/// One HTTP/1 exchange on a fresh, checked connection.
async fn exchange(
    dir: &Path,
    method: &str,
    path: &str,
    body: Vec<u8>,
    what: &'static str,
) -> Result<Bytes, ControlError> {
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| ControlError::Call {
        dir: dir.to_path_buf(),
        what,
        source: e,
    };
    let stream = connect(dir).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(Box::new(e)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "keelson-agent")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| failed(Box::new(e)))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| failed(Box::new(e)))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| failed(Box::new(e)))?
        .to_bytes();
    if !status.is_success() {
        return Err(failed(
            format!("{status}: {}", String::from_utf8_lossy(&bytes)).into(),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn start_times_are_read_past_the_command_name() {
        let me = std::process::id();
        let t = super::start_time(me);
        assert!(t.is_some_and(|t| t > 0), "{t:?}");
        assert_eq!(super::start_time(me), t);
        assert_eq!(super::start_time(u32::MAX), None);
    }
}
