//! The `keelson/v1` spec types: what an Application or Environment document says.
//!
//! The JSON Schemas in `schemas/` are the source of truth for shape; these types mirror them and
//! a test proves the two agree on every example and fixture. Deserialization happens only after a
//! document has passed its schema, so serde errors here mean the two have drifted.

mod analysis;
mod application;
mod duration;
mod environment;
pub mod names;
mod notification;
mod strategy;

pub use analysis::{
    Analysis, AnalysisProvider, AnalysisSources, MetricCheck, PrometheusSource, Score, Threshold,
    VerifyCheck,
};
pub use application::{
    Application, ApplicationMetadata, ApplicationSpec, Artifact, Capacity, ClusterSpec,
    Ec2Workload, HealthSpec, HttpProbe, KubernetesWorkload, Resources, Traffic, Workload,
};
pub use duration::{Duration, DurationError};
pub use environment::{
    Approval, ApprovalRule, Constraints, Ec2Target, EnvDefaults, Environment, EnvironmentSpec,
    Flapping, KubernetesTarget, Metadata, ProviderKind, TargetSpec, Weekday, Window,
};
pub use names::{AppName, EnvName, Name, NameError, TargetName};
pub use notification::{Notification, NotificationKind, SecretSource};
pub use strategy::{CanaryStep, MaxUnavailable, Percent, Strategy, StrategyKind};

/// The only `apiVersion` this build reads.
pub const API_VERSION: &str = "keelson/v1";

/// The kinds of document Keelson reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Kind {
    /// An application and its clusters.
    Application,
    /// A stage of the promotion path with its targets.
    Environment,
}

impl Kind {
    /// Parses the `kind` field.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Application" => Some(Self::Application),
            "Environment" => Some(Self::Environment),
            _ => None,
        }
    }

    /// The `kind` as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Application => "Application",
            Self::Environment => "Environment",
        }
    }
}
