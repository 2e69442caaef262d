//! How many client connections the agent's proxies may hold at once. File descriptors are a
//! process-wide resource, so one budget bounds every proxy of the agent: past it, proxies stop
//! accepting (clients wait in the listen backlog) and idle keep-alive connections are closed
//! to make room, as nginx does when `worker_connections` run out.

use std::sync::{Arc, OnceLock};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Descriptors kept for everything else the agent holds: its API socket, instance logs and
/// pipes, health probes, the state files.
const RESERVE: u64 = 256;

/// A budget of client connections.
#[derive(Debug)]
pub struct Budget {
    permits: Arc<Semaphore>,
    /// Told when a connection waits for room: idle connections close.
    pressure: Notify,
}

impl Budget {
    /// A budget of `connections` (at least one).
    pub fn new(connections: usize) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(connections.max(1))),
            pressure: Notify::new(),
        })
    }

    /// The process's budget: half the descriptors left after [`RESERVE`], since each client
    /// connection may hold one to an instance as well.
    pub fn process() -> Arc<Self> {
        static PROCESS: OnceLock<Arc<Budget>> = OnceLock::new();
        PROCESS
            .get_or_init(|| {
                let limit = descriptor_limit();
                let connections = limit.saturating_sub(RESERVE) / 2;
                Self::new(usize::try_from(connections).unwrap_or(usize::MAX).max(64))
            })
            .clone()
    }

    /// Waits for room for one more connection; asks idle connections to close if there is none.
    pub async fn admit(&self) -> OwnedSemaphorePermit {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return permit;
        }
        self.pressure.notify_waiters();
        loop {
            // The semaphore is never closed, so this only waits.
            if let Ok(permit) = self.permits.clone().acquire_owned().await {
                return permit;
            }
        }
    }

    /// Resolves when a new connection is waiting for room (an idle connection should close).
    pub async fn pressed(&self) {
        self.pressure.notified().await;
    }

    /// Connections that may still be admitted.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

/// The soft limit on open descriptors, raised to the hard limit first (as Go's runtime does):
/// the default soft limit of 1,024 would cap the proxies at a few hundred connections.
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
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    // RLIM_INFINITY is u64::MAX; any real table is far smaller.
    lim.rlim_cur.min(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
        let limit = descriptor_limit();
        let mut now = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct passed by pointer.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        assert_eq!(now.rlim_cur, now.rlim_max);
        assert_eq!(limit, now.rlim_cur.min(1 << 20));
    }

    #[tokio::test]
    async fn admission_waits_for_a_released_place() {
        let budget = Budget::new(1);
        let first = budget.admit().await;
        assert_eq!(budget.available(), 0);
        let waiting = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.admit().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "no place yet");
        drop(first);
        let second = tokio::time::timeout(std::time::Duration::from_secs(2), waiting).await;
        assert!(matches!(second, Ok(Ok(_))));
    }
}
