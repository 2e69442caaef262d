//! The Application document: one service, its artifact, workload and clusters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{AppName, Duration, EnvName, Strategy, TargetName, VerifyCheck};

/// `metadata` of an Application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationMetadata {
    /// The application's name.
    pub name: AppName,
    /// Who owns it, e.g. a team's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// A sentence about the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A whole Application document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Application {
    /// Always `keelson/v1`.
    pub api_version: String,
    /// Always `Application`.
    pub kind: String,
    /// Name, owner and labels.
    pub metadata: ApplicationMetadata,
    /// What the application is and where it runs.
    pub spec: ApplicationSpec,
}

/// `spec` of an Application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationSpec {
    /// Break-glass: no actuation for any cluster of this application.
    #[serde(default)]
    pub suspended: bool,
    /// The immutable build to run.
    pub artifact: Artifact,
    /// What an instance runs.
    #[serde(default)]
    pub workload: Workload,
    /// How to tell an instance is healthy.
    #[serde(default)]
    pub health: HealthSpec,
    /// What a pod needs on Kubernetes targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesWorkload>,
    /// What an instance needs on EC2 targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec2: Option<Ec2Workload>,
    /// Checks once a new version takes all traffic, before the old groups go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify: Vec<VerifyCheck>,
    /// Where it runs.
    pub clusters: Vec<ClusterSpec>,
}

/// The artifact: a version and, for images, where it lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// The version, e.g. `1.4.0`.
    pub version: String,
    /// The container image repository, without tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The machine image (AMI id) EC2 instances boot from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami: Option<String>,
}

/// The workload of an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Workload {
    /// The command a local instance runs; `{port}` becomes its port.
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Keys of `env` whose values are secret and never printed.
    #[serde(default)]
    pub secret_env: Vec<String>,
}

/// What a pod needs on a Kubernetes target; the image is `artifact.image:artifact.version` and
/// the environment variables are the workload's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesWorkload {
    /// The port the container listens on; probes and the Service's target port use it.
    pub container_port: u16,
    /// Replaces the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// CPU and memory requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// The service account the pods run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

/// What an instance needs on an EC2 target; the image is `artifact.ami`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ec2Workload {
    /// The instance type, e.g. `t3.small`.
    pub instance_type: String,
    /// Security group ids of the instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    /// The instance profile (name or ARN) the instances run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_instance_profile: Option<String>,
    /// The key pair for SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// The instances' user data; `{version}` becomes the artifact version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// The port the instances serve on; the load balancer sends traffic and health checks there.
    pub port: u16,
    /// The load balancer's health check path; `health.http.path`, else `/`, when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_path: Option<String>,
}

/// Container resources, as Kubernetes quantities (`250m`, `128Mi`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// What the scheduler reserves.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    /// The most the container may use.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

/// Health checking.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// An HTTP probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// How long a new server group may take to become healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// An HTTP health probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    /// The path to GET; 2xx is healthy.
    pub path: String,
    /// Time between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Time one probe may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// Instance counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// Fewest instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    /// Most instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// Instances to run.
    pub desired: u32,
}

/// Where a cluster takes traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// The port the cluster's load balancer listens on (local and Kubernetes targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The host name the cluster's listener rule matches (EC2 targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The path pattern the cluster's listener rule matches (EC2 targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// One cluster of an application: environment, target, stack and detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// The environment.
    pub environment: EnvName,
    /// The target within the environment.
    pub target: TargetName,
    /// The stack, e.g. `prod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// The detail, e.g. `canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Instance counts.
    pub capacity: Capacity,
    /// The strategy; the environment default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Where it takes traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Traffic>,
    /// Extra environment variables for this cluster.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Break-glass for this cluster.
    #[serde(default)]
    pub suspended: bool,
    /// This cluster's verification checks, instead of the application's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Vec<VerifyCheck>>,
}
