//! A canary analysis for people: where it stands and its latest measurements.

use crate::store::AnalysisRecord;

/// Lines describing `r`: a heading, then its newest `last` measurements, oldest first.
pub fn analysis(r: &AnalysisRecord, last: usize) -> Vec<String> {
    let mut out = vec![format!(
        "analysis of {} ({} against {}, {}): {}",
        r.version,
        r.canary,
        r.baseline,
        r.provider.as_str(),
        r.state
    )];
    let skip = r.measurements.len().saturating_sub(last);
    if skip > 0 {
        out.push(format!("  ({skip} earlier measurement(s))"));
    }
    for (i, m) in r.measurements.iter().enumerate().skip(skip) {
        let counted = if i < r.counted_from {
            " (before approval)"
        } else {
            ""
        };
        out.push(format!(
            "  {} at {}%{counted}: {m}",
            m.at.strftime("%H:%M:%S"),
            m.step
        ));
    }
    for w in r.windows.iter().filter(|w| w.approved_by.is_some()) {
        out.push(format!(
            "  the {}% window was approved by {}",
            w.step,
            w.approved_by.as_deref().unwrap_or("?")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{Measurement, MetricResult, Outcome, Sample};
    use crate::model::SpecHash;
    use crate::store::{AnalysisState, AnalysisWindow};

    #[test]
    fn shows_state_and_values() {
        let at = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let m = |outcome, v: f64| Measurement {
            at,
            step: 10,
            metrics: vec![MetricResult {
                name: "errors".into(),
                canary: Sample::Value(v),
                baseline: Some(Sample::Value(0.0)),
                outcome,
                why: (outcome == Outcome::Fail).then(|| format!("{v} > max 0.05")),
            }],
            outcome,
            score: None,
        };
        let r = AnalysisRecord {
            id: "x".into(),
            cluster: "prod/local/web".into(),
            revision: "r".into(),
            version: "2.0.0".into(),
            spec_hash: SpecHash::from_observed("h"),
            hash: SpecHash::from_observed("hh"),
            canary: "web-v002".into(),
            baseline: "web-v001".into(),
            provider: crate::spec::AnalysisProvider::Builtin,
            started: at,
            updated: at,
            state: AnalysisState::Failed {
                why: "canary analysis failed".into(),
            },
            windows: vec![AnalysisWindow {
                step: 10,
                started: at,
                expected: 3,
                approved_by: None,
                from: 0,
            }],
            measurements: vec![
                m(Outcome::Pass, 0.0),
                m(Outcome::Fail, 0.31),
                m(Outcome::Fail, 0.29),
            ],
            counted_from: 0,
        };
        insta::assert_snapshot!(analysis(&r, 2).join("\n"), @r"
        analysis of 2.0.0 (web-v002 against web-v001, builtin): failed: canary analysis failed
          (1 earlier measurement(s))
          08:00:00 at 10%: fail: errors 0.31 (baseline 0): fail, 0.31 > max 0.05
          08:00:00 at 10%: fail: errors 0.29 (baseline 0): fail, 0.29 > max 0.05
        ");
    }
}
