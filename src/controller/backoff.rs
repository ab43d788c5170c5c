//! The retry schedule for transient failures: capped exponential backoff with jitter.
//!
//! The attempt count and the next attempt time are stored on the controller's row, not in
//! memory, so the schedule survives restarts and is visible in `show`. This module only
//! turns "the n-th failure" into "wait this long", using `backon`'s builder for the curve.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Delays between attempts: `min`, doubling, capped at `max`, each with up to 100 % jitter
/// added (and then capped again), so replicas that failed together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySchedule {
    /// Delay after the first failure (before jitter).
    pub min: Duration,
    /// Largest delay, jitter included.
    pub max: Duration,
}

impl RetrySchedule {
    /// The delay to wait after the `attempt`-th failure (1-based; 0 is treated as 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let nth = attempt.max(1) as usize;
        ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(nth)
            .build()
            .nth(nth - 1)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// `base` scaled by a random factor in `[0.9, 1.1)`, so periodic work of several replicas
/// spreads out instead of arriving at the database in lockstep.
pub fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::random_range(0.9..1.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_min_and_stay_under_the_cap() {
        let s = RetrySchedule {
            min: Duration::from_secs(1),
            max: Duration::from_secs(600),
        };
        for attempt in 1..=30 {
            let base = Duration::from_secs(1u64 << (attempt - 1).min(20)).min(s.max);
            for _ in 0..50 {
                let d = s.delay(attempt);
                assert!(d >= base, "attempt {attempt}: {d:?} < {base:?}");
                assert!(d <= (base * 2).min(s.max), "attempt {attempt}: {d:?}");
            }
        }
        assert!(s.delay(0) <= Duration::from_secs(2));
        assert_eq!(s.delay(40), s.max.min(s.delay(40)));
    }

    #[test]
    fn jitter_spreads_the_schedule() {
        let s = RetrySchedule {
            min: Duration::from_secs(10),
            max: Duration::from_secs(3600),
        };
        let samples: std::collections::BTreeSet<_> = (0..20).map(|_| s.delay(3)).collect();
        assert!(samples.len() > 1, "no jitter: {samples:?}");
        let j: Vec<_> = (0..100)
            .map(|_| jittered(Duration::from_secs(10)))
            .collect();
        assert!(
            j.iter()
                .all(|d| *d >= Duration::from_secs(9) && *d < Duration::from_secs(11))
        );
    }
}
