//! Reconcile one claimed folder: do the filesystem work its [`WorkKind`] asks for, then
//! record the outcome in the database.
//!
//! This module decides *what to do* with one folder; it never decides when or how many
//! (the runner and the claim query do). Guarantees:
//! - While a removal runs, its lease is renewed (and progress flushed) every
//!   `lease_renew_interval`. When a renewal finds that another replica owns the row, the
//!   removal is cancelled and nothing is recorded: the new owner finishes it.
//! - **A row deleted under a running removal** (a plain `DELETE FROM vfolders`, the
//!   platform's purge) is not a lost lease: the database's tombstone trigger hands the row's
//!   lease to the tombstone, the removal carries on under it ([`Lease::Tombstone`]) and its
//!   end is recorded on the tombstone (`removed-after-row-deleted` in the audit log). When
//!   the lease could not be handed over (it had expired), the removal stops, says "row
//!   deleted during removal", and whichever replica claims the tombstone finishes it.
//!   Pending tombstones are claimed like rows ([`finish_tombstone`]); a tombstone whose id
//!   has a row again is never removed (the data is that row's now).
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

use uuid::Uuid;

use super::backoff::RetrySchedule;
use super::volume_health::{self, CheckFailed, PendingCheck};
use super::{Context, Slot};
use crate::storage::{self, Counts, FolderRef, Outcome as RemoveOutcome, Progress, Report};
use crate::store::{self, Claim, Completion, Location, TombstoneClaim, TombstoneEnd, WorkKind};

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

/// How one reconcile ended: the `result` label of the reconcile and removal metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileResult {
    /// Done (removed, moved, or completed by the tombstone).
    Ok,
    /// A transient failure; retried with backoff.
    Retry,
    /// Failed for good: `delete-error`.
    Error,
    /// Stopped by shutdown; the folder stays `delete-ongoing`.
    Cancelled,
    /// Another replica holds the lease now.
    LostLease,
    /// The row was deleted under the removal.
    RowDeleted,
    /// The volume is unavailable; the folder keeps its attempts.
    VolumeUnavailable,
    /// The process ran out of descriptors or memory; the folder keeps its attempts.
    ResourceExhausted,
    /// The outcome could not be written; the lease expires and the work is redone.
    DatabaseError,
}

impl ReconcileResult {
    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReconcileResult::Ok => "ok",
            ReconcileResult::Retry => "retry",
            ReconcileResult::Error => "error",
            ReconcileResult::Cancelled => "cancelled",
            ReconcileResult::LostLease => "lost-lease",
            ReconcileResult::RowDeleted => "row-deleted",
            ReconcileResult::VolumeUnavailable => "volume-unavailable",
            ReconcileResult::ResourceExhausted => "resource-exhausted",
            ReconcileResult::DatabaseError => "database-error",
        }
    }
}

/// Whose lease a worker holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// The `vfolders` row's (its controller state), by folder id.
    Row(Uuid),
    /// A tombstone's, by sequence number: the row was deleted while `delete-ongoing`.
    Tombstone(i64),
}

/// One piece of claimed work: a row's, or a tombstone's removal.
#[derive(Debug, Clone)]
pub struct Work {
    /// The folder id.
    pub id: Uuid,
    /// Its volume.
    pub host: String,
    /// Its quota scope.
    pub quota_scope_id: Option<String>,
    /// What to do.
    pub kind: WorkKind,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The previous owner, when this claim took over an expired lease.
    pub reclaimed_from: Option<String>,
    /// The lease the claim holds.
    pub lease: Lease,
    /// What earlier runs of the removal saved (a tombstone's removal counts from zero).
    pub saved: Counts,
}

impl Work {
    fn folder_ref(&self) -> FolderRef<'_> {
        FolderRef {
            id: self.id,
            host: &self.host,
            quota_scope_id: self.quota_scope_id.as_deref(),
        }
    }
}

impl From<Claim> for Work {
    fn from(c: Claim) -> Work {
        Work {
            id: c.folder.id,
            host: c.folder.host,
            quota_scope_id: c.folder.quota_scope_id,
            kind: c.kind,
            attempts: c.attempts,
            reclaimed_from: c.reclaimed_from,
            lease: Lease::Row(c.folder.id),
            saved: c.progress,
        }
    }
}

/// What the filesystem work ended with.
#[derive(Debug)]
pub enum Outcome {
    /// The folder's data is gone: what was removed, how long it took and with how many
    /// threads at most.
    Removed(Report),
    /// The data was moved to (or restored from) the trash.
    Moved(Location),
    /// Shutdown interrupted the work.
    Cancelled(Counts),
    /// Another replica took the row over.
    LeaseLost(Counts),
    /// The row was deleted during the removal and its lease could not be handed to the
    /// tombstone: the removal stopped; the tombstone's claimant finishes it.
    RowDeleted(Counts),
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

/// Reconciles one claimed folder and records the result. Never returns an error: every
/// failure ends in the database (retry, `delete-error`) or, when even that fails, in the
/// lease expiring so that the folder is picked up again.
pub async fn reconcile(ctx: Arc<Context>, claim: Claim, slot: Slot, cancel: CancellationToken) {
    run(ctx, Work::from(claim), slot, cancel).await;
}

/// Finishes the removal a deleted `delete-ongoing` row left behind, from its tombstone,
/// with the same engine and safety rules as a row's removal. A tombstone whose id has a row
/// again is ended as superseded without touching anything.
pub async fn finish_tombstone(
    ctx: Arc<Context>,
    claim: TombstoneClaim,
    slot: Slot,
    cancel: CancellationToken,
) {
    let seq = claim.tombstone.seq;
    let owner = ctx.replica.clone();
    let end = if claim.row_exists {
        Some(TombstoneEnd::Superseded)
    } else if claim.tombstone.host.is_none() {
        Some(TombstoneEnd::Failed(
            "the deleted row had no host; its data cannot be found".to_owned(),
        ))
    } else {
        None
    };
    if let Some(end) = end {
        tracing::warn!(?end, "tombstone not removed");
        let _ = retry_db(&ctx, "finish_tombstone", || {
            ctx.store.finish_tombstone(seq, &owner, &end)
        })
        .await;
        return;
    }
    let t = claim.tombstone;
    let work = Work {
        id: t.vfolder_id,
        host: t.host.unwrap_or_default(),
        quota_scope_id: t.quota_scope_id,
        kind: WorkKind::Remove,
        attempts: t.attempts,
        reclaimed_from: claim.reclaimed_from,
        lease: Lease::Tombstone(seq),
        saved: Counts::default(),
    };
    run(ctx, work, slot, cancel).await;
}

/// Does the folder's filesystem work holding `slot`, gives the slot back, then records the
/// outcome (the lease is held until it is recorded).
async fn run(ctx: Arc<Context>, work: Work, slot: Slot, cancel: CancellationToken) {
    let started = Instant::now();
    let kind = work.kind;
    if let Some(previous) = &work.reclaimed_from {
        ctx.metrics.lease_reclaimed();
        tracing::info!(previous_owner = %previous, "took over an expired lease");
    }
    let (outcome, lease, saved) = match kind {
        WorkKind::Remove => {
            // Read with the claim: no query of its own per removal.
            let saved = work.saved;
            let (outcome, lease) = remove(&ctx, &work, &cancel, saved).await;
            (outcome, lease, saved)
        }
        WorkKind::MoveToTrash => (
            relocate(&ctx, &work, Location::Trash).await,
            work.lease,
            Counts::default(),
        ),
        WorkKind::Restore => (
            relocate(&ctx, &work, Location::Live).await,
            work.lease,
            Counts::default(),
        ),
    };
    let outcome = match outcome {
        Outcome::Failed { error, counts } => blame(&ctx, &work.host, error, counts).await,
        other => other,
    };
    drop(slot);
    let result = record(&ctx, &work, lease, outcome, saved).await;
    ctx.metrics
        .reconcile(kind.as_str(), result.as_str(), started.elapsed());
}

/// Renews whichever lease the worker holds.
async fn renew(ctx: &Context, lease: Lease, counts: Counts) -> Result<bool, store::Error> {
    let (owner, length, progress) = (&ctx.replica, ctx.config.lease_duration, counts);
    match lease {
        Lease::Row(id) => ctx.store.renew_lease(id, owner, length, progress).await,
        Lease::Tombstone(seq) => {
            ctx.store
                .renew_tombstone(seq, owner, length, progress)
                .await
        }
    }
}

/// Why a row lease could not be renewed: the row was deleted (its lease passed to the
/// tombstone, `Some(Some(seq))`, or could not, `Some(None)`), or another replica owns it
/// (`None`).
async fn row_deleted(ctx: &Context, id: Uuid) -> Option<Option<i64>> {
    match ctx.store.inherited_tombstone(id, &ctx.replica).await {
        Ok(Some(seq)) => return Some(Some(seq)),
        Ok(None) => {}
        Err(error) => {
            ctx.metrics.database_error("inherited_tombstone");
            tracing::warn!(%error, "cannot look for the row's tombstone");
            return None;
        }
    }
    match ctx.store.get_folder(id).await {
        Err(store::Error::NotFound(_)) => Some(None),
        _ => None,
    }
}

/// Runs the removal on a blocking thread while renewing the lease; returns the lease it
/// ends with (a row's lease becomes its tombstone's when the row is deleted meanwhile).
/// Renewals store `saved` plus this run's counts.
async fn remove(
    ctx: &Arc<Context>,
    work: &Work,
    cancel: &CancellationToken,
    saved: Counts,
) -> (Outcome, Lease) {
    let host = work.host.clone();
    let progress = Arc::new(Progress::default());
    let removal_cancel = cancel.child_token();
    let mut lease = work.lease;
    ctx.metrics.removal_started(&host);
    match lease {
        Lease::Row(_) => tracing::info!("removal started"),
        Lease::Tombstone(seq) => tracing::info!(
            tombstone = seq,
            "removal started from the tombstone of a row deleted while delete-ongoing"
        ),
    }
    let mut task = {
        let ctx = ctx.clone();
        let progress = progress.clone();
        let removal_cancel = removal_cancel.clone();
        let work = work.clone();
        tokio::task::spawn_blocking(move || {
            let volume = ctx.volumes.get(&work.host)?;
            volume.remove_folder(&work.folder_ref(), &removal_cancel, &progress)
        })
    };
    let mut renew_tick = tokio::time::interval(ctx.config.lease_renew_interval);
    renew_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renew_tick.tick().await;
    let mut watch = tokio::time::interval(VOLUME_WATCH);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    watch.tick().await;
    let mut watch_pending: PendingCheck = None;
    // What this removal last added to the volume's thread gauge (refreshed every watch).
    let mut threads_shown = 0i64;
    let mut lease_lost = false;
    let mut deleted = false;
    let mut volume_lost = None;
    let joined = loop {
        tokio::select! {
            joined = &mut task => break joined,
            _ = watch.tick(), if volume_lost.is_none() => {
                let threads = i64::try_from(progress.threads()).unwrap_or(i64::MAX);
                ctx.metrics.add_removal_threads(&host, threads - threads_shown);
                threads_shown = threads;
                // A check the process could not run (out of descriptors) proves nothing.
                if let Err(CheckFailed::Volume(reason)) = volume_health::check(&ctx.volumes, &host, &mut watch_pending).await {
                    tracing::debug!(%reason, "volume lost during the removal; stopping it");
                    volume_lost = Some(reason);
                    removal_cancel.cancel();
                }
            }
            _ = renew_tick.tick(), if !lease_lost && !deleted => {
                match renew(ctx, lease, total(saved, progress.snapshot())).await {
                    Ok(true) => {}
                    Ok(false) => match (lease, row_deleted(ctx, work.id).await) {
                        (Lease::Row(_), Some(Some(seq))) => {
                            tracing::warn!(tombstone = seq, "row deleted during removal; the removal carries on under its tombstone");
                            lease = Lease::Tombstone(seq);
                        }
                        (Lease::Row(_), Some(None)) => {
                            tracing::warn!("row deleted during removal; stopping here, the controller finishes the removal from its tombstone");
                            deleted = true;
                            removal_cancel.cancel();
                        }
                        (Lease::Row(_), None) => {
                            tracing::warn!("lease lost to another replica; stopping this removal");
                            lease_lost = true;
                            removal_cancel.cancel();
                        }
                        (Lease::Tombstone(_), _) => {
                            tracing::warn!("tombstone lease lost, or a row with this id exists again; stopping this removal");
                            lease_lost = true;
                            removal_cancel.cancel();
                        }
                    },
                    Err(error) => {
                        ctx.metrics.database_error("renew_lease");
                        tracing::warn!(%error, "cannot renew lease; removal continues");
                    }
                }
            }
        }
    };
    ctx.metrics.add_removal_threads(&host, -threads_shown);
    let counts = progress.snapshot();
    let outcome = match joined {
        Ok(Ok(RemoveOutcome::Completed(report))) => Outcome::Removed(report),
        Ok(Ok(RemoveOutcome::Cancelled(report))) if deleted => Outcome::RowDeleted(report.counts),
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
    let outcome = match (volume_lost, outcome) {
        // Stopped (or failed) because the volume went away: the volume's failure.
        (Some(reason), Outcome::Cancelled(counts) | Outcome::Failed { counts, .. }) => {
            Outcome::VolumeUnavailable { reason, counts }
        }
        (_, outcome) => outcome,
    };
    (outcome, lease)
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
async fn relocate(ctx: &Arc<Context>, work: &Work, to: Location) -> Outcome {
    let ctx2 = ctx.clone();
    let work = work.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let volume = ctx2.volumes.get(&work.host)?;
        let target = work.folder_ref();
        match to {
            Location::Live => volume.restore_from_trash(&target),
            Location::Trash => volume.move_to_trash(&target),
        }
        .map(|()| to)
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
fn count_removal(
    ctx: &Context,
    host: &str,
    counts: Counts,
    elapsed: Duration,
    result: ReconcileResult,
) {
    ctx.metrics.removal_finished(
        host,
        counts.files,
        counts.dirs,
        counts.bytes,
        elapsed,
        result.as_str(),
    );
}

/// Writes the outcome to the database, on the row or the tombstone whose `lease` the worker
/// holds; returns the result label for metrics. `saved` is what earlier runs of a removal
/// removed: the database gets totals, the metrics (per process) this run's counts.
async fn record(
    ctx: &Context,
    work: &Work,
    lease: Lease,
    outcome: Outcome,
    saved: Counts,
) -> ReconcileResult {
    let host = work.host.as_str();
    let owner = ctx.replica.as_str();
    // What a removal that stops short saves before handing the folder back.
    let progress = |counts| (work.kind == WorkKind::Remove).then(|| total(saved, counts));
    match outcome {
        Outcome::Removed(Report {
            counts,
            elapsed,
            threads,
            ..
        }) => {
            ctx.pressure.relieve();
            count_removal(ctx, host, counts, elapsed, ReconcileResult::Ok);
            let done = Completion {
                progress: total(saved, counts),
                duration: elapsed,
            };
            let completed = match lease {
                Lease::Row(id) => {
                    retry_db(ctx, "complete_removal", || {
                        ctx.completions.complete(id, done)
                    })
                    .await
                }
                Lease::Tombstone(_) => Some(false),
            };
            // The row may have been deleted after the last renewal: then its tombstone holds
            // the lease, and the result goes there.
            let tombstone = match (completed, lease) {
                (Some(false), Lease::Tombstone(seq)) => Some(seq),
                (Some(false), Lease::Row(id)) => row_deleted(ctx, id).await.flatten(),
                _ => None,
            };
            if let Some(seq) = tombstone {
                let end = TombstoneEnd::Removed(done);
                return match retry_db(ctx, "finish_tombstone", || {
                    ctx.store.finish_tombstone(seq, owner, &end)
                })
                .await
                {
                    Some(true) => {
                        tracing::info!(
                            tombstone = seq,
                            files = counts.files,
                            dirs = counts.dirs,
                            bytes = counts.bytes,
                            elapsed_ms = elapsed.as_millis() as u64,
                            threads,
                            "folder removed after its row was deleted"
                        );
                        ReconcileResult::Ok
                    }
                    Some(false) => {
                        tracing::warn!("folder removed, but the tombstone's lease was lost");
                        ReconcileResult::LostLease
                    }
                    None => ReconcileResult::DatabaseError,
                };
            }
            match completed {
                Some(true) => {
                    tracing::info!(
                        files = counts.files,
                        dirs = counts.dirs,
                        symlinks = counts.symlinks,
                        bytes = counts.bytes,
                        elapsed_ms = elapsed.as_millis() as u64,
                        threads,
                        "folder removed: delete-ongoing -> delete-complete"
                    );
                    ReconcileResult::Ok
                }
                Some(false) => {
                    tracing::warn!(
                        "folder removed, but the lease was lost before completion; the new owner completes it"
                    );
                    ReconcileResult::LostLease
                }
                None => ReconcileResult::DatabaseError,
            }
        }
        Outcome::Moved(location) => {
            match retry_db(ctx, "record_location", || {
                ctx.store.record_location(work.id, owner, location)
            })
            .await
            {
                Some(_) => {
                    tracing::info!(?location, "folder data moved");
                    ReconcileResult::Ok
                }
                None => ReconcileResult::DatabaseError,
            }
        }
        Outcome::Cancelled(counts) => {
            count_removal(
                ctx,
                host,
                counts,
                Duration::ZERO,
                ReconcileResult::Cancelled,
            );
            match hand_back(ctx, lease, progress(counts)).await {
                Ok(()) => {
                    tracing::info!("removal cancelled; lease released, folder stays delete-ongoing")
                }
                Err(error) => {
                    tracing::warn!(%error, "removal cancelled; the lease will expire instead")
                }
            }
            ReconcileResult::Cancelled
        }
        Outcome::VolumeUnavailable { reason, counts } => {
            if work.kind == WorkKind::Remove {
                count_removal(
                    ctx,
                    host,
                    counts,
                    Duration::ZERO,
                    ReconcileResult::VolumeUnavailable,
                );
            }
            // Logged once per volume there; per folder only at debug level.
            ctx.volume_health.mark_unavailable(host, &reason).await;
            match hand_back(ctx, lease, progress(counts)).await {
                Ok(()) => tracing::debug!(
                    %reason,
                    "volume unavailable; lease released, attempts unchanged"
                ),
                Err(error) => {
                    tracing::warn!(%error, "volume unavailable; the lease will expire instead")
                }
            }
            ReconcileResult::VolumeUnavailable
        }
        Outcome::Starved { reason, counts } => {
            if work.kind == WorkKind::Remove {
                count_removal(
                    ctx,
                    host,
                    counts,
                    Duration::ZERO,
                    ReconcileResult::ResourceExhausted,
                );
            }
            let pause = ctx.pressure.report();
            tracing::warn!(
                %reason,
                pause_ms = pause.as_millis() as u64,
                "the process is out of descriptors or memory; folder handed back with its attempts kept, claiming paused"
            );
            if let Err(error) = hand_back(ctx, lease, progress(counts)).await {
                tracing::warn!(%error, "the lease will expire instead");
            }
            ReconcileResult::ResourceExhausted
        }
        Outcome::LeaseLost(counts) => {
            count_removal(
                ctx,
                host,
                counts,
                Duration::ZERO,
                ReconcileResult::LostLease,
            );
            ReconcileResult::LostLease
        }
        Outcome::RowDeleted(counts) => {
            count_removal(
                ctx,
                host,
                counts,
                Duration::ZERO,
                ReconcileResult::RowDeleted,
            );
            ReconcileResult::RowDeleted
        }
        Outcome::Failed { error, counts } => {
            // Kept for the next attempt (a retry keeps the saved counts).
            if let Some(p) = progress(counts) {
                save_progress(ctx, lease, p).await;
            }
            let result = record_failure(ctx, work, lease, &error).await;
            if work.kind == WorkKind::Remove {
                count_removal(
                    ctx,
                    host,
                    counts,
                    Duration::ZERO,
                    if result == ReconcileResult::Retry {
                        ReconcileResult::Retry
                    } else {
                        ReconcileResult::Error
                    },
                );
            }
            result
        }
    }
}

/// Hands the row (or tombstone) back at once, leaving attempts and the next attempt time as
/// they are, after saving `progress` when given.
async fn hand_back(ctx: &Context, lease: Lease, progress: Option<Counts>) -> Result<(), String> {
    if let Some(p) = progress {
        save_progress(ctx, lease, p).await;
    }
    release(ctx, lease).await
}

/// Stores a removal's progress (through the lease renewal, which writes the counters while
/// the lease is ours). Best effort, with its own timeout: on shutdown the runner's token is
/// already cancelled, and a failure only loses the counts, not the work.
async fn save_progress(ctx: &Context, lease: Lease, progress: Counts) {
    match tokio::time::timeout(CLEANUP_TIMEOUT, renew(ctx, lease, progress)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            ctx.metrics.database_error("renew_lease");
            tracing::warn!(%error, "cannot save the removal's progress");
        }
        Err(_) => tracing::warn!("saving the removal's progress timed out"),
    }
}

/// Releases the lease (row or tombstone), with its own timeout: on shutdown the runner's
/// token is already cancelled.
async fn release(ctx: &Context, lease: Lease) -> Result<(), String> {
    let owner = &ctx.replica;
    let released = tokio::time::timeout(CLEANUP_TIMEOUT, async {
        match lease {
            Lease::Row(id) => ctx.store.release_lease(id, owner).await,
            Lease::Tombstone(seq) => ctx.store.release_tombstone(seq, owner).await,
        }
    })
    .await;
    match released {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("releasing the lease timed out".to_owned()),
    }
}

/// A transient failure schedules a retry; a permanent one (or the last attempt) ends in
/// `delete-error` (a tombstone: removal `failed`). Trash moves always retry.
async fn record_failure(
    ctx: &Context,
    work: &Work,
    lease: Lease,
    error: &Failure,
) -> ReconcileResult {
    let owner = ctx.replica.as_str();
    match decide(work, error, ctx.config.max_attempts, &ctx.retry) {
        Decision::Fail { message } => {
            ctx.metrics.terminal_error(error.kind());
            tracing::error!(error = %message, kind = error.kind(), "removal failed: delete-ongoing -> delete-error");
            let end = TombstoneEnd::Failed(message.clone());
            let written = match lease {
                Lease::Row(id) => {
                    retry_db(ctx, "fail_removal", || {
                        ctx.store.fail_removal(id, owner, &message)
                    })
                    .await
                }
                Lease::Tombstone(seq) => {
                    retry_db(ctx, "finish_tombstone", || {
                        ctx.store.finish_tombstone(seq, owner, &end)
                    })
                    .await
                }
            };
            match written {
                Some(_) => ReconcileResult::Error,
                None => ReconcileResult::DatabaseError,
            }
        }
        Decision::Retry {
            attempt,
            delay,
            message,
        } => {
            let next =
                Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
            ctx.metrics.retry(error.kind());
            tracing::warn!(error = %message, kind = error.kind(), attempt, retry_in_ms = delay.as_millis() as u64, "transient failure; will retry");
            let written = match lease {
                Lease::Row(id) => {
                    retry_db(ctx, "record_retry", || {
                        ctx.store.record_retry(id, owner, &message, next)
                    })
                    .await
                }
                Lease::Tombstone(seq) => {
                    retry_db(ctx, "retry_tombstone", || {
                        ctx.store.retry_tombstone(seq, owner, &message, next)
                    })
                    .await
                }
            };
            match written {
                Some(_) => ReconcileResult::Retry,
                None => ReconcileResult::DatabaseError,
            }
        }
    }
}

/// What to do about a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Try again after `delay` (jittered, capped); `attempt` is the attempt that failed.
    Retry {
        /// The attempt that failed (1-based).
        attempt: u32,
        /// How long to wait.
        delay: Duration,
        /// The error, for the state row and the log.
        message: String,
    },
    /// Give up: the folder goes to `delete-error` (a tombstone's removal to `failed`).
    Fail {
        /// Why, as the state row, the audit log and `show` say it.
        message: String,
    },
}

/// Retry or fail, from the work, the failure and the configuration alone: a removal fails
/// on a permanent error or when the failed attempt was the last allowed; a transient error
/// before that is retried with the capped backoff. Trash moves always retry (no transition
/// to `delete-error` exists from `ready` or `delete-pending`).
pub fn decide(work: &Work, error: &Failure, max_attempts: u32, retry: &RetrySchedule) -> Decision {
    let attempt = work.attempts.saturating_add(1);
    let removal = work.kind == WorkKind::Remove;
    if removal && !error.is_transient() {
        return Decision::Fail {
            message: error.to_string(),
        };
    }
    if removal && attempt >= max_attempts {
        return Decision::Fail {
            message: format!("gave up after {attempt} attempts: {error}"),
        };
    }
    Decision::Retry {
        attempt,
        delay: retry.delay(attempt),
        message: error.to_string(),
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
fn total(saved: Counts, c: Counts) -> Counts {
    Counts {
        files: saved.files.saturating_add(c.files),
        dirs: saved.dirs.saturating_add(c.dirs),
        symlinks: saved.symlinks.saturating_add(c.symlinks),
        bytes: saved.bytes.saturating_add(c.bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: RetrySchedule = RetrySchedule {
        min: Duration::from_secs(1),
        max: Duration::from_secs(8),
    };

    fn work(kind: WorkKind, attempts: u32) -> Work {
        Work {
            id: Uuid::nil(),
            host: "local:volume1".to_owned(),
            quota_scope_id: None,
            kind,
            attempts,
            reclaimed_from: None,
            lease: Lease::Row(Uuid::nil()),
            saved: Counts::default(),
        }
    }

    fn transient() -> Failure {
        Failure::Panicked("boom".to_owned())
    }

    fn permanent() -> Failure {
        Failure::Storage(storage::Error::UnknownVolume {
            host: "nowhere:volume".to_owned(),
        })
    }

    #[test]
    fn a_transient_failure_before_the_last_attempt_is_retried_with_capped_backoff() {
        for attempts in 0..2 {
            match decide(
                &work(WorkKind::Remove, attempts),
                &transient(),
                3,
                &SCHEDULE,
            ) {
                Decision::Retry {
                    attempt,
                    delay,
                    message,
                } => {
                    assert_eq!(attempt, attempts + 1);
                    assert!(delay <= SCHEDULE.max, "{delay:?}");
                    assert_eq!(message, "removal task panicked: boom");
                }
                other => panic!("attempt {attempts}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_last_attempt_gives_up_and_says_how_many_were_made() {
        assert_eq!(
            decide(&work(WorkKind::Remove, 2), &transient(), 3, &SCHEDULE),
            Decision::Fail {
                message: "gave up after 3 attempts: removal task panicked: boom".to_owned()
            }
        );
    }

    #[test]
    fn a_permanent_failure_gives_up_at_once_with_the_error_alone() {
        let error = permanent();
        assert!(!error.is_transient());
        assert_eq!(
            decide(&work(WorkKind::Remove, 0), &error, 10, &SCHEDULE),
            Decision::Fail {
                message: error.to_string()
            }
        );
    }

    #[test]
    fn trash_moves_never_give_up() {
        for kind in [WorkKind::MoveToTrash, WorkKind::Restore] {
            for error in [transient(), permanent()] {
                let decision = decide(&work(kind, 50), &error, 3, &SCHEDULE);
                assert!(
                    matches!(decision, Decision::Retry { attempt: 51, .. }),
                    "{decision:?}"
                );
            }
        }
    }
}
