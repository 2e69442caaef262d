//! Providers: where server groups run. One trait for the local process cluster, Kubernetes and
//! EC2; every operation is idempotent and identifies groups by labels, never by parsing names.

pub mod kubernetes;
pub mod local;
pub mod memory;

use async_trait::async_trait;

use crate::model::{ClusterId, DesiredCluster, ObservedCluster, Sequence};
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

/// Why a provider call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The server group does not exist.
    #[error("server group {cluster} {sequence} does not exist")]
    NotFound {
        /// The cluster.
        cluster: String,
        /// The sequence.
        sequence: Sequence,
    },
    /// The provider could not be reached or refused the call; worth retrying.
    #[error("{0}")]
    Unavailable(String),
    /// The call can never succeed as made.
    #[error("{0}")]
    Invalid(String),
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

/// The operations the strategies need. Every call may be retried safely.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Observes every Keelson cluster on a target.
    async fn observe(&self, target: &TargetRef) -> Result<Vec<ObservedCluster>, ProviderError>;
    /// Creates server group `seq` of a cluster with `capacity` instances; a no-op if it exists.
    async fn create_server_group(
        &self,
        cluster: &DesiredCluster,
        seq: Sequence,
        capacity: u32,
        enabled: bool,
    ) -> Result<(), ProviderError>;
    /// Sets a group's instance count.
    async fn resize(
        &self,
        cluster: &ClusterId,
        seq: Sequence,
        capacity: u32,
    ) -> Result<(), ProviderError>;
    /// Puts a group in or out of traffic, with a weight among the enabled groups.
    async fn set_traffic(
        &self,
        cluster: &ClusterId,
        seq: Sequence,
        enabled: bool,
        weight: u8,
    ) -> Result<(), ProviderError>;
    /// Gives a group the cluster's current spec for instances started from now on.
    async fn update_in_place(
        &self,
        cluster: &DesiredCluster,
        seq: Sequence,
    ) -> Result<(), ProviderError>;
    /// Replaces up to `count` instances that run an older spec than their group.
    async fn replace_instances(
        &self,
        cluster: &ClusterId,
        seq: Sequence,
        count: u32,
    ) -> Result<(), ProviderError>;
    /// Starts instances missing from a group.
    async fn heal(&self, cluster: &ClusterId, seq: Sequence) -> Result<(), ProviderError>;
    /// Destroys a group; a no-op if it is gone.
    async fn destroy(&self, cluster: &ClusterId, seq: Sequence) -> Result<(), ProviderError>;

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
