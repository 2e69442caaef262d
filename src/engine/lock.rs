//! A cluster's lock as one value: the store's lock and the target's own lease, taken together,
//! renewed while held, released when dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::model::ClusterId;
use crate::provider::{LeaseOutcome, Provider, TargetRef};
use crate::store::{LockOutcome, Owner, Store};

/// How long a lock lasts unless renewed; renewed every third of it while held.
pub const LOCK_TTL: Duration = Duration::from_secs(30);

/// Why a lock was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Someone else holds it: who, and until when.
    Held(String),
    /// The store or the target failed.
    Failed(String),
}

/// A held cluster lock. Dropping it releases the store's lock at once and the lease in the
/// background; [`ClusterLock::release`] releases both and waits.
pub struct ClusterLock {
    store: Arc<dyn Store>,
    owner: Owner,
    key: String,
    provider: Arc<dyn Provider>,
    target: TargetRef,
    id: ClusterId,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
    released: bool,
    /// A previous holder whose lock had expired or whose process is gone.
    pub took_over: Option<String>,
}

impl ClusterLock {
    /// Takes the store's lock, then the target's lease (giving the lock back if the lease is
    /// held elsewhere), and starts renewing both.
    pub async fn acquire(
        store: Arc<dyn Store>,
        owner: &Owner,
        provider: Arc<dyn Provider>,
        target: &TargetRef,
        id: &ClusterId,
        reason: &str,
    ) -> Result<Self, Refusal> {
        let key = id.to_string();
        let took_over = match store.acquire_lock(&key, owner, reason, LOCK_TTL, crate::clock::now())
        {
            Ok(LockOutcome::Held(l)) => {
                return Err(Refusal::Held(format!(
                    "{} ({}) until {}",
                    l.owner, l.reason, l.expires_at
                )));
            }
            Ok(LockOutcome::Acquired { took_over, .. }) => took_over.map(|l| l.owner.to_string()),
            Err(e) => return Err(Refusal::Failed(crate::report::chain(&e))),
        };
        // The target's own lock (a Kubernetes Lease) guards against instances with other stores.
        let holder = owner.holder();
        let refused = match provider.acquire_lease(target, id, &holder, LOCK_TTL).await {
            Ok(LeaseOutcome::Acquired) => None,
            Ok(LeaseOutcome::Held { holder, until }) => {
                Some(Refusal::Held(format!("{holder} until {until}")))
            }
            Err(e) => Some(Refusal::Failed(format!(
                "cannot take the cluster's lease: {}",
                e.chain()
            ))),
        };
        if let Some(r) = refused {
            let _ = store.release_lock(&key, owner);
            return Err(r);
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = {
            let (store, owner, key, lost) =
                (store.clone(), owner.clone(), key.clone(), lost.clone());
            let (provider, target, id) = (provider.clone(), target.clone(), id.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LOCK_TTL / 3).await;
                    let leased = matches!(
                        provider.renew_lease(&target, &id, &holder, LOCK_TTL).await,
                        Ok(true)
                    );
                    if !leased
                        || !matches!(
                            store.renew_lock(&key, &owner, LOCK_TTL, crate::clock::now()),
                            Ok(true)
                        )
                    {
                        lost.store(true, Ordering::Release);
                        return;
                    }
                }
            })
        };
        Ok(Self {
            store,
            owner: owner.clone(),
            key,
            provider,
            target: target.clone(),
            id: id.clone(),
            lost,
            renewer,
            released: false,
            took_over,
        })
    }

    /// Whether the lock or the lease could not be renewed: stop acting.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Gives the lease and the lock back; returns what could not be released.
    pub async fn release(mut self) -> Vec<String> {
        self.released = true;
        self.renewer.abort();
        let mut problems = Vec::new();
        if let Err(e) = self
            .provider
            .release_lease(&self.target, &self.id, &self.owner.holder())
            .await
        {
            problems.push(format!("cannot release the lease: {}", e.chain()));
        }
        if let Err(e) = self.store.release_lock(&self.key, &self.owner) {
            problems.push(format!(
                "cannot release the lock: {}",
                crate::report::chain(&e)
            ));
        }
        problems
    }
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.renewer.abort();
        let _ = self.store.release_lock(&self.key, &self.owner);
        // A lease lapses by itself; give it back early where a runtime is still there.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (provider, target, id, holder) = (
                self.provider.clone(),
                self.target.clone(),
                self.id.clone(),
                self.owner.holder(),
            );
            rt.spawn(async move {
                let _ = provider.release_lease(&target, &id, &holder).await;
            });
        }
    }
}
