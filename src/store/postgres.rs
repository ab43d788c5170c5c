//! The PostgreSQL store: production backend, safe for several replicas at once.
//!
//! Claims use `FOR UPDATE OF v SKIP LOCKED` and an upsert of the controller state whose
//! `WHERE` guard re-checks the lease on the latest row version, so two replicas racing for
//! the same row under READ COMMITTED cannot both win: the loser's upsert updates nothing and
//! returns nothing. Status writes set the transaction-local `vfolder.actor` before updating,
//! so the trigger records who made the change.

use std::borrow::Cow;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sqlx::FromRow;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgListener, PgPoolOptions, PgRow};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::rows;
use super::rules::{self, Ended, Locked, LockedTombstone, Tx};
use super::schema::{self, ADDED, DuplicateName, MigrationPlan, Remap, Schema, UnadoptPlan};
use super::{
    Admin, AuditEntry, AuditFilter, Capabilities, Claim, ClaimRequest, Completion, ControllerState,
    Counts, EVENT_CHANNEL, Error, EventStream, Folder, FolderDetail, Location, NewAudit, NewFolder,
    NewSighting, Readiness, Result, ScanSummary, Sighting, StatusChange, StatusCount, StatusEvent,
    StatusRequest, Tombstone, TombstoneClaim, TombstoneEnd, TombstoneRemoval, Work, db,
    parse_history, parse_status, to_i64, write_err,
};
use super::{PARK_FOR, decode_each};
use crate::lifecycle::{self, SchemaMode, Status};

/// The embedded PostgreSQL migrations of a database whose `vfolders` this program created
/// (`migrations/postgres`).
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// The adoption of an existing table (`migrations/postgres-adopted`), which takes the place
/// of the own schema's first migrations, those that create `vfolders`.
static ADOPTION_BASE: Migrator = sqlx::migrate!("migrations/postgres-adopted");

/// The last own-schema migration that creates or rewrites `vfolders`; every later one runs
/// on adopted databases too.
const OWN_ONLY_THROUGH: i64 = 20261127000003;

/// The migrations of an adopted database: the adoption, then the shared ones.
static ADOPTED_MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| Migrator {
    migrations: Cow::Owned(
        ADOPTION_BASE
            .iter()
            .chain(MIGRATOR.iter().filter(|m| m.version > OWN_ONLY_THROUGH))
            .cloned()
            .collect(),
    ),
    ignore_missing: false,
    locking: true,
    no_tx: false,
});

/// The migrations of a database of this mode.
fn migrator(mode: SchemaMode) -> &'static Migrator {
    match mode {
        SchemaMode::Own => &MIGRATOR,
        SchemaMode::Adopted => &ADOPTED_MIGRATOR,
    }
}

/// One statement counting every status of the lifecycle: the unfinished deletions in full
/// (sets that drain, each an index-only count on `vfolders_status_changed_idx`), the live
/// statuses and `delete-complete` up to one row past [`super::EXACT_COUNT_LIMIT`], so its
/// cost grows with neither the live set nor the history.
/// The statuses are literals (not a parameter): the planner then prices each count from the
/// status's own statistics and keeps the index-only scan. They are this program's constant
/// spellings, which contain no quote.
static STATUS_COUNTS: LazyLock<String> = LazyLock::new(|| {
    let counts: Vec<String> = lifecycle::ALL
        .iter()
        .map(|status| {
            let s = status.as_str();
            if status.is_unfinished_deletion() {
                format!("('{s}', (SELECT count(*) FROM vfolders WHERE status = '{s}'))")
            } else {
                format!(
                    "('{s}', (SELECT count(*) FROM (SELECT 1 FROM vfolders WHERE status = '{s}' LIMIT {}) AS b))",
                    super::EXACT_COUNT_LIMIT + 1
                )
            }
        })
        .collect();
    format!(
        "SELECT status, n FROM (VALUES {}) AS c(status, n) WHERE n > 0 ORDER BY status",
        counts.join(", ")
    )
});

/// The columns (and their types) the controller reads and writes in `vfolders`; a table
/// without them is not the platform's and is not adopted.
const REQUIRED_COLUMNS: [(&str, &str); 10] = [
    ("id", "uuid"),
    ("host", "character varying"),
    ("quota_scope_id", "character varying"),
    ("name", "character varying"),
    ("user", "uuid"),
    ("group", "uuid"),
    ("status", "character varying"),
    ("status_history", "jsonb"),
    ("status_changed", "timestamp with time zone"),
    ("created_at", "timestamp with time zone"),
];

/// Columns of a [`Folder`], from `vfolders v`.
macro_rules! folder_columns {
    () => {
        // ownership_type is a native enum on the platform's table: read it as text.
        r#"v.id, v.host, v.quota_scope_id, v.name, v."user", v."group",
           v.ownership_type::text AS ownership_type, v.status, v.status_changed, v.created_at"#
    };
}

/// The trash timer's rule for which clock a folder `v` in the trash follows: true when it has
/// no purge time of its own, so its status time plus the retention applies. The timer and the
/// gauge of how overdue it is read the same rule.
macro_rules! without_own_purge_time {
    () => {
        "NOT EXISTS (SELECT 1 FROM vfolder_controller_state s
                     WHERE s.vfolder_id = v.id AND s.purge_after IS NOT NULL)"
    };
}

/// Columns of a [`ControllerState`], from `vfolder_controller_state s`.
macro_rules! state_columns {
    () => {
        r#"s.vfolder_id AS s_id, s.attempts::int8 AS attempts, s.next_attempt_at, s.last_error, s.lease_owner,
           s.lease_expires_at, s.files, s.dirs, s.symlinks, s.bytes, s.location, s.purge_after"#
    };
}

/// How long a pooled connection may sit unused before it is pinged on its way out of the
/// pool. A connection used moments ago is almost surely alive, and pinging it anyway costs
/// a round trip per statement.
const PING_IDLE: Duration = Duration::from_millis(500);

/// The PostgreSQL implementation of [`Store`](super::Store).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects a pool to `url` (does not migrate).
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect(url)
            .await
            .map_err(db("connecting to PostgreSQL"))?;
        Ok(Self { pool })
    }

    /// A transaction for the store's rules.
    async fn begin_tx(&self) -> Result<PgTx> {
        Ok(PgTx(self.begin().await?))
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.pool
            .begin()
            .await
            .map_err(db("starting a transaction"))
    }
}

/// What `detect` found: the mode, whether the table is still to be adopted, and the applied
/// migrations (version, checksum).
struct Found {
    mode: SchemaMode,
    adopted_at: Option<DateTime<Utc>>,
    adopting: bool,
    applied: Vec<(i64, Vec<u8>)>,
}

impl PgStore {
    /// Finds out which kind of database this is (see [`schema`] for the rules).
    async fn detect(&self) -> Result<Found> {
        let ctx = "finding out the schema mode";
        let (has_meta, has_bookkeeping, has_vfolders): (bool, bool, bool) = sqlx::query_as(
            "SELECT to_regclass('vfolder_controller_meta') IS NOT NULL,
                    to_regclass('_sqlx_migrations') IS NOT NULL,
                    to_regclass('vfolders') IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db(ctx))?;
        let applied: Vec<(i64, Vec<u8>)> = if has_bookkeeping {
            sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
                .map_err(db("reading applied migrations"))?
        } else {
            Vec::new()
        };
        let ran = |migrator: &Migrator| {
            migrator
                .iter()
                .next()
                .is_some_and(|first| applied.iter().any(|(v, _)| *v == first.version))
        };
        let mut adopted_at = None;
        let (mode, adopting) = if has_meta {
            let (text, at): (String, Option<DateTime<Utc>>) =
                sqlx::query_as("SELECT mode, adopted_at FROM vfolder_controller_meta")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db(ctx))?;
            adopted_at = at;
            let mode = if text == SchemaMode::Adopted.as_str() {
                SchemaMode::Adopted
            } else {
                SchemaMode::Own
            };
            (mode, false)
        } else if ran(&MIGRATOR) {
            (SchemaMode::Own, false)
        } else if ran(&ADOPTION_BASE) {
            (SchemaMode::Adopted, false)
        } else if has_vfolders {
            (SchemaMode::Adopted, true)
        } else {
            (SchemaMode::Own, false)
        };
        Ok(Found {
            mode,
            adopted_at,
            adopting,
            applied,
        })
    }

    /// Fills in what an adoption does to the rows, and refuses a table that is not the
    /// platform's (a column the controller needs is missing or of another type).
    async fn plan_adoption(&self, plan: &mut MigrationPlan) -> Result<()> {
        let ctx = "planning the adoption";
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_name = 'vfolders' AND table_schema = current_schema()",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db(ctx))?;
        let wrong: Vec<String> = REQUIRED_COLUMNS
            .iter()
            .filter(|(name, ty)| !columns.iter().any(|(n, t)| n == name && t == ty))
            .map(|(name, ty)| format!("{name} {ty}"))
            .collect();
        if !wrong.is_empty() {
            return Err(Error::NotAdoptable(format!(
                "the existing vfolders table lacks columns the controller needs (or has them with another type): {}",
                wrong.join(", ")
            )));
        }
        plan.adopting = true;
        plan.adds = ADDED.iter().map(|a| a.describe()).collect();
        plan.rows = sqlx::query_scalar("SELECT count(*) FROM vfolders")
            .fetch_one(&self.pool)
            .await
            .map_err(db(ctx))?;
        for (legacy, status) in lifecycle::LEGACY_SPELLINGS {
            let (rows, sample): (i64, Vec<Uuid>) = sqlx::query_as(
                "SELECT count(*), coalesce((array_agg(id ORDER BY id))[1:5], '{}')
                 FROM vfolders WHERE status = $1",
            )
            .bind(legacy)
            .fetch_one(&self.pool)
            .await
            .map_err(db(ctx))?;
            if rows > 0 {
                plan.remaps.push(Remap {
                    from: legacy.to_owned(),
                    to: status.as_str().to_owned(),
                    rows,
                    sample,
                });
            }
        }
        let pending_spellings: Vec<&str> = std::iter::once(Status::DeletePending.as_str())
            .chain(
                lifecycle::LEGACY_SPELLINGS
                    .iter()
                    .filter(|(_, s)| *s == Status::DeletePending)
                    .map(|(legacy, _)| *legacy),
            )
            .collect();
        let known: Vec<&str> = lifecycle::ALL
            .iter()
            .map(|s| s.as_str())
            .chain(lifecycle::LEGACY_SPELLINGS.iter().map(|(l, _)| *l))
            .collect();
        (plan.trash_clock_started, plan.history_clock_started) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = ANY($1)),
                    count(*) FILTER (WHERE status = 'delete-complete')
             FROM vfolders",
        )
        .bind(&pending_spellings)
        .fetch_one(&self.pool)
        .await
        .map_err(db(ctx))?;
        plan.foreign_statuses = sqlx::query_as(
            "SELECT coalesce(status, '(null)')::text, count(*) FROM vfolders
             WHERE status IS NULL OR NOT (status = ANY($1))
             GROUP BY 1 ORDER BY 2 DESC, 1",
        )
        .bind(&known)
        .fetch_all(&self.pool)
        .await
        .map_err(db(ctx))?;
        // Live or trashed folders of one owner sharing a name: what the own schema's name
        // index forbids. An adopted table keeps them; the operator hears of them.
        let groups: Vec<(Option<Uuid>, String, Vec<Uuid>, i64)> = sqlx::query_as(
            r#"SELECT coalesce("user", "group"), name::text, (array_agg(id ORDER BY id))[1:10],
                      count(*) OVER ()
               FROM vfolders
               WHERE status IS NULL OR status NOT IN ('delete-complete', 'delete-error')
               GROUP BY 1, 2 HAVING count(*) > 1
               ORDER BY 2, 1 LIMIT 5"#,
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db(ctx))?;
        plan.duplicate_groups = groups.first().map_or(0, |g| g.3);
        plan.duplicates = groups
            .into_iter()
            .map(|(owner, name, ids, _)| DuplicateName { owner, name, ids })
            .collect();
        Ok(())
    }
}

/// The stored id of a row as text, for naming a row that cannot be read.
fn raw_id(row: &PgRow) -> String {
    row.try_get::<Uuid, _>("id")
        .map(|id| id.to_string())
        .unwrap_or_default()
}

/// PostgreSQL's column types for the rows of [`rows`]: uuid, timestamptz, text.
type Folders = rows::FolderRow<Uuid, DateTime<Utc>, String>;

/// A claimed row with its work kind and state.
fn claim_from_row(row: &PgRow) -> Result<Claim> {
    rows::ClaimRow::<Uuid, DateTime<Utc>, String>::from_row(row)
        .map_err(db("claiming due folders"))?
        .into_claim()
}

fn folder_from_row(row: &PgRow) -> Result<Folder> {
    Folders::from_row(row)
        .map_err(db("reading a vfolder row"))?
        .into_folder()
}

/// A locked row, for the rules' checks and the audit entry.
fn locked(id: Uuid, row: &PgRow) -> Result<Locked> {
    let ctx = "reading a vfolder row";
    let status: String = row.try_get("status").map_err(db(ctx))?;
    Ok(Locked {
        status: parse_status(id, &status)?,
        host: row.try_get("host").map_err(db(ctx))?,
        name: row.try_get("name").map_err(db(ctx))?,
    })
}

fn state_from_row(row: &PgRow) -> Result<Option<ControllerState>> {
    rows::StateRow::<Uuid, DateTime<Utc>>::from_row(row)
        .map_err(db("reading controller state"))?
        .into_state()
}

fn audit_from_row(row: &PgRow) -> Result<AuditEntry> {
    rows::AuditRow::<Uuid, DateTime<Utc>>::from_row(row)
        .map_err(db("reading the audit log"))?
        .into_entry()
}

/// Columns of a [`Tombstone`], from `vfolder_tombstones t`.
macro_rules! tombstone_columns {
    () => {
        r#"t.seq, t.vfolder_id, t.host, t.quota_scope_id, t.name, t.status, t.actor, t.cause,
           t.deleted_at, t.removal, t.attempts, t.last_error, t.files, t.dirs, t.symlinks,
           t.bytes, t.finished_at"#
    };
}

fn tombstone_from_row(row: &PgRow) -> Result<Tombstone> {
    rows::TombstoneRow::<Uuid, DateTime<Utc>, i32>::from_row(row)
        .map_err(db("reading a tombstone"))?
        .into_tombstone()
}

fn sighting_from_row(row: &PgRow) -> Result<Sighting> {
    rows::SightingRow::<Uuid, DateTime<Utc>, i32>::from_row(row)
        .map_err(db("reading an orphan sighting"))?
        .into_sighting()
}

fn scan_from_row(row: &PgRow) -> Result<ScanSummary> {
    rows::ScanRow::<DateTime<Utc>>::from_row(row)
        .map_err(db("reading a scan summary"))?
        .into_summary()
}

/// Names the controller's own row deletion for the tombstone trigger, for the rest of the
/// transaction: it writes the tombstone, and leaves the audit entry to the caller.
async fn set_delete_action(conn: &mut PgConnection, action: &str) -> Result<()> {
    sqlx::query("SELECT set_config('vfolder.delete_action', $1, true)")
        .bind(action)
        .execute(conn)
        .await
        .map_err(db("naming the deletion"))?;
    Ok(())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

async fn insert_audits<'a>(conn: &mut PgConnection, audits: &[NewAudit<'a>]) -> Result<()> {
    // One statement for any number of entries: the columns go as arrays, zipped by unnest.
    let column = |f: fn(&NewAudit<'a>) -> Option<&'a str>| -> Vec<Option<&'a str>> {
        audits.iter().map(f).collect()
    };
    let count = |f: fn(Counts) -> u64| -> Vec<Option<i64>> {
        audits
            .iter()
            .map(|a| a.progress.map(|p| to_i64(f(p))))
            .collect()
    };
    sqlx::query(
        "INSERT INTO vfolder_audit (vfolder_id, host, name, action, from_status, to_status, actor,
             replica, files, dirs, symlinks, bytes, duration_ms, error)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
             $6::text[], $7::text[], $8::text[], $9::int8[], $10::int8[], $11::int8[],
             $12::int8[], $13::int8[], $14::text[])",
    )
    .bind(audits.iter().map(|a| a.vfolder_id).collect::<Vec<_>>())
    .bind(column(|a| a.host))
    .bind(column(|a| a.name))
    .bind(column(|a| Some(a.action.as_str())))
    .bind(column(|a| a.from_status))
    .bind(column(|a| a.to_status))
    .bind(column(|a| a.actor))
    .bind(column(|a| a.replica))
    .bind(count(|p| p.files))
    .bind(count(|p| p.dirs))
    .bind(count(|p| p.symlinks))
    .bind(count(|p| p.bytes))
    .bind(audits.iter().map(|a| a.duration_ms).collect::<Vec<_>>())
    .bind(column(|a| a.error))
    .execute(conn)
    .await
    .map_err(db("writing the audit log"))?;
    Ok(())
}

/// Sets the actor the trigger records, for the rest of the transaction.
async fn set_actor(conn: &mut PgConnection, actor: &str) -> Result<()> {
    sqlx::query("SELECT set_config('vfolder.actor', $1, true)")
        .bind(actor)
        .execute(conn)
        .await
        .map_err(db("setting the actor"))?;
    Ok(())
}

/// A PostgreSQL transaction, with the statements the store's rules need ([`rules::Tx`]).
/// Rows are locked with `FOR UPDATE`; the actor is the transaction-local `vfolder.actor`.
pub(crate) struct PgTx(sqlx::Transaction<'static, sqlx::Postgres>);

#[async_trait]
impl Tx for PgTx {
    async fn lock_folder(&mut self, id: Uuid) -> Result<Locked> {
        let row = sqlx::query("SELECT status, host, name FROM vfolders WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *self.0)
            .await
            .map_err(db("locking a vfolder row"))?
            .ok_or(Error::NotFound(id))?;
        locked(id, &row)
    }

    async fn lock_leased(&mut self, ids: &[Uuid], owner: &str) -> Result<Vec<(Uuid, Locked)>> {
        let rows = sqlx::query(
            "SELECT v.id, v.status, v.host, v.name FROM vfolders v
             JOIN vfolder_controller_state s ON s.vfolder_id = v.id
             WHERE v.id = ANY($1) AND s.lease_owner = $2
             ORDER BY v.id FOR UPDATE OF v, s",
        )
        .bind(ids)
        .bind(owner)
        .fetch_all(&mut *self.0)
        .await
        .map_err(db("locking leased vfolder rows"))?;
        rows.iter()
            .map(|row| {
                let id: Uuid = row.try_get("id").map_err(db("reading a vfolder row"))?;
                Ok((id, locked(id, row)?))
            })
            .collect()
    }

    async fn write_status(&mut self, rows: &[(Uuid, &str)], to: Status, actor: &str) -> Result<()> {
        let Some(&(first, name)) = rows.first() else {
            return Ok(());
        };
        // The statement sets the actor itself, saving a round trip on every batch of
        // completions: each row passes the WHERE clause before its update fires the status
        // trigger that reads `vfolder.actor`, and `set_config` is volatile, so it is
        // evaluated there, row by row, never hoisted or folded away.
        sqlx::query(
            "UPDATE vfolders SET status = $2
             WHERE id = ANY($1) AND set_config('vfolder.actor', $3, true) IS NOT NULL",
        )
        .bind(rows.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(to.as_str())
        .bind(actor)
        .execute(&mut *self.0)
        .await
        .map_err(write_err(first, name, "writing a vfolder status"))?;
        Ok(())
    }

    async fn insert_folder(&mut self, new: &NewFolder, actor: &str) -> Result<Folder> {
        set_actor(&mut self.0, actor).await?;
        let row = sqlx::query(concat!(
            r#"INSERT INTO vfolders AS v (id, host, quota_scope_id, name, "user", "group", ownership_type)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING "#,
            folder_columns!()
        ))
        .bind(new.id)
        .bind(&new.host)
        .bind(&new.quota_scope_id)
        .bind(&new.name)
        .bind(new.user)
        .bind(new.group)
        .bind(&new.ownership_type)
        .fetch_one(&mut *self.0)
        .await
        .map_err(write_err(new.id, &new.name, "inserting a vfolder"))?;
        folder_from_row(&row)
    }

    async fn delete_folder(&mut self, id: Uuid, actor: &str, action: &str) -> Result<()> {
        set_actor(&mut self.0, actor).await?;
        set_delete_action(&mut self.0, action).await?;
        sqlx::query("DELETE FROM vfolders WHERE id = $1")
            .bind(id)
            .execute(&mut *self.0)
            .await
            .map_err(db("deleting a vfolder row"))?;
        Ok(())
    }

    async fn note_status_change(
        &mut self,
        id: Uuid,
        from: Status,
        to: Status,
        purge_after: Option<DateTime<Utc>>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO vfolder_controller_state (vfolder_id, purge_after)
             VALUES ($1, CASE WHEN $2 = 'delete-pending' THEN $4::timestamptz END)
             ON CONFLICT (vfolder_id) DO UPDATE SET
                 purge_after = CASE WHEN $2 = 'delete-pending' THEN $4::timestamptz
                                    WHEN $2 = 'ready' THEN NULL
                                    ELSE vfolder_controller_state.purge_after END,
                 attempts = CASE WHEN $3 = 'delete-error' THEN 0
                                 ELSE vfolder_controller_state.attempts END,
                 next_attempt_at = CASE WHEN $3 = 'delete-error' THEN NULL
                                        ELSE vfolder_controller_state.next_attempt_at END,
                 updated_at = now()",
        )
        .bind(id)
        .bind(to.as_str())
        .bind(from.as_str())
        .bind(purge_after)
        .execute(&mut *self.0)
        .await
        .map_err(db("updating controller state"))?;
        Ok(())
    }

    async fn finish_state(&mut self, ended: &[Ended<'_>], complete: bool) -> Result<()> {
        let count = |f: fn(Counts) -> u64| -> Vec<i64> {
            ended.iter().map(|e| to_i64(f(e.progress))).collect()
        };
        sqlx::query(
            "UPDATE vfolder_controller_state s SET lease_owner = NULL, lease_expires_at = NULL,
                 attempts = CASE WHEN $2 THEN 0 ELSE s.attempts END,
                 next_attempt_at = NULL, last_error = e.error,
                 files = e.files, dirs = e.dirs, symlinks = e.symlinks, bytes = e.bytes,
                 updated_at = now()
             FROM unnest($1::uuid[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::int8[])
                 AS e(id, error, files, dirs, symlinks, bytes)
             WHERE s.vfolder_id = e.id",
        )
        // Planned for each batch rather than once per connection: a plan cached while the
        // state table was small (a fresh install, a burst of claims) keeps scanning all of
        // it and hashing it against the batch as it grows, 1 ms per batch at 10,000 rows,
        // 0.1 ms planned afresh (an index lookup per folder).
        .persistent(false)
        .bind(ended.iter().map(|e| e.id).collect::<Vec<_>>())
        .bind(complete)
        .bind(ended.iter().map(|e| e.error).collect::<Vec<_>>())
        .bind(count(|p| p.files))
        .bind(count(|p| p.dirs))
        .bind(count(|p| p.symlinks))
        .bind(count(|p| p.bytes))
        .execute(&mut *self.0)
        .await
        .map_err(db("updating controller state"))?;
        Ok(())
    }

    async fn set_location(&mut self, id: Uuid, location: Location) -> Result<()> {
        sqlx::query(
            "UPDATE vfolder_controller_state
             SET location = $2, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
             WHERE vfolder_id = $1",
        )
        .bind(id)
        .bind(location.as_str())
        .execute(&mut *self.0)
        .await
        .map_err(db("recording a location"))?;
        Ok(())
    }

    async fn lock_tombstone(&mut self, seq: i64, owner: &str) -> Result<Option<LockedTombstone>> {
        let row: Option<(Uuid, Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT vfolder_id, host, left(name, 64), status FROM vfolder_tombstones
             WHERE seq = $1 AND lease_owner = $2 AND removal = 'pending' FOR UPDATE",
        )
        .bind(seq)
        .bind(owner)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(db("locking a tombstone"))?;
        Ok(row.map(|(vfolder_id, host, name, status)| LockedTombstone {
            vfolder_id,
            host,
            name,
            status,
        }))
    }

    async fn finish_tombstone_state(
        &mut self,
        seq: i64,
        removal: TombstoneRemoval,
        error: Option<&str>,
        counts: Counts,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE vfolder_tombstones
             SET removal = $2, last_error = $3, lease_owner = NULL, lease_expires_at = NULL,
                 next_attempt_at = NULL, finished_at = now(),
                 files = $4, dirs = $5, symlinks = $6, bytes = $7
             WHERE seq = $1",
        )
        .bind(seq)
        .bind(removal.as_str())
        .bind(error)
        .bind(to_i64(counts.files))
        .bind(to_i64(counts.dirs))
        .bind(to_i64(counts.symlinks))
        .bind(to_i64(counts.bytes))
        .execute(&mut *self.0)
        .await
        .map_err(db("finishing a tombstone"))?;
        Ok(())
    }

    async fn end_sighting(&mut self, host: &str, path: &str) -> Result<()> {
        sqlx::query("DELETE FROM vfolder_orphan_sightings WHERE host = $1 AND path = $2")
            .bind(host)
            .bind(path)
            .execute(&mut *self.0)
            .await
            .map_err(db("ending a reclaimed sighting"))?;
        Ok(())
    }

    async fn insert_audits(&mut self, audits: &[NewAudit<'_>]) -> Result<()> {
        insert_audits(&mut self.0, audits).await
    }

    async fn commit(self, context: &'static str) -> Result<()> {
        self.0.commit().await.map_err(db(context))
    }
}

#[async_trait]
impl Readiness for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            notifications: true,
            embedded: false,
        }
    }

    async fn check_ready(&self) -> Result<()> {
        let found = self.detect().await?;
        if found.applied.is_empty() {
            return Err(Error::NotMigrated("no migration has been applied".into()));
        }
        super::compare_migrations(migrator(found.mode), &found.applied)
    }
}

#[async_trait]
impl Admin for PgStore {
    async fn plan_migration(&self) -> Result<MigrationPlan> {
        let found = self.detect().await?;
        let applied: Vec<i64> = found.applied.iter().map(|(v, _)| *v).collect();
        let pending = schema::pending(migrator(found.mode), &applied);
        let mut plan = MigrationPlan::schema_only(self.backend(), found.mode, pending);
        if found.adopting {
            self.plan_adoption(&mut plan).await?;
        }
        Ok(plan)
    }

    async fn migrate(&self, adopt: bool) -> Result<MigrationPlan> {
        let plan = self.plan_migration().await?;
        if plan.adopting && !adopt {
            return Err(Error::AdoptionRequired { rows: plan.rows });
        }
        // The shared migrations read the mode from this session setting (see
        // migrations/postgres/20261128000010_schema_mode.sql), so they run on this connection.
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(db("connecting to migrate"))?;
        sqlx::query("SELECT set_config('vfolder.schema_mode', $1, false)")
            .bind(plan.mode.as_str())
            .execute(&mut *conn)
            .await
            .map_err(db("setting the schema mode"))?;
        let ran = migrator(plan.mode).run_direct(&mut *conn).await;
        // A pooled connection must not keep the setting.
        conn.close_on_drop();
        ran?;
        Ok(plan)
    }

    async fn unadopt(&self, dry_run: bool, force: bool) -> Result<UnadoptPlan> {
        let found = self.detect().await?;
        if found.mode != SchemaMode::Adopted || found.adopting {
            return Err(Error::NotAdopted(
                if found.adopting || found.applied.is_empty() {
                    "vfolder-controller has not adopted this database; there is nothing to remove"
                        .to_owned()
                } else {
                    "vfolder-controller created this database's vfolders table (own mode); unadopt \
                 only gives an adopted table back to the platform that created it"
                        .to_owned()
                },
            ));
        }
        let (leased, holder): (i64, Option<String>) = sqlx::query_as(
            "SELECT count(*), min(lease_owner) FROM vfolder_controller_state
             WHERE lease_owner IS NOT NULL AND lease_expires_at > now()",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db("reading leases"))?;
        if leased > 0 && !force {
            return Err(Error::ControllerRunning(leased, holder.unwrap_or_default()));
        }
        let (audit_entries, delete_ongoing): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM vfolder_audit),
                    (SELECT count(*) FROM vfolders WHERE status = 'delete-ongoing')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db("counting what unadopt leaves"))?;
        let plan = UnadoptPlan {
            drops: ADDED.iter().map(|a| a.drop_sql()).collect(),
            audit_entries,
            delete_ongoing,
        };
        if dry_run {
            return Ok(plan);
        }
        let mut tx = self.begin().await?;
        // Fail rather than queue the platform's writes behind a lock on vfolders.
        sqlx::query("SET LOCAL lock_timeout = '5s'")
            .execute(&mut *tx)
            .await
            .map_err(db("setting the lock timeout"))?;
        for statement in &plan.drops {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(db("removing what the controller added"))?;
        }
        tx.commit().await.map_err(db("committing unadopt"))?;
        Ok(plan)
    }

    async fn schema(&self) -> Result<Schema> {
        let found = self.detect().await?;
        Ok(Schema {
            mode: found.mode,
            adopted_at: found.adopted_at,
        })
    }

    async fn create_folder(&self, new: &NewFolder, actor: &str) -> Result<Folder> {
        let mode = self.detect().await?.mode;
        rules::create_folder(self.begin_tx().await?, mode, new, actor).await
    }

    async fn get_folder(&self, id: Uuid) -> Result<FolderDetail> {
        let row = sqlx::query(concat!(
            "SELECT ",
            folder_columns!(),
            ", v.status_history, ",
            state_columns!(),
            " FROM vfolders v LEFT JOIN vfolder_controller_state s ON s.vfolder_id = v.id
              WHERE v.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a vfolder"))?
        .ok_or(Error::NotFound(id))?;
        let history: Option<serde_json::Value> = row
            .try_get("status_history")
            .map_err(db("reading status_history"))?;
        let (history, history_shape) = parse_history(history);
        Ok(FolderDetail {
            folder: folder_from_row(&row)?,
            history,
            history_shape,
            state: state_from_row(&row)?,
        })
    }

    async fn list_folders(&self, statuses: &[Status], foreign: bool) -> Result<Vec<Folder>> {
        let wanted: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let known: Vec<&str> = lifecycle::ALL.iter().map(|s| s.as_str()).collect();
        let rows = sqlx::query(concat!(
            "SELECT ",
            folder_columns!(),
            " FROM vfolders v WHERE v.status = ANY($1) OR ($2 AND NOT (v.status = ANY($3)))
              ORDER BY v.created_at, v.id"
        ))
        .bind(&wanted)
        .bind(foreign)
        .bind(&known)
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing vfolders"))?;
        let (folders, unreadable) = decode_each(&rows, raw_id, folder_from_row);
        for bad in &unreadable {
            bad.report("listing");
        }
        Ok(folders)
    }

    async fn set_status(&self, req: &StatusRequest) -> Result<StatusChange> {
        rules::set_status(self.begin_tx().await?, req).await
    }

    async fn forget(&self, id: Uuid, actor: &str) -> Result<()> {
        rules::forget(self.begin_tx().await?, id, actor).await
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT * FROM (
                 SELECT * FROM vfolder_audit
                 WHERE ($1::uuid IS NULL OR vfolder_id = $1)
                   AND ($2::timestamptz IS NULL OR at >= $2)
                 ORDER BY seq DESC LIMIT $3) AS newest
             ORDER BY seq",
        )
        .bind(filter.id)
        .bind(filter.since)
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading the audit log"))?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn status_counts(&self) -> Result<Vec<StatusCount>> {
        // Stale statistics (a burst of rows since the last ANALYZE) can price one of the
        // counts high enough for JIT compilation, which costs more than the count itself;
        // and EXPLAIN compiles too, although it runs nothing. Sent with the BEGIN, as the
        // claim's settings are.
        let mut tx = self
            .pool
            .begin_with("BEGIN; SET LOCAL jit = off")
            .await
            .map_err(db("starting the status counts"))?;
        let rows: Vec<(String, i64)> = sqlx::query_as(&STATUS_COUNTS)
            .fetch_all(&mut *tx)
            .await
            .map_err(db("counting vfolders per status"))?;
        let mut counts = Vec::new();
        for (status, n) in super::known_counts(rows) {
            if status.is_unfinished_deletion() || n <= super::EXACT_COUNT_LIMIT {
                counts.push(StatusCount {
                    status,
                    rows: n,
                    exact: true,
                });
                continue;
            }
            // The bounded count stopped: ask the planner instead of reading the live set.
            // Its estimate is the last ANALYZE's share of this status scaled to the table's
            // current size; never report less than the rows just seen.
            let plan: serde_json::Value = sqlx::query_scalar(&format!(
                "EXPLAIN (FORMAT JSON) SELECT 1 FROM vfolders WHERE status = '{}'",
                status.as_str()
            ))
            .fetch_one(&mut *tx)
            .await
            .map_err(db("estimating vfolders per status"))?;
            let estimate = plan[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0);
            counts.push(StatusCount {
                status,
                // `as` saturates; an estimate beyond i64 is not a concern.
                rows: (estimate.round() as i64).max(n),
                exact: false,
            });
        }
        tx.commit()
            .await
            .map_err(db("committing the status counts"))?;
        Ok(counts)
    }

    async fn volume_state(&self, host: &str) -> Result<Option<super::VolumeState>> {
        volume_state(&self.pool, host).await
    }
}

#[async_trait]
impl Work for PgStore {
    async fn claim_due(&self, req: &ClaimRequest) -> Result<Vec<Claim>> {
        // The claim is a function of the schema's (migration 20261129200000_claim_function,
        // which says why it is written as it is): its planner settings are the function's
        // own, so one statement outside a transaction block does what took a transaction of
        // three round trips, and a connection pooler sees no setting to carry over.
        let rows = sqlx::query("SELECT * FROM vfolder_controller_claim($1, $2, $3, $4, $5, $6)")
            .bind(&req.hosts)
            .bind(&req.move_hosts)
            .bind(&req.exclude)
            .bind(i64::from(req.limit))
            .bind(&req.owner)
            .bind(secs(req.lease))
            .fetch_all(&self.pool)
            .await
            .map_err(db("claiming due folders"))?;
        let (claims, unreadable) = decode_each(&rows, raw_id, claim_from_row);
        for bad in &unreadable {
            bad.report("claiming");
            sqlx::query(
                "UPDATE vfolder_controller_state
                 SET lease_owner = NULL, lease_expires_at = NULL,
                     next_attempt_at = now() + make_interval(secs => $2),
                     last_error = $3, parked_reason = $3, updated_at = now()
                 WHERE vfolder_id = $1::uuid",
            )
            .bind(&bad.id)
            .bind(secs(PARK_FOR))
            .bind(bad.parked_reason())
            .execute(&self.pool)
            .await
            .map_err(db("parking an unreadable row"))?;
        }
        Ok(claims)
    }

    async fn renew_lease(
        &self,
        id: Uuid,
        owner: &str,
        lease: Duration,
        progress: Counts,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE vfolder_controller_state
             SET lease_expires_at = now() + make_interval(secs => $3),
                 files = $4, dirs = $5, symlinks = $6, bytes = $7, updated_at = now()
             WHERE vfolder_id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(secs(lease))
        .bind(to_i64(progress.files))
        .bind(to_i64(progress.dirs))
        .bind(to_i64(progress.symlinks))
        .bind(to_i64(progress.bytes))
        .execute(&self.pool)
        .await
        .map_err(db("renewing a lease"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_lease(&self, id: Uuid, owner: &str) -> Result<()> {
        sqlx::query(
            "UPDATE vfolder_controller_state
             SET lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
             WHERE vfolder_id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(db("releasing a lease"))?;
        Ok(())
    }

    async fn release_all_leases(&self, owner: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE vfolder_controller_state
             SET lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
             WHERE lease_owner = $1",
        )
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(db("releasing leases"))?;
        let tombstones = sqlx::query(
            "UPDATE vfolder_tombstones SET lease_owner = NULL, lease_expires_at = NULL
             WHERE lease_owner = $1",
        )
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(db("releasing tombstone leases"))?;
        Ok(done.rows_affected() + tombstones.rows_affected())
    }

    async fn complete_removals(
        &self,
        owner: &str,
        done: &[(Uuid, Completion)],
    ) -> Result<Vec<bool>> {
        rules::complete_removals(self.begin_tx().await?, owner, done).await
    }

    async fn record_retry(
        &self,
        id: Uuid,
        owner: &str,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<Option<u32>> {
        let attempts: Option<i32> = sqlx::query_scalar(
            "UPDATE vfolder_controller_state
             SET attempts = attempts + 1, next_attempt_at = $3, last_error = $4,
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
             WHERE vfolder_id = $1 AND lease_owner = $2
             RETURNING attempts",
        )
        .bind(id)
        .bind(owner)
        .bind(next_attempt_at)
        .bind(error)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("recording a retry"))?;
        Ok(attempts.map(|a| u32::try_from(a).unwrap_or(0)))
    }

    async fn fail_removal(&self, id: Uuid, owner: &str, error: &str) -> Result<bool> {
        rules::fail_removal(self.begin_tx().await?, id, owner, error).await
    }

    async fn record_location(&self, id: Uuid, owner: &str, location: Location) -> Result<bool> {
        rules::record_location(self.begin_tx().await?, id, owner, location).await
    }

    async fn purge_expired_trash(
        &self,
        retention: Duration,
        actor: &str,
        limit: u32,
    ) -> Result<u64> {
        let mut tx = self.begin().await?;
        set_actor(&mut tx, actor).await?;
        // An unknown time on an own table (a writer set status_changed to NULL) starts when
        // the controller first sees the row: stamped now, the full retention follows. An
        // adopted table counts it from the adoption instead, without writing the platform's
        // column. The trigger does not fire: the status stays.
        sqlx::query(
            "UPDATE vfolders SET status_changed = now()
             WHERE status IN ('delete-pending', 'delete-complete') AND status_changed IS NULL
               AND NOT EXISTS (SELECT 1 FROM vfolder_controller_meta WHERE mode = 'adopted')",
        )
        .execute(&mut *tx)
        .await
        .map_err(db("stamping unknown status times"))?;
        let done = sqlx::query(concat!(
            "WITH clock AS (
                 -- On an adopted table a time before the adoption is not trusted: every
                 -- folder's clock starts at the adoption at the earliest (NULL: unknown,
                 -- counted from the adoption). An own table trusts status_changed, which its
                 -- trigger always stamped.
                 SELECT (SELECT adopted_at FROM vfolder_controller_meta) AS adopted_at
             ), by_age AS (
                 -- In status_changed order straight off the (status, status_changed) index;
                 -- folders with their own purge time wait for it instead.
                 SELECT v.id, greatest(v.status_changed, c.adopted_at) AS due_at
                 FROM vfolders v CROSS JOIN clock c
                 WHERE v.status = 'delete-pending'
                   AND (v.status_changed <= now() - make_interval(secs => $1)
                        OR (v.status_changed IS NULL AND c.adopted_at IS NOT NULL))
                   AND (c.adopted_at IS NULL OR c.adopted_at <= now() - make_interval(secs => $1))
                   AND ",
            without_own_purge_time!(),
            "
                 ORDER BY v.status_changed
                 LIMIT $2
                 FOR UPDATE OF v SKIP LOCKED
             ), by_purge_after AS (
                 SELECT v.id, s.purge_after AS due_at
                 FROM vfolder_controller_state s JOIN vfolders v ON v.id = s.vfolder_id
                 WHERE s.purge_after <= now() AND v.status = 'delete-pending'
                 ORDER BY s.purge_after
                 LIMIT $2
                 FOR UPDATE OF v SKIP LOCKED
             ), due AS (
                 SELECT id FROM (SELECT * FROM by_age UNION ALL SELECT * FROM by_purge_after) AS d
                 ORDER BY due_at
                 LIMIT $2
             ), moved AS (
                 UPDATE vfolders v SET status = 'delete-ongoing'
                 FROM due WHERE v.id = due.id AND v.status = 'delete-pending'
                 RETURNING v.id, v.host, v.name
             )
             INSERT INTO vfolder_audit (vfolder_id, host, name, action, from_status, to_status, actor)
             SELECT id, host, name, 'trash-timer', 'delete-pending', 'delete-ongoing', $3 FROM moved"
        ))
        .bind(secs(retention))
        .bind(i64::from(limit))
        .bind(actor)
        .execute(&mut *tx)
        .await
        .map_err(db("purging expired trash"))?;
        tx.commit()
            .await
            .map_err(db("committing the trash timer"))?;
        Ok(done.rows_affected())
    }

    async fn clean_history(&self, retention: Duration, actor: &str, limit: u32) -> Result<u64> {
        let mut tx = self.begin().await?;
        // The tombstones say who and why; the audit entry below is the only one.
        set_actor(&mut tx, actor).await?;
        set_delete_action(&mut tx, "history-cleanup").await?;
        let done = sqlx::query(
            "WITH clock AS (
                 -- The trash timer's rule: nothing before an adoption is trusted.
                 SELECT (SELECT adopted_at FROM vfolder_controller_meta) AS adopted_at
             ), due AS (
                 SELECT v.id FROM vfolders v CROSS JOIN clock c
                 WHERE v.status = 'delete-complete'
                   AND (v.status_changed <= now() - make_interval(secs => $1)
                        OR (v.status_changed IS NULL AND c.adopted_at IS NOT NULL))
                   AND (c.adopted_at IS NULL OR c.adopted_at <= now() - make_interval(secs => $1))
                 ORDER BY v.status_changed
                 LIMIT $2
                 FOR UPDATE OF v SKIP LOCKED
             ), gone AS (
                 DELETE FROM vfolders v USING due
                 WHERE v.id = due.id AND v.status = 'delete-complete'
                 RETURNING v.id, v.host, v.name
             )
             INSERT INTO vfolder_audit (vfolder_id, host, name, action, from_status, actor)
             SELECT id, host, name, 'history-cleanup', 'delete-complete', $3 FROM gone",
        )
        .bind(secs(retention))
        .bind(i64::from(limit))
        .bind(actor)
        .execute(&mut *tx)
        .await
        .map_err(db("cleaning history"))?;
        tx.commit()
            .await
            .map_err(db("committing history cleanup"))?;
        Ok(done.rows_affected())
    }

    async fn oldest_unconverged(
        &self,
        trash_retention: Duration,
    ) -> Result<Vec<(&'static str, Duration)>> {
        let (remove, timer): (Option<f64>, Option<f64>) = sqlx::query_as(concat!(
            // The timers' clock: nothing before an adoption counts. Each age is the least of
            // a few single-row lookups, not a minimum over the set, so that a trash of a
            // week's deletions (or a backlog of removals) is not read on every refresh: the
            // oldest time straight off the (status, status_changed) index (greatest() with
            // a constant keeps that order), the oldest own purge time off the state table's
            // purge_after index, and the rows without a time (NULL sorts last, so the index
            // finds them apart; an own table's trigger stamps them, so there are few).
            "WITH clock AS (SELECT (SELECT adopted_at FROM vfolder_controller_meta) AS adopted_at)
             SELECT
                 extract(epoch FROM now() - least(
                     (SELECT greatest(v.status_changed, c.adopted_at) FROM vfolders v
                      WHERE v.status = 'delete-ongoing' AND v.status_changed IS NOT NULL
                      ORDER BY v.status_changed LIMIT 1),
                     (SELECT min(greatest(v.created_at, c.adopted_at)) FROM vfolders v
                      WHERE v.status = 'delete-ongoing' AND v.status_changed IS NULL)
                 ))::float8,
                 extract(epoch FROM now() - least(
                     (SELECT greatest(v.status_changed, c.adopted_at) + make_interval(secs => $1)
                      FROM vfolders v
                      WHERE v.status = 'delete-pending' AND v.status_changed IS NOT NULL
                        AND ",
            without_own_purge_time!(),
            "
                      ORDER BY v.status_changed LIMIT 1),
                     (SELECT coalesce(c.adopted_at, now()) + make_interval(secs => $1)
                      FROM vfolders v
                      WHERE v.status = 'delete-pending' AND v.status_changed IS NULL
                        AND ",
            without_own_purge_time!(),
            "
                      LIMIT 1),
                     (SELECT s.purge_after
                      FROM vfolder_controller_state s JOIN vfolders v ON v.id = s.vfolder_id
                      WHERE s.purge_after IS NOT NULL AND v.status = 'delete-pending'
                      ORDER BY s.purge_after LIMIT 1)
                 ))::float8
             FROM clock c"
        ))
        .bind(secs(trash_retention))
        .fetch_one(&self.pool)
        .await
        .map_err(db("measuring unconverged age"))?;
        Ok(super::ages(remove, timer))
    }

    async fn unreadable_rows(&self) -> Result<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FROM vfolder_controller_state WHERE parked_reason IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db("counting unreadable rows"))
    }

    async fn subscribe(&self) -> Result<Option<EventStream>> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(db("connecting the listener"))?;
        listener
            .listen(EVENT_CHANNEL)
            .await
            .map_err(db("listening for status events"))?;
        // try_recv reports a lost connection as Ok(None) instead of reconnecting silently;
        // the stream then yields one Err and ends, and the caller resubscribes.
        let stream = futures::stream::unfold(Some(listener), |state| async move {
            let mut listener = state?;
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => match serde_json::from_str::<StatusEvent>(n.payload()) {
                        Ok(event) => return Some((Ok(event), Some(listener))),
                        Err(e) => {
                            tracing::warn!(payload = n.payload(), error = %e,
                                "ignoring a malformed status event");
                        }
                    },
                    Ok(None) => {
                        let lost = sqlx::Error::Io(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "listener connection lost",
                        ));
                        return Some((Err(db("listening for status events")(lost)), None));
                    }
                    Err(e) => return Some((Err(db("listening for status events")(e)), None)),
                }
            }
        });
        Ok(Some(stream.boxed()))
    }

    async fn claim_tombstones(&self, req: &ClaimRequest) -> Result<Vec<TombstoneClaim>> {
        let rows = sqlx::query(concat!(
            r#"WITH due AS (
                   SELECT t.seq, t.lease_owner AS prev_owner FROM vfolder_tombstones t
                   WHERE t.removal = 'pending' AND t.host = ANY($1)
                     AND NOT (t.vfolder_id = ANY($2))
                     AND (t.lease_owner IS NULL OR t.lease_expires_at < now())
                     AND (t.next_attempt_at IS NULL OR t.next_attempt_at <= now())
                   ORDER BY t.deleted_at LIMIT $3
                   FOR UPDATE SKIP LOCKED
               ), claimed AS (
                   UPDATE vfolder_tombstones t
                   SET lease_owner = $4, lease_expires_at = now() + make_interval(secs => $5)
                   FROM due WHERE t.seq = due.seq
                   RETURNING t.*, due.prev_owner
               )
               SELECT "#,
            tombstone_columns!(),
            r#", t.prev_owner, EXISTS (SELECT 1 FROM vfolders v WHERE v.id = t.vfolder_id) AS row_exists
               FROM claimed t ORDER BY t.deleted_at"#
        ))
        .bind(&req.hosts)
        .bind(&req.exclude)
        .bind(i64::from(req.limit))
        .bind(&req.owner)
        .bind(secs(req.lease))
        .fetch_all(&self.pool)
        .await
        .map_err(db("claiming tombstones"))?;
        rows.iter()
            .map(|row| {
                let ctx = "claiming tombstones";
                Ok(TombstoneClaim {
                    tombstone: tombstone_from_row(row)?,
                    row_exists: row.try_get("row_exists").map_err(db(ctx))?,
                    reclaimed_from: row.try_get("prev_owner").map_err(db(ctx))?,
                })
            })
            .collect()
    }

    async fn inherited_tombstone(&self, id: Uuid, owner: &str) -> Result<Option<i64>> {
        sqlx::query_scalar(
            "SELECT seq FROM vfolder_tombstones
             WHERE vfolder_id = $1 AND lease_owner = $2 AND removal = 'pending'
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("finding an inherited tombstone"))
    }

    async fn renew_tombstone(
        &self,
        seq: i64,
        owner: &str,
        lease: Duration,
        progress: Counts,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE vfolder_tombstones t
             SET lease_expires_at = now() + make_interval(secs => $3),
                 files = $4, dirs = $5, symlinks = $6, bytes = $7
             WHERE t.seq = $1 AND t.lease_owner = $2 AND t.removal = 'pending'
               AND NOT EXISTS (SELECT 1 FROM vfolders v WHERE v.id = t.vfolder_id)",
        )
        .bind(seq)
        .bind(owner)
        .bind(secs(lease))
        .bind(to_i64(progress.files))
        .bind(to_i64(progress.dirs))
        .bind(to_i64(progress.symlinks))
        .bind(to_i64(progress.bytes))
        .execute(&self.pool)
        .await
        .map_err(db("renewing a tombstone lease"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish_tombstone(&self, seq: i64, owner: &str, end: &TombstoneEnd) -> Result<bool> {
        rules::finish_tombstone(self.begin_tx().await?, seq, owner, end).await
    }

    async fn retry_tombstone(
        &self,
        seq: i64,
        owner: &str,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<Option<u32>> {
        let attempts: Option<i32> = sqlx::query_scalar(
            "UPDATE vfolder_tombstones
             SET attempts = attempts + 1, next_attempt_at = $3, last_error = $4,
                 lease_owner = NULL, lease_expires_at = NULL
             WHERE seq = $1 AND lease_owner = $2
             RETURNING attempts",
        )
        .bind(seq)
        .bind(owner)
        .bind(next_attempt_at)
        .bind(error)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("recording a tombstone retry"))?;
        Ok(attempts.map(|a| u32::try_from(a).unwrap_or(0)))
    }

    async fn release_tombstone(&self, seq: i64, owner: &str) -> Result<()> {
        sqlx::query(
            "UPDATE vfolder_tombstones SET lease_owner = NULL, lease_expires_at = NULL
             WHERE seq = $1 AND lease_owner = $2",
        )
        .bind(seq)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(db("releasing a tombstone lease"))?;
        Ok(())
    }

    async fn clean_tombstones(&self, retention: Duration, limit: u32) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM vfolder_tombstones WHERE seq IN (
                 SELECT seq FROM vfolder_tombstones
                 WHERE deleted_at <= now() - make_interval(secs => $1) AND removal <> 'pending'
                 ORDER BY deleted_at LIMIT $2)",
        )
        .bind(secs(retention))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(db("cleaning tombstones"))?;
        Ok(done.rows_affected())
    }

    async fn folders_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Folder>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            folder_columns!(),
            " FROM vfolders v WHERE v.id = ANY($1)"
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db("looking up vfolders"))?;
        rows.iter().map(folder_from_row).collect()
    }

    async fn latest_tombstones(&self, ids: &[Uuid]) -> Result<Vec<Tombstone>> {
        let rows = sqlx::query(concat!(
            "SELECT DISTINCT ON (t.vfolder_id) ",
            tombstone_columns!(),
            " FROM vfolder_tombstones t WHERE t.vfolder_id = ANY($1)
              ORDER BY t.vfolder_id, t.seq DESC"
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db("looking up tombstones"))?;
        rows.iter().map(tombstone_from_row).collect()
    }

    async fn folders_on_host(
        &self,
        host: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Folder>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            folder_columns!(),
            " FROM vfolders v WHERE v.host = $1 AND ($2::uuid IS NULL OR v.id > $2)
              ORDER BY v.id LIMIT $3"
        ))
        .bind(host)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db("paging through a volume's vfolders"))?;
        rows.iter().map(folder_from_row).collect()
    }

    async fn record_sightings(
        &self,
        host: &str,
        seen_at: DateTime<Utc>,
        seen: &[NewSighting],
    ) -> Result<Vec<Sighting>> {
        let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
        let ids: Vec<Uuid> = seen.iter().map(|s| s.vfolder_id).collect();
        let scopes: Vec<Option<Uuid>> = seen.iter().map(|s| s.scope).collect();
        let trash: Vec<bool> = seen.iter().map(|s| s.trash).collect();
        let rows = sqlx::query(
            "INSERT INTO vfolder_orphan_sightings AS o
                 (host, path, vfolder_id, scope, trash, first_seen, last_seen)
             SELECT $1, u.p, u.i, u.sc, u.tr, $2, $2
             FROM unnest($3::text[], $4::uuid[], $5::uuid[], $6::bool[]) AS u(p, i, sc, tr)
             ON CONFLICT (host, path) DO UPDATE SET
                 vfolder_id = excluded.vfolder_id, scope = excluded.scope, trash = excluded.trash,
                 scans = o.scans + CASE WHEN o.last_seen < excluded.last_seen THEN 1 ELSE 0 END,
                 last_seen = greatest(o.last_seen, excluded.last_seen)
             RETURNING o.*",
        )
        .bind(host)
        .bind(seen_at)
        .bind(&paths)
        .bind(&ids)
        .bind(&scopes)
        .bind(&trash)
        .fetch_all(&self.pool)
        .await
        .map_err(db("recording orphan sightings"))?;
        rows.iter().map(sighting_from_row).collect()
    }

    async fn finish_scan(&self, summary: &ScanSummary) -> Result<u64> {
        let mut tx = self.begin().await?;
        let ended =
            sqlx::query("DELETE FROM vfolder_orphan_sightings WHERE host = $1 AND last_seen < $2")
                .bind(&summary.host)
                .bind(summary.started_at)
                .execute(&mut *tx)
                .await
                .map_err(db("ending orphan sightings"))?;
        sqlx::query(
            "INSERT INTO vfolder_orphan_scans (host, started_at, finished_at, counted, orphans,
                 orphan_bytes, unfinished, unfinished_bytes, missing, foreign_entries, actor)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (host) DO UPDATE SET started_at = excluded.started_at,
                 finished_at = excluded.finished_at, counted = excluded.counted,
                 orphans = excluded.orphans, orphan_bytes = excluded.orphan_bytes,
                 unfinished = excluded.unfinished, unfinished_bytes = excluded.unfinished_bytes,
                 missing = excluded.missing, foreign_entries = excluded.foreign_entries,
                 actor = excluded.actor",
        )
        .bind(&summary.host)
        .bind(summary.started_at)
        .bind(summary.finished_at)
        .bind(summary.counted)
        .bind(to_i64(summary.orphans))
        .bind(summary.orphan_bytes.map(to_i64))
        .bind(to_i64(summary.unfinished))
        .bind(summary.unfinished_bytes.map(to_i64))
        .bind(to_i64(summary.missing))
        .bind(to_i64(summary.foreign_entries))
        .bind(&summary.actor)
        .execute(&mut *tx)
        .await
        .map_err(db("recording a scan"))?;
        tx.commit().await.map_err(db("committing a scan"))?;
        Ok(ended.rows_affected())
    }

    async fn due_orphans(&self, host: &str, grace: Duration, limit: u32) -> Result<Vec<Sighting>> {
        let rows = sqlx::query(
            "SELECT o.* FROM vfolder_orphan_sightings o
             JOIN vfolder_orphan_scans sc ON sc.host = o.host
             WHERE o.host = $1
               AND o.first_seen <= now() - make_interval(secs => $2)
               AND o.last_seen >= sc.started_at AND o.scans >= 2
               AND NOT EXISTS (SELECT 1 FROM vfolders v WHERE v.id = o.vfolder_id)
               AND NOT EXISTS (SELECT 1 FROM vfolder_tombstones t
                               WHERE t.vfolder_id = o.vfolder_id
                                 AND (t.deleted_at >= o.first_seen OR t.removal = 'pending'))
             ORDER BY o.first_seen, o.path LIMIT $3",
        )
        .bind(host)
        .bind(secs(grace))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db("finding orphans due for reclaim"))?;
        rows.iter().map(sighting_from_row).collect()
    }

    async fn record_reclaim(
        &self,
        sighting: &Sighting,
        done: &Completion,
        actor: &str,
    ) -> Result<()> {
        rules::record_reclaim(self.begin_tx().await?, sighting, done, actor).await
    }

    async fn scan_summaries(&self) -> Result<Vec<ScanSummary>> {
        let rows = sqlx::query("SELECT * FROM vfolder_orphan_scans ORDER BY host")
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading scan summaries"))?;
        rows.iter().map(scan_from_row).collect()
    }

    async fn record_volume_state(&self, state: &super::VolumeState) -> Result<()> {
        record_volume_state(&self.pool, state).await
    }
}

/// Upserts a volume's availability row (see `migrations/postgres/20261128200000_*`).
async fn record_volume_state(pool: &PgPool, state: &super::VolumeState) -> Result<()> {
    sqlx::query(
        "INSERT INTO vfolder_volume_state (host, available, since, reason, replica, updated_at)
         VALUES ($1, $2, $3, $4, $5, now())
         ON CONFLICT (host) DO UPDATE SET available = excluded.available,
             since = excluded.since, reason = excluded.reason, replica = excluded.replica,
             updated_at = excluded.updated_at",
    )
    .bind(&state.host)
    .bind(state.available)
    .bind(state.since)
    .bind(&state.reason)
    .bind(&state.replica)
    .execute(pool)
    .await
    .map_err(db("recording volume state"))?;
    Ok(())
}

/// Reads a volume's availability row.
async fn volume_state(pool: &PgPool, host: &str) -> Result<Option<super::VolumeState>> {
    let ctx = "reading volume state";
    let row = sqlx::query(
        "SELECT available, since, reason, replica, updated_at
         FROM vfolder_volume_state WHERE host = $1",
    )
    .bind(host)
    .fetch_optional(pool)
    .await
    .map_err(db(ctx))?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(super::VolumeState {
        host: host.to_owned(),
        available: row.try_get("available").map_err(db(ctx))?,
        since: row.try_get("since").map_err(db(ctx))?,
        reason: row.try_get("reason").map_err(db(ctx))?,
        replica: row.try_get("replica").map_err(db(ctx))?,
        updated_at: row.try_get("updated_at").map_err(db(ctx))?,
    }))
}
