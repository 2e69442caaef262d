//! An in-memory provider for unit and property tests of the core. Not a target: real targets
//! are tested against real peers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Provider, ProviderError, ProviderOp, TargetRef};
use crate::actuation::{Capabilities, Op, SpecRef};
use crate::model::{
    ClusterId, Instance, InstanceHealth, ObservedCluster, Sequence, ServerGroup, ServerGroupName,
    SpecHash, Stamp, labels,
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

    /// Sets a group's traffic weight by hand, as a person at the load balancer would (for
    /// drift tests); 0 takes it out of traffic.
    pub fn set_weight(&self, cluster: &ClusterId, seq: Sequence, weight: u8) {
        if let Ok(mut s) = self.state.lock()
            && let Ok(g) = s.group(cluster, seq)
        {
            g.enabled = weight > 0;
            g.weight = weight;
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
            .map_err(|_| ProviderError::unavailable("memory provider poisoned"))?;
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
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

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

    async fn apply(
        &self,
        _target: &TargetRef,
        id: &ClusterId,
        op: &ProviderOp,
        stamp: &Stamp,
    ) -> Result<(), ProviderError> {
        self.with_state(|s| {
            // Stamps compared and written under one lock, as the local agent does.
            if let Some(newer) = s.clusters.get(id).and_then(|c| stamp.superseded_on(c)) {
                return Err(ProviderError::Superseded {
                    stamp: stamp.clone(),
                    newer,
                });
            }
            let done = match op {
                Op::Create {
                    sequence,
                    spec,
                    capacity,
                    weight,
                    ..
                } => {
                    let c = s
                        .clusters
                        .entry(id.clone())
                        .or_insert_with(|| ObservedCluster {
                            id: id.clone(),
                            app: spec.app.clone(),
                            server_groups: Vec::new(),
                        });
                    if c.server_groups.iter().any(|g| g.sequence == *sequence) {
                        return Ok(());
                    }
                    let mut lbl = spec.labels.clone();
                    lbl.insert(labels::SEQUENCE.into(), sequence.get().to_string());
                    c.server_groups.push(ServerGroup {
                        name: ServerGroupName::new(&id.name, *sequence),
                        sequence: *sequence,
                        version: spec.version.clone(),
                        spec_hash: spec.spec_hash.clone(),
                        capacity: *capacity,
                        enabled: *weight > 0,
                        weight: *weight,
                        instances: Vec::new(),
                        labels: lbl,
                        previous: None,
                    });
                    c.server_groups.sort_by_key(|g| g.sequence);
                    s.fill(id, *sequence)
                }
                Op::Resize { sequence, to, .. } => {
                    s.group(id, *sequence)?.capacity = *to;
                    s.fill(id, *sequence)
                }
                Op::Traffic { changes } => {
                    for c in changes {
                        // Out of traffic is what a group that is gone already is.
                        if c.to == 0 && s.group(id, c.sequence).is_err() {
                            continue;
                        }
                        let g = s.group(id, c.sequence)?;
                        g.enabled = c.to > 0;
                        g.weight = c.to;
                    }
                    Ok(())
                }
                Op::UpdateInPlace { sequence, spec, .. } => {
                    let g = s.group(id, *sequence)?;
                    if g.spec_hash != spec.spec_hash {
                        g.previous = Some(SpecRef {
                            version: g.version.clone(),
                            spec_hash: g.spec_hash.clone(),
                        });
                        g.spec_hash = spec.spec_hash.clone();
                        g.version = spec.version.clone();
                    }
                    Ok(())
                }
                Op::RevertInPlace { sequence, to, .. } => {
                    let g = s.group(id, *sequence)?;
                    if g.spec_hash == to.spec_hash {
                        return Ok(());
                    }
                    match g.previous.take() {
                        Some(p) if p.spec_hash == to.spec_hash => {
                            g.previous = Some(SpecRef {
                                version: g.version.clone(),
                                spec_hash: g.spec_hash.clone(),
                            });
                            g.spec_hash = p.spec_hash;
                            g.version = p.version;
                            Ok(())
                        }
                        other => {
                            g.previous = other;
                            Err(ProviderError::invalid(format!(
                                "{} keeps no previous spec {}",
                                g.name, to.version
                            )))
                        }
                    }
                }
                Op::ReplaceInstances {
                    sequence, count, ..
                } => {
                    let (hash, version, old): (SpecHash, String, Vec<usize>) = {
                        let g = s.group(id, *sequence)?;
                        let old = g
                            .instances
                            .iter()
                            .enumerate()
                            .filter(|(_, i)| i.spec_hash != g.spec_hash)
                            .map(|(n, _)| n)
                            .take(*count as usize)
                            .collect();
                        (g.spec_hash.clone(), g.version.clone(), old)
                    };
                    for n in old {
                        let fresh = s.instance(&hash, &version);
                        s.group(id, *sequence)?.instances[n] = fresh;
                    }
                    Ok(())
                }
                Op::Heal { sequence, .. } => s.fill(id, *sequence),
                Op::Destroy { sequence, .. } => {
                    if let Some(c) = s.clusters.get_mut(id) {
                        c.server_groups.retain(|g| g.sequence != *sequence);
                        if c.server_groups.is_empty() {
                            s.clusters.remove(id);
                        }
                    }
                    Ok(())
                }
            };
            if done.is_ok() {
                for seq in op.sequences() {
                    if let Ok(g) = s.group(id, seq) {
                        g.labels.insert(labels::EPOCH.into(), stamp.value());
                    }
                }
            }
            done
        })
    }
}
