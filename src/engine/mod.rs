//! The engine: executes plans against providers, safely, for every caller (CLI, daemon,
//! rollback). Cluster locks, suspend checks and the traffic guard are enforced here, before
//! every step, against fresh observation; a failed step rolls the cluster back.

mod execute;
mod progress;
mod run;

pub use execute::{ExecError, execute, execute_step};
pub use progress::{LogProgress, Progress};
pub use run::{ApplyReport, ClusterOutcome, ClusterReport, Engine};
