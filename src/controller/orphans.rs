//! Reconciling the other way: from disk to rows. [`scan_volume`] finds the data no row
//! accounts for (`orphans scan`); [`reclaim_volume`] removes it once every scan over a grace
//! period has seen it without a row (`orphans reclaim`).
//!
//! What a scan reports, per volume:
//! - **orphan**: a folder directory no row accounts for: no row has its id, or the row with
//!   its id is on another volume or its data lives at another path. With the tombstone's
//!   story when the id had a row once (who deleted it, when, in which status).
//! - **unfinished**: a `delete-complete` row whose data still exists.
//! - **missing**: a row in `ready`, `performing`, `cloning` or `delete-pending` whose data is
//!   at neither its live nor its trash path (report only).
//! - **foreign**: anything in the layout that is not a folder (listed, never touched).
//!
//! Guarantees: the scan never changes data on disk (see `storage::scan`); it records its
//! observations in the controller's own tables: an orphan without any row starts or extends
//! a *sighting* (`first_seen` .. `last_seen`), and at the end of a complete scan every
//! sighting it did not see again is ended, and the scan's totals are stored for the gauges.
//! Memory is bounded: the walk hands over folders in batches of [`BATCH`] through a channel
//! of two batches, each batch is looked up in one query per table, and the rows of a volume
//! are paged [`BATCH`] at a time for the missing-data check.
//!
//! A reclaim removes one sighted directory only when (one query, [`Work::due_orphans`](crate::store::Work::due_orphans)) it
//! was first seen at least the grace period ago, the latest complete scan and at least one
//! earlier one saw it, no row has its id, no row with its id came and went since it was
//! first seen (a tombstone newer than the sighting), and no tombstone of its id is still
//! being removed by the controller. Right before removing, it checks once more that no row
//! has the id. The removal uses the same engine and safety rules as any other
//! ([`crate::storage::Volume::remove_folder_copy`]) and is audited as `orphan-reclaimed`.
//! Foreign entries and directories whose row exists elsewhere are never reclaimed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::lifecycle::{RowStatus, Status};
use crate::storage::scan::{FolderCounts, Foreign};
use crate::storage::{
    self, Counts, FolderRef, Found, FoundFolder, ScanEnd, ScanOptions, ScanProgress, Volume,
};
use crate::store::{
    self, Completion, Folder, NewSighting, ScanSummary, Sighting, Store, Tombstone,
};

/// Folders per look-up batch, and rows per page of the missing-data check.
pub const BATCH: usize = 512;

/// Sightings one reclaim run handles at most (`--dry-run` lists at most this many).
pub const RECLAIM_LIMIT: u32 = 10_000;

/// What went wrong in a scan or a reclaim.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The volume could not be walked (unavailable, unreadable layout).
    #[error("volume {host}: {source}")]
    Storage {
        /// The volume.
        host: String,
        /// The cause.
        source: storage::Error,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The walking thread panicked (a bug).
    #[error("the scan of volume {host} stopped unexpectedly: {reason}")]
    Panicked {
        /// The volume.
        host: String,
        /// The join error.
        reason: String,
    },
}

/// One line of a scan report.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Finding {
    /// A folder directory no row accounts for (boxed: it carries the tombstone's story).
    Orphan(Box<Orphan>),
    /// A `delete-complete` row whose data still exists.
    Unfinished(Unfinished),
    /// A live row whose data is missing.
    Missing(Missing),
    /// An entry of the layout that is not a folder.
    Foreign(Foreign),
}

/// A folder directory no row accounts for.
#[derive(Debug, Clone, Serialize)]
pub struct Orphan {
    /// Its path relative to the volume root.
    pub path: String,
    /// The folder id the path spells.
    pub id: Uuid,
    /// Under the volume's trash directory.
    pub trash: bool,
    /// What it holds (with `--count`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<FolderCounts>,
    /// A row with this id exists, but does not account for this directory: never reclaimed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<RowElsewhere>,
    /// The newest tombstone of this id: the row it once had.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tombstone: Option<Tombstone>,
    /// Since when scans have seen it without a row (none when a row exists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<DateTime<Utc>>,
    /// How many scans saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scans: Option<u32>,
    /// When `orphans reclaim` may remove it, if every scan until then sees it without a
    /// row (and a later scan confirms it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reclaimable_after: Option<DateTime<Utc>>,
}

/// The row that has an orphan's id but not its path.
#[derive(Debug, Clone, Serialize)]
pub struct RowElsewhere {
    /// Its status.
    pub status: String,
    /// Its volume.
    pub host: String,
    /// Its live path, when it has one on this volume.
    pub path: Option<String>,
}

/// A `delete-complete` row whose data still exists.
#[derive(Debug, Clone, Serialize)]
pub struct Unfinished {
    /// The data's path relative to the volume root.
    pub path: String,
    /// The folder.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// What it holds (with `--count`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<FolderCounts>,
    /// Since when the row is `delete-complete`.
    pub since: Option<DateTime<Utc>>,
}

/// A live row whose data is missing.
#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    /// The folder.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: String,
    /// Where its data should be (relative to the volume root).
    pub path: String,
}

/// How a scan runs.
#[derive(Debug, Clone)]
pub struct ScanRequest {
    /// Count files and bytes of every folder.
    pub count: bool,
    /// The volume's grace period (for `reclaimable_after`).
    pub grace: Duration,
    /// Who runs it (stored with the totals).
    pub actor: String,
}

/// Scans one volume, reporting each finding to `emit` as it is made, and records the
/// sightings and, when the walk completes, the totals. Returns the totals, or `None` when
/// the scan was cancelled (then nothing is ended and no totals are stored).
pub async fn scan_volume(
    store: &dyn Store,
    volume: &Volume,
    req: &ScanRequest,
    progress: Arc<ScanProgress>,
    cancel: &CancellationToken,
    emit: &mut (dyn FnMut(Finding) + Send),
) -> Result<Option<ScanSummary>, Error> {
    let host = volume.host().to_owned();
    let started_at = Utc::now();
    let mut summary = ScanSummary {
        host: host.clone(),
        started_at,
        finished_at: started_at,
        counted: req.count,
        orphans: 0,
        orphan_bytes: req.count.then_some(0),
        unfinished: 0,
        unfinished_bytes: req.count.then_some(0),
        missing: 0,
        foreign_entries: 0,
        actor: Some(req.actor.clone()),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Found>>(2);
    let walk = {
        let volume = volume.clone();
        let cancel = cancel.clone();
        let opts = ScanOptions { count: req.count };
        tokio::task::spawn_blocking(move || {
            let mut batch = Vec::with_capacity(BATCH);
            let end = volume.scan(&opts, &cancel, &progress, &mut |found| {
                batch.push(found);
                // A closed channel (the reader failed) stops the walk.
                batch.len() < BATCH || tx.blocking_send(std::mem::take(&mut batch)).is_ok()
            })?;
            if !batch.is_empty() {
                let _ = tx.blocking_send(batch);
            }
            Ok::<_, storage::Error>(end)
        })
    };
    let mut classify = Classify {
        store,
        volume,
        req,
        summary: &mut summary,
        emit,
    };
    while let Some(batch) = rx.recv().await {
        // An error drops the receiver, which stops the walk at its next batch.
        classify.batch(batch).await?;
    }
    let end = walk
        .await
        .map_err(|e| Error::Panicked {
            host: host.clone(),
            reason: e.to_string(),
        })?
        .map_err(|source| Error::Storage {
            host: host.clone(),
            source,
        })?;
    if end == ScanEnd::Cancelled || cancel.is_cancelled() {
        return Ok(None);
    }
    classify.missing().await?;
    summary.finished_at = Utc::now();
    let ended = store.finish_scan(&summary).await?;
    tracing::debug!(volume = %host, ended, "orphan sightings not seen again ended");
    Ok(Some(summary))
}

/// The look-ups and bookkeeping of one scan.
struct Classify<'a> {
    store: &'a dyn Store,
    volume: &'a Volume,
    req: &'a ScanRequest,
    summary: &'a mut ScanSummary,
    emit: &'a mut (dyn FnMut(Finding) + Send),
}

/// A path relative to the volume root, as text (folder paths are hex and ASCII).
fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

impl Classify<'_> {
    /// Where `row`'s data lives on this volume (live, trash), when it is on this volume.
    fn expected(&self, row: &Folder) -> Option<[String; 2]> {
        if row.host != self.volume.host() {
            return None;
        }
        let folder = FolderRef::from(row);
        let live = self.volume.folder_path(&folder).ok()?;
        let trash = self.volume.trash_path(&folder).ok()?;
        Some([text(&live), text(&trash)])
    }

    async fn batch(&mut self, batch: Vec<Found>) -> Result<(), Error> {
        let ids: Vec<Uuid> = batch
            .iter()
            .filter_map(|f| match f {
                Found::Folder(f) => Some(f.id),
                Found::Foreign(_) => None,
            })
            .collect();
        let rows: HashMap<Uuid, Folder> = if ids.is_empty() {
            HashMap::new()
        } else {
            self.store
                .folders_by_ids(&ids)
                .await?
                .into_iter()
                .map(|f| (f.id, f))
                .collect()
        };
        let rowless: Vec<Uuid> = ids
            .iter()
            .copied()
            .filter(|id| !rows.contains_key(id))
            .collect();
        let tombstones: HashMap<Uuid, Tombstone> = if rowless.is_empty() {
            HashMap::new()
        } else {
            self.store
                .latest_tombstones(&rowless)
                .await?
                .into_iter()
                .map(|t| (t.vfolder_id, t))
                .collect()
        };
        let mut findings = Vec::new();
        let mut sightings = Vec::new();
        for found in batch {
            let folder = match found {
                Found::Foreign(f) => {
                    self.summary.foreign_entries += 1;
                    findings.push(Finding::Foreign(f));
                    continue;
                }
                Found::Folder(folder) => folder,
            };
            if let Some(finding) = self.folder(folder, &rows, &tombstones, &mut sightings) {
                findings.push(finding);
            }
        }
        if !sightings.is_empty() {
            let recorded = self
                .store
                .record_sightings(self.volume.host(), self.summary.started_at, &sightings)
                .await?;
            let by_path: HashMap<&str, &Sighting> =
                recorded.iter().map(|s| (s.seen.path.as_str(), s)).collect();
            let grace = chrono::Duration::from_std(self.req.grace).unwrap_or(chrono::Duration::MAX);
            for finding in &mut findings {
                if let Finding::Orphan(o) = finding {
                    if let Some(s) = by_path.get(o.path.as_str()) {
                        o.first_seen = Some(s.first_seen);
                        o.scans = Some(s.scans);
                        o.reclaimable_after = s.first_seen.checked_add_signed(grace);
                    }
                }
            }
        }
        for finding in findings {
            (self.emit)(finding);
        }
        Ok(())
    }

    /// Classifies one folder directory; an orphan without any row is added to `sightings`.
    fn folder(
        &mut self,
        found: FoundFolder,
        rows: &HashMap<Uuid, Folder>,
        tombstones: &HashMap<Uuid, Tombstone>,
        sightings: &mut Vec<NewSighting>,
    ) -> Option<Finding> {
        let path = text(&found.path);
        let bytes = found.counts.map(|c| c.counts.bytes);
        let row = rows.get(&found.id);
        if let Some(row) = row {
            if let Some(expected) = self.expected(row) {
                if expected.contains(&path) {
                    if row.status != RowStatus::Known(Status::DeleteComplete) {
                        return None;
                    }
                    self.summary.unfinished += 1;
                    add(&mut self.summary.unfinished_bytes, bytes);
                    return Some(Finding::Unfinished(Unfinished {
                        path,
                        id: found.id,
                        name: row.name.clone(),
                        counts: found.counts,
                        since: row.since(),
                    }));
                }
            }
        } else {
            sightings.push(NewSighting {
                path: path.clone(),
                vfolder_id: found.id,
                scope: found.scope,
                trash: found.trash,
            });
        }
        self.summary.orphans += 1;
        add(&mut self.summary.orphan_bytes, bytes);
        Some(Finding::Orphan(Box::new(Orphan {
            path,
            id: found.id,
            trash: found.trash,
            counts: found.counts,
            row: row.map(|r| RowElsewhere {
                status: r.status.as_str().to_owned(),
                host: r.host.clone(),
                path: self.expected(r).map(|[live, _]| live),
            }),
            tombstone: tombstones.get(&found.id).cloned(),
            first_seen: None,
            scans: None,
            reclaimable_after: None,
        })))
    }

    /// Pages through the volume's rows and reports live ones whose data is nowhere.
    async fn missing(&mut self) -> Result<(), Error> {
        let host = self.volume.host().to_owned();
        let mut after = None;
        loop {
            let page = self
                .store
                .folders_on_host(&host, after, BATCH as u32)
                .await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.id);
            let short = page.len() < BATCH;
            let wanted: Vec<Folder> = page
                .into_iter()
                .filter(|f| {
                    matches!(
                        f.status,
                        RowStatus::Known(
                            Status::Ready
                                | Status::Performing
                                | Status::Cloning
                                | Status::DeletePending
                        )
                    )
                })
                .collect();
            let volume = self.volume.clone();
            let checked = tokio::task::spawn_blocking(move || {
                wanted
                    .into_iter()
                    .filter_map(|f| {
                        let folder = FolderRef::from(&f);
                        // A path that cannot be checked (a symlink in the way) is the walk's
                        // foreign entry, not a missing folder.
                        let found = volume.locate(&folder).ok()?;
                        let path = volume.folder_path(&folder).ok()?;
                        (found == [false, false]).then(|| Missing {
                            id: f.id,
                            name: f.name.clone(),
                            status: f.status.as_str().to_owned(),
                            path: text(&path),
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| Error::Panicked {
                host: host.clone(),
                reason: e.to_string(),
            })?;
            for m in checked {
                self.summary.missing += 1;
                (self.emit)(Finding::Missing(m));
            }
            if short {
                return Ok(());
            }
        }
    }
}

fn add(total: &mut Option<u64>, bytes: Option<u64>) {
    if let (Some(t), Some(b)) = (total.as_mut(), bytes) {
        *t += b;
    }
}

/// One line of a reclaim report.
#[derive(Debug, Clone, Serialize)]
pub struct Reclaim {
    /// The sighting.
    pub sighting: Sighting,
    /// `would-reclaim` (dry run), `reclaimed`, `skipped` or `failed`.
    pub result: &'static str,
    /// What was removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    /// Why it was skipped or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Totals of a reclaim run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ReclaimTotals {
    /// Orphans removed (or, in a dry run, that would be).
    pub reclaimed: u64,
    /// Skipped (a row appeared, the path is not the sighting's).
    pub skipped: u64,
    /// Failed (left as they are; the sighting stays).
    pub failed: u64,
    /// What was removed.
    pub counts: Counts,
}

/// Removes the orphans of `volume` that are due (see the module docs), reporting each to
/// `emit`. With `dry_run` nothing is removed or recorded.
pub async fn reclaim_volume(
    store: &dyn Store,
    volume: &Volume,
    grace: Duration,
    actor: &str,
    dry_run: bool,
    cancel: &CancellationToken,
    emit: &mut (dyn FnMut(Reclaim) + Send),
) -> Result<ReclaimTotals, Error> {
    let mut totals = ReclaimTotals::default();
    let due = store
        .due_orphans(volume.host(), grace, RECLAIM_LIMIT)
        .await?;
    for sighting in due {
        if cancel.is_cancelled() {
            break;
        }
        let line = |result, counts, reason: Option<String>| Reclaim {
            sighting: sighting.clone(),
            result,
            counts,
            reason,
        };
        let scope = sighting.seen.scope.map(storage::path_scope);
        let folder = FolderRef {
            id: sighting.seen.vfolder_id,
            host: volume.host(),
            quota_scope_id: scope.as_deref(),
        };
        let path = if sighting.seen.trash {
            volume.trash_path(&folder)
        } else {
            volume.folder_path(&folder)
        };
        if path.as_deref().map(text).ok().as_deref() != Some(sighting.seen.path.as_str()) {
            totals.skipped += 1;
            emit(line(
                "skipped",
                None,
                Some("the sighting's path is not the layout path of its id".into()),
            ));
            continue;
        }
        if dry_run {
            totals.reclaimed += 1;
            emit(line("would-reclaim", None, None));
            continue;
        }
        // The due query checked this already; a long run makes it worth asking again right
        // before anything is removed.
        if !store
            .folders_by_ids(&[sighting.seen.vfolder_id])
            .await?
            .is_empty()
        {
            totals.skipped += 1;
            emit(line(
                "skipped",
                None,
                Some("a row with this id exists".into()),
            ));
            continue;
        }
        let started = Instant::now();
        let removed = {
            let volume = volume.clone();
            let cancel = cancel.clone();
            let (id, trash, scope) = (sighting.seen.vfolder_id, sighting.seen.trash, scope.clone());
            tokio::task::spawn_blocking(move || {
                let folder = FolderRef {
                    id,
                    host: volume.host(),
                    quota_scope_id: scope.as_deref(),
                };
                volume.remove_folder_copy(&folder, trash, &cancel, &storage::Progress::default())
            })
            .await
        };
        match removed {
            Ok(Ok(storage::Outcome::Completed(report))) => {
                let done = Completion {
                    progress: store::Counts {
                        files: report.counts.files,
                        dirs: report.counts.dirs,
                        symlinks: report.counts.symlinks,
                        bytes: report.counts.bytes,
                    },
                    duration: started.elapsed(),
                };
                store.record_reclaim(&sighting, &done, actor).await?;
                totals.reclaimed += 1;
                totals.counts.add(&report.counts);
                emit(line("reclaimed", Some(report.counts), None));
            }
            Ok(Ok(storage::Outcome::Cancelled(_))) => break,
            Ok(Err(error)) => {
                totals.failed += 1;
                emit(line("failed", None, Some(error.to_string())));
            }
            Err(join) => {
                totals.failed += 1;
                emit(line("failed", None, Some(join.to_string())));
            }
        }
    }
    Ok(totals)
}

/// The controller's own orphan scan of one volume (`orphan_scan_interval`), followed by a
/// reclaim when the volume has `reclaim_orphans`. A volume that cannot be walked is logged
/// and tried again at the next tick; only database errors count as the job's failures.
pub struct OrphanJob {
    /// The database.
    pub store: Arc<dyn Store>,
    /// The volume.
    pub volume: Volume,
    /// Reclaim after each scan.
    pub reclaim: bool,
    /// This replica (the actor of scans and reclaims).
    pub replica: String,
    /// Where reclaims are counted.
    pub metrics: Arc<crate::observe::Metrics>,
    /// Ends a running scan at shutdown.
    pub cancel: CancellationToken,
}

impl super::maintenance::MaintenanceJob for OrphanJob {
    const NAME: &'static str = "orphan-scan";

    async fn run_once(&self) -> Result<u64, store::Error> {
        let host = self.volume.host();
        let req = ScanRequest {
            count: self.volume.config().count_bytes,
            grace: self.volume.config().orphan_grace,
            actor: self.replica.clone(),
        };
        let progress = Arc::new(ScanProgress::default());
        let scanned = scan_volume(
            self.store.as_ref(),
            &self.volume,
            &req,
            progress,
            &self.cancel,
            &mut |_| {},
        )
        .await;
        let summary = match scanned {
            Ok(Some(summary)) => summary,
            Ok(None) => return Ok(0),
            Err(Error::Store(e)) => return Err(e),
            Err(error) => {
                tracing::warn!(volume = host, %error, "orphan scan failed; trying again at the next tick");
                return Ok(0);
            }
        };
        self.metrics.set_orphan_scan(&summary);
        tracing::info!(
            volume = host,
            orphans = summary.orphans,
            unfinished = summary.unfinished,
            missing = summary.missing,
            foreign = summary.foreign_entries,
            "orphan scan finished"
        );
        if !self.reclaim {
            return Ok(0);
        }
        let reclaimed = reclaim_volume(
            self.store.as_ref(),
            &self.volume,
            req.grace,
            &self.replica,
            false,
            &self.cancel,
            &mut |r| {
                tracing::info!(volume = host, path = %r.sighting.seen.path, result = r.result, reason = r.reason.as_deref().unwrap_or(""), "orphan reclaim");
            },
        )
        .await;
        match reclaimed {
            Ok(totals) => {
                self.metrics.orphans_reclaimed(host, totals.reclaimed);
                Ok(totals.reclaimed)
            }
            Err(Error::Store(e)) => Err(e),
            Err(error) => {
                tracing::warn!(volume = host, %error, "orphan reclaim failed; trying again at the next tick");
                Ok(0)
            }
        }
    }
}
