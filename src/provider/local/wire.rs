//! The local agent's protocol: one JSON operation per `POST /v1/ops`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{ClusterId, DesiredCluster, Health, ObservedCluster, Sequence, SpecHash};
use crate::spec::{AppName, EnvName, TargetName};

/// What a server group runs: everything needed to start an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    /// The artifact version.
    pub version: String,
    /// The spec hash.
    pub spec_hash: SpecHash,
    /// The command; `{port}` becomes the instance's port.
    pub command: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Health checking.
    pub health: Health,
    /// Identity labels.
    pub labels: BTreeMap<String, String>,
}

/// A cluster as the agent needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// The cluster.
    pub id: ClusterId,
    /// The application.
    pub app: AppName,
    /// The proxy port.
    pub traffic_port: Option<u16>,
    /// What its groups run now.
    pub group: GroupSpec,
}

impl From<&DesiredCluster> for ClusterSpec {
    fn from(d: &DesiredCluster) -> Self {
        Self {
            id: d.id.clone(),
            app: d.app.clone(),
            traffic_port: d.traffic_port,
            group: GroupSpec {
                version: d.version.clone(),
                spec_hash: d.spec_hash.clone(),
                command: d.workload.command.clone(),
                env: d.workload.env.clone(),
                health: d.health.clone(),
                labels: d.labels.clone(),
            },
        }
    }
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// Clusters on a target.
    Observe {
        /// Environment.
        environment: EnvName,
        /// Target.
        target: TargetName,
    },
    /// Create a group (no-op if it exists).
    Create {
        /// The cluster.
        cluster: ClusterSpec,
        /// Sequence.
        sequence: Sequence,
        /// Instances.
        capacity: u32,
        /// In traffic at once.
        enabled: bool,
    },
    /// Resize a group.
    Resize {
        /// The cluster.
        cluster: ClusterId,
        /// Sequence.
        sequence: Sequence,
        /// Instances.
        capacity: u32,
    },
    /// Traffic in or out, with a weight.
    Traffic {
        /// The cluster.
        cluster: ClusterId,
        /// Sequence.
        sequence: Sequence,
        /// In traffic.
        enabled: bool,
        /// Weight among enabled groups.
        weight: u8,
    },
    /// New spec for a group's future instances.
    Update {
        /// The cluster with its new spec.
        cluster: ClusterSpec,
        /// Sequence.
        sequence: Sequence,
    },
    /// Replace up to `count` instances running an older spec.
    Replace {
        /// The cluster.
        cluster: ClusterId,
        /// Sequence.
        sequence: Sequence,
        /// How many.
        count: u32,
    },
    /// Start missing instances.
    Heal {
        /// The cluster.
        cluster: ClusterId,
        /// Sequence.
        sequence: Sequence,
    },
    /// Destroy a group (no-op if gone).
    Destroy {
        /// The cluster.
        cluster: ClusterId,
        /// Sequence.
        sequence: Sequence,
    },
    /// Stop everything (or one application's clusters).
    Down {
        /// Only this application.
        app: Option<AppName>,
    },
}

/// The answer to an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Reply {
    /// Done.
    Ok,
    /// Observed clusters.
    Clusters {
        /// The clusters.
        clusters: Vec<ObservedCluster>,
    },
    /// What `down` stopped.
    Stopped {
        /// `cluster-vNNN (n instances)` lines.
        stopped: Vec<String>,
    },
    /// The operation cannot succeed as made.
    Invalid {
        /// Why, for a person.
        message: String,
    },
}

/// Where a running agent listens, written to `agent.json` in the state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent's process id.
    pub pid: u32,
    /// Its API port on 127.0.0.1.
    pub port: u16,
}
