//! The SQLite store: the embedded single-process default.
//!
//! Representation (see `migrations/sqlite`): uuids are lowercase hyphenated text, timestamps
//! are UTC ISO-8601 text with exactly three fractional digits (`2026-11-27T19:25:12.123Z`),
//! so text order is time order. Every write runs in a `BEGIN IMMEDIATE` transaction, which
//! takes SQLite's single write lock up front: a claim's read and its lease write cannot be
//! interleaved with another writer's, so claims need no `SKIP LOCKED`. The trigger reads the
//! actor from the `vfolder_actor` row this module writes and deletes inside the transaction.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::FromRow;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::rows::{self, Decoded};
use super::rules::{self, Ended, Locked, LockedTombstone, Tx};
use super::schema::{self, MigrationPlan, Schema, UnadoptPlan};
use super::{
    Admin, AuditEntry, AuditFilter, Capabilities, Claim, ClaimRequest, Completion, ControllerState,
    Counts, Error, EventStream, Folder, FolderDetail, Location, NewAudit, NewFolder, NewSighting,
    Readiness, Result, ScanSummary, Sighting, StatusChange, StatusCount, StatusRequest, Tombstone,
    TombstoneClaim, TombstoneEnd, TombstoneRemoval, Work, db, parse_history, parse_status, to_i64,
    write_err,
};
use super::{PARK_FOR, decode_each};
use crate::lifecycle::{self, SchemaMode, Status};

/// The embedded SQLite migrations (`migrations/sqlite`).
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// Columns of a [`Folder`], from `vfolders v`.
macro_rules! folder_columns {
    () => {
        // The name as bytes: a name that is not UTF-8 is shown with replacement characters
        // instead of making the row unreadable.
        r#"v.id, v.host, v.quota_scope_id, CAST(v.name AS BLOB) AS name, v."user", v."group",
           v.ownership_type, v.status, v.status_changed, v.created_at"#
    };
}

/// The stored form of a timestamp (fixed precision, so text order is time order).
pub fn ts(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Reads a stored timestamp (see [`rows::Decoded`] for the formats).
fn parse_ts(text: &str) -> Result<DateTime<Utc>> {
    text.to_owned().decoded()
}

fn parse_uuid(text: &str) -> Result<Uuid> {
    text.to_owned().decoded()
}

fn parse_opt_ts(text: Option<String>) -> Result<Option<DateTime<Utc>>> {
    text.decoded()
}

fn after(d: Duration) -> String {
    ts(Utc::now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX))
}

fn before(d: Duration) -> String {
    ts(Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX))
}

fn json_list<T: serde::Serialize>(items: &[T]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

/// The SQLite implementation of [`Store`](super::Store).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating when missing) the database file of a `sqlite://FILE` URL, in WAL mode
    /// with a 5 s busy timeout and foreign keys on. Does not migrate.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(db("parsing the SQLite URL"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(db("opening the SQLite database"))?;
        Ok(Self { pool })
    }

    /// The applied migrations (version, checksum); empty before the first one.
    async fn applied(&self) -> Result<Vec<(i64, Vec<u8>)>> {
        let exists: bool = sqlx::query_scalar(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db("checking the database"))?;
        if !exists {
            return Ok(Vec::new());
        }
        sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success")
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading applied migrations"))
    }

    /// A write transaction for the store's rules.
    async fn begin_tx(&self) -> Result<SqliteTx> {
        Ok(SqliteTx(self.begin().await?))
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db("starting a write transaction"))
    }
}

/// SQLite's column types for the rows of [`rows`]: ids and times are text, names bytes.
type Folders = rows::FolderRow<String, String, Vec<u8>>;

fn folder_from_row(row: &SqliteRow) -> Result<Folder> {
    Folders::from_row(row)
        .map_err(db("reading a vfolder row"))?
        .into_folder()
}

/// A locked row, for the rules' checks and the audit entry.
fn locked(id: Uuid, row: &SqliteRow) -> Result<Locked> {
    let ctx = "reading a vfolder row";
    let status: String = row.try_get("status").map_err(db(ctx))?;
    Ok(Locked {
        status: parse_status(id, &status)?,
        host: row.try_get("host").map_err(db(ctx))?,
        name: String::from_utf8_lossy(&row.try_get::<Vec<u8>, _>("name").map_err(db(ctx))?)
            .into_owned(),
    })
}

/// The stored id of a row as text, for naming a row that cannot be read.
fn raw_id(row: &SqliteRow) -> String {
    row.try_get::<String, _>("id").unwrap_or_default()
}

/// A claimed row with its work kind and state.
fn claim_from_row(row: &SqliteRow) -> Result<Claim> {
    rows::ClaimRow::<String, String, Vec<u8>>::from_row(row)
        .map_err(db("claiming due folders"))?
        .into_claim()
}

fn state_from_row(row: &SqliteRow) -> Result<Option<ControllerState>> {
    rows::StateRow::<String, String>::from_row(row)
        .map_err(db("reading controller state"))?
        .into_state()
}

fn audit_from_row(row: &SqliteRow) -> Result<AuditEntry> {
    rows::AuditRow::<String, String>::from_row(row)
        .map_err(db("reading the audit log"))?
        .into_entry()
}

/// Appends audit entries one statement each: SQLite runs in this process, so a statement
/// costs no round trip and a batch gains nothing from arrays.
async fn insert_audits(conn: &mut SqliteConnection, audits: &[NewAudit<'_>]) -> Result<()> {
    for a in audits {
        let p = a.progress;
        sqlx::query(
            "INSERT INTO vfolder_audit (vfolder_id, host, name, action, from_status, to_status, actor,
                 replica, files, dirs, symlinks, bytes, duration_ms, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(a.vfolder_id.to_string())
        .bind(a.host)
        .bind(a.name)
        .bind(a.action.as_str())
        .bind(a.from_status)
        .bind(a.to_status)
        .bind(a.actor)
        .bind(a.replica)
        .bind(p.map(|p| to_i64(p.files)))
        .bind(p.map(|p| to_i64(p.dirs)))
        .bind(p.map(|p| to_i64(p.symlinks)))
        .bind(p.map(|p| to_i64(p.bytes)))
        .bind(a.duration_ms)
        .bind(a.error)
        .execute(&mut *conn)
        .await
        .map_err(db("writing the audit log"))?;
    }
    Ok(())
}

/// Sets the actor the triggers record until [`clear_actor`] (same transaction).
async fn set_actor(conn: &mut SqliteConnection, actor: &str) -> Result<()> {
    sqlx::query("INSERT OR REPLACE INTO vfolder_actor (id, actor) VALUES (1, $1)")
        .bind(actor)
        .execute(conn)
        .await
        .map_err(db("setting the actor"))?;
    Ok(())
}

/// Removes the actor row before commit, so it never leaks to a later writer.
async fn clear_actor(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::query("DELETE FROM vfolder_actor")
        .execute(conn)
        .await
        .map_err(db("clearing the actor"))?;
    Ok(())
}

/// Columns of a [`Tombstone`], from `vfolder_tombstones t`.
macro_rules! tombstone_columns {
    () => {
        r#"t.seq, t.vfolder_id, t.host, t.quota_scope_id, t.name, t.status, t.actor, t.cause,
           t.deleted_at, t.removal, t.attempts, t.last_error, t.files, t.dirs, t.symlinks,
           t.bytes, t.finished_at"#
    };
}

fn tombstone_from_row(row: &SqliteRow) -> Result<Tombstone> {
    rows::TombstoneRow::<String, String, i64>::from_row(row)
        .map_err(db("reading a tombstone"))?
        .into_tombstone()
}

fn sighting_from_row(row: &SqliteRow) -> Result<Sighting> {
    rows::SightingRow::<String, String, i64>::from_row(row)
        .map_err(db("reading an orphan sighting"))?
        .into_sighting()
}

fn scan_from_row(row: &SqliteRow) -> Result<ScanSummary> {
    rows::ScanRow::<String>::from_row(row)
        .map_err(db("reading a scan summary"))?
        .into_summary()
}

/// Names the controller's own row deletion (and its actor) for the tombstone trigger until
/// [`clear_actor`]: the trigger writes the tombstone and leaves the audit entry to the caller.
async fn set_delete_action(conn: &mut SqliteConnection, actor: &str, action: &str) -> Result<()> {
    sqlx::query(
        "INSERT OR REPLACE INTO vfolder_actor (id, actor, delete_action) VALUES (1, $1, $2)",
    )
    .bind(actor)
    .bind(action)
    .execute(conn)
    .await
    .map_err(db("naming the deletion"))?;
    Ok(())
}

fn uuid_list(ids: &[Uuid]) -> String {
    json_list(&ids.iter().map(Uuid::to_string).collect::<Vec<_>>())
}

/// A SQLite write transaction (`BEGIN IMMEDIATE`: the database's write lock is what locks
/// the row), with the statements the store's rules need ([`rules::Tx`]).
pub(crate) struct SqliteTx(sqlx::Transaction<'static, sqlx::Sqlite>);

#[async_trait]
impl Tx for SqliteTx {
    async fn lock_folder(&mut self, id: Uuid) -> Result<Locked> {
        let row = sqlx::query("SELECT status, host, name FROM vfolders WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *self.0)
            .await
            .map_err(db("reading a vfolder row"))?
            .ok_or(Error::NotFound(id))?;
        locked(id, &row)
    }

    async fn lock_leased(&mut self, ids: &[Uuid], owner: &str) -> Result<Vec<(Uuid, Locked)>> {
        // The write transaction already excludes every other writer: no row locks to order.
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut found = Vec::with_capacity(sorted.len());
        for id in sorted {
            let row = sqlx::query(
                "SELECT v.status, v.host, v.name FROM vfolders v
                 JOIN vfolder_controller_state s ON s.vfolder_id = v.id
                 WHERE v.id = $1 AND s.lease_owner = $2",
            )
            .bind(id.to_string())
            .bind(owner)
            .fetch_optional(&mut *self.0)
            .await
            .map_err(db("reading a leased vfolder row"))?;
            if let Some(row) = row {
                found.push((id, locked(id, &row)?));
            }
        }
        Ok(found)
    }

    async fn write_status(&mut self, rows: &[(Uuid, &str)], to: Status, actor: &str) -> Result<()> {
        set_actor(&mut self.0, actor).await?;
        for &(id, name) in rows {
            sqlx::query("UPDATE vfolders SET status = $2 WHERE id = $1")
                .bind(id.to_string())
                .bind(to.as_str())
                .execute(&mut *self.0)
                .await
                .map_err(write_err(id, name, "writing a vfolder status"))?;
        }
        clear_actor(&mut self.0).await
    }

    async fn insert_folder(&mut self, new: &NewFolder, actor: &str) -> Result<Folder> {
        set_actor(&mut self.0, actor).await?;
        sqlx::query(
            r#"INSERT INTO vfolders (id, host, quota_scope_id, name, "user", "group", ownership_type)
               VALUES ($1, $2, $3, $4, $5, $6, $7)"#,
        )
        .bind(new.id.to_string())
        .bind(&new.host)
        .bind(&new.quota_scope_id)
        .bind(&new.name)
        .bind(new.user.map(|u| u.to_string()))
        .bind(new.group.map(|g| g.to_string()))
        .bind(&new.ownership_type)
        .execute(&mut *self.0)
        .await
        .map_err(write_err(new.id, &new.name, "inserting a vfolder"))?;
        clear_actor(&mut self.0).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            folder_columns!(),
            " FROM vfolders v WHERE v.id = $1"
        ))
        .bind(new.id.to_string())
        .fetch_one(&mut *self.0)
        .await
        .map_err(db("reading a new vfolder"))?;
        folder_from_row(&row)
    }

    async fn delete_folder(&mut self, id: Uuid, actor: &str, action: &str) -> Result<()> {
        set_delete_action(&mut self.0, actor, action).await?;
        sqlx::query("DELETE FROM vfolders WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *self.0)
            .await
            .map_err(db("deleting a vfolder row"))?;
        clear_actor(&mut self.0).await
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
             VALUES ($1, CASE WHEN $2 = 'delete-pending' THEN $4 END)
             ON CONFLICT (vfolder_id) DO UPDATE SET
                 purge_after = CASE WHEN $2 = 'delete-pending' THEN $4
                                    WHEN $2 = 'ready' THEN NULL
                                    ELSE vfolder_controller_state.purge_after END,
                 attempts = CASE WHEN $3 = 'delete-error' THEN 0
                                 ELSE vfolder_controller_state.attempts END,
                 next_attempt_at = CASE WHEN $3 = 'delete-error' THEN NULL
                                        ELSE vfolder_controller_state.next_attempt_at END,
                 updated_at = $5",
        )
        .bind(id.to_string())
        .bind(to.as_str())
        .bind(from.as_str())
        .bind(purge_after.map(ts))
        .bind(ts(Utc::now()))
        .execute(&mut *self.0)
        .await
        .map_err(db("updating controller state"))?;
        Ok(())
    }

    async fn finish_state(&mut self, ended: &[Ended<'_>], complete: bool) -> Result<()> {
        for e in ended {
            let (id, error, progress) = (e.id, e.error, e.progress);
            sqlx::query(
                "UPDATE vfolder_controller_state SET lease_owner = NULL, lease_expires_at = NULL,
                     attempts = CASE WHEN $2 THEN 0 ELSE attempts END,
                     next_attempt_at = NULL, last_error = $3,
                     files = $4, dirs = $5, symlinks = $6, bytes = $7, updated_at = $8
                 WHERE vfolder_id = $1",
            )
            .bind(id.to_string())
            .bind(complete)
            .bind(error)
            .bind(to_i64(progress.files))
            .bind(to_i64(progress.dirs))
            .bind(to_i64(progress.symlinks))
            .bind(to_i64(progress.bytes))
            .bind(ts(Utc::now()))
            .execute(&mut *self.0)
            .await
            .map_err(db("updating controller state"))?;
        }
        Ok(())
    }

    async fn set_location(&mut self, id: Uuid, location: Location) -> Result<()> {
        sqlx::query(
            "UPDATE vfolder_controller_state
             SET location = $2, lease_owner = NULL, lease_expires_at = NULL, updated_at = $3
             WHERE vfolder_id = $1",
        )
        .bind(id.to_string())
        .bind(location.as_str())
        .bind(ts(Utc::now()))
        .execute(&mut *self.0)
        .await
        .map_err(db("recording a location"))?;
        Ok(())
    }

    async fn lock_tombstone(&mut self, seq: i64, owner: &str) -> Result<Option<LockedTombstone>> {
        let row: Option<(String, Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT vfolder_id, host, name, status FROM vfolder_tombstones
             WHERE seq = $1 AND lease_owner = $2 AND removal = 'pending'",
        )
        .bind(seq)
        .bind(owner)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(db("reading a tombstone"))?;
        row.map(|(id, host, name, status)| {
            Ok(LockedTombstone {
                vfolder_id: parse_uuid(&id)?,
                host,
                name,
                status,
            })
        })
        .transpose()
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
                 next_attempt_at = NULL, finished_at = $8,
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
        .bind(ts(Utc::now()))
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
impl Readiness for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            notifications: false,
            embedded: true,
        }
    }

    async fn check_ready(&self) -> Result<()> {
        let applied = self.applied().await?;
        if applied.is_empty() {
            return Err(Error::NotMigrated("no migration has been applied".into()));
        }
        super::compare_migrations(&MIGRATOR, &applied)
    }
}

#[async_trait]
impl Admin for SqliteStore {
    async fn plan_migration(&self) -> Result<MigrationPlan> {
        let applied: Vec<i64> = self.applied().await?.iter().map(|(v, _)| *v).collect();
        Ok(MigrationPlan::schema_only(
            self.backend(),
            SchemaMode::Own,
            schema::pending(&MIGRATOR, &applied),
        ))
    }

    /// SQLite databases are always the controller's own: the platform's table lives in
    /// PostgreSQL, so `adopt` changes nothing here.
    async fn migrate(&self, _adopt: bool) -> Result<MigrationPlan> {
        let plan = self.plan_migration().await?;
        MIGRATOR.run(&self.pool).await?;
        Ok(plan)
    }

    async fn unadopt(&self, _dry_run: bool, _force: bool) -> Result<UnadoptPlan> {
        Err(Error::NotAdopted(
            "a SQLite database is always vfolder-controller's own; only a PostgreSQL table can be adopted and given back"
                .to_owned(),
        ))
    }

    async fn schema(&self) -> Result<Schema> {
        Ok(Schema::OWN)
    }

    async fn create_folder(&self, new: &NewFolder, actor: &str) -> Result<Folder> {
        rules::create_folder(self.begin_tx().await?, SchemaMode::Own, new, actor).await
    }

    async fn get_folder(&self, id: Uuid) -> Result<FolderDetail> {
        let row = sqlx::query(concat!(
            "SELECT ",
            folder_columns!(),
            r#", v.status_history, s.vfolder_id AS s_id, s.attempts, s.next_attempt_at,
                s.last_error, s.lease_owner, s.lease_expires_at, s.files, s.dirs, s.symlinks,
                s.bytes, s.location, s.purge_after
               FROM vfolders v LEFT JOIN vfolder_controller_state s ON s.vfolder_id = v.id
               WHERE v.id = $1"#
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a vfolder"))?
        .ok_or(Error::NotFound(id))?;
        let history: Option<String> = row
            .try_get("status_history")
            .map_err(db("reading status_history"))?;
        // Text that is not JSON is shown raw, like any unreadable history.
        let value = history
            .map(|text| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)));
        let (history, history_shape) = parse_history(value);
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
            " FROM vfolders v WHERE v.status IN (SELECT value FROM json_each($1))
                 OR ($2 AND v.status NOT IN (SELECT value FROM json_each($3)))
              ORDER BY v.created_at, v.id"
        ))
        .bind(json_list(&wanted))
        .bind(foreign)
        .bind(json_list(&known))
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
                 WHERE ($1 IS NULL OR vfolder_id = $1) AND ($2 IS NULL OR at >= $2)
                 ORDER BY seq DESC LIMIT coalesce($3, -1)) AS newest
             ORDER BY seq",
        )
        .bind(filter.id.map(|id| id.to_string()))
        .bind(filter.since.map(ts))
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading the audit log"))?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn status_counts(&self) -> Result<Vec<StatusCount>> {
        // The embedded database is the small deployment: every status is counted exactly
        // (one pass over the status index).
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM vfolders GROUP BY status ORDER BY status")
                .fetch_all(&self.pool)
                .await
                .map_err(db("counting vfolders per status"))?;
        Ok(super::known_counts(rows)
            .into_iter()
            .map(|(status, rows)| StatusCount {
                status,
                rows,
                exact: true,
            })
            .collect())
    }

    async fn volume_state(&self, host: &str) -> Result<Option<super::VolumeState>> {
        volume_state(&self.pool, host).await
    }
}

#[async_trait]
impl Work for SqliteStore {
    async fn claim_due(&self, req: &ClaimRequest) -> Result<Vec<Claim>> {
        // The statuses below are those that create work (lifecycle::Status::creates_work).
        let now = ts(Utc::now());
        let mut tx = self.begin().await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            folder_columns!(),
            r#", coalesce(s.attempts, 0) AS attempts, coalesce(s.location, 'live') AS location,
                 CASE WHEN v.status = 'delete-ongoing' THEN 'remove'
                      WHEN v.status = 'delete-pending' THEN 'move-to-trash'
                      ELSE 'restore' END AS kind,
                 s.lease_owner AS prev_owner, s.files, s.dirs, s.symlinks, s.bytes
               FROM vfolders v LEFT JOIN vfolder_controller_state s ON s.vfolder_id = v.id
               WHERE v.host IN (SELECT value FROM json_each($1))
                 AND v.id NOT IN (SELECT value FROM json_each($3))
                 AND (v.status = 'delete-ongoing'
                      OR (v.status = 'delete-pending' AND v.host IN (SELECT value FROM json_each($2))
                          AND coalesce(s.location, 'live') = 'live')
                      OR (v.status = 'ready' AND v.host IN (SELECT value FROM json_each($2))
                          AND s.location = 'trash'))
                 AND (s.lease_owner IS NULL OR s.lease_expires_at < $5)
                 AND (s.next_attempt_at IS NULL OR s.next_attempt_at <= $5)
               ORDER BY v.status_changed NULLS FIRST, v.id
               LIMIT $4"#
        ))
        .bind(json_list(&req.hosts))
        .bind(json_list(&req.move_hosts))
        .bind(json_list(&req.exclude))
        .bind(i64::from(req.limit))
        .bind(&now)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("claiming due folders"))?;
        let expires = after(req.lease);
        let (claims, unreadable) = decode_each(&rows, raw_id, claim_from_row);
        for claim in &claims {
            sqlx::query(
                "INSERT INTO vfolder_controller_state (vfolder_id, lease_owner, lease_expires_at, updated_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (vfolder_id) DO UPDATE SET lease_owner = excluded.lease_owner,
                     lease_expires_at = excluded.lease_expires_at, parked_reason = NULL,
                     updated_at = excluded.updated_at",
            )
            .bind(claim.folder.id.to_string())
            .bind(&req.owner)
            .bind(&expires)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db("claiming due folders"))?;
        }
        for bad in &unreadable {
            bad.report("claiming");
            sqlx::query(
                "INSERT INTO vfolder_controller_state
                     (vfolder_id, next_attempt_at, last_error, parked_reason, updated_at)
                 VALUES ($1, $2, $3, $3, $4)
                 ON CONFLICT (vfolder_id) DO UPDATE SET lease_owner = NULL,
                     lease_expires_at = NULL, next_attempt_at = excluded.next_attempt_at,
                     last_error = excluded.last_error, parked_reason = excluded.parked_reason,
                     updated_at = excluded.updated_at",
            )
            .bind(&bad.id)
            .bind(after(PARK_FOR))
            .bind(bad.parked_reason())
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db("parking an unreadable row"))?;
        }
        tx.commit().await.map_err(db("committing claims"))?;
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
             SET lease_expires_at = $3, files = $4, dirs = $5, symlinks = $6, bytes = $7,
                 updated_at = $8
             WHERE vfolder_id = $1 AND lease_owner = $2",
        )
        .bind(id.to_string())
        .bind(owner)
        .bind(after(lease))
        .bind(to_i64(progress.files))
        .bind(to_i64(progress.dirs))
        .bind(to_i64(progress.symlinks))
        .bind(to_i64(progress.bytes))
        .bind(ts(Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(db("renewing a lease"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_lease(&self, id: Uuid, owner: &str) -> Result<()> {
        sqlx::query(
            "UPDATE vfolder_controller_state
             SET lease_owner = NULL, lease_expires_at = NULL, updated_at = $3
             WHERE vfolder_id = $1 AND lease_owner = $2",
        )
        .bind(id.to_string())
        .bind(owner)
        .bind(ts(Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(db("releasing a lease"))?;
        Ok(())
    }

    async fn release_all_leases(&self, owner: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE vfolder_controller_state
             SET lease_owner = NULL, lease_expires_at = NULL, updated_at = $2
             WHERE lease_owner = $1",
        )
        .bind(owner)
        .bind(ts(Utc::now()))
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
        let attempts: Option<i64> = sqlx::query_scalar(
            "UPDATE vfolder_controller_state
             SET attempts = attempts + 1, next_attempt_at = $3, last_error = $4,
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = $5
             WHERE vfolder_id = $1 AND lease_owner = $2
             RETURNING attempts",
        )
        .bind(id.to_string())
        .bind(owner)
        .bind(ts(next_attempt_at))
        .bind(error)
        .bind(ts(Utc::now()))
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
        // SQLite has no data-modifying CTE: collect the due ids into a temporary list inside
        // the write transaction, then move and audit exactly those rows.
        let mut tx = self.begin().await?;
        // An unknown time (a writer set status_changed to NULL) starts when the controller
        // first sees the row: it is stamped now and the full retention follows (the same
        // rule as an adopted table's clock). The trigger does not fire: the status stays.
        sqlx::query(
            "UPDATE vfolders SET status_changed = $1
             WHERE status IN ('delete-pending', 'delete-complete') AND status_changed IS NULL",
        )
        .bind(ts(Utc::now()))
        .execute(&mut *tx)
        .await
        .map_err(db("stamping unknown status times"))?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT v.id FROM vfolders v
             LEFT JOIN vfolder_controller_state s ON s.vfolder_id = v.id
             WHERE v.status = 'delete-pending'
               AND (s.purge_after <= $1 OR (s.purge_after IS NULL AND v.status_changed <= $2))
             LIMIT $3",
        )
        .bind(ts(Utc::now()))
        .bind(before(retention))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(db("finding expired trash"))?;
        if ids.is_empty() {
            tx.commit()
                .await
                .map_err(db("committing the trash timer"))?;
            return Ok(0);
        }
        let ids = json_list(&ids);
        set_actor(&mut tx, actor).await?;
        sqlx::query(
            "INSERT INTO vfolder_audit (vfolder_id, host, name, action, from_status, to_status, actor)
             SELECT id, host, name, 'trash-timer', 'delete-pending', 'delete-ongoing', $2
             FROM vfolders WHERE id IN (SELECT value FROM json_each($1))",
        )
        .bind(&ids)
        .bind(actor)
        .execute(&mut *tx)
        .await
        .map_err(db("auditing the trash timer"))?;
        let done = sqlx::query(
            "UPDATE vfolders SET status = 'delete-ongoing'
             WHERE id IN (SELECT value FROM json_each($1)) AND status = 'delete-pending'",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(db("purging expired trash"))?;
        clear_actor(&mut tx).await?;
        tx.commit()
            .await
            .map_err(db("committing the trash timer"))?;
        Ok(done.rows_affected())
    }

    async fn clean_history(&self, retention: Duration, actor: &str, limit: u32) -> Result<u64> {
        let mut tx = self.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM vfolders
             WHERE status = 'delete-complete'
               AND status_changed <= $1
             ORDER BY status_changed
             LIMIT $2",
        )
        .bind(before(retention))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(db("finding old history"))?;
        if ids.is_empty() {
            return Ok(0);
        }
        let ids = json_list(&ids);
        sqlx::query(
            "INSERT INTO vfolder_audit (vfolder_id, host, name, action, from_status, actor)
             SELECT id, host, name, 'history-cleanup', 'delete-complete', $2
             FROM vfolders WHERE id IN (SELECT value FROM json_each($1))",
        )
        .bind(&ids)
        .bind(actor)
        .execute(&mut *tx)
        .await
        .map_err(db("auditing history cleanup"))?;
        // The tombstones say who and why; the audit entries above are the only ones.
        set_delete_action(&mut tx, actor, "history-cleanup").await?;
        let done =
            sqlx::query("DELETE FROM vfolders WHERE id IN (SELECT value FROM json_each($1))")
                .bind(&ids)
                .execute(&mut *tx)
                .await
                .map_err(db("cleaning history"))?;
        clear_actor(&mut tx).await?;
        tx.commit()
            .await
            .map_err(db("committing history cleanup"))?;
        Ok(done.rows_affected())
    }

    async fn oldest_unconverged(
        &self,
        trash_retention: Duration,
    ) -> Result<Vec<(&'static str, Duration)>> {
        let (remove, timer): (Option<String>, Option<String>) = sqlx::query_as(
            "SELECT
                 (SELECT min(coalesce(status_changed, created_at)) FROM vfolders
                  WHERE status = 'delete-ongoing'),
                 (SELECT min(coalesce(s.purge_after, strftime('%Y-%m-%dT%H:%M:%fZ',
                                      coalesce(v.status_changed, 'now'), $1)))
                  FROM vfolders v LEFT JOIN vfolder_controller_state s ON s.vfolder_id = v.id
                  WHERE v.status = 'delete-pending')",
        )
        .bind(format!("+{:.3} seconds", trash_retention.as_secs_f64()))
        .fetch_one(&self.pool)
        .await
        .map_err(db("measuring unconverged age"))?;
        let now = Utc::now();
        let age = |t: DateTime<Utc>| (now - t).num_milliseconds() as f64 / 1000.0;
        let remove = parse_opt_ts(remove)?.map(age);
        let timer = parse_opt_ts(timer)?.map(age);
        Ok(super::ages(remove, timer))
    }

    async fn subscribe(&self) -> Result<Option<EventStream>> {
        Ok(None)
    }

    async fn unreadable_rows(&self) -> Result<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FROM vfolder_controller_state WHERE parked_reason IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db("counting unreadable rows"))
    }

    async fn claim_tombstones(&self, req: &ClaimRequest) -> Result<Vec<TombstoneClaim>> {
        let now = ts(Utc::now());
        let mut tx = self.begin().await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            tombstone_columns!(),
            r#", t.lease_owner AS prev_owner,
                 EXISTS (SELECT 1 FROM vfolders v WHERE v.id = t.vfolder_id) AS row_exists
               FROM vfolder_tombstones t
               WHERE t.removal = 'pending' AND t.host IN (SELECT value FROM json_each($1))
                 AND t.vfolder_id NOT IN (SELECT value FROM json_each($2))
                 AND (t.lease_owner IS NULL OR t.lease_expires_at < $4)
                 AND (t.next_attempt_at IS NULL OR t.next_attempt_at <= $4)
               ORDER BY t.deleted_at LIMIT $3"#
        ))
        .bind(json_list(&req.hosts))
        .bind(uuid_list(&req.exclude))
        .bind(i64::from(req.limit))
        .bind(&now)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("claiming tombstones"))?;
        let expires = after(req.lease);
        let mut claims = Vec::with_capacity(rows.len());
        for row in &rows {
            let ctx = "claiming tombstones";
            let tombstone = tombstone_from_row(row)?;
            sqlx::query(
                "UPDATE vfolder_tombstones SET lease_owner = $2, lease_expires_at = $3 WHERE seq = $1",
            )
            .bind(tombstone.seq)
            .bind(&req.owner)
            .bind(&expires)
            .execute(&mut *tx)
            .await
            .map_err(db(ctx))?;
            claims.push(TombstoneClaim {
                tombstone,
                row_exists: row.try_get("row_exists").map_err(db(ctx))?,
                reclaimed_from: row.try_get("prev_owner").map_err(db(ctx))?,
            });
        }
        tx.commit()
            .await
            .map_err(db("committing tombstone claims"))?;
        Ok(claims)
    }

    async fn inherited_tombstone(&self, id: Uuid, owner: &str) -> Result<Option<i64>> {
        sqlx::query_scalar(
            "SELECT seq FROM vfolder_tombstones
             WHERE vfolder_id = $1 AND lease_owner = $2 AND removal = 'pending'
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(id.to_string())
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
            "UPDATE vfolder_tombstones
             SET lease_expires_at = $3, files = $4, dirs = $5, symlinks = $6, bytes = $7
             WHERE seq = $1 AND lease_owner = $2 AND removal = 'pending'
               AND NOT EXISTS (SELECT 1 FROM vfolders v
                               WHERE v.id = vfolder_tombstones.vfolder_id)",
        )
        .bind(seq)
        .bind(owner)
        .bind(after(lease))
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
        let attempts: Option<i64> = sqlx::query_scalar(
            "UPDATE vfolder_tombstones
             SET attempts = attempts + 1, next_attempt_at = $3, last_error = $4,
                 lease_owner = NULL, lease_expires_at = NULL
             WHERE seq = $1 AND lease_owner = $2
             RETURNING attempts",
        )
        .bind(seq)
        .bind(owner)
        .bind(ts(next_attempt_at))
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
                 WHERE deleted_at <= $1 AND removal <> 'pending'
                 ORDER BY deleted_at LIMIT $2)",
        )
        .bind(before(retention))
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
            " FROM vfolders v WHERE v.id IN (SELECT value FROM json_each($1))"
        ))
        .bind(uuid_list(ids))
        .fetch_all(&self.pool)
        .await
        .map_err(db("looking up vfolders"))?;
        rows.iter().map(folder_from_row).collect()
    }

    async fn latest_tombstones(&self, ids: &[Uuid]) -> Result<Vec<Tombstone>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            tombstone_columns!(),
            " FROM vfolder_tombstones t
              WHERE t.seq IN (SELECT max(seq) FROM vfolder_tombstones
                              WHERE vfolder_id IN (SELECT value FROM json_each($1))
                              GROUP BY vfolder_id)"
        ))
        .bind(uuid_list(ids))
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
            " FROM vfolders v WHERE v.host = $1 AND ($2 IS NULL OR v.id > $2)
              ORDER BY v.id LIMIT $3"
        ))
        .bind(host)
        .bind(after.map(|id| id.to_string()))
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
        let at = ts(seen_at);
        let mut tx = self.begin().await?;
        let mut out = Vec::with_capacity(seen.len());
        for s in seen {
            let row = sqlx::query(
                "INSERT INTO vfolder_orphan_sightings AS o
                     (host, path, vfolder_id, scope, trash, first_seen, last_seen)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)
                 ON CONFLICT (host, path) DO UPDATE SET
                     vfolder_id = excluded.vfolder_id, scope = excluded.scope,
                     trash = excluded.trash,
                     scans = o.scans + CASE WHEN o.last_seen < excluded.last_seen THEN 1 ELSE 0 END,
                     last_seen = max(o.last_seen, excluded.last_seen)
                 RETURNING *",
            )
            .bind(host)
            .bind(&s.path)
            .bind(s.vfolder_id.to_string())
            .bind(s.scope.map(|u| u.to_string()))
            .bind(s.trash)
            .bind(&at)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("recording orphan sightings"))?;
            out.push(sighting_from_row(&row)?);
        }
        tx.commit()
            .await
            .map_err(db("committing orphan sightings"))?;
        Ok(out)
    }

    async fn finish_scan(&self, summary: &ScanSummary) -> Result<u64> {
        let mut tx = self.begin().await?;
        let ended =
            sqlx::query("DELETE FROM vfolder_orphan_sightings WHERE host = $1 AND last_seen < $2")
                .bind(&summary.host)
                .bind(ts(summary.started_at))
                .execute(&mut *tx)
                .await
                .map_err(db("ending orphan sightings"))?;
        sqlx::query(
            "INSERT OR REPLACE INTO vfolder_orphan_scans (host, started_at, finished_at, counted,
                 orphans, orphan_bytes, unfinished, unfinished_bytes, missing, foreign_entries,
                 actor)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&summary.host)
        .bind(ts(summary.started_at))
        .bind(ts(summary.finished_at))
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
             WHERE o.host = $1 AND o.first_seen <= $2
               AND o.last_seen >= sc.started_at AND o.scans >= 2
               AND NOT EXISTS (SELECT 1 FROM vfolders v WHERE v.id = o.vfolder_id)
               AND NOT EXISTS (SELECT 1 FROM vfolder_tombstones t
                               WHERE t.vfolder_id = o.vfolder_id
                                 AND (t.deleted_at >= o.first_seen OR t.removal = 'pending'))
             ORDER BY o.first_seen, o.path LIMIT $3",
        )
        .bind(host)
        .bind(before(grace))
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

/// Upserts a volume's availability row (see `migrations/sqlite/20261128200000_*`).
async fn record_volume_state(pool: &SqlitePool, state: &super::VolumeState) -> Result<()> {
    sqlx::query(
        "INSERT INTO vfolder_volume_state (host, available, since, reason, replica, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (host) DO UPDATE SET available = excluded.available,
             since = excluded.since, reason = excluded.reason, replica = excluded.replica,
             updated_at = excluded.updated_at",
    )
    .bind(&state.host)
    .bind(state.available)
    .bind(ts(state.since))
    .bind(&state.reason)
    .bind(&state.replica)
    .bind(ts(Utc::now()))
    .execute(pool)
    .await
    .map_err(db("recording volume state"))?;
    Ok(())
}

/// Reads a volume's availability row.
async fn volume_state(pool: &SqlitePool, host: &str) -> Result<Option<super::VolumeState>> {
    let row: Option<(bool, String, Option<String>, String, String)> = sqlx::query_as(
        "SELECT available, since, reason, replica, updated_at
         FROM vfolder_volume_state WHERE host = $1",
    )
    .bind(host)
    .fetch_optional(pool)
    .await
    .map_err(db("reading volume state"))?;
    let Some((available, since, reason, replica, updated_at)) = row else {
        return Ok(None);
    };
    Ok(Some(super::VolumeState {
        host: host.to_owned(),
        available,
        since: parse_ts(&since)?,
        reason,
        replica,
        updated_at: parse_ts(&updated_at)?,
    }))
}
