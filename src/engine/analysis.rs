//! The gates that measure: a canary analysis (one measurement per interval through the
//! analysis's source, each kept in the store as it is taken, judged by the core's pure
//! functions) and verification checks (commands against the cluster's traffic URL).

use std::time::Duration;

use super::cluster::{Run, Stepped};
use crate::actuation::Gate;
use crate::analysis::builtin::Builtin;
use crate::analysis::prometheus::Prometheus;
use crate::analysis::{Conclusion, Group, MetricsSource, Subject, conclude};
use crate::model::DesiredCluster;
use crate::spec::{AnalysisProvider, VerifyCheck};
use crate::store::{AnalysisRecord, AnalysisState, AnalysisWindow};

/// How long a wait sleeps before looking at suspends and shutdown again.
const SLICE: Duration = Duration::from_millis(100);

impl Run<'_> {
    /// Saves an analysis; a store that cannot keep it is said, not hidden.
    fn save(&self, r: &AnalysisRecord) {
        self.write(crate::store::Write::Analysis(r), "save the analysis");
    }

    /// The cluster's analysis of this spec to go on with (after a crash, or an approval), or a
    /// new one; an unfinished one of something else is abandoned.
    fn analysis_record(
        &self,
        d: &DesiredCluster,
        canary: &str,
        baseline: &str,
        provider: AnalysisProvider,
    ) -> Result<AnalysisRecord, String> {
        let cluster = self.id().to_string();
        let now = self.engine.now();
        let latest = self
            .engine
            .store
            .latest_analysis(&cluster)
            .map_err(|e| crate::report::chain(&e))?;
        if let Some(mut r) = latest {
            if r.spec_hash == d.spec_hash
                && r.hash == d.hash
                && r.canary == canary
                && r.state == AnalysisState::Running
            {
                return Ok(r);
            }
            if matches!(r.state, AnalysisState::Running | AnalysisState::Held { .. }) {
                r.state = AnalysisState::Abandoned {
                    why: format!("replaced by the rollout of {} ({canary})", d.version),
                };
                r.updated = now;
                self.save(&r);
            }
        }
        Ok(AnalysisRecord {
            id: format!("{cluster}@{}", now.as_nanosecond()),
            cluster,
            revision: self.revision.to_string(),
            version: d.version.clone(),
            spec_hash: d.spec_hash.clone(),
            hash: d.hash.clone(),
            canary: canary.to_string(),
            baseline: baseline.to_string(),
            provider,
            started: now,
            updated: now,
            state: AnalysisState::Running,
            windows: Vec::new(),
            measurements: Vec::new(),
            counted_from: 0,
        })
    }

    /// Ends the cluster's running analysis of the desired spec as `state` (the rollout it
    /// judged finished, or failed for another reason).
    pub(super) fn end_analysis(&self, state: AnalysisState) {
        let Some(d) = self.desired() else {
            return;
        };
        let Ok(Some(mut r)) = self.engine.store.latest_analysis(&self.id().to_string()) else {
            return;
        };
        // Only the rollout it judged ends it: not a restore or a manual rollback in between.
        if r.state == AnalysisState::Running
            && r.spec_hash == d.spec_hash
            && r.hash == d.hash
            && self.cp.action == crate::plan::Action::RollOut
        {
            r.state = state;
            r.updated = self.engine.now();
            self.save(&r);
        }
    }

    /// The source an analysis measures with.
    fn source(
        &self,
        d: &DesiredCluster,
        provider: AnalysisProvider,
    ) -> Result<Box<dyn MetricsSource>, String> {
        match provider {
            AnalysisProvider::Builtin => Ok(Box::new(Builtin {
                provider: self.provider.clone(),
                target: self.target.clone(),
            })),
            AnalysisProvider::Prometheus => d
                .prometheus
                .clone()
                .map(|p| Box::new(Prometheus::new(p)) as Box<dyn MetricsSource>)
                .ok_or_else(|| {
                    format!(
                        "the analysis queries Prometheus, and environment {} sets no spec.analysis.prometheus",
                        d.id.environment
                    )
                }),
        }
    }

    /// Sleeps `d` in slices; `Some` when a suspend, a shutdown or a lost lock stops the wait.
    async fn wait(&self, d: Duration) -> Option<Stepped> {
        let until = tokio::time::Instant::now() + d;
        loop {
            match self.stop_reason() {
                Ok(Some(why)) => return Some(Stepped::Held(why)),
                Ok(None) => {}
                Err(why) => return Some(Stepped::Failed(why)),
            }
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            tokio::time::sleep(left.min(SLICE)).await;
        }
    }

    /// A canary analysis gate: measures once per interval until the window's measurements
    /// are in, or the limits decide earlier.
    pub(super) async fn analyse(&self, gate: &Gate) -> Stepped {
        let Gate::Analysis {
            canary,
            canary_sequence,
            baseline,
            baseline_sequence,
            step,
            window,
            analysis,
        } = gate
        else {
            return Stepped::Failed(format!("`{gate}` is not an analysis"));
        };
        let Some(d) = self.desired() else {
            return Stepped::Failed("an analysis needs the cluster's spec".into());
        };
        let source = match self.source(d, analysis.provider) {
            Ok(s) => s,
            Err(why) => return Stepped::Failed(why),
        };
        let baseline_version = match self.observe().await {
            Ok(live) => live
                .and_then(|l| l.group(*baseline_sequence).map(|g| g.version.clone()))
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        let subject = Subject {
            cluster: d.id.clone(),
            app: d.app.clone(),
            canary: Group {
                name: canary.clone(),
                sequence: *canary_sequence,
                version: d.version.clone(),
            },
            baseline: Group {
                name: baseline.clone(),
                sequence: *baseline_sequence,
                version: baseline_version,
            },
        };
        let mut rec =
            match self.analysis_record(d, canary.as_str(), baseline.as_str(), analysis.provider) {
                Ok(r) => r,
                // A store that does not answer stops the run where it is, as at every step
                // boundary: no rollback of a canary that may be healthy.
                Err(why) => {
                    self.lock.mark_lost();
                    return Stepped::Held(super::store_silent(format!(
                        "cannot read the analysis: {why}"
                    )));
                }
            };
        let expected = analysis.measurements_in(*window);
        match rec.windows.last() {
            // A person decided this window after it held.
            Some(w) if w.step == *step && w.approved_by.is_some() => return Stepped::Done,
            Some(w) if w.step == *step => {}
            _ => {
                rec.windows.push(AnalysisWindow {
                    step: *step,
                    started: self.engine.now(),
                    expected,
                    approved_by: None,
                    from: rec.measurements.len(),
                });
                rec.updated = self.engine.now();
                self.save(&rec);
            }
        }
        let id = self.id().to_string();
        loop {
            let from = rec.windows.last().map_or(0, |w| w.from);
            let taken = rec
                .measurements
                .iter()
                .skip(from)
                .filter(|m| m.step == *step)
                .count();
            let taken = u32::try_from(taken).unwrap_or(u32::MAX);
            match conclude(analysis, rec.counted(), taken, expected) {
                Conclusion::Continue => {}
                Conclusion::Pass => return Stepped::Done,
                Conclusion::Fail(why) => {
                    rec.state = AnalysisState::Failed { why: why.clone() };
                    rec.updated = self.engine.now();
                    self.save(&rec);
                    let why = format!("canary analysis failed: {why}");
                    self.record("analysis", &why, "failed");
                    return Stepped::Failed(why);
                }
                Conclusion::Hold(why) => {
                    rec.state = AnalysisState::Held { why: why.clone() };
                    rec.updated = self.engine.now();
                    self.save(&rec);
                    let why = format!("canary analysis inconclusive: {why}");
                    self.record("analysis", &why, "held");
                    return Stepped::Undecided(format!(
                        "{why}; `keelson approve {id}` goes on, `keelson reject {id}` rolls back"
                    ));
                }
            }
            let mark = source.begin(&subject).await;
            let began = tokio::time::Instant::now();
            if let Some(stop) = self.wait(analysis.interval.to_std()).await {
                // The window goes on where it stands when the rollout resumes.
                return stop;
            }
            let m = crate::analysis::measure(
                source.as_ref(),
                &subject,
                analysis,
                mark,
                began.elapsed(),
                *step,
                self.engine.now(),
            )
            .await;
            self.progress.note(
                self.id(),
                &format!(
                    "analysis at {step}%, measurement {} of {expected}: {m}",
                    taken + 1
                ),
            );
            self.record("analysis", &format!("{step}%: {m}"), m.outcome.as_str());
            rec.measurements.push(m);
            rec.updated = self.engine.now();
            self.save(&rec);
        }
    }

    /// Verification checks, in order: the first that fails fails the rollout.
    pub(super) async fn verify(&self, checks: &[VerifyCheck]) -> Stepped {
        let Some(d) = self.desired() else {
            return Stepped::Failed("verification needs the cluster's spec".into());
        };
        let vars = crate::verify::Vars {
            url: self.provider.traffic_url(self.target, d),
            version: d.version.clone(),
            cluster: self.id().to_string(),
            environment: d.id.environment.to_string(),
        };
        for c in checks {
            match self.stop_reason() {
                Ok(Some(why)) => return Stepped::Held(why),
                Ok(None) => {}
                Err(why) => return Stepped::Failed(why),
            }
            let argv = match crate::verify::command_for(c, &vars) {
                Ok(a) => a,
                Err(why) => return Stepped::Failed(why),
            };
            self.progress
                .note(self.id(), &format!("verify: {}", argv.join(" ")));
            match crate::verify::run(&c.name, &argv, c.timeout.to_std()).await {
                Ok(()) => self.record("verify", &c.name, "ok"),
                Err(why) => {
                    let why = crate::report::scrub_urls(&why);
                    self.record("verify", &why, "failed");
                    return Stepped::Failed(why);
                }
            }
        }
        Stepped::Done
    }
}
