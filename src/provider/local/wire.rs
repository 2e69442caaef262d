//! The local agent's protocol: one JSON request per `POST /v1/ops`; operations are the
//! actuation contract's own [`Op`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::actuation::Op;
use crate::analysis::counters::TrafficCounters;
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

impl std::fmt::Display for ClusterSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.group.version)
    }
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

/// One request to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    /// Clusters on a target.
    Observe {
        /// Environment.
        environment: EnvName,
        /// Target.
        target: TargetName,
    },
    /// One operation of the actuation contract on a cluster: the same [`Op`] the planner
    /// makes, carrying the agent's copy of the spec.
    Apply {
        /// The cluster.
        cluster: ClusterId,
        /// The operation (boxed: it carries a whole spec).
        op: Box<Op<ClusterSpec>>,
        /// The caller's fencing stamp (`EPOCH@STORE`): refused if the cluster carries a newer
        /// one of the same store, written on the groups the operation touches otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stamp: Option<String>,
    },
    /// Each server group's traffic counters in a cluster.
    Traffic {
        /// The cluster.
        cluster: ClusterId,
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
    /// Traffic counters by group sequence.
    Traffic {
        /// The groups the proxy has counted.
        groups: Vec<(Sequence, TrafficCounters)>,
    },
    /// What `down` stopped.
    Stopped {
        /// `cluster-vNNN (n instances)` lines.
        stopped: Vec<String>,
    },
    /// Refused: a newer holder's stamp is on the cluster.
    Superseded {
        /// The newer epoch.
        newer: u64,
    },
    /// The operation cannot succeed as made.
    Invalid {
        /// Why, for a person.
        message: String,
    },
}

/// Who the running agent is, written to `agent.json` (0600) beside its socket: clients talk
/// only to this process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent's process id.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat`), so a later process given
    /// the same pid is not taken for it.
    pub started: u64,
    /// Where it serves Prometheus metrics (`http://.../metrics`), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}
