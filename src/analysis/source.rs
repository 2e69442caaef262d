//! Where measurements come from, behind one trait: the local proxy's own counters
//! ([`super::builtin`]) or a Prometheus server ([`super::prometheus`]).

use std::time::Duration;

use async_trait::async_trait;

use super::counters::TrafficCounters;
use super::judge::Sample;
use crate::model::{ClusterId, Sequence, ServerGroupName};
use crate::spec::{AppName, MetricCheck};

/// A server group being measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its name.
    pub name: ServerGroupName,
    /// Its sequence.
    pub sequence: Sequence,
    /// The version it runs.
    pub version: String,
}

/// What one analysis compares: a canary and the group it replaces, in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The cluster.
    pub cluster: ClusterId,
    /// Its application.
    pub app: AppName,
    /// The new group.
    pub canary: Group,
    /// The group it replaces.
    pub baseline: Group,
}

/// What a source remembers from the start of an interval.
#[derive(Debug, Clone, Default)]
pub struct Mark {
    /// The canary's and the baseline's counters then (builtin only); `None` when they could
    /// not be read.
    pub counters: Option<(TrafficCounters, TrafficCounters)>,
}

/// A canary's and a baseline's sample of one metric.
pub type Pair = (Sample, Option<Sample>);

/// A source of measurements.
#[async_trait]
pub trait MetricsSource: Send + Sync {
    /// Starts an interval now.
    async fn begin(&self, subject: &Subject) -> Mark;
    /// Measures every metric over the interval begun with `mark`, `elapsed` ago: the canary's
    /// sample and, for metrics that compare, the baseline's. Never fails: what could not be
    /// measured is a missing sample saying why.
    async fn measure(
        &self,
        subject: &Subject,
        metrics: &[MetricCheck],
        mark: Mark,
        elapsed: Duration,
    ) -> Vec<Pair>;
}
