//! What the dashboard shows, as data: a pure function of the desired state, the live state
//! and the plan. The pages and the live updates are rendered from it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{DesiredCluster, DesiredState, ObservedState};
use crate::plan::{Action, Block, Plan, PlannedStep};
use crate::store::Journal;

/// Where a cluster stands, for the overview's colour and filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Live and healthy at what Git asks for.
    Converged,
    /// Moving: steps planned or under way.
    RollingOut,
    /// Not moving now: suspended, locked, pinned, vetoed, outside a window, awaiting approval
    /// or promotion, or a canary holding for a person.
    Held,
    /// The flapping guard leaves it alone.
    Unhappy,
    /// Its target could not be observed.
    Unknown,
}

impl State {
    /// The word shown and used in filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Converged => "converged",
            Self::RollingOut => "rolling-out",
            Self::Held => "held",
            Self::Unhappy => "unhappy",
            Self::Unknown => "unknown",
        }
    }

    /// Every state, for the filter.
    pub const ALL: [Self; 5] = [
        Self::Converged,
        Self::RollingOut,
        Self::Held,
        Self::Unhappy,
        Self::Unknown,
    ];
}

/// One cluster in the overview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    /// `env/target/name`.
    pub cluster: String,
    /// The link to its page.
    pub href: String,
    /// What serves now: `2.0.0 10%, 1.0.0 90%`; empty when nothing does.
    pub live: String,
    /// What Git asks for.
    pub wanted: String,
    /// Where it stands.
    pub state: State,
    /// Why, when it is held or moving.
    pub why: String,
    /// Healthy instances of the groups in traffic.
    pub healthy: u32,
    /// Instances of the groups in traffic.
    pub instances: u32,
}

/// An application's row: one cell per environment, in promotion order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The application.
    pub app: String,
    /// Its clusters per environment (several targets or stacks share a cell's list).
    pub cells: Vec<Vec<Cell>>,
}

/// The overview page's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overview {
    /// The revision in force.
    pub revision: String,
    /// When the newest revision is invalid: its first error, with file and line.
    pub invalid: Option<String>,
    /// Environments in promotion order.
    pub environments: Vec<String>,
    /// One row per application, by name.
    pub rows: Vec<Row>,
}

/// The link to a cluster's page: short, because the overview carries 6,000 of them.
pub fn href(cluster: &crate::model::ClusterId) -> String {
    format!(
        "/c/{}/{}/{}",
        cluster.environment, cluster.target, cluster.name
    )
}

/// Where a rollout under way stands: what its journal says ran, and what the plan, made from
/// what is live, has left.
pub fn standing(journal: &Journal, left: &[PlannedStep]) -> String {
    match (&journal.rollback, left.first()) {
        (Some(r), _) => format!("rolling back: {} of {} steps done", r.done, r.steps.len()),
        (None, Some(next)) => format!(
            "{} done, {} to go; next: {}",
            journal.ran.len(),
            left.len(),
            next.description
        ),
        (None, None) => format!("{} done", journal.ran.len()),
    }
}

/// One cluster's cell; `journal` is its rollout under way, if any.
pub fn cell(
    d: &DesiredCluster,
    observed: &ObservedState,
    plan: &Plan,
    journal: Option<&Journal>,
) -> Cell {
    let live = observed.clusters.get(&d.id);
    let serving: Vec<_> = live
        .map(|l| {
            l.server_groups
                .iter()
                .filter(|g| g.enabled && g.weight > 0)
                .collect()
        })
        .unwrap_or_default();
    let live_text = if serving.len() == 1 {
        serving[0].version.clone()
    } else {
        serving
            .iter()
            .map(|g| format!("{} {}%", g.version, g.weight))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let healthy = serving.iter().map(|g| g.healthy()).sum();
    let instances = serving
        .iter()
        .map(|g| u32::try_from(g.instances.len()).unwrap_or(u32::MAX))
        .sum();
    let planned = plan.clusters.iter().find(|c| c.id == d.id);
    let unobserved = !observed.unavailable.is_empty()
        && observed
            .unavailable
            .contains_key(&format!("{}/{}", d.id.environment, d.id.target));
    let (state, why) = match planned {
        _ if unobserved => (
            State::Unknown,
            "the target could not be observed".to_string(),
        ),
        None => (State::Converged, String::new()),
        Some(c) if c.blocked.iter().any(|b| matches!(b, Block::Unhappy { .. })) => {
            (State::Unhappy, c.blocked[0].to_string())
        }
        // Locked: someone (the daemon itself, an apply) is moving it now.
        Some(c)
            if !c.steps.is_empty()
                && c.blocked.iter().all(|b| matches!(b, Block::Locked { .. })) =>
        {
            let why = journal.map_or_else(|| c.reason.clone(), |j| standing(j, &c.steps));
            (State::RollingOut, why)
        }
        Some(c) if c.action == Action::Held || !c.blocked.is_empty() => (
            State::Held,
            c.blocked
                .first()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ),
        Some(c) => (
            State::RollingOut,
            journal.map_or_else(|| c.reason.clone(), |j| standing(j, &c.steps)),
        ),
    };
    Cell {
        cluster: d.id.to_string(),
        href: href(&d.id),
        live: live_text,
        wanted: d.version.clone(),
        state,
        why,
        healthy,
        instances,
    }
}

/// The overview: every application against every environment; `journals` are the rollouts
/// under way, by cluster.
pub fn overview(
    desired: &DesiredState,
    observed: &ObservedState,
    plan: &Plan,
    journals: &BTreeMap<String, Journal>,
    invalid: Option<String>,
) -> Overview {
    let environments: Vec<String> = desired
        .promotion_order()
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut rows: BTreeMap<String, Vec<Vec<Cell>>> = BTreeMap::new();
    for d in desired.clusters.values() {
        let row = rows
            .entry(d.app.to_string())
            .or_insert_with(|| vec![Vec::new(); environments.len()]);
        if let Some(i) = environments
            .iter()
            .position(|e| e == d.id.environment.as_str())
        {
            let journal = if journals.is_empty() {
                None
            } else {
                journals.get(&d.id.to_string())
            };
            row[i].push(cell(d, observed, plan, journal));
        }
    }
    Overview {
        revision: plan.revision.clone(),
        invalid,
        environments,
        rows: rows
            .into_iter()
            .map(|(app, cells)| Row { app, cells })
            .collect(),
    }
}

/// The cells that differ between two overviews, by cluster: what a live update sends.
pub fn changed(before: &Overview, after: &Overview) -> Vec<Cell> {
    let index = |o: &Overview| -> BTreeMap<String, Cell> {
        o.rows
            .iter()
            .flat_map(|r| r.cells.iter().flatten())
            .map(|c| (c.cluster.clone(), c.clone()))
            .collect()
    };
    let old = index(before);
    index(after)
        .into_values()
        .filter(|c| old.get(&c.cluster) != Some(c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuation::{Op, Step};

    fn traffic() -> Op {
        Op::Traffic {
            changes: Vec::new(),
        }
    }

    fn planned(description: &str) -> PlannedStep {
        PlannedStep {
            step: Step::Op(traffic()),
            description: description.into(),
            guard: String::new(),
            rollback: Vec::new(),
        }
    }

    #[test]
    fn where_a_rollout_stands() {
        let mut j = Journal {
            cluster: "dev/local/web".into(),
            revision: "r".into(),
            health_timeout: "30s".parse().unwrap(),
            ran: vec![traffic(), traffic()],
            rollback: None,
        };
        let left = [planned("set weights web-v002 25%"), planned("wait")];
        assert_eq!(
            standing(&j, &left),
            "2 done, 2 to go; next: set weights web-v002 25%"
        );
        assert_eq!(standing(&j, &[]), "2 done");
        j.rollback = Some(crate::store::RollbackProgress {
            error: "unhealthy".into(),
            steps: vec![Step::Op(traffic()); 3],
            done: 1,
        });
        assert_eq!(standing(&j, &left), "rolling back: 1 of 3 steps done");
    }
}
