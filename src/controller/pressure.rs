//! Resource pressure: the process ran out of descriptors or memory (`EMFILE`, `ENFILE`,
//! `ENOMEM`), and the runner holds back its claims for a while.
//!
//! Why: such an error says nothing about the folder or its volume. Counting it as the
//! folder's attempt would march healthy folders toward `delete-error`; reading it as a volume
//! outage would pause a healthy volume. So a reconcile that meets it hands its folder back
//! with attempts and next attempt time untouched ([`reconcile`](super::reconcile)), and
//! reports here. Claiming more work at once would only meet the same shortage, so the runner
//! claims nothing until the pause is over: the removals still running finish and give their
//! descriptors back. Consecutive reports lengthen the pause on the retry schedule
//! (`backoff_min` doubling to `backoff_max`, with jitter); any completed removal resets it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::backoff::RetrySchedule;

/// Whether, and until when, the process is short of resources.
#[derive(Debug)]
pub struct Pressure {
    schedule: RetrySchedule,
    strikes: AtomicU32,
    until: Mutex<Option<Instant>>,
}

impl Pressure {
    /// No pressure yet; pauses follow `schedule`.
    pub fn new(schedule: RetrySchedule) -> Pressure {
        Pressure {
            schedule,
            strikes: AtomicU32::new(0),
            until: Mutex::new(None),
        }
    }

    /// Records a shortage; returns how long claiming now pauses.
    pub fn report(&self) -> Duration {
        let strikes = self
            .strikes
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let pause = self.schedule.delay(strikes);
        let until = Instant::now() + pause;
        let mut current = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        *current = Some(current.map_or(until, |t| t.max(until)));
        pause
    }

    /// A removal completed: the shortage is over, the next one starts a short pause again.
    pub fn relieve(&self) {
        self.strikes.store(0, Ordering::Relaxed);
    }

    /// Whether claiming is paused now.
    pub fn paused(&self) -> bool {
        self.until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|t| Instant::now() < t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_shortage_pauses_claims_for_a_growing_while() {
        let p = Pressure::new(RetrySchedule {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
        });
        assert!(!p.paused());
        let first = p.report();
        assert!(p.paused());
        tokio::time::advance(first + Duration::from_millis(1)).await;
        assert!(!p.paused(), "the pause ends");
        let second = p.report();
        assert!(second >= Duration::from_secs(2), "{second:?}");
        p.relieve();
        tokio::time::advance(second + Duration::from_millis(1)).await;
        assert!(p.report() <= Duration::from_secs(2), "reset by a success");
    }
}
