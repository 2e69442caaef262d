//! Delivery controls over what Git asks for: a pin holds an environment at a version, a veto
//! keeps a version out (back to the last one recorded live and healthy), and the flapping
//! guard leaves alone a cluster whose rollouts keep failing. Pure: the store's records come in
//! through the policy.

use std::sync::Arc;

use super::{Block, Control, PinHold, Policy};
use crate::model::{Artifact, DesiredCluster, SpecHash};
use crate::spec::Flapping;

/// What the controls make of one desired cluster.
#[derive(Debug, Clone)]
pub struct Controlled {
    /// The cluster to converge to: Git's, or moved to a pinned or earlier artifact.
    pub cluster: Arc<DesiredCluster>,
    /// How a control changed the version, if one did.
    pub control: Option<Control>,
    /// What holds the cluster where it is, if anything.
    pub block: Option<Block>,
}

/// A pin as the plan shows it, against the version Git asks for.
fn hold(p: &crate::plan::Pin, wanted: &str) -> PinHold {
    PinHold {
        version: p.artifact.version.clone(),
        wanted: wanted.to_string(),
        who: p.who.clone(),
        reason: p.reason.clone(),
        until: p.until,
    }
}

/// Applies the pins and vetoes in `policy` to a desired cluster.
pub fn controlled(d: &Arc<DesiredCluster>, policy: &Policy) -> Controlled {
    let env = &d.id.environment;
    let pin = policy
        .pins
        .iter()
        .find(|p| &p.environment == env && p.app == d.app && p.in_force(policy.now));
    let mut artifact = d.artifact();
    let mut control = None;
    if let Some(p) = pin.filter(|p| p.artifact.version != d.version) {
        artifact = p.artifact.clone();
        control = Some(Control::Pinned(hold(p, &d.version)));
    }
    let mut block = None;
    if let Some(v) = policy
        .vetoes
        .iter()
        .find(|v| v.covers(&d.app, &artifact.version, env))
    {
        // Where to go instead: the newest version recorded live and healthy on this very
        // cluster that is not vetoed itself. Recorded, never guessed.
        let back = policy
            .deployed
            .iter()
            .rev()
            .filter(|r| r.cluster == d.id && r.artifact.version != artifact.version)
            .find(|r| {
                !policy
                    .vetoes
                    .iter()
                    .any(|w| w.covers(&d.app, &r.artifact.version, env))
            });
        match back {
            Some(r) => {
                control = Some(Control::Vetoed {
                    version: artifact.version.clone(),
                    who: v.who.clone(),
                    reason: v.reason.clone(),
                    back_to: r.artifact.version.clone(),
                });
                artifact = r.artifact.clone();
            }
            None => {
                block = Some(Block::Vetoed {
                    version: artifact.version.clone(),
                    who: v.who.clone(),
                    reason: v.reason.clone(),
                    stays_at: None,
                });
            }
        }
    }
    let cluster = if artifact == d.artifact() {
        Arc::clone(d)
    } else {
        Arc::new(crate::compile::retarget(
            d,
            &artifact,
            known_hash(d, &artifact, policy),
        ))
    };
    Controlled {
        cluster,
        control,
        block,
    }
}

/// The spec hash `artifact` had when it was live on this cluster with the same rest of the
/// spec: its old server group, if kept, is the one to put back.
fn known_hash<'a>(
    d: &DesiredCluster,
    artifact: &Artifact,
    policy: &'a Policy,
) -> Option<&'a SpecHash> {
    policy
        .deployed
        .iter()
        .rev()
        .find(|r| r.cluster == d.id && &r.artifact == artifact && r.rest == d.retarget.rest)
        .map(|r| &r.spec_hash)
}

/// What holds or steers a cluster, one line each, for `status`: its pin, the vetoes of its
/// application there, and the flapping guard.
pub fn describe(d: &Arc<DesiredCluster>, limits: &Flapping, policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    let c = controlled(d, policy);
    if let Some(p) = policy
        .pins
        .iter()
        .find(|p| p.environment == d.id.environment && p.app == d.app && p.in_force(policy.now))
    {
        out.push(hold(p, &d.version).to_string());
    }
    for v in policy.vetoes.iter().filter(|v| {
        v.app == d.app
            && v.environment
                .as_ref()
                .is_none_or(|e| e == &d.id.environment)
    }) {
        out.push(format!("vetoed {} by {}: {}", v.version, v.who, v.reason));
    }
    if let Some(Control::Vetoed { back_to, .. }) = &c.control {
        out.push(format!(
            "runs {back_to} instead, the last version live and healthy here"
        ));
    }
    if let Some(b) = c.block {
        out.push(b.to_string());
    }
    if let Some(b) = unhappy(&c.cluster, limits, policy) {
        out.push(b.to_string());
    }
    out
}

/// The block of the flapping guard: `limits.max_attempts` failed rollouts of this very desired
/// state within `limits.window` leave the cluster alone for `limits.cooldown` after the last.
pub fn unhappy(d: &DesiredCluster, limits: &Flapping, policy: &Policy) -> Option<Block> {
    let failed: Vec<&crate::plan::Failure> = policy
        .failures
        .iter()
        .filter(|f| f.cluster == d.id && f.hash == d.hash)
        .collect();
    let last = failed.iter().max_by_key(|f| f.at)?;
    let window = jiff::SignedDuration::try_from(limits.window.to_std()).ok()?;
    let cooldown = jiff::SignedDuration::try_from(limits.cooldown.to_std()).ok()?;
    let from = last.at.checked_sub(window).ok()?;
    let attempts = u32::try_from(failed.iter().filter(|f| f.at >= from).count()).ok()?;
    let until = last.at.checked_add(cooldown).ok()?;
    (attempts >= limits.max_attempts.max(1) && policy.now < until).then(|| Block::Unhappy {
        attempts,
        until,
        error: last.error.clone(),
        retry: format!("keelson retry {} --env {}", d.app, d.id.environment),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::strategy::fixture::desired;
    use crate::plan::{Deployed, Failure, Pin, Veto};
    use crate::spec::{Duration, Strategy};

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn art(v: &str) -> Artifact {
        Artifact {
            version: v.into(),
            image: None,
            ami: None,
        }
    }

    fn deployed(d: &DesiredCluster, v: &str, when: i64) -> Deployed {
        Deployed {
            cluster: d.id.clone(),
            app: d.app.clone(),
            artifact: art(v),
            spec_hash: SpecHash::from_observed(format!("h-{v}")),
            rest: d.retarget.rest.clone(),
            at: at(when),
        }
    }

    fn veto(d: &DesiredCluster, v: &str) -> Veto {
        Veto {
            app: d.app.clone(),
            version: v.into(),
            environment: Some(d.id.environment.clone()),
            who: "alice".into(),
            reason: "bad".into(),
            at: at(0),
        }
    }

    #[test]
    fn a_pin_moves_the_cluster_to_its_artifact_and_reuses_the_hash_it_had_there() {
        let d = desired("2.0.0", 2, Strategy::default());
        let mut p = Policy::at(at(100));
        p.deployed.push(deployed(&d, "1.0.0", 10));
        p.pins.push(Pin {
            environment: d.id.environment.clone(),
            app: d.app.clone(),
            artifact: art("1.0.0"),
            who: "alice".into(),
            reason: "incident 42".into(),
            until: Some(at(200)),
            at: at(50),
        });
        let c = controlled(&d, &p);
        assert_eq!(c.cluster.version, "1.0.0");
        assert_eq!(c.cluster.spec_hash.as_str(), "h-1.0.0");
        assert_ne!(c.cluster.hash, d.hash);
        assert!(matches!(c.control, Some(Control::Pinned(ref p)) if p.wanted == "2.0.0"));
        // Lapsed: Git's version again.
        p.now = at(200);
        let c = controlled(&d, &p);
        assert_eq!(c.cluster.version, "2.0.0");
        assert!(c.control.is_none());
    }

    #[test]
    fn a_veto_goes_back_to_the_newest_recorded_version_not_vetoed_or_holds() {
        let d = desired("3.0.0", 2, Strategy::default());
        let mut p = Policy::at(at(100));
        p.vetoes.push(veto(&d, "3.0.0"));
        // Nothing recorded: held as it is, with a block.
        let c = controlled(&d, &p);
        assert_eq!(c.cluster.version, "3.0.0");
        assert!(matches!(
            c.block,
            Some(Block::Vetoed { stays_at: None, .. })
        ));
        p.deployed.push(deployed(&d, "1.0.0", 10));
        p.deployed.push(deployed(&d, "2.0.0", 20));
        p.deployed.push(deployed(&d, "3.0.0", 30));
        p.vetoes.push(veto(&d, "2.0.0"));
        let c = controlled(&d, &p);
        assert_eq!(c.cluster.version, "1.0.0");
        assert!(c.block.is_none());
        assert!(
            matches!(c.control, Some(Control::Vetoed { ref back_to, .. }) if back_to == "1.0.0")
        );
    }

    #[test]
    fn the_flapping_guard_counts_failures_of_the_same_desired_state_in_the_window() {
        let d = desired("2.0.0", 2, Strategy::default());
        let limits = Flapping {
            max_attempts: 3,
            window: Duration::from_secs(600),
            cooldown: Duration::from_secs(300),
        };
        let fail = |secs: i64, hash: &SpecHash| Failure {
            cluster: d.id.clone(),
            hash: hash.clone(),
            at: at(secs),
            error: format!("boom at {secs}"),
        };
        let mut p = Policy::at(at(1000));
        p.failures = vec![fail(0, &d.hash), fail(900, &d.hash), fail(950, &d.hash)];
        // The first is out of the window: two attempts are not enough.
        assert!(unhappy(&d, &limits, &p).is_none());
        p.failures.push(fail(990, &d.hash));
        let Some(Block::Unhappy {
            attempts,
            until,
            error,
            ..
        }) = unhappy(&d, &limits, &p)
        else {
            panic!("three failures in the window make it unhappy");
        };
        assert_eq!(
            (attempts, until, error.as_str()),
            (3, at(1290), "boom at 990")
        );
        // After the cooldown it is tried again.
        p.now = at(1290);
        assert!(unhappy(&d, &limits, &p).is_none());
        // Another desired state starts afresh.
        p.now = at(1000);
        let other = desired("2.0.1", 2, Strategy::default());
        assert!(unhappy(&other, &limits, &p).is_none());
    }
}
