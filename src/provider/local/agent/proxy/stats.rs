//! What the proxy counts per server group: responses by status class and their latency, in
//! atomics bumped on the request path (a few relaxed additions), read as
//! [`TrafficCounters`] by the builtin analysis and exported to Prometheus.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::analysis::counters::{
    BUCKETS, CLASSES, LATENCY_BOUNDS_US, TrafficCounters, bucket_of, class_of,
};

/// The labels of a group's series.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct GroupLabels {
    /// The environment.
    pub environment: String,
    /// The application.
    pub application: String,
    /// The cluster's name.
    pub cluster: String,
    /// The server group.
    pub server_group: String,
    /// The version it runs.
    pub version: String,
}

/// One server group's counters.
#[derive(Debug)]
pub struct GroupStats {
    /// Its labels.
    pub labels: GroupLabels,
    responses: [AtomicU64; 5],
    latency: [AtomicU64; BUCKETS],
    latency_sum_us: AtomicU64,
}

impl GroupStats {
    /// Counters at zero for a group.
    pub fn new(labels: GroupLabels) -> Self {
        Self {
            labels,
            responses: Default::default(),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_us: AtomicU64::new(0),
        }
    }

    /// Counts one response of `status` that took `took`.
    pub fn observe(&self, status: u16, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.responses[class_of(status)].fetch_add(1, Ordering::Relaxed);
        self.latency[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> TrafficCounters {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TrafficCounters {
            responses: std::array::from_fn(|i| load(&self.responses[i])),
            latency: self.latency.iter().map(load).collect(),
            latency_sum_us: load(&self.latency_sum_us),
        }
    }
}

/// Every group's counters, by cluster key and sequence: shared by the proxies, the agent's
/// control requests and its metrics endpoint.
pub type Registry = Arc<RwLock<BTreeMap<(String, u16), Arc<GroupStats>>>>;

/// The registry as a Prometheus collector.
#[derive(Debug)]
pub struct Exported(pub Registry);

/// A class's label set on top of a group's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

impl Collector for Exported {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let groups: Vec<(GroupLabels, TrafficCounters)> = self
            .0
            .read()
            .map(|r| {
                r.values()
                    .map(|g| (g.labels.clone(), g.snapshot()))
                    .collect()
            })
            .unwrap_or_default();
        let mut responses = encoder.encode_descriptor(
            "keelson_proxy_responses",
            "Responses the local proxy relayed or made, by server group and status class",
            None,
            MetricType::Counter,
        )?;
        for (labels, c) in &groups {
            for (i, class) in CLASSES.iter().enumerate() {
                let set = (labels.clone(), ClassLabels { class });
                responses
                    .encode_family(&set)?
                    .encode_counter::<NoLabelSet, _, u64>(&c.responses[i], None)?;
            }
        }
        let mut latency = encoder.encode_descriptor(
            "keelson_proxy_response_duration_seconds",
            "Time from a request's arrival to the end of its response, by server group",
            None,
            MetricType::Histogram,
        )?;
        for (labels, c) in &groups {
            let buckets: Vec<(f64, u64)> = c
                .latency
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let bound = LATENCY_BOUNDS_US
                        .get(i)
                        .map_or(f64::INFINITY, |&b| b as f64 / 1e6);
                    (bound, n)
                })
                .collect();
            latency
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(
                    c.latency_sum_us as f64 / 1e6,
                    c.requests(),
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

/// The registry in Prometheus' text format.
pub fn exposition(registry: &Registry) -> String {
    let mut r = prometheus_client::registry::Registry::default();
    r.register_collector(Box::new(Exported(registry.clone())));
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_exports() {
        let g = Arc::new(GroupStats::new(GroupLabels {
            environment: "prod".into(),
            application: "web".into(),
            cluster: "web".into(),
            server_group: "web-v001".into(),
            version: "1.0.0".into(),
        }));
        g.observe(200, Duration::from_millis(20));
        g.observe(503, Duration::from_millis(2));
        let s = g.snapshot();
        assert_eq!(s.responses, [0, 1, 0, 0, 1]);
        assert_eq!(s.latency_sum_us, 22_000);
        let reg: Registry = Arc::default();
        reg.write().unwrap().insert(("prod/local/web".into(), 1), g);
        let text = exposition(&reg);
        assert!(
            text.contains(r#"keelson_proxy_responses_total{environment="prod",application="web",cluster="web",server_group="web-v001",version="1.0.0",class="5xx"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"keelson_proxy_response_duration_seconds_bucket{le="0.02",environment="prod",application="web",cluster="web",server_group="web-v001",version="1.0.0"} 2"#), "{text}");
        assert!(
            text.contains("keelson_proxy_response_duration_seconds_count{"),
            "{text}"
        );
    }
}
