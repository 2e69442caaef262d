//! The engine: executes plan steps against providers. This first part runs one step; locks,
//! guard re-checks against fresh observation and rollback build on it.

mod execute;

pub use execute::{ExecError, execute_step};
