//! The admin command line: `run` starts the controller; every other subcommand is one
//! trash-bin or maintenance operation on one database row, recorded with the actor.
//!
//! Guarantees: every status change goes through [`Store::set_status`](crate::store::Store),
//! so the database trigger enforces the lifecycle and writes history and audit with the
//! actor. A command that fails changes nothing, and its error maps to one exit code class
//! ([`ExitClass`]) so scripts can tell "not found" from "database down". Commands whose
//! target status is reachable from several statuses (`purge`, `force-delete`, `retry`,
//! `restore`) also check that the folder is in the status the command is meant for, so a
//! `purge` of a live folder cannot silently become a force-delete.

pub mod commands;
pub mod orphans;
pub mod output;
pub mod run;

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

use crate::config::{self, Config, LogFormat};
use crate::lifecycle::Status;
use crate::store;

pub use commands::execute;

/// Exit codes, one per error class; `--help` and the README list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitClass {
    /// 1: anything not covered below (I/O on the volume, unexpected database error).
    Other = 1,
    /// 2: bad command line or input (unknown flag, bad uuid, bad duration, unknown volume).
    Usage = 2,
    /// 3: no vfolder with this id.
    NotFound = 3,
    /// 4: the lifecycle forbids it: illegal transition, wrong status for the command, name
    /// taken, not forgettable.
    Conflict = 4,
    /// 5: the database is unreachable or not migrated.
    DatabaseUnavailable = 5,
    /// 6: the configuration file, environment or database URL is invalid.
    Config = 6,
}

/// The exit codes as `--help` shows them.
const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (also when the folder already had the requested status: nothing to do)
  1  other error (e.g. I/O on the volume)
  2  bad command line or input (unknown flag, bad uuid, bad duration, unknown volume)
  3  no vfolder with this id
  4  not allowed by the lifecycle (illegal transition, wrong status for the command, name taken)
  5  database unreachable or not migrated (run `vfolder-controller migrate`)
  6  invalid configuration (file, VFOLDER_CONTROLLER_* variables, database URL)
A failing command changes nothing.";

/// The errors of a CLI command. Only `main` turns them into a message and an exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] config::Error),
    /// The log filter or format cannot be set up.
    #[error(transparent)]
    Logging(#[from] crate::observe::Error),
    /// The database refused or failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The PostgreSQL schema is missing or older than this binary.
    #[error("database is not migrated ({0}); run `vfolder-controller migrate` first")]
    NotMigrated(String),
    /// The folder is not in the status this command works on (although the database would
    /// allow the transition, another command is meant for it).
    #[error("vfolder {id} is {status}; {command} {hint}")]
    WrongStatus {
        /// The folder.
        id: Uuid,
        /// Its current status.
        status: Status,
        /// The command name.
        command: &'static str,
        /// What the command works on and what to use instead.
        hint: String,
    },
    /// `--host` names no configured volume.
    #[error("volume {host:?} is not configured (configured: {configured})")]
    UnknownVolume {
        /// The requested host.
        host: String,
        /// The configured hosts, comma separated.
        configured: String,
    },
    /// A flag value that clap cannot check by type (e.g. `--since`).
    #[error("invalid {flag} {value:?}: {reason}")]
    BadInput {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// The storage layer refused or failed (creating a folder's directory).
    #[error("volume {host}: {source}")]
    Storage {
        /// The volume.
        host: String,
        /// The cause.
        source: crate::storage::Error,
    },
    /// A local filesystem operation failed (the built-in volume directory).
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing to standard output failed.
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
}

impl Error {
    /// The exit code class of this error.
    pub fn class(&self) -> ExitClass {
        match self {
            Error::Config(_) | Error::Logging(_) => ExitClass::Config,
            Error::Store(e) => store_class(e),
            Error::WrongStatus { .. } => ExitClass::Conflict,
            Error::NotMigrated(_) => ExitClass::DatabaseUnavailable,
            Error::UnknownVolume { .. } | Error::BadInput { .. } => ExitClass::Usage,
            Error::Storage { .. } | Error::Io { .. } | Error::Output(_) => ExitClass::Other,
        }
    }

    /// The process exit code of this error.
    pub fn exit_code(&self) -> u8 {
        self.class() as u8
    }
}

fn store_class(e: &store::Error) -> ExitClass {
    use store::Error as E;
    match e {
        E::NotFound(_) => ExitClass::NotFound,
        E::IllegalTransition { .. }
        | E::NameTaken { .. }
        | E::NotForgettable { .. }
        | E::UnknownStatus { .. }
        | E::AdoptionRequired { .. }
        | E::AdoptedTable(_)
        | E::NotAdopted(_)
        | E::NotAdoptable(_)
        | E::ControllerRunning(..) => ExitClass::Conflict,
        // A URL that does not parse is refused at load (config::check_database_url); this
        // catches any option sqlx refuses only when connecting.
        E::UnsupportedUrl(_)
        | E::Database {
            source: sqlx::Error::Configuration(_),
            ..
        } => ExitClass::Config,
        E::NotMigrated(_) => ExitClass::DatabaseUnavailable,
        E::Migrate(sqlx::migrate::MigrateError::Execute(source)) if is_unreachable(source) => {
            ExitClass::DatabaseUnavailable
        }
        E::Database { source, .. } if e.is_transient() || is_unreachable(source) => {
            ExitClass::DatabaseUnavailable
        }
        _ => ExitClass::Other,
    }
}

/// Connection-level failures: the database could not be reached or talked to.
fn is_unreachable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Protocol(_)
    ) || e
        .as_database_error()
        .and_then(|d| d.code())
        // 08: connection exception, 3D000: database does not exist, 28: authentication,
        // 57P: server shutting down; SQLite 14: SQLITE_CANTOPEN.
        .is_some_and(|c| {
            c.starts_with("08")
                || c == "3D000"
                || c.starts_with("28")
                || c.starts_with("57P")
                || c == "14"
        })
}

/// `vfolder-controller`: the trash-bin controller for virtual folders and its admin commands.
#[derive(Debug, Parser)]
#[command(
    name = "vfolder-controller",
    version,
    about = "Reconciliation controller for the deletion lifecycle (trash bin) of virtual folders, and its admin commands",
    long_about = "Reconciliation controller for the deletion lifecycle (trash bin) of virtual folders.\n\n\
`run` starts the controller; the other commands change one folder's status (recorded with \
--actor in the folder's history and the audit log) or read the state. The controller does \
the filesystem work: a folder set to delete-ongoing is removed by the running controller.\n\n\
Lifecycle: ready --trash--> delete-pending --purge (or trash timer)--> delete-ongoing --> \
delete-complete; delete-pending --restore--> ready; ready --force-delete--> delete-ongoing; \
delete-ongoing --failure--> delete-error --retry--> delete-ongoing; delete-error --forget--> (row removed).",
    after_help = EXIT_CODES_HELP,
    after_long_help = EXIT_CODES_HELP,
)]
pub struct Cli {
    /// Configuration file (TOML; see deploy/config.example.toml). Without it: defaults and
    /// VFOLDER_CONTROLLER_* variables.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "VFOLDER_CONTROLLER_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Database URL (postgres://user@host/db or sqlite://FILE); overrides the file and
    /// VFOLDER_CONTROLLER_DATABASE_URL.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "URL"
    )]
    pub database_url: Option<String>,

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    /// Who is acting, recorded in the status history and the audit log. Default: the OS user.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "NAME"
    )]
    pub actor: Option<String>,

    /// Log line format of `run` (overrides `[log] format`).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "FORMAT"
    )]
    pub log_format: Option<LogFormat>,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the database migrations (idempotent; run it again after an upgrade), or adopt
    /// an existing reference-platform table with --adopt (preview it with --dry-run).
    #[command(
        long_about = "Apply the embedded database migrations for the configured backend. \
Running it again is a no-op. `run` migrates by itself; on PostgreSQL the admin commands \
require a migrated database, on SQLite they migrate on first use.\n\n\
A PostgreSQL database whose vfolders table the reference platform (Backend.AI) created is \
adopted only when asked (--adopt): the controller then adds its own tables, indexes (built \
concurrently) and a status trigger beside the table, never retypes, reshapes or drops its \
columns or rows, remaps legacy statuses as the platform meant them (deleted-complete -> \
delete-pending, purge-ongoing -> delete-ongoing), leaves statuses it does not own (mounted, \
error, ...) alone, and starts a full trash retention for every folder already in the trash. \
--dry-run prints all of that, row counts included, and changes nothing; `unadopt` takes it \
back. See docs/adopting.md.",
        after_help = "Examples:\n  vfolder-controller --database-url postgres://postgres@db/vfolders migrate\n  vfolder-controller --database-url postgres://backend@db/backend migrate --dry-run\n  vfolder-controller --database-url postgres://backend@db/backend migrate --adopt"
    )]
    Migrate(MigrateArgs),

    /// Give an adopted table back: remove everything the controller added to the database.
    #[command(
        long_about = "The way back from `migrate --adopt`: drops the controller's trigger, \
function, indexes on vfolders and its own tables (state, audit log, transitions, mode, \
migration bookkeeping) in one transaction, and leaves the vfolders table with the \
platform's columns and rows, statuses as they are at that moment. Stop every controller \
replica first (refused while leases are held, unless --force); export the audit log first \
if you want to keep it (`audit --json`). Refused on a database whose table the controller \
created.",
        after_help = "Examples:\n  vfolder-controller --database-url postgres://backend@db/backend unadopt --dry-run\n  vfolder-controller --database-url postgres://backend@db/backend unadopt"
    )]
    Unadopt(UnadoptArgs),

    /// Start the controller: migrate, then converge folders until SIGTERM/SIGINT/SIGHUP.
    #[command(
        long_about = "Start the controller: connect, migrate, then remove folders that are \
delete-ongoing, purge the trash after its retention and clean up old delete-complete rows, \
until SIGTERM, SIGINT or SIGHUP (graceful: removals stop between two entries, their \
progress is saved and their leases released; exit 0; a second signal exits at once; SIGHUP \
does not reload the configuration: restart the process). Without configured volumes it serves the built-in volume \
local:volume1 under ./var/volumes/volume1 (created if missing).",
        after_help = "Example:\n  vfolder-controller run                       # embedded SQLite, built-in volume\n  vfolder-controller --config /etc/vfolder-controller.toml --log-format json run"
    )]
    Run,

    /// The admin commands (they need a migrated database).
    #[command(flatten)]
    Admin(Admin),
}

/// The admin subcommands: one folder operation or one read each.
#[derive(Debug, Subcommand)]
pub enum Admin {
    /// Create a ready folder: its row and its directory on a volume (for trying the system).
    #[command(
        long_about = "Create a folder in status ready: the directory on the volume (at the \
layout path <mount>/<scope uuid hex>/<id[0:2]>/<id[2:4]>/<id[4:]>) and the row. The name \
must be free among the owner's live and trashed folders.",
        after_help = "Example:\n  vfolder-controller create datasets --user 3f1c0f6e-1b7a-4f7e-9a53-0c2a8d1e4b11"
    )]
    Create(CreateArgs),

    /// List folders (default: the live ones: ready, performing, cloning).
    #[command(
        after_help = "Examples:\n  vfolder-controller list\n  vfolder-controller list --status delete-error --status delete-complete"
    )]
    List(ListArgs),

    /// Move a folder to the trash (ready → delete-pending), or `trash list` to show the trash.
    #[command(
        args_conflicts_with_subcommands = true,
        subcommand_negates_reqs = true,
        long_about = "Move a folder to the trash: ready → delete-pending. The data stays (or \
is moved to the volume's trash directory with trash = \"move\"); the folder is no longer \
live and can be restored until the trash retention (or --purge-after) has passed, when the \
controller deletes it. `trash list` shows the trash: delete-pending and delete-ongoing folders.",
        after_help = "Examples:\n  vfolder-controller trash 7d3c9a52-0b8e-4c55-9a61-1f2e3d4c5b6a --purge-after 1d\n  vfolder-controller trash list"
    )]
    Trash(TrashArgs),

    /// Restore a folder from the trash: delete-pending → ready.
    #[command(
        long_about = "Restore a folder from the trash: delete-pending → ready. The data is \
untouched (or moved back from the volume's trash directory by the controller).",
        after_help = "Example:\n  vfolder-controller restore 7d3c9a52-0b8e-4c55-9a61-1f2e3d4c5b6a"
    )]
    Restore(IdArg),

    /// Delete a folder in the trash forever: delete-pending → delete-ongoing.
    #[command(
        long_about = "Delete a folder in the trash forever: delete-pending → delete-ongoing; \
the controller removes its files, then sets delete-complete. Only for folders in the trash \
(use force-delete for a live folder, retry for delete-error). Repeating it is a no-op.",
        after_help = "Example:\n  vfolder-controller purge 7d3c9a52-0b8e-4c55-9a61-1f2e3d4c5b6a"
    )]
    Purge(IdArg),

    /// Delete a live folder without the trash: ready → delete-ongoing (audited).
    #[command(
        name = "force-delete",
        long_about = "Delete a live folder at once, skipping the trash: ready → delete-ongoing; \
the controller removes its files. There is no undo. Recorded in the audit log as force-delete.",
        after_help = "Example:\n  vfolder-controller --actor alice force-delete 7d3c9a52-0b8e-4c55-9a61-1f2e3d4c5b6a"
    )]
    ForceDelete(IdArg),

    /// Retry a failed removal: delete-error → delete-ongoing.
    #[command(
        long_about = "Retry a removal that failed permanently: delete-error → delete-ongoing; \
the controller tries again with a fresh attempt count. Fix the cause first (see `show`).",
        after_help = "Example:\n  vfolder-controller retry 7d3c9a52-0b8e-4c55-9a61-1f2e3d4c5b6a"
    )]
    Retry(IdArg),

    /// Remove a delete-error row after manual cleanup (audited; the audit log keeps it).
    #[command(
        long_about = "Forget a folder whose removal failed, after you cleaned up its data by \
hand: the delete-error row and its controller state are deleted; the files are NOT touched. \
Only delete-error folders can be forgotten. The audit log keeps the entry.",
        after_help = "Example:\n  vfolder-controller forget 7d3c9a52-0b8e-4c55-9a61-1f2e3d4c5b6a"
    )]
    Forget(IdArg),

    /// Show one folder: status, path, history, attempts, next attempt, last error, lease, progress.
    #[command(
        after_help = "Example:\n  vfolder-controller show 7d3c9a52-0b8e-4c55-9a61-1f2e3d4c5b6a"
    )]
    Show(IdArg),

    /// Show a folder's status history (oldest first, with the actor of each change).
    #[command(
        after_help = "Example:\n  vfolder-controller history 7d3c9a52-0b8e-4c55-9a61-1f2e3d4c5b6a"
    )]
    History(IdArg),

    /// Show the audit log (oldest first), optionally of one folder or since a time.
    #[command(
        after_help = "Examples:\n  vfolder-controller audit --since 1h\n  vfolder-controller audit --id 7d3c9a52-0b8e-4c55-9a61-1f2e3d4c5b6a --since 2026-01-01T00:00:00Z"
    )]
    Audit(AuditArgs),

    /// Remove delete-complete rows older than a duration now (the controller does it too).
    #[command(
        name = "clean-history",
        long_about = "Remove delete-complete rows whose status changed more than --older-than \
ago, with their controller state; the audit log keeps an entry per row. The running \
controller does the same with history_retention; this runs it now.",
        after_help = "Example:\n  vfolder-controller clean-history --older-than 30d"
    )]
    CleanHistory(CleanHistoryArgs),

    /// Find data no row accounts for (`orphans scan`) and remove it after a grace period
    /// (`orphans reclaim`).
    #[command(subcommand)]
    Orphans(OrphansCommand),
}

/// `orphans scan` and `orphans reclaim`.
#[derive(Debug, Subcommand)]
pub enum OrphansCommand {
    /// Walk each volume's layout and report data no row accounts for (changes no data).
    #[command(
        long_about = "Walk each configured volume's folder layout (<mount>/[.trash/][<scope hex>/]<id[0:2]>/<id[2:4]>/<id[4:]>) and report, one line each:\n\n  orphan      a folder directory no row accounts for, with the story of the row it once had (its tombstone: who deleted it, when, in which status) where there is one, and since when scans have seen it without a row;\n  unfinished  a delete-complete row whose data still exists;\n  missing     a ready, performing, cloning or delete-pending row whose data is at neither its live nor its trash path (report only);\n  foreign     anything in the layout that is not a folder (a stray file, a symlink, lost+found, another mount): listed, never touched.\n\nThe scan never changes data on disk: it only lists directories (and with --count stats files), never follows symlinks, never crosses into other mounts, and runs in bounded memory. It does record what it saw in the controller's own tables: each orphan without a row starts or extends a sighting, a complete scan ends the sightings it did not see again, and its totals feed the controller's orphan gauges. `orphans reclaim` removes only orphans every scan has seen without a row for the volume's orphan_grace. On a terminal a progress line is shown on standard error. With --json, one JSON object per line (each finding with its volume, then a summary per volume).",
        after_help = "Examples:\n  vfolder-controller orphans scan\n  vfolder-controller orphans scan --volume local:volume1 --count\n  vfolder-controller --json orphans scan > scan.jsonl"
    )]
    Scan(OrphanScanArgs),

    /// Remove orphans every scan over the grace period saw without a row (audited).
    #[command(
        long_about = "Remove the orphans of each volume that are due: first seen by a scan at least the volume's orphan_grace ago (default 7 days), seen by the latest complete scan and at least one earlier one, with no row of that id now, no row of that id that came and went since (its tombstone), and no removal of that id still pending in the controller. Only the sighted directory is removed, with the controller's removal engine and its safety rules, and each reclaim is written to the audit log (orphan-reclaimed) with its counts. Foreign entries and directories whose id has a row are never removed. Run `orphans scan` regularly (or set orphan_scan_interval): reclaim acts only on what scans recorded. --dry-run prints what it would remove and changes nothing.",
        after_help = "Examples:\n  vfolder-controller orphans reclaim --dry-run\n  vfolder-controller --actor alice orphans reclaim --volume local:volume1"
    )]
    Reclaim(OrphanReclaimArgs),
}

/// Arguments of `orphans scan`.
#[derive(Debug, Args)]
pub struct OrphanScanArgs {
    /// Only this volume (a configured `[[volumes]] host`). Default: every configured volume.
    #[arg(long, value_name = "HOST")]
    pub volume: Option<String>,
    /// Count the files and bytes of every orphan and unfinished removal (walks their trees).
    #[arg(long)]
    pub count: bool,
}

/// Arguments of `orphans reclaim`.
#[derive(Debug, Args)]
pub struct OrphanReclaimArgs {
    /// Only this volume (a configured `[[volumes]] host`). Default: every configured volume.
    #[arg(long, value_name = "HOST")]
    pub volume: Option<String>,
    /// Print what would be removed and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `migrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// Print what the migration would do (mode, migrations, objects added, legacy rows
    /// remapped, trash clocks started, foreign statuses, duplicate names) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Adopt an existing vfolders table that the reference platform created.
    #[arg(long)]
    pub adopt: bool,
}

/// Arguments of `unadopt`.
#[derive(Debug, Clone, clap::Args)]
pub struct UnadoptArgs {
    /// Print what would be dropped and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Drop even while a controller holds leases (its replicas then fail).
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The folder name (unique among the owner's live and trashed folders).
    pub name: String,
    /// The volume (`<proxy>:<volume>`, a configured `[[volumes]] host`). Default: the first.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Owning user: quota scope `user:<UUID>`. Default: user 00000000-0000-0000-0000-000000000001.
    #[arg(long, value_name = "UUID", conflicts_with = "project")]
    pub user: Option<Uuid>,
    /// Owning project (group): quota scope `project:<UUID>`.
    #[arg(long, value_name = "UUID")]
    pub project: Option<Uuid>,
}

/// Arguments of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only these statuses (repeatable; `delete-pending` or `DELETE_PENDING`).
    #[arg(long = "status", value_name = "STATUS")]
    pub statuses: Vec<Status>,
}

/// Arguments of `trash`: a folder id, or the `list` subcommand.
#[derive(Debug, Args)]
pub struct TrashArgs {
    /// `list`: show the trash instead.
    #[command(subcommand)]
    pub list: Option<TrashCommand>,
    /// The folder to move to the trash.
    #[arg(value_name = "ID", required = true, value_parser = parse_id)]
    pub id: Option<Uuid>,
    /// Delete it after this long in the trash instead of the configured trash retention
    /// (e.g. 1h, 2d; at most 100y).
    #[arg(long, value_name = "DURATION", value_parser = config::parse_age)]
    pub purge_after: Option<Duration>,
}

/// `trash list`.
#[derive(Debug, Subcommand)]
pub enum TrashCommand {
    /// Show the folders in the trash: delete-pending (restorable) and delete-ongoing (being removed).
    List,
}

/// A single folder id.
#[derive(Debug, Args)]
pub struct IdArg {
    /// The vfolder id (UUID).
    #[arg(value_name = "ID", value_parser = parse_id)]
    pub id: Uuid,
}

/// Arguments of `audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this folder.
    #[arg(long, value_name = "ID", value_parser = parse_id)]
    pub id: Option<Uuid>,
    /// Only entries since this long ago (1h, 7d) or since this RFC 3339 time.
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<String>,
    /// At most this many entries (the newest).
    #[arg(long, value_name = "N")]
    pub limit: Option<i64>,
}

/// Arguments of `clean-history`.
#[derive(Debug, Args)]
pub struct CleanHistoryArgs {
    /// Remove delete-complete rows older than this (e.g. 30d; at most 100y).
    #[arg(long, value_name = "DURATION", value_parser = config::parse_age)]
    pub older_than: Duration,
}

fn parse_id(s: &str) -> Result<Uuid, String> {
    Uuid::parse_str(s).map_err(|e| {
        format!("not a vfolder id; expected a UUID like 7d3c9a52-0b8e-4c55-9a61-1f2e3d4c5b6a ({e})")
    })
}

/// Parses `--since`: a duration ago, or an RFC 3339 time.
pub fn parse_since(value: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, Error> {
    if let Ok(d) = humantime::parse_duration(value) {
        let d = chrono::Duration::from_std(d).map_err(|e| bad_since(value, e))?;
        return now
            .checked_sub_signed(d)
            .ok_or_else(|| bad_since(value, "too long ago"));
    }
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| bad_since(value, e))
}

fn bad_since(value: &str, e: impl std::fmt::Display) -> Error {
    Error::BadInput {
        flag: "--since",
        value: value.to_owned(),
        reason: format!(
            "expected a duration (1h, 7d) or an RFC 3339 time (2026-01-31T12:00:00Z): {e}"
        ),
    }
}

impl Cli {
    /// Loads the configuration: `--config` file, `VFOLDER_CONTROLLER_*` variables, then
    /// `--database-url` and `--log-format` on top.
    pub fn load_config(&self) -> Result<Config, Error> {
        let mut config = Config::load(self.config.as_deref(), std::env::vars())?;
        if let Some(url) = &self.database_url {
            config::check_database_url("--database-url", url)?;
            config.database_url.clone_from(url);
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        Ok(config)
    }

    /// The actor recorded in history and audit: `--actor`, else `$USER`/`$LOGNAME`, else
    /// `uid:<n>`.
    pub fn actor(&self) -> String {
        self.actor
            .clone()
            .or_else(|| {
                ["USER", "LOGNAME"]
                    .into_iter()
                    .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
            })
            .unwrap_or_else(|| format!("uid:{}", rustix::process::getuid().as_raw()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn trash_takes_an_id_or_list() {
        let id = "7d3c9a52-0b8e-4c55-9a61-1f2e3d4c5b6a";
        let cli = Cli::try_parse_from(["x", "trash", id, "--purge-after", "1d"]).unwrap();
        let Command::Admin(Admin::Trash(t)) = cli.command else {
            panic!()
        };
        assert_eq!(t.id, Some(id.parse().unwrap()));
        assert_eq!(t.purge_after, Some(Duration::from_secs(86_400)));
        let cli = Cli::try_parse_from(["x", "trash", "list"]).unwrap();
        let Command::Admin(Admin::Trash(t)) = cli.command else {
            panic!()
        };
        assert!(t.list.is_some() && t.id.is_none());
        assert!(Cli::try_parse_from(["x", "trash"]).is_err());
        assert!(Cli::try_parse_from(["x", "trash", "nope"]).is_err());
    }

    #[test]
    fn each_error_class_has_its_exit_code() {
        use crate::lifecycle::IllegalTransition;
        let id = Uuid::nil();
        let db = |source| store::Error::Database {
            context: "testing",
            source,
        };
        let cases: Vec<(Error, u8)> = vec![
            (store::Error::NotFound(id).into(), 3),
            (
                store::Error::IllegalTransition {
                    id,
                    source: IllegalTransition {
                        from: Status::DeleteComplete,
                        to: Status::Ready,
                    },
                }
                .into(),
                4,
            ),
            (store::Error::NameTaken { name: "x".into() }.into(), 4),
            (
                store::Error::NotForgettable {
                    id,
                    status: Status::Ready,
                }
                .into(),
                4,
            ),
            (store::Error::UnsupportedUrl("mysql://".into()).into(), 6),
            (store::Error::NotMigrated("no".into()).into(), 5),
            (Error::NotMigrated("no".into()), 5),
            (
                db(sqlx::Error::Io(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                )))
                .into(),
                5,
            ),
            (db(sqlx::Error::PoolTimedOut).into(), 5),
            (db(sqlx::Error::RowNotFound).into(), 1),
            (
                config::Error::UnknownEnv("VFOLDER_CONTROLLER_X".into()).into(),
                6,
            ),
            (
                Error::UnknownVolume {
                    host: "a:b".into(),
                    configured: String::new(),
                },
                2,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.exit_code(), code, "{err}");
        }
    }

    #[test]
    fn since_accepts_durations_and_times() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T00:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            parse_since("1d", now).unwrap().to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_since("2025-12-31T12:00:00+01:00", now)
                .unwrap()
                .to_rfc3339(),
            "2025-12-31T11:00:00+00:00"
        );
        let err = parse_since("yesterday", now).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("\"yesterday\""), "{err}");
    }
}
