//! What a metric's `query` means: a builtin query over the local proxy's counters, or PromQL
//! with placeholders filled in for the groups being compared.

use std::fmt;
use std::str::FromStr;

use super::counters::TrafficCounters;

/// A query the builtin provider answers from the proxy's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinQuery {
    /// The share of 5xx responses.
    ErrorRate,
    /// Median latency, seconds.
    P50Latency,
    /// 95th percentile latency, seconds.
    P95Latency,
    /// 99th percentile latency, seconds.
    P99Latency,
    /// Responses per second.
    RequestRate,
}

impl BuiltinQuery {
    /// Every builtin query.
    pub const ALL: [Self; 5] = [
        Self::ErrorRate,
        Self::P50Latency,
        Self::P95Latency,
        Self::P99Latency,
        Self::RequestRate,
    ];

    /// The name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ErrorRate => "error-rate",
            Self::P50Latency => "p50-latency",
            Self::P95Latency => "p95-latency",
            Self::P99Latency => "p99-latency",
            Self::RequestRate => "request-rate",
        }
    }

    /// Its value over the responses counted in `seconds`; `None` when there were none.
    pub fn evaluate(self, counted: &TrafficCounters, seconds: f64) -> Option<f64> {
        if counted.requests() == 0 {
            // No data is never a value: a rate of zero would pass `max` unseen.
            return None;
        }
        match self {
            Self::ErrorRate => counted.error_rate(),
            Self::P50Latency => counted.latency_quantile(0.50),
            Self::P95Latency => counted.latency_quantile(0.95),
            Self::P99Latency => counted.latency_quantile(0.99),
            Self::RequestRate => counted.request_rate(seconds),
        }
    }
}

impl FromStr for BuiltinQuery {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|q| q.as_str() == s).ok_or(())
    }
}

impl fmt::Display for BuiltinQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The placeholders PromQL may hold, as `{{name}}`.
pub const PLACEHOLDERS: [&str; 7] = [
    "canary",
    "baseline",
    "cluster",
    "environment",
    "app",
    "version",
    "interval",
];

/// The `{{name}}` placeholders of a query, in order, with their byte offsets.
fn placeholders(query: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(open) = query[at..].find("{{") {
        let start = at + open + 2;
        let Some(close) = query[start..].find("}}") else {
            break;
        };
        out.push((at + open, query[start..start + close].trim()));
        at = start + close + 2;
    }
    out
}

/// Placeholders in `query` that are not known.
pub fn unknown_placeholders(query: &str) -> Vec<String> {
    placeholders(query)
        .into_iter()
        .filter(|(_, p)| !PLACEHOLDERS.contains(p))
        .map(|(_, p)| p.to_string())
        .collect()
}

/// What placeholders stand for in one measurement.
#[derive(Debug, Clone)]
pub struct Bindings<'a> {
    /// The group being judged (the canary, or the baseline for the baseline's query).
    pub canary: &'a str,
    /// The group it is compared with.
    pub baseline: &'a str,
    /// The cluster's name.
    pub cluster: &'a str,
    /// Its environment.
    pub environment: &'a str,
    /// Its application.
    pub app: &'a str,
    /// The version of the group being judged.
    pub version: &'a str,
    /// The measurement interval, as PromQL writes a range (`30s`).
    pub interval: &'a str,
}

/// `query` with its placeholders filled in (unknown ones are left as written: validation
/// refuses them).
pub fn render(query: &str, b: &Bindings<'_>) -> String {
    let mut out = String::with_capacity(query.len() + 32);
    let mut rest = 0;
    for (at, name) in placeholders(query) {
        let value = match name {
            "canary" => b.canary,
            "baseline" => b.baseline,
            "cluster" => b.cluster,
            "environment" => b.environment,
            "app" => b.app,
            "version" => b.version,
            "interval" => b.interval,
            _ => continue,
        };
        out.push_str(&query[rest..at]);
        out.push_str(value);
        rest = at + query[at..].find("}}").map_or(0, |c| c + 2);
    }
    out.push_str(&query[rest..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bindings() -> Bindings<'static> {
        Bindings {
            canary: "web-v002",
            baseline: "web-v001",
            cluster: "web",
            environment: "prod",
            app: "web",
            version: "2.0.0",
            interval: "30s",
        }
    }

    #[test]
    fn renders_placeholders() {
        let q = r#"sum(rate(x{server_group="{{canary}}",env="{{ environment }}"}[{{interval}}]))"#;
        assert_eq!(
            render(q, &bindings()),
            r#"sum(rate(x{server_group="web-v002",env="prod"}[30s]))"#
        );
        assert_eq!(render("up", &bindings()), "up");
        assert_eq!(render("a {{canary", &bindings()), "a {{canary");
    }

    #[test]
    fn finds_unknown_placeholders() {
        assert_eq!(
            unknown_placeholders("x{a=\"{{canary}}\",b=\"{{grup}}\"}"),
            ["grup"]
        );
        assert!(unknown_placeholders("rate(x[{{interval}}])").is_empty());
    }

    #[test]
    fn builtin_queries_need_data() {
        assert_eq!("p95-latency".parse(), Ok(BuiltinQuery::P95Latency));
        assert!("p90-latency".parse::<BuiltinQuery>().is_err());
        assert_eq!(
            BuiltinQuery::ErrorRate.evaluate(&TrafficCounters::default(), 10.0),
            None
        );
        assert_eq!(
            BuiltinQuery::RequestRate.evaluate(&TrafficCounters::default(), 10.0),
            None
        );
    }
}
