//! The desired state: what every cluster should look like, compiled from the specs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ClusterId, ClusterName};
use crate::spec::{
    AppName, Approval, Duration, EnvName, KubernetesWorkload, PrometheusSource, ProviderKind,
    Strategy, TargetSpec, VerifyCheck, Window,
};

/// A short content hash (first 16 hex digits of SHA-256).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SpecHash(String);

impl SpecHash {
    /// Hashes the canonical JSON of `value`.
    pub fn of<T: Serialize>(value: &T) -> Self {
        // Streamed into the hasher: the same bytes as `to_vec`, without building them.
        let mut hasher = Sha256::new();
        let _ = serde_json::to_writer(&mut hasher, value);
        let digest = hasher.finalize();
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(16);
        for b in digest.iter().take(8) {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        Self(hex)
    }

    /// Wraps a hash observed on a provider.
    pub fn from_observed(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SpecHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A resolved target: its name, provider and provider settings.
pub type Target = TargetSpec;

/// Capacity with defaults filled in: `min <= desired <= max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityRange {
    /// Fewest instances.
    pub min: u32,
    /// Most instances.
    pub max: u32,
    /// Instances to run.
    pub desired: u32,
}

/// The immutable workload of a server group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// The command, `{port}` not yet replaced.
    pub command: Vec<String>,
    /// Environment variables, cluster values over application values.
    pub env: BTreeMap<String, String>,
    /// Keys of `env` whose values are secret.
    pub secret_env: Vec<String>,
}

/// An HTTP probe with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    /// The path to GET.
    pub path: String,
    /// Time between probes.
    pub interval: Duration,
    /// Time one probe may take.
    pub timeout: Duration,
}

/// Health checking with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// The HTTP probe, if any; without one an instance is healthy once running.
    pub http: Option<HttpCheck>,
    /// How long a new server group may take to become healthy.
    pub timeout: Duration,
}

/// What one cluster should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredCluster {
    /// Environment, target and name.
    pub id: ClusterId,
    /// The application.
    pub app: AppName,
    /// The stack.
    pub stack: Option<String>,
    /// The detail.
    pub detail: Option<String>,
    /// The target, resolved from the environment.
    pub target: Target,
    /// Identity labels every server group of this cluster carries.
    pub labels: BTreeMap<String, String>,
    /// Instance counts.
    pub capacity: CapacityRange,
    /// The artifact version.
    pub version: String,
    /// The container image, when there is one.
    pub image: Option<String>,
    /// What each instance runs (secret env values are masked when serialized).
    #[serde(serialize_with = "masked_workload")]
    pub workload: WorkloadSpec,
    /// Health checking.
    pub health: Health,
    /// What a pod needs, for Kubernetes targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesWorkload>,
    /// What an instance needs, for EC2 targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec2: Option<Ec2Instance>,
    /// The traffic port, if the cluster takes traffic.
    pub traffic_port: Option<u16>,
    /// The host and path a load balancer rule routes to the cluster (EC2 targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,
    /// The effective strategy.
    pub strategy: Strategy,
    /// Checks once a new version takes all traffic, before the old groups go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify: Vec<VerifyCheck>,
    /// The environment's Prometheus, for `provider: prometheus` analyses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSource>,
    /// Which spec suspends it, if any: `application`, `environment` or `cluster`.
    pub suspended_by: Option<String>,
    /// Hash of the immutable part (version, image, workload, health): a change needs a new
    /// server group.
    pub spec_hash: SpecHash,
    /// Hash of everything above: a change means the cluster needs another look.
    pub hash: SpecHash,
    /// The spec file and line that declares the cluster.
    pub source: SourceRef,
    /// What moving the cluster to another artifact needs (a pin, a veto's way back); made by
    /// the compiler, never serialized.
    #[serde(skip)]
    pub retarget: Retarget,
}

/// The artifact a cluster runs: what a pin or a veto's way back swaps, the rest of the spec
/// staying as Git has it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// The version.
    pub version: String,
    /// The container image, on Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The machine image, on EC2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami: Option<String>,
}

/// The part of a cluster's immutable spec that is not its artifact, hashed (secrets sealed),
/// and the EC2 user data before `{version}` is filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Retarget {
    /// Hash of the immutable part without the artifact.
    pub rest: SpecHash,
    /// The user data as written, `{version}` not yet replaced.
    pub user_data: Option<String>,
}

/// What an EC2 instance of a cluster runs: the launch template's content.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ec2Instance {
    /// The machine image.
    pub ami: String,
    /// The instance type.
    pub instance_type: String,
    /// Security group ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    /// The instance profile, by name or ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_instance_profile: Option<String>,
    /// The SSH key pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// User data, with `{version}` filled in. It often carries credentials, so plans, status
    /// and the API show it masked, and the spec hash seals it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "masked_text"
    )]
    pub user_data: Option<String>,
    /// The port instances serve on.
    pub port: u16,
    /// The load balancer's health check path.
    pub health_check_path: String,
}

/// The requests a load balancer rule sends to a cluster: a host, a path pattern, or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Route {
    /// The host header to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The path pattern to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A file and line in the config repository.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    /// The file, relative to the repository root.
    pub file: PathBuf,
    /// The 1-based line.
    pub line: u32,
}

/// What one environment holds besides its clusters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredEnvironment {
    /// The name.
    pub name: EnvName,
    /// Environments a version must pass first.
    pub depends_on: Vec<EnvName>,
    /// Its targets.
    pub targets: Vec<Target>,
    /// Deployment windows.
    pub windows: Vec<Window>,
    /// Whether each version needs approval.
    pub approval: Approval,
    /// Who may approve (users and `group:NAME`s); anyone when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// The flapping guard's limits.
    #[serde(
        default,
        skip_serializing_if = "crate::model::desired::default_flapping"
    )]
    pub flapping: crate::spec::Flapping,
    /// Whether orphans are destroyed.
    pub prune: bool,
    /// Suspended in the spec.
    pub suspended: bool,
    /// Where its analyses find metrics.
    #[serde(default, skip_serializing_if = "crate::model::desired::no_sources")]
    pub analysis: crate::spec::AnalysisSources,
    /// Who is told about rollouts here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<crate::spec::Notification>,
}

/// Whether the flapping guard has its default limits (left out of the JSON).
fn default_flapping(f: &crate::spec::Flapping) -> bool {
    *f == crate::spec::Flapping::default()
}

/// Whether an environment names no metrics source (left out of its JSON).
fn no_sources(a: &crate::spec::AnalysisSources) -> bool {
    a.prometheus.is_none()
}

/// Where `env` stands in a [`DesiredState::promotion_order`]; environments it does not hold
/// come last.
pub fn promotion_rank(order: &[EnvName], env: &str) -> usize {
    order
        .iter()
        .position(|e| e.as_str() == env)
        .unwrap_or(usize::MAX)
}

/// The whole desired state, ordered for deterministic output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredState {
    /// Environments by name.
    pub environments: BTreeMap<EnvName, DesiredEnvironment>,
    /// Clusters by id (serialized as a list: each cluster carries its id).
    /// Shared, so a new revision reuses the clusters of unchanged applications.
    #[serde(with = "cluster_list")]
    pub clusters: BTreeMap<ClusterId, Arc<DesiredCluster>>,
}

impl DesiredState {
    /// Environment names in promotion order: each after every environment it depends on
    /// (deepest chain first), then by name. Cycles, refused by validation, cannot hang it.
    pub fn promotion_order(&self) -> Vec<EnvName> {
        fn depth<'a>(
            name: &'a EnvName,
            envs: &'a BTreeMap<EnvName, DesiredEnvironment>,
            memo: &mut BTreeMap<&'a EnvName, usize>,
            seen: usize,
        ) -> usize {
            if let Some(&d) = memo.get(name) {
                return d;
            }
            let d = match envs.get(name) {
                Some(e) if seen <= envs.len() => e
                    .depends_on
                    .iter()
                    .map(|dep| depth(dep, envs, memo, seen + 1) + 1)
                    .max()
                    .unwrap_or(0),
                _ => 0,
            };
            memo.insert(name, d);
            d
        }
        let mut memo = BTreeMap::new();
        let mut names: Vec<(usize, &EnvName)> = self
            .environments
            .keys()
            .map(|n| (depth(n, &self.environments, &mut memo, 0), n))
            .collect();
        names.sort();
        names.into_iter().map(|(_, n)| n.clone()).collect()
    }

    /// Number of distinct applications.
    pub fn application_count(&self) -> usize {
        let mut apps: Vec<&AppName> = self.clusters.values().map(|c| &c.app).collect();
        apps.sort();
        apps.dedup();
        apps.len()
    }

    /// The providers in use.
    pub fn providers(&self) -> Vec<ProviderKind> {
        let mut p: Vec<ProviderKind> = self.clusters.values().map(|c| c.target.provider).collect();
        p.sort();
        p.dedup();
        p
    }
}

impl DesiredCluster {
    /// The cluster's name.
    pub fn name(&self) -> &ClusterName {
        &self.id.name
    }

    /// The artifact it runs.
    pub fn artifact(&self) -> Artifact {
        Artifact {
            version: self.version.clone(),
            image: self.image.clone(),
            ami: self.ec2.as_ref().map(|e| e.ami.clone()),
        }
    }
}

/// Serializes a map keyed by cluster id as the list of its values (JSON keys must be strings).
mod cluster_list {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::DesiredCluster;
    use crate::model::ClusterId;

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<ClusterId, Arc<DesiredCluster>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.values().map(|c| &**c))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<ClusterId, Arc<DesiredCluster>>, D::Error> {
        let list = Vec::<DesiredCluster>::deserialize(d)?;
        Ok(list
            .into_iter()
            .map(|c| (c.id.clone(), Arc::new(c)))
            .collect())
    }
}

/// The key under which secret values enter spec hashes: one per installation (kept in the
/// state store), so a hash published in a plan or on a label cannot be used to guess a secret
/// offline. Not `Debug`-printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SpecKey([u8; 32]);

impl std::fmt::Debug for SpecKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpecKey(..)")
    }
}

impl SpecKey {
    /// A key from its 32 bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh random key (for plans that are not kept, e.g. a pull request planned in CI).
    pub fn random() -> Self {
        let mut b = [0u8; 32];
        for chunk in b.chunks_mut(8) {
            chunk.copy_from_slice(&fastrand::u64(..).to_le_bytes());
        }
        Self(b)
    }

    /// A key for another purpose, derived from this one (HMAC-SHA256 of the purpose): every
    /// replica of an installation derives the same, and it tells nothing about this key.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        use hmac::Mac;
        let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(&self.0) else {
            return [0; 32];
        };
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// What stands for a secret value in a hash: HMAC-SHA256 of the variable's name and value.
    pub fn seal(&self, name: &str, value: &str) -> String {
        use hmac::Mac;
        let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(&self.0) else {
            return MASK.to_string();
        };
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("sealed:{hex}")
    }
}

/// The mask printed in place of a secret value.
pub const MASK: &str = "********";

/// Words in an environment variable's name that make its value secret.
const SECRET_WORDS: [&str; 11] = [
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "TOKEN",
    "PRIVATE_KEY",
    "APIKEY",
    "API_KEY",
    "ACCESS_KEY",
    "CREDENTIAL",
    "AUTH",
];

/// Whether an environment variable is secret: its key is listed in `listed` (`secretEnv`) or
/// named like a secret (`API_TOKEN`, `DB_PASSWORD`, `APIKEY`...), or its value carries
/// credentials (`postgres://user:pass@host/db`). The one rule for plans, comments, diagnostics,
/// logs and the status API.
pub fn secret_env(key: &str, value: Option<&str>, listed: &[String]) -> bool {
    let k = key.to_ascii_uppercase();
    listed.iter().any(|s| s == key)
        || SECRET_WORDS.iter().any(|w| k.contains(w))
        || value.is_some_and(has_credentials)
}

/// Whether a value holds a URL with a password (`scheme://user:password@host`).
pub fn has_credentials(value: &str) -> bool {
    value.split("://").skip(1).any(|rest| {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        authority
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    })
}

impl WorkloadSpec {
    /// Whether an env key holds a secret (see [`secret_env`]).
    pub fn is_secret(&self, key: &str) -> bool {
        secret_env(key, self.env.get(key).map(String::as_str), &self.secret_env)
    }

    /// A copy with secret values sealed under `key` (what spec hashes are computed over).
    pub fn sealed(&self, key: &SpecKey) -> Self {
        let mut w = self.clone();
        for (k, v) in &mut w.env {
            if self.is_secret(k) {
                *v = key.seal(k, v);
            }
        }
        w
    }

    /// A copy with secret values replaced by [`MASK`].
    pub fn masked(&self) -> Self {
        let mut w = self.clone();
        for (k, v) in &mut w.env {
            if self.is_secret(k) {
                *v = MASK.to_string();
            }
        }
        w
    }
}

/// Serializes a workload with its secrets masked: plans are printed and saved to files.
fn masked_text<S: serde::Serializer>(t: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    t.as_ref().map(|_| MASK).serialize(s)
}

fn masked_workload<S: serde::Serializer>(w: &WorkloadSpec, s: S) -> Result<S::Ok, S::Error> {
    w.masked().serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str, deps: &[&str]) -> (EnvName, DesiredEnvironment) {
        let n = EnvName::new(name.to_string()).unwrap();
        let e = DesiredEnvironment {
            name: n.clone(),
            depends_on: deps
                .iter()
                .map(|d| EnvName::new((*d).to_string()).unwrap())
                .collect(),
            targets: Vec::new(),
            windows: Vec::new(),
            approval: crate::spec::Approval::None,
            approvers: Vec::new(),
            flapping: Default::default(),
            notifications: Vec::new(),
            prune: false,
            suspended: false,
            analysis: Default::default(),
        };
        (n, e)
    }

    #[test]
    fn secrets_by_name_by_list_and_by_credentials_in_urls() {
        for k in [
            "API_TOKEN",
            "db_password",
            "APIKEY",
            "AWS_SECRET_ACCESS_KEY",
            "BASIC_AUTH",
        ] {
            assert!(secret_env(k, None, &[]), "{k}");
        }
        assert!(!secret_env("LOG_LEVEL", Some("debug"), &[]));
        assert!(secret_env("LOG_LEVEL", None, &["LOG_LEVEL".into()]));
        assert!(secret_env(
            "DATABASE_URL",
            Some("postgres://app:hunter2@db:5432/shop"),
            &[]
        ));
        assert!(!secret_env(
            "UPSTREAM",
            Some("https://api.example.com/v1"),
            &[]
        ));
        assert!(!secret_env(
            "UPSTREAM",
            Some("https://user@example.com/x"),
            &[]
        ));
    }

    #[test]
    fn promotion_order_follows_depends_on_then_names() {
        let mut d = DesiredState::default();
        for (n, e) in [
            env("prod", &["staging", "qa"]),
            env("staging", &["dev"]),
            env("qa", &["dev"]),
            env("dev", &[]),
            env("sandbox", &[]),
            // A cycle (refused by validation) still gives an order.
            env("x", &["y"]),
            env("y", &["x"]),
        ] {
            d.environments.insert(n, e);
        }
        let order: Vec<String> = d.promotion_order().iter().map(|e| e.to_string()).collect();
        assert_eq!(order[..5], ["dev", "sandbox", "qa", "staging", "prod"]);
        assert_eq!(order.len(), 7);
    }
}
