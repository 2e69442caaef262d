//! The Kubernetes target, through the `kube` client: a server group is a ReplicaSet
//! `<cluster>-vNNN`, its instances are the ReplicaSet's pods, and a cluster's traffic is a
//! Service `<cluster>` selecting the cluster's pods labelled `keelson.io/traffic: enabled`.
//!
//! Observation reads reflector caches (one watch per kind per namespace); every write waits
//! until the cache shows it, so the engine's next observation (the traffic guard, a health
//! wait) sees what was just done. Writes are server-side applies with field manager `keelson`
//! where Keelson owns the whole object, merge patches where it changes one field (traffic
//! labels), the scale subresource for capacity, and foreground deletes.

mod cache;
pub mod lease;
pub mod objects;
mod retry;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Client;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};

use self::cache::{Namespace, at_version, gone};
use self::objects::{MANAGER, Traffic};
use self::retry::{failed, not_found, retry};
use super::{LeaseOutcome, Provider, ProviderError, ProviderOp, TargetRef};
use crate::actuation::{Capabilities, Op, TrafficPrecision};
use crate::model::{ClusterId, ObservedCluster, Sequence, ServerGroupName, Stamp};
use crate::spec::KubernetesTarget;

/// How long the first list of a namespace may take before the target counts as unavailable.
const SYNC_TIMEOUT: Duration = Duration::from_secs(15);

/// A kubeconfig context (the current one when `None`) and a namespace.
type NamespaceKey = (Option<String>, String);

/// The Kubernetes provider: clients per kubeconfig context, caches per namespace, both made on
/// first use, so a build that never meets a Kubernetes target never reads a kubeconfig.
#[derive(Default)]
pub struct KubernetesProvider {
    clients: tokio::sync::Mutex<HashMap<Option<String>, Client>>,
    namespaces: tokio::sync::Mutex<HashMap<NamespaceKey, Arc<Namespace>>>,
}

impl std::fmt::Debug for KubernetesProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesProvider").finish_non_exhaustive()
    }
}

impl KubernetesProvider {
    /// Runs one operation of the contract.
    async fn act(
        &self,
        ns: &Namespace,
        cluster: &ClusterId,
        op: &ProviderOp,
    ) -> Result<(), ProviderError> {
        match op {
            Op::Create {
                sequence,
                spec,
                capacity,
                weight,
                ..
            } => {
                let traffic = Traffic {
                    enabled: *weight > 0,
                    weight: *weight,
                };
                let rs = objects::replica_set(spec, *sequence, *capacity, traffic)
                    .map_err(ProviderError::invalid)?;
                let existing = match Self::replica_set(ns, cluster, *sequence).await {
                    Ok(rs) => Some(rs),
                    Err(ProviderError::NotFound { .. }) => None,
                    Err(e) => return Err(e),
                };
                if existing.is_none() {
                    Self::apply_replica_set(ns, &rs).await?;
                }
                Self::ensure_service(ns, existing.as_ref().unwrap_or(&rs)).await
            }
            Op::Resize { sequence, to, .. } => Self::scale(ns, cluster, *sequence, *to).await,
            Op::Traffic { changes } => {
                // Weights are recorded first, gainers before losers; pods follow in one pass.
                for c in changes {
                    let rs = match Self::replica_set(ns, cluster, c.sequence).await {
                        Ok(rs) => rs,
                        // Out of traffic is what a group that is gone already is.
                        Err(ProviderError::NotFound { .. }) if c.to == 0 => continue,
                        Err(e) => return Err(e),
                    };
                    Self::record_traffic(ns, &rs, c.to).await?;
                    if c.to > 0 {
                        Self::ensure_service(ns, &rs).await?;
                    }
                }
                Self::assign_traffic(ns, cluster).await
            }
            Op::UpdateInPlace { sequence, spec, .. } => {
                let live = Self::replica_set(ns, cluster, *sequence).await?;
                let Some(was) = objects::current(&live) else {
                    return Err(ProviderError::invalid(format!(
                        "ReplicaSet {} has no pod template or spec annotations; Keelson did not make it",
                        ServerGroupName::new(&cluster.name, *sequence)
                    )));
                };
                if was.spec.spec_hash == spec.spec_hash {
                    return Ok(());
                }
                // Only the pod template and annotations change; size and traffic stay as they are.
                let mut rs = objects::replica_set(
                    spec,
                    *sequence,
                    objects::replicas(&live),
                    objects::traffic_of(&live),
                )
                .map_err(ProviderError::invalid)?;
                let kept = serde_json::to_string(&was).map_err(|e| {
                    ProviderError::invalid_by("cannot keep the previous template", e)
                })?;
                rs.metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(objects::keys::PREVIOUS.into(), kept);
                Self::apply_replica_set(ns, &rs).await
            }
            Op::RevertInPlace { sequence, to, .. } => {
                let live = Self::replica_set(ns, cluster, *sequence).await?;
                if objects::current(&live).is_some_and(|c| c.spec.spec_hash == to.spec_hash) {
                    return Ok(());
                }
                let back = objects::previous(&live)
                    .filter(|p| p.spec.spec_hash == to.spec_hash)
                    .and_then(|p| objects::swapped(&live, &p))
                    .ok_or_else(|| {
                        ProviderError::invalid(format!(
                            "ReplicaSet {} keeps no previous template of {}; it cannot be reverted in place",
                            ServerGroupName::new(&cluster.name, *sequence),
                            to.version
                        ))
                    })?;
                Self::apply_replica_set(ns, &back).await
            }
            Op::ReplaceInstances {
                sequence, count, ..
            } => Self::replace(ns, cluster, *sequence, *count).await,
            Op::Heal { sequence, .. } => {
                // The ReplicaSet controller replaces missing pods itself; what Keelson repairs is
                // which of them take traffic.
                Self::replica_set(ns, cluster, *sequence).await?;
                Self::assign_traffic(ns, cluster).await
            }
            Op::Destroy { sequence, .. } => Self::destroy(ns, cluster, *sequence).await,
        }
    }

    /// A provider with no clients yet.
    pub fn new() -> Self {
        Self::default()
    }

    async fn client(&self, context: Option<&str>) -> Result<Client, ProviderError> {
        let key = context.map(str::to_string);
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let config = match context {
            Some(ctx) => kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions {
                context: Some(ctx.to_string()),
                ..Default::default()
            })
            .await
            .map_err(|e| {
                ProviderError::invalid_by(
                    format!(
                        "kubeconfig context `{ctx}`: point KUBECONFIG at a kubeconfig that has it (`kubectl config get-contexts`)"
                    ),
                    e,
                )
            })?,
            None => kube::Config::infer().await.map_err(|e| {
                ProviderError::invalid_by(
                    "no Kubernetes configuration: set KUBECONFIG, or name a context in the target",
                    e,
                )
            })?,
        };
        let client = Client::try_from(config)
            .map_err(|e| ProviderError::invalid_by("cannot make a Kubernetes client", e))?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    async fn namespace(&self, t: &KubernetesTarget) -> Result<Arc<Namespace>, ProviderError> {
        let key = (t.context.clone(), t.namespace.clone());
        let ns = {
            let existing = self.namespaces.lock().await.get(&key).cloned();
            match existing {
                Some(ns) => ns,
                None => {
                    let client = self.client(t.context.as_deref()).await?;
                    let ns = Arc::new(Namespace::start(client, &t.namespace));
                    self.namespaces
                        .lock()
                        .await
                        .entry(key)
                        .or_insert(ns)
                        .clone()
                }
            }
        };
        ns.ready(SYNC_TIMEOUT).await.map_err(|e| {
            ProviderError::unavailable(format!(
                "cannot watch namespace `{}`{}: {e}",
                t.namespace,
                t.context
                    .as_deref()
                    .map(|c| format!(" of context `{c}`"))
                    .unwrap_or_default()
            ))
        })?;
        Ok(ns)
    }

    async fn target_namespace(&self, target: &TargetRef) -> Result<Arc<Namespace>, ProviderError> {
        self.namespace(self.settings(target)?).await
    }

    /// A target's context and namespace.
    fn settings<'a>(&self, target: &'a TargetRef) -> Result<&'a KubernetesTarget, ProviderError> {
        target.target.kubernetes.as_ref().ok_or_else(|| {
            ProviderError::invalid(format!(
                "target {} has no `kubernetes` settings (context, namespace)",
                target.key()
            ))
        })
    }

    /// The cluster's ReplicaSets and pods, read from the API (not the cache): traffic is
    /// computed from the freshest state.
    async fn live(
        ns: &Namespace,
        id: &ClusterId,
    ) -> Result<(Vec<ReplicaSet>, Vec<Pod>), ProviderError> {
        let lp =
            ListParams::default().labels(&objects::selector_string(&objects::cluster_selector(id)));
        let (rs_api, pod_api) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
        let rs = retry(|| rs_api.list(&lp))
            .await
            .map_err(|e| failed(&format!("list ReplicaSets of {id}"), &e))?;
        let pods = retry(|| pod_api.list(&lp))
            .await
            .map_err(|e| failed(&format!("list pods of {id}"), &e))?;
        Ok((rs.items, pods.items))
    }

    /// Creates or updates the cluster's Service from one of its ReplicaSets.
    async fn ensure_service(ns: &Namespace, rs: &ReplicaSet) -> Result<(), ProviderError> {
        let Some(svc) = objects::service_for(rs) else {
            return Ok(());
        };
        let name = svc.metadata.name.clone().unwrap_or_default();
        let (api, pp, patch) = (
            ns.api::<Service>(),
            PatchParams::apply(MANAGER).force(),
            Patch::Apply(&svc),
        );
        let applied = retry(|| api.patch(&name, &pp, &patch))
            .await
            .map_err(|e| failed(&format!("apply Service {name}"), &e))?;
        ns.settle(
            &ns.services,
            &name,
            at_version(applied.metadata.resource_version.as_deref()),
        )
        .await;
        Ok(())
    }

    /// Labels the cluster's pods so that each group's share of ready pods in traffic follows
    /// the groups' recorded weights. Pods are put in before others are taken out.
    async fn assign_traffic(ns: &Namespace, id: &ClusterId) -> Result<(), ProviderError> {
        let (sets, pods) = Self::live(ns, id).await?;
        let sets: Vec<&ReplicaSet> = sets
            .iter()
            .filter(|r| !objects::terminating(&r.metadata))
            .collect();
        let mut members: Vec<Vec<&Pod>> = sets
            .iter()
            .map(|r| {
                let mut mine: Vec<&Pod> = pods
                    .iter()
                    .filter(|p| {
                        !objects::terminating(&p.metadata)
                            && objects::owner_uid(p).is_some()
                            && objects::owner_uid(p) == r.metadata.uid.as_deref()
                    })
                    .collect();
                // Ready pods take traffic first; names keep the choice stable.
                mine.sort_by(|a, b| {
                    objects::ready(b)
                        .cmp(&objects::ready(a))
                        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
                });
                mine
            })
            .collect();
        let shape: Vec<(u32, u8)> = sets
            .iter()
            .zip(&members)
            .map(|(r, m)| {
                let t = objects::traffic_of(r);
                (
                    u32::try_from(m.len()).unwrap_or(u32::MAX),
                    if t.enabled { t.weight } else { 0 },
                )
            })
            .collect();
        let counts = crate::actuation::instances_in_traffic(&shape);
        let mut enable = Vec::new();
        let mut disable = Vec::new();
        for (m, k) in members.iter_mut().zip(counts) {
            for (i, p) in m.iter().enumerate() {
                let want = (i as u32) < k;
                if objects::pod_enabled(p) != want {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    if want {
                        enable.push(name);
                    } else {
                        disable.push(name);
                    }
                }
            }
        }
        for (names, on) in [(enable, true), (disable, false)] {
            let patch = objects::pod_traffic_patch(on);
            for name in names {
                // A pod gone meanwhile is fine: its replacement starts from the template.
                patch_settled(ns, &ns.pods, &name, &patch, &format!("label pod {name}")).await?;
            }
        }
        Ok(())
    }

    async fn replica_set(
        ns: &Namespace,
        id: &ClusterId,
        seq: Sequence,
    ) -> Result<ReplicaSet, ProviderError> {
        let name = ServerGroupName::new(&id.name, seq).to_string();
        let api = ns.api::<ReplicaSet>();
        match retry(|| api.get_opt(&name)).await {
            Ok(Some(rs)) if !objects::terminating(&rs.metadata) => Ok(rs),
            Ok(_) => Err(ProviderError::NotFound {
                cluster: id.to_string(),
                sequence: seq,
            }),
            Err(e) => Err(failed(&format!("read ReplicaSet {name}"), &e)),
        }
    }

    async fn apply_replica_set(ns: &Namespace, rs: &ReplicaSet) -> Result<(), ProviderError> {
        let name = rs.metadata.name.clone().unwrap_or_default();
        let (api, pp, patch) = (
            ns.api::<ReplicaSet>(),
            PatchParams::apply(MANAGER).force(),
            Patch::Apply(rs),
        );
        let applied = retry(|| api.patch(&name, &pp, &patch))
            .await
            .map_err(|e| failed(&format!("apply ReplicaSet {name}"), &e))?;
        ns.settle(
            &ns.replica_sets,
            &name,
            at_version(applied.metadata.resource_version.as_deref()),
        )
        .await;
        Ok(())
    }

    async fn scale(
        ns: &Namespace,
        cluster: &ClusterId,
        seq: Sequence,
        capacity: u32,
    ) -> Result<(), ProviderError> {
        let name = ServerGroupName::new(&cluster.name, seq).to_string();
        let patch = Patch::Merge(serde_json::json!({"spec": {"replicas": capacity}}));
        let pp = update_params();
        let api = ns.api::<ReplicaSet>();
        match retry(|| api.patch_scale(&name, &pp, &patch)).await {
            Ok(scale) => {
                ns.settle(
                    &ns.replica_sets,
                    &name,
                    at_version(scale.metadata.resource_version.as_deref()),
                )
                .await;
                Ok(())
            }
            Err(e) if not_found(&e) => Err(ProviderError::NotFound {
                cluster: cluster.to_string(),
                sequence: seq,
            }),
            Err(e) => Err(failed(&format!("scale ReplicaSet {name}"), &e)),
        }
    }

    /// Records a group's traffic weight on its ReplicaSet (0: out of traffic).
    async fn record_traffic(
        ns: &Namespace,
        rs: &ReplicaSet,
        weight: u8,
    ) -> Result<(), ProviderError> {
        let name = rs.metadata.name.clone().unwrap_or_default();
        let traffic = Traffic {
            enabled: weight > 0,
            weight: weight.min(100),
        };
        if objects::traffic_of(rs) == traffic {
            return Ok(());
        }
        let patch = Patch::Merge(objects::traffic_patch(traffic));
        let pp = update_params();
        let api = ns.api::<ReplicaSet>();
        let patched = retry(|| api.patch(&name, &pp, &patch))
            .await
            .map_err(|e| failed(&format!("record traffic on ReplicaSet {name}"), &e))?;
        ns.settle(
            &ns.replica_sets,
            &name,
            at_version(patched.metadata.resource_version.as_deref()),
        )
        .await;
        Ok(())
    }

    /// Writes a holder's stamp on the ReplicaSets an operation touched, as an annotation (a
    /// label value cannot hold it); those that carry it already, or are gone, are left.
    async fn stamp(
        ns: &Namespace,
        cluster: &ClusterId,
        sequences: &[Sequence],
        stamp: &Stamp,
    ) -> Result<(), ProviderError> {
        let value = stamp.value();
        for seq in sequences {
            let name = ServerGroupName::new(&cluster.name, *seq).to_string();
            let key =
                kube::runtime::reflector::ObjectRef::<ReplicaSet>::new(&name).within(&ns.name);
            // Written unless the cache shows it there already (a cache behind is no reason to
            // skip: a ReplicaSet that is gone answers 404, which is fine).
            if ns
                .replica_sets
                .get(&key)
                .is_some_and(|rs| objects::stamp_of(&rs) == Some(value.as_str()))
            {
                continue;
            }
            let patch = objects::stamp_patch(&value);
            let what = format!("stamp ReplicaSet {name}");
            patch_settled(ns, &ns.replica_sets, &name, &patch, &what).await?;
        }
        Ok(())
    }

    /// Deletes up to `count` pods of a group whose spec hash is not the group's; the
    /// ReplicaSet controller starts their replacements from the current template.
    async fn replace(
        ns: &Namespace,
        cluster: &ClusterId,
        seq: Sequence,
        count: u32,
    ) -> Result<(), ProviderError> {
        let rs = Self::replica_set(ns, cluster, seq).await?;
        let want = rs
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(objects::keys::SPEC_HASH))
            .cloned()
            .unwrap_or_default();
        let (_, pods) = Self::live(ns, cluster).await?;
        let mut stale: Vec<&Pod> = pods
            .iter()
            .filter(|p| {
                !objects::terminating(&p.metadata)
                    && objects::owner_uid(p) == rs.metadata.uid.as_deref()
                    && objects::label(&p.metadata, objects::keys::SPEC_HASH) != Some(want.as_str())
            })
            .collect();
        // Unready pods go first: replacing them costs no capacity.
        stale.sort_by(|a, b| {
            objects::ready(a)
                .cmp(&objects::ready(b))
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        });
        let (api, dp) = (ns.api::<Pod>(), DeleteParams::default());
        for p in stale.into_iter().take(count as usize) {
            let name = p.metadata.name.clone().unwrap_or_default();
            match retry(|| api.delete(&name, &dp)).await {
                Ok(_) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(failed(&format!("delete pod {name}"), &e)),
            }
            ns.settle(&ns.pods, &name, gone).await;
        }
        Ok(())
    }

    async fn destroy(
        ns: &Namespace,
        cluster: &ClusterId,
        seq: Sequence,
    ) -> Result<(), ProviderError> {
        let name = ServerGroupName::new(&cluster.name, seq).to_string();
        let (api, dp) = (ns.api::<ReplicaSet>(), DeleteParams::foreground());
        match retry(|| api.delete(&name, &dp)).await {
            Ok(_) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(failed(&format!("delete ReplicaSet {name}"), &e)),
        }
        ns.settle(&ns.replica_sets, &name, gone).await;
        let (sets, _) = Self::live(ns, cluster).await?;
        if sets.iter().all(|r| objects::terminating(&r.metadata)) {
            let svc = cluster.name.to_string();
            let (api, dp) = (ns.api::<Service>(), DeleteParams::default());
            match retry(|| api.delete(&svc, &dp)).await {
                Ok(_) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(failed(&format!("delete Service {svc}"), &e)),
            }
            ns.settle(&ns.services, &svc, gone).await;
        }
        Ok(())
    }

    async fn lease_api(&self, target: &TargetRef) -> Result<kube::Api<Lease>, ProviderError> {
        let t = self.settings(target)?;
        let client = self.client(t.context.as_deref()).await?;
        Ok(kube::Api::namespaced(client, &t.namespace))
    }
}

/// Parameters of writes other than server-side apply, recorded under Keelson's manager.
/// Merge-patches object `name` and waits until the watch cache shows the result; `false` when
/// the object is gone (which a caller that only labels or stamps takes as done).
async fn patch_settled<K>(
    ns: &Namespace,
    cache: &kube::runtime::reflector::Store<K>,
    name: &str,
    patch: &serde_json::Value,
    what: &str,
) -> Result<bool, ProviderError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + 'static,
{
    let (api, pp) = (ns.api::<K>(), update_params());
    let patch = Patch::Merge(patch);
    match retry(|| api.patch(name, &pp, &patch)).await {
        Ok(patched) => {
            let version = patched.meta().resource_version.clone();
            ns.settle(cache, name, at_version(version.as_deref())).await;
            Ok(true)
        }
        Err(e) if not_found(&e) => Ok(false),
        Err(e) => Err(failed(what, &e)),
    }
}

fn update_params() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    }
}

#[async_trait]
impl Provider for KubernetesProvider {
    fn capabilities(&self) -> Capabilities {
        // A Service selects pods: shares move by whole pods. Observation reads watch caches,
        // so gates may look often.
        Capabilities {
            traffic: TrafficPrecision::Instances,
            own_lease: true,
            poll: Duration::from_millis(100),
            batch: usize::MAX,
        }
    }

    fn traffic_url(
        &self,
        target: &TargetRef,
        cluster: &crate::model::DesiredCluster,
    ) -> Option<String> {
        // The Service's in-cluster name: checks reach it when Keelson runs in the cluster.
        let ns = &target.target.kubernetes.as_ref()?.namespace;
        let port = objects::service_port(cluster)?;
        Some(format!("http://{}.{ns}.svc:{port}", cluster.id.name))
    }

    async fn observe(&self, target: &TargetRef) -> Result<Vec<ObservedCluster>, ProviderError> {
        let ns = self.target_namespace(target).await?;
        Ok(objects::observe(
            &target.environment,
            &target.target.name,
            &ns.replica_sets.state(),
            &ns.pods.state(),
            &ns.services.state(),
        ))
    }

    async fn apply(
        &self,
        target: &TargetRef,
        cluster: &ClusterId,
        op: &ProviderOp,
        stamp: &Stamp,
    ) -> Result<(), ProviderError> {
        let ns = self.target_namespace(target).await?;
        self.act(&ns, cluster, op).await?;
        if matches!(op, Op::Destroy { .. }) {
            return Ok(());
        }
        // The operation took effect: a stamp that could not be written is said, not taken
        // for the operation's failure (which would undo it).
        if let Err(e) = Self::stamp(&ns, cluster, &op.sequences(), stamp).await {
            tracing::warn!(%cluster, "{}", e.chain());
        }
        Ok(())
    }

    async fn acquire_lease(
        &self,
        target: &TargetRef,
        cluster: &ClusterId,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseOutcome, ProviderError> {
        let api = self.lease_api(target).await?;
        let name = lease::name(cluster);
        match lease::acquire(&api, cluster, holder, ttl, crate::clock::now()).await {
            Ok(LeaseOutcome::Held { holder, until }) => Ok(LeaseOutcome::Held {
                holder: format!("{holder} (Lease {}/{name})", api_namespace(target)),
                until,
            }),
            Ok(o) => Ok(o),
            Err(e) => Err(failed(&format!("take Lease {name}"), &e)),
        }
    }

    async fn renew_lease(
        &self,
        target: &TargetRef,
        cluster: &ClusterId,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, ProviderError> {
        let api = self.lease_api(target).await?;
        lease::renew(&api, cluster, holder, ttl, crate::clock::now())
            .await
            .map_err(|e| failed(&format!("renew Lease {}", lease::name(cluster)), &e))
    }

    async fn release_lease(
        &self,
        target: &TargetRef,
        cluster: &ClusterId,
        holder: &str,
    ) -> Result<(), ProviderError> {
        let api = self.lease_api(target).await?;
        lease::release(&api, cluster, holder)
            .await
            .map_err(|e| failed(&format!("release Lease {}", lease::name(cluster)), &e))
    }
}

fn api_namespace(target: &TargetRef) -> &str {
    target
        .target
        .kubernetes
        .as_ref()
        .map_or("", |k| k.namespace.as_str())
}
