//! A cluster's lock as one value: the store's lock and the target's own lease, taken together,
//! renewed while held, released when dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::model::ClusterId;
use crate::provider::{LeaseOutcome, Provider, TargetRef};
use crate::store::{Fence, LockOutcome, Owner, Store};

/// How long a lock lasts unless renewed (Kubernetes' leader election default); renewed every
/// fifth of it while held.
pub const LOCK_TTL: Duration = Duration::from_secs(15);

/// A holder stops acting once less than this is left on its lock: the renew deadline is the
/// lock's duration less this, so it stops well before another replica may take over.
pub const LOCK_MARGIN: Duration = Duration::from_secs(5);

/// Why a lock was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Someone else holds it: who, and until when.
    Held(String),
    /// The store did not answer.
    Unavailable(String),
    /// The target failed.
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
    /// Until when the lock surely holds, on this process's monotonic clock: the lock's
    /// duration counted from before the request that took or renewed it.
    deadline: Arc<Mutex<Instant>>,
    renewer: tokio::task::JoinHandle<()>,
    released: bool,
    /// The fencing epoch of this holding: writes made while acting carry it.
    pub epoch: u64,
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
        let asked = Instant::now();
        let (took_over, epoch) =
            match store.acquire_lock(&key, owner, reason, LOCK_TTL, crate::clock::now()) {
                Ok(LockOutcome::Held(l)) => {
                    return Err(Refusal::Held(format!(
                        "{} ({}) until {}",
                        l.owner, l.reason, l.expires_at
                    )));
                }
                Ok(LockOutcome::Acquired { took_over, epoch }) => {
                    (took_over.map(|l| l.owner.to_string()), epoch)
                }
                Err(e) => {
                    return Err(Refusal::Unavailable(format!(
                        "cannot take the cluster's lock: {}",
                        crate::report::chain(&e)
                    )));
                }
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
        let deadline = Arc::new(Mutex::new(asked + LOCK_TTL));
        let renewer = {
            let (store, owner, key, lost) =
                (store.clone(), owner.clone(), key.clone(), lost.clone());
            let (provider, target, id) = (provider.clone(), target.clone(), id.clone());
            let deadline = deadline.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LOCK_TTL / 5).await;
                    let asked = Instant::now();
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
                    if let Ok(mut d) = deadline.lock() {
                        *d = asked + LOCK_TTL;
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
            deadline,
            renewer,
            released: false,
            epoch,
            took_over,
        })
    }

    /// Whether to stop acting: the lock or the lease could not be renewed, a write was
    /// refused for a newer holder, or too little time is left on the lock for one more
    /// operation (the renewer is late: a paused process, a slow store).
    pub fn lost(&self) -> bool {
        if self.lost.load(Ordering::Acquire) {
            return true;
        }
        let left = self
            .deadline
            .lock()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        left < LOCK_MARGIN
    }

    /// Marks the lock lost (a write was refused, or the target carries a newer holder's
    /// stamp); true the first time.
    pub fn mark_lost(&self) -> bool {
        !self.lost.swap(true, Ordering::AcqRel)
    }

    /// What writes made while holding this lock carry.
    pub fn fence(&self) -> Fence {
        Fence {
            cluster: self.key.clone(),
            epoch: self.epoch,
        }
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
