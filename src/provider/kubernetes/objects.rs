//! Keelson's model in Kubernetes objects, both ways: a server group as a ReplicaSet, a cluster's
//! traffic as a Service selecting enabled pods, and cached objects back into observed clusters.
//! Pure: no client, no clock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, Pod, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::{
    ClusterId, ClusterName, DesiredCluster, Instance, InstanceHealth, ObservedCluster, Sequence,
    ServerGroup, ServerGroupName, SpecHash, labels,
};
use crate::spec::{AppName, EnvName, TargetName};

/// Labels and annotations Keelson adds on Kubernetes, besides the identity labels.
pub mod keys {
    /// The target, so two targets sharing a namespace never see each other's groups.
    pub const TARGET: &str = "keelson.io/target";
    /// On pods: `enabled` puts a pod behind the cluster's Service. On ReplicaSets (annotation):
    /// the group's traffic intent.
    pub const TRAFFIC: &str = "keelson.io/traffic";
    /// The spec hash: an annotation on the ReplicaSet, a label on its pods (a rolling update
    /// replaces the pods whose label differs).
    pub const SPEC_HASH: &str = "keelson.io/spec-hash";
    /// The artifact version (annotation).
    pub const VERSION: &str = "keelson.io/version";
    /// The group's traffic weight among the enabled groups, 0..=100 (annotation).
    pub const WEIGHT: &str = "keelson.io/weight";
    /// The Service port (annotation on the ReplicaSet, so the Service can be rebuilt from live
    /// state alone).
    pub const SERVICE_PORT: &str = "keelson.io/service-port";
    /// The version, spec hash and pod template before the last update in place (annotation,
    /// JSON), so the update can be reverted.
    pub const PREVIOUS: &str = "keelson.io/previous";
}

/// The field manager of every write.
pub const MANAGER: &str = "keelson";
/// Selects everything Keelson manages; the reflectors watch only this.
pub const MANAGED: &str = "app.kubernetes.io/managed-by=keelson";
/// The pod label value that puts a pod in traffic.
pub const ENABLED: &str = "enabled";
/// The pod label value that keeps a pod out of traffic.
pub const DISABLED: &str = "disabled";
/// The container's name in every pod.
pub const CONTAINER: &str = "app";

/// A group's traffic intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    /// In traffic.
    pub enabled: bool,
    /// Share among the enabled groups, 0..=100.
    pub weight: u8,
}

impl Traffic {
    /// Whether every pod of the group takes traffic (enabled at full weight).
    pub fn all_pods(self) -> bool {
        self.enabled && self.weight >= 100
    }

    fn label(self) -> &'static str {
        if self.all_pods() { ENABLED } else { DISABLED }
    }
}

/// The labels that pick one server group's pods: its selector (immutable once created).
pub fn group_selector(id: &ClusterId, seq: Sequence) -> BTreeMap<String, String> {
    let mut l = cluster_selector(id);
    l.insert(labels::SEQUENCE.into(), seq.get().to_string());
    l
}

/// The labels that pick every object of one cluster on one target.
pub fn cluster_selector(id: &ClusterId) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::CLUSTER.to_string(), id.name.to_string()),
        (labels::ENVIRONMENT.to_string(), id.environment.to_string()),
        (keys::TARGET.to_string(), id.target.to_string()),
    ])
}

/// The labels of objects that belong to a cluster rather than to one server group (Lease).
pub fn label_map(id: &ClusterId) -> BTreeMap<String, String> {
    let mut l = cluster_selector(id);
    l.insert(labels::MANAGED_BY.into(), MANAGER.into());
    l
}

/// A label selector string for a label map (`a=b,c=d`).
pub fn selector_string(l: &BTreeMap<String, String>) -> String {
    let mut s = String::from(MANAGED);
    for (k, v) in l {
        s.push_str(&format!(",{k}={v}"));
    }
    s
}

fn identity(cluster: &DesiredCluster) -> BTreeMap<String, String> {
    let mut l = cluster.labels.clone();
    l.insert(labels::MANAGED_BY.into(), MANAGER.into());
    l.insert(keys::TARGET.into(), cluster.id.target.to_string());
    l
}

/// The image a cluster's pods run: `artifact.image:artifact.version`.
pub fn image(cluster: &DesiredCluster) -> Option<String> {
    cluster
        .image
        .as_ref()
        .map(|i| format!("{i}:{}", cluster.version))
}

/// The port the Service listens on: the traffic port, else the container port.
pub fn service_port(cluster: &DesiredCluster) -> Option<u16> {
    let container = cluster.kubernetes.as_ref()?.container_port;
    Some(cluster.traffic_port.unwrap_or(container))
}

/// The ReplicaSet of server group `seq`, as Keelson applies it.
pub fn replica_set(
    cluster: &DesiredCluster,
    seq: Sequence,
    replicas: u32,
    traffic: Traffic,
) -> Result<ReplicaSet, String> {
    let k = cluster.kubernetes.as_ref().ok_or_else(|| {
        format!(
            "{} runs on Kubernetes but its application has no `kubernetes` section",
            cluster.id
        )
    })?;
    let image = image(cluster).ok_or_else(|| {
        format!(
            "{} runs on Kubernetes but its application has no `artifact.image`",
            cluster.id
        )
    })?;
    let mut meta_labels = identity(cluster);
    meta_labels.insert(labels::SEQUENCE.into(), seq.get().to_string());
    let mut pod_labels = meta_labels.clone();
    pod_labels.insert(keys::SPEC_HASH.into(), cluster.spec_hash.to_string());
    pod_labels.insert(keys::TRAFFIC.into(), traffic.label().into());
    let mut annotations = BTreeMap::from([
        (keys::VERSION.to_string(), cluster.version.clone()),
        (keys::SPEC_HASH.to_string(), cluster.spec_hash.to_string()),
        (
            keys::TRAFFIC.to_string(),
            traffic_word(traffic.enabled).into(),
        ),
        (keys::WEIGHT.to_string(), traffic.weight.to_string()),
    ]);
    if let Some(p) = service_port(cluster) {
        annotations.insert(keys::SERVICE_PORT.into(), p.to_string());
    }
    let probe = cluster.health.http.as_ref().map(|h| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(h.path.clone()),
            port: IntOrString::Int(i32::from(k.container_port)),
            ..Default::default()
        }),
        period_seconds: Some(seconds(h.interval.to_std())),
        timeout_seconds: Some(seconds(h.timeout.to_std())),
        ..Default::default()
    });
    let quantities = |m: &BTreeMap<String, String>| {
        (!m.is_empty()).then(|| {
            m.iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                .collect()
        })
    };
    let container = Container {
        name: CONTAINER.into(),
        image: Some(image),
        command: (!k.command.is_empty()).then(|| k.command.clone()),
        args: (!k.args.is_empty()).then(|| k.args.clone()),
        env: (!cluster.workload.env.is_empty()).then(|| {
            cluster
                .workload
                .env
                .iter()
                .map(|(n, v)| EnvVar {
                    name: n.clone(),
                    value: Some(v.clone()),
                    ..Default::default()
                })
                .collect()
        }),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(k.container_port),
            ..Default::default()
        }]),
        readiness_probe: probe,
        resources: k.resources.as_ref().map(|r| ResourceRequirements {
            requests: quantities(&r.requests),
            limits: quantities(&r.limits),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(ReplicaSet {
        metadata: ObjectMeta {
            name: Some(ServerGroupName::new(cluster.name(), seq).to_string()),
            labels: Some(meta_labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
            min_ready_seconds: None,
            selector: LabelSelector {
                match_labels: Some(group_selector(&cluster.id, seq)),
                ..Default::default()
            },
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    service_account_name: k.service_account_name.clone(),
                    ..Default::default()
                }),
            }),
        }),
        status: None,
    })
}

fn seconds(d: std::time::Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

fn traffic_word(enabled: bool) -> &'static str {
    if enabled { ENABLED } else { DISABLED }
}

/// A group's traffic intent as its ReplicaSet records it.
pub fn traffic_of(rs: &ReplicaSet) -> Traffic {
    let a = rs.metadata.annotations.as_ref();
    let enabled = a.and_then(|a| a.get(keys::TRAFFIC)).map(String::as_str) == Some(ENABLED);
    let weight = a
        .and_then(|a| a.get(keys::WEIGHT))
        .and_then(|w| w.parse::<u8>().ok())
        .unwrap_or(if enabled { 100 } else { 0 })
        .min(100);
    Traffic { enabled, weight }
}

/// A ReplicaSet's desired pod count (1 when unset, as the API defaults it).
pub fn replicas(rs: &ReplicaSet) -> u32 {
    rs.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .map_or(1, |r| u32::try_from(r).unwrap_or(0))
}

/// The merge patch that records a group's traffic intent on its ReplicaSet, including the label
/// its future pods start with.
pub fn traffic_patch(t: Traffic) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"annotations": {
            keys::TRAFFIC: traffic_word(t.enabled),
            keys::WEIGHT: t.weight.to_string(),
        }},
        "spec": {"template": {"metadata": {"labels": {keys::TRAFFIC: t.label()}}}},
    })
}

/// The holder's stamp a ReplicaSet carries (annotation `keelson.io/epoch`), if any.
pub fn stamp_of(rs: &ReplicaSet) -> Option<&str> {
    annotation(&rs.metadata, labels::EPOCH)
}

/// The merge patch that writes a holder's stamp on a ReplicaSet.
pub fn stamp_patch(value: &str) -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": {labels::EPOCH: value}}})
}

/// The merge patch that puts a pod in or out of traffic.
pub fn pod_traffic_patch(enabled: bool) -> serde_json::Value {
    serde_json::json!({"metadata": {"labels": {keys::TRAFFIC: traffic_word(enabled)}}})
}

/// The cluster's Service, built from one of its ReplicaSets so that live state alone is enough:
/// it selects the cluster's pods labelled `keelson.io/traffic: enabled`.
pub fn service_for(rs: &ReplicaSet) -> Option<Service> {
    let l = rs.metadata.labels.as_ref()?;
    let name = l.get(labels::CLUSTER)?;
    let container_port = rs
        .spec
        .as_ref()?
        .template
        .as_ref()?
        .spec
        .as_ref()?
        .containers
        .first()?
        .ports
        .as_ref()?
        .first()?
        .container_port;
    let port = rs
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(keys::SERVICE_PORT))
        .and_then(|p| p.parse::<i32>().ok())
        .unwrap_or(container_port);
    let meta_labels: BTreeMap<String, String> = l
        .iter()
        .filter(|(k, _)| k.as_str() != labels::SEQUENCE)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut selector: BTreeMap<String, String> =
        [labels::CLUSTER, labels::ENVIRONMENT, keys::TARGET]
            .iter()
            .filter_map(|k| l.get(*k).map(|v| ((*k).to_string(), v.clone())))
            .collect();
    selector.insert(keys::TRAFFIC.into(), ENABLED.into());
    Some(Service {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(meta_labels),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                target_port: Some(IntOrString::Int(container_port)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
}

/// Whether a pod passes its readiness check.
pub fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a pod is on its way out.
pub fn terminating(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// Whether a pod's label puts it in traffic.
pub fn pod_enabled(p: &Pod) -> bool {
    label(&p.metadata, keys::TRAFFIC) == Some(ENABLED)
}

/// A label's value.
pub fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

/// The uid of a pod's controlling owner.
pub fn owner_uid(p: &Pod) -> Option<&str> {
    p.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

fn health(p: &Pod) -> (InstanceHealth, Option<String>) {
    if ready(p) {
        return (InstanceHealth::Healthy, None);
    }
    let status = p.status.as_ref();
    if status.and_then(|s| s.phase.as_deref()) == Some("Failed") {
        let why = status
            .and_then(|s| s.message.clone().or_else(|| s.reason.clone()))
            .unwrap_or_else(|| "pod failed".into());
        return (InstanceHealth::Unhealthy, Some(why));
    }
    let waiting = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone());
    match waiting {
        Some(r)
            if matches!(
                r.as_str(),
                "CrashLoopBackOff"
                    | "ErrImagePull"
                    | "ImagePullBackOff"
                    | "InvalidImageName"
                    | "CreateContainerConfigError"
                    | "CreateContainerError"
            ) =>
        {
            (InstanceHealth::Unhealthy, Some(r))
        }
        _ => (InstanceHealth::Starting, None),
    }
}

/// The clusters of one target, from the cached ReplicaSets, pods and Services of its namespace.
///
/// A group's traffic is its recorded intent, checked against the live labels where the intent
/// is unambiguous: a group meant to take all traffic whose pods are not all labelled enabled,
/// or whose Service is gone, is reported disabled; a group meant to be out of traffic with a pod
/// labelled enabled is reported enabled. Either way the planner sees drift and repairs it.
/// ReplicaSets being deleted are left out.
pub fn observe(
    environment: &EnvName,
    target: &TargetName,
    replica_sets: &[Arc<ReplicaSet>],
    pods: &[Arc<Pod>],
    services: &[Arc<Service>],
) -> Vec<ObservedCluster> {
    let ours = |m: &ObjectMeta| {
        label(m, labels::ENVIRONMENT) == Some(environment.as_str())
            && label(m, keys::TARGET) == Some(target.as_str())
    };
    // Pods are reached only through their ReplicaSet's uid, so only the ReplicaSets' labels
    // need checking (most of the time here goes to label lookups and allocations).
    let mut by_owner: HashMap<&str, Vec<&Pod>> = HashMap::with_capacity(replica_sets.len());
    for p in pods {
        if terminating(&p.metadata) {
            continue;
        }
        if let Some(uid) = owner_uid(p) {
            by_owner.entry(uid).or_default().push(p);
        }
    }
    let with_service: HashSet<&str> = services
        .iter()
        .filter(|s| ours(&s.metadata))
        .filter_map(|s| label(&s.metadata, labels::CLUSTER))
        .collect();
    // Keyed by name alone: environment and target are the same for all of them.
    let mut clusters: BTreeMap<&str, ObservedCluster> = BTreeMap::new();
    for rs in replica_sets {
        let m = &rs.metadata;
        if terminating(m) || !ours(m) {
            continue;
        }
        let (Some(name), Some(seq)) = (
            label(m, labels::CLUSTER),
            label(m, labels::SEQUENCE)
                .and_then(|s| s.parse::<u32>().ok())
                .and_then(|s| Sequence::new(s).ok()),
        ) else {
            continue;
        };
        if !clusters.contains_key(name) {
            // Labels anyone could write: a name Keelson would not make is not Keelson's.
            let (Some(app), Ok(cluster_name)) = (
                label(m, labels::APP).and_then(|a| AppName::new(a).ok()),
                ClusterName::parse(name),
            ) else {
                continue;
            };
            let id = ClusterId {
                environment: environment.clone(),
                target: target.clone(),
                name: cluster_name,
            };
            clusters.insert(
                name,
                ObservedCluster {
                    id,
                    app,
                    server_groups: Vec::new(),
                },
            );
        }
        let mut mine: Vec<&Pod> = m
            .uid
            .as_deref()
            .and_then(|u| by_owner.remove(u))
            .unwrap_or_default();
        mine.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let intent = traffic_of(rs);
        let labelled = mine.iter().filter(|p| pod_enabled(p)).count();
        let service = with_service.contains(name);
        let enabled = match (intent.enabled, intent.all_pods()) {
            (true, true) => service && labelled == mine.len(),
            (true, false) => service,
            (false, _) => labelled > 0,
        };
        let weight = match (enabled, intent.enabled) {
            (false, _) => 0,
            (true, true) => intent.weight,
            (true, false) => 100,
        };
        let instances = mine
            .iter()
            .map(|p| {
                let (health, note) = health(p);
                Instance {
                    id: p.metadata.name.clone().unwrap_or_default(),
                    spec_hash: SpecHash::from_observed(
                        label(&p.metadata, keys::SPEC_HASH).unwrap_or_default(),
                    ),
                    health,
                    note,
                }
            })
            .collect();
        let Some(cluster) = clusters.get_mut(name) else {
            continue;
        };
        cluster.server_groups.push(ServerGroup {
            name: ServerGroupName::new(&cluster.id.name, seq),
            sequence: seq,
            version: annotation(m, keys::VERSION).unwrap_or_default().to_string(),
            spec_hash: SpecHash::from_observed(annotation(m, keys::SPEC_HASH).unwrap_or_default()),
            capacity: replicas(rs),
            enabled,
            weight,
            instances,
            // The labels, and the holder's stamp, which only an annotation can hold.
            labels: {
                let mut l = m.labels.clone().unwrap_or_default();
                if let Some(v) = stamp_of(rs) {
                    l.insert(labels::EPOCH.into(), v.to_string());
                }
                l
            },
            previous: previous(rs).map(|p| p.spec),
        });
    }
    clusters
        .into_values()
        .map(|mut c| {
            c.server_groups.sort_by_key(|g| g.sequence);
            c
        })
        .collect()
}

/// What a ReplicaSet ran before its last update in place.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Previous {
    /// Its version and spec hash.
    #[serde(flatten)]
    pub spec: crate::actuation::SpecRef,
    /// Its pod template.
    pub template: PodTemplateSpec,
}

/// The spec a ReplicaSet had before its last update in place, if it keeps one.
pub fn previous(rs: &ReplicaSet) -> Option<Previous> {
    serde_json::from_str(annotation(&rs.metadata, keys::PREVIOUS)?).ok()
}

/// What a ReplicaSet runs now, as [`Previous`] would keep it.
pub fn current(rs: &ReplicaSet) -> Option<Previous> {
    Some(Previous {
        spec: crate::actuation::SpecRef {
            version: annotation(&rs.metadata, keys::VERSION)?.to_string(),
            spec_hash: SpecHash::from_observed(annotation(&rs.metadata, keys::SPEC_HASH)?),
        },
        template: rs.spec.as_ref()?.template.clone()?,
    })
}

/// `rs` running `to` (its template, version and spec hash), keeping what it ran as previous.
/// Only what Keelson applies is kept, so the result can be applied server-side as it is.
pub fn swapped(rs: &ReplicaSet, to: &Previous) -> Option<ReplicaSet> {
    let now = current(rs)?;
    let mut annotations = rs.metadata.annotations.clone().unwrap_or_default();
    // The stamp is written on its own after every operation: applying the one read here
    // could put an older holder's back over a newer one.
    annotations.remove(labels::EPOCH);
    annotations.insert(keys::VERSION.into(), to.spec.version.clone());
    annotations.insert(keys::SPEC_HASH.into(), to.spec.spec_hash.to_string());
    annotations.insert(keys::PREVIOUS.into(), serde_json::to_string(&now).ok()?);
    let spec = rs.spec.as_ref()?;
    Some(ReplicaSet {
        metadata: ObjectMeta {
            name: rs.metadata.name.clone(),
            labels: rs.metadata.labels.clone(),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: spec.replicas,
            min_ready_seconds: None,
            selector: spec.selector.clone(),
            template: Some(to.template.clone()),
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_in_place_keeps_what_it_replaced_and_swaps_back() {
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web-v000".into()),
                annotations: Some(BTreeMap::from([
                    (keys::VERSION.to_string(), "1.0.0".to_string()),
                    (keys::SPEC_HASH.to_string(), "h1".to_string()),
                ])),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(3),
                template: Some(PodTemplateSpec::default()),
                ..Default::default()
            }),
            status: None,
        };
        let old = current(&rs).unwrap_or_else(|| unreachable!());
        let new = Previous {
            spec: crate::actuation::SpecRef {
                version: "2.0.0".into(),
                spec_hash: SpecHash::from_observed("h2"),
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(BTreeMap::from([("v".to_string(), "2".to_string())])),
                    ..Default::default()
                }),
                spec: None,
            },
        };
        rs = swapped(&rs, &new).unwrap_or_else(|| unreachable!());
        assert_eq!(current(&rs), Some(new.clone()));
        assert_eq!(previous(&rs), Some(old.clone()));
        rs = swapped(&rs, &old).unwrap_or_else(|| unreachable!());
        assert_eq!(current(&rs), Some(old));
        assert_eq!(previous(&rs), Some(new));
    }
}
