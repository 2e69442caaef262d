//! What besides specs and live state decides whether a cluster may move: suspends, locks,
//! approvals and the time. Passed into the planner; the planner never reads a clock.

use serde::{Deserialize, Serialize};

use crate::model::ClusterId;
use crate::spec::{AppName, EnvName};

/// Where a suspend applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "kebab-case")]
pub enum Scope {
    /// Everything.
    Global,
    /// One environment.
    Environment(EnvName),
    /// One application, in every environment.
    Application(AppName),
    /// One cluster: `name`, `env/name` or `env/target/name`.
    Cluster(String),
}

impl Scope {
    /// Whether the scope covers a cluster of `app`.
    pub fn covers(&self, id: &ClusterId, app: &AppName) -> bool {
        match self {
            Self::Global => true,
            Self::Environment(e) => &id.environment == e,
            Self::Application(a) => a == app,
            Self::Cluster(sel) => id.matches(sel),
        }
    }
}

impl Scope {
    /// Why the scope names nothing the specs declare (a typo would hold nothing), with a
    /// suggestion; `None` when it covers some cluster, or is global.
    pub fn unknown_in(&self, desired: &crate::model::DesiredState) -> Option<String> {
        let hint = |word: &str, names: Vec<String>, what: &str| {
            let near = crate::suggest::did_you_mean(word, &names)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_else(|| format!("; the {what} are: {}", names.join(", ")));
            format!("no {} `{word}` in the specs{near}", &what[..what.len() - 1])
        };
        match self {
            Self::Global => None,
            Self::Environment(e) => (!desired.environments.contains_key(e)).then(|| {
                hint(
                    e.as_str(),
                    desired
                        .environments
                        .keys()
                        .map(ToString::to_string)
                        .collect(),
                    "environments",
                )
            }),
            Self::Application(a) => (!desired.clusters.values().any(|c| &c.app == a)).then(|| {
                let mut apps: Vec<String> = desired
                    .clusters
                    .values()
                    .map(|c| c.app.to_string())
                    .collect();
                apps.dedup();
                hint(a.as_str(), apps, "applications")
            }),
            Self::Cluster(sel) => (!desired.clusters.keys().any(|id| id.matches(sel))).then(|| {
                hint(
                    sel,
                    desired.clusters.keys().map(ToString::to_string).collect(),
                    "clusters",
                )
            }),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Global => f.write_str("global"),
            Self::Environment(e) => write!(f, "environment {e}"),
            Self::Application(a) => write!(f, "application {a}"),
            Self::Cluster(c) => write!(f, "cluster {c}"),
        }
    }
}

/// A break-glass suspend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Suspend {
    /// Where.
    pub scope: Scope,
    /// Who suspended.
    pub who: String,
    /// Why.
    pub reason: String,
    /// When it lapses by itself, if ever.
    pub until: Option<jiff::Timestamp>,
}

/// A held cluster lock.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lock {
    /// The cluster.
    pub cluster: ClusterId,
    /// Who holds it (host, pid, command).
    pub owner: String,
    /// What for.
    pub reason: String,
    /// When it lapses unless renewed.
    pub expires: jiff::Timestamp,
}

/// An approval of one version for one application in one environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Approval {
    /// Environment.
    pub environment: EnvName,
    /// Application.
    pub app: AppName,
    /// Version.
    pub version: String,
}

/// A rollback that was interrupted: what is left of it, from the store's journal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PendingRollback {
    /// The cluster.
    pub cluster: ClusterId,
    /// The revision whose rollout failed.
    pub revision: String,
    /// Why it failed.
    pub error: String,
    /// The rollback steps not yet done.
    pub steps: Vec<crate::actuation::Step>,
}

/// A canary analysis that stops its spec from rolling out again: held for a person, or
/// failed (or rejected) until the spec changes or someone runs `keelson retry`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisVerdict {
    /// The cluster.
    pub cluster: ClusterId,
    /// The version judged.
    pub version: String,
    /// Its spec hash.
    pub spec_hash: crate::model::SpecHash,
    /// The cluster spec's hash then: any change tries again.
    pub hash: crate::model::SpecHash,
    /// Held (waiting for `approve` or `reject`) rather than failed.
    pub held: bool,
    /// Where it stands and why.
    pub why: String,
}

/// An environment held at a version whatever Git says (`keelson pin`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pin {
    /// The environment.
    pub environment: EnvName,
    /// The application.
    pub app: AppName,
    /// The artifact it is held at.
    pub artifact: crate::model::Artifact,
    /// Who pinned it.
    pub who: String,
    /// Why.
    pub reason: String,
    /// When it lapses by itself, if ever.
    pub until: Option<jiff::Timestamp>,
    /// When it was made.
    pub at: jiff::Timestamp,
}

impl Pin {
    /// Whether it holds at `now`.
    pub fn in_force(&self, now: jiff::Timestamp) -> bool {
        self.until.is_none_or(|u| u > now)
    }
}

/// A version marked bad (`keelson veto`): never deployed where it is vetoed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Veto {
    /// The application.
    pub app: AppName,
    /// The version.
    pub version: String,
    /// Where: one environment, or every one.
    pub environment: Option<EnvName>,
    /// Who vetoed it.
    pub who: String,
    /// Why.
    pub reason: String,
    /// When.
    pub at: jiff::Timestamp,
}

impl Veto {
    /// Whether it covers `version` of `app` in `env`.
    pub fn covers(&self, app: &AppName, version: &str, env: &EnvName) -> bool {
        &self.app == app
            && self.version == version
            && self.environment.as_ref().is_none_or(|e| e == env)
    }
}

/// A version that was live and healthy on a cluster, as recorded when it converged: where a
/// veto rolls back to, and what a pin deploys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployed {
    /// The cluster.
    pub cluster: ClusterId,
    /// The application.
    pub app: AppName,
    /// What ran.
    pub artifact: crate::model::Artifact,
    /// Its spec hash then.
    pub spec_hash: crate::model::SpecHash,
    /// The rest of the spec's hash then (see [`crate::model::Retarget`]).
    pub rest: crate::model::SpecHash,
    /// When it was live and healthy (last seen so).
    pub at: jiff::Timestamp,
}

/// A failed rollout of a cluster's desired state, counted by the flapping guard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// The cluster.
    pub cluster: ClusterId,
    /// The desired cluster's hash that failed.
    pub hash: crate::model::SpecHash,
    /// When.
    pub at: jiff::Timestamp,
    /// What failed.
    pub error: String,
}

/// The state store the plan is made with, and the stores whose clusters it took over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stores {
    /// This store's id (empty: no store, nothing to check, e.g. a pull request planned in CI).
    pub ours: String,
    /// When this store was made.
    pub created: jiff::Timestamp,
    /// Stores taken over (`keelson adopt`).
    pub adopted: Vec<String>,
}

impl Stores {
    /// Whether a cluster whose groups carry `keelson.io/store` values `seen` was made by
    /// another store this one never took over; returns that store.
    pub fn foreign<'a>(&self, seen: impl IntoIterator<Item = &'a str>) -> Option<String> {
        if self.ours.is_empty() {
            return None;
        }
        seen.into_iter()
            .find(|s| *s != self.ours && !self.adopted.iter().any(|a| a == s))
            .map(str::to_string)
    }
}

/// Everything the planner needs besides desired and observed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The time the plan is for.
    pub now: jiff::Timestamp,
    /// Active suspends.
    pub suspends: Vec<Suspend>,
    /// Held locks.
    pub locks: Vec<Lock>,
    /// Granted approvals.
    pub approvals: Vec<Approval>,
    /// Interrupted rollbacks, finished before anything else happens to their clusters.
    pub rollbacks: Vec<PendingRollback>,
    /// Analyses that hold or failed their spec.
    #[serde(default)]
    pub verdicts: Vec<AnalysisVerdict>,
    /// The store the plan is made with.
    pub stores: Stores,
    /// Pins in force.
    #[serde(default)]
    pub pins: Vec<Pin>,
    /// Vetoed versions.
    #[serde(default)]
    pub vetoes: Vec<Veto>,
    /// Versions recorded live and healthy, oldest first.
    #[serde(default)]
    pub deployed: Vec<Deployed>,
    /// Recent failed rollouts, oldest first.
    #[serde(default)]
    pub failures: Vec<Failure>,
    /// When each disabled server group was first seen disabled, by [`Policy::disabled_key`].
    #[serde(default)]
    pub disabled_since: std::collections::BTreeMap<String, jiff::Timestamp>,
}

impl Policy {
    /// The key of a server group in `disabled_since`: group names repeat across
    /// environments and targets, so the cluster is part of it.
    pub fn disabled_key(cluster: &ClusterId, group: &crate::model::ServerGroupName) -> String {
        format!("{cluster}/{group}")
    }

    /// When a server group of a cluster was first seen disabled, if recorded.
    pub fn disabled_at(
        &self,
        cluster: &ClusterId,
        group: &crate::model::ServerGroupName,
    ) -> Option<jiff::Timestamp> {
        self.disabled_since
            .get(&Self::disabled_key(cluster, group))
            .copied()
    }

    /// A policy with nothing held at time `now`.
    pub fn at(now: jiff::Timestamp) -> Self {
        Self {
            now,
            suspends: Vec::new(),
            locks: Vec::new(),
            approvals: Vec::new(),
            rollbacks: Vec::new(),
            verdicts: Vec::new(),
            stores: Stores::default(),
            pins: Vec::new(),
            vetoes: Vec::new(),
            deployed: Vec::new(),
            failures: Vec::new(),
            disabled_since: std::collections::BTreeMap::new(),
        }
    }
}
