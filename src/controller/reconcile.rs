//! Reconcile one claimed folder: do the filesystem work its [`WorkKind`] asks for, then
//! record the outcome in the database.
//!
//! This module decides *what to do* with one folder; it never decides when or how many
//! (the runner and the claim query do). Guarantees:
//! - While a removal runs, its lease is renewed (and progress flushed) every
//!   `lease_renew_interval`. When a renewal finds that another replica owns the row, the
//!   removal is cancelled and nothing is recorded: the new owner finishes it.
//! - Cancellation (shutdown) and lease loss are never failures: no attempt is counted and
//!   the row stays `delete-ongoing`; a cancelled folder's lease is released at once so
//!   another replica can continue without waiting for the lease to expire.
//! - A failure is first put to the volume guard: when the volume itself is unavailable (not
//!   mounted, marker missing, `ENOTCONN`/`ESTALE`/`EIO` on its root), it is the volume's
//!   failure, not the folder's. The volume is marked unavailable ([`volume_health`]) and the
//!   lease released with the folder's attempts and next attempt time unchanged. A running
//!   removal checks its volume every [`VOLUME_WATCH`] and stops the same way when the
//!   volume disappears under it (a lazy unmount keeps the open descriptors working, so the
//!   removal itself would not notice).
//! - The process running out of descriptors or memory (`EMFILE`, `ENFILE`, `ENOMEM`) is
//!   neither the folder's failure nor the volume's: the folder is handed back like on a
//!   volume outage, the volume keeps its state, and claiming pauses ([`pressure`]).
//! - Progress survives interruptions: a removal starts from the counts its earlier runs
//!   saved, and a run that stops without completing (shutdown, volume outage, shortage,
//!   transient failure) saves its counts before handing the folder back, so the final counts
//!   and the completion's audit entry cover the whole removal.
//! - Otherwise transient errors count an attempt and schedule the next one with backoff;
//!   after `max_attempts`, and on any permanent error, the folder goes to `delete-error`
//!   with the error text. Trash moves never go to `delete-error` (no such transition exists
//!   from `ready`/`delete-pending`): they keep retrying with the capped backoff.
//!
//! [`volume_health`]: super::volume_health
//! [`pressure`]: super::pressure

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::Context;
use super::volume_health::{self, CheckFailed, PendingCheck};
use crate::storage::{self, Counts, FolderRef, Outcome as RemoveOutcome, Progress};
use crate::store::{self, Claim, Completion, Location, WorkKind};

/// How long cleanup that must still run after cancellation (releasing a lease) may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Attempts to write an outcome to the database before leaving it to lease expiry.
const RECORD_ATTEMPTS: u32 = 3;

/// How often a running removal checks that its volume is still there.
pub const VOLUME_WATCH: Duration = Duration::from_secs(1);

/// Why the filesystem work failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The storage layer reported an error (classified by it).
    #[error(transparent)]
    Storage(#[from] storage::Error),
    /// The blocking task panicked: a bug, retried like a transient error so the attempt
    /// cap still ends it in `delete-error` with this text.
    #[error("removal task panicked: {0}")]
    Panicked(String),
}

impl Failure {
    fn is_transient(&self) -> bool {
        match self {
            Failure::Storage(e) => e.is_transient(),
            Failure::Panicked(_) => true,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Failure::Storage(e) => e.kind(),
            Failure::Panicked(_) => "panic",
        }
    }
}

/// What the filesystem work ended with.
#[derive(Debug)]
pub enum Outcome {
    /// The folder's data is gone.
    Removed {
        /// What was removed.
        counts: Counts,
        /// How long it took.
        elapsed: Duration,
    },
    /// The data was moved to (or restored from) the trash.
    Moved(Location),
    /// Shutdown interrupted the work.
    Cancelled(Counts),
    /// Another replica took the row over.
    LeaseLost(Counts),
    /// The volume is unavailable: the volume's failure, not the folder's.
    VolumeUnavailable {
        /// What the volume guard said.
        reason: String,
        /// What was removed before the volume went away.
        counts: Counts,
    },
    /// The process ran out of descriptors or memory: nobody's failure but its own.
    Starved {
        /// The error met.
        reason: String,
        /// What was removed before.
        counts: Counts,
    },
    /// The work failed.
    Failed {
        /// Why.
        error: Failure,
        /// What was removed before the failure.
        counts: Counts,
    },
}

/// The label of a work kind in metrics and logs.
pub fn action(kind: WorkKind) -> &'static str {
    match kind {
        WorkKind::Remove => "remove",
        WorkKind::MoveToTrash => "move-to-trash",
        WorkKind::Restore => "restore",
    }
}

/// Reconciles one claimed folder and records the result. Never returns an error: every
/// failure ends in the database (retry, `delete-error`) or, when even that fails, in the
/// lease expiring so that the folder is picked up again.
pub async fn reconcile(ctx: Arc<Context>, claim: Claim, cancel: CancellationToken) {
    let started = Instant::now();
    let kind = claim.kind;
    if let Some(previous) = &claim.reclaimed_from {
        ctx.metrics.lease_reclaimed();
        tracing::info!(previous_owner = %previous, "took over an expired lease");
    }
    let (outcome, saved) = match kind {
        WorkKind::Remove => {
            let saved = saved_progress(&ctx, &claim).await;
            (remove(&ctx, &claim, &cancel, saved).await, saved)
        }
        WorkKind::MoveToTrash | WorkKind::Restore => {
            (relocate(&ctx, &claim).await, store::Progress::default())
        }
    };
    let outcome = match outcome {
        Outcome::Failed { error, counts } => blame(&ctx, &claim.folder.host, error, counts).await,
        other => other,
    };
    let result = record(&ctx, &claim, outcome, saved).await;
    ctx.metrics
        .reconcile(action(kind), result, started.elapsed());
}

/// What earlier runs of this removal saved (a run that was cancelled, lost its volume or
/// failed transiently). Unknown counts as nothing: the removal itself does not depend on it.
async fn saved_progress(ctx: &Context, claim: &Claim) -> store::Progress {
    match ctx.store.get_folder(claim.folder.id).await {
        Ok(detail) => detail.state.map(|s| s.progress).unwrap_or_default(),
        Err(error) => {
            ctx.metrics.database_error("get_folder");
            tracing::warn!(%error, "cannot read the saved progress; counting from zero");
            store::Progress::default()
        }
    }
}

/// Runs the removal on a blocking thread while renewing the lease. Renewals store `saved`
/// plus this run's counts.
async fn remove(
    ctx: &Arc<Context>,
    claim: &Claim,
    cancel: &CancellationToken,
    saved: store::Progress,
) -> Outcome {
    let host = claim.folder.host.clone();
    let progress = Arc::new(Progress::default());
    let removal_cancel = cancel.child_token();
    ctx.metrics.removal_started(&host);
    tracing::info!("removal started");
    let mut task = {
        let ctx = ctx.clone();
        let progress = progress.clone();
        let removal_cancel = removal_cancel.clone();
        let folder = claim.folder.clone();
        tokio::task::spawn_blocking(move || {
            let volume = ctx.volumes.get(&folder.host)?;
            volume.remove_folder(&FolderRef::from(&folder), &removal_cancel, &progress)
        })
    };
    let mut renew = tokio::time::interval(ctx.config.lease_renew_interval);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renew.tick().await;
    let mut watch = tokio::time::interval(VOLUME_WATCH);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    watch.tick().await;
    let mut watch_pending: PendingCheck = None;
    let mut lease_lost = false;
    let mut volume_lost = None;
    let joined = loop {
        tokio::select! {
            joined = &mut task => break joined,
            _ = watch.tick(), if volume_lost.is_none() => {
                // A check the process could not run (out of descriptors) proves nothing.
                if let Err(CheckFailed::Volume(reason)) = volume_health::check(&ctx.volumes, &host, &mut watch_pending).await {
                    tracing::debug!(%reason, "volume lost during the removal; stopping it");
                    volume_lost = Some(reason);
                    removal_cancel.cancel();
                }
            }
            _ = renew.tick() => {
                let counts = progress.snapshot();
                match ctx.store.renew_lease(claim.folder.id, &ctx.replica, ctx.config.lease_duration, total(saved, counts)).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!("lease lost to another replica; stopping this removal");
                        lease_lost = true;
                        removal_cancel.cancel();
                    }
                    Err(error) => {
                        ctx.metrics.database_error("renew_lease");
                        tracing::warn!(%error, "cannot renew lease; removal continues");
                    }
                }
            }
        }
    };
    let counts = progress.snapshot();
    let outcome = match joined {
        Ok(Ok(RemoveOutcome::Completed(report))) => Outcome::Removed {
            counts: report.counts,
            elapsed: report.elapsed,
        },
        Ok(Ok(RemoveOutcome::Cancelled(report))) if lease_lost => Outcome::LeaseLost(report.counts),
        Ok(Ok(RemoveOutcome::Cancelled(report))) => Outcome::Cancelled(report.counts),
        Ok(Err(error)) => Outcome::Failed {
            error: error.into(),
            counts,
        },
        Err(join) => Outcome::Failed {
            error: Failure::Panicked(join.to_string()),
            counts,
        },
    };
    match (volume_lost, outcome) {
        // Stopped (or failed) because the volume went away: the volume's failure.
        (Some(reason), Outcome::Cancelled(counts) | Outcome::Failed { counts, .. }) => {
            Outcome::VolumeUnavailable { reason, counts }
        }
        (_, outcome) => outcome,
    }
}

/// Decides whose failure `error` is. The process's own when it ran out of descriptors or
/// memory (or the guard cannot run for that reason). The volume's when it is the volume
/// guard's own error or the guard fails now: then nothing is counted against the folder.
/// The folder's otherwise, so `EACCES`, an immutable file, a mount inside the tree or an
/// `EIO` on one entry of a healthy volume keep their attempts, backoff and `delete-error`.
async fn blame(ctx: &Arc<Context>, host: &str, error: Failure, counts: Counts) -> Outcome {
    let verdict = match &error {
        Failure::Storage(e) if e.is_resource_exhaustion() => {
            Err(CheckFailed::Process(e.to_string()))
        }
        Failure::Storage(storage::Error::VolumeUnavailable { reason, .. }) => {
            Err(CheckFailed::Volume(reason.clone()))
        }
        // A configuration error: there is no volume to ask, and retrying cannot help.
        Failure::Storage(storage::Error::UnknownVolume { .. }) => Ok(()),
        // A check that hangs past its timeout is abandoned here (its thread ends when the
        // kernel returns); the volume's probe keeps track of the volume from then on.
        _ => volume_health::check(&ctx.volumes, host, &mut None).await,
    };
    match verdict {
        Err(CheckFailed::Volume(reason)) => Outcome::VolumeUnavailable { reason, counts },
        Err(CheckFailed::Process(reason)) => Outcome::Starved { reason, counts },
        Ok(()) => Outcome::Failed { error, counts },
    }
}

/// Moves the data into the trash or back (trash mode `move`).
async fn relocate(ctx: &Arc<Context>, claim: &Claim) -> Outcome {
    let ctx2 = ctx.clone();
    let folder = claim.folder.clone();
    let kind = claim.kind;
    let joined = tokio::task::spawn_blocking(move || {
        let volume = ctx2.volumes.get(&folder.host)?;
        let target = FolderRef::from(&folder);
        match kind {
            WorkKind::Restore => volume.restore_from_trash(&target).map(|()| Location::Live),
            _ => volume.move_to_trash(&target).map(|()| Location::Trash),
        }
    })
    .await;
    match joined {
        Ok(Ok(location)) => Outcome::Moved(location),
        Ok(Err(error)) => Outcome::Failed {
            error: error.into(),
            counts: Counts::default(),
        },
        Err(join) => Outcome::Failed {
            error: Failure::Panicked(join.to_string()),
            counts: Counts::default(),
        },
    }
}

/// Counts a finished (or abandoned) removal on the volume's metrics.
fn count_removal(ctx: &Context, host: &str, counts: Counts, elapsed: Duration, result: &str) {
    ctx.metrics.removal_finished(
        host,
        counts.files,
        counts.dirs,
        counts.bytes,
        elapsed,
        result,
    );
}

/// Writes the outcome to the database; returns the result label for metrics. `saved` is
/// what earlier runs of a removal removed: the database gets totals, the metrics (per
/// process) this run's counts.
async fn record(
    ctx: &Context,
    claim: &Claim,
    outcome: Outcome,
    saved: store::Progress,
) -> &'static str {
    let id = claim.folder.id;
    let host = claim.folder.host.as_str();
    let owner = ctx.replica.as_str();
    // What a removal that stops short saves before handing the folder back.
    let progress = |counts| (claim.kind == WorkKind::Remove).then(|| total(saved, counts));
    match outcome {
        Outcome::Removed { counts, elapsed } => {
            ctx.pressure.relieve();
            count_removal(ctx, host, counts, elapsed, "ok");
            let done = Completion {
                progress: total(saved, counts),
                duration: elapsed,
            };
            match retry_db(ctx, "complete_removal", || {
                ctx.store.complete_removal(id, owner, &done)
            })
            .await
            {
                Some(true) => {
                    tracing::info!(
                        files = counts.files,
                        dirs = counts.dirs,
                        symlinks = counts.symlinks,
                        bytes = counts.bytes,
                        elapsed_ms = elapsed.as_millis() as u64,
                        "folder removed: delete-ongoing -> delete-complete"
                    );
                    "ok"
                }
                Some(false) => {
                    tracing::warn!(
                        "folder removed, but the lease was lost before completion; the new owner completes it"
                    );
                    "lost-lease"
                }
                None => "database-error",
            }
        }
        Outcome::Moved(location) => {
            match retry_db(ctx, "record_location", || {
                ctx.store.record_location(id, owner, location)
            })
            .await
            {
                Some(_) => {
                    tracing::info!(?location, "folder data moved");
                    "ok"
                }
                None => "database-error",
            }
        }
        Outcome::Cancelled(counts) => {
            count_removal(ctx, host, counts, Duration::ZERO, "cancelled");
            match hand_back(ctx, id, progress(counts)).await {
                Ok(()) => {
                    tracing::info!("removal cancelled; lease released, folder stays delete-ongoing")
                }
                Err(error) => {
                    tracing::warn!(%error, "removal cancelled; the lease will expire instead")
                }
            }
            "cancelled"
        }
        Outcome::VolumeUnavailable { reason, counts } => {
            if claim.kind == WorkKind::Remove {
                count_removal(ctx, host, counts, Duration::ZERO, "volume-unavailable");
            }
            // Logged once per volume there; per folder only at debug level.
            ctx.volume_health.mark_unavailable(host, &reason).await;
            match hand_back(ctx, id, progress(counts)).await {
                Ok(()) => tracing::debug!(
                    %reason,
                    "volume unavailable; lease released, attempts unchanged"
                ),
                Err(error) => {
                    tracing::warn!(%error, "volume unavailable; the lease will expire instead")
                }
            }
            "volume-unavailable"
        }
        Outcome::Starved { reason, counts } => {
            if claim.kind == WorkKind::Remove {
                count_removal(ctx, host, counts, Duration::ZERO, "resource-exhausted");
            }
            let pause = ctx.pressure.report();
            tracing::warn!(
                %reason,
                pause_ms = pause.as_millis() as u64,
                "the process is out of descriptors or memory; folder handed back with its attempts kept, claiming paused"
            );
            if let Err(error) = hand_back(ctx, id, progress(counts)).await {
                tracing::warn!(%error, "the lease will expire instead");
            }
            "resource-exhausted"
        }
        Outcome::LeaseLost(counts) => {
            count_removal(ctx, host, counts, Duration::ZERO, "lost-lease");
            "lost-lease"
        }
        Outcome::Failed { error, counts } => {
            // Kept for the next attempt (a retry keeps the saved counts).
            if let Some(p) = progress(counts) {
                save_progress(ctx, id, p).await;
            }
            let result = record_failure(ctx, claim, &error).await;
            if claim.kind == WorkKind::Remove {
                count_removal(
                    ctx,
                    host,
                    counts,
                    Duration::ZERO,
                    if result == "retry" { "retry" } else { "error" },
                );
            }
            result
        }
    }
}

/// Hands the row back at once, leaving attempts and the next attempt time as they are, after
/// saving `progress` when given.
async fn hand_back(
    ctx: &Context,
    id: uuid::Uuid,
    progress: Option<store::Progress>,
) -> Result<(), String> {
    if let Some(p) = progress {
        save_progress(ctx, id, p).await;
    }
    release(ctx, id).await
}

/// Stores a removal's progress (through the lease renewal, which writes the counters while
/// the lease is ours). Best effort, with its own timeout: on shutdown the runner's token is
/// already cancelled, and a failure only loses the counts, not the work.
async fn save_progress(ctx: &Context, id: uuid::Uuid, progress: store::Progress) {
    let write = ctx
        .store
        .renew_lease(id, &ctx.replica, ctx.config.lease_duration, progress);
    match tokio::time::timeout(CLEANUP_TIMEOUT, write).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            ctx.metrics.database_error("renew_lease");
            tracing::warn!(%error, "cannot save the removal's progress");
        }
        Err(_) => tracing::warn!("saving the removal's progress timed out"),
    }
}

/// Releases the lease, with its own timeout: on shutdown the runner's token is already
/// cancelled.
async fn release(ctx: &Context, id: uuid::Uuid) -> Result<(), String> {
    match tokio::time::timeout(CLEANUP_TIMEOUT, ctx.store.release_lease(id, &ctx.replica)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("releasing the lease timed out".to_owned()),
    }
}

/// A transient failure schedules a retry; a permanent one (or the last attempt) ends in
/// `delete-error`. Trash moves always retry.
async fn record_failure(ctx: &Context, claim: &Claim, error: &Failure) -> &'static str {
    let id = claim.folder.id;
    let owner = ctx.replica.as_str();
    let attempt = claim.attempts.saturating_add(1);
    let exhausted = attempt >= ctx.config.max_attempts;
    let terminal = claim.kind == WorkKind::Remove && (!error.is_transient() || exhausted);
    if terminal {
        let message = if error.is_transient() {
            format!("gave up after {attempt} attempts: {error}")
        } else {
            error.to_string()
        };
        ctx.metrics.terminal_error(error.kind());
        tracing::error!(error = %message, kind = error.kind(), "removal failed: delete-ongoing -> delete-error");
        return match retry_db(ctx, "fail_removal", || {
            ctx.store.fail_removal(id, owner, &message)
        })
        .await
        {
            Some(_) => "error",
            None => "database-error",
        };
    }
    let delay = ctx.retry.delay(attempt);
    let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    let message = error.to_string();
    ctx.metrics.retry(error.kind());
    tracing::warn!(error = %message, kind = error.kind(), attempt, retry_in_ms = delay.as_millis() as u64, "transient failure; will retry");
    match retry_db(ctx, "record_retry", || {
        ctx.store.record_retry(id, owner, &message, next)
    })
    .await
    {
        Some(_) => "retry",
        None => "database-error",
    }
}

/// Runs a database write a few times with a short pause, so a blip does not cost a whole
/// lease period. `None` when it kept failing: the lease then expires and the folder is
/// reconciled again, which is safe because every step is idempotent.
async fn retry_db<T, F, Fut>(ctx: &Context, operation: &'static str, mut write: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, store::Error>>,
{
    for attempt in 1..=RECORD_ATTEMPTS {
        match write().await {
            Ok(value) => return Some(value),
            Err(error) => {
                ctx.metrics.database_error(operation);
                tracing::warn!(%error, operation, attempt, "database write failed");
                if !error.is_transient() {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
    }
    None
}

/// The whole removal's counters: what earlier runs saved plus this run's.
fn total(saved: store::Progress, c: Counts) -> store::Progress {
    store::Progress {
        files: saved.files.saturating_add(c.files),
        dirs: saved.dirs.saturating_add(c.dirs),
        symlinks: saved.symlinks.saturating_add(c.symlinks),
        bytes: saved.bytes.saturating_add(c.bytes),
    }
}
