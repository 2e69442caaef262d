//! Reporting progress while clusters move.

use crate::model::ClusterId;

/// Receives progress as the engine works.
pub trait Progress: Send + Sync {
    /// Step `index` (0-based) of `total` is starting.
    fn step(&self, cluster: &ClusterId, index: usize, total: usize, description: &str);
    /// The cluster is finished, with a one-line outcome.
    fn done(&self, cluster: &ClusterId, outcome: &str, ok: bool);
    /// Something worth saying that is not a step.
    fn note(&self, cluster: &ClusterId, message: &str);
}

/// Plain log lines on stderr (no terminal).
#[derive(Debug, Default)]
pub struct LogProgress;

impl Progress for LogProgress {
    fn step(&self, cluster: &ClusterId, index: usize, total: usize, description: &str) {
        eprintln!("{cluster}: step {}/{total}: {description}", index + 1);
    }

    fn done(&self, cluster: &ClusterId, outcome: &str, _ok: bool) {
        eprintln!("{cluster}: {outcome}");
    }

    fn note(&self, cluster: &ClusterId, message: &str) {
        eprintln!("{cluster}: {message}");
    }
}
