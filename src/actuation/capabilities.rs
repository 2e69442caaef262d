//! What a provider can do, as the planner and the engine need to know it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How precisely a target splits a cluster's traffic between server groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrafficPrecision {
    /// Weights are exact (a proxy or a load balancer with weighted targets).
    Exact,
    /// Traffic moves by whole instances: a group's share is its instances in traffic over all
    /// instances in traffic (a Service selecting pods).
    Instances,
}

/// A provider's capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// How traffic is split.
    pub traffic: TrafficPrecision,
    /// Whether the target has a lock of its own (a Kubernetes Lease) besides the store's.
    pub own_lease: bool,
    /// How often gates should observe the target: often for local processes, rarely for a
    /// cloud API with rate limits.
    pub poll: Duration,
    /// How many clusters' operations it takes at once.
    pub batch: usize,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            traffic: TrafficPrecision::Exact,
            own_lease: false,
            poll: Duration::from_millis(50),
            batch: usize::MAX,
        }
    }
}

/// How many instances of each group take traffic when traffic moves by whole instances, for
/// `(instances, weight)` pairs: as close to the weights as whole instances allow, every group
/// with weight in traffic with at least one instance, a group at full weight with all of them.
pub fn instances_in_traffic(groups: &[(u32, u8)]) -> Vec<u32> {
    let live: Vec<(u32, u8)> = groups
        .iter()
        .copied()
        .filter(|(n, w)| *n > 0 && *w > 0)
        .collect();
    if live.len() <= 1 {
        return groups
            .iter()
            .map(|&(n, w)| if w > 0 { n } else { 0 })
            .collect();
    }
    // Instances per weight point: the scale at which the scarcest group runs out.
    let scale = live
        .iter()
        .map(|(n, w)| f64::from(*n) / f64::from(*w))
        .fold(f64::INFINITY, f64::min);
    groups
        .iter()
        .map(|&(n, w)| {
            if n == 0 || w == 0 {
                0
            } else if w >= 100 {
                // Full weight keeps every instance in, whatever else is in traffic meanwhile.
                n
            } else {
                // Within 1..=n after the clamp, so the conversion is exact.
                (scale * f64::from(w)).round().clamp(1.0, f64::from(n)) as u32
            }
        })
        .collect()
}

/// The share of traffic (percent, rounded) each group really gets for `(instances, weight)`
/// pairs at a given precision.
pub fn effective_shares(precision: TrafficPrecision, groups: &[(u32, u8)]) -> Vec<u8> {
    match precision {
        TrafficPrecision::Exact => {
            let total: u32 = groups.iter().map(|(_, w)| u32::from(*w)).sum();
            groups
                .iter()
                .map(|(_, w)| percent(u32::from(*w), total))
                .collect()
        }
        TrafficPrecision::Instances => {
            let counts = instances_in_traffic(groups);
            let total: u32 = counts.iter().sum();
            counts.iter().map(|c| percent(*c, total)).collect()
        }
    }
}

fn percent(part: u32, total: u32) -> u8 {
    if total == 0 {
        return 0;
    }
    u8::try_from((u64::from(part) * 100 + u64::from(total) / 2) / u64::from(total)).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_instances_round_toward_the_weights() {
        assert_eq!(instances_in_traffic(&[(4, 10), (4, 90)]), [1, 4]);
        assert_eq!(instances_in_traffic(&[(10, 50), (10, 50)]), [10, 10]);
        assert_eq!(instances_in_traffic(&[(3, 100), (3, 0)]), [3, 0]);
        assert_eq!(instances_in_traffic(&[(0, 50), (2, 50)]), [0, 2]);
        assert_eq!(
            effective_shares(TrafficPrecision::Instances, &[(4, 10), (4, 90)]),
            [20, 80]
        );
        assert_eq!(
            effective_shares(TrafficPrecision::Exact, &[(4, 10), (4, 90)]),
            [10, 90]
        );
    }

    #[test]
    fn full_weights_take_every_pod_or_none() {
        assert_eq!(instances_in_traffic(&[(3, 100), (3, 0)]), vec![3, 0]);
        assert_eq!(instances_in_traffic(&[(0, 100)]), vec![0]);
        assert_eq!(instances_in_traffic(&[(4, 100), (4, 100)]), vec![4, 4]);
        assert_eq!(instances_in_traffic(&[(2, 100), (4, 100)]), vec![2, 4]);
    }

    #[test]
    fn canary_weights_become_pod_ratios() {
        // 10% of 3 + 3 pods: one canary pod beside the three old ones.
        assert_eq!(instances_in_traffic(&[(3, 10), (3, 90)]), vec![1, 3]);
        assert_eq!(instances_in_traffic(&[(3, 50), (3, 50)]), vec![3, 3]);
        assert_eq!(instances_in_traffic(&[(10, 25), (10, 75)]), vec![3, 10]);
        assert_eq!(instances_in_traffic(&[(20, 10), (20, 90)]), vec![2, 20]);
        // Mid-shift, the new weight is written before the old one is lowered.
        assert_eq!(instances_in_traffic(&[(4, 100), (4, 25)]), vec![4, 1]);
    }

    proptest::proptest! {
        /// Every enabled group keeps a pod in traffic, no group exceeds its pods, and with enough
        /// pods the share is within one pod of the weight.
        #[test]
        fn shares_follow_weights(a in 1u32..50, b in 1u32..50, w in 1u8..100) {
            let k = instances_in_traffic(&[(a, w), (b, 100 - w)]);
            proptest::prop_assert!(k[0] >= 1 && k[0] <= a);
            proptest::prop_assert!(k[1] >= 1 && k[1] <= b);
            let share = f64::from(k[0]) / f64::from(k[0] + k[1]);
            let one_pod = 1.0 / f64::from(k[0] + k[1]);
            let want = f64::from(w) / 100.0;
            proptest::prop_assert!((share - want).abs() <= one_pod + 1e-9,
                "{k:?} for {w}% of {a}+{b}");
        }
    }
}
