//! Database access: everything the rest of the program needs from the database, behind one
//! trait with a PostgreSQL and a SQLite implementation.
//!
//! Guarantees every implementation gives (the conformance suite in `tests/store.rs` runs the
//! same tests on both):
//! - Status changes go through the database trigger, which rejects illegal transitions,
//!   appends `{status, at, actor}` to `status_history` and sets `status_changed`; writing the
//!   status a row already has is a no-op (no history entry, no audit entry, no event).
//! - Every change made through this trait is written to the audit log in the same
//!   transaction as the change itself.
//! - Lease operations take the owner and are no-ops (returning `false`) when the lease is no
//!   longer held by that owner, so a replica that lost its lease cannot complete or fail a
//!   folder another replica now works on.
//!
//! # Schema (`migrations/postgres`, `migrations/sqlite`, same names on both)
//!
//! A database is **own** (this program created `vfolders`) or **adopted** (the reference
//! platform created it; PostgreSQL only): see [`schema`] for how `migrate` tells them apart,
//! `migrations/postgres-adopted` for what an adoption adds, and `docs/adopting.md`.
//!
//! - `vfolders`: the reference platform's columns. An own table is created by migration 1;
//!   an adopted one is never retyped or reshaped (its enum columns are read as text, NULL
//!   owners, histories and times are read as such) and legacy spellings are remapped as the
//!   platform meant them (`deleted-complete` → `delete-pending`, `purge-ongoing` →
//!   `delete-ongoing`), which the triggers also do on every write, on both backends.
//!   (Migration 2's mapping to `delete-complete` only ever saw the fresh table of
//!   migration 1, so it changed nothing; it stays as applied.)
//! - `vfolders_owner_name_live_key` (own tables only): unique `(coalesce(user, group), name)`
//!   while the status is ready, performing, cloning, delete-pending or delete-ongoing. Caveat: retrying a
//!   `delete-error` folder whose name was reused meanwhile fails with [`Error::NameTaken`].
//! - `vfolder_status_transitions`: the legal transitions (seeded equal to
//!   [`crate::lifecycle::TRANSITIONS`], plus, on PostgreSQL, the `adopted_only`
//!   [`crate::lifecycle::ADOPTED_TRANSITIONS`]; a test compares them), consulted by the
//!   trigger, which on an adopted table leaves statuses outside the deletion lifecycle to the
//!   platform ([`crate::lifecycle::SchemaMode::allows`]).
//! - `vfolder_controller_meta` (PostgreSQL): the mode and the adoption time, from which the
//!   timers count on an adopted table ([`Schema::clock_start`]).
//! - The status trigger: an INSERT records its status as the first history entry, sets
//!   `status_changed` and (PostgreSQL) notifies with `"from": null`; a status change is
//!   checked, appended to the history with the actor, sets `status_changed` and notifies;
//!   writing the same status does nothing. Rejections read
//!   `illegal vfolder status transition: <from> -> <to>` or `unknown vfolder status[: <s>]`.
//! - The actor: PostgreSQL reads the transaction-local setting `vfolder.actor`
//!   (`SET LOCAL vfolder.actor = 'alice'`); SQLite reads the single row of `vfolder_actor`,
//!   which a writer inserts and deletes inside its transaction. Without either it is null.
//! - History and event times are UTC text: `…T19:25:12.123456Z` (PostgreSQL),
//!   `…T19:25:12.123Z` (SQLite, where every timestamp column is such text, so text order is
//!   time order; uuids are lowercase hyphenated text).
//! - `vfolder_controller_state` (one row per folder, removed with it) and the append-only
//!   `vfolder_audit` (no foreign key: it outlives purged rows).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::lifecycle::{IllegalTransition, RowStatus, Status};

pub mod postgres;
pub mod schema;
pub mod sqlite;

pub use schema::{MigrationPlan, Schema, UnadoptPlan};

/// Errors from the store. [`Error::is_transient`] tells the controller whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No vfolder row with this id.
    #[error("vfolder {0} not found")]
    NotFound(Uuid),
    /// The requested status change is not in the lifecycle's transition table.
    #[error("vfolder {id}: {source}")]
    IllegalTransition {
        /// The folder.
        id: Uuid,
        /// The two statuses.
        source: IllegalTransition,
    },
    /// Another live or trashed folder of the same owner already has this name.
    #[error("vfolder name {name:?} is already taken by a live or trashed folder of the same owner")]
    NameTaken {
        /// The name.
        name: String,
    },
    /// The transition is legal, but the request was meant for folders in other statuses
    /// (see [`StatusRequest::expect_from`]).
    #[error("vfolder {id} is {status}; {action} does not apply to it")]
    UnexpectedStatus {
        /// The folder.
        id: Uuid,
        /// Its current status.
        status: Status,
        /// The requested action.
        action: &'static str,
    },
    /// `forget` was asked for a folder that is not in `delete-error`.
    #[error(
        "vfolder {id} is {status}; only a folder in delete-error can be forgotten (after manual cleanup)"
    )]
    NotForgettable {
        /// The folder.
        id: Uuid,
        /// Its status.
        status: Status,
    },
    /// A row holds a status this controller does not own (`mounted`, `error`, ... on an
    /// adopted table): the lifecycle commands leave it alone.
    #[error(
        "vfolder {id} is in status {status:?}, which vfolder-controller does not own (another service sets it); it is left alone"
    )]
    UnknownStatus {
        /// The folder.
        id: Uuid,
        /// The stored text.
        status: String,
    },
    /// `vfolders` exists but was not created by this program: adopting it is an explicit
    /// decision (`migrate --dry-run`, then `migrate --adopt`).
    #[error(
        "the database already has a vfolders table that vfolder-controller did not create ({rows} rows); preview the adoption with `vfolder-controller migrate --dry-run`, then adopt it with `vfolder-controller migrate --adopt` (see docs/adopting.md)"
    )]
    AdoptionRequired {
        /// Rows in the table.
        rows: i64,
    },
    /// The command would write the platform's own rows in a way only the platform may.
    #[error("the vfolders table of this database belongs to the reference platform (adopted); {0}")]
    AdoptedTable(&'static str),
    /// The existing `vfolders` table is not the reference platform's: adopting it could
    /// not work.
    #[error("cannot adopt: {0}")]
    NotAdoptable(String),
    /// `unadopt` on a database whose table the controller created, or never adopted.
    #[error("{0}")]
    NotAdopted(String),
    /// `unadopt` while a controller still holds leases.
    #[error(
        "{0} folder(s) are leased by a running controller (e.g. replica {1:?}); stop every replica first, or pass --force"
    )]
    ControllerRunning(i64, String),
    /// The database URL is neither `postgres://` nor `sqlite://`.
    #[error("unsupported database URL {0:?} (expected postgres://... or sqlite://...)")]
    UnsupportedUrl(String),
    /// Running the embedded migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database schema is older than this binary (run `vfolder-controller migrate`).
    #[error("database is not migrated: {0}")]
    NotMigrated(String),
    /// A query failed; `context` names the operation.
    #[error("database error while {context}: {source}")]
    Database {
        /// The operation, e.g. "claiming due folders".
        context: &'static str,
        /// The cause.
        source: sqlx::Error,
    },
}

impl Error {
    /// Whether retrying later may succeed (the database is unreachable, a connection broke,
    /// a serialization conflict), as opposed to a request that will fail again.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database { source, .. } => {
                matches!(
                    source,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::Protocol(_)
                        | sqlx::Error::WorkerCrashed
                ) || source.as_database_error().is_some_and(|e| {
                    if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                        // SQLITE_BUSY / SQLITE_LOCKED (and their extended codes): another
                        // writer held the lock past the busy timeout.
                        return e
                            .code()
                            .and_then(|c| c.parse::<i32>().ok())
                            .is_some_and(|c| matches!(c & 0xff, 5 | 6));
                    }
                    e.code().is_some_and(|c| {
                        c.starts_with("40") || c.starts_with("08") || c.starts_with("57P")
                    })
                })
            }
            Error::NotMigrated(_) => true,
            _ => false,
        }
    }
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A new row, as `vfolder-controller create` or a service inserts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewFolder {
    /// Primary key.
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
    /// Primary key.
    pub id: Uuid,
    /// `<proxy>:<volume>`.
    pub host: String,
    /// `user:<uuid>` / `project:<uuid>`, or `None`.
    pub quota_scope_id: Option<String>,
    /// Name.
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

impl<'a> From<&'a Folder> for crate::storage::FolderRef<'a> {
    /// The row as the storage layer addresses its data (id, host, quota scope).
    fn from(f: &'a Folder) -> Self {
        crate::storage::FolderRef {
            id: f.id,
            host: &f.host,
            quota_scope_id: f.quota_scope_id.as_deref(),
        }
    }
}

impl<'a> From<&'a NewFolder> for crate::storage::FolderRef<'a> {
    /// A row about to be inserted, as the storage layer addresses its data.
    fn from(f: &'a NewFolder) -> Self {
        crate::storage::FolderRef {
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
    /// When.
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

/// Progress counters of a removal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Regular files (and other non-directory, non-symlink entries) removed.
    pub files: u64,
    /// Directories removed.
    pub dirs: u64,
    /// Symlinks removed.
    pub symlinks: u64,
    /// Bytes of regular files removed (0 unless the volume counts bytes).
    pub bytes: u64,
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
    pub progress: Progress,
    /// Where the data is.
    pub location: Location,
    /// Per-folder trash purge time (overrides the trash retention).
    pub purge_after: Option<DateTime<Utc>>,
}

/// A row with its history and controller state, for `show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderDetail {
    /// The row.
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
    /// The folder.
    pub id: Uuid,
    /// Status before.
    pub from: Status,
    /// Status after.
    pub to: Status,
    /// `false` when the row already had `to` (idempotent no-op).
    pub changed: bool,
}

/// One entry of the append-only audit log (it outlives purged rows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Monotonic sequence number.
    pub seq: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// The folder.
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
    pub progress: Option<Progress>,
    /// How long the removal took.
    pub duration_ms: Option<i64>,
    /// Error text of a failure.
    pub error: Option<String>,
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
    /// The folder.
    pub id: Uuid,
    /// The wanted status.
    pub to: Status,
    /// Who asks (recorded in history and audit).
    pub actor: String,
    /// The audit action name (`trash`, `restore`, `purge`, `force-delete`, `retry`).
    pub action: &'static str,
    /// With `to = delete-pending`: purge at this time instead of after the trash retention.
    pub purge_after: Option<DateTime<Utc>>,
    /// The statuses this request is meant to start from (empty: any). Checked under the
    /// row lock, so e.g. a `purge` cannot turn into a force-delete of a folder that was
    /// restored between the caller's read and its write.
    pub expect_from: &'static [Status],
}

impl StatusRequest {
    /// Decides what writing this request over a row in status `from` means: a no-op
    /// (`changed: false`), a change, or an error. Both backends call this under the row
    /// lock, so the lifecycle check and the caller's expectation are one atomic decision.
    pub fn check(&self, from: Status) -> Result<StatusChange> {
        let change = StatusChange {
            id: self.id,
            from,
            to: self.to,
            changed: from != self.to,
        };
        if !change.changed {
            return Ok(change);
        }
        from.transition_to(self.to)
            .map_err(|source| Error::IllegalTransition {
                id: self.id,
                source,
            })?;
        if !self.expect_from.is_empty() && !self.expect_from.contains(&from) {
            return Err(Error::UnexpectedStatus {
                id: self.id,
                status: from,
                action: self.action,
            });
        }
        Ok(change)
    }
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
    /// Lease length.
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
    /// The row.
    pub folder: Folder,
    /// What to do.
    pub kind: WorkKind,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Where the data is.
    pub location: Location,
    /// The previous owner, when this claim took over an expired lease.
    pub reclaimed_from: Option<String>,
}

/// The final numbers of a successful removal, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// What was removed.
    pub progress: Progress,
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

    pub(crate) fn parse(text: &str) -> Result<Self> {
        [
            TombstoneRemoval::None,
            TombstoneRemoval::Pending,
            TombstoneRemoval::Removed,
            TombstoneRemoval::Failed,
            TombstoneRemoval::Superseded,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
        .ok_or_else(|| {
            decode_err(
                "reading a tombstone",
                format!("unknown removal state {text:?}"),
            )
        })
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
    pub progress: Progress,
    /// When the removal finished.
    pub finished_at: Option<DateTime<Utc>>,
}

impl Tombstone {
    /// The deleted row's data as the storage layer addresses it; `None` without a host.
    pub fn folder_ref(&self) -> Option<crate::storage::FolderRef<'_>> {
        Some(crate::storage::FolderRef {
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
    /// The folder.
    pub id: Uuid,
    /// Status before (`None` for an insert).
    pub from: Option<String>,
    /// Status after.
    pub to: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Stream of status events; an `Err` item means the listener connection broke (the caller
/// resubscribes with backoff).
pub type EventStream = BoxStream<'static, Result<StatusEvent>>;

/// The name of the PostgreSQL NOTIFY channel carrying [`StatusEvent`] JSON payloads.
pub const EVENT_CHANNEL: &str = "vfolder_status";

/// Everything the program needs from the database.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `postgres` or `sqlite`.
    fn backend(&self) -> &'static str;

    /// What `migrate` would do now: the mode, the pending migrations and, for a table to
    /// adopt, every change it makes and the rows it affects. Changes nothing.
    async fn plan_migration(&self) -> Result<MigrationPlan>;

    /// Applies the embedded migrations for the database's mode and returns the plan it
    /// carried out; running it again is a no-op. A `vfolders` table this program did not
    /// create is adopted only with `adopt` ([`Error::AdoptionRequired`] otherwise).
    async fn migrate(&self, adopt: bool) -> Result<MigrationPlan>;

    /// The way back from an adoption: drops everything the controller added to the
    /// database (its tables, trigger, function, indexes) and leaves `vfolders` with the
    /// platform's columns and rows, statuses as they are now. With `dry_run`, only says
    /// what it would drop. Refused on a table the controller created
    /// ([`Error::NotAdopted`]) and while leases are held, unless `force`.
    async fn unadopt(&self, dry_run: bool, force: bool) -> Result<UnadoptPlan>;

    /// Whether this program created `vfolders` or adopted it, and when.
    async fn schema(&self) -> Result<Schema>;

    /// Ok when the database answers and every embedded migration is applied (readiness).
    async fn check_ready(&self) -> Result<()>;

    // ----- admin -----------------------------------------------------------------------

    /// Inserts a row in `ready` and audits `create`.
    async fn create_folder(&self, new: &NewFolder, actor: &str) -> Result<Folder>;

    /// The row with its history and controller state.
    async fn get_folder(&self, id: Uuid) -> Result<FolderDetail>;

    /// Rows whose status is one of `statuses`, and with `foreign` also those in statuses the
    /// controller does not own (live folders of an adopted table), oldest first.
    async fn list_folders(&self, statuses: &[Status], foreign: bool) -> Result<Vec<Folder>>;

    /// Writes a requested status (legal transitions only), with history, audit and event.
    async fn set_status(&self, req: &StatusRequest) -> Result<StatusChange>;

    /// Removes a `delete-error` row after manual cleanup; the audit entry stays.
    async fn forget(&self, id: Uuid, actor: &str) -> Result<()>;

    /// Audit entries, oldest first.
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>>;

    /// Rows per status (one grouped query), for metrics.
    async fn status_counts(&self) -> Result<Vec<(Status, i64)>>;

    // ----- controller ------------------------------------------------------------------

    /// Claims up to `limit` due rows in one statement (`FOR UPDATE SKIP LOCKED` on
    /// PostgreSQL). A row is due when it needs work of a [`WorkKind`], its lease is free or
    /// expired, and its `next_attempt_at` has passed.
    async fn claim_due(&self, req: &ClaimRequest) -> Result<Vec<Claim>>;

    /// Extends the lease and stores progress; `false` when `owner` no longer holds it.
    async fn renew_lease(
        &self,
        id: Uuid,
        owner: &str,
        lease: Duration,
        progress: Progress,
    ) -> Result<bool>;

    /// Releases one lease held by `owner` (no-op otherwise).
    async fn release_lease(&self, id: Uuid, owner: &str) -> Result<()>;

    /// Releases every lease held by `owner`; returns how many.
    async fn release_all_leases(&self, owner: &str) -> Result<u64>;

    /// `delete-ongoing → delete-complete` with the audit entry, in one transaction; clears
    /// attempts and the lease. `false` when `owner` lost the lease or the row moved on.
    async fn complete_removal(&self, id: Uuid, owner: &str, done: &Completion) -> Result<bool>;

    /// Records a transient failure: attempts + 1, `next_attempt_at`, the error text, lease
    /// released. Returns the new attempt count (`None` if `owner` lost the lease).
    async fn record_retry(
        &self,
        id: Uuid,
        owner: &str,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<Option<u32>>;

    /// `delete-ongoing → delete-error` with the error text in the state row and the audit
    /// entry. `false` when `owner` lost the lease or the row moved on.
    async fn fail_removal(&self, id: Uuid, owner: &str, error: &str) -> Result<bool>;

    /// Records that the data now is at `location` (trash move/restore), audits it and
    /// releases the lease. `false` when `owner` lost the lease.
    async fn record_location(&self, id: Uuid, owner: &str, location: Location) -> Result<bool>;

    /// The trash timer: `delete-pending` rows whose purge time (`purge_after`, else
    /// `status_changed + retention`) has passed → `delete-ongoing`, audited as
    /// `trash-timer`. At most `limit` rows; returns how many. Idempotent, safe on every
    /// replica at once.
    async fn purge_expired_trash(
        &self,
        retention: Duration,
        actor: &str,
        limit: u32,
    ) -> Result<u64>;

    /// History cleanup: `delete-complete` rows older than `retention` are removed (with
    /// their controller state), audited as `history-cleanup`. At most `limit` rows; returns
    /// how many. Idempotent, safe on every replica at once.
    async fn clean_history(&self, retention: Duration, actor: &str, limit: u32) -> Result<u64>;

    /// Age of the oldest row still waiting for each kind of work (`remove`: oldest
    /// `delete-ongoing`; `trash-timer`: most overdue `delete-pending`), for the SLO gauge.
    async fn oldest_unconverged(
        &self,
        trash_retention: Duration,
    ) -> Result<Vec<(&'static str, Duration)>>;

    /// Subscribes to status events; `None` on backends without notifications (SQLite).
    async fn subscribe(&self) -> Result<Option<EventStream>>;

    // ----- deleted rows (table `vfolder_tombstones`) --------------------------------------
    //
    // The real backends implement every method; the defaults (nothing to do, nothing
    // found) serve test doubles that keep no tombstones.

    /// Claims up to `limit` pending tombstones on `req.hosts` whose lease is free or
    /// expired and whose next attempt time has passed (the rules of [`Store::claim_due`]).
    async fn claim_tombstones(&self, _req: &ClaimRequest) -> Result<Vec<TombstoneClaim>> {
        Ok(Vec::new())
    }

    /// The pending tombstone of `id` whose lease `owner` holds: a removal that was running
    /// when its row was deleted inherits the row's lease there and carries on under it.
    async fn inherited_tombstone(&self, _id: Uuid, _owner: &str) -> Result<Option<i64>> {
        Ok(None)
    }

    /// Extends a tombstone's lease and stores progress; `false` when `owner` no longer
    /// holds it or a row with the same id exists again (the removal must stop).
    async fn renew_tombstone(
        &self,
        _seq: i64,
        _owner: &str,
        _lease: Duration,
        _progress: Progress,
    ) -> Result<bool> {
        Ok(false)
    }

    /// Ends a pending tombstone's removal with its audit entry, in one transaction, and
    /// releases the lease. `false` when `owner` lost the lease.
    async fn finish_tombstone(&self, _seq: i64, _owner: &str, _end: &TombstoneEnd) -> Result<bool> {
        Ok(false)
    }

    /// A transient failure of a tombstone's removal (see [`Store::record_retry`]).
    async fn retry_tombstone(
        &self,
        _seq: i64,
        _owner: &str,
        _error: &str,
        _next_attempt_at: DateTime<Utc>,
    ) -> Result<Option<u32>> {
        Ok(None)
    }

    /// Releases a tombstone's lease held by `owner` (no-op otherwise).
    async fn release_tombstone(&self, _seq: i64, _owner: &str) -> Result<()> {
        Ok(())
    }

    /// Removes tombstones older than `retention` whose removal is not pending (at most
    /// `limit`); returns how many. Their audit entries stay.
    async fn clean_tombstones(&self, _retention: Duration, _limit: u32) -> Result<u64> {
        Ok(0)
    }

    // ----- orphan scans ----------------------------------------------------------------

    /// The rows with these ids (any status), for a scan's look-up of one batch.
    async fn folders_by_ids(&self, _ids: &[Uuid]) -> Result<Vec<Folder>> {
        Ok(Vec::new())
    }

    /// The newest tombstone of each of these ids that has one.
    async fn latest_tombstones(&self, _ids: &[Uuid]) -> Result<Vec<Tombstone>> {
        Ok(Vec::new())
    }

    /// Up to `limit` rows on `host` with an id greater than `after`, in id order (a scan
    /// pages through a volume's rows in bounded memory).
    async fn folders_on_host(
        &self,
        _host: &str,
        _after: Option<Uuid>,
        _limit: u32,
    ) -> Result<Vec<Folder>> {
        Ok(Vec::new())
    }

    /// Records that a scan at `seen_at` saw these directories without a row: a new
    /// sighting starts at `seen_at`, a known one is extended. Returns them as recorded.
    async fn record_sightings(
        &self,
        _host: &str,
        _seen_at: DateTime<Utc>,
        _seen: &[NewSighting],
    ) -> Result<Vec<Sighting>> {
        Ok(Vec::new())
    }

    /// Ends a complete scan: every sighting on the host the scan did not see (last seen
    /// before `started_at`) is ended, and the totals are stored. Returns the ended count.
    async fn finish_scan(&self, _summary: &ScanSummary) -> Result<u64> {
        Ok(0)
    }

    /// Sightings on `host` that may be reclaimed now: first seen at least `grace` ago, seen
    /// by the latest complete scan and by at least two scans, with no row of that id now and
    /// no tombstone of it newer than the first sighting (a row that came and went meanwhile
    /// cancels it), and no pending removal of a tombstone of that id. At most `limit`.
    async fn due_orphans(
        &self,
        _host: &str,
        _grace: Duration,
        _limit: u32,
    ) -> Result<Vec<Sighting>> {
        Ok(Vec::new())
    }

    /// Records a reclaimed orphan: its audit entry (`orphan-reclaimed`, with the counts) and
    /// the end of its sighting, in one transaction.
    async fn record_reclaim(
        &self,
        _sighting: &Sighting,
        _done: &Completion,
        _actor: &str,
    ) -> Result<()> {
        Ok(())
    }

    /// The latest complete scan of every volume that has one.
    async fn scan_summaries(&self) -> Result<Vec<ScanSummary>> {
        Ok(Vec::new())
    }

    // ----- volume availability (table `vfolder_volume_state`) ---------------------------

    /// Records a replica's view of a volume's availability: one row per host, replaced by
    /// each write (the last writer wins). Both real backends store it; the default, for
    /// test doubles that keep no volume state, records nothing.
    async fn record_volume_state(&self, _state: &VolumeState) -> Result<()> {
        Ok(())
    }

    /// The last recorded availability of `host`, if any replica recorded one.
    async fn volume_state(&self, _host: &str) -> Result<Option<VolumeState>> {
        Ok(None)
    }
}

/// Opens the database named by `url` (`postgres://…`/`postgresql://…` or `sqlite://FILE`;
/// the SQLite file is created when missing and opened in WAL mode with a busy timeout).
/// Does not migrate.
pub async fn connect(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(postgres::PgStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(
            sqlite::SqliteStore::connect(url).await?,
        ))
    } else {
        Err(Error::UnsupportedUrl(url.to_owned()))
    }
}

/// Wraps a sqlx error with the operation that failed.
pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Database { context, source }
}

/// The prefix of the trigger's rejection message on both backends; the rest is
/// `<from> -> <to>`.
const TRIGGER_ILLEGAL_PREFIX: &str = "illegal vfolder status transition: ";

/// The partial unique index reserving a name per owner (same name on both backends).
const NAME_INDEX: &str = "vfolders_owner_name_live_key";

/// Maps an error of a statement that writes a status or a name: the trigger's rejection
/// (a concurrent writer changed the row between our check and our write) becomes
/// [`Error::IllegalTransition`], the name index's violation [`Error::NameTaken`].
pub(crate) fn write_err(
    id: Uuid,
    name: &str,
    context: &'static str,
) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| {
        if let Some(dbe) = source.as_database_error() {
            let msg = dbe.message();
            if let Some(rest) = msg
                .find(TRIGGER_ILLEGAL_PREFIX)
                .map(|at| &msg[at + TRIGGER_ILLEGAL_PREFIX.len()..])
            {
                let mut parts = rest.split(" -> ");
                let from = parts.next().and_then(|s| s.trim().parse::<Status>().ok());
                let to = parts.next().and_then(|s| s.trim().parse::<Status>().ok());
                if let (Some(from), Some(to)) = (from, to) {
                    return Error::IllegalTransition {
                        id,
                        source: IllegalTransition { from, to },
                    };
                }
            }
            let names_index = dbe.constraint() == Some(NAME_INDEX) || msg.contains(NAME_INDEX);
            if dbe.is_unique_violation() && names_index {
                return Error::NameTaken {
                    name: name.to_owned(),
                };
            }
        }
        Error::Database { context, source }
    }
}

/// A decoding failure of a stored value, reported like a query failure.
pub(crate) fn decode_err(context: &'static str, what: String) -> Error {
    Error::Database {
        context,
        source: sqlx::Error::Decode(what.into()),
    }
}

/// Parses the stored status of a row a lifecycle operation locked; a status the controller
/// does not own is [`Error::UnknownStatus`].
pub(crate) fn parse_status(id: Uuid, text: &str) -> Result<Status> {
    text.parse().map_err(|_| Error::UnknownStatus {
        id,
        status: text.to_owned(),
    })
}

/// Reads a `status_history` in whatever shape it is stored: a list of entries, the
/// platform's object `{"STATUS_NAME": time}` (entries in time order, the name shown in the
/// stored spelling, no actor), NULL, or something unreadable, which is kept raw and never
/// an error (a history is for people; it must not stop a command).
pub(crate) fn parse_history(value: Option<serde_json::Value>) -> (Vec<HistoryEntry>, HistoryShape) {
    use serde_json::Value;
    let unreadable = |v: &Value| (Vec::new(), HistoryShape::Unreadable(v.to_string()));
    match value {
        None | Some(Value::Null) => (Vec::new(), HistoryShape::Null),
        Some(v @ Value::Array(_)) => match serde_json::from_value::<Vec<HistoryEntry>>(v.clone()) {
            Ok(entries) => (entries, HistoryShape::List),
            Err(_) => unreadable(&v),
        },
        Some(Value::Object(map)) => {
            let mut entries = Vec::with_capacity(map.len());
            for (name, at) in &map {
                let Some(at) = at.as_str().and_then(parse_history_time) else {
                    return unreadable(&Value::Object(map));
                };
                entries.push(HistoryEntry {
                    status: name.to_ascii_lowercase().replace('_', "-"),
                    at,
                    actor: None,
                });
            }
            entries.sort_by_key(|e| e.at);
            (entries, HistoryShape::Object)
        }
        Some(other) => unreadable(&other),
    }
}

/// A history time: RFC 3339 (the platform's `isoformat()` with an offset), or a naive
/// ISO time, read as UTC.
fn parse_history_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
}

/// Parses a stored location text.
pub(crate) fn parse_location(text: &str) -> Result<Location> {
    match text {
        "live" => Ok(Location::Live),
        "trash" => Ok(Location::Trash),
        other => Err(decode_err(
            "reading controller state",
            format!("unknown location {other:?}"),
        )),
    }
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
    /// The text the claim queries compute (same as the serde name).
    pub const fn as_str(self) -> &'static str {
        match self {
            WorkKind::Remove => "remove",
            WorkKind::MoveToTrash => "move-to-trash",
            WorkKind::Restore => "restore",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self> {
        [WorkKind::Remove, WorkKind::MoveToTrash, WorkKind::Restore]
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| {
                decode_err(
                    "claiming due folders",
                    format!("unknown work kind {text:?}"),
                )
            })
    }
}

/// Saturating `u64 → i64` for counters stored in signed 64-bit columns.
pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Clamping `i64 → u64` for counters read back.
pub(crate) fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// One audit row to write; shared by both backends so every action records the same fields.
#[derive(Debug, Clone, Default)]
pub(crate) struct NewAudit<'a> {
    pub vfolder_id: Uuid,
    pub host: Option<&'a str>,
    pub name: Option<&'a str>,
    pub action: &'a str,
    pub from_status: Option<&'a str>,
    pub to_status: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub replica: Option<&'a str>,
    pub progress: Option<Progress>,
    pub duration_ms: Option<i64>,
    pub error: Option<&'a str>,
}

/// The audit entry of a tombstone's finished removal (both backends fill in the rest).
pub(crate) fn tombstone_audit(id: Uuid, end: &TombstoneEnd) -> NewAudit<'_> {
    match end {
        TombstoneEnd::Removed(done) => NewAudit {
            vfolder_id: id,
            action: "removed-after-row-deleted",
            progress: Some(done.progress),
            duration_ms: Some(millis(done.duration)),
            ..NewAudit::default()
        },
        TombstoneEnd::Failed(error) => NewAudit {
            vfolder_id: id,
            action: "remove-failed",
            error: Some(error),
            ..NewAudit::default()
        },
        TombstoneEnd::Superseded => NewAudit {
            vfolder_id: id,
            action: "tombstone-superseded",
            error: Some("a row with this id exists again; its data is that row's, nothing removed"),
            ..NewAudit::default()
        },
    }
}

/// The removal state a tombstone ends in.
pub(crate) fn tombstone_end_removal(end: &TombstoneEnd) -> TombstoneRemoval {
    match end {
        TombstoneEnd::Removed(_) => TombstoneRemoval::Removed,
        TombstoneEnd::Failed(_) => TombstoneRemoval::Failed,
        TombstoneEnd::Superseded => TombstoneRemoval::Superseded,
    }
}

/// The audit entry of a reclaimed orphan.
pub(crate) fn reclaim_audit<'a>(
    sighting: &'a Sighting,
    done: &Completion,
    actor: &'a str,
) -> NewAudit<'a> {
    NewAudit {
        vfolder_id: sighting.seen.vfolder_id,
        host: Some(&sighting.host),
        action: "orphan-reclaimed",
        actor: Some(actor),
        progress: Some(done.progress),
        duration_ms: Some(millis(done.duration)),
        ..NewAudit::default()
    }
}

/// Milliseconds for the audit log's `duration_ms`, saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The audit action of a finished trash move or restore.
pub(crate) fn location_action(location: Location) -> &'static str {
    match location {
        Location::Trash => "moved-to-trash",
        Location::Live => "restored-from-trash",
    }
}

/// Readiness: every embedded migration is applied with the same checksum.
pub(crate) fn compare_migrations(
    migrator: &sqlx::migrate::Migrator,
    applied: &[(i64, Vec<u8>)],
) -> Result<()> {
    for m in migrator.iter() {
        match applied.iter().find(|(v, _)| *v == m.version) {
            None => {
                return Err(Error::NotMigrated(format!(
                    "migration {} ({}) is not applied",
                    m.version, m.description
                )));
            }
            Some((_, sum)) if sum.as_slice() != &*m.checksum => {
                return Err(Error::NotMigrated(format!(
                    "migration {} ({}) was applied with a different checksum",
                    m.version, m.description
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Keeps the counts of the lifecycle's statuses. Statuses the controller does not own
/// (the platform's `mounted`, `error`, ...) are not counted: they are not its business and
/// their values are not a bounded label set.
pub(crate) fn known_counts(rows: Vec<(String, i64)>) -> Vec<(Status, i64)> {
    rows.into_iter()
        .filter_map(|(text, n)| match RowStatus::from_stored(&text) {
            RowStatus::Known(status) => Some((status, n)),
            RowStatus::Foreign(_) => {
                tracing::debug!(
                    status = text,
                    rows = n,
                    "vfolders in a status the controller does not own"
                );
                None
            }
        })
        .collect()
}

/// The SLO gauge's ages from seconds (negative or missing: nothing is waiting, zero).
pub(crate) fn ages(remove: Option<f64>, trash_timer: Option<f64>) -> Vec<(&'static str, Duration)> {
    let age =
        |s: Option<f64>| Duration::try_from_secs_f64(s.unwrap_or(0.0).max(0.0)).unwrap_or_default();
    vec![("remove", age(remove)), ("trash-timer", age(trash_timer))]
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
