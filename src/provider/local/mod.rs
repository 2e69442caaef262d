//! The local target: real processes behind a real proxy on this machine, owned by a detached
//! agent (`keelson local-agent`) so that `keelson apply` can exit and leave the apps serving.

pub mod agent;
pub mod control;
pub mod wire;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;

use super::{Provider, ProviderError, ProviderOp, TargetRef};
use crate::actuation::{Capabilities, TrafficPrecision};
use crate::analysis::counters::TrafficCounters;
use crate::model::{ClusterId, DesiredCluster, ObservedCluster, Sequence, Stamp};
use crate::spec::AppName;
use control::ControlError;
use wire::{ClusterSpec, Reply, Request};

/// How long an operation may take (destroying drains instances for up to 10 s, then stops them).
const OP_TIMEOUT: Duration = Duration::from_secs(60);

/// The local provider: a client of the agent of one state directory.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    dir: PathBuf,
    agent_exe: PathBuf,
    /// Held while starting the agent, so that concurrent operations start one, not several.
    starting: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// A control channel error as a provider error: an agent that cannot be believed is never
/// worth retrying against.
fn control(e: ControlError) -> ProviderError {
    match e {
        e @ (ControlError::NotOurs { .. } | ControlError::PathTooLong(_)) => {
            ProviderError::invalid_by("the local agent cannot be used", e)
        }
        e => ProviderError::unavailable_by("the local agent did not answer", e),
    }
}

impl LocalProvider {
    /// A provider keeping its state in `<state_dir>/local`, starting agents with `agent_exe`
    /// (the `keelson` binary).
    pub fn new(state_dir: &Path, agent_exe: PathBuf) -> Self {
        Self {
            dir: state_dir.join("local"),
            agent_exe,
            starting: std::sync::Arc::default(),
        }
    }

    /// The agent's own directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this user's agent runs (an agent that is not ours is an error, not "no").
    async fn running(&self) -> Result<bool, ProviderError> {
        control::alive(&self.dir).await.map_err(control)
    }

    /// Makes sure the agent runs, starting it if it does not.
    async fn agent(&self) -> Result<(), ProviderError> {
        if self.running().await? {
            return Ok(());
        }
        let _starting = self.starting.lock().await;
        if self.running().await? {
            return Ok(());
        }
        crate::private::dir(&self.dir).map_err(|e| {
            ProviderError::invalid_by(format!("cannot use {}", self.dir.display()), e)
        })?;
        let log = crate::private::append(&self.dir.join("agent.log"))
            .map_err(|e| ProviderError::unavailable_by("cannot open the agent's log", e))?;
        let err = log
            .try_clone()
            .map_err(|e| ProviderError::unavailable_by("cannot open the agent's log", e))?;
        // `agent.json` stays: a new agent replaces it, and if another agent already holds the
        // directory (it was only slow to answer) the new one exits and the file still leads
        // to the one that runs.
        // Its own process group: the agent must outlive this process and its terminal.
        let mut cmd = std::process::Command::new(&self.agent_exe);
        // The agent and the instances it starts are no place for Keelson's credentials.
        crate::credentials::withhold(|k| {
            cmd.env_remove(k);
        });
        let child = cmd
            .arg("local-agent")
            .arg("--state-dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                ProviderError::unavailable_by(
                    format!("cannot start `{} local-agent`", self.agent_exe.display()),
                    e,
                )
            })?;
        drop(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.running().await? {
                return Ok(());
            }
        }
        let tail = agent::process::tail(&self.dir.join("agent.log"), 5);
        Err(ProviderError::unavailable(format!(
            "the local agent did not start; its log says:\n{tail}"
        )))
    }

    async fn op(&self, op: &Request) -> Result<Reply, ProviderError> {
        self.agent().await?;
        match control::request(&self.dir, op, OP_TIMEOUT)
            .await
            .map_err(control)?
        {
            Reply::Invalid { message } => Err(ProviderError::invalid(message)),
            r => Ok(r),
        }
    }

    /// Whether the agent has state on disk (instances to re-adopt).
    fn has_state(&self) -> bool {
        let state = self.dir.join("state.json");
        state.exists() || crate::private::previous(&state).exists()
    }

    /// Starts the agent now if it is not running (otherwise the first operation does).
    pub async fn start_agent(&self) -> Result<(), ProviderError> {
        self.agent().await
    }

    /// Stops every local cluster (or one application's) and says what stopped.
    pub async fn down(&self, app: Option<AppName>) -> Result<Vec<String>, ProviderError> {
        if !self.running().await? && !self.has_state() {
            return Ok(Vec::new());
        }
        match self.op(&Request::Down { app }).await? {
            Reply::Stopped { stopped } => Ok(stopped),
            _ => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn capabilities(&self) -> Capabilities {
        // Processes on this machine: health is cheap to ask for often, weights are exact in
        // the proxy.
        Capabilities {
            traffic: TrafficPrecision::Exact,
            own_lease: false,
            poll: Duration::from_millis(50),
            batch: usize::MAX,
        }
    }

    async fn observe(&self, target: &TargetRef) -> Result<Vec<ObservedCluster>, ProviderError> {
        // Observing never starts an agent for a target that has nothing: an empty state
        // directory means an empty target. With state on disk, the agent is (re)started so it
        // re-adopts its instances and traffic resumes.
        if !self.running().await? && !self.has_state() {
            return Ok(Vec::new());
        }
        match self
            .op(&Request::Observe {
                environment: target.environment.clone(),
                target: target.target.name.clone(),
            })
            .await?
        {
            Reply::Clusters { clusters } => Ok(clusters),
            other => Err(ProviderError::unavailable(format!(
                "unexpected agent reply: {other:?}"
            ))),
        }
    }

    async fn traffic(
        &self,
        _target: &TargetRef,
        cluster: &ClusterId,
    ) -> Result<Vec<(Sequence, TrafficCounters)>, ProviderError> {
        match self
            .op(&Request::Traffic {
                cluster: cluster.clone(),
            })
            .await?
        {
            Reply::Traffic { groups } => Ok(groups),
            other => Err(ProviderError::unavailable(format!(
                "unexpected agent reply: {other:?}"
            ))),
        }
    }

    fn traffic_url(&self, _target: &TargetRef, cluster: &DesiredCluster) -> Option<String> {
        cluster
            .traffic_port
            .map(|p| format!("http://127.0.0.1:{p}"))
    }

    async fn apply(
        &self,
        _target: &TargetRef,
        cluster: &ClusterId,
        op: &ProviderOp,
        stamp: &Stamp,
    ) -> Result<(), ProviderError> {
        let op = op
            .clone()
            .map_spec(|d| Ok::<_, std::convert::Infallible>(ClusterSpec::from(d.as_ref())))
            .unwrap_or_else(|e| match e {});
        match self
            .op(&Request::Apply {
                cluster: cluster.clone(),
                op: Box::new(op),
                stamp: Some(stamp.value()),
            })
            .await?
        {
            Reply::Superseded { newer } => Err(ProviderError::Superseded {
                stamp: stamp.clone(),
                newer,
            }),
            _ => Ok(()),
        }
    }
}
