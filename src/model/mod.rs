//! The shapes the planner works on: desired state (compiled from specs) and, later, live state.

mod desired;
mod ids;
mod observed;
mod stamp;

pub use desired::{
    Artifact, CapacityRange, DesiredCluster, DesiredEnvironment, DesiredState, Ec2Instance, Health,
    HttpCheck, MASK, Retarget, Route, SourceRef, SpecHash, SpecKey, Target, WorkloadSpec,
    has_credentials, promotion_rank, secret_env,
};
pub use ids::{ClusterId, ClusterName, Sequence, SequenceError, ServerGroupName};
pub use observed::{Instance, InstanceHealth, ObservedCluster, ObservedState, ServerGroup};
pub use stamp::Stamp;

/// Label keys that carry identity on every provider; names are never parsed.
pub mod labels {
    /// The application.
    pub const APP: &str = "keelson.io/app";
    /// The cluster name (`app-stack-detail`).
    pub const CLUSTER: &str = "keelson.io/cluster";
    /// The environment.
    pub const ENVIRONMENT: &str = "keelson.io/environment";
    /// The stack, when there is one.
    pub const STACK: &str = "keelson.io/stack";
    /// The detail, when there is one.
    pub const DETAIL: &str = "keelson.io/detail";
    /// The server group's sequence number.
    pub const SEQUENCE: &str = "keelson.io/sequence";
    /// Marks resources Keelson manages.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// The state store that made the server group.
    pub const STORE: &str = "keelson.io/store";
    /// The fencing stamp of the last holder that acted on the server group
    /// ([`super::Stamp`]); an annotation on Kubernetes, the tag `keelson:epoch` on EC2.
    pub const EPOCH: &str = "keelson.io/epoch";
}
