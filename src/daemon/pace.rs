//! Pacing the dashboard's fresh looks. Each one observes every target, and steps begin and end
//! all the time on a large fleet, so looks are spaced: at least [`MIN_GAP`] apart, and four
//! times as long as the last one took (a quarter of the loop's time at most, at any fleet size).
//! A request in the gap is kept and served when the gap ends, never lost.

use std::time::{Duration, Instant};

/// The shortest gap between two looks.
pub const MIN_GAP: Duration = Duration::from_millis(500);

/// When the next look may run, and whether one is waiting.
#[derive(Debug, Clone)]
pub struct Pacer {
    next: Instant,
    waiting: bool,
}

impl Pacer {
    /// A pacer that lets the first look run at once.
    pub fn new(now: Instant) -> Self {
        Self {
            next: now,
            waiting: false,
        }
    }

    /// A look is asked for: true if it may run now; otherwise it waits for [`Pacer::due`].
    pub fn request(&mut self, now: Instant) -> bool {
        if now >= self.next {
            true
        } else {
            self.waiting = true;
            false
        }
    }

    /// When a waiting look should run.
    pub fn due(&self) -> Option<Instant> {
        self.waiting.then_some(self.next)
    }

    /// A look started at `started` and took `took`.
    pub fn ran(&mut self, started: Instant, took: Duration) {
        self.waiting = false;
        self.next = started + MIN_GAP.max(took.saturating_mul(4));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_are_spaced_and_none_is_lost() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        assert!(p.request(t0));
        p.ran(t0, Duration::from_millis(10));
        assert_eq!(p.due(), None);
        // Asked again 100 ms later: it waits for the gap.
        assert!(!p.request(t0 + Duration::from_millis(100)));
        assert!(!p.request(t0 + Duration::from_millis(200)));
        assert_eq!(p.due(), Some(t0 + MIN_GAP));
        p.ran(t0 + MIN_GAP, Duration::from_millis(10));
        assert_eq!(p.due(), None);
        // A slow look (300 ms, on a large fleet) spaces the next by four times that.
        let t1 = t0 + Duration::from_secs(5);
        assert!(p.request(t1));
        p.ran(t1, Duration::from_millis(300));
        assert!(!p.request(t1 + Duration::from_millis(1000)));
        assert_eq!(p.due(), Some(t1 + Duration::from_millis(1200)));
        assert!(p.request(t1 + Duration::from_millis(1200)));
    }
}
