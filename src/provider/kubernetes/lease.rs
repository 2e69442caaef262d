//! A `coordination.k8s.io/v1` Lease per cluster: the cluster lock as the cluster itself sees
//! it, so two Keelson instances with separate stores never actuate one cluster together.
//! Taking over uses the Lease's resourceVersion as a precondition (optimistic concurrency, as
//! client-go's leader election does): of two racing writers exactly one wins, the other gets 409.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;

use super::objects::{MANAGER, label_map};
use super::retry::{already_exists, retry};
use crate::model::ClusterId;
use crate::provider::LeaseOutcome;

/// The Lease's name for a cluster.
pub fn name(id: &ClusterId) -> String {
    format!("keelson-{}-{}-{}", id.environment, id.target, id.name)
}

/// Races between two takers are retried this many times before giving up.
const RACES: usize = 10;

fn expiry(spec: &LeaseSpec) -> Option<jiff::Timestamp> {
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    renewed
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .ok()
}

fn ttl_seconds(ttl: std::time::Duration) -> i32 {
    i32::try_from(ttl.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// Takes the Lease for `holder`, unless someone else holds it and it has not expired.
pub async fn acquire(
    api: &Api<Lease>,
    id: &ClusterId,
    holder: &str,
    ttl: std::time::Duration,
    now: jiff::Timestamp,
) -> Result<LeaseOutcome, kube::Error> {
    let name = name(id);
    let mut last = None;
    for _ in 0..RACES {
        match retry(|| api.get_opt(&name)).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(label_map(id)),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(holder.into()),
                        lease_duration_seconds: Some(ttl_seconds(ttl)),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                let pp = post();
                // A plain create carries no precondition: a transient failure may be retried.
                match retry(|| api.create(&pp, &lease)).await {
                    Ok(_) => return Ok(LeaseOutcome::Acquired),
                    Err(e) if already_exists(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let current = spec.holder_identity.clone().filter(|h| !h.is_empty());
                let expires = expiry(&spec);
                let free = current.as_deref().is_none_or(|h| h == holder)
                    || expires.is_none_or(|e| e <= now);
                if !free {
                    let until = expires.map(|e| e.to_string()).unwrap_or_default();
                    last = Some(LeaseOutcome::Held {
                        holder: current.unwrap_or_default(),
                        until,
                    });
                    break;
                }
                let mine = current.as_deref() == Some(holder);
                lease.spec = Some(LeaseSpec {
                    holder_identity: Some(holder.into()),
                    lease_duration_seconds: Some(ttl_seconds(ttl)),
                    acquire_time: if mine {
                        spec.acquire_time.clone()
                    } else {
                        Some(MicroTime(now))
                    },
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(
                        spec.lease_transitions.unwrap_or(0) + i32::from(!mine && current.is_some()),
                    ),
                    ..spec
                });
                // The resourceVersion from the read is the precondition.
                match api.replace(&name, &post(), &lease).await {
                    Ok(_) => return Ok(LeaseOutcome::Acquired),
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(last.unwrap_or(LeaseOutcome::Held {
        holder: "another Keelson (the Lease kept changing)".into(),
        until: String::new(),
    }))
}

/// Renews the Lease; false when `holder` no longer holds it.
pub async fn renew(
    api: &Api<Lease>,
    id: &ClusterId,
    holder: &str,
    ttl: std::time::Duration,
    now: jiff::Timestamp,
) -> Result<bool, kube::Error> {
    let name = name(id);
    for _ in 0..RACES {
        let Some(mut lease) = retry(|| api.get_opt(&name)).await? else {
            return Ok(false);
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(holder) {
            return Ok(false);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(ttl_seconds(ttl));
        lease.spec = Some(spec);
        match api.replace(&name, &post(), &lease).await {
            Ok(_) => return Ok(true),
            // Changed since the read: read again, and renew if it is still ours.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Gives the Lease up by clearing its holder; a no-op when `holder` does not hold it.
pub async fn release(api: &Api<Lease>, id: &ClusterId, holder: &str) -> Result<(), kube::Error> {
    let name = name(id);
    // `get_opt` answers a missing Lease with `None`: nothing to release.
    let Some(mut lease) = retry(|| api.get_opt(&name)).await? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(holder) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    match api.replace(&name, &post(), &lease).await {
        Ok(_) => Ok(()),
        // Someone took it over meanwhile: it is not ours to release.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

fn post() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(MANAGER.into()),
    }
}
