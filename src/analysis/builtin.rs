//! The builtin source: the local target's proxy counts every response by server group, so a
//! measurement is the difference of two readings of its counters.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::counters::TrafficCounters;
use super::judge::Sample;
use super::query::BuiltinQuery;
use super::source::{Mark, MetricsSource, Pair, Subject};
use crate::provider::{Provider, TargetRef};
use crate::spec::MetricCheck;

/// Reads a provider's traffic counters.
pub struct Builtin {
    /// The cluster's provider.
    pub provider: Arc<dyn Provider>,
    /// The cluster's target.
    pub target: TargetRef,
}

impl Builtin {
    /// The canary's and the baseline's counters now.
    async fn read(&self, s: &Subject) -> Result<(TrafficCounters, TrafficCounters), String> {
        let groups = self
            .provider
            .traffic(&self.target, &s.cluster)
            .await
            .map_err(|e| format!("cannot read the proxy's counters: {}", e.chain()))?;
        let of = |seq| {
            groups
                .iter()
                .find(|(s, _)| *s == seq)
                .map(|(_, c)| c.clone())
                // A group the proxy has not routed to yet has counted nothing.
                .unwrap_or_default()
        };
        Ok((of(s.canary.sequence), of(s.baseline.sequence)))
    }
}

#[async_trait]
impl MetricsSource for Builtin {
    async fn begin(&self, subject: &Subject) -> Mark {
        Mark {
            counters: self.read(subject).await.ok(),
        }
    }

    async fn measure(
        &self,
        subject: &Subject,
        metrics: &[MetricCheck],
        mark: Mark,
        elapsed: Duration,
    ) -> Vec<Pair> {
        let counted = match (mark.counters, self.read(subject).await) {
            (Some((c0, b0)), Ok((c1, b1))) => match (c1.since(&c0), b1.since(&b0)) {
                (Some(c), Some(b)) => Ok((c, b)),
                _ => Err("the proxy restarted during the interval".to_string()),
            },
            (None, _) => {
                Err("the proxy's counters could not be read at the interval's start".into())
            }
            (_, Err(e)) => Err(e),
        };
        let seconds = elapsed.as_secs_f64();
        metrics
            .iter()
            .map(|m| {
                let Ok(q) = m.query.parse::<BuiltinQuery>() else {
                    // Validation refuses these; a saved plan could still carry one.
                    let no = Sample::Missing(format!("`{}` is not a builtin query", m.query));
                    return (no.clone(), m.compares().then_some(no));
                };
                match &counted {
                    Err(why) => {
                        let no = Sample::Missing(why.clone());
                        (no.clone(), m.compares().then_some(no))
                    }
                    Ok((c, b)) => {
                        let sample = |t: &TrafficCounters| match q.evaluate(t, seconds) {
                            Some(v) => Sample::of(v),
                            None => Sample::Missing("no requests in the interval".into()),
                        };
                        (sample(c), m.compares().then(|| sample(b)))
                    }
                }
            })
            .collect()
    }
}
