//! Which kind of database the controller works on, and what `migrate` and `unadopt` change.
//!
//! A database is **own** (this program created `vfolders`) or **adopted** (the reference
//! platform created it and keeps writing to it). `migrate` finds out before it changes
//! anything:
//!
//! 1. `vfolder_controller_meta` exists: the mode recorded there.
//! 2. Else the migration bookkeeping shows the own schema's first migration: own (a
//!    database migrated before the mode was recorded), or the adoption migration: adopted
//!    (an adoption that stopped half-way resumes).
//! 3. Else `vfolders` exists: a table to adopt, which only `migrate --adopt` does.
//! 4. Else: a new own database.
//!
//! The [`MigrationPlan`] is computed by the same code whether it is printed
//! (`migrate --dry-run`) or carried out, so the preview is what happens. The objects an
//! adoption adds (`ADDED`) are listed once: the plan prints them and `unadopt` drops them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::lifecycle::SchemaMode;

/// The kind of database, as `migrate` recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Schema {
    /// Own or adopted.
    pub mode: SchemaMode,
    /// When the table was adopted.
    pub adopted_at: Option<DateTime<Utc>>,
}

impl Schema {
    /// The own schema (SQLite, or a PostgreSQL table this program created).
    pub const OWN: Schema = Schema {
        mode: SchemaMode::Own,
        adopted_at: None,
    };

    /// When the timers (trash retention, history retention) start counting a folder that
    /// entered its status at `status_changed`. On an adopted table no earlier than the
    /// adoption, and an unknown time (NULL) counts from the adoption: a stale timestamp is
    /// never a reason to delete. On an own table, `status_changed` itself (its trigger
    /// stamped it). The trash timer's, the history cleanup's and the age gauge's SQL apply
    /// the same rule.
    pub fn clock_start(&self, status_changed: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        match (status_changed, self.adopted_at) {
            (Some(t), Some(adopted)) => Some(t.max(adopted)),
            (t, adopted) => t.or(adopted),
        }
    }
}

/// A migration not yet applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingMigration {
    /// Its version (the file name's number).
    pub version: i64,
    /// Its description (the rest of the file name).
    pub description: String,
}

/// Rows stored in a legacy spelling, and what they become.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Remap {
    /// The stored spelling.
    pub from: String,
    /// The status it becomes.
    pub to: String,
    /// How many rows.
    pub rows: i64,
    /// A few of them.
    pub sample: Vec<Uuid>,
}

/// Live folders of one owner that share a name (the platform has no such constraint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DuplicateName {
    /// The owner (user or group).
    pub owner: Option<Uuid>,
    /// The shared name.
    pub name: String,
    /// The folders.
    pub ids: Vec<Uuid>,
}

/// What `migrate` does (or did) to a database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationPlan {
    /// `postgres` or `sqlite`.
    pub backend: &'static str,
    /// The database's mode after the migration.
    pub mode: SchemaMode,
    /// The existing table is adopted by this migration (first migration of an adopted
    /// database); the fields below describe its rows.
    pub adopting: bool,
    /// Migrations still to apply, in order.
    pub pending: Vec<PendingMigration>,
    /// Objects the adoption adds (empty unless `adopting`).
    pub adds: Vec<String>,
    /// Rows in `vfolders`.
    pub rows: i64,
    /// Legacy spellings rewritten to the status they stand for.
    pub remaps: Vec<Remap>,
    /// Folders in the trash (including remapped ones) whose trash retention starts at the
    /// adoption, whatever their `status_changed` says.
    pub trash_clock_started: i64,
    /// `delete-complete` folders whose history retention starts at the adoption.
    pub history_clock_started: i64,
    /// Rows in statuses the controller does not own, per status: left alone.
    pub foreign_statuses: Vec<(String, i64)>,
    /// Groups of live folders sharing an owner and a name (at most a few), and how many
    /// groups there are in all. An adopted table gets no name index.
    pub duplicates: Vec<DuplicateName>,
    /// Number of duplicate groups.
    pub duplicate_groups: i64,
}

impl MigrationPlan {
    /// A plan with nothing about rows, for a database that is not being adopted.
    pub(crate) fn schema_only(
        backend: &'static str,
        mode: SchemaMode,
        pending: Vec<PendingMigration>,
    ) -> Self {
        MigrationPlan {
            backend,
            mode,
            adopting: false,
            pending,
            adds: Vec::new(),
            rows: 0,
            remaps: Vec::new(),
            trash_clock_started: 0,
            history_clock_started: 0,
            foreign_statuses: Vec::new(),
            duplicates: Vec::new(),
            duplicate_groups: 0,
        }
    }
}

/// What `unadopt` drops (or dropped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnadoptPlan {
    /// The objects, in the order they are dropped.
    pub drops: Vec<String>,
    /// Audit entries that go with the audit table (export them first: `audit --json`).
    pub audit_entries: i64,
    /// Folders the controller was removing (`delete-ongoing`): they stay in that status for
    /// the platform, with their data partly removed.
    pub delete_ongoing: i64,
}

/// One object the controller adds to an adopted database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Added {
    /// A trigger on `vfolders`, and what it does.
    Trigger(&'static str, &'static str),
    /// A function: its name, its argument types (as `DROP FUNCTION` wants them) and what it
    /// is for.
    Function(&'static str, &'static str, &'static str),
    /// An index on `vfolders`, built concurrently.
    Index(&'static str, &'static str),
    /// A table of the controller's.
    Table(&'static str, &'static str),
}

/// Everything an adoption adds, in the order `unadopt` drops it (the triggers before their
/// functions; the state table, whose foreign key points at `vfolders`, with the tables).
pub(crate) const ADDED: [Added; 16] = [
    Added::Trigger(
        "vfolders_status_change",
        "BEFORE INSERT OR UPDATE OF status: checks the deletion lifecycle, stamps status_changed, appends history in the row's shape, NOTIFY vfolder_status",
    ),
    Added::Trigger(
        "vfolders_tombstone",
        "BEFORE DELETE: records the deleted row in vfolder_tombstones and the audit log; never refuses a delete",
    ),
    Added::Function("vfolder_status_change", "", "the status trigger's body"),
    Added::Function("vfolder_tombstone", "", "the tombstone trigger's body"),
    Added::Function(
        "vfolder_controller_claim",
        "text[], text[], uuid[], bigint, text, double precision",
        "claims due rows for a replica, one statement per claim",
    ),
    Added::Index("vfolders_status_changed_idx", "(status, status_changed)"),
    Added::Index("vfolders_host_status_idx", "(host, status)"),
    Added::Table(
        "vfolder_controller_state",
        "attempts, leases, progress per folder; foreign key to vfolders(id) ON DELETE CASCADE",
    ),
    Added::Table(
        "vfolder_audit",
        "append-only audit log (legacy remaps included)",
    ),
    Added::Table(
        "vfolder_status_transitions",
        "the deletion lifecycle's legal transitions",
    ),
    Added::Table(
        "vfolder_volume_state",
        "each volume's availability as the replicas last saw it",
    ),
    Added::Table(
        "vfolder_tombstones",
        "one row per deleted vfolders row (id, host, quota scope, status, actor, time) and the removal the controller finishes for rows deleted while delete-ongoing",
    ),
    Added::Table(
        "vfolder_orphan_sightings",
        "folder directories `orphans scan` saw without a row, and since when",
    ),
    Added::Table(
        "vfolder_orphan_scans",
        "the last complete orphan scan of each volume and its totals",
    ),
    Added::Table(
        "vfolder_controller_meta",
        "the mode (adopted) and the adoption time",
    ),
    Added::Table("_sqlx_migrations", "the controller's migration bookkeeping"),
];

impl Added {
    /// A line for the plan.
    pub(crate) fn describe(self) -> String {
        match self {
            Added::Trigger(name, what) => format!("trigger  {name} on vfolders ({what})"),
            Added::Function(name, args, what) => format!("function {name}({args}) ({what})"),
            Added::Index(name, cols) => {
                format!("index    {name} on vfolders {cols} (built CONCURRENTLY)")
            }
            Added::Table(name, what) => format!("table    {name}: {what}"),
        }
    }

    /// The statement that removes it again.
    pub(crate) fn drop_sql(self) -> String {
        match self {
            Added::Trigger(name, _) => format!("DROP TRIGGER IF EXISTS {name} ON vfolders"),
            Added::Function(name, args, _) => format!("DROP FUNCTION IF EXISTS {name}({args})"),
            Added::Index(name, _) => format!("DROP INDEX IF EXISTS {name}"),
            Added::Table(name, _) => format!("DROP TABLE IF EXISTS {name}"),
        }
    }
}

/// The migrations of `migrator` that `applied` (versions) lacks.
pub(crate) fn pending(
    migrator: &sqlx::migrate::Migrator,
    applied: &[i64],
) -> Vec<PendingMigration> {
    migrator
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| PendingMigration {
            version: m.version,
            description: m.description.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::ADDED;

    #[test]
    fn the_adoption_guide_lists_everything_an_adoption_adds() {
        let guide = include_str!("../../docs/adopting.md");
        for added in ADDED {
            let drop = added.drop_sql();
            let name = drop
                .split_whitespace()
                .find(|w| w.starts_with("vfolder") || w.starts_with("_sqlx"))
                .and_then(|w| w.split('(').next())
                .unwrap_or_default();
            assert!(
                guide.contains(&format!("`{name}")),
                "docs/adopting.md does not name {name}"
            );
        }
    }
}
