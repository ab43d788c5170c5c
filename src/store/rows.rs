//! The rows the queries return, and their one conversion into the model.
//!
//! Each row type is generic over the column types that differ between the backends (an id is
//! a PostgreSQL `uuid` but SQLite text; a time is `timestamptz` but text; a name is text
//! PostgreSQL guarantees to be UTF-8 but SQLite does not), and `#[derive(sqlx::FromRow)]`
//! reads it. [`Decoded`] turns each backend's column type into the model's, so the mapping of
//! a row to a [`Folder`], a [`ControllerState`] or an [`AuditEntry`] is written once.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    AuditEntry, Claim, ControllerState, Counts, Folder, NewSighting, Result, ScanSummary, Sighting,
    Tombstone, TombstoneRemoval, WorkKind, decode_err, parse_location, to_u64,
};
use crate::lifecycle::RowStatus;

/// A backend's column value as the model's type.
pub(crate) trait Decoded<T> {
    /// The value, or a decoding error naming it.
    fn decoded(self) -> Result<T>;
}

impl Decoded<Uuid> for Uuid {
    fn decoded(self) -> Result<Uuid> {
        Ok(self)
    }
}

impl Decoded<Uuid> for String {
    fn decoded(self) -> Result<Uuid> {
        self.parse()
            .map_err(|e| decode_err("reading a uuid", format!("uuid {self:?}: {e}")))
    }
}

impl Decoded<DateTime<Utc>> for DateTime<Utc> {
    fn decoded(self) -> Result<DateTime<Utc>> {
        Ok(self)
    }
}

impl Decoded<DateTime<Utc>> for String {
    /// The program's own format (RFC 3339), or SQLite's `datetime('now')` format
    /// (`2026-11-28 19:00:00`, UTC), which hand-written SQL produces.
    fn decoded(self) -> Result<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self)
            .map(|t| t.with_timezone(&Utc))
            .or_else(|e| {
                chrono::NaiveDateTime::parse_from_str(&self, "%Y-%m-%d %H:%M:%S%.f")
                    .map(|t| t.and_utc())
                    .map_err(|_| e)
            })
            .map_err(|e| decode_err("reading a timestamp", format!("timestamp {self:?}: {e}")))
    }
}

impl Decoded<String> for String {
    fn decoded(self) -> Result<String> {
        Ok(self)
    }
}

impl Decoded<String> for Vec<u8> {
    /// A name that is not UTF-8 is shown with replacement characters rather than making its
    /// row unreadable.
    fn decoded(self) -> Result<String> {
        Ok(String::from_utf8_lossy(&self).into_owned())
    }
}

impl<A: Decoded<T>, T> Decoded<Option<T>> for Option<A> {
    fn decoded(self) -> Result<Option<T>> {
        self.map(Decoded::decoded).transpose()
    }
}

/// A `vfolders` row (the folder columns of every query).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct FolderRow<Id, Time, Name> {
    id: Id,
    host: String,
    quota_scope_id: Option<String>,
    name: Name,
    user: Option<Id>,
    group: Option<Id>,
    ownership_type: Option<String>,
    status: String,
    status_changed: Option<Time>,
    created_at: Option<Time>,
}

impl<Id, Time, Name> FolderRow<Id, Time, Name>
where
    Id: Decoded<Uuid>,
    Time: Decoded<DateTime<Utc>>,
    Name: Decoded<String>,
{
    /// The model's folder; statuses are kept as stored ([`RowStatus::from_stored`]).
    pub(crate) fn into_folder(self) -> Result<Folder> {
        Ok(Folder {
            id: self.id.decoded()?,
            host: self.host,
            quota_scope_id: self.quota_scope_id,
            name: self.name.decoded()?,
            user: self.user.decoded()?,
            group: self.group.decoded()?,
            ownership_type: self.ownership_type,
            status: RowStatus::from_stored(&self.status),
            status_changed: self.status_changed.decoded()?,
            created_at: self.created_at.decoded()?,
        })
    }
}

/// The four counters stored with the state and the audit log (NULL reads as 0).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct CountsRow {
    files: Option<i64>,
    dirs: Option<i64>,
    symlinks: Option<i64>,
    bytes: Option<i64>,
}

impl CountsRow {
    fn into_counts(self) -> Counts {
        let n = |v: Option<i64>| v.map_or(0, to_u64);
        Counts {
            files: n(self.files),
            dirs: n(self.dirs),
            symlinks: n(self.symlinks),
            bytes: n(self.bytes),
        }
    }
}

/// A claimed row: the folder, its work kind and its state.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ClaimRow<Id, Time, Name> {
    #[sqlx(flatten)]
    folder: FolderRow<Id, Time, Name>,
    attempts: i64,
    location: String,
    kind: String,
    prev_owner: Option<String>,
    #[sqlx(flatten)]
    counts: CountsRow,
}

impl<Id, Time, Name> ClaimRow<Id, Time, Name>
where
    Id: Decoded<Uuid>,
    Time: Decoded<DateTime<Utc>>,
    Name: Decoded<String>,
{
    /// The model's claim.
    pub(crate) fn into_claim(self) -> Result<Claim> {
        Ok(Claim {
            folder: self.folder.into_folder()?,
            kind: WorkKind::parse(&self.kind)?,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            location: parse_location(&self.location)?,
            progress: self.counts.into_counts(),
            reclaimed_from: self.prev_owner,
        })
    }
}

/// The controller's state of a folder, from a LEFT JOIN (all NULL when there is none).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct StateRow<Id, Time> {
    s_id: Option<Id>,
    attempts: Option<i64>,
    next_attempt_at: Option<Time>,
    last_error: Option<String>,
    lease_owner: Option<String>,
    lease_expires_at: Option<Time>,
    #[sqlx(flatten)]
    counts: CountsRow,
    location: Option<String>,
    purge_after: Option<Time>,
}

impl<Id, Time> StateRow<Id, Time>
where
    Time: Decoded<DateTime<Utc>>,
{
    /// The model's state, `None` when the folder has none yet.
    pub(crate) fn into_state(self) -> Result<Option<ControllerState>> {
        if self.s_id.is_none() {
            return Ok(None);
        }
        Ok(Some(ControllerState {
            attempts: self.attempts.map_or(0, |a| u32::try_from(a).unwrap_or(0)),
            next_attempt_at: self.next_attempt_at.decoded()?,
            last_error: self.last_error,
            lease_owner: self.lease_owner,
            lease_expires_at: self.lease_expires_at.decoded()?,
            progress: self.counts.into_counts(),
            location: parse_location(self.location.as_deref().unwrap_or("live"))?,
            purge_after: self.purge_after.decoded()?,
        }))
    }
}

/// A row of the audit log.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AuditRow<Id, Time> {
    seq: i64,
    at: Time,
    vfolder_id: Id,
    host: Option<String>,
    name: Option<String>,
    action: String,
    from_status: Option<String>,
    to_status: Option<String>,
    actor: Option<String>,
    replica: Option<String>,
    #[sqlx(flatten)]
    counts: CountsRow,
    duration_ms: Option<i64>,
    error: Option<String>,
}

impl<Id, Time> AuditRow<Id, Time>
where
    Id: Decoded<Uuid>,
    Time: Decoded<DateTime<Utc>>,
{
    /// The model's audit entry; the counts are there when the entry recorded them.
    pub(crate) fn into_entry(self) -> Result<AuditEntry> {
        let counted = self.counts.files.is_some();
        Ok(AuditEntry {
            seq: self.seq,
            at: self.at.decoded()?,
            vfolder_id: self.vfolder_id.decoded()?,
            host: self.host,
            name: self.name,
            action: self.action,
            from_status: self.from_status,
            to_status: self.to_status,
            actor: self.actor,
            replica: self.replica,
            progress: counted.then(|| self.counts.into_counts()),
            duration_ms: self.duration_ms,
            error: self.error,
        })
    }
}

impl Decoded<u32> for i32 {
    fn decoded(self) -> Result<u32> {
        Ok(u32::try_from(self).unwrap_or(0))
    }
}

impl Decoded<u32> for i64 {
    fn decoded(self) -> Result<u32> {
        Ok(u32::try_from(self).unwrap_or(0))
    }
}

/// A row of `vfolder_tombstones`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TombstoneRow<Id, Time, Int> {
    seq: i64,
    vfolder_id: Id,
    host: Option<String>,
    quota_scope_id: Option<String>,
    name: Option<String>,
    status: Option<String>,
    actor: Option<String>,
    cause: String,
    deleted_at: Time,
    removal: String,
    attempts: Int,
    last_error: Option<String>,
    #[sqlx(flatten)]
    counts: CountsRow,
    finished_at: Option<Time>,
}

impl<Id, Time, Int> TombstoneRow<Id, Time, Int>
where
    Id: Decoded<Uuid>,
    Time: Decoded<DateTime<Utc>>,
    Int: Decoded<u32>,
{
    /// The model's tombstone.
    pub(crate) fn into_tombstone(self) -> Result<Tombstone> {
        Ok(Tombstone {
            seq: self.seq,
            vfolder_id: self.vfolder_id.decoded()?,
            host: self.host,
            quota_scope_id: self.quota_scope_id,
            name: self.name,
            status: self.status,
            actor: self.actor,
            cause: self.cause,
            deleted_at: self.deleted_at.decoded()?,
            removal: TombstoneRemoval::parse(&self.removal)?,
            attempts: self.attempts.decoded()?,
            last_error: self.last_error,
            progress: self.counts.into_counts(),
            finished_at: self.finished_at.decoded()?,
        })
    }
}

/// A row of `vfolder_orphan_sightings`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SightingRow<Id, Time, Int> {
    host: String,
    path: String,
    vfolder_id: Id,
    scope: Option<Id>,
    trash: bool,
    first_seen: Time,
    last_seen: Time,
    scans: Int,
}

impl<Id, Time, Int> SightingRow<Id, Time, Int>
where
    Id: Decoded<Uuid>,
    Time: Decoded<DateTime<Utc>>,
    Int: Decoded<u32>,
{
    /// The model's sighting.
    pub(crate) fn into_sighting(self) -> Result<Sighting> {
        Ok(Sighting {
            host: self.host,
            seen: NewSighting {
                path: self.path,
                vfolder_id: self.vfolder_id.decoded()?,
                scope: self.scope.decoded()?,
                trash: self.trash,
            },
            first_seen: self.first_seen.decoded()?,
            last_seen: self.last_seen.decoded()?,
            scans: self.scans.decoded()?,
        })
    }
}

/// A row of `vfolder_orphan_scans`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ScanRow<Time> {
    host: String,
    started_at: Time,
    finished_at: Time,
    counted: bool,
    orphans: i64,
    orphan_bytes: Option<i64>,
    unfinished: i64,
    unfinished_bytes: Option<i64>,
    missing: i64,
    foreign_entries: i64,
    actor: Option<String>,
}

impl<Time: Decoded<DateTime<Utc>>> ScanRow<Time> {
    /// The model's scan summary.
    pub(crate) fn into_summary(self) -> Result<ScanSummary> {
        Ok(ScanSummary {
            host: self.host,
            started_at: self.started_at.decoded()?,
            finished_at: self.finished_at.decoded()?,
            counted: self.counted,
            orphans: to_u64(self.orphans),
            orphan_bytes: self.orphan_bytes.map(to_u64),
            unfinished: to_u64(self.unfinished),
            unfinished_bytes: self.unfinished_bytes.map(to_u64),
            missing: to_u64(self.missing),
            foreign_entries: to_u64(self.foreign_entries),
            actor: self.actor,
        })
    }
}
