//! Volume health: whether each served volume is available in this replica, and the probe
//! that notices when it comes back.
//!
//! Why: a volume that is not mounted, lost its marker file, or whose filesystem answers
//! `ENOTCONN`/`ESTALE`/`EIO` on its root has failed itself; its folders did nothing wrong.
//! Counting the outage against every folder on it would send all of them to `delete-error`
//! once it outlasts their retry budget (an NFS server reboot, a maintenance window), and an
//! operator would have to retry them one by one.
//!
//! Protocol:
//! - Each volume has one [`VolumeState`] here, in memory: availability is a per-replica view
//!   (mounts are per node). A reconcile whose failure the volume guard confirms, or whose
//!   volume disappears while it removes, calls [`VolumeHealth::mark_unavailable`] and hands
//!   its folder back with attempts and next attempt time unchanged (see `reconcile`).
//! - The runner claims nothing on an unavailable volume ([`VolumeHealth::is_available`]).
//! - [`probe`] runs the volume guard: every resync interval while the volume is available
//!   (so the gauge tells the truth even with no work pending), on its own capped, jittered
//!   backoff (`volume_probe_min` doubling to `volume_probe_max`) while it is not. A
//!   successful probe marks it available and wakes the runner, which claims the volume's
//!   folders at once: the outage left them no folder backoff to wait out.
//! - Each change is logged once (not once per folder), exported as
//!   `vfolder_controller_volume_available{volume}` with the time of the change, and written
//!   to `vfolder_volume_state` for `show` in other processes. That write is best effort: a
//!   failed one is logged and the next change writes the then-current state.
//!
//! Caveat: with several replicas, `vfolder_volume_state` holds the last writer's view.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Context;
use super::backoff::{RetrySchedule, jittered};
use crate::observe::Metrics;
use crate::storage::{self, Volumes};
use crate::store::{self, Store};

/// How long one run of the volume guard may take before it counts as "unavailable". A
/// hard-mounted NFS volume whose server is gone blocks `open` in the kernel indefinitely.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long recording a change in the database may take (best effort; see the module docs).
const PERSIST_TIMEOUT: Duration = Duration::from_secs(3);

/// A volume's availability as this replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeState {
    /// Whether the volume guard passed last time it was asked.
    pub available: bool,
    /// When `available` last changed (or the volume was first probed).
    pub since: DateTime<Utc>,
    /// Why it is unavailable; `None` while available.
    pub reason: Option<String>,
    /// `false` until the first probe or report: the volume is then assumed available.
    pub known: bool,
}

/// One volume's entry.
#[derive(Debug)]
struct Entry {
    state: Mutex<VolumeState>,
    /// Wakes the volume's [`probe`] when a reconcile found the volume gone, so that it
    /// switches to the outage schedule.
    lost: Notify,
    /// Serialises writes to `vfolder_volume_state`; each writes the state current at the
    /// time, so the last write is always the latest state.
    persist: tokio::sync::Mutex<()>,
}

/// Availability of every configured volume in this replica. Shared by the runner, the
/// workers and the probes; every method is cheap except the (async) database write.
pub struct VolumeHealth {
    volumes: BTreeMap<String, Entry>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    replica: String,
}

impl VolumeHealth {
    /// Every volume in `hosts` starts out assumed available (not yet probed).
    pub fn new(
        hosts: impl IntoIterator<Item = String>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        replica: String,
    ) -> VolumeHealth {
        let now = Utc::now();
        let volumes = hosts
            .into_iter()
            .map(|host| {
                let entry = Entry {
                    state: Mutex::new(VolumeState {
                        available: true,
                        since: now,
                        reason: None,
                        known: false,
                    }),
                    lost: Notify::new(),
                    persist: tokio::sync::Mutex::new(()),
                };
                (host, entry)
            })
            .collect();
        VolumeHealth {
            volumes,
            store,
            metrics,
            replica,
        }
    }

    /// Whether folders on `host` may be claimed: `false` only while the volume is known to
    /// be unavailable. A host this replica does not know is not held back here (the
    /// reconcile reports it as an unknown volume).
    pub fn is_available(&self, host: &str) -> bool {
        self.state(host).is_none_or(|s| s.available)
    }

    /// The volume's state, if it is configured.
    pub fn state(&self, host: &str) -> Option<VolumeState> {
        self.volumes.get(host).map(|e| lock(&e.state).clone())
    }

    /// Records that the volume guard of `host` failed with `reason`. Returns `true` when
    /// this changed the state (then it is logged, exported and recorded, once); a volume
    /// already unavailable keeps its original `since` and reason.
    pub async fn mark_unavailable(&self, host: &str, reason: &str) -> bool {
        let changed = self.update(host, false, Some(reason));
        if changed {
            if let Some(entry) = self.volumes.get(host) {
                entry.lost.notify_one();
            }
            self.persist(host).await;
        }
        changed
    }

    /// Records that the volume guard of `host` passed; `true` when this changed the state.
    pub async fn mark_available(&self, host: &str) -> bool {
        let changed = self.update(host, true, None);
        if changed {
            self.persist(host).await;
        }
        changed
    }

    /// Applies a probe result in memory: gauge, log line. `true` when it changed the state.
    fn update(&self, host: &str, available: bool, reason: Option<&str>) -> bool {
        let Some(entry) = self.volumes.get(host) else {
            return false;
        };
        let mut state = lock(&entry.state);
        if state.known && state.available == available {
            return false;
        }
        let previous = state.clone();
        *state = VolumeState {
            available,
            since: Utc::now(),
            reason: reason.map(str::to_owned),
            known: true,
        };
        self.metrics
            .set_volume_available(host, available, state.since);
        if !available {
            tracing::warn!(
                volume = host,
                reason,
                "volume unavailable: its folders wait (attempts kept) until it returns"
            );
        } else if previous.known {
            let down_for = (state.since - previous.since).to_std().unwrap_or_default();
            tracing::info!(
                volume = host,
                down_for_ms = down_for.as_millis() as u64,
                "volume available again: resuming its folders"
            );
        } else {
            tracing::info!(volume = host, "volume available");
        }
        true
    }

    /// Writes the volume's current state to the database (best effort).
    async fn persist(&self, host: &str) {
        let Some(entry) = self.volumes.get(host) else {
            return;
        };
        let _serial = entry.persist.lock().await;
        let state = lock(&entry.state).clone();
        let row = store::VolumeState {
            host: host.to_owned(),
            available: state.available,
            since: state.since,
            reason: state.reason,
            replica: self.replica.clone(),
            updated_at: Utc::now(),
        };
        match tokio::time::timeout(PERSIST_TIMEOUT, self.store.record_volume_state(&row)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                self.metrics.database_error("record_volume_state");
                tracing::warn!(volume = host, %error, "could not record the volume's availability");
            }
            Err(_) => {
                self.metrics.database_error("record_volume_state");
                tracing::warn!(
                    volume = host,
                    "recording the volume's availability timed out"
                );
            }
        }
    }
}

/// Probes `host` until `cancel`: at once, then every `interval` (jittered) while it is
/// available and on the `volume_probe_*` backoff while it is not. Wakes the runner through
/// `wake` when the volume comes back (or is first seen), so its folders are claimed at once.
pub async fn probe(
    ctx: Arc<Context>,
    host: String,
    interval: Duration,
    wake: Arc<super::wakeup::Wake>,
    cancel: CancellationToken,
) {
    let Some(entry) = ctx.volume_health.volumes.get(&host) else {
        return;
    };
    let outage = RetrySchedule {
        min: ctx.config.volume_probe_min,
        max: ctx.config.volume_probe_max,
    };
    let mut failures = 0u32;
    let mut delay = Duration::ZERO;
    let mut pending = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
            _ = entry.lost.notified() => {
                // A reconcile (or this probe) just found the volume gone: wait on the
                // outage schedule from here.
                failures = failures.max(1);
                delay = outage.delay(failures);
                continue;
            }
        }
        match check(&ctx.volumes, &host, &mut pending).await {
            Ok(()) => {
                failures = 0;
                if ctx.volume_health.mark_available(&host).await {
                    // Moves on the volume may have fallen due while it was away.
                    wake.work(true);
                }
                delay = jittered(interval);
            }
            Err(CheckFailed::Volume(reason)) => {
                failures = failures.saturating_add(1);
                ctx.volume_health.mark_unavailable(&host, &reason).await;
                delay = outage.delay(failures);
            }
            // The probe could not look: the volume keeps the state it had; look again soon.
            Err(CheckFailed::Process(reason)) => {
                tracing::debug!(volume = %host, %reason, "volume probe skipped: the process is out of resources");
                delay = outage.delay(1);
            }
        }
    }
}

/// A run of the volume guard still going after [`PROBE_TIMEOUT`].
pub type PendingCheck = Option<JoinHandle<Result<(), storage::Error>>>;

/// Why a run of the volume guard did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckFailed {
    /// The volume is unavailable, for this reason.
    Volume(String),
    /// The process is out of descriptors or memory: the guard could not look, so nothing
    /// is known about the volume (see [`super::pressure`]).
    Process(String),
}

/// Runs the volume guard of `host` on a blocking thread. A run that does not answer within
/// [`PROBE_TIMEOUT`] counts as unavailable and is parked in `pending`: the next call waits
/// for it instead of starting another, so a hung server ties up one blocking thread per
/// caller, not one per probe.
pub async fn check(
    volumes: &Arc<Volumes>,
    host: &str,
    pending: &mut PendingCheck,
) -> Result<(), CheckFailed> {
    let mut run = pending.take().unwrap_or_else(|| {
        let volumes = volumes.clone();
        let host = host.to_owned();
        tokio::task::spawn_blocking(move || volumes.get(&host)?.check_available())
    });
    match tokio::time::timeout(PROBE_TIMEOUT, &mut run).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(storage::Error::VolumeUnavailable { reason, .. }))) => {
            Err(CheckFailed::Volume(reason))
        }
        Ok(Ok(Err(error))) if error.is_resource_exhaustion() => {
            Err(CheckFailed::Process(error.to_string()))
        }
        Ok(Ok(Err(error))) => Err(CheckFailed::Volume(error.to_string())),
        Ok(Err(join)) => Err(CheckFailed::Volume(format!(
            "the volume check failed: {join}"
        ))),
        Err(_) => {
            *pending = Some(run);
            Err(CheckFailed::Volume(format!(
                "the volume did not answer within {} s",
                PROBE_TIMEOUT.as_secs()
            )))
        }
    }
}

/// Locks a state, ignoring poisoning: every critical section leaves a whole value behind.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
