//! The observed (live) state: what providers report, identified by labels, never by names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ClusterId, Sequence, ServerGroupName, SpecHash};
use crate::spec::AppName;

/// How an instance is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceHealth {
    /// Passing its health check.
    Healthy,
    /// Started, not yet passing.
    Starting,
    /// Failing its health check or exited.
    Unhealthy,
}

/// One instance: a pod, a VM or a local process.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Instance {
    /// Provider's id (process id, pod name, instance id).
    pub id: String,
    /// The spec hash the instance runs (differs from its group's during a rolling update).
    pub spec_hash: SpecHash,
    /// Health.
    pub health: InstanceHealth,
    /// What went wrong last, e.g. an exit status and the last lines of stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One observed server group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServerGroup {
    /// `<cluster>-vNNN`, as the provider names it.
    pub name: ServerGroupName,
    /// From the sequence label.
    pub sequence: Sequence,
    /// The artifact version it runs.
    pub version: String,
    /// The hash of its immutable spec (workload, version, health).
    pub spec_hash: SpecHash,
    /// Target size.
    pub capacity: u32,
    /// In traffic.
    pub enabled: bool,
    /// Share of the cluster's traffic when several groups are enabled, 0..=100; 100 when alone.
    pub weight: u8,
    /// Its instances.
    pub instances: Vec<Instance>,
    /// All its labels or tags.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The spec it had before an update in place, which the provider keeps to revert to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<crate::actuation::SpecRef>,
}

impl ServerGroup {
    /// Instances passing their health check.
    pub fn healthy(&self) -> u32 {
        u32::try_from(
            self.instances
                .iter()
                .filter(|i| i.health == InstanceHealth::Healthy)
                .count(),
        )
        .unwrap_or(u32::MAX)
    }

    /// Whether it takes traffic and has a healthy instance.
    pub fn serving(&self) -> bool {
        self.enabled && self.weight > 0 && self.healthy() > 0
    }
}

/// One observed cluster on one target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObservedCluster {
    /// Environment, target and name, from labels.
    pub id: ClusterId,
    /// The application, from labels.
    pub app: AppName,
    /// Server groups, ordered by sequence.
    pub server_groups: Vec<ServerGroup>,
}

impl ObservedCluster {
    /// Whether any group serves traffic now.
    pub fn serving(&self) -> bool {
        self.server_groups.iter().any(ServerGroup::serving)
    }

    /// A group by sequence.
    pub fn group(&self, seq: Sequence) -> Option<&ServerGroup> {
        self.server_groups.iter().find(|g| g.sequence == seq)
    }
}

/// Everything observed, across targets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedState {
    /// Clusters by id (serialized as a list).
    #[serde(with = "observed_list")]
    pub clusters: BTreeMap<ClusterId, ObservedCluster>,
    /// Targets that could not be observed, with the reason; their clusters are not planned.
    #[serde(default)]
    pub unavailable: BTreeMap<String, String>,
    /// How precisely each provider that was asked splits traffic (exact when not listed).
    #[serde(skip)]
    pub precision: BTreeMap<crate::spec::ProviderKind, crate::actuation::TrafficPrecision>,
}

impl ObservedState {
    /// The live state as it would be had `desired` been applied and converged: one enabled,
    /// healthy server group per cluster. Used to plan a pull request where the clusters cannot be
    /// observed (a CI job): "what would merging do, starting from the base branch".
    pub fn assuming_converged(desired: &super::DesiredState) -> Self {
        let clusters = desired
            .clusters
            .values()
            .map(|d| {
                let seq = Sequence::FIRST;
                let group = ServerGroup {
                    name: ServerGroupName::new(&d.id.name, seq),
                    sequence: seq,
                    version: d.version.clone(),
                    spec_hash: d.spec_hash.clone(),
                    capacity: d.capacity.desired,
                    enabled: true,
                    weight: 100,
                    instances: (0..d.capacity.desired)
                        .map(|i| Instance {
                            id: format!("{}-{i}", d.id.name),
                            spec_hash: d.spec_hash.clone(),
                            health: InstanceHealth::Healthy,
                            note: None,
                        })
                        .collect(),
                    labels: d.labels.clone(),
                    previous: None,
                };
                (
                    d.id.clone(),
                    ObservedCluster {
                        id: d.id.clone(),
                        app: d.app.clone(),
                        server_groups: vec![group],
                    },
                )
            })
            .collect();
        Self {
            clusters,
            ..Self::default()
        }
    }

    /// How precisely a provider's targets split traffic.
    pub fn precision(&self, kind: crate::spec::ProviderKind) -> crate::actuation::TrafficPrecision {
        self.precision
            .get(&kind)
            .copied()
            .unwrap_or(crate::actuation::TrafficPrecision::Exact)
    }

    /// A fingerprint of everything observed: `apply --plan` refuses a plan whose fingerprint no
    /// longer matches. Instance ids and health are left out: they move without anyone acting.
    pub fn fingerprint(&self) -> SpecHash {
        type GroupShape<'a> = (u16, &'a str, u32, bool, u8);
        let shape: Vec<(String, Vec<GroupShape<'_>>)> = self
            .clusters
            .values()
            .map(|c| {
                (
                    c.id.to_string(),
                    c.server_groups
                        .iter()
                        .map(|g| {
                            (
                                g.sequence.get(),
                                g.spec_hash.as_str(),
                                g.capacity,
                                g.enabled,
                                g.weight,
                            )
                        })
                        .collect(),
                )
            })
            .collect();
        SpecHash::of(&(shape, &self.unavailable))
    }
}

mod observed_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::ObservedCluster;
    use crate::model::ClusterId;

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<ClusterId, ObservedCluster>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.values())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<ClusterId, ObservedCluster>, D::Error> {
        let list = Vec::<ObservedCluster>::deserialize(d)?;
        Ok(list.into_iter().map(|c| (c.id.clone(), c)).collect())
    }
}
