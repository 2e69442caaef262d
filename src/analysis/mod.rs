//! Canary analysis: a new server group judged by its metrics against the group it replaces.
//!
//! The core is pure: [`counters`] (the proxy's counts and what they give), [`query`] (builtin
//! queries and PromQL placeholders) and [`judge`] (metric, measurement and analysis verdicts).
//! The sources at the edge, behind [`MetricsSource`], read the local proxy ([`builtin`]) or a
//! Prometheus server ([`prometheus`]).

pub mod builtin;
pub mod counters;
pub mod judge;
pub mod prometheus;
pub mod query;
pub mod source;

pub use judge::{Conclusion, Measurement, MetricResult, Outcome, Sample, conclude, judge_metric};
pub use source::{Group, Mark, MetricsSource, Subject};

/// One measurement of `analysis` over the interval begun with `mark`: every metric from
/// `source`, judged.
pub async fn measure(
    source: &dyn MetricsSource,
    subject: &Subject,
    analysis: &crate::spec::Analysis,
    mark: Mark,
    elapsed: std::time::Duration,
    step: u8,
    at: jiff::Timestamp,
) -> Measurement {
    let pairs = source
        .measure(subject, &analysis.metrics, mark, elapsed)
        .await;
    let results = analysis
        .metrics
        .iter()
        .zip(pairs)
        .map(|(m, (c, b))| judge_metric(m, c, b))
        .collect();
    Measurement::judge(analysis, at, step, results)
}
