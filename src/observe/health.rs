//! Liveness: is the reconcile loop still making progress?
//!
//! The loop reports in after every pass ([`Health::pass_completed`]) and whenever it learns
//! that the database failed or recovered ([`Health::set_database_ok`]). Liveness fails only
//! when the loop has gone silent for longer than `stall_after`: a loop that keeps reporting
//! "database unavailable" is alive and waiting, and restarting the process would not bring
//! the database back (readiness reports that case instead). A loop that hangs stops
//! reporting and is restarted by the liveness probe.

use std::sync::Mutex;
use std::time::Duration;

// tokio's clock, so tests of the loop can drive stall detection with paused time; outside a
// paused runtime it is the system's monotonic clock.
use tokio::time::Instant;

/// Shared (behind an `Arc`) between the loop, which reports, and the HTTP server, which asks.
#[derive(Debug)]
pub struct Health {
    stall_after: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The last time the loop reported anything; the creation time before that, which gives
    /// the first pass `stall_after` to complete.
    last_report: Instant,
    /// The last completed pass, if any.
    last_pass: Option<Instant>,
    /// Why the database is unavailable, as the loop last reported; `None` when it is fine.
    database_error: Option<String>,
}

impl Health {
    /// A health tracker that declares the loop stalled when it has not reported for longer
    /// than `stall_after` (the controller passes a few resync intervals).
    pub fn new(stall_after: Duration) -> Health {
        Health {
            stall_after,
            state: Mutex::new(State {
                last_report: Instant::now(),
                last_pass: None,
                database_error: None,
            }),
        }
    }

    /// The loop completed a pass.
    pub fn pass_completed(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        state.last_report = now;
        state.last_pass = Some(now);
    }

    /// The loop reports that the database works (`ok`) or failed, with the reason. Either
    /// report also proves the loop is alive.
    pub fn set_database_ok(&self, ok: bool, reason: Option<String>) {
        let mut state = self.lock();
        state.last_report = Instant::now();
        state.database_error = if ok {
            None
        } else {
            Some(reason.unwrap_or_else(|| "database unavailable".to_owned()))
        };
    }

    /// `Ok` while the loop reports in; `Err(reason)` once it has been silent for longer than
    /// `stall_after`.
    pub fn liveness(&self) -> Result<(), String> {
        let state = self.lock();
        let silent = state.last_report.elapsed();
        if silent <= self.stall_after {
            return Ok(());
        }
        let last_pass = match state.last_pass {
            Some(at) => format!("the last pass completed {} ago", human(at.elapsed())),
            None => "no pass has completed since start".to_owned(),
        };
        Err(format!(
            "reconcile loop stalled: no report for {} (limit {}); {last_pass}",
            human(silent),
            human(self.stall_after)
        ))
    }

    /// The database failure the loop last reported, if it has not recovered since.
    pub fn database_error(&self) -> Option<String> {
        self.lock().database_error.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few plain values, each written whole; a panic elsewhere while the
        // lock was held cannot leave it inconsistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whole seconds (or milliseconds under a second) for messages.
fn human(d: Duration) -> String {
    let rounded = if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX))
    };
    humantime::format_duration(rounded).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Tests use `stall_after` of zero or of an hour, so no assertion depends on timing.

    #[test]
    fn a_fresh_tracker_is_live_until_stall_after() {
        assert_eq!(Health::new(Duration::from_secs(3600)).liveness(), Ok(()));
        let h = Health::new(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(2));
        let err = h.liveness().unwrap_err();
        assert!(err.contains("no pass has completed since start"), "{err}");
    }

    #[test]
    fn a_silent_loop_is_reported_with_its_last_pass() {
        let h = Health::new(Duration::ZERO);
        h.pass_completed();
        std::thread::sleep(Duration::from_millis(2));
        let err = h.liveness().unwrap_err();
        assert!(err.contains("the last pass completed"), "{err}");
    }

    #[test]
    fn database_reports_are_remembered_until_recovery() {
        let h = Health::new(Duration::from_secs(3600));
        h.set_database_ok(false, Some("connection refused".into()));
        assert_eq!(h.database_error().as_deref(), Some("connection refused"));
        assert_eq!(h.liveness(), Ok(()));
        h.set_database_ok(true, None);
        assert_eq!(h.database_error(), None);
    }
}
