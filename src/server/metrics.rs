//! Prometheus metrics of the daemon.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A revision label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabel {
    /// The revision applied.
    pub revision: String,
}

/// A result label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok`, `failed`, `refused`, `held`.
    pub result: String,
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    /// 1 for the revision in force.
    pub revision: Family<RevisionLabel, Gauge>,
    /// Unix time of the last sync.
    pub last_sync: Gauge<f64, AtomicU64>,
    /// 1 if the last sync succeeded.
    pub last_sync_success: Gauge,
    /// Reconcile durations.
    pub reconcile_seconds: Histogram,
    /// Clusters the last plan would change.
    pub plan_changes: Gauge,
    /// Clusters actuated, by result.
    pub actuations: Family<ResultLabel, Counter>,
    /// Steps executed.
    pub steps: Counter,
    /// Suspends in force.
    pub suspends: Gauge,
    /// Drift restored.
    pub drift_healed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keelson");
        let m = Self {
            registry: Registry::default(),
            revision: Family::default(),
            last_sync: Gauge::default(),
            last_sync_success: Gauge::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            plan_changes: Gauge::default(),
            actuations: Family::default(),
            steps: Counter::default(),
            suspends: Gauge::default(),
            drift_healed: Counter::default(),
        };
        registry.register(
            "revision",
            "The config revision in force (value 1)",
            m.revision.clone(),
        );
        registry.register(
            "last_sync_timestamp_seconds",
            "Unix time of the last sync",
            m.last_sync.clone(),
        );
        registry.register(
            "last_sync_success",
            "1 if the last sync succeeded, 0 if not",
            m.last_sync_success.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            m.reconcile_seconds.clone(),
        );
        registry.register(
            "plan_changes",
            "Clusters the last plan would change",
            m.plan_changes.clone(),
        );
        registry.register(
            "actuations",
            "Clusters actuated, by result",
            m.actuations.clone(),
        );
        registry.register("actuation_steps", "Steps executed", m.steps.clone());
        registry.register("suspends", "Suspends in force", m.suspends.clone());
        registry.register(
            "drift_healed",
            "Clusters restored from drift",
            m.drift_healed.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
