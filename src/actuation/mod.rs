//! The actuation contract, as data: a plan step is an operation a provider runs or a gate the
//! engine waits on; a provider says what it can do; a rollback is the inverse of the operations
//! that ran. Pure: the planner, the engine and the providers all speak it.

mod capabilities;
mod gate;
mod op;
mod rollback;
mod step;

pub use capabilities::{Capabilities, TrafficPrecision, effective_shares, instances_in_traffic};
pub use gate::{Gate, Verdict};
pub use op::{AsSpecRef, Op, SpecRef, TrafficChange};
pub use rollback::rollback_of;
pub use step::Step;
