//! Gates: what the engine waits on between operations. Each is judged by a pure function of
//! what was observed and how long the gate has been open, answering pass, wait or fail.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{ObservedCluster, Sequence, ServerGroupName};
use crate::spec::{Analysis, Duration, VerifyCheck};

/// A condition the engine waits on before the next step.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(
    tag = "gate",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum Gate {
    /// `count` instances of a group healthy, within `timeout`.
    Healthy {
        /// The group.
        group: ServerGroupName,
        /// Its sequence.
        sequence: Sequence,
        /// Healthy instances needed.
        count: u32,
        /// How long it may take.
        timeout: Duration,
    },
    /// Every instance of a group healthy (as many as its capacity), within `timeout`: after
    /// instances were replaced, whatever the group's size is then.
    Settled {
        /// The group.
        group: ServerGroupName,
        /// Its sequence.
        sequence: Sequence,
        /// How long it may take.
        timeout: Duration,
    },
    /// Time passes (a canary's pause).
    Elapsed {
        /// How long.
        duration: Duration,
    },
    /// A pause in which the new group is judged by its metrics against the group it replaces
    /// (see [`crate::analysis`]): it passes, fails (the rollout rolls back) or holds for a
    /// person.
    Analysis {
        /// The new group.
        canary: ServerGroupName,
        /// Its sequence.
        canary_sequence: Sequence,
        /// The group it replaces.
        baseline: ServerGroupName,
        /// Its sequence.
        baseline_sequence: Sequence,
        /// The new group's share of traffic meanwhile: which step this is.
        step: u8,
        /// The observation window: the step's pause.
        window: Duration,
        /// The criteria.
        analysis: Box<Analysis>,
    },
    /// Checks run once the new version takes all traffic, before the old groups go: each
    /// command must exit 0 in time.
    Verify {
        /// The checks, in order.
        checks: Vec<VerifyCheck>,
    },
}

/// What a gate says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Pass,
    /// Not yet; why, for progress lines.
    Wait(String),
    /// Never: the rollout fails, and why.
    Fail(String),
    /// Not without a person: the rollout stops where it is until someone decides, and why.
    Hold(String),
}

impl Gate {
    /// Whether the observation of the cluster says whether the gate passed (health); time,
    /// analyses and checks are only known while they run.
    pub fn observable(&self) -> bool {
        matches!(self, Self::Healthy { .. } | Self::Settled { .. })
    }

    /// Judges the gate against the cluster as observed, `open` after it was opened. Pure.
    /// Analyses and checks are judged from what they measure ([`crate::analysis::conclude`]):
    /// here they always wait.
    pub fn judge(&self, live: Option<&ObservedCluster>, open: std::time::Duration) -> Verdict {
        match self {
            Self::Healthy {
                group,
                sequence,
                count,
                timeout,
            } => healthy(live, group, *sequence, Some(*count), *timeout, open),
            Self::Settled {
                group,
                sequence,
                timeout,
            } => healthy(live, group, *sequence, None, *timeout, open),
            Self::Elapsed { duration } => {
                if open >= duration.to_std() {
                    Verdict::Pass
                } else {
                    let left = duration.to_std().saturating_sub(open);
                    Verdict::Wait(format!("{}s of {duration} left", left.as_secs()))
                }
            }
            Self::Analysis { .. } => Verdict::Wait("measuring".into()),
            Self::Verify { .. } => Verdict::Wait("checking".into()),
        }
    }

    /// The group whose health the gate watches, if any.
    pub fn sequence(&self) -> Option<Sequence> {
        match self {
            Self::Healthy { sequence, .. } | Self::Settled { sequence, .. } => Some(*sequence),
            Self::Elapsed { .. } | Self::Analysis { .. } | Self::Verify { .. } => None,
        }
    }
}

/// `count` (or, without one, all) instances of a group healthy before `timeout`.
fn healthy(
    live: Option<&ObservedCluster>,
    group: &ServerGroupName,
    sequence: Sequence,
    count: Option<u32>,
    timeout: Duration,
    open: std::time::Duration,
) -> Verdict {
    let g = live.and_then(|c| c.group(sequence));
    let healthy = g.map_or(0, |g| g.healthy());
    let needed = count.unwrap_or_else(|| g.map_or(0, |g| g.capacity));
    if healthy >= needed {
        return Verdict::Pass;
    }
    if open < timeout.to_std() {
        return Verdict::Wait(format!("{healthy} of {needed} of {group} healthy"));
    }
    let notes: String = g
        .map(|g| {
            g.instances
                .iter()
                .filter_map(|i| i.note.as_ref().map(|n| format!("\n  {}: {n}", i.id)))
                .collect()
        })
        .unwrap_or_default();
    Verdict::Fail(format!(
        "{group}: {healthy} of {needed} instances healthy after {timeout}; giving up{notes}"
    ))
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Healthy {
                group,
                count,
                timeout,
                ..
            } => write!(
                f,
                "wait until {count} of {group} healthy (timeout {timeout})"
            ),
            Self::Settled { group, timeout, .. } => write!(
                f,
                "wait until every instance of {group} is healthy (timeout {timeout})"
            ),
            Self::Elapsed { duration } => write!(f, "pause {duration}"),
            Self::Analysis {
                canary,
                baseline,
                window,
                analysis: a,
                ..
            } => {
                let metrics: Vec<String> = a.metrics.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "analyse {canary} against {baseline} for {window}, every {} ({}): {}; ",
                    a.interval,
                    a.provider.as_str(),
                    metrics.join("; ")
                )?;
                if let Some(s) = a.score {
                    write!(f, "score pass {} marginal {}; ", s.pass, s.marginal)?;
                }
                write!(
                    f,
                    "fails after {} failed, holds after {} inconclusive measurement(s)",
                    a.failure_limit + 1,
                    a.inconclusive_limit + 1
                )
            }
            Self::Verify { checks } => {
                let checks: Vec<String> = checks.iter().map(ToString::to_string).collect();
                write!(f, "verify: {}", checks.join("; "))
            }
        }
    }
}
