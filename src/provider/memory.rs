//! An in-memory provider for unit and property tests of the core. Not a target: real targets
//! are tested against real peers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Provider, ProviderError, TargetRef};
use crate::model::{
    ClusterId, DesiredCluster, Instance, InstanceHealth, ObservedCluster, Sequence, ServerGroup,
    ServerGroupName, SpecHash, labels,
};

/// A provider that keeps clusters in memory; instances are healthy at once unless their
/// version is marked failing.
#[derive(Debug, Default)]
pub struct MemoryProvider {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    clusters: BTreeMap<ClusterId, ObservedCluster>,
    failing: BTreeSet<String>,
    next_instance: u64,
}

impl MemoryProvider {
    /// An empty provider.
    pub fn new() -> Self {
        Self::default()
    }

    /// A provider holding these clusters.
    pub fn with(clusters: impl IntoIterator<Item = ObservedCluster>) -> Self {
        let p = Self::default();
        if let Ok(mut s) = p.state.lock() {
            s.clusters = clusters.into_iter().map(|c| (c.id.clone(), c)).collect();
        }
        p
    }

    /// Instances of this version never become healthy.
    pub fn fail_version(&self, version: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.failing.insert(version.to_string());
        }
    }

    /// Removes up to `n` instances of a group, as a crash would (for drift tests).
    pub fn kill_instances(&self, cluster: &ClusterId, seq: Sequence, n: usize) {
        if let Ok(mut s) = self.state.lock()
            && let Ok(g) = s.group(cluster, seq)
        {
            let keep = g.instances.len().saturating_sub(n);
            g.instances.truncate(keep);
        }
    }

    /// Everything held, for assertions.
    pub fn snapshot(&self) -> Vec<ObservedCluster> {
        self.state
            .lock()
            .map(|s| s.clusters.values().cloned().collect())
            .unwrap_or_default()
    }

    fn with_state<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let mut s = self
            .state
            .lock()
            .map_err(|_| ProviderError::Unavailable("memory provider poisoned".into()))?;
        f(&mut s)
    }
}

impl State {
    fn instance(&mut self, spec_hash: &SpecHash, version: &str) -> Instance {
        self.next_instance += 1;
        let health = if self.failing.contains(version) {
            InstanceHealth::Unhealthy
        } else {
            InstanceHealth::Healthy
        };
        Instance {
            id: format!("i-{}", self.next_instance),
            spec_hash: spec_hash.clone(),
            health,
            note: None,
        }
    }

    fn group(&mut self, id: &ClusterId, seq: Sequence) -> Result<&mut ServerGroup, ProviderError> {
        self.clusters
            .get_mut(id)
            .and_then(|c| c.server_groups.iter_mut().find(|g| g.sequence == seq))
            .ok_or_else(|| ProviderError::NotFound {
                cluster: id.to_string(),
                sequence: seq,
            })
    }

    fn fill(&mut self, id: &ClusterId, seq: Sequence) -> Result<(), ProviderError> {
        let (hash, version, capacity, have) = {
            let g = self.group(id, seq)?;
            (
                g.spec_hash.clone(),
                g.version.clone(),
                g.capacity as usize,
                g.instances.len(),
            )
        };
        let fresh: Vec<Instance> = (have..capacity)
            .map(|_| self.instance(&hash, &version))
            .collect();
        let g = self.group(id, seq)?;
        g.instances.truncate(capacity);
        g.instances.extend(fresh);
        Ok(())
    }
}

#[async_trait]
impl Provider for MemoryProvider {
    async fn observe(&self, target: &TargetRef) -> Result<Vec<ObservedCluster>, ProviderError> {
        self.with_state(|s| {
            Ok(s.clusters
                .values()
                .filter(|c| {
                    c.id.environment == target.environment && c.id.target == target.target.name
                })
                .cloned()
                .collect())
        })
    }

    async fn create_server_group(
        &self,
        cluster: &DesiredCluster,
        seq: Sequence,
        capacity: u32,
        enabled: bool,
    ) -> Result<(), ProviderError> {
        self.with_state(|s| {
            let c = s
                .clusters
                .entry(cluster.id.clone())
                .or_insert_with(|| ObservedCluster {
                    id: cluster.id.clone(),
                    app: cluster.app.clone(),
                    server_groups: Vec::new(),
                });
            if c.server_groups.iter().any(|g| g.sequence == seq) {
                return Ok(());
            }
            let mut lbl = cluster.labels.clone();
            lbl.insert(labels::SEQUENCE.into(), seq.get().to_string());
            c.server_groups.push(ServerGroup {
                name: ServerGroupName::new(cluster.name(), seq),
                sequence: seq,
                version: cluster.version.clone(),
                spec_hash: cluster.spec_hash.clone(),
                capacity,
                enabled,
                weight: if enabled { 100 } else { 0 },
                instances: Vec::new(),
                labels: lbl,
            });
            c.server_groups.sort_by_key(|g| g.sequence);
            s.fill(&cluster.id, seq)
        })
    }

    async fn resize(
        &self,
        cluster: &ClusterId,
        seq: Sequence,
        capacity: u32,
    ) -> Result<(), ProviderError> {
        self.with_state(|s| {
            s.group(cluster, seq)?.capacity = capacity;
            s.fill(cluster, seq)
        })
    }

    async fn set_traffic(
        &self,
        cluster: &ClusterId,
        seq: Sequence,
        enabled: bool,
        weight: u8,
    ) -> Result<(), ProviderError> {
        self.with_state(|s| {
            let g = s.group(cluster, seq)?;
            g.enabled = enabled;
            g.weight = if enabled { weight } else { 0 };
            Ok(())
        })
    }

    async fn update_in_place(
        &self,
        cluster: &DesiredCluster,
        seq: Sequence,
    ) -> Result<(), ProviderError> {
        self.with_state(|s| {
            let g = s.group(&cluster.id, seq)?;
            g.spec_hash = cluster.spec_hash.clone();
            g.version = cluster.version.clone();
            Ok(())
        })
    }

    async fn replace_instances(
        &self,
        cluster: &ClusterId,
        seq: Sequence,
        count: u32,
    ) -> Result<(), ProviderError> {
        self.with_state(|s| {
            let (hash, version, old): (SpecHash, String, Vec<usize>) = {
                let g = s.group(cluster, seq)?;
                let old = g
                    .instances
                    .iter()
                    .enumerate()
                    .filter(|(_, i)| i.spec_hash != g.spec_hash)
                    .map(|(n, _)| n)
                    .take(count as usize)
                    .collect();
                (g.spec_hash.clone(), g.version.clone(), old)
            };
            for n in old {
                let fresh = s.instance(&hash, &version);
                s.group(cluster, seq)?.instances[n] = fresh;
            }
            Ok(())
        })
    }

    async fn heal(&self, cluster: &ClusterId, seq: Sequence) -> Result<(), ProviderError> {
        self.with_state(|s| s.fill(cluster, seq))
    }

    async fn destroy(&self, cluster: &ClusterId, seq: Sequence) -> Result<(), ProviderError> {
        self.with_state(|s| {
            if let Some(c) = s.clusters.get_mut(cluster) {
                c.server_groups.retain(|g| g.sequence != seq);
                if c.server_groups.is_empty() {
                    s.clusters.remove(cluster);
                }
            }
            Ok(())
        })
    }
}
