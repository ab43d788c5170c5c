//! Database access: everything the rest of the program needs from the database.
//!
//! Layout (River's drivers are the model): the role traits [`Readiness`] (the health
//! endpoints), [`Admin`] (the CLI) and [`Work`] (the controller), which [`Store`] combines;
//! the rules of every multi-statement change written once in `rules.rs` over a transaction
//! with one method per statement; each row read once in `rows.rs`; and the two dialects,
//! `postgres.rs` and `sqlite.rs`, holding what truly differs (SQL text, column types, row
//! locking, LISTEN/NOTIFY, adoption). What a backend can do is asked of it
//! ([`Readiness::capabilities`]), never inferred from its name.
//!
//! Guarantees every implementation gives (the conformance suite in `tests/it/store.rs` runs the
//! same tests on both):
//! - Status changes go through the database trigger, which rejects illegal transitions,
//!   appends `{status, at, actor}` to `status_history` and sets `status_changed`; writing the
//!   status a row already has is a no-op (no history entry, no audit entry, no event).
//! - Every change made through the store is written to the audit log in the same
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
use uuid::Uuid;

use crate::lifecycle::{IllegalTransition, RowStatus, Status};

pub mod postgres;
mod rows;
mod rules;
pub mod schema;
pub mod sqlite;

pub use crate::model::{
    AuditAction, AuditEntry, AuditFilter, Claim, ClaimRequest, Completion, ControllerState, Counts,
    Folder, FolderDetail, HistoryEntry, HistoryShape, Location, NewFolder, NewSighting,
    ScanSummary, Sighting, StatusChange, StatusEvent, StatusRequest, Tombstone, TombstoneClaim,
    TombstoneEnd, TombstoneRemoval, VolumeState, WorkKind,
};
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
        action: AuditAction,
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

/// What a backend can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Status changes are announced ([`Work::subscribe`] yields events), so the loop can
    /// wait for them and poll rarely; without, it polls at `poll_interval`.
    pub notifications: bool,
    /// An embedded, single-process database that admin commands migrate on first use (zero
    /// set-up); a shared server must be migrated explicitly, so an admin command never
    /// changes a production schema as a side effect.
    pub embedded: bool,
}

/// Rows of one growing status (live, or `delete-complete` history) counted exactly before
/// [`Admin::status_counts`] may switch to an estimate: a bounded index-only count of this many
/// entries stays around a millisecond.
pub const EXACT_COUNT_LIMIT: i64 = 10_000;

/// The rows in one status, counted or estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StatusCount {
    /// The status.
    pub status: Status,
    /// How many rows are in it (or about how many, when not `exact`).
    pub rows: i64,
    /// `true`: counted. `false`: the query planner's estimate (PostgreSQL, live statuses and
    /// `delete-complete` above [`EXACT_COUNT_LIMIT`] rows), as fresh as the table's last
    /// `ANALYZE` scaled to its current size.
    pub exact: bool,
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Stream of status events; an `Err` item means the listener connection broke (the caller
/// resubscribes with backoff).
pub type EventStream = BoxStream<'static, Result<StatusEvent>>;

/// The name of the PostgreSQL NOTIFY channel carrying [`StatusEvent`] JSON payloads.
pub const EVENT_CHANNEL: &str = "vfolder_status";

/// Whether the database can serve: what the health endpoints need, and no more.
#[async_trait]
pub trait Readiness: Send + Sync + 'static {
    /// `postgres` or `sqlite` (for logs and messages; ask [`Readiness::capabilities`] what the
    /// backend can do).
    fn backend(&self) -> &'static str;

    /// What this backend can do, so callers ask instead of comparing names.
    fn capabilities(&self) -> Capabilities;

    /// Ok when the database answers and every embedded migration is applied (readiness).
    async fn check_ready(&self) -> Result<()>;
}

/// What the admin commands need: migrations, one folder's reads and requested changes, the
/// audit log.
#[async_trait]
pub trait Admin: Readiness {
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

    /// Rows per status of the lifecycle, for the `folders` gauge; a status without rows may
    /// be missing. Unfinished deletions ([`Status::is_unfinished_deletion`]: the trash,
    /// removals, failures) are always counted exactly. The others, which grow with the
    /// platform (live statuses) or with the history retention (`delete-complete`), are counted
    /// exactly up to [`EXACT_COUNT_LIMIT`] rows; a backend whose count would grow with them
    /// (PostgreSQL) reports a bigger one as the query planner's estimate, marked
    /// `exact: false`, so no periodic statement reads the whole live set or history.
    async fn status_counts(&self) -> Result<Vec<StatusCount>>;

    /// The last recorded availability of `host`, if any replica recorded one.
    async fn volume_state(&self, host: &str) -> Result<Option<VolumeState>>;
}

/// What the controller's loop needs: claims, leases, the outcomes of its work, the
/// periodic jobs and the wake-ups.
#[async_trait]
pub trait Work: Readiness {
    /// Claims up to `limit` due rows in one statement (`FOR UPDATE SKIP LOCKED` on
    /// PostgreSQL). A row is due when it needs work of a [`WorkKind`], its lease is free or
    /// expired, and its `next_attempt_at` has passed. Only rows in the statuses that create
    /// work ([`Status::creates_work`]: `delete-ongoing`, `delete-pending`, `ready`) can be
    /// due; the wake-up filter uses the same rule, so a status change that cannot make a row
    /// due never wakes the loop.
    async fn claim_due(&self, req: &ClaimRequest) -> Result<Vec<Claim>>;

    /// Extends the lease and stores progress; `false` when `owner` no longer holds it.
    async fn renew_lease(
        &self,
        id: Uuid,
        owner: &str,
        lease: Duration,
        progress: Counts,
    ) -> Result<bool>;

    /// Releases one lease held by `owner` (no-op otherwise).
    async fn release_lease(&self, id: Uuid, owner: &str) -> Result<()>;

    /// Releases every lease held by `owner`; returns how many.
    async fn release_all_leases(&self, owner: &str) -> Result<u64>;

    /// `delete-ongoing → delete-complete` with the audit entry, in one transaction; clears
    /// attempts and the lease. `false` when `owner` lost the lease or the row moved on.
    async fn complete_removal(&self, id: Uuid, owner: &str, done: &Completion) -> Result<bool> {
        let done = self.complete_removals(owner, &[(id, *done)]).await?;
        Ok(done.first().copied().unwrap_or(false))
    }

    /// [`Work::complete_removal`] for many folders in one transaction of a few statements
    /// that each cover the whole batch (the database round trips, not the removals, bound
    /// how fast small folders converge). Returns one flag per folder, in order; a folder's
    /// flag, history entry, audit entry and event depend on its own row alone: a lost lease
    /// is `false` for that folder only. An error fails the whole batch (nothing is written).
    async fn complete_removals(
        &self,
        owner: &str,
        done: &[(Uuid, Completion)],
    ) -> Result<Vec<bool>>;

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
    /// Times follow the timers' clock (nothing before an adoption counts). On PostgreSQL it
    /// reads the oldest few rows of each set off an index, not the whole trash or backlog.
    async fn oldest_unconverged(
        &self,
        trash_retention: Duration,
    ) -> Result<Vec<(&'static str, Duration)>>;

    /// Subscribes to status events; `None` on backends without notifications (SQLite).
    async fn subscribe(&self) -> Result<Option<EventStream>>;

    /// Rows parked because they cannot be read (see [`UnreadableRow`]), for the gauge.
    async fn unreadable_rows(&self) -> Result<i64>;

    // ----- deleted rows (table `vfolder_tombstones`) --------------------------------------
    //

    /// Claims up to `limit` pending tombstones on `req.hosts` whose lease is free or
    /// expired and whose next attempt time has passed (the rules of [`Work::claim_due`]).
    async fn claim_tombstones(&self, req: &ClaimRequest) -> Result<Vec<TombstoneClaim>>;

    /// The pending tombstone of `id` whose lease `owner` holds: a removal that was running
    /// when its row was deleted inherits the row's lease there and carries on under it.
    async fn inherited_tombstone(&self, id: Uuid, owner: &str) -> Result<Option<i64>>;

    /// Extends a tombstone's lease and stores progress; `false` when `owner` no longer
    /// holds it or a row with the same id exists again (the removal must stop).
    async fn renew_tombstone(
        &self,
        seq: i64,
        owner: &str,
        lease: Duration,
        progress: Counts,
    ) -> Result<bool>;

    /// Ends a pending tombstone's removal with its audit entry, in one transaction, and
    /// releases the lease. `false` when `owner` lost the lease.
    async fn finish_tombstone(&self, seq: i64, owner: &str, end: &TombstoneEnd) -> Result<bool>;

    /// A transient failure of a tombstone's removal (see [`Work::record_retry`]).
    async fn retry_tombstone(
        &self,
        seq: i64,
        owner: &str,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<Option<u32>>;

    /// Releases a tombstone's lease held by `owner` (no-op otherwise).
    async fn release_tombstone(&self, seq: i64, owner: &str) -> Result<()>;

    /// Removes tombstones older than `retention` whose removal is not pending (at most
    /// `limit`); returns how many. Their audit entries stay.
    async fn clean_tombstones(&self, retention: Duration, limit: u32) -> Result<u64>;

    // ----- orphan scans ----------------------------------------------------------------

    /// The rows with these ids (any status), for a scan's look-up of one batch.
    async fn folders_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Folder>>;

    /// The newest tombstone of each of these ids that has one.
    async fn latest_tombstones(&self, ids: &[Uuid]) -> Result<Vec<Tombstone>>;

    /// Up to `limit` rows on `host` with an id greater than `after`, in id order (a scan
    /// pages through a volume's rows in bounded memory).
    async fn folders_on_host(
        &self,
        host: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Folder>>;

    /// Records that a scan at `seen_at` saw these directories without a row: a new
    /// sighting starts at `seen_at`, a known one is extended. Returns them as recorded.
    async fn record_sightings(
        &self,
        host: &str,
        seen_at: DateTime<Utc>,
        seen: &[NewSighting],
    ) -> Result<Vec<Sighting>>;

    /// Ends a complete scan: every sighting on the host the scan did not see (last seen
    /// before `started_at`) is ended, and the totals are stored. Returns the ended count.
    async fn finish_scan(&self, summary: &ScanSummary) -> Result<u64>;

    /// Sightings on `host` that may be reclaimed now: first seen at least `grace` ago, seen
    /// by the latest complete scan and by at least two scans, with no row of that id now and
    /// no tombstone of it newer than the first sighting (a row that came and went meanwhile
    /// cancels it), and no pending removal of a tombstone of that id. At most `limit`.
    async fn due_orphans(&self, host: &str, grace: Duration, limit: u32) -> Result<Vec<Sighting>>;

    /// Records a reclaimed orphan: its audit entry (`orphan-reclaimed`, with the counts) and
    /// the end of its sighting, in one transaction.
    async fn record_reclaim(
        &self,
        sighting: &Sighting,
        done: &Completion,
        actor: &str,
    ) -> Result<()>;

    /// The latest complete scan of every volume that has one.
    async fn scan_summaries(&self) -> Result<Vec<ScanSummary>>;

    /// Records a replica's view of a volume's availability (table `vfolder_volume_state`):
    /// one row per host, replaced by each write (the last writer wins).
    async fn record_volume_state(&self, state: &VolumeState) -> Result<()>;
}

/// Everything the program needs from the database: each backend implements the three roles.
pub trait Store: Admin + Work {}

impl<T: Admin + Work> Store for T {}

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

impl WorkKind {
    /// The work kind the claim queries compute.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        WorkKind::ALL
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

impl TombstoneRemoval {
    /// The removal state stored in `vfolder_tombstones.removal`.
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

/// Saturating `u64 → i64` for counters stored in signed 64-bit columns.
pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Clamping `i64 → u64` for counters read back.
pub(crate) fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A row that cannot be decoded (an id or owner that is not a uuid, a timestamp in another
/// format, ...). One such row never stops the others: lists skip it with a warning naming
/// it, and a claim parks it for [`PARK_FOR`] with the reason in its controller state
/// (`parked_reason`, `last_error`), counted by the `unreadable_rows` gauge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableRow {
    /// The stored id, as text (it may be the unreadable part).
    pub id: String,
    /// What could not be read.
    pub reason: String,
}

/// How long a parked row waits before it is read again (an operator may have fixed it).
pub const PARK_FOR: Duration = Duration::from_secs(3600);

impl UnreadableRow {
    /// The text stored as the parked row's reason and last error.
    pub fn parked_reason(&self) -> String {
        format!(
            "row cannot be read, parked (read again every {}): {}",
            humantime::format_duration(PARK_FOR),
            self.reason
        )
    }

    /// Logs the row once, with its id.
    pub(crate) fn report(&self, during: &'static str) {
        tracing::error!(
            id = self.id,
            reason = self.reason,
            during,
            "skipping a vfolder row that cannot be read"
        );
    }
}

/// Decodes every row on its own: the rows that read, and those that do not.
pub(crate) fn decode_each<R, T>(
    rows: &[R],
    raw_id: impl Fn(&R) -> String,
    decode: impl Fn(&R) -> Result<T>,
) -> (Vec<T>, Vec<UnreadableRow>) {
    let mut good = Vec::with_capacity(rows.len());
    let mut bad = Vec::new();
    for row in rows {
        match decode(row) {
            Ok(item) => good.push(item),
            Err(e) => bad.push(UnreadableRow {
                id: raw_id(row),
                reason: e.to_string(),
            }),
        }
    }
    (good, bad)
}

/// One audit row to write; shared by both backends so every action records the same fields.
#[derive(Debug, Clone)]
pub(crate) struct NewAudit<'a> {
    pub vfolder_id: Uuid,
    pub host: Option<&'a str>,
    pub name: Option<&'a str>,
    pub action: AuditAction,
    pub from_status: Option<&'a str>,
    pub to_status: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub replica: Option<&'a str>,
    pub progress: Option<Counts>,
    pub duration_ms: Option<i64>,
    pub error: Option<&'a str>,
}

impl NewAudit<'_> {
    /// An entry of `action` on the folder `vfolder_id`, every other field empty.
    pub(crate) fn new(vfolder_id: Uuid, action: AuditAction) -> Self {
        NewAudit {
            vfolder_id,
            host: None,
            name: None,
            action,
            from_status: None,
            to_status: None,
            actor: None,
            replica: None,
            progress: None,
            duration_ms: None,
            error: None,
        }
    }
}

/// The audit entry of a tombstone's finished removal (both backends fill in the rest).
pub(crate) fn tombstone_audit(id: Uuid, end: &TombstoneEnd) -> NewAudit<'_> {
    match end {
        TombstoneEnd::Removed(done) => NewAudit {
            progress: Some(done.progress),
            duration_ms: Some(millis(done.duration)),
            ..NewAudit::new(id, AuditAction::RemovedAfterRowDeleted)
        },
        TombstoneEnd::Failed(error) => NewAudit {
            error: Some(error),
            ..NewAudit::new(id, AuditAction::RemoveFailed)
        },
        TombstoneEnd::Superseded => NewAudit {
            error: Some("a row with this id exists again; its data is that row's, nothing removed"),
            ..NewAudit::new(id, AuditAction::TombstoneSuperseded)
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
        host: Some(&sighting.host),
        actor: Some(actor),
        progress: Some(done.progress),
        duration_ms: Some(millis(done.duration)),
        ..NewAudit::new(sighting.seen.vfolder_id, AuditAction::OrphanReclaimed)
    }
}

/// Milliseconds for the audit log's `duration_ms`, saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The audit action of a finished trash move or restore.
pub(crate) fn location_action(location: Location) -> AuditAction {
    match location {
        Location::Trash => AuditAction::MovedToTrash,
        Location::Live => AuditAction::RestoredFromTrash,
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
