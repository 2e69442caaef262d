//! A canary analysis as the store keeps it: its measurements as they are taken (so a killed
//! `apply` resumes with them), where it stands, and who decided what.

use serde::{Deserialize, Serialize};

use crate::analysis::Measurement;
use crate::model::SpecHash;
use crate::spec::AnalysisProvider;

/// Where an analysis stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum AnalysisState {
    /// Measuring (or stopped mid-window, to be resumed).
    Running,
    /// Too many inconclusive measurements: waiting for `keelson approve` or `keelson reject`.
    Held {
        /// Why.
        why: String,
    },
    /// The rollout it judged completed.
    Passed,
    /// Too many failed measurements: rolled back; this spec is not tried again until it
    /// changes or someone runs `keelson retry`.
    Failed {
        /// Why.
        why: String,
    },
    /// A person rejected it while it was held: rolled back, not tried again (as failed).
    Rejected {
        /// Who.
        who: String,
        /// Why.
        why: String,
    },
    /// A person cleared a failure or rejection: the next apply tries the spec again.
    Retried {
        /// Who.
        who: String,
    },
    /// Ended without a verdict: another step of the rollout failed, or a newer spec replaced
    /// it.
    Abandoned {
        /// Why.
        why: String,
    },
}

impl AnalysisState {
    /// One word for tables and metrics.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Held { .. } => "held",
            Self::Passed => "passed",
            Self::Failed { .. } => "failed",
            Self::Rejected { .. } => "rejected",
            Self::Retried { .. } => "retried",
            Self::Abandoned { .. } => "abandoned",
        }
    }

    /// What it came to, to follow "the canary analysis of 2.0.0": `failed: ...`, `holds:
    /// ...`, `was rejected by ...`.
    pub fn outcome(&self) -> String {
        match self {
            Self::Held { why } => format!("holds: {why}"),
            Self::Failed { why } => format!("failed: {why}"),
            Self::Rejected { who, why } => format!("was rejected by {who}: {why}"),
            Self::Abandoned { why } => format!("was abandoned: {why}"),
            Self::Retried { who } => format!("was cleared for a retry by {who}"),
            Self::Running => "is running".into(),
            Self::Passed => "passed".into(),
        }
    }

    /// Whether it stops the same spec from rolling out again.
    pub fn blocks(&self) -> bool {
        matches!(
            self,
            Self::Held { .. } | Self::Failed { .. } | Self::Rejected { .. }
        )
    }
}

impl std::fmt::Display for AnalysisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Held { why } | Self::Failed { why } | Self::Abandoned { why } => {
                write!(f, "{}: {why}", self.word())
            }
            Self::Rejected { who, why } => write!(f, "rejected by {who}: {why}"),
            Self::Retried { who } => write!(f, "retried by {who}"),
            Self::Running | Self::Passed => f.write_str(self.word()),
        }
    }
}

/// One step's observation window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisWindow {
    /// The canary's weight in this step.
    pub step: u8,
    /// When the window opened.
    pub started: jiff::Timestamp,
    /// Measurements it takes.
    pub expected: u32,
    /// Who approved going on after a hold in this window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// The index of its first measurement in the record: earlier ones belong to other windows.
    #[serde(default)]
    pub from: usize,
}

/// One analysis of a rollout: a spec's canary against its baseline in one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRecord {
    /// Unique: the cluster and when it started.
    pub id: String,
    /// The cluster (`env/target/name`).
    pub cluster: String,
    /// The config revision.
    pub revision: String,
    /// The version judged.
    pub version: String,
    /// Its spec hash.
    pub spec_hash: SpecHash,
    /// The whole cluster spec's hash: a change (another version, other criteria) tries again.
    pub hash: SpecHash,
    /// The new group.
    pub canary: String,
    /// The group it is compared with.
    pub baseline: String,
    /// Where measurements come from.
    pub provider: AnalysisProvider,
    /// When it started.
    pub started: jiff::Timestamp,
    /// When it last changed.
    pub updated: jiff::Timestamp,
    /// Where it stands.
    #[serde(flatten)]
    pub state: AnalysisState,
    /// The windows opened so far.
    pub windows: Vec<AnalysisWindow>,
    /// Every measurement, oldest first.
    pub measurements: Vec<Measurement>,
    /// Measurements before this index were judged before the last approval: limits count
    /// from here.
    #[serde(default)]
    pub counted_from: usize,
}

/// Why a person's decision does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the analysis of {version} on {cluster} is {state}; {what}")]
pub struct NotApplicable {
    /// The cluster.
    pub cluster: String,
    /// The version.
    pub version: String,
    /// Its state, as a word.
    pub state: &'static str,
    /// What can be done instead.
    pub what: &'static str,
}

impl AnalysisRecord {
    /// The measurements the limits count.
    pub fn counted(&self) -> &[Measurement] {
        &self.measurements[self.counted_from.min(self.measurements.len())..]
    }

    /// The newest measurement.
    pub fn latest(&self) -> Option<&Measurement> {
        self.measurements.last()
    }

    fn not(&self, what: &'static str) -> NotApplicable {
        NotApplicable {
            cluster: self.cluster.clone(),
            version: self.version.clone(),
            state: self.state.word(),
            what,
        }
    }

    /// `keelson approve`: a held analysis goes on; the held window counts as passed and the
    /// limits count again from here.
    pub fn approve(&mut self, who: &str, now: jiff::Timestamp) -> Result<(), NotApplicable> {
        if !matches!(self.state, AnalysisState::Held { .. }) {
            return Err(self.not("only a held analysis can be approved"));
        }
        if let Some(w) = self.windows.last_mut() {
            w.approved_by = Some(who.to_string());
        }
        self.counted_from = self.measurements.len();
        self.state = AnalysisState::Running;
        self.updated = now;
        Ok(())
    }

    /// `keelson reject`: a held analysis ends, and its rollout is rolled back.
    pub fn reject(
        &mut self,
        who: &str,
        why: &str,
        now: jiff::Timestamp,
    ) -> Result<(), NotApplicable> {
        // Only a held one: a running analysis belongs to the rollout holding the cluster's
        // lock, which would carry on past a rejection (a suspend stops it; then it holds).
        if !matches!(self.state, AnalysisState::Held { .. }) {
            return Err(self.not(
                "only a held analysis can be rejected; `keelson suspend --cluster` stops a running rollout",
            ));
        }
        self.state = AnalysisState::Rejected {
            who: who.to_string(),
            why: why.to_string(),
        };
        self.updated = now;
        Ok(())
    }

    /// `keelson retry`: a failed or rejected spec may roll out again.
    pub fn retry(&mut self, who: &str, now: jiff::Timestamp) -> Result<(), NotApplicable> {
        if !matches!(
            self.state,
            AnalysisState::Failed { .. } | AnalysisState::Rejected { .. }
        ) {
            return Err(self.not("only a failed or rejected analysis can be retried"));
        }
        self.state = AnalysisState::Retried {
            who: who.to_string(),
        };
        self.updated = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: AnalysisState) -> AnalysisRecord {
        AnalysisRecord {
            id: "a".into(),
            cluster: "prod/local/web".into(),
            revision: "r".into(),
            version: "2.0.0".into(),
            spec_hash: SpecHash::from_observed("h"),
            hash: SpecHash::from_observed("hh"),
            canary: "web-v002".into(),
            baseline: "web-v001".into(),
            provider: AnalysisProvider::Builtin,
            started: jiff::Timestamp::UNIX_EPOCH,
            updated: jiff::Timestamp::UNIX_EPOCH,
            state,
            windows: vec![AnalysisWindow {
                step: 10,
                started: jiff::Timestamp::UNIX_EPOCH,
                expected: 3,
                approved_by: None,
                from: 0,
            }],
            measurements: Vec::new(),
            counted_from: 0,
        }
    }

    #[test]
    fn decisions_follow_the_state() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let mut r = record(AnalysisState::Held { why: "x".into() });
        r.approve("ann", now).unwrap();
        assert_eq!(r.state, AnalysisState::Running);
        assert_eq!(r.windows[0].approved_by.as_deref(), Some("ann"));
        // Approving twice is refused and says why.
        assert_eq!(
            r.approve("ann", now).unwrap_err().to_string(),
            "the analysis of 2.0.0 on prod/local/web is running; only a held analysis can be approved"
        );
        assert!(r.retry("bob", now).is_err());
        // A running analysis is its rollout's: not rejected from outside.
        assert!(r.reject("bob", "too slow", now).is_err());
        r.state = AnalysisState::Held { why: "x".into() };
        r.reject("bob", "too slow", now).unwrap();
        assert!(r.state.blocks());
        r.retry("bob", now).unwrap();
        assert!(!r.state.blocks());
        let mut done = record(AnalysisState::Passed);
        assert!(done.reject("bob", "late", now).is_err());
    }
}
