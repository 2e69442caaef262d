//! The Prometheus source: each metric is an instant query (`/api/v1/query`) of PromQL with the
//! groups filled in, expected to give exactly one number.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::judge::Sample;
use super::query::{Bindings, render};
use super::source::{Mark, MetricsSource, Pair, Subject};
use crate::spec::{MetricCheck, PrometheusSource};

/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer read.
const MAX_ANSWER: usize = 1 << 20;

/// A Prometheus server's query API.
pub struct Prometheus {
    source: PrometheusSource,
    client: reqwest::Client,
}

/// The API's envelope.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: serde_json::Value,
}

impl Prometheus {
    /// A source querying `source`.
    pub fn new(source: PrometheusSource) -> Self {
        let client = reqwest::Client::builder()
            .timeout(QUERY_TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        Self { source, client }
    }

    /// The address for messages: without credentials.
    fn address(&self) -> String {
        crate::report::scrub_urls(&self.source.address)
    }

    /// One instant query, as a sample.
    pub async fn query(&self, promql: &str) -> Sample {
        let url = format!("{}/api/v1/query", self.source.address.trim_end_matches('/'));
        let url = match reqwest::Url::parse_with_params(&url, &[("query", promql)]) {
            Ok(u) => u,
            Err(e) => {
                return Sample::Missing(format!(
                    "`{}` is not a Prometheus address: {e}",
                    self.address()
                ));
            }
        };
        let mut req = self.client.get(url);
        if let Some(file) = &self.source.bearer_token_file {
            match std::fs::read_to_string(file) {
                Ok(token) => req = req.bearer_auth(token.trim()),
                Err(e) => {
                    return Sample::Missing(format!(
                        "cannot read the bearer token file `{file}`: {e}"
                    ));
                }
            }
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Sample::Missing(format!(
                    "Prometheus at {} did not answer within {}s (query `{promql}`)",
                    self.address(),
                    QUERY_TIMEOUT.as_secs()
                ));
            }
            Err(e) => {
                return Sample::Missing(format!(
                    "cannot reach Prometheus at {}: {}",
                    self.address(),
                    crate::report::scrub_urls(&crate::report::chain(&e))
                ));
            }
        };
        let status = resp.status();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Sample::Missing(format!(
                    "Prometheus at {} broke off its answer: {}",
                    self.address(),
                    crate::report::scrub_urls(&crate::report::chain(&e))
                ));
            }
        };
        let body = &body[..body.len().min(MAX_ANSWER)];
        match serde_json::from_slice::<Envelope>(body) {
            Ok(env) => answer(env, promql),
            Err(_) => Sample::Missing(format!(
                "Prometheus at {} answered {status} without its API's JSON: {} (query `{promql}`)",
                self.address(),
                String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
            )),
        }
    }
}

/// The sample an API answer gives: exactly one number, or why not.
fn answer(env: Envelope, promql: &str) -> Sample {
    if env.status != "success" {
        return Sample::Missing(format!(
            "Prometheus refused the query `{promql}`: {}: {}",
            env.error_type.as_deref().unwrap_or("error"),
            env.error.as_deref().unwrap_or("no message")
        ));
    }
    let Some(data) = env.data else {
        return Sample::Missing(format!("Prometheus gave no data for `{promql}`"));
    };
    let value =
        |pair: &serde_json::Value| -> Option<f64> { pair.get(1)?.as_str()?.parse::<f64>().ok() };
    let v = match data.result_type.as_str() {
        "scalar" => value(&data.result),
        "vector" => {
            let series = data.result.as_array().map_or(0, Vec::len);
            if series != 1 {
                let hint = if series == 0 {
                    "no series (no requests, or labels that match nothing)".to_string()
                } else {
                    format!("{series} series; the query must give one (aggregate it with sum())")
                };
                return Sample::Missing(format!("{hint} for `{promql}`"));
            }
            data.result
                .get(0)
                .and_then(|s| s.get("value"))
                .and_then(value)
        }
        other => {
            return Sample::Missing(format!(
                "a {other} result for `{promql}`; the query must give one number (one series of an instant vector, or a scalar)"
            ));
        }
    };
    match v {
        Some(v) if v.is_finite() => Sample::Value(v),
        Some(v) => Sample::Missing(format!("{v} for `{promql}` (no requests in the interval?)")),
        None => Sample::Missing(format!("an answer without a number for `{promql}`")),
    }
}

#[async_trait]
impl MetricsSource for Prometheus {
    async fn begin(&self, _subject: &Subject) -> Mark {
        // Prometheus keeps the history: the query's `{{interval}}` range covers the interval.
        Mark::default()
    }

    async fn measure(
        &self,
        s: &Subject,
        metrics: &[MetricCheck],
        _mark: Mark,
        elapsed: Duration,
    ) -> Vec<Pair> {
        // Whole seconds, as PromQL ranges are usually written (rounded); at least one.
        let interval = format!("{}s", ((elapsed.as_millis() + 500) / 1000).max(1));
        let cluster = s.cluster.name.to_string();
        let environment = s.cluster.environment.to_string();
        let (canary, baseline) = (s.canary.name.to_string(), s.baseline.name.to_string());
        let fill = |q: &str, judged: &str, other: &str, version: &str| {
            render(
                q,
                &Bindings {
                    canary: judged,
                    baseline: other,
                    cluster: &cluster,
                    environment: &environment,
                    app: s.app.as_str(),
                    version,
                    interval: &interval,
                },
            )
        };
        let queries = metrics.iter().map(|m| {
            let c = fill(&m.query, &canary, &baseline, &s.canary.version);
            // The baseline's own query, or the canary's; either way `{{canary}}` is the group
            // judged, here the baseline.
            let b = m.compares().then(|| {
                let q = m.baseline_query.as_deref().unwrap_or(&m.query);
                fill(q, &baseline, &baseline, &s.baseline.version)
            });
            async move {
                let c = self.query(&c).await;
                let b = match b {
                    Some(q) => Some(self.query(&q).await),
                    None => None,
                };
                (c, b)
            }
        });
        futures::future::join_all(queries).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(json: &str) -> Envelope {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn one_number_or_why_not() {
        let one = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"0.25"]}]}}"#;
        assert_eq!(answer(env(one), "q"), Sample::Value(0.25));
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"3"]}}"#;
        assert_eq!(answer(env(scalar), "q"), Sample::Value(3.0));
        let none = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(matches!(answer(env(none), "q"), Sample::Missing(w) if w.starts_with("no series")));
        let two = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]},{"metric":{},"value":[1,"2"]}]}}"#;
        assert!(matches!(answer(env(two), "q"), Sample::Missing(w) if w.contains("2 series")));
        let nan = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert!(matches!(answer(env(nan), "q"), Sample::Missing(w) if w.starts_with("NaN")));
        let bad = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
        assert_eq!(
            answer(env(bad), "rate(x[5m)"),
            Sample::Missing(
                "Prometheus refused the query `rate(x[5m)`: bad_data: parse error at char 5".into()
            )
        );
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(
            matches!(answer(env(matrix), "q"), Sample::Missing(w) if w.starts_with("a matrix"))
        );
    }
}
