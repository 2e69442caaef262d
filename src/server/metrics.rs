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

/// A notification destination label: `environment/name`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabel {
    /// The environment declaring it and its name.
    pub destination: String,
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
    /// Clusters the flapping guard leaves alone for now.
    pub unhappy: Gauge,
    /// Notifications delivered, per destination.
    pub notifications_sent: Family<DestinationLabel, Gauge>,
    /// Notifications given up on or dropped, per destination.
    pub notification_dead_letters: Family<DestinationLabel, Gauge>,
    /// Drift restored.
    pub drift_healed: Counter,
    /// Replicas sharing the state store, this one included.
    pub replicas: Gauge,
    /// Cluster locks this replica holds (clusters it is acting on).
    pub locks_held: Family<ReplicaLabel, Gauge>,
}

/// The `replica` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabel {
    /// The replica's name (`--replica`, else host/pid).
    pub replica: String,
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
            unhappy: Gauge::default(),
            notifications_sent: Family::default(),
            notification_dead_letters: Family::default(),
            drift_healed: Counter::default(),
            replicas: Gauge::default(),
            locks_held: Family::default(),
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
            "notifications_sent",
            "Notifications delivered, per destination (environment/name)",
            m.notifications_sent.clone(),
        );
        registry.register(
            "notification_dead_letters",
            "Notifications given up on after their retries, refused by the receiver, or dropped with the queue full, per destination",
            m.notification_dead_letters.clone(),
        );
        registry.register(
            "unhappy_clusters",
            "Clusters whose rollouts keep failing, left alone by the flapping guard until their cooldown ends",
            m.unhappy.clone(),
        );
        registry.register(
            "drift_healed",
            "Clusters restored from drift",
            m.drift_healed.clone(),
        );
        registry.register(
            "replicas",
            "Replicas sharing the state store, this one included",
            m.replicas.clone(),
        );
        registry.register(
            "cluster_locks_held",
            "Cluster locks this replica holds: the clusters it is acting on",
            m.locks_held.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// Metrics with the canary analyses of `store` exported too (`keelson_analysis_*`, read
    /// at each scrape, so they move while an analysis runs).
    pub fn with_analyses(store: std::sync::Arc<dyn crate::store::Store>) -> Self {
        let mut m = Self::default();
        m.registry
            .register_collector(Box::new(AnalysisCollector(store)));
        m
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The newest canary analysis of each cluster, as metrics.
struct AnalysisCollector(std::sync::Arc<dyn crate::store::Store>);

impl std::fmt::Debug for AnalysisCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnalysisCollector")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnalysisLabels {
    cluster: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ValueLabels {
    metric: String,
    group: &'static str,
}

impl prometheus_client::collector::Collector for AnalysisCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType;
        let newest = self.0.newest_analyses().unwrap_or_default();
        let labels = |r: &crate::store::AnalysisRecord| AnalysisLabels {
            cluster: r.cluster.clone(),
            version: r.version.clone(),
        };
        let mut state = encoder.encode_descriptor(
            "keelson_analysis_state",
            "Where the newest canary analysis of each cluster stands (1 for its state)",
            None,
            MetricType::Gauge,
        )?;
        for r in &newest {
            state
                .encode_family(&(
                    labels(r),
                    StateLabel {
                        state: r.state.word(),
                    },
                ))?
                .encode_gauge(&1i64)?;
        }
        let mut counts = encoder.encode_descriptor(
            "keelson_analysis_measurements",
            "Measurements of the newest canary analysis of each cluster, by outcome",
            None,
            MetricType::Gauge,
        )?;
        for r in &newest {
            for o in [
                crate::analysis::Outcome::Pass,
                crate::analysis::Outcome::Fail,
                crate::analysis::Outcome::Inconclusive,
            ] {
                let n = r.measurements.iter().filter(|m| m.outcome == o).count();
                counts
                    .encode_family(&(
                        labels(r),
                        OutcomeLabel {
                            outcome: o.as_str(),
                        },
                    ))?
                    .encode_gauge(&(n as i64))?;
            }
        }
        let mut values = encoder.encode_descriptor(
            "keelson_analysis_metric_value",
            "Each metric's value in the newest measurement, for the canary and the baseline",
            None,
            MetricType::Gauge,
        )?;
        for r in &newest {
            let Some(m) = r.latest() else { continue };
            for v in &m.metrics {
                let pairs = [
                    ("canary", Some(&v.canary)),
                    ("baseline", v.baseline.as_ref()),
                ];
                for (group, sample) in pairs {
                    if let Some(x) = sample.and_then(crate::analysis::Sample::value) {
                        values
                            .encode_family(&(
                                labels(r),
                                ValueLabels {
                                    metric: v.name.clone(),
                                    group,
                                },
                            ))?
                            .encode_gauge(&x)?;
                    }
                }
            }
        }
        let mut score = encoder.encode_descriptor(
            "keelson_analysis_score",
            "The newest measurement's score, for analyses with score thresholds",
            None,
            MetricType::Gauge,
        )?;
        for r in &newest {
            if let Some(s) = r.latest().and_then(|m| m.score) {
                score
                    .encode_family(&labels(r))?
                    .encode_gauge(&i64::from(s))?;
            }
        }
        Ok(())
    }
}
