//! The rollout events Keelson tells people about: one typed set, emitted by the engine and the
//! daemon, rendered per destination.

use serde::{Deserialize, Serialize};

use crate::spec::{AppName, EnvName};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A rollout of a new version or spec started.
    RolloutStarted,
    /// A step of a rollout completed.
    StepCompleted,
    /// A rollout completed: the version is live and healthy.
    RolloutSucceeded,
    /// A rollout failed (and was rolled back, see `rolled-back`).
    RolloutFailed,
    /// A failed rollout was rolled back.
    RolledBack,
    /// A canary analysis failed.
    AnalysisFailed,
    /// A canary analysis was inconclusive and holds for a person.
    AnalysisInconclusive,
    /// A version waits for a person's approval.
    ApprovalNeeded,
    /// A version, or a held canary, was approved.
    Approved,
    /// A pending approval or a held canary was rejected.
    Rejected,
    /// Actuation was suspended.
    Suspended,
    /// A suspend was lifted.
    Resumed,
    /// Drift was put right.
    DriftHealed,
    /// A new revision does not validate.
    RevisionInvalid,
    /// The flapping guard leaves a cluster alone.
    ClusterUnhappy,
    /// An environment was pinned to a version.
    Pinned,
    /// A pin was lifted.
    Unpinned,
    /// A version was vetoed.
    Vetoed,
    /// A veto was lifted.
    Unvetoed,
}

impl EventKind {
    /// Every kind, in the order above.
    pub const ALL: [Self; 19] = [
        Self::RolloutStarted,
        Self::StepCompleted,
        Self::RolloutSucceeded,
        Self::RolloutFailed,
        Self::RolledBack,
        Self::AnalysisFailed,
        Self::AnalysisInconclusive,
        Self::ApprovalNeeded,
        Self::Approved,
        Self::Rejected,
        Self::Suspended,
        Self::Resumed,
        Self::DriftHealed,
        Self::RevisionInvalid,
        Self::ClusterUnhappy,
        Self::Pinned,
        Self::Unpinned,
        Self::Vetoed,
        Self::Unvetoed,
    ];

    /// The name as written in specs and payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RolloutStarted => "rollout-started",
            Self::StepCompleted => "step-completed",
            Self::RolloutSucceeded => "rollout-succeeded",
            Self::RolloutFailed => "rollout-failed",
            Self::RolledBack => "rolled-back",
            Self::AnalysisFailed => "analysis-failed",
            Self::AnalysisInconclusive => "analysis-inconclusive",
            Self::ApprovalNeeded => "approval-needed",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Suspended => "suspended",
            Self::Resumed => "resumed",
            Self::DriftHealed => "drift-healed",
            Self::RevisionInvalid => "revision-invalid",
            Self::ClusterUnhappy => "cluster-unhappy",
            Self::Pinned => "pinned",
            Self::Unpinned => "unpinned",
            Self::Vetoed => "vetoed",
            Self::Unvetoed => "unvetoed",
        }
    }

    /// The kind of a name, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// How bad it is, for colours.
    pub fn severity(self) -> Severity {
        match self {
            Self::RolloutSucceeded | Self::Approved | Self::DriftHealed | Self::Resumed => {
                Severity::Good
            }
            Self::RolloutFailed
            | Self::RolledBack
            | Self::AnalysisFailed
            | Self::RevisionInvalid
            | Self::ClusterUnhappy => Severity::Danger,
            Self::AnalysisInconclusive
            | Self::ApprovalNeeded
            | Self::Rejected
            | Self::Suspended
            | Self::Pinned
            | Self::Vetoed => Severity::Warning,
            Self::RolloutStarted | Self::StepCompleted | Self::Unpinned | Self::Unvetoed => {
                Severity::Info
            }
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something moved.
    Info,
    /// It went well.
    Good,
    /// Someone may need to act.
    Warning,
    /// It went wrong.
    Danger,
}

/// One event, as every destination receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Unique: receivers de-duplicate retried deliveries by it.
    pub id: String,
    /// What happened.
    pub kind: EventKind,
    /// How bad it is.
    pub severity: Severity,
    /// When.
    pub at: jiff::Timestamp,
    /// The environment, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvName>,
    /// The application, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<AppName>,
    /// The cluster (`env/target/name`), where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The version it moves from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    /// The version it moves to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_version: Option<String>,
    /// The config revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Who acted, where a person did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
    /// One or two sentences.
    pub message: String,
    /// Where to look (the destination's environment URL), where configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl Event {
    /// A new event of `kind` at `at`, with a fresh id.
    pub fn new(kind: EventKind, at: jiff::Timestamp, message: impl Into<String>) -> Self {
        Self {
            id: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
            kind,
            severity: kind.severity(),
            at,
            environment: None,
            application: None,
            cluster: None,
            from_version: None,
            to_version: None,
            revision: None,
            who: None,
            message: message.into(),
            link: None,
        }
    }

    /// The same event about a cluster (its environment and application too).
    pub fn on(mut self, cluster: &crate::model::ClusterId, app: &AppName) -> Self {
        self.environment = Some(cluster.environment.clone());
        self.application = Some(app.clone());
        self.cluster = Some(cluster.to_string());
        self
    }

    /// The same event in an environment, for an application.
    pub fn in_env(mut self, env: Option<&EnvName>, app: Option<&AppName>) -> Self {
        self.environment = env.cloned();
        self.application = app.cloned();
        self
    }

    /// The same event with versions.
    pub fn versions(mut self, from: Option<String>, to: Option<String>) -> Self {
        self.from_version = from;
        self.to_version = to;
        self
    }

    /// The same event with a revision.
    pub fn revision(mut self, revision: &str) -> Self {
        self.revision = Some(revision.to_string()).filter(|r| !r.is_empty());
        self
    }

    /// The same event with who acted.
    pub fn by(mut self, who: &str) -> Self {
        self.who = Some(who.to_string());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_names_exactly_these_events() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../schemas/environment.schema.json")).unwrap();
        let names: Vec<&str> = schema["properties"]["spec"]["properties"]["notifications"]["items"]
            ["properties"]["events"]["items"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let ours: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names, ours);
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}
