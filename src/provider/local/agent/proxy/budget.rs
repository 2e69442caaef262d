//! How many client connections the agent's proxies may hold at once. File descriptors are a
//! process-wide resource, so one budget bounds every proxy of the agent. Past it, an accepted
//! client waits for room, and idle keep-alive connections are asked to close, one for each
//! waiting client, as nginx does when `worker_connections` run out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Descriptors kept for everything else the agent holds: its API socket, instance logs and
/// pipes, health probes, pooled connections to instances, the state files.
const RESERVE: u64 = 256;
/// How often a waiting client asks again, for connections that went idle since.
const ASK_AGAIN: Duration = Duration::from_millis(100);
/// The most descriptors the agent asks for, whatever the hard limit says.
const MAX_DESCRIPTORS: u64 = 1 << 20;

/// A budget of client connections.
#[derive(Debug)]
pub struct Budget {
    permits: Arc<Semaphore>,
    total: usize,
    /// Clients waiting for room, and idle connections closing for them.
    queue: Mutex<Queue>,
    /// `queue.waiting`, read without the lock on every idle wait.
    waiting: AtomicUsize,
    /// Wakes idle connections to look at the queue.
    pressure: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: usize,
    /// Idle connections that chose to close and have not yet let a waiting client in.
    closing: usize,
}

/// A client waiting for room; leaving (admitted or not) takes it off the queue.
struct Waiting<'a>(&'a Budget);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(mut q) = self.0.queue.lock() {
            q.waiting = q.waiting.saturating_sub(1);
            // Most likely it was let in by one of the closing connections.
            q.closing = q.closing.saturating_sub(1).min(q.waiting);
            self.0.waiting.store(q.waiting, Ordering::Release);
        }
    }
}

impl Budget {
    /// A budget of `connections` (at least one).
    pub fn new(connections: usize) -> Arc<Self> {
        let total = connections.max(1);
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(total)),
            total,
            queue: Mutex::new(Queue::default()),
            waiting: AtomicUsize::new(0),
            pressure: Notify::new(),
        })
    }

    /// The process's budget: half the descriptors left after [`RESERVE`], since each client
    /// connection may hold one to an instance as well.
    pub fn process() -> Arc<Self> {
        static PROCESS: OnceLock<Arc<Budget>> = OnceLock::new();
        PROCESS
            .get_or_init(|| {
                let connections = descriptor_limit().saturating_sub(RESERVE) / 2;
                Self::new(usize::try_from(connections).unwrap_or(usize::MAX).max(32))
            })
            .clone()
    }

    /// Waits for room for one more accepted connection. While it waits, one idle connection
    /// is asked to close for it.
    pub async fn admit(&self) -> OwnedSemaphorePermit {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return permit;
        }
        if let Ok(mut q) = self.queue.lock() {
            q.waiting += 1;
            self.waiting.store(q.waiting, Ordering::Release);
        }
        let _waiting = Waiting(self);
        loop {
            self.pressure.notify_waiters();
            // The semaphore is never closed: an error cannot happen, and would only retry.
            if let Ok(Ok(permit)) =
                tokio::time::timeout(ASK_AGAIN, self.permits.clone().acquire_owned()).await
            {
                return permit;
            }
        }
    }

    /// Whether a client waits for room (one atomic load).
    pub fn someone_waits(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// Whether an idle connection should close now to make room: one closes for each waiting
    /// client.
    pub fn take_eviction(&self) -> bool {
        if !self.someone_waits() {
            return false;
        }
        let Ok(mut q) = self.queue.lock() else {
            return false;
        };
        if q.closing < q.waiting {
            q.closing += 1;
            true
        } else {
            false
        }
    }

    /// Resolves when waiting clients ask idle connections to make room; `enable` it before
    /// calling [`Budget::take_eviction`] so no request is missed in between.
    pub fn pressed(&self) -> tokio::sync::futures::Notified<'_> {
        self.pressure.notified()
    }

    /// Connections that may still be admitted.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Connections the budget allows in all.
    pub fn total(&self) -> usize {
        self.total
    }
}

/// The open-file limits the agent started with, before [`descriptor_limit`] raised them;
/// instances get these back, so they run as they would on their own.
static ORIGINAL: OnceLock<libc::rlimit> = OnceLock::new();

/// The soft limit on open descriptors, raised first to the hard limit (at most
/// [`MAX_DESCRIPTORS`]): the usual soft limit of 1,024 would cap the proxies at a few hundred
/// connections.
pub fn descriptor_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        let _ = ORIGINAL.set(lim);
        let want = lim.rlim_max.min(MAX_DESCRIPTORS);
        if lim.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = want;
            }
        }
    }
    lim.rlim_cur.min(MAX_DESCRIPTORS)
}

/// Puts back the open-file limits the process started with; for a child between fork and
/// exec (only `setrlimit`, which is async-signal-safe).
pub fn restore_original_limit() -> std::io::Result<()> {
    if let Some(lim) = ORIGINAL.get() {
        // SAFETY: setrlimit reads the struct passed by pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_descriptor_limit_is_raised_toward_the_hard_one() {
        let limit = descriptor_limit();
        let mut now = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct passed by pointer.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        assert_eq!(now.rlim_cur, now.rlim_max.min(MAX_DESCRIPTORS));
        assert_eq!(limit, now.rlim_cur);
        assert!(ORIGINAL.get().is_some_and(|o| o.rlim_cur <= now.rlim_cur));
    }

    #[tokio::test]
    async fn a_waiting_client_asks_for_one_eviction() {
        let budget = Budget::new(1);
        let first = budget.admit().await;
        assert_eq!(budget.available(), 0);
        assert!(!budget.take_eviction(), "nobody waits yet");
        let waiting = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.admit().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "no place yet");
        assert!(
            budget.take_eviction(),
            "one idle connection may close for it"
        );
        assert!(!budget.take_eviction(), "only one");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(2), waiting).await;
        assert!(matches!(second, Ok(Ok(_))));
        assert!(!budget.take_eviction(), "nobody waits any more");
    }
}
