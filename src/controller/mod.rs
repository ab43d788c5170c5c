//! The reconcile loop: find unconverged rows, claim them, hand them to workers, repeat.
//!
//! Level-triggered: every pass asks the database which rows need work (the claim query), so
//! a restart, a crash or a second replica never loses work, and there is no resume path
//! beyond the normal loop. Responsibilities are kept apart (style: "when, how many, what"):
//! - *what is due*: `Store::claim_due` (lease, backoff time, work kind) — one statement;
//! - *how many*: a global semaphore and one per volume bound simultaneous removals (a
//!   [`Slot`] is given back when the folder's filesystem work ends, and the next folder
//!   starts while the result is still being written);
//! - *what to do*: [`reconcile::reconcile`] for one folder;
//! - *how results are written*: finished removals share transactions ([`completions`]:
//!   group commit, so a backlog of small folders is not bound by one commit each);
//! - *when*: a LISTEN/NOTIFY wake-up ([`wakeup`]), a finished worker, or the jittered
//!   resync poll, whichever comes first;
//! - periodic maintenance ([`trash_timer`], [`history_cleanup`], [`status_gauges`], and
//!   [`orphans`] scans of volumes with `orphan_scan_interval`) runs beside the loop on every
//!   replica; each is idempotent;
//! - rows deleted while `delete-ongoing` are finished from their tombstones, claimed with
//!   the slots the rows leave free ([`reconcile::finish_tombstone`]);
//! - *which volumes*: a volume that is unavailable is skipped until its own probe
//!   ([`volume_health`]) sees it again, which wakes the loop;
//! - *whether at all*: while the process is short of descriptors or memory ([`pressure`]),
//!   nothing new is claimed.
//!
//! Shutdown: when the token is cancelled the loop stops claiming, cancels running removals
//! (they release their leases), waits up to `shutdown_grace`, then releases whatever
//! leases remain. Rows stay `delete-ongoing` and are resumed by whichever replica runs next.

pub mod backoff;
pub mod completions;
pub mod history_cleanup;
pub mod maintenance;
pub mod orphans;
pub mod pressure;
pub mod reconcile;
pub mod shutdown;
pub mod status_gauges;
pub mod trash_timer;
pub mod volume_health;
pub mod wakeup;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::{Config, ControllerConfig, TrashMode};
use crate::observe::{Health, Metrics};
use crate::storage::Volumes;
use crate::store::{ClaimRequest, Store, WorkKind};
use backoff::{RetrySchedule, jittered};
use completions::Completions;
use pressure::Pressure;
use volume_health::VolumeHealth;

/// Everything a worker needs, shared by all of them.
pub struct Context {
    /// The database.
    pub store: Arc<dyn Store>,
    /// The configured volumes.
    pub volumes: Arc<Volumes>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Liveness state shared with `/healthz`.
    pub health: Arc<Health>,
    /// The loop's knobs.
    pub config: ControllerConfig,
    /// This replica's id (lease owner, audit `replica`).
    pub replica: String,
    /// The retry schedule for transient failures.
    pub retry: RetrySchedule,
    /// Which volumes are available in this replica.
    pub volume_health: Arc<VolumeHealth>,
    /// Whether the process is short of descriptors or memory (claiming pauses).
    pub pressure: Pressure,
    /// Writes finished removals in batches (group commit).
    pub completions: Completions,
}

impl Context {
    /// Builds the context from the configuration.
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Context {
        let replica = config.replica_id();
        let volume_health = Arc::new(VolumeHealth::new(
            config.volumes.iter().map(|v| v.host.clone()),
            store.clone(),
            metrics.clone(),
            replica.clone(),
        ));
        let retry = RetrySchedule {
            min: config.controller.backoff_min,
            max: config.controller.backoff_max,
        };
        Context {
            volume_health,
            completions: Completions::new(store.clone(), replica.clone()),
            store,
            volumes: Arc::new(Volumes::new(&config.volumes)),
            metrics,
            health,
            retry,
            pressure: Pressure::new(retry),
            config: config.controller.clone(),
            replica,
        }
    }
}

/// A volume this replica serves, with its concurrency limit.
struct Served {
    host: String,
    moves_trash: bool,
    /// The last claim that looked for moves found some (see [`looks_for_moves`]).
    moves_found: bool,
    slots: Arc<Semaphore>,
    /// Free slots worth a claim when the only news is a finished worker (see `pass`).
    refill_batch: usize,
}

/// Runs the controller until `shutdown` is cancelled, then shuts down gracefully.
/// `volumes` in the context decide which hosts are served (narrowed by
/// `controller.only_volumes`); `volume_limits` gives each host's concurrency and trash mode.
pub async fn run(ctx: Arc<Context>, config: &Config, shutdown: CancellationToken) {
    let served: Vec<Served> = config
        .volumes
        .iter()
        .filter(|v| {
            config.controller.only_volumes.is_empty()
                || config.controller.only_volumes.contains(&v.host)
        })
        .map(|v| Served {
            host: v.host.clone(),
            moves_trash: v.trash == TrashMode::Move,
            moves_found: false,
            slots: Arc::new(Semaphore::new(v.max_concurrent_removals)),
            refill_batch: (v
                .max_concurrent_removals
                .min(config.controller.max_concurrent_removals)
                / 4)
            .max(1),
        })
        .collect();
    let hosts: Vec<&str> = served.iter().map(|s| s.host.as_str()).collect();
    tracing::info!(replica = %ctx.replica, backend = ctx.store.backend(), volumes = ?hosts, "vfolder-controller running");

    let maintenance = CancellationToken::new();
    let mut background = JoinSet::new();
    let wake = Arc::new(wakeup::Wake::default());
    let interval = if ctx.store.capabilities().notifications {
        ctx.config.resync_interval
    } else {
        ctx.config.poll_interval
    };
    background.spawn(wakeup::listen(
        ctx.store.clone(),
        wake.clone(),
        ctx.metrics.clone(),
        maintenance.clone(),
    ));
    let every = maintenance::Schedule {
        interval,
        metrics: ctx.metrics.clone(),
        cancel: maintenance.clone(),
    };
    background.spawn(every.clone().run(trash_timer::TrashTimer {
        store: ctx.store.clone(),
        retention: ctx.config.trash_retention,
    }));
    background.spawn(every.clone().run(history_cleanup::HistoryCleanup {
        store: ctx.store.clone(),
        retention: ctx.config.history_retention,
    }));
    // The table-wide gauges count the unfinished deletions, find the oldest waiting rows off
    // an index and never read the live set or the history (bounded counts, then the
    // planner's estimate), so they cost little; a sixth of the loop's pace is still plenty
    // for a dashboard.
    let gauges = maintenance::Schedule {
        interval: interval * 6,
        ..every
    };
    background.spawn(gauges.run(status_gauges::StatusGauges {
        store: ctx.store.clone(),
        metrics: ctx.metrics.clone(),
        trash_retention: ctx.config.trash_retention,
    }));
    // Orphan scans (and reclaims) of the volumes that ask for them; off by default.
    for v in config
        .volumes
        .iter()
        .filter(|v| served.iter().any(|s| s.host == v.host))
    {
        let (Some(every), Ok(volume)) = (v.orphan_scan_interval, ctx.volumes.get(&v.host)) else {
            continue;
        };
        let schedule = maintenance::Schedule {
            interval: every,
            metrics: ctx.metrics.clone(),
            cancel: maintenance.clone(),
        };
        background.spawn(schedule.run(orphans::OrphanJob {
            store: ctx.store.clone(),
            volume: volume.clone(),
            reclaim: v.reclaim_orphans,
            replica: ctx.replica.clone(),
            metrics: ctx.metrics.clone(),
            cancel: maintenance.child_token(),
        }));
    }
    for s in &served {
        background.spawn(volume_health::probe(
            ctx.clone(),
            s.host.clone(),
            interval,
            wake.clone(),
            maintenance.clone(),
        ));
    }

    let work_cancel = CancellationToken::new();
    let mut runner = Runner {
        ctx: ctx.clone(),
        global: Arc::new(Semaphore::new(ctx.config.max_concurrent_removals)),
        slot_freed: Arc::new(Notify::new()),
        served,
        workers: JoinSet::new(),
        running: HashMap::new(),
        work_cancel: work_cancel.clone(),
    };
    runner.run(interval, &wake, &shutdown).await;

    // Shutdown: stop maintenance, cancel removals (each releases its own lease), wait.
    maintenance.cancel();
    work_cancel.cancel();
    let grace = ctx.config.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        while runner.workers.join_next().await.is_some() {}
        while background.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "workers did not stop within the grace period; abandoning them"
        );
        runner.workers.abort_all();
        background.abort_all();
    }
    // Whatever a worker could not release itself (aborted, database blip) goes now, with its
    // own short timeout: the shutdown token is already cancelled.
    match tokio::time::timeout(
        Duration::from_secs(3),
        ctx.store.release_all_leases(&ctx.replica),
    )
    .await
    {
        Ok(Ok(n)) if n > 0 => tracing::info!(released = n, "released remaining leases"),
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "could not release leases; they expire on their own")
        }
        Err(_) => tracing::warn!("releasing leases timed out; they expire on their own"),
    }
    tracing::info!("controller stopped");
}

/// A claimed folder's right to work on its volume: a global and a volume slot. The worker
/// gives it back as soon as the folder's filesystem work ends, before its result is
/// written, so that writing results (batched, see [`completions`]) never keeps the volumes
/// idle; dropping it wakes the loop to fill the slot.
pub struct Slot {
    _permits: [OwnedSemaphorePermit; 2],
    freed: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.freed.notify_one();
    }
}

/// Whether a claim on this volume looks for moves into and out of the trash. Finding none
/// costs a read of every folder already in that trash (an index cannot tell moved from not
/// moved: that is in the controller's own table), so a claim looks only when a move can be
/// new (`moves_may_be_new`): after the resync poll, a database retry, the listener's
/// (re)connection, the volume's return, or a status change to `delete-pending` or `ready`;
/// or when the last look found moves (a backlog of moves keeps its slots busy). The refills
/// of a backlog of removals and the wake-ups for `delete-ongoing`, most passes, skip it. A
/// move that falls due without a status change (its backoff ended, another replica's lease
/// expired) waits for the resync poll.
fn looks_for_moves(volume: &Served, moves_may_be_new: bool) -> bool {
    volume.moves_trash && (moves_may_be_new || volume.moves_found)
}

/// Folders in flight in one replica (removing, or removed and waiting for their result to
/// be written), per slot of `controller.max_concurrent_removals`. Results are written in
/// batches within milliseconds, so this is only reached when the database is slow to take
/// them; then claiming waits instead of piling up finished folders.
pub const IN_FLIGHT_PER_SLOT: usize = 4;

/// The claiming side of the loop: semaphores, in-flight set and worker tasks.
struct Runner {
    ctx: Arc<Context>,
    global: Arc<Semaphore>,
    /// Woken whenever a [`Slot`] is given back.
    slot_freed: Arc<Notify>,
    served: Vec<Served>,
    workers: JoinSet<()>,
    /// Folders running in this process, by task, so a row is never worked on twice at once
    /// here (a second trigger for it joins the running removal by not being claimed).
    running: HashMap<tokio::task::Id, Uuid>,
    work_cancel: CancellationToken,
}

impl Runner {
    async fn run(&mut self, interval: Duration, wake: &wakeup::Wake, shutdown: &CancellationToken) {
        let mut db_failures = 0u32;
        // A wake-up, a poll tick or a database retry claims whatever is free; a finished
        // worker alone waits until a batch of slots is free, so a backlog of small folders is
        // claimed a few rows per statement instead of one.
        let mut eager = true;
        // Whether a move into or out of a trash may have fallen due since the last pass:
        // after a poll tick, a retry, or a wake-up that says so (not one for delete-ongoing).
        let mut moves_may_be_new = true;
        loop {
            match self.pass(eager, moves_may_be_new).await {
                Ok(()) => {
                    if db_failures > 0 {
                        tracing::info!("database reachable again");
                    }
                    db_failures = 0;
                    self.ctx.health.set_database_ok(true, None);
                    self.ctx.health.pass_completed();
                }
                Err(error) => {
                    db_failures += 1;
                    self.ctx.metrics.database_error("claim_due");
                    self.ctx
                        .health
                        .set_database_ok(false, Some(error.to_string()));
                    tracing::warn!(%error, failures = db_failures, "claiming failed; backing off");
                    // The loop itself is alive and iterating; liveness must not restart the
                    // process for a database outage (readiness reports that).
                    self.ctx.health.pass_completed();
                }
            }
            let total = self.ctx.config.max_concurrent_removals;
            let busy = total - self.global.available_permits();
            self.ctx.metrics.set_worker_slots(total as i64, busy as i64);

            let pause = if db_failures > 0 {
                self.ctx.retry.delay(db_failures).min(interval)
            } else {
                jittered(interval)
            };
            (eager, moves_may_be_new) = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wake.notified() => (true, wake.take_moves()),
                _ = self.slot_freed.notified() => (false, false),
                Some(done) = self.workers.join_next_with_id(), if !self.workers.is_empty() => {
                    self.finished(done);
                    (false, false)
                }
                _ = tokio::time::sleep(pause) => (true, true),
            };
            while let Some(done) = self.workers.try_join_next_with_id() {
                self.finished(done);
            }
        }
    }

    fn finished(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let task = match done {
            Ok((task, ())) => task,
            Err(error) => {
                tracing::error!(%error, "reconcile task panicked; its lease expires and the folder is retried");
                error.id()
            }
        };
        self.running.remove(&task);
    }

    /// One pass: for every served volume with free slots, claim due rows and start them.
    /// Unless `eager`, a volume is skipped until `refill_batch` of its slots are free.
    /// `moves_may_be_new`: see [`looks_for_moves`].
    async fn pass(
        &mut self,
        eager: bool,
        moves_may_be_new: bool,
    ) -> Result<(), crate::store::Error> {
        // Out of descriptors or memory: more claims would only meet the same shortage.
        if self.ctx.pressure.paused() {
            return Ok(());
        }
        let in_flight_cap = self.ctx.config.max_concurrent_removals * IN_FLIGHT_PER_SLOT;
        for i in 0..self.served.len() {
            let free = self
                .global
                .available_permits()
                .min(self.served[i].slots.available_permits())
                .min(in_flight_cap.saturating_sub(self.workers.len()));
            if free == 0 || (!eager && free < self.served[i].refill_batch) {
                continue;
            }
            // The volume's own probe wakes the loop when it is back.
            if !self.ctx.volume_health.is_available(&self.served[i].host) {
                continue;
            }
            let host = self.served[i].host.clone();
            let slots = self.served[i].slots.clone();
            let moves = looks_for_moves(&self.served[i], moves_may_be_new);
            let request = ClaimRequest {
                owner: self.ctx.replica.clone(),
                lease: self.ctx.config.lease_duration,
                limit: free as u32,
                move_hosts: if moves {
                    vec![host.clone()]
                } else {
                    Vec::new()
                },
                hosts: vec![host],
                exclude: self.running.values().copied().collect(),
            };
            let claims = self.ctx.store.claim_due(&request).await?;
            if moves {
                self.served[i].moves_found = claims.iter().any(|c| c.kind != WorkKind::Remove);
            }
            // Slots freed while the claim ran (results are written after the slot is given
            // back) wait for the next pass: counting them now would add a tombstone claim
            // to nearly every pass of a backlog.
            let left = free.saturating_sub(claims.len());
            for claim in claims {
                let Some(slot) = self.permits(&slots) else {
                    // Cannot happen while this loop is the only acquirer; hand the row back.
                    let _ = self
                        .ctx
                        .store
                        .release_lease(claim.folder.id, &self.ctx.replica)
                        .await;
                    continue;
                };
                let (id, host) = (claim.folder.id, claim.folder.host.clone());
                let (kind, attempts) = (claim.kind, claim.attempts);
                self.start(id, &host, kind, attempts, {
                    let (ctx, cancel) = (self.ctx.clone(), self.work_cancel.clone());
                    reconcile::reconcile(ctx, claim, slot, cancel)
                });
            }
            // Rows deleted while delete-ongoing: their removals are finished from their
            // tombstones with whatever slots the rows left free.
            if left == 0 {
                continue;
            }
            let request = ClaimRequest {
                limit: left as u32,
                exclude: self.running.values().copied().collect(),
                ..request
            };
            for claim in self.ctx.store.claim_tombstones(&request).await? {
                let Some(slot) = self.permits(&slots) else {
                    let _ = self
                        .ctx
                        .store
                        .release_tombstone(claim.tombstone.seq, &self.ctx.replica)
                        .await;
                    continue;
                };
                let id = claim.tombstone.vfolder_id;
                let host = claim.tombstone.host.clone().unwrap_or_default();
                let attempts = claim.tombstone.attempts;
                self.start(id, &host, WorkKind::Remove, attempts, {
                    let (ctx, cancel) = (self.ctx.clone(), self.work_cancel.clone());
                    reconcile::finish_tombstone(ctx, claim, slot, cancel)
                });
            }
        }
        Ok(())
    }

    /// A global and a volume slot, or `None` when either is taken.
    fn permits(&self, slots: &Arc<Semaphore>) -> Option<Slot> {
        let global = self.global.clone().try_acquire_owned().ok()?;
        let volume = slots.clone().try_acquire_owned().ok()?;
        Some(Slot {
            _permits: [global, volume],
            freed: self.slot_freed.clone(),
        })
    }

    fn start(
        &mut self,
        id: Uuid,
        host: &str,
        kind: WorkKind,
        attempts: u32,
        work: impl Future<Output = ()> + Send + 'static,
    ) {
        let span = tracing::info_span!(
            "reconcile",
            id = %id,
            host = %host,
            action = kind.as_str(),
            attempt = attempts + 1,
        );
        let handle = self.workers.spawn(work.instrument(span));
        self.running.insert(handle.id(), id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(moves_trash: bool, moves_found: bool) -> Served {
        Served {
            host: "local:v".into(),
            moves_trash,
            moves_found,
            slots: Arc::new(Semaphore::new(1)),
            refill_batch: 1,
        }
    }

    #[test]
    fn a_claim_looks_for_moves_when_one_can_be_new_or_the_last_look_found_some() {
        // A volume whose trash is in place has no moves to look for.
        assert!(!looks_for_moves(&volume(false, false), true));
        assert!(!looks_for_moves(&volume(false, true), true));
        // A move may be new (the poll, a retry, a status change that can start one): look.
        assert!(looks_for_moves(&volume(true, false), true));
        // A refill, or a wake-up for delete-ongoing: only while moves keep being found.
        assert!(looks_for_moves(&volume(true, true), false));
        assert!(!looks_for_moves(&volume(true, false), false));
    }
}
