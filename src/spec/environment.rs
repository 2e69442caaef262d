//! The Environment document: a stage of the promotion path, its targets and constraints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{AnalysisSources, EnvName, Strategy, TargetName};

/// `metadata` of an Environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The environment's name.
    pub name: EnvName,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// A sentence about the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A whole Environment document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Environment {
    /// Always `keelson/v1`.
    pub api_version: String,
    /// Always `Environment`.
    pub kind: String,
    /// Name and labels.
    pub metadata: Metadata,
    /// What the environment holds.
    pub spec: EnvironmentSpec,
}

/// `spec` of an Environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvironmentSpec {
    /// Environments a version must be live and healthy in before it reaches this one.
    #[serde(default)]
    pub depends_on: Vec<EnvName>,
    /// Break-glass: no actuation in this environment.
    #[serde(default)]
    pub suspended: bool,
    /// Destroy orphaned clusters (Keelson's labels, no spec) in this environment.
    #[serde(default)]
    pub prune: bool,
    /// Where server groups run.
    pub targets: Vec<TargetSpec>,
    /// Deployment windows and approval.
    #[serde(default)]
    pub constraints: Constraints,
    /// Defaults for the clusters of this environment.
    #[serde(default)]
    pub defaults: EnvDefaults,
    /// Where canary analyses find metrics.
    #[serde(default)]
    pub analysis: AnalysisSources,
    /// Who is told about rollouts here.
    #[serde(default)]
    pub notifications: Vec<super::Notification>,
}

/// The provider a target uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// The embedded local process cluster.
    Local,
    /// A Kubernetes namespace.
    Kubernetes,
    /// An AWS EC2 region.
    Ec2,
}

impl ProviderKind {
    /// The name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Kubernetes => "kubernetes",
            Self::Ec2 => "ec2",
        }
    }
}

/// A target: where server groups run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// The target's name within the environment.
    pub name: TargetName,
    /// Which provider runs it.
    pub provider: ProviderKind,
    /// Kubernetes settings, for `provider: kubernetes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesTarget>,
    /// EC2 settings, for `provider: ec2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec2: Option<Ec2Target>,
}

/// A Kubernetes context and namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesTarget {
    /// The kubeconfig context; the current one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The namespace.
    pub namespace: String,
}

/// An EC2 region, its subnets and the load balancer listener clusters take traffic through.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ec2Target {
    /// The AWS region.
    pub region: String,
    /// Subnets the Auto Scaling groups launch instances into.
    pub subnets: Vec<String>,
    /// The Application Load Balancer listener each cluster gets a weighted rule on.
    pub listener_arn: String,
    /// The VPC of the target groups; looked up from the first subnet when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    /// Another endpoint for every AWS API (an emulator, a VPC endpoint); AWS's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// When and with whose approval changes may reach an environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// Deployment windows; none means any time.
    #[serde(default)]
    pub windows: Vec<Window>,
    /// Whether a person must approve each version, and who may.
    #[serde(default)]
    pub approval: ApprovalRule,
    /// When to stop retrying a cluster whose rollout keeps failing.
    #[serde(default)]
    pub flapping: Flapping,
}

/// `approval: required`, or `{required: true, approvers: [alice, "group:release-managers"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ApprovalRule {
    /// `none` or `required`.
    Plain(Approval),
    /// Required or not, and by whom.
    Detailed {
        /// Whether a person must approve each version.
        required: bool,
        /// Users and `group:NAME`s who may approve; anyone when empty.
        #[serde(default)]
        approvers: Vec<String>,
    },
}

impl Default for ApprovalRule {
    fn default() -> Self {
        Self::Plain(Approval::None)
    }
}

impl ApprovalRule {
    /// Whether each version needs approval.
    pub fn approval(&self) -> Approval {
        match self {
            Self::Plain(a) => *a,
            Self::Detailed { required: true, .. } => Approval::Required,
            Self::Detailed { .. } => Approval::None,
        }
    }

    /// Who may approve (users and `group:NAME`s); empty: anyone.
    pub fn approvers(&self) -> &[String] {
        match self {
            Self::Plain(_) => &[],
            Self::Detailed { approvers, .. } => approvers,
        }
    }
}

/// The flapping guard: after `maxAttempts` failed rollouts of the same desired state within
/// `window`, a cluster is left alone for `cooldown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Flapping {
    /// Failed rollouts that make a cluster unhappy.
    #[serde(default = "three")]
    pub max_attempts: u32,
    /// Over how long they count.
    #[serde(default = "half_hour")]
    pub window: super::Duration,
    /// How long an unhappy cluster is left alone.
    #[serde(default = "half_hour")]
    pub cooldown: super::Duration,
}

fn three() -> u32 {
    3
}

fn half_hour() -> super::Duration {
    super::Duration::from_secs(30 * 60)
}

impl Default for Flapping {
    fn default() -> Self {
        Self {
            max_attempts: three(),
            window: half_hour(),
            cooldown: half_hour(),
        }
    }
}

/// Whether manual judgment is needed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    /// No approval.
    #[default]
    None,
    /// `keelson approve` before actuation.
    Required,
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// The name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mon => "mon",
            Self::Tue => "tue",
            Self::Wed => "wed",
            Self::Thu => "thu",
            Self::Fri => "fri",
            Self::Sat => "sat",
            Self::Sun => "sun",
        }
    }
}

/// A deployment window: days, a start and end time of day, and a time zone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Days the window opens.
    pub days: Vec<Weekday>,
    /// `HH:MM` it opens.
    pub start: String,
    /// `HH:MM` it closes.
    pub end: String,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub timezone: String,
}

/// Defaults for an environment's clusters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvDefaults {
    /// The strategy for clusters that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
}
