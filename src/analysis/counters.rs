//! A server group's traffic as the local proxy counts it: responses by status class and a
//! latency histogram, cumulative since the proxy started. The builtin queries are pure
//! functions of the difference between two readings.

use serde::{Deserialize, Serialize};

/// Upper bounds of the latency buckets, in microseconds; one more bucket holds the rest.
/// About 25% apart from 0.5 ms to 10 s, so a quantile read from them is within a bucket's
/// width of the truth, and the Prometheus histogram uses the same bounds.
pub const LATENCY_BOUNDS_US: [u64; 41] = [
    500, 1_000, 1_500, 2_000, 2_500, 3_000, 4_000, 5_000, 6_000, 8_000, 10_000, 12_500, 15_000,
    20_000, 25_000, 30_000, 40_000, 50_000, 60_000, 80_000, 100_000, 125_000, 150_000, 200_000,
    250_000, 300_000, 400_000, 500_000, 600_000, 800_000, 1_000_000, 1_250_000, 1_500_000,
    2_000_000, 2_500_000, 3_000_000, 4_000_000, 5_000_000, 6_000_000, 8_000_000, 10_000_000,
];

/// Buckets in a histogram: the bounded ones and the one above the last bound.
pub const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// The bucket a latency of `us` microseconds falls in.
pub fn bucket_of(us: u64) -> usize {
    LATENCY_BOUNDS_US.partition_point(|&b| b < us)
}

/// Status classes counted: 1xx to 5xx.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The class index (0 for 1xx ... 4 for 5xx) of a status; anything else counts as 5xx.
pub fn class_of(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// One server group's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficCounters {
    /// Responses by status class, 1xx first.
    pub responses: [u64; 5],
    /// Responses by latency bucket (not cumulative), [`BUCKETS`] of them.
    pub latency: Vec<u64>,
    /// Sum of all latencies, in microseconds.
    pub latency_sum_us: u64,
}

impl Default for TrafficCounters {
    fn default() -> Self {
        Self {
            responses: [0; 5],
            latency: vec![0; BUCKETS],
            latency_sum_us: 0,
        }
    }
}

impl TrafficCounters {
    /// Responses counted.
    pub fn requests(&self) -> u64 {
        self.responses.iter().sum()
    }

    /// What was counted between `earlier` and `self`; `None` when a counter went backwards
    /// (the proxy restarted in between, so the interval cannot be known).
    pub fn since(&self, earlier: &Self) -> Option<Self> {
        let sub = |a: u64, b: u64| a.checked_sub(b);
        let mut responses = [0; 5];
        for (i, r) in responses.iter_mut().enumerate() {
            *r = sub(self.responses[i], earlier.responses[i])?;
        }
        if self.latency.len() != earlier.latency.len() {
            return None;
        }
        let latency = self
            .latency
            .iter()
            .zip(&earlier.latency)
            .map(|(a, b)| sub(*a, *b))
            .collect::<Option<Vec<u64>>>()?;
        Some(Self {
            responses,
            latency,
            latency_sum_us: sub(self.latency_sum_us, earlier.latency_sum_us)?,
        })
    }

    /// The share of 5xx responses; `None` without responses.
    pub fn error_rate(&self) -> Option<f64> {
        let n = self.requests();
        (n > 0).then(|| self.responses[4] as f64 / n as f64)
    }

    /// Responses per second over `seconds`.
    pub fn request_rate(&self, seconds: f64) -> Option<f64> {
        (seconds > 0.0).then(|| self.requests() as f64 / seconds)
    }

    /// The `q` quantile of latency in seconds, interpolated within its bucket as Prometheus'
    /// `histogram_quantile` does; `None` without responses.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        // Counters from an agent with other bounds are not read against these.
        if total == 0 || !(0.0..=1.0).contains(&q) || self.latency.len() != BUCKETS {
            return None;
        }
        let rank = q * total as f64;
        let mut below = 0u64;
        for (i, &n) in self.latency.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let lower = match i.checked_sub(1) {
                    Some(j) => LATENCY_BOUNDS_US.get(j).copied().unwrap_or(0),
                    None => 0,
                };
                let Some(&upper) = LATENCY_BOUNDS_US.get(i) else {
                    // Above the last bound: the last bound is all that is known.
                    return Some(lower as f64 / 1e6);
                };
                let within = (rank - below as f64) / n as f64;
                return Some((lower as f64 + (upper - lower) as f64 * within) / 1e6);
            }
            below += n;
        }
        Some(*LATENCY_BOUNDS_US.last().unwrap_or(&0) as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(by_latency_ms: &[(u64, u64)], errors: u64) -> TrafficCounters {
        let mut c = TrafficCounters::default();
        for &(ms, n) in by_latency_ms {
            c.latency[bucket_of(ms * 1000)] += n;
            c.latency_sum_us += ms * 1000 * n;
            c.responses[1] += n;
        }
        c.responses[1] -= errors;
        c.responses[4] += errors;
        c
    }

    #[test]
    fn buckets_and_classes() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(500), 0);
        assert_eq!(bucket_of(501), 1);
        assert_eq!(bucket_of(20_000_000), BUCKETS - 1);
        assert_eq!(class_of(204), 1);
        assert_eq!(class_of(503), 4);
        assert_eq!(class_of(42), 4);
    }

    #[test]
    fn rates_and_quantiles() {
        let c = counters(&[(20, 90), (50, 10)], 3);
        assert_eq!(c.requests(), 100);
        assert_eq!(c.error_rate(), Some(0.03));
        assert_eq!(c.request_rate(10.0), Some(10.0));
        // 20 ms lies in (15, 20]: the median interpolates within it.
        let p50 = c.latency_quantile(0.5).unwrap();
        assert!((0.015..=0.020).contains(&p50), "{p50}");
        // The slowest tenth is at 50 ms, in (40, 50].
        let p95 = c.latency_quantile(0.95).unwrap();
        assert!((0.040..=0.050).contains(&p95), "{p95}");
        assert_eq!(TrafficCounters::default().error_rate(), None);
        assert_eq!(TrafficCounters::default().latency_quantile(0.5), None);
    }

    #[test]
    fn differences_and_resets() {
        let a = counters(&[(20, 10)], 1);
        let b = counters(&[(20, 30)], 2);
        let d = b.since(&a).unwrap();
        assert_eq!(d.requests(), 20);
        assert_eq!(d.responses[4], 1);
        // A restarted proxy counts from zero again: the interval is unknown.
        assert!(a.since(&b).is_none());
    }
}
