//! The state store: only what cannot be observed (locks, suspends, approvals, the audit
//! history, the last good revision). SQLite by default; the trait lets a server database take
//! over for several replicas.

mod analysis;
pub mod audit;
mod postgres;
mod sqlite;
pub mod tls;

use serde::{Deserialize, Serialize};

pub use analysis::{AnalysisRecord, AnalysisState, AnalysisWindow, NotApplicable};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use std::collections::BTreeMap;

use crate::plan::{Approval, Deployed, Failure, Pin, Policy, Scope, Suspend, Veto};
use crate::spec::{AppName, EnvName};

/// Who acts: host, process and command, plus a token unique to this process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// The command, e.g. `keelson apply`.
    pub command: String,
    /// Unique per process run.
    pub token: String,
}

impl Owner {
    /// How this owner names itself to a target's own lock (a Kubernetes Lease's holder).
    pub fn holder(&self) -> String {
        format!(
            "{} on {} (pid {}, {})",
            self.command, self.host, self.pid, self.token
        )
    }

    /// This process as an owner.
    pub fn this_process(command: &str, now: jiff::Timestamp) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let pid = std::process::id();
        Self {
            host: host.clone(),
            pid,
            command: command.to_string(),
            token: format!("{host}/{pid}/{}", now.as_nanosecond()),
        }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} pid {} ({})", self.host, self.pid, self.command)
    }
}

/// A held cluster lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The cluster (`env/target/name`).
    pub cluster: String,
    /// Who holds it.
    pub owner: Owner,
    /// What for.
    pub reason: String,
    /// Since when.
    pub acquired_at: jiff::Timestamp,
    /// Until when, unless renewed.
    pub expires_at: jiff::Timestamp,
    /// The fencing epoch: it grows every time the lock changes hands.
    pub epoch: u64,
}

/// The outcome of trying to take a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    /// Taken; `took_over` names a previous holder whose lock had expired or who had died.
    Acquired {
        /// The previous holder, if taken over.
        took_over: Option<LockInfo>,
        /// The fencing epoch of this holding.
        epoch: u64,
    },
    /// Someone else holds it.
    Held(LockInfo),
}

/// One audited action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When.
    pub at: jiff::Timestamp,
    /// The cluster, or `*` for global actions.
    pub cluster: String,
    /// What kind: `step`, `rollback`, `suspend`, `resume`, `lock-takeover`, `lock-release`, ...
    pub action: String,
    /// The step or a description.
    pub detail: String,
    /// Who.
    pub who: String,
    /// The config revision.
    pub revision: String,
    /// `ok`, `failed`, `refused`, ...
    pub result: String,
}

/// What a write made while holding a cluster's lock carries: a write whose epoch is older than
/// the lock's is refused, so a holder that lost its lock (paused, cut off) cannot write late.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The cluster (`env/target/name`).
    pub cluster: String,
    /// The epoch the lock was taken with.
    pub epoch: u64,
}

/// The writes a cluster's run makes, fenced by its lock's epoch.
#[derive(Debug, Clone, Copy)]
pub enum Write<'a> {
    /// A history entry.
    History(&'a HistoryEntry),
    /// The rollout's journal.
    Journal(&'a Journal),
    /// The rollout's journal, cleared.
    ClearJournal,
    /// An analysis and its measurements.
    Analysis(&'a AnalysisRecord),
    /// A version live and healthy.
    Deployed(&'a Deployed),
    /// A failed rollout.
    Failure(&'a Failure),
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A write carried an epoch older than the cluster lock's: another holder took over.
    #[error(
        "`{cluster}` changed hands: this write carries epoch {epoch}, the lock is at {current}; stop acting on it"
    )]
    Fenced {
        /// The cluster.
        cluster: String,
        /// The writer's epoch.
        epoch: u64,
        /// The lock's.
        current: u64,
    },
    /// The database failed.
    #[error("state store `{path}`: {what}")]
    Db {
        /// The database file.
        path: String,
        /// What failed.
        what: String,
        /// The cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// Which store this is: written on every cluster it creates (`keelson.io/store`), so a store
/// that is not the one that made them (deleted and made anew, replaced) is noticed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreIdentity {
    /// A random id, made when the store was.
    pub id: String,
    /// When the store was made.
    pub created: jiff::Timestamp,
}

/// What the engine has done to a cluster in its current rollout, kept so that a rollback is
/// derived from what ran and survives a crash. Holds references to specs, never their values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Journal {
    /// The cluster (`env/target/name`).
    pub cluster: String,
    /// The revision being rolled out.
    pub revision: String,
    /// How long rollback waits for instances.
    pub health_timeout: crate::spec::Duration,
    /// The operations of this rollout in the order they ran: those a resumed rollout found
    /// done, then each one the engine ran.
    pub ran: Vec<crate::actuation::Op>,
    /// Set once the rollout failed: the rollback and how far it got.
    pub rollback: Option<RollbackProgress>,
}

/// A rollback in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackProgress {
    /// Why the rollout failed.
    pub error: String,
    /// The rollback's steps.
    pub steps: Vec<crate::actuation::Step>,
    /// How many of them are done.
    pub done: usize,
}

/// The store's operations; each is one transaction.
pub trait Store: Send + Sync {
    /// Takes the lock of a cluster for `ttl`, taking over an expired lock or one whose owner
    /// died on this host.
    fn acquire_lock(
        &self,
        cluster: &str,
        owner: &Owner,
        reason: &str,
        ttl: std::time::Duration,
        now: jiff::Timestamp,
    ) -> Result<LockOutcome, StoreError>;
    /// Extends a lock this owner holds; false if it is no longer ours.
    fn renew_lock(
        &self,
        cluster: &str,
        owner: &Owner,
        ttl: std::time::Duration,
        now: jiff::Timestamp,
    ) -> Result<bool, StoreError>;
    /// Releases a lock this owner holds.
    fn release_lock(&self, cluster: &str, owner: &Owner) -> Result<(), StoreError>;
    /// Releases a lock whoever holds it (audited); returns the lock released.
    fn force_release(
        &self,
        cluster: &str,
        who: &str,
        now: jiff::Timestamp,
    ) -> Result<Option<LockInfo>, StoreError>;
    /// Every lock, held or expired.
    fn locks(&self) -> Result<Vec<LockInfo>, StoreError>;
    /// Adds a suspend (audited).
    fn suspend(&self, s: &Suspend, now: jiff::Timestamp) -> Result<(), StoreError>;
    /// Lifts the suspends of exactly this scope (audited); returns how many.
    fn resume(&self, scope: &Scope, who: &str, now: jiff::Timestamp) -> Result<usize, StoreError>;
    /// Suspends in force at `now`.
    fn suspends(&self, now: jiff::Timestamp) -> Result<Vec<Suspend>, StoreError>;
    /// Records an approval (audited).
    fn approve(&self, a: &Approval, who: &str, now: jiff::Timestamp) -> Result<(), StoreError>;
    /// Every approval.
    fn approvals(&self) -> Result<Vec<Approval>, StoreError>;
    /// Appends to the audit history.
    fn record(&self, e: &HistoryEntry) -> Result<(), StoreError>;
    /// The newest `limit` entries, optionally for clusters matching a selector, newest last.
    fn history(&self, cluster: Option<&str>, limit: usize)
    -> Result<Vec<HistoryEntry>, StoreError>;
    /// The journal of a cluster's current rollout, if any.
    fn journal(&self, cluster: &str) -> Result<Option<Journal>, StoreError>;
    /// Every journal.
    fn journals(&self) -> Result<Vec<Journal>, StoreError>;
    /// Writes a cluster's journal.
    fn put_journal(&self, j: &Journal) -> Result<(), StoreError>;
    /// Forgets a cluster's journal (its rollout or rollback finished).
    fn clear_journal(&self, cluster: &str) -> Result<(), StoreError>;
    /// Writes a canary analysis (new, or changed).
    fn put_analysis(&self, r: &AnalysisRecord) -> Result<(), StoreError>;
    /// The newest `limit` analyses, newest first, optionally for clusters matching a
    /// selector.
    fn analyses(
        &self,
        cluster: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AnalysisRecord>, StoreError>;
    /// A cluster's newest analysis.
    fn latest_analysis(&self, cluster: &str) -> Result<Option<AnalysisRecord>, StoreError> {
        Ok(self
            .analyses(Some(cluster), usize::MAX)?
            .into_iter()
            .find(|r| r.cluster == cluster))
    }
    /// The newest analysis of each cluster, newest first: the one that says where the cluster
    /// stands.
    fn newest_analyses(&self) -> Result<Vec<AnalysisRecord>, StoreError> {
        let mut seen = std::collections::BTreeSet::new();
        Ok(self
            .analyses(None, usize::MAX)?
            .into_iter()
            .filter(|r| seen.insert(r.cluster.clone()))
            .collect())
    }
    /// This store's identity.
    fn identity(&self) -> Result<StoreIdentity, StoreError>;
    /// Takes over the clusters another store made (audited against `cluster`).
    fn adopt(
        &self,
        store_id: &str,
        cluster: &str,
        who: &str,
        reason: &str,
        now: jiff::Timestamp,
    ) -> Result<(), StoreError>;
    /// The stores whose clusters this one took over.
    fn adopted(&self) -> Result<Vec<String>, StoreError>;
    /// The installation's key for sealing secret values in spec hashes (made with the store,
    /// never shown).
    fn spec_key(&self) -> Result<crate::model::SpecKey, StoreError>;
    /// Remembers the last revision that validated and was applied.
    fn set_last_good_revision(&self, revision: &str) -> Result<(), StoreError>;
    /// Moves the last good revision from `from` (what this replica read before it fetched)
    /// to `to`; false when another replica moved it meanwhile. Replicas act only on the
    /// revision in force, so one that wakes up behind does not take clusters back.
    fn advance_last_good_revision(&self, from: Option<&str>, to: &str) -> Result<bool, StoreError>;
    /// The last good revision.
    fn last_good_revision(&self) -> Result<Option<String>, StoreError>;

    /// Pins an environment's application to a version (audited; replaces an earlier pin).
    fn pin(&self, p: &Pin) -> Result<(), StoreError>;
    /// Lifts the pin of an application in an environment (audited); returns it.
    fn unpin(
        &self,
        environment: &EnvName,
        app: &AppName,
        who: &str,
        now: jiff::Timestamp,
    ) -> Result<Option<Pin>, StoreError>;
    /// Every pin, lapsed or not.
    fn pins(&self) -> Result<Vec<Pin>, StoreError>;
    /// Forgets pins lapsed at `now`, saying so in the history; returns them.
    fn lapse_pins(&self, now: jiff::Timestamp) -> Result<Vec<Pin>, StoreError>;
    /// Marks a version bad (audited).
    fn veto(&self, v: &Veto) -> Result<(), StoreError>;
    /// Lifts a veto of a version, in one environment or everywhere it was vetoed for every
    /// environment (audited); returns how many were lifted.
    fn unveto(
        &self,
        app: &AppName,
        version: &str,
        environment: Option<&EnvName>,
        who: &str,
        now: jiff::Timestamp,
    ) -> Result<usize, StoreError>;
    /// Every veto.
    fn vetoes(&self) -> Result<Vec<Veto>, StoreError>;
    /// Records a version live and healthy on a cluster (a new record only when it differs
    /// from the cluster's newest).
    fn record_deployed(&self, d: &Deployed) -> Result<(), StoreError>;
    /// What was recorded live and healthy, oldest first.
    fn deployed(&self) -> Result<Vec<Deployed>, StoreError>;
    /// Records a failed rollout, for the flapping guard.
    fn record_failure(&self, f: &Failure) -> Result<(), StoreError>;
    /// Failed rollouts since `since`, oldest first.
    fn failures(&self, since: jiff::Timestamp) -> Result<Vec<Failure>, StoreError>;
    /// Forgets a cluster's failed rollouts (`keelson retry`, audited).
    fn clear_failures(
        &self,
        cluster: &str,
        who: &str,
        now: jiff::Timestamp,
    ) -> Result<usize, StoreError>;
    /// Notes which groups of a cluster are disabled now (by [`Policy::disabled_key`]): a group
    /// newly disabled gets `now`, one no longer disabled is forgotten.
    fn note_disabled(
        &self,
        cluster: &str,
        disabled: &[String],
        now: jiff::Timestamp,
    ) -> Result<(), StoreError>;
    /// When each disabled group was first seen disabled, by [`Policy::disabled_key`].
    fn disabled_since(&self) -> Result<BTreeMap<String, jiff::Timestamp>, StoreError>;

    /// Makes `write` only while no lock of `fence.cluster` newer than `fence.epoch` exists:
    /// [`StoreError::Fenced`] otherwise.
    fn fenced(&self, fence: &Fence, write: Write<'_>) -> Result<(), StoreError>;

    /// Makes the lock epochs of `cluster` (whose lock the caller holds) continue from at least
    /// `seen`, an epoch of this store found on the target; answers the epoch before. One the
    /// store never gave out means it was restored from an older copy: the next holder then
    /// gets a newer one instead of being stopped by it for ever.
    fn raise_epoch(&self, cluster: &str, seen: u64) -> Result<u64, StoreError>;

    /// Says `replica` is alive for `ttl`; answers how many replicas are.
    fn heartbeat(&self, replica: &str, ttl: std::time::Duration) -> Result<usize, StoreError>;

    /// Whether the store answers (a replica that cannot reach it is not ready).
    fn ping(&self) -> Result<(), StoreError>;

    /// Makes a write without a fence (what [`Store::fenced`] does once the fence holds).
    fn write(&self, write: Write<'_>, cluster: &str) -> Result<(), StoreError> {
        match write {
            Write::History(e) => self.record(e),
            Write::Journal(j) => self.put_journal(j),
            Write::ClearJournal => self.clear_journal(cluster),
            Write::Analysis(r) => self.put_analysis(r),
            Write::Deployed(d) => self.record_deployed(d),
            Write::Failure(f) => self.record_failure(f),
        }
    }

    /// The planner's policy at `now`: suspends, held locks of others, approvals, pins,
    /// vetoes and what the controls need.
    fn policy(&self, now: jiff::Timestamp, me: Option<&Owner>) -> Result<Policy, StoreError> {
        let mut p = Policy::at(now);
        p.suspends = self.suspends(now)?;
        p.approvals = self.approvals()?;
        p.pins = self
            .pins()?
            .into_iter()
            .filter(|x| x.in_force(now))
            .collect();
        p.vetoes = self.vetoes()?;
        p.deployed = self.deployed()?;
        // The flapping guard's window and cooldown are at most a week each (the schema says).
        p.failures = self.failures(
            now.checked_sub(jiff::SignedDuration::from_hours(7 * 24))
                .unwrap_or(now),
        )?;
        p.disabled_since = self.disabled_since()?;
        let ident = self.identity()?;
        p.stores = crate::plan::Stores {
            ours: ident.id,
            created: ident.created,
            adopted: self.adopted()?,
        };
        for j in self.journals()? {
            if let (Some(rb), Some(cluster)) = (&j.rollback, parse_cluster(&j.cluster)) {
                p.rollbacks.push(crate::plan::PendingRollback {
                    cluster,
                    revision: j.revision.clone(),
                    error: rb.error.clone(),
                    steps: rb.steps.iter().skip(rb.done).cloned().collect(),
                });
            }
        }
        for r in self.newest_analyses()? {
            if !r.state.blocks() {
                continue;
            }
            if let Some(cluster) = parse_cluster(&r.cluster) {
                p.verdicts.push(crate::plan::AnalysisVerdict {
                    cluster,
                    version: r.version.clone(),
                    spec_hash: r.spec_hash.clone(),
                    hash: r.hash.clone(),
                    held: matches!(r.state, AnalysisState::Held { .. }),
                    why: r.state.outcome(),
                });
            }
        }
        for l in self.locks()? {
            if l.expires_at <= now
                || me.is_some_and(|m| m.token == l.owner.token)
                || owner_gone(&l.owner)
            {
                continue;
            }
            let Some(cluster) = parse_cluster(&l.cluster) else {
                continue;
            };
            p.locks.push(crate::plan::Lock {
                cluster,
                owner: l.owner.to_string(),
                reason: l.reason.clone(),
                expires: l.expires_at,
            });
        }
        Ok(p)
    }
}

/// Whether a lock's owner was a process on this host that no longer runs: its lock will be
/// taken over, so it does not block.
pub fn owner_gone(owner: &Owner) -> bool {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    owner.host == host
        && owner.pid != std::process::id()
        && !crate::provider::local::agent::process::alive(owner.pid)
}

/// A 32-byte key from 64 hex digits.
pub fn parse_key(hex: &str) -> Option<crate::model::SpecKey> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut b = [0u8; 32];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(crate::model::SpecKey::new(b))
}

/// Parses `env/target/name` back into a cluster id.
pub fn parse_cluster(s: &str) -> Option<crate::model::ClusterId> {
    let mut parts = s.splitn(3, '/');
    let env = crate::spec::EnvName::new(parts.next()?).ok()?;
    let target = crate::spec::TargetName::new(parts.next()?).ok()?;
    let name = crate::model::ClusterName::parse(parts.next()?).ok()?;
    Some(crate::model::ClusterId {
        environment: env,
        target,
        name,
    })
}
