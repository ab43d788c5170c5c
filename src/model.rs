//! The model: folders, their history and controller state, status requests, claims and
//! audit entries, as the store, the controller and the CLI exchange them.
//!
//! Plain data with no database or filesystem access. The conversion of a folder to the
//! storage layer's [`FolderRef`] lives here, so the store does not depend on the storage
//! layer; the counts of a removal are the storage layer's [`Counts`], one type from the
//! remover to the audit log.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::lifecycle::{RowStatus, Status};
pub use crate::storage::Counts;
use crate::storage::FolderRef;

/// A new row, as `vfolder-controller create` or a service inserts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewFolder {
    pub id: Uuid,
    /// `<proxy>:<volume>`.
    pub host: String,
    /// `user:<uuid>` / `project:<uuid>`, or `None` for legacy folders.
    pub quota_scope_id: Option<String>,
    /// The folder name, unique per owner among live and trashed folders.
    pub name: String,
    /// Owning user, for user-owned folders.
    pub user: Option<Uuid>,
    /// Owning group (project), for group-owned folders.
    pub group: Option<Uuid>,
    /// `user` or `group`.
    pub ownership_type: String,
}

/// A `vfolders` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Folder {
    pub id: Uuid,
    /// `<proxy>:<volume>`.
    pub host: String,
    /// `user:<uuid>` / `project:<uuid>`, or `None`.
    pub quota_scope_id: Option<String>,
    pub name: String,
    /// Owning user.
    pub user: Option<Uuid>,
    /// Owning group.
    pub group: Option<Uuid>,
    /// `user` or `group` (NULL on some adopted rows; the platform stores it as an enum).
    pub ownership_type: Option<String>,
    /// Current status, as stored (statuses the controller does not own are kept as text).
    pub status: RowStatus,
    /// When the status last changed (`None` if it never did, or the writer did not say).
    pub status_changed: Option<DateTime<Utc>>,
    /// When the row was created (the platform's column may be NULL).
    pub created_at: Option<DateTime<Utc>>,
}

impl Folder {
    /// The best-known time the row entered its status: `status_changed`, else `created_at`.
    pub fn since(&self) -> Option<DateTime<Utc>> {
        self.status_changed.or(self.created_at)
    }
}

impl<'a> From<&'a Folder> for FolderRef<'a> {
    /// The row as the storage layer addresses its data (id, host, quota scope).
    fn from(f: &'a Folder) -> Self {
        FolderRef {
            id: f.id,
            host: &f.host,
            quota_scope_id: f.quota_scope_id.as_deref(),
        }
    }
}

impl<'a> From<&'a NewFolder> for FolderRef<'a> {
    /// A row about to be inserted, as the storage layer addresses its data.
    fn from(f: &'a NewFolder) -> Self {
        FolderRef {
            id: f.id,
            host: &f.host,
            quota_scope_id: f.quota_scope_id.as_deref(),
        }
    }
}

/// The shape a row's `status_history` is stored in. The controller keeps each row's shape:
/// its own rows are lists; the reference platform writes objects `{"DELETE_PENDING": time}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "shape", content = "raw")]
pub enum HistoryShape {
    /// `[{status, at, actor}]`, oldest first.
    List,
    /// `{"STATUS_NAME": "<iso time>"}` (the platform's shape; shown in time order).
    Object,
    /// NULL or JSON null: no history recorded.
    Null,
    /// Anything that cannot be read as either shape, kept raw for display.
    Unreadable(String),
}

/// One entry of a row's `status_history`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The status the row changed to (text: history may hold legacy spellings).
    pub status: String,
    pub at: DateTime<Utc>,
    /// Who, when the writer said so.
    pub actor: Option<String>,
}

/// Where a folder's data currently is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    /// At the live path.
    Live,
    /// In the volume's trash directory (`trash = "move"` volumes).
    Trash,
}

/// The controller's own state for a folder (its own table, keyed by vfolder id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerState {
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not retried before this time.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last error text.
    pub last_error: Option<String>,
    /// The replica holding the lease.
    pub lease_owner: Option<String>,
    /// When the lease expires.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Progress of the running (or last) removal.
    pub progress: Counts,
    /// Where the data is.
    pub location: Location,
    /// Per-folder trash purge time (overrides the trash retention).
    pub purge_after: Option<DateTime<Utc>>,
}

/// A row with its history and controller state, for `show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderDetail {
    pub folder: Folder,
    /// Its status history, oldest first (both stored shapes read the same).
    pub history: Vec<HistoryEntry>,
    /// The shape the history is stored in.
    pub history_shape: HistoryShape,
    /// The controller's state, if the controller or the CLI ever touched it.
    pub state: Option<ControllerState>,
}

/// The result of a status write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub id: Uuid,
    pub from: Status,
    pub to: Status,
    /// `false` when the row already had `to` (idempotent no-op).
    pub changed: bool,
}

/// One entry of the append-only audit log (it outlives purged rows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Monotonic sequence number.
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub vfolder_id: Uuid,
    /// The folder's host at the time.
    pub host: Option<String>,
    /// The folder's name at the time.
    pub name: Option<String>,
    /// What happened: `create`, `trash`, `restore`, `purge`, `force-delete`, `retry`,
    /// `forget`, `trash-timer`, `removed`, `remove-failed`, `moved-to-trash`,
    /// `restored-from-trash`, `history-cleanup`.
    pub action: String,
    /// Status before, when the action changed it.
    pub from_status: Option<String>,
    /// Status after.
    pub to_status: Option<String>,
    /// Person or service (CLI `--actor`, the timer's name).
    pub actor: Option<String>,
    /// Controller replica that did the work.
    pub replica: Option<String>,
    /// What a removal removed.
    pub progress: Option<Counts>,
    /// How long the removal took.
    pub duration_ms: Option<i64>,
    /// Error text of a failure.
    pub error: Option<String>,
}

/// What an audit entry records. The controller's own writes name one of these; the SQL
/// the controller installs writes the others (`trash-timer`, `history-cleanup`,
/// `adopt-remap`, and the tombstone trigger's `row-deleted*`), with the same spellings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditAction {
    /// `create`: a row inserted by the CLI.
    Create,
    /// `trash`: ready → delete-pending on request.
    Trash,
    /// `restore`: delete-pending → ready on request.
    Restore,
    /// `purge`: delete-pending → delete-ongoing on request.
    Purge,
    /// `force-delete`: ready → delete-ongoing on request.
    ForceDelete,
    /// `retry`: delete-error → delete-ongoing on request.
    Retry,
    /// `forget`: a delete-error row removed after manual cleanup.
    Forget,
    /// `trash-timer`: delete-pending → delete-ongoing after the trash retention.
    TrashTimer,
    /// `history-cleanup`: a delete-complete row removed after the history retention.
    HistoryCleanup,
    /// `removed`: a removal finished (delete-ongoing → delete-complete), with its counts.
    Removed,
    /// `remove-failed`: a removal failed for good (→ delete-error), with the error.
    RemoveFailed,
    /// `moved-to-trash`: the data moved into the volume's trash directory.
    MovedToTrash,
    /// `restored-from-trash`: the data moved back to its live path.
    RestoredFromTrash,
    /// `adopt-remap`: a legacy status spelling rewritten when the table was adopted.
    AdoptRemap,
    /// `row-deleted`: a row deleted by someone else (a tombstone keeps its story).
    RowDeleted,
    /// `row-deleted-during-removal`: a delete-ongoing row deleted while it was removed.
    RowDeletedDuringRemoval,
    /// `removed-after-row-deleted`: the removal of a deleted row's data finished.
    RemovedAfterRowDeleted,
    /// `tombstone-superseded`: a row with a tombstone's id came back; nothing removed.
    TombstoneSuperseded,
    /// `orphan-reclaimed`: data no row accounted for, removed after its grace period.
    OrphanReclaimed,
}

impl AuditAction {
    /// The text stored in `vfolder_audit.action`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditAction::Create => "create",
            AuditAction::Trash => "trash",
            AuditAction::Restore => "restore",
            AuditAction::Purge => "purge",
            AuditAction::ForceDelete => "force-delete",
            AuditAction::Retry => "retry",
            AuditAction::Forget => "forget",
            AuditAction::TrashTimer => "trash-timer",
            AuditAction::HistoryCleanup => "history-cleanup",
            AuditAction::Removed => "removed",
            AuditAction::RemoveFailed => "remove-failed",
            AuditAction::MovedToTrash => "moved-to-trash",
            AuditAction::RestoredFromTrash => "restored-from-trash",
            AuditAction::AdoptRemap => "adopt-remap",
            AuditAction::RowDeleted => "row-deleted",
            AuditAction::RowDeletedDuringRemoval => "row-deleted-during-removal",
            AuditAction::RemovedAfterRowDeleted => "removed-after-row-deleted",
            AuditAction::TombstoneSuperseded => "tombstone-superseded",
            AuditAction::OrphanReclaimed => "orphan-reclaimed",
        }
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which audit entries to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this folder.
    pub id: Option<Uuid>,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// At most this many, newest last. `None`: all.
    pub limit: Option<i64>,
}

/// A status write requested by a person or service (CLI, API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRequest {
    pub id: Uuid,
    /// The wanted status.
    pub to: Status,
    /// Who asks (recorded in history and audit).
    pub actor: String,
    /// The audit action name (`trash`, `restore`, `purge`, `force-delete`, `retry`).
    pub action: AuditAction,
    /// With `to = delete-pending`: purge at this time instead of after the trash retention.
    pub purge_after: Option<DateTime<Utc>>,
    /// The statuses this request is meant to start from (empty: any). Checked under the
    /// row lock, so e.g. a `purge` cannot turn into a force-delete of a folder that was
    /// restored between the caller's read and its write.
    pub expect_from: &'static [Status],
}

/// What kind of work a claimed row needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkKind {
    /// `delete-ongoing`: remove the data (live and trash paths).
    Remove,
    /// `delete-pending` on a `move` volume with data at the live path: rename into the trash.
    MoveToTrash,
    /// `ready` on a `move` volume with data in the trash: rename back.
    Restore,
}

/// What a replica asks for when it claims due work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    /// The claiming replica (lease owner).
    pub owner: String,
    pub lease: Duration,
    /// At most this many rows.
    pub limit: u32,
    /// Only rows on these hosts (the volumes this replica serves).
    pub hosts: Vec<String>,
    /// The subset of `hosts` with `trash = "move"` (work kinds `MoveToTrash`/`Restore`).
    pub move_hosts: Vec<String>,
    /// Rows not to claim (already running in this process).
    pub exclude: Vec<Uuid>,
}

/// A claimed row: the caller holds its lease until it completes, fails or releases it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub folder: Folder,
    /// What to do.
    pub kind: WorkKind,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Where the data is.
    pub location: Location,
    /// What earlier runs of this removal removed (saved with the lease), so that the final
    /// counts cover the whole removal.
    pub progress: Counts,
    /// The previous owner, when this claim took over an expired lease.
    pub reclaimed_from: Option<String>,
}

/// The final numbers of a successful removal, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// What was removed.
    pub progress: Counts,
    /// How long it took.
    pub duration: Duration,
}

/// How the removal of a deleted row's data stands (`vfolder_tombstones.removal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TombstoneRemoval {
    /// Not asked for: the row was not `delete-ongoing` when it was deleted. Reported by
    /// `orphans scan` when its data is still there, never removed by the controller.
    None,
    /// The row was deleted while `delete-ongoing`: the controller finishes the removal.
    Pending,
    /// The controller finished the removal.
    Removed,
    /// The removal failed permanently (see `last_error`).
    Failed,
    /// A row with the same id appeared again: its data is that row's now, nothing removed.
    Superseded,
}

impl TombstoneRemoval {
    /// The stored text.
    pub const fn as_str(self) -> &'static str {
        match self {
            TombstoneRemoval::None => "none",
            TombstoneRemoval::Pending => "pending",
            TombstoneRemoval::Removed => "removed",
            TombstoneRemoval::Failed => "failed",
            TombstoneRemoval::Superseded => "superseded",
        }
    }
}

/// The record a deleted `vfolders` row leaves (`vfolder_tombstones`, written by a database
/// trigger whoever deletes the row): enough to find its data and tell its story.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// Sequence number (one id can be deleted more than once).
    pub seq: i64,
    /// The deleted row's id.
    pub vfolder_id: Uuid,
    /// Its host (volume).
    pub host: Option<String>,
    /// Its quota scope.
    pub quota_scope_id: Option<String>,
    /// Its name.
    pub name: Option<String>,
    /// Its status when it was deleted.
    pub status: Option<String>,
    /// Who deleted it: `vfolder.actor`, else `db:<role>` (PostgreSQL).
    pub actor: Option<String>,
    /// `row-deleted`, `row-deleted-during-removal`, or the controller's own action
    /// (`history-cleanup`, `forget`).
    pub cause: String,
    /// When.
    pub deleted_at: DateTime<Utc>,
    /// Whether the controller removes its data, and how that went.
    pub removal: TombstoneRemoval,
    /// Failed removal attempts.
    pub attempts: u32,
    /// The last removal error.
    pub last_error: Option<String>,
    /// What the removal removed so far (including the row's own removal before deletion).
    pub progress: Counts,
    /// When the removal finished.
    pub finished_at: Option<DateTime<Utc>>,
}

impl Tombstone {
    /// The deleted row's data as the storage layer addresses it; `None` without a host.
    pub fn folder_ref(&self) -> Option<FolderRef<'_>> {
        Some(FolderRef {
            id: self.vfolder_id,
            host: self.host.as_deref()?,
            quota_scope_id: self.quota_scope_id.as_deref(),
        })
    }
}

/// A claimed tombstone whose data the controller is to remove (`removal = pending`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TombstoneClaim {
    /// The tombstone.
    pub tombstone: Tombstone,
    /// A `vfolders` row with the same id exists again: the data is that row's; the claim
    /// is to be finished as [`TombstoneEnd::Superseded`], never removed.
    pub row_exists: bool,
    /// The previous owner, when this claim took over an expired lease.
    pub reclaimed_from: Option<String>,
}

/// How the removal of a tombstone's data ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TombstoneEnd {
    /// Everything is gone; audited as `removed-after-row-deleted` with the counts.
    Removed(Completion),
    /// Failed permanently; audited as `remove-failed` with the error.
    Failed(String),
    /// A row with the same id exists again; nothing removed, audited as `tombstone-superseded`.
    Superseded,
}

/// A folder directory an `orphans scan` saw with no row accounting for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSighting {
    /// The directory, relative to the volume root (computed by the storage layout).
    pub path: String,
    /// The folder id its path spells.
    pub vfolder_id: Uuid,
    /// The quota scope uuid its path spells, if any.
    pub scope: Option<Uuid>,
    /// Whether it is under the volume's trash directory.
    pub trash: bool,
}

/// A recorded sighting: every scan since `first_seen` saw the directory without a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    /// The volume.
    pub host: String,
    /// What was seen.
    #[serde(flatten)]
    pub seen: NewSighting,
    /// The first scan that saw it.
    pub first_seen: DateTime<Utc>,
    /// The last scan that saw it.
    pub last_seen: DateTime<Utc>,
    /// How many scans saw it.
    pub scans: u32,
}

/// The totals of one complete scan of a volume (the controller's gauges read the latest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanSummary {
    /// The volume.
    pub host: String,
    /// When the scan started (sightings not seen since are ended).
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Whether files and bytes were counted.
    pub counted: bool,
    /// Folder directories no row accounts for.
    pub orphans: u64,
    /// Their bytes, when counted.
    pub orphan_bytes: Option<u64>,
    /// `delete-complete` rows whose data still exists.
    pub unfinished: u64,
    /// Their bytes, when counted.
    pub unfinished_bytes: Option<u64>,
    /// Live rows whose data is missing.
    pub missing: u64,
    /// Entries in the layout that are not folders.
    pub foreign_entries: u64,
    /// Who ran it.
    pub actor: Option<String>,
}

/// A status change announced by the database (PostgreSQL `NOTIFY`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEvent {
    pub id: Uuid,
    /// Status before (`None` for an insert).
    pub from: Option<RowStatus>,
    /// Status after.
    pub to: RowStatus,
    pub at: DateTime<Utc>,
}

impl Location {
    /// The stored text.
    pub const fn as_str(self) -> &'static str {
        match self {
            Location::Live => "live",
            Location::Trash => "trash",
        }
    }
}

impl WorkKind {
    /// Every kind of work.
    pub const ALL: [WorkKind; 3] = [WorkKind::Remove, WorkKind::MoveToTrash, WorkKind::Restore];

    /// The text the claim queries compute (same as the serde name).
    pub const fn as_str(self) -> &'static str {
        match self {
            WorkKind::Remove => "remove",
            WorkKind::MoveToTrash => "move-to-trash",
            WorkKind::Restore => "restore",
        }
    }
}

/// A volume's availability as a controller replica last saw it (for `show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeState {
    /// The volume's `<proxy>:<volume>` host string.
    pub host: String,
    /// Whether the volume guard passed.
    pub available: bool,
    /// When it last changed between available and unavailable.
    pub since: DateTime<Utc>,
    /// Why it is unavailable (`None` when available).
    pub reason: Option<String>,
    /// The replica that recorded it.
    pub replica: String,
    /// When it was recorded (set by the store).
    pub updated_at: DateTime<Utc>,
}
