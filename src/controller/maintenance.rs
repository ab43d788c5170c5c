//! The shared lifecycle of periodic maintenance jobs (trash timer, history cleanup, status
//! gauges): run once, then again after a jittered interval, until shutdown.
//!
//! Each job is one idempotent statement per batch, safe when every replica runs it at the
//! same time, so no leader election is needed. A failed run is logged and counted, never
//! fatal: the next tick tries again. Cancellation ends the job quietly, after the run under
//! way (if any) finishes or [`FINISH_AT_SHUTDOWN`] passes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::backoff::jittered;
use crate::observe::Metrics;
use crate::store;

/// Rows one statement of a batched job touches at most; a job repeats the statement until
/// a batch comes back short.
pub const BATCH: u32 = 500;

/// How long a run under way at shutdown may take to finish.
const FINISH_AT_SHUTDOWN: Duration = Duration::from_secs(2);

/// One periodic job.
pub trait MaintenanceJob: Send + Sync + 'static {
    /// Bounded name, used in logs and metric labels.
    const NAME: &'static str;

    /// Runs the job once to completion (all batches); returns the rows it changed.
    fn run_once(&self) -> impl Future<Output = Result<u64, store::Error>> + Send;
}

/// When and under which token periodic jobs run; shared by all jobs of a replica.
#[derive(Clone)]
pub struct Schedule {
    /// Pause between runs (jittered).
    pub interval: Duration,
    /// Where runs and failures are counted.
    pub metrics: Arc<Metrics>,
    /// Ends every job.
    pub cancel: CancellationToken,
}

impl Schedule {
    /// Runs `job` now and then every `interval` (jittered) until `cancel` fires.
    pub async fn run<J: MaintenanceJob>(self, job: J) {
        let Schedule {
            interval,
            metrics,
            cancel,
        } = self;
        loop {
            let run = job.run_once();
            tokio::pin!(run);
            let result = tokio::select! {
                result = &mut run => result,
                // A run is a few short transactions: it may finish them, within a bound.
                // Dropping one mid-transaction was seen to keep SQLite's write lock past the
                // removals' last writes at shutdown (their saved progress and released
                // leases then waited out the busy timeout and were lost).
                _ = cancel.cancelled() => match tokio::time::timeout(FINISH_AT_SHUTDOWN, run).await {
                    Ok(result) => result,
                    Err(_) => return,
                },
            };
            match result {
                Ok(rows) => {
                    if rows > 0 {
                        tracing::info!(job = J::NAME, rows, "maintenance job changed rows");
                    }
                    metrics.timer_run(J::NAME, rows);
                }
                Err(error) => {
                    metrics.database_error(J::NAME);
                    tracing::warn!(job = J::NAME, %error, "maintenance job failed; retrying at the next tick");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(jittered(interval)) => {}
            }
        }
    }
}

/// Repeats a batched statement until a batch comes back short; returns the total.
pub async fn drain_batches<F, Fut>(mut batch: F) -> Result<u64, store::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, store::Error>>,
{
    let mut total = 0;
    loop {
        let n = batch().await?;
        total += n;
        if n < u64::from(BATCH) {
            return Ok(total);
        }
        // Let other work (and other replicas) in between batches.
        tokio::task::yield_now().await;
    }
}
