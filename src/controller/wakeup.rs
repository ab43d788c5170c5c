//! Low-latency wake-ups: on PostgreSQL the loop listens for status-change events and runs a
//! pass as soon as one arrives, instead of waiting for the next resync poll.
//!
//! The poll stays as the safety net: a missed notification (the listener was reconnecting)
//! delays work by at most one resync interval, never loses it, because every pass recomputes
//! the due work from the table. After each reconnect the loop is woken once for that reason.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::Status;
use crate::observe::Metrics;
use crate::store::Store;

/// Listens for status events and notifies `wake` for each; reconnects with backoff when the
/// listener connection drops. Returns at once (after one `wake`) on backends without events.
pub async fn listen(
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
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
                wake.notify_one();
                loop {
                    let next = tokio::select! {
                        _ = cancel.cancelled() => return,
                        next = events.next() => next,
                    };
                    match next {
                        Some(Ok(event)) => {
                            tracing::trace!(id = %event.id, to = %event.to, "status event");
                            if event.to.known().is_some_and(Status::creates_work) {
                                wake.notify_one();
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
