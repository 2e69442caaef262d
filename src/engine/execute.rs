//! Executing one plan step against a provider.

use std::time::Duration as StdDuration;

use crate::model::{ClusterId, DesiredCluster};
use crate::plan::Step;
use crate::provider::{Provider, ProviderError, TargetRef};

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The provider refused or failed.
    #[error("step `{step}` on {cluster} failed")]
    Provider {
        /// The step.
        step: String,
        /// The cluster.
        cluster: String,
        /// The cause.
        #[source]
        source: ProviderError,
    },
    /// Instances did not become healthy in time.
    #[error("{group}: {healthy} of {needed} instances healthy after {timeout}; giving up{}", notes.iter().map(|n| format!("\n  {n}")).collect::<String>())]
    Unhealthy {
        /// The group.
        group: String,
        /// Healthy instances seen last.
        healthy: u32,
        /// Needed.
        needed: u32,
        /// The deadline.
        timeout: crate::spec::Duration,
        /// What the instances say went wrong (exit status, last lines of stderr).
        notes: Vec<String>,
    },
}

/// How often health is polled while waiting.
const POLL: StdDuration = StdDuration::from_millis(50);

/// Runs one step of a desired cluster. Idempotent: a step that already took effect changes
/// nothing.
pub async fn execute_step(
    provider: &dyn Provider,
    cluster: &DesiredCluster,
    step: &Step,
) -> Result<(), ExecError> {
    let target = TargetRef {
        environment: cluster.id.environment.clone(),
        target: cluster.target.clone(),
    };
    execute(provider, &target, &cluster.id, Some(cluster), step).await
}

/// Runs one step on a cluster of a target; `desired` is needed only to create or update
/// server groups (orphans being pruned have none).
pub async fn execute(
    provider: &dyn Provider,
    target: &TargetRef,
    id: &ClusterId,
    desired: Option<&DesiredCluster>,
    step: &Step,
) -> Result<(), ExecError> {
    let wrap = |source: ProviderError| ExecError::Provider {
        step: step.to_string(),
        cluster: id.to_string(),
        source,
    };
    let need = || {
        wrap(ProviderError::Invalid(
            "this step needs the cluster's spec, and the plan has none".into(),
        ))
    };
    match step {
        Step::CreateServerGroup {
            sequence,
            capacity,
            enabled,
            ..
        } => {
            let cluster = desired.ok_or_else(need)?;
            provider
                .create_server_group(cluster, *sequence, *capacity, *enabled)
                .await
                .map_err(wrap)
        }
        Step::Resize { sequence, to, .. } => {
            provider.resize(id, *sequence, *to).await.map_err(wrap)
        }
        Step::Enable { sequence, .. } => provider
            .set_traffic(id, *sequence, true, 100)
            .await
            .map_err(wrap),
        Step::Disable { sequence, .. } => provider
            .set_traffic(id, *sequence, false, 0)
            .await
            .map_err(wrap),
        Step::Shift { shares } => {
            for s in shares {
                provider
                    .set_traffic(id, s.sequence, s.weight > 0, s.weight)
                    .await
                    .map_err(wrap)?;
            }
            Ok(())
        }
        Step::UpdateInPlace { sequence, .. } => {
            let cluster = desired.ok_or_else(need)?;
            provider
                .update_in_place(cluster, *sequence)
                .await
                .map_err(wrap)
        }
        Step::ReplaceInstances {
            sequence, count, ..
        } => provider
            .replace_instances(id, *sequence, *count)
            .await
            .map_err(wrap),
        Step::Heal { sequence, .. } => provider.heal(id, *sequence).await.map_err(wrap),
        Step::Destroy { sequence, .. } => provider.destroy(id, *sequence).await.map_err(wrap),
        Step::Pause { duration } => {
            tokio::time::sleep(duration.to_std()).await;
            Ok(())
        }
        Step::WaitHealthy {
            group,
            sequence,
            count,
            timeout,
        } => {
            let deadline = tokio::time::Instant::now() + timeout.to_std();
            loop {
                let live = provider.observe(target).await.map_err(wrap)?;
                let g = live
                    .iter()
                    .find(|c| &c.id == id)
                    .and_then(|c| c.group(*sequence));
                let healthy = g.map_or(0, |g| g.healthy());
                if healthy >= *count {
                    return Ok(());
                }
                if tokio::time::Instant::now() >= deadline {
                    let notes = g
                        .map(|g| {
                            g.instances
                                .iter()
                                .filter_map(|i| i.note.as_ref().map(|n| format!("{}: {n}", i.id)))
                                .collect()
                        })
                        .unwrap_or_default();
                    return Err(ExecError::Unhealthy {
                        group: group.to_string(),
                        healthy,
                        needed: *count,
                        timeout: *timeout,
                        notes,
                    });
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }
}
