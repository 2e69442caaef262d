//! Compilation: validated specs to the desired state of every cluster.
//!
//! Pure and deterministic: the same specs give the same `DesiredState`, byte for byte.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::load::Node;
use crate::model::{
    Artifact, CapacityRange, ClusterId, ClusterName, DesiredCluster, DesiredEnvironment,
    DesiredState, Ec2Instance, Health, HttpCheck, SourceRef, SpecHash, SpecKey, WorkloadSpec,
    labels,
};
use crate::spec::{Duration, Strategy};
use crate::validate::Specs;

/// Default time a new server group has to become healthy.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time between health probes.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Default time one probe may take.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Compiles specs that passed validation. Clusters whose environment or target is missing are
/// skipped (validation has reported them).
pub fn compile(specs: &Specs) -> DesiredState {
    compile_cached(specs, &mut Cache::default())
}

/// The compiled clusters of application documents, kept across revisions (the daemon keeps
/// one) so that a new revision compiles only the applications whose document changed.
#[derive(Debug, Default)]
pub struct Cache {
    /// The key secret values are sealed under in spec hashes.
    key: SpecKey,
    /// The environment documents the entries were compiled against; any change empties it.
    environments: Vec<SameDocument>,
    /// By application document: the clusters compiled from it.
    applications: HashMap<SameDocument, Arc<[Arc<DesiredCluster>]>>,
}

impl Cache {
    /// An empty cache whose spec hashes seal secrets under `key`.
    pub fn keyed(key: SpecKey) -> Self {
        Self {
            key,
            ..Self::default()
        }
    }
}

/// A parsed document compared by identity: parsed documents are never changed, and holding
/// the `Arc` keeps its address from being reused while the entry lives.
#[derive(Debug, Clone)]
struct SameDocument(Arc<Node>);

impl PartialEq for SameDocument {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SameDocument {}

impl std::hash::Hash for SameDocument {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).hash(state);
    }
}

/// Like [`compile`], reusing `cache` for application documents seen in the last revision.
/// Documents are immutable once parsed, so the same document means the same clusters.
pub fn compile_cached(specs: &Specs, cache: &mut Cache) -> DesiredState {
    let mut state = DesiredState::default();
    for e in &specs.environments {
        let s = &e.spec.spec;
        state.environments.insert(
            e.spec.metadata.name.clone(),
            DesiredEnvironment {
                name: e.spec.metadata.name.clone(),
                depends_on: s.depends_on.clone(),
                targets: s.targets.clone(),
                windows: s.constraints.windows.clone(),
                approval: s.constraints.approval.approval(),
                approvers: s.constraints.approval.approvers().to_vec(),
                flapping: s.constraints.flapping,
                prune: s.prune,
                suspended: s.suspended,
                analysis: s.analysis.clone(),
                notifications: s.notifications.clone(),
            },
        );
    }
    let environment_docs: Vec<SameDocument> = specs
        .environments
        .iter()
        .map(|e| SameDocument(Arc::clone(&e.doc.root)))
        .collect();
    if cache.environments != environment_docs {
        cache.applications.clear();
        cache.environments = environment_docs;
    }
    let env_defaults: BTreeMap<_, _> = specs
        .environments
        .iter()
        .map(|e| {
            (
                e.spec.metadata.name.clone(),
                e.spec.spec.defaults.strategy.clone(),
            )
        })
        .collect();
    let key =
        |a: &crate::validate::Spec<crate::spec::Application>| SameDocument(Arc::clone(&a.doc.root));
    let missing: Vec<&crate::validate::Spec<crate::spec::Application>> = specs
        .applications
        .iter()
        .filter(|a| !cache.applications.contains_key(&key(a)))
        .collect();
    // Applications compile independently: split them over the cores.
    let environments = &state.environments;
    let secret_key = &cache.key;
    let compiled = crate::par::map_chunks(&missing, |apps| {
        apps.iter()
            .map(|a| {
                compile_application(a, environments, &env_defaults, secret_key)
                    .into_iter()
                    .map(Arc::new)
                    .collect::<Arc<[_]>>()
            })
            .collect()
    });
    for (a, clusters) in missing.iter().zip(compiled) {
        cache.applications.insert(key(a), clusters);
    }
    let present: HashSet<SameDocument> = specs.applications.iter().map(key).collect();
    cache.applications.retain(|k, _| present.contains(k));
    for a in &specs.applications {
        if let Some(clusters) = cache.applications.get(&key(a)) {
            for c in clusters.iter() {
                state.clusters.insert(c.id.clone(), Arc::clone(c));
            }
        }
    }
    state
}

/// The clusters of one application.
fn compile_application(
    a: &crate::validate::Spec<crate::spec::Application>,
    environments: &BTreeMap<crate::spec::EnvName, DesiredEnvironment>,
    env_defaults: &BTreeMap<crate::spec::EnvName, Option<Strategy>>,
    secret_key: &SpecKey,
) -> Vec<DesiredCluster> {
    let mut out = Vec::new();
    {
        let app = &a.spec;
        let spec = &app.spec;
        // Where each cluster is declared, for `source`: looked up once per application.
        let clusters_node = a.doc.root.resolve_pointer("/spec/clusters").0;
        for (i, c) in spec.clusters.iter().enumerate() {
            let Some(env) = environments.get(&c.environment) else {
                continue;
            };
            let Some(target) = env.targets.iter().find(|t| t.name == c.target) else {
                continue;
            };
            let name =
                ClusterName::compose(&app.metadata.name, c.stack.as_deref(), c.detail.as_deref());
            let id = ClusterId {
                environment: c.environment.clone(),
                target: c.target.clone(),
                name: name.clone(),
            };
            let mut env_vars = spec.workload.env.clone();
            env_vars.extend(c.env.clone());
            let workload = WorkloadSpec {
                command: spec.workload.command.clone(),
                env: env_vars,
                secret_env: spec.workload.secret_env.clone(),
            };
            let health = Health {
                http: spec.health.http.as_ref().map(|h| HttpCheck {
                    path: h.path.clone(),
                    interval: h.interval.unwrap_or(DEFAULT_PROBE_INTERVAL),
                    timeout: h.timeout.unwrap_or(DEFAULT_PROBE_TIMEOUT),
                }),
                timeout: spec.health.timeout.unwrap_or(DEFAULT_HEALTH_TIMEOUT),
            };
            let strategy = c
                .strategy
                .clone()
                .or_else(|| env_defaults.get(&c.environment).cloned().flatten())
                .unwrap_or_default();
            let capacity = CapacityRange {
                min: c.capacity.min.unwrap_or(c.capacity.desired),
                max: c.capacity.max.unwrap_or(c.capacity.desired),
                desired: c.capacity.desired,
            };
            let mut lbl = BTreeMap::new();
            lbl.insert(labels::APP.to_string(), app.metadata.name.to_string());
            lbl.insert(labels::CLUSTER.to_string(), name.to_string());
            lbl.insert(labels::ENVIRONMENT.to_string(), c.environment.to_string());
            if let Some(s) = &c.stack {
                lbl.insert(labels::STACK.to_string(), s.clone());
            }
            if let Some(d) = &c.detail {
                lbl.insert(labels::DETAIL.to_string(), d.clone());
            }
            let ec2 = ec2_instance(spec, &health);
            let route = c
                .traffic
                .as_ref()
                .filter(|t| t.host.is_some() || t.path.is_some())
                .map(|t| crate::model::Route {
                    host: t.host.clone(),
                    path: t.path.clone(),
                });
            let sealed = Sealed {
                workload: workload.sealed(secret_key),
                health: &health,
                kubernetes: spec.kubernetes.as_ref(),
                ec2: ec2.as_ref().map(|e| Ec2Instance {
                    user_data: e.user_data.as_ref().map(|u| secret_key.seal("userData", u)),
                    ..e.clone()
                }),
                route: route.as_ref().filter(|_| ec2.is_some()),
            };
            let spec_hash = sealed.spec_hash(&spec.artifact.version, &spec.artifact.image);
            let retarget = crate::model::Retarget {
                rest: sealed.rest(secret_key),
                user_data: spec.ec2.as_ref().and_then(|e| e.user_data.clone()),
            };
            let line = match &clusters_node.kind {
                crate::load::NodeKind::Seq(items) => items.get(i).unwrap_or(clusters_node),
                _ => clusters_node,
            }
            .pos
            .line;
            let mut cluster = DesiredCluster {
                id: id.clone(),
                app: app.metadata.name.clone(),
                stack: c.stack.clone(),
                detail: c.detail.clone(),
                target: target.clone(),
                labels: lbl,
                capacity,
                version: spec.artifact.version.clone(),
                image: spec.artifact.image.clone(),
                workload,
                health,
                kubernetes: spec.kubernetes.clone(),
                ec2,
                traffic_port: c.traffic.as_ref().and_then(|t| t.port),
                route,
                strategy,
                verify: c.verify.clone().unwrap_or_else(|| spec.verify.clone()),
                prometheus: env.analysis.prometheus.clone(),
                suspended_by: if c.suspended {
                    Some("cluster".into())
                } else if spec.suspended {
                    Some("application".into())
                } else if env.suspended {
                    Some("environment".into())
                } else {
                    None
                },
                spec_hash,
                hash: SpecHash::from_observed(""),
                source: SourceRef {
                    file: a.doc.file.clone(),
                    line,
                },
                retarget,
            };
            cluster.hash = hash_without_source(&cluster);
            out.push(cluster);
        }
    }
    out
}

/// The immutable part of a cluster's spec besides its artifact, secrets sealed under the
/// installation's key: the hash is published (plans, labels) and must not let anyone guess a
/// secret offline.
#[derive(Serialize)]
struct Sealed<'a> {
    workload: WorkloadSpec,
    health: &'a Health,
    // Left out when absent, so hashes of clusters without it stay as they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    kubernetes: Option<&'a crate::spec::KubernetesWorkload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ec2: Option<Ec2Instance>,
    // On EC2 a new route comes with a new server group (its rule follows the newest).
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a crate::model::Route>,
}

impl Sealed<'_> {
    /// The spec hash of this part with an artifact: a change needs a new server group.
    fn spec_hash(&self, version: &str, image: &Option<String>) -> SpecHash {
        #[derive(Serialize)]
        struct Immutable<'a, 'b> {
            version: &'a str,
            image: &'a Option<String>,
            #[serde(flatten)]
            rest: &'a Sealed<'b>,
        }
        SpecHash::of(&Immutable {
            version,
            image,
            rest: self,
        })
    }

    /// The hash of this part alone, the machine image and the rendered user data left out
    /// (they follow the artifact); keyed, as the spec hash is.
    fn rest(&self, key: &SpecKey) -> SpecHash {
        let ec2 = self.ec2.as_ref().map(|e| Ec2Instance {
            ami: String::new(),
            user_data: None,
            ..e.clone()
        });
        let rest = Sealed {
            workload: self.workload.clone(),
            health: self.health,
            kubernetes: self.kubernetes,
            ec2,
            route: self.route,
        };
        SpecHash::of(&(key.seal("rest", ""), &rest))
    }
}

/// The cluster moved to another artifact, everything else as Git has it: what a pin or a
/// veto's way back deploys. `known` is the spec hash this artifact had when it was live here
/// on the same rest of the spec (so its old server group is recognised and re-enabled);
/// otherwise the hash is derived from the rest and the artifact.
pub fn retarget(
    c: &DesiredCluster,
    artifact: &Artifact,
    known: Option<&SpecHash>,
) -> DesiredCluster {
    let mut out = c.clone();
    if c.artifact() == *artifact {
        return out;
    }
    out.version.clone_from(&artifact.version);
    out.image.clone_from(&artifact.image);
    if let Some(e) = out.ec2.as_mut() {
        if let Some(ami) = &artifact.ami {
            e.ami.clone_from(ami);
        }
        e.user_data = c
            .retarget
            .user_data
            .as_ref()
            .map(|u| u.replace("{version}", &artifact.version));
    }
    out.spec_hash = known
        .cloned()
        .unwrap_or_else(|| SpecHash::of(&(&c.retarget.rest, artifact)));
    out.hash = hash_without_source(&out);
    out
}

/// What an EC2 instance runs, where the application says (an image and an `ec2` section).
fn ec2_instance(spec: &crate::spec::ApplicationSpec, health: &Health) -> Option<Ec2Instance> {
    let e = spec.ec2.as_ref()?;
    Some(Ec2Instance {
        ami: spec.artifact.ami.clone()?,
        instance_type: e.instance_type.clone(),
        security_groups: e.security_groups.clone(),
        iam_instance_profile: e.iam_instance_profile.clone(),
        key_name: e.key_name.clone(),
        user_data: e
            .user_data
            .as_ref()
            .map(|u| u.replace("{version}", &spec.artifact.version)),
        port: e.port,
        health_check_path: e
            .health_check_path
            .clone()
            .or_else(|| health.http.as_ref().map(|h| h.path.clone()))
            .unwrap_or_else(|| "/".into()),
    })
}

/// The content hash of a cluster, leaving out where it is declared (moving a spec between
/// files changes nothing).
fn hash_without_source(c: &DesiredCluster) -> SpecHash {
    #[derive(Serialize)]
    struct Content<'a> {
        id: &'a ClusterId,
        target: &'a crate::model::Target,
        capacity: &'a CapacityRange,
        spec_hash: &'a SpecHash,
        traffic: Option<u16>,
        // Left out when absent, so hashes of clusters without it stay as they were.
        #[serde(skip_serializing_if = "Option::is_none")]
        route: Option<&'a crate::model::Route>,
        strategy: &'a Strategy,
        suspended: bool,
        // Left out when empty, so hashes of clusters without checks stay as they were.
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        verify: &'a [crate::spec::VerifyCheck],
    }
    SpecHash::of(&Content {
        id: &c.id,
        target: &c.target,
        capacity: &c.capacity,
        spec_hash: &c.spec_hash,
        traffic: c.traffic_port,
        route: c.route.as_ref(),
        strategy: &c.strategy,
        suspended: c.suspended_by.is_some(),
        verify: &c.verify,
    })
}

#[cfg(test)]
mod tests {
    use crate::model::SpecKey;
    use crate::source::{SourceFile, SourceSet};

    fn hash_of(env_line: &str, key: SpecKey) -> String {
        let env = "apiVersion: keelson/v1\nkind: Environment\nmetadata: {name: dev}\nspec:\n  targets: [{name: local, provider: local}]\n";
        let app = format!(
            "apiVersion: keelson/v1\nkind: Application\nmetadata: {{name: web}}\nspec:\n  artifact: {{version: \"1.0.0\"}}\n  workload:\n    command: [app]\n    env: {{{env_line}}}\n  clusters:\n    - {{environment: dev, target: local, capacity: {{desired: 1}}}}\n"
        );
        let files = SourceSet {
            files: vec![
                SourceFile {
                    path: "env.yaml".into(),
                    bytes: env.into(),
                },
                SourceFile {
                    path: "web.yaml".into(),
                    bytes: app.into_bytes(),
                },
            ],
            diagnostics: vec![],
        };
        let d = crate::pipeline::check_keyed(files, key)
            .desired
            .unwrap_or_else(|| panic!("valid specs"));
        d.clusters
            .values()
            .next()
            .map(|c| c.spec_hash.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn secrets_enter_spec_hashes_sealed_under_the_installations_key() {
        let (a, b) = (SpecKey::new([1; 32]), SpecKey::new([2; 32]));
        // Without a secret the key changes nothing.
        assert_eq!(
            hash_of("LOG: info", a.clone()),
            hash_of("LOG: info", b.clone())
        );
        // With one, the hash depends on the key: not computable without it.
        let with = "API_TOKEN: \"98765432123\"";
        assert_ne!(hash_of(with, a.clone()), hash_of(with, b.clone()));
        assert_eq!(hash_of(with, a.clone()), hash_of(with, a.clone()));
        // And a changed secret still changes the hash (it rolls out).
        assert_ne!(
            hash_of(with, a.clone()),
            hash_of("API_TOKEN: \"98765432124\"", a)
        );
    }
}
