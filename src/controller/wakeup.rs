//! Low-latency wake-ups: on PostgreSQL the loop listens for status-change events and runs a
//! pass as soon as one arrives, instead of waiting for the next resync poll.
//!
//! The poll stays as the safety net: a missed notification (the listener was reconnecting)
//! delays work by at most one resync interval, never loses it, because every pass recomputes
//! the due work from the table. After each reconnect the loop is woken once for that reason.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::Status;
use crate::observe::Metrics;
use crate::store::Store;

/// Wakes the reconcile loop, and tells it whether the news can include a new move into or
/// out of a trash (see `looks_for_moves` in the loop): a folder set to `delete-ongoing`
/// cannot, and looking for moves reads every folder already moved.
#[derive(Debug, Default)]
pub struct Wake {
    notify: Notify,
    moves: AtomicBool,
}

impl Wake {
    /// Wakes the loop; `moves`: a move may be due that was not before.
    pub fn work(&self, moves: bool) {
        if moves {
            self.moves.store(true, Ordering::Release);
        }
        self.notify.notify_one();
    }

    /// Waits for [`Wake::work`] (one call is kept if none waits).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Whether some wake-up since the last call said a move may be due; clears it.
    pub fn take_moves(&self) -> bool {
        self.moves.swap(false, Ordering::AcqRel)
    }
}

/// Whether a status event can make a move into or out of a trash due.
pub fn may_start_a_move(to: Status) -> bool {
    matches!(to, Status::DeletePending | Status::Ready)
}

/// Listens for status events and wakes the loop for each that creates work; reconnects with
/// backoff when the listener connection drops. Returns at once (after one wake-up) on
/// backends without events.
pub async fn listen(
    store: Arc<dyn Store>,
    wake: Arc<Wake>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let schedule = || {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(30))
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut delays = schedule();
    let mut first = true;
    loop {
        if !first {
            metrics.listener_reconnect();
        }
        first = false;
        match store.subscribe().await {
            Ok(None) => return,
            Ok(Some(mut events)) => {
                tracing::debug!("listening for status events");
                delays = schedule();
                // Events may have been missed while (re)connecting: anything may be due.
                wake.work(true);
                loop {
                    let next = tokio::select! {
                        _ = cancel.cancelled() => return,
                        next = events.next() => next,
                    };
                    match next {
                        Some(Ok(event)) => {
                            tracing::trace!(id = %event.id, to = %event.to, "status event");
                            if let Some(to) = event.to.known().filter(|s| s.creates_work()) {
                                wake.work(may_start_a_move(to));
                            }
                        }
                        Some(Err(error)) => {
                            tracing::warn!(%error, "status event listener lost its connection; reconnecting");
                            break;
                        }
                        None => {
                            tracing::warn!("status event stream ended; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                metrics.database_error("listen");
                tracing::warn!(%error, "cannot listen for status events; retrying");
            }
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(30));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_change_to_delete_pending_or_ready_can_start_a_move() {
        assert!(may_start_a_move(Status::DeletePending));
        assert!(may_start_a_move(Status::Ready));
        assert!(!may_start_a_move(Status::DeleteOngoing));
        assert!(!may_start_a_move(Status::DeleteComplete));
    }

    #[tokio::test]
    async fn a_wake_up_keeps_the_move_hint_until_it_is_taken() {
        let wake = Wake::default();
        wake.work(false);
        wake.notified().await;
        assert!(!wake.take_moves(), "a wake-up for delete-ongoing");
        wake.work(true);
        wake.work(false);
        wake.notified().await;
        assert!(
            wake.take_moves(),
            "one of the wake-ups said a move may be due"
        );
        assert!(!wake.take_moves(), "taken");
    }
}
