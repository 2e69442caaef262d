//! Providers: where server groups run. One contract for the local process cluster, Kubernetes
//! and EC2: `observe(target)`, `apply(target, cluster, op)` and `capabilities()`. Every operation
//! is idempotent, names its target (no provider needs to have observed first), and identifies
//! groups by labels, never by parsing names.

pub mod ec2;
pub mod kubernetes;
pub mod local;
pub mod memory;

use std::sync::Arc;

use async_trait::async_trait;

use crate::actuation::{Capabilities, Op};
use crate::analysis::counters::TrafficCounters;
use crate::model::{ClusterId, DesiredCluster, ObservedCluster, Sequence, Stamp};
use crate::spec::{EnvName, TargetSpec};

/// A target within its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRef {
    /// The environment.
    pub environment: EnvName,
    /// The target.
    pub target: TargetSpec,
}

impl TargetRef {
    /// `env/target`, the key of unavailable targets in the observed state.
    pub fn key(&self) -> String {
        format!("{}/{}", self.environment, self.target.name)
    }
}

/// An operation as a provider executes it: the spec it creates is the whole desired cluster.
pub type ProviderOp = Op<Arc<DesiredCluster>>;

/// The underlying cause of a provider error, kept for the report's `Caused by:` lines.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Why a provider call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The server group does not exist.
    #[error("server group {cluster} {sequence} does not exist")]
    NotFound {
        /// The cluster.
        cluster: String,
        /// The sequence.
        sequence: Sequence,
    },
    /// The provider could not be reached or refused the call for now; worth retrying.
    #[error("{what}")]
    Unavailable {
        /// What failed, and what to do.
        what: String,
        /// The cause.
        #[source]
        source: Option<Cause>,
    },
    /// The target carries a newer holder's stamp than the call's: this holder has lost the
    /// cluster and must stop (not roll back: the newer holder goes on).
    #[error("refused: {}", .stamp.superseded_why(*.newer))]
    Superseded {
        /// The stamp the call carried.
        stamp: Stamp,
        /// The newer epoch found on the target.
        newer: u64,
    },
    /// The call can never succeed as made.
    #[error("{what}")]
    Invalid {
        /// What is wrong, and what to do.
        what: String,
        /// The cause.
        #[source]
        source: Option<Cause>,
    },
}

impl ProviderError {
    /// Unavailable, with no cause beyond the words.
    pub fn unavailable(what: impl Into<String>) -> Self {
        Self::Unavailable {
            what: what.into(),
            source: None,
        }
    }

    /// Unavailable because of `cause`.
    pub fn unavailable_by(
        what: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable {
            what: what.into(),
            source: Some(Arc::new(cause)),
        }
    }

    /// Invalid, with no cause beyond the words.
    pub fn invalid(what: impl Into<String>) -> Self {
        Self::Invalid {
            what: what.into(),
            source: None,
        }
    }

    /// Invalid because of `cause`.
    pub fn invalid_by(
        what: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Invalid {
            what: what.into(),
            source: Some(Arc::new(cause)),
        }
    }

    /// The message and its causes on one line, for places that keep one line (history).
    pub fn chain(&self) -> String {
        crate::report::chain(self)
    }
}

/// What taking a target's own lock on a cluster came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// Ours until it expires or is released.
    Acquired,
    /// Someone else holds it.
    Held {
        /// Who.
        holder: String,
        /// When it expires unless renewed.
        until: String,
    },
}

/// The contract every target fills. Every call may be retried safely.
#[async_trait]
pub trait Provider: Send + Sync {
    /// What it can do: traffic precision, its own lease, how often to poll it, how much at once.
    fn capabilities(&self) -> Capabilities;

    /// Observes every Keelson cluster on a target.
    async fn observe(&self, target: &TargetRef) -> Result<Vec<ObservedCluster>, ProviderError>;

    /// Runs one operation on a cluster of a target; an operation that already took effect
    /// changes nothing. `stamp` is written on the server groups it touches (where the target
    /// keeps labels, annotations or tags), so a holder that lost the cluster can tell; a
    /// target that can compare stamps refuses an older one with [`ProviderError::Superseded`].
    async fn apply(
        &self,
        target: &TargetRef,
        cluster: &ClusterId,
        op: &ProviderOp,
        stamp: &Stamp,
    ) -> Result<(), ProviderError>;

    /// Each server group's traffic counters, cumulative, where the target counts them itself
    /// (the local proxy): the builtin analysis source reads them.
    async fn traffic(
        &self,
        _target: &TargetRef,
        _cluster: &ClusterId,
    ) -> Result<Vec<(Sequence, TrafficCounters)>, ProviderError> {
        Err(ProviderError::invalid(
            "this target does not count its traffic; use `provider: prometheus` for its analyses",
        ))
    }

    /// The URL a cluster serves on, for verification checks' `{url}`, if it has one.
    fn traffic_url(&self, _target: &TargetRef, _cluster: &DesiredCluster) -> Option<String> {
        None
    }

    /// Takes the target's own lock on a cluster for `holder`, where the target has one (a
    /// Kubernetes Lease), on top of the store's lock: instances with separate stores then still
    /// never actuate one cluster together. Targets without one always grant it.
    async fn acquire_lease(
        &self,
        _target: &TargetRef,
        _cluster: &ClusterId,
        _holder: &str,
        _ttl: std::time::Duration,
    ) -> Result<LeaseOutcome, ProviderError> {
        Ok(LeaseOutcome::Acquired)
    }

    /// Renews a lease taken with [`Provider::acquire_lease`]; false once it is lost.
    async fn renew_lease(
        &self,
        _target: &TargetRef,
        _cluster: &ClusterId,
        _holder: &str,
        _ttl: std::time::Duration,
    ) -> Result<bool, ProviderError> {
        Ok(true)
    }

    /// Gives a lease back.
    async fn release_lease(
        &self,
        _target: &TargetRef,
        _cluster: &ClusterId,
        _holder: &str,
    ) -> Result<(), ProviderError> {
        Ok(())
    }
}
