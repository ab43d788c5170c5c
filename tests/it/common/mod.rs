//! Test databases shared by the integration tests: a fresh PostgreSQL database or SQLite file
//! per test, a store on it, and raw-SQL helpers that bypass the store (to prove what the
//! database itself enforces).
//!
//! PostgreSQL comes from `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! when it is unreachable the test fails with a message saying so — it never skips.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgPool, SqlitePool};
use uuid::Uuid;
use vfolder_controller::store::{self, Store};

/// The default PostgreSQL server for tests.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

/// A fresh, empty (unmigrated) database, removed when dropped (best effort).
pub struct TestDb {
    /// The backend.
    pub backend: Backend,
    /// URL of the test database, for `store::connect`.
    pub url: String,
    admin_url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// Replaces the database name of a PostgreSQL URL.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{}", &base[..path_start], name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl TestDb {
    /// A new PostgreSQL database `vfc_test_<uuid>`; panics with a clear message when the
    /// server is unreachable.
    pub async fn postgres() -> Self {
        let admin = admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is unreachable at {admin} ({e}). These tests need a real server: \
                 start it (pg_ctlcluster --skip-systemctl-redirect 15 main start) or set DATABASE_URL"
            )
        });
        let name = format!("vfc_test_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        let _ = conn.close().await;
        Self {
            backend: Backend::Postgres,
            url: with_database(&admin, &name),
            admin_url: admin,
            pg_name: Some(name),
            _dir: None,
        }
    }

    /// A new SQLite file in a temporary directory (the file itself does not exist yet).
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("vfc.db").display());
        Self {
            backend: Backend::Sqlite,
            url,
            admin_url: String::new(),
            pg_name: None,
            _dir: Some(dir),
        }
    }

    /// A store on this database, not migrated.
    pub async fn store(&self) -> Arc<dyn Store> {
        store::connect(&self.url).await.expect("connect store")
    }

    /// A migrated store.
    pub async fn migrated(&self) -> Arc<dyn Store> {
        let s = self.store().await;
        s.migrate(false).await.expect("migrate");
        s
    }

    /// A raw SQL connection pool to this database (bypassing the store).
    pub async fn raw(&self) -> Raw {
        match self.backend {
            Backend::Postgres => Raw::Pg(PgPool::connect(&self.url).await.expect("raw pg pool")),
            Backend::Sqlite => {
                let opts: sqlx::sqlite::SqliteConnectOptions =
                    self.url.parse().expect("sqlite url");
                Raw::Lite(
                    SqlitePool::connect_with(
                        opts.create_if_missing(true)
                            .busy_timeout(std::time::Duration::from_secs(5)),
                    )
                    .await
                    .expect("raw sqlite pool"),
                )
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let admin = self.admin_url.clone();
        // Drop runs inside the test's runtime; use a private one on another thread.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// Raw SQL access; errors are returned as the database's message text.
pub enum Raw {
    /// PostgreSQL.
    Pg(PgPool),
    /// SQLite.
    Lite(SqlitePool),
}

fn msg(e: sqlx::Error) -> String {
    match e.as_database_error() {
        Some(d) => d.message().to_owned(),
        None => e.to_string(),
    }
}

impl Raw {
    /// Runs SQL text that both backends understand (ids as `'…'` literals work on both).
    pub async fn execute(&self, sql: &str) -> Result<u64, String> {
        match self {
            Raw::Pg(p) => sqlx::raw_sql(sql)
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
            Raw::Lite(p) => sqlx::raw_sql(sql)
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
        }
        .map_err(msg)
    }

    /// `UPDATE vfolders SET status = … WHERE id = …`, as psql or sqlite3 would run it.
    pub async fn set_status(&self, id: Uuid, status: &str) -> Result<u64, String> {
        self.execute(&format!(
            "UPDATE vfolders SET status = '{status}' WHERE id = '{id}'"
        ))
        .await
    }

    /// The same, naming an actor the way a SQL writer does on each backend, in one
    /// transaction.
    pub async fn set_status_as(&self, id: Uuid, status: &str, actor: &str) -> Result<u64, String> {
        let update = format!("UPDATE vfolders SET status = '{status}' WHERE id = '{id}'");
        match self {
            Raw::Pg(p) => {
                let mut tx = p.begin().await.map_err(msg)?;
                sqlx::raw_sql(&format!("SET LOCAL vfolder.actor = '{actor}'"))
                    .execute(&mut *tx)
                    .await
                    .map_err(msg)?;
                let n = sqlx::raw_sql(&update)
                    .execute(&mut *tx)
                    .await
                    .map_err(msg)?;
                tx.commit().await.map_err(msg)?;
                Ok(n.rows_affected())
            }
            Raw::Lite(p) => {
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await.map_err(msg)?;
                sqlx::raw_sql(&format!(
                    "INSERT OR REPLACE INTO vfolder_actor (id, actor) VALUES (1, '{actor}')"
                ))
                .execute(&mut *tx)
                .await
                .map_err(msg)?;
                let n = sqlx::raw_sql(&update)
                    .execute(&mut *tx)
                    .await
                    .map_err(msg)?;
                sqlx::raw_sql("DELETE FROM vfolder_actor")
                    .execute(&mut *tx)
                    .await
                    .map_err(msg)?;
                tx.commit().await.map_err(msg)?;
                Ok(n.rows_affected())
            }
        }
    }

    /// The minimal insert every writer may use.
    pub async fn insert(&self, id: Uuid, name: &str, status: Option<&str>) -> Result<u64, String> {
        let sql = match status {
            None => format!(
                "INSERT INTO vfolders (id, host, quota_scope_id, name) VALUES ('{id}', 'local:volume1', NULL, '{name}')"
            ),
            Some(s) => format!(
                "INSERT INTO vfolders (id, host, quota_scope_id, name, status) VALUES ('{id}', 'local:volume1', NULL, '{name}', '{s}')"
            ),
        };
        self.execute(&sql).await
    }

    /// One text value (the first column of the first row), or `None`.
    pub async fn text(&self, sql: &str) -> Option<String> {
        match self {
            Raw::Pg(p) => sqlx::query_scalar(sql).fetch_optional(p).await,
            Raw::Lite(p) => sqlx::query_scalar(sql).fetch_optional(p).await,
        }
        .expect("raw text query")
        .flatten()
    }

    /// One integer value.
    pub async fn int(&self, sql: &str) -> i64 {
        match self {
            Raw::Pg(p) => sqlx::query_scalar(sql).fetch_one(p).await,
            Raw::Lite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        }
        .expect("raw int query")
    }

    /// A row's status text.
    pub async fn status(&self, id: Uuid) -> String {
        self.text(&format!("SELECT status FROM vfolders WHERE id = '{id}'"))
            .await
            .expect("row exists")
    }

    /// A row's `status_history` as JSON.
    pub async fn history(&self, id: Uuid) -> Vec<serde_json::Value> {
        let sql = match self {
            Raw::Pg(_) => format!("SELECT status_history::text FROM vfolders WHERE id = '{id}'"),
            Raw::Lite(_) => format!("SELECT status_history FROM vfolders WHERE id = '{id}'"),
        };
        let text = self.text(&sql).await.expect("row exists");
        serde_json::from_str(&text).expect("history is a JSON list")
    }

    /// A row's `status_changed` as text (for equality checks only).
    pub async fn status_changed(&self, id: Uuid) -> Option<String> {
        let sql = match self {
            Raw::Pg(_) => format!("SELECT status_changed::text FROM vfolders WHERE id = '{id}'"),
            Raw::Lite(_) => format!("SELECT status_changed FROM vfolders WHERE id = '{id}'"),
        };
        self.text(&sql).await
    }

    /// The seeded transition table, sorted.
    /// The transitions every table accepts (PostgreSQL also stores those only an adopted
    /// table accepts: [`Raw::adopted_transitions`]).
    pub async fn transitions(&self) -> Vec<(String, String)> {
        let sql = "SELECT from_status, to_status FROM vfolder_status_transitions ORDER BY 1, 2";
        match self {
            Raw::Pg(p) => {
                sqlx::query_as(
                    "SELECT from_status, to_status FROM vfolder_status_transitions
                     WHERE NOT adopted_only ORDER BY 1, 2",
                )
                .fetch_all(p)
                .await
            }
            Raw::Lite(p) => sqlx::query_as(sql).fetch_all(p).await,
        }
        .expect("transitions")
    }

    /// The transitions only an adopted table accepts (PostgreSQL; none on SQLite).
    pub async fn adopted_transitions(&self) -> Vec<(String, String)> {
        match self {
            Raw::Pg(p) => sqlx::query_as(
                "SELECT from_status, to_status FROM vfolder_status_transitions
                 WHERE adopted_only ORDER BY 1, 2",
            )
            .fetch_all(p)
            .await
            .expect("adopted transitions"),
            Raw::Lite(_) => Vec::new(),
        }
    }

    /// Sets a timestamp column of `table` (keyed by `key`) to `at`, in the backend's
    /// representation (to age rows without sleeping).
    pub async fn set_time(
        &self,
        table: &str,
        column: &str,
        key: &str,
        id: Uuid,
        at: DateTime<Utc>,
    ) {
        let value = match self {
            Raw::Pg(_) => format!("'{}'::timestamptz", at.to_rfc3339()),
            Raw::Lite(_) => format!("'{}'", vfolder_controller::store::sqlite::ts(at)),
        };
        let n = self
            .execute(&format!(
                "UPDATE {table} SET {column} = {value} WHERE {key} = '{id}'"
            ))
            .await
            .expect("set time");
        assert_eq!(n, 1, "set_time touched {n} rows of {table}");
    }

    /// Moves a folder's `status_changed` into the past (trigger-free: status is untouched).
    pub async fn age_status(&self, id: Uuid, by: chrono::Duration) {
        self.set_time("vfolders", "status_changed", "id", id, Utc::now() - by)
            .await;
    }

    /// Makes a held lease expire.
    pub async fn expire_lease(&self, id: Uuid) {
        self.set_time(
            "vfolder_controller_state",
            "lease_expires_at",
            "vfolder_id",
            id,
            Utc::now() - chrono::Duration::minutes(1),
        )
        .await;
    }
}

/// Instantiates one conformance test (an `async fn NAME(db: TestDb)` in the including file)
/// for both backends: `NAME::postgres` and `NAME::sqlite`.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::TestDb::postgres().await).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::TestDb::sqlite().await).await;
                }
            }
        )+
    };
}
