//! How a verdict is reached, as pure functions: each metric of a measurement passes, fails or
//! is inconclusive; the metrics make the measurement's outcome (with a score, or without one
//! any failing metric fails it); the measurements so far make the analysis pass, fail, hold
//! for a person, or go on.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::spec::{Analysis, MetricCheck};

/// A value a source returned for one group, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sample {
    /// A finite number.
    Value(f64),
    /// No value: no requests, NaN, an error or a timeout (why, for people).
    Missing(String),
}

impl Sample {
    /// A sample of `v`; NaN and infinities are no value.
    pub fn of(v: f64) -> Self {
        if v.is_finite() {
            Self::Value(v)
        } else {
            Self::Missing(format!("{v}"))
        }
    }

    /// The number, if there is one.
    pub fn value(&self) -> Option<f64> {
        match self {
            Self::Value(v) => Some(*v),
            Self::Missing(_) => None,
        }
    }
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(v) => f.write_str(&number(*v)),
            Self::Missing(why) => write!(f, "no data ({why})"),
        }
    }
}

/// A number for people: four significant digits, no exponent for everyday sizes.
pub fn number(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 8);
    let s = format!("{v:.*}", digits as usize);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A verdict on a metric or a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Within every criterion.
    Pass,
    /// Outside one.
    Fail,
    /// Not known: no data, an error, or a marginal score.
    Inconclusive,
}

impl Outcome {
    /// The word in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Inconclusive => "inconclusive",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One metric in one measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    /// The metric's name.
    pub name: String,
    /// The canary's value.
    pub canary: Sample,
    /// The baseline's value, when a criterion compares with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Sample>,
    /// Its verdict.
    pub outcome: Outcome,
    /// Why, when it did not pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl fmt::Display for MetricResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Sample::Missing(why) = &self.canary {
            return write!(f, "{}: {}, no data ({why})", self.name, self.outcome);
        }
        write!(f, "{} {}", self.name, self.canary)?;
        if let Some(b) = self.baseline.as_ref().and_then(Sample::value) {
            write!(f, " (baseline {})", number(b))?;
        }
        write!(f, ": {}", self.outcome)?;
        if let Some(w) = &self.why {
            write!(f, ", {w}")?;
        }
        Ok(())
    }
}

/// Judges one metric from the canary's and the baseline's samples.
pub fn judge_metric(check: &MetricCheck, canary: Sample, baseline: Option<Sample>) -> MetricResult {
    let mut fails = Vec::new();
    let mut unknown = Vec::new();
    match canary.value() {
        None => unknown.push(canary.to_string()),
        Some(c) => {
            if let Some(m) = check.max
                && c > m.get()
            {
                fails.push(format!("above max {m}"));
            }
            if let Some(m) = check.min
                && c < m.get()
            {
                fails.push(format!("below min {m}"));
            }
            if check.compares() {
                match baseline.as_ref().and_then(Sample::value) {
                    None => unknown.push(match &baseline {
                        Some(b) => format!("baseline: {b}"),
                        None => "no baseline to compare with".to_string(),
                    }),
                    Some(b) => {
                        if let Some(m) = check.max_increase
                            && c - b > m.get()
                        {
                            fails.push(format!("{} over the baseline (max +{m})", number(c - b)));
                        }
                        if let Some(m) = check.max_ratio {
                            // Nothing against nothing is no change; something against nothing
                            // is no bounded ratio.
                            let ratio = if b == 0.0 {
                                if c == 0.0 { 1.0 } else { f64::INFINITY }
                            } else {
                                c / b
                            };
                            if ratio > m.get() {
                                fails.push(format!("{} x the baseline (max {m} x)", number(ratio)));
                            }
                        }
                    }
                }
            }
        }
    }
    let (outcome, why) = if !fails.is_empty() {
        (Outcome::Fail, Some(fails.join(" and ")))
    } else if !unknown.is_empty() {
        (Outcome::Inconclusive, Some(unknown.join(" and ")))
    } else {
        (Outcome::Pass, None)
    };
    MetricResult {
        name: check.name.clone(),
        canary,
        baseline: if check.compares() { baseline } else { None },
        outcome,
        why,
    }
}

/// One measurement: every metric over one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// When it was taken (the interval's end).
    pub at: jiff::Timestamp,
    /// The step it belongs to (the canary's weight then).
    pub step: u8,
    /// Each metric.
    pub metrics: Vec<MetricResult>,
    /// Its outcome.
    pub outcome: Outcome,
    /// Its score, with score thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u8>,
}

impl Measurement {
    /// Judges the metrics of one interval into a measurement.
    pub fn judge(
        analysis: &Analysis,
        at: jiff::Timestamp,
        step: u8,
        metrics: Vec<MetricResult>,
    ) -> Self {
        let count = |o| metrics.iter().filter(|m| m.outcome == o).count();
        let (pass, fail, unknown) = (
            count(Outcome::Pass),
            count(Outcome::Fail),
            count(Outcome::Inconclusive),
        );
        let (outcome, score) = match analysis.score {
            None if fail > 0 => (Outcome::Fail, None),
            None if unknown > 0 || pass == 0 => (Outcome::Inconclusive, None),
            None => (Outcome::Pass, None),
            Some(_) if pass + fail == 0 => (Outcome::Inconclusive, None),
            Some(s) => {
                let score = u8::try_from(100 * pass / (pass + fail)).unwrap_or(100);
                let outcome = if score < s.marginal {
                    Outcome::Fail
                } else if score < s.pass || unknown > 0 {
                    // A metric without data never lets a measurement pass.
                    Outcome::Inconclusive
                } else {
                    Outcome::Pass
                };
                (outcome, Some(score))
            }
        };
        Self {
            at,
            step,
            metrics,
            outcome,
            score,
        }
    }
}

impl Measurement {
    /// Each metric's values and verdict, and the score, without the outcome.
    pub fn details(&self) -> String {
        // Nothing measured for one reason (no requests at all, Prometheus down): say it once.
        let missing: Vec<&str> = self
            .metrics
            .iter()
            .filter_map(|m| match &m.canary {
                Sample::Missing(why) => Some(why.as_str()),
                Sample::Value(_) => None,
            })
            .collect();
        if missing.len() == self.metrics.len()
            && let Some(first) = missing.first()
            && missing.iter().all(|w| w == first)
        {
            return format!("no data for any metric ({first})");
        }
        let metrics: Vec<String> = self.metrics.iter().map(ToString::to_string).collect();
        match self.score {
            Some(s) => format!("score {s}; {}", metrics.join("; ")),
            None => metrics.join("; "),
        }
    }
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.outcome, self.details())
    }
}

/// Where an analysis stands after its latest measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conclusion {
    /// Measure again.
    Continue,
    /// The window closed within the limits: the canary goes on.
    Pass,
    /// Too many failed measurements: roll back (why).
    Fail(String),
    /// Too many inconclusive ones: a person decides (why).
    Hold(String),
}

/// The analysis's conclusion from `measurements` (those since the last approval, every step)
/// when `taken` of the `expected` measurements of the current window are in.
pub fn conclude(
    analysis: &Analysis,
    measurements: &[Measurement],
    taken: u32,
    expected: u32,
) -> Conclusion {
    let of = |o| measurements.iter().filter(move |m| m.outcome == o);
    let failed = of(Outcome::Fail).count();
    let unknown = of(Outcome::Inconclusive).count();
    if failed > analysis.failure_limit as usize {
        let last = of(Outcome::Fail).next_back().map(Measurement::details);
        return Conclusion::Fail(format!(
            "{failed} failed measurement(s), {} tolerated; last: {}",
            analysis.failure_limit,
            last.unwrap_or_default()
        ));
    }
    if unknown > analysis.inconclusive_limit as usize {
        let last = of(Outcome::Inconclusive)
            .next_back()
            .map(Measurement::details);
        return Conclusion::Hold(format!(
            "{unknown} inconclusive measurement(s), {} tolerated; last: {}",
            analysis.inconclusive_limit,
            last.unwrap_or_default()
        ));
    }
    if taken >= expected {
        Conclusion::Pass
    } else {
        Conclusion::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Score, Threshold};

    fn check(max: Option<f64>, max_increase: Option<f64>, max_ratio: Option<f64>) -> MetricCheck {
        MetricCheck {
            name: "m".into(),
            query: "error-rate".into(),
            baseline_query: None,
            max: max.and_then(Threshold::new),
            min: None,
            max_increase: max_increase.and_then(Threshold::new),
            max_ratio: max_ratio.and_then(Threshold::new),
        }
    }

    fn analysis(score: Option<Score>) -> Analysis {
        Analysis {
            provider: Default::default(),
            interval: crate::spec::Duration::from_secs(10),
            failure_limit: 1,
            inconclusive_limit: 1,
            score,
            metrics: Vec::new(),
        }
    }

    fn result(outcome: Outcome) -> MetricResult {
        MetricResult {
            name: "m".into(),
            canary: Sample::Value(1.0),
            baseline: None,
            outcome,
            why: None,
        }
    }

    fn measured(a: &Analysis, outcomes: &[Outcome]) -> Measurement {
        Measurement::judge(
            a,
            jiff::Timestamp::UNIX_EPOCH,
            10,
            outcomes.iter().map(|&o| result(o)).collect(),
        )
    }

    #[test]
    fn absolute_and_relative_criteria() {
        let c = check(Some(0.05), Some(0.01), None);
        let r = judge_metric(&c, Sample::Value(0.3), Some(Sample::Value(0.0)));
        assert_eq!(r.outcome, Outcome::Fail);
        assert_eq!(
            r.why.as_deref(),
            Some("above max 0.05 and 0.3 over the baseline (max +0.01)")
        );
        let r = judge_metric(&c, Sample::Value(0.01), Some(Sample::Value(0.005)));
        assert_eq!(r.outcome, Outcome::Pass);
        let ratio = check(None, None, Some(1.25));
        assert_eq!(
            judge_metric(&ratio, Sample::Value(0.05), Some(Sample::Value(0.02))).outcome,
            Outcome::Fail
        );
        assert_eq!(
            judge_metric(&ratio, Sample::Value(0.0), Some(Sample::Value(0.0))).outcome,
            Outcome::Pass
        );
        assert_eq!(
            judge_metric(&ratio, Sample::Value(0.1), Some(Sample::Value(0.0))).outcome,
            Outcome::Fail
        );
    }

    #[test]
    fn no_data_is_never_a_pass() {
        let c = check(Some(0.05), None, None);
        let r = judge_metric(&c, Sample::Missing("no requests".into()), None);
        assert_eq!(r.outcome, Outcome::Inconclusive);
        assert_eq!(r.why.as_deref(), Some("no data (no requests)"));
        assert_eq!(r.to_string(), "m: inconclusive, no data (no requests)");
        // A comparison without a baseline value is not known either...
        let c = check(None, Some(0.01), None);
        let r = judge_metric(&c, Sample::Value(0.0), Some(Sample::of(f64::NAN)));
        assert_eq!(r.outcome, Outcome::Inconclusive);
        // ...unless an absolute criterion already fails.
        let c = check(Some(0.05), Some(0.01), None);
        let r = judge_metric(&c, Sample::Value(0.5), Some(Sample::Missing("x".into())));
        assert_eq!(r.outcome, Outcome::Fail);
    }

    #[test]
    fn measurements_without_a_score() {
        let a = analysis(None);
        use Outcome::*;
        assert_eq!(measured(&a, &[Pass, Pass]).outcome, Pass);
        assert_eq!(measured(&a, &[Pass, Fail]).outcome, Fail);
        assert_eq!(measured(&a, &[Pass, Inconclusive]).outcome, Inconclusive);
        assert_eq!(measured(&a, &[Inconclusive, Fail]).outcome, Fail);
        assert_eq!(measured(&a, &[]).outcome, Inconclusive);
    }

    #[test]
    fn measurements_with_a_score() {
        let a = analysis(Some(Score {
            pass: 90,
            marginal: 50,
        }));
        use Outcome::*;
        let m = measured(&a, &[Pass, Pass, Pass, Fail]);
        assert_eq!((m.outcome, m.score), (Inconclusive, Some(75)));
        let m = measured(&a, &[Pass, Fail, Fail]);
        assert_eq!((m.outcome, m.score), (Fail, Some(33)));
        let m = measured(&a, &[Pass, Pass]);
        assert_eq!((m.outcome, m.score), (Pass, Some(100)));
        // Passing on what was measured is not passing when a metric had no data.
        let m = measured(&a, &[Pass, Inconclusive]);
        assert_eq!((m.outcome, m.score), (Inconclusive, Some(100)));
        let m = measured(&a, &[Inconclusive]);
        assert_eq!((m.outcome, m.score), (Inconclusive, None));
    }

    #[test]
    fn conclusions_follow_the_limits() {
        let a = analysis(None);
        use Outcome::*;
        let ms = |os: &[Outcome]| os.iter().map(|&o| measured(&a, &[o])).collect::<Vec<_>>();
        assert_eq!(conclude(&a, &ms(&[Pass]), 1, 3), Conclusion::Continue);
        assert_eq!(
            conclude(&a, &ms(&[Pass, Fail, Pass]), 3, 3),
            Conclusion::Pass
        );
        assert!(matches!(
            conclude(&a, &ms(&[Fail, Fail]), 2, 3),
            Conclusion::Fail(_)
        ));
        assert!(matches!(
            conclude(&a, &ms(&[Inconclusive, Inconclusive]), 2, 3),
            Conclusion::Hold(_)
        ));
        // Failing wins over holding when both limits are passed.
        assert!(matches!(
            conclude(&a, &ms(&[Inconclusive, Inconclusive, Fail, Fail]), 3, 3),
            Conclusion::Fail(_)
        ));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(0.3125), "0.3125");
        assert_eq!(number(0.000123456), "0.0001235");
        assert_eq!(number(1234.4), "1234");
        assert_eq!(number(20.0), "20");
    }
}
