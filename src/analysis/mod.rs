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
