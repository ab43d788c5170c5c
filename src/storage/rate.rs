//! `OpsLimiter`: a cap on metadata operations (unlinks and rmdirs) per second on one volume,
//! shared by every removal on that volume in this process.
//!
//! Why: on shared storage (NFS, CephFS, a NAS) the metadata server also serves the workloads
//! that are running on the volume. A mass purge with many threads per removal and several
//! removals at once can take all of its capacity; `max_ops_per_second` trades purge speed
//! for their latency.
//!
//! How: one timeline of evenly spaced slots (`1 s / rate` apart) under a mutex, as in GCRA.
//! Each operation reserves the next free slot and sleeps until it, in short slices so that
//! cancellation is honoured while waiting. Slots up to [`BURST`] in the past are still
//! handed out, so a removal that starts after an idle period begins at once.
//!
//! Guarantee: over any window of length `T`, at most `rate × (T + BURST) + 1` operations
//! start. Nothing is promised about a lower bound: operations are slower than the limit
//! whenever the filesystem is. An unlimited volume has no limiter at all, so the remover's
//! fast path is one `Option` check per operation.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How far in the past a free slot may still be used: the largest burst after idling,
/// in time (at least one slot).
pub const BURST: Duration = Duration::from_millis(50);

/// Longest single sleep while waiting for a slot, so that a cancelled removal stops waiting
/// within this much time.
const WAIT_SLICE: Duration = Duration::from_millis(20);

/// A per-volume limit of metadata operations per second (see the module docs).
#[derive(Debug)]
pub struct OpsLimiter {
    per_second: u32,
    interval: Duration,
    burst: Duration,
    /// The next free slot on the timeline.
    next: Mutex<Instant>,
}

impl OpsLimiter {
    /// A limiter allowing `per_second` operations per second (0 is treated as 1;
    /// the configuration rejects 0).
    pub fn new(per_second: u32) -> OpsLimiter {
        let per_second = per_second.max(1);
        let interval = Duration::from_secs(1) / per_second;
        OpsLimiter {
            per_second,
            interval,
            burst: BURST.max(interval),
            next: Mutex::new(Instant::now()),
        }
    }

    /// The configured rate.
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Blocks until one more operation may start and returns `true`; returns `false` as
    /// soon as `stop()` says so while waiting (the slot is then forfeited, which only ever
    /// makes the volume slower, never faster than the limit).
    pub fn acquire(&self, stop: impl Fn() -> bool) -> bool {
        let slot = {
            // Every critical section leaves a valid instant behind, so poisoning is harmless.
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let earliest = now.checked_sub(self.burst).unwrap_or(now);
            let slot = (*next).max(earliest);
            *next = slot + self.interval;
            slot
        };
        loop {
            let now = Instant::now();
            if slot <= now {
                return true;
            }
            if stop() {
                return false;
            }
            std::thread::sleep((slot - now).min(WAIT_SLICE));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::*;

    /// Operations started by `threads` threads hammering one limiter for `run`.
    fn started_in(limiter: &Arc<OpsLimiter>, threads: usize, run: Duration) -> u64 {
        let count = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (limiter, count, done) = (limiter.clone(), count.clone(), done.clone());
                std::thread::spawn(move || {
                    while limiter.acquire(|| done.load(Ordering::Relaxed)) {
                        if done.load(Ordering::Relaxed) {
                            break;
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        std::thread::sleep(run);
        done.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().expect("thread");
        }
        count.load(Ordering::Relaxed)
    }

    #[test]
    fn many_threads_together_stay_under_the_rate() {
        let limiter = Arc::new(OpsLimiter::new(500));
        let run = Duration::from_millis(1000);
        let n = started_in(&limiter, 4, run);
        // Upper bound only: rate × (run + burst) + 1, plus a little for the last slice.
        let bound = 500.0 * (run + BURST + WAIT_SLICE).as_secs_f64() + 1.0;
        assert!(
            (n as f64) <= bound,
            "{n} operations in {run:?} at 500/s (bound {bound})"
        );
        assert!(n > 0, "the limiter lets operations through");
    }

    #[test]
    fn a_stop_request_ends_the_wait() {
        let limiter = OpsLimiter::new(1);
        // The first slot is free; the next one is a second away.
        assert!(limiter.acquire(|| false));
        let started = Instant::now();
        assert!(!limiter.acquire(|| true), "stopped while waiting");
        assert!(started.elapsed() < Duration::from_millis(500));
    }
}
