//! The engine: executes plans against providers, safely, for every caller (CLI, daemon,
//! rollback). Cluster locks, suspend checks and the traffic guard are enforced here, before
//! every step, against fresh observation, with the core's own rules; operations are journaled
//! and a failed step is rolled back by the inverses of what ran.

mod analysis;
mod cluster;
mod lock;
mod progress;
mod run;

pub use cluster::resolve;
pub use lock::{ClusterLock, LOCK_TTL, Refusal};
pub use progress::{LogProgress, Progress};
pub use run::{ApplyReport, ClusterOutcome, ClusterReport, Engine, Slots};

/// Why a run stops when its store does not answer: `what` went wrong reading or writing it.
fn store_silent(what: impl std::fmt::Display) -> String {
    format!("the state store does not answer ({what})")
}
