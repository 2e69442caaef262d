//! Observation: asks each target's provider for its clusters and assembles the observed state.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{DesiredState, ObservedState};
use crate::provider::{Provider, TargetRef};
use crate::spec::ProviderKind;

/// The providers available to this process, by kind.
#[derive(Clone, Default)]
pub struct Providers {
    map: BTreeMap<ProviderKind, Arc<dyn Provider>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.map.keys()).finish()
    }
}

impl Providers {
    /// No providers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the provider for a kind.
    #[must_use]
    pub fn with(mut self, kind: ProviderKind, p: Arc<dyn Provider>) -> Self {
        self.map.insert(kind, p);
        self
    }

    /// The provider for a kind.
    pub fn get(&self, kind: ProviderKind) -> Option<&Arc<dyn Provider>> {
        self.map.get(&kind)
    }
}

/// Every target of every environment in `desired` (orphans live on targets too).
pub fn targets(desired: &DesiredState) -> Vec<TargetRef> {
    desired
        .environments
        .values()
        .flat_map(|e| {
            e.targets.iter().map(|t| TargetRef {
                environment: e.name.clone(),
                target: t.clone(),
            })
        })
        .collect()
}

/// Observes the targets; a target that cannot be observed is recorded as unavailable.
/// Only targets some desired cluster uses are asked, and those of environments that prune
/// (where a cluster no spec declares any more is destroyed): nothing else is planned.
pub async fn observe(desired: &DesiredState, providers: &Providers) -> ObservedState {
    let mut state = ObservedState::default();
    for t in targets(desired) {
        let used = desired
            .clusters
            .keys()
            .any(|c| c.environment == t.environment && c.target == t.target.name);
        let prunes = desired
            .environments
            .get(&t.environment)
            .is_some_and(|e| e.prune);
        if !used && !prunes {
            continue;
        }
        let Some(p) = providers.get(t.target.provider) else {
            state.unavailable.insert(
                t.key(),
                format!(
                    "no {} provider in this build of keelson",
                    t.target.provider.as_str()
                ),
            );
            continue;
        };
        state
            .precision
            .insert(t.target.provider, p.capabilities().traffic);
        match p.observe(&t).await {
            Ok(clusters) => {
                for c in clusters {
                    state.clusters.insert(c.id.clone(), c);
                }
            }
            Err(e) => {
                state.unavailable.insert(t.key(), e.chain());
            }
        }
    }
    state
}
