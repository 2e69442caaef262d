//! Canary analysis and verification checks, as the spec states them.

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use super::Duration;

/// A number in a criterion (`max: 0.05`): finite, compared and hashed by value, so strategies
/// that hold one stay `Eq` and `Hash`.
#[derive(Debug, Clone, Copy, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Threshold(f64);

impl Threshold {
    /// A threshold; `None` for NaN or an infinity.
    pub fn new(v: f64) -> Option<Self> {
        v.is_finite().then_some(Self(v))
    }

    /// The number.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl PartialEq for Threshold {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Threshold {}

impl Hash for Threshold {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where measurements come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnalysisProvider {
    /// The local target's own proxy counters: nothing to install.
    #[default]
    Builtin,
    /// A Prometheus server, set once per environment (`spec.analysis.prometheus`).
    Prometheus,
}

impl AnalysisProvider {
    /// The name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Builtin => "builtin",
            Self::Prometheus => "prometheus",
        }
    }
}

/// Kayenta-style score thresholds: the share of judged metrics that pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Score {
    /// At least this (0-100) passes the measurement.
    pub pass: u8,
    /// At least this (and below `pass`) makes it inconclusive; below, it fails.
    pub marginal: u8,
}

/// One metric and what it must satisfy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricCheck {
    /// Its name in reports.
    pub name: String,
    /// What to measure: a builtin query (`error-rate`, `p95-latency`, ...) or PromQL with
    /// placeholders.
    pub query: String,
    /// PromQL for the baseline; by default `query` with `{{canary}}` naming the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_query: Option<String>,
    /// The canary's value is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Threshold>,
    /// The canary's value is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Threshold>,
    /// The canary's value exceeds the baseline's by at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<Threshold>,
    /// The canary's value is at most this many times the baseline's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio: Option<Threshold>,
}

impl MetricCheck {
    /// Whether a criterion compares with the baseline.
    pub fn compares(&self) -> bool {
        self.max_increase.is_some() || self.max_ratio.is_some()
    }
}

impl fmt::Display for MetricCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(m) = self.max {
            parts.push(format!("<= {m}"));
        }
        if let Some(m) = self.min {
            parts.push(format!(">= {m}"));
        }
        if let Some(m) = self.max_increase {
            parts.push(format!("<= baseline + {m}"));
        }
        if let Some(m) = self.max_ratio {
            parts.push(format!("<= {m} x baseline"));
        }
        write!(f, "{} ({}) {}", self.name, self.query, parts.join(", "))
    }
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

/// How a canary is judged while it takes traffic: measured every `interval` during each pause
/// (the pause is the observation window), against the group it replaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Analysis {
    /// Where measurements come from.
    #[serde(default)]
    pub provider: AnalysisProvider,
    /// One measurement per interval.
    #[serde(default = "ten_seconds")]
    pub interval: Duration,
    /// Failed measurements tolerated; one more fails the canary.
    #[serde(default)]
    pub failure_limit: u32,
    /// Inconclusive measurements tolerated; one more holds the rollout for a person.
    #[serde(default)]
    pub inconclusive_limit: u32,
    /// Score thresholds; without them any failing metric fails the measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<Score>,
    /// The metrics.
    pub metrics: Vec<MetricCheck>,
}

impl Analysis {
    /// Measurements in a window of `window`: one per whole interval, at least one.
    pub fn measurements_in(&self, window: Duration) -> u32 {
        let n = window.as_millis() / self.interval.as_millis().max(1);
        u32::try_from(n).unwrap_or(u32::MAX).max(1)
    }
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

/// A check run once the new version takes all traffic, before the old groups go: a command
/// that must exit 0 within its timeout.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyCheck {
    /// Its name in reports.
    pub name: String,
    /// The command and its arguments; `{url}` becomes the cluster's traffic URL.
    pub command: Vec<String>,
    /// How long it may run; then its process group is killed and the check fails.
    #[serde(default = "thirty_seconds")]
    pub timeout: Duration,
}

impl fmt::Display for VerifyCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (`{}`, timeout {})",
            self.name,
            self.command.join(" "),
            self.timeout
        )
    }
}

/// Where an environment's Prometheus is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusSource {
    /// Its base URL, e.g. `http://prometheus.monitoring:9090`.
    pub address: String,
    /// A file holding a bearer token to send, read at each query (never printed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<String>,
}

/// `spec.analysis` of an environment: where its metrics are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSources {
    /// The Prometheus that `provider: prometheus` analyses query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSource>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_measurement_counts() {
        let a: Analysis = serde_json::from_value(json!({
            "metrics": [{"name": "errors", "query": "error-rate", "max": 0.05}]
        }))
        .unwrap();
        assert_eq!(a.provider, AnalysisProvider::Builtin);
        assert_eq!(a.interval, Duration::from_secs(10));
        assert_eq!((a.failure_limit, a.inconclusive_limit), (0, 0));
        assert_eq!(a.measurements_in(Duration::from_secs(30)), 3);
        assert_eq!(a.measurements_in(Duration::from_secs(35)), 3);
        assert_eq!(a.measurements_in(Duration::from_secs(5)), 1);
        assert_eq!(a.metrics[0].to_string(), "errors (error-rate) <= 0.05",);
    }

    #[test]
    fn thresholds_compare_by_value() {
        assert_eq!(Threshold::new(0.5), Threshold::new(0.5));
        assert!(Threshold::new(f64::NAN).is_none());
        assert!(Threshold::new(f64::INFINITY).is_none());
    }
}
