//! The subcommands: each reads or changes the database through the [`Store`] trait and
//! prints a table (or JSON with `--json`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::output::{self, Table, fields, opt, opt_time, time};
use super::{
    Admin, AuditArgs, Cli, Command, CreateArgs, Error, ListArgs, MigrateArgs, OrphansCommand,
    TrashArgs, TrashCommand, UnadoptArgs, run,
};
use crate::config::{Config, Retention};
use crate::controller::maintenance::{self, drain_batches};
use crate::lifecycle::Status;
use crate::storage::{self, FolderRef, Volumes};
use crate::store::{
    self, AuditAction, AuditEntry, AuditFilter, Folder, FolderDetail, HistoryShape, Location,
    NewFolder, Schema, StatusChange, StatusRequest, Store,
};

/// The owner of folders created without `--user`/`--project`: a fixed, documented user, so
/// repeated `create` calls share one namespace (a name is taken until trashed and purged).
pub const DEFAULT_USER: Uuid = Uuid::from_u128(1);

/// The longest name `create` accepts, in characters: the width of the `name` column
/// (`varchar(64)`) of a table the controller created. PostgreSQL would refuse a longer one
/// only after the directory exists, and SQLite would store it; checking here gives both
/// backends the same answer before anything is written. (A Backend.AI table allows 128,
/// but `create` is refused on an adopted table anyway.)
pub const MAX_NAME_CHARS: usize = 64;

/// Runs the parsed command with the loaded configuration.
pub async fn execute(cli: Cli, config: Config) -> Result<(), Error> {
    let actor = cli.actor();
    let json = cli.json;
    match cli.command {
        Command::Run => run::run(config).await,
        Command::Migrate(args) => migrate(&config, &args, json).await,
        Command::Unadopt(args) => unadopt(&config, &args, json).await,
        Command::Admin(command) => {
            let store = open(&config).await?;
            let ctx = Ctx {
                store: store.as_ref(),
                config: &config,
                actor,
                json,
            };
            ctx.dispatch(command).await
        }
    }
}

/// Opens the database for an admin command. The embedded SQLite database is migrated on
/// first use (zero set-up); PostgreSQL must have been migrated explicitly, so an admin
/// command never changes a production schema as a side effect.
async fn open(config: &Config) -> Result<Arc<dyn Store>, Error> {
    let store = store::connect(&config.database_url).await?;
    if store.capabilities().embedded {
        store.migrate(false).await?;
    } else {
        store.check_ready().await.map_err(|e| match e {
            store::Error::NotMigrated(reason) => Error::NotMigrated(reason),
            e => e.into(),
        })?;
    }
    Ok(store)
}

async fn migrate(config: &Config, args: &MigrateArgs, json: bool) -> Result<(), Error> {
    let store = store::connect(&config.database_url).await?;
    let plan = if args.dry_run {
        store.plan_migration().await?
    } else {
        store.migrate(args.adopt).await?
    };
    if json {
        return output::print_json(&serde_json::json!({
            "dry_run": args.dry_run,
            "migrated": !args.dry_run,
            "plan": plan,
        }));
    }
    output::print(&output::migration_plan(&plan, args.dry_run))
}

async fn unadopt(config: &Config, args: &UnadoptArgs, json: bool) -> Result<(), Error> {
    let store = store::connect(&config.database_url).await?;
    let plan = store.unadopt(args.dry_run, args.force).await?;
    if json {
        return output::print_json(&serde_json::json!({
            "dry_run": args.dry_run,
            "unadopted": !args.dry_run,
            "plan": plan,
        }));
    }
    output::print(&output::unadopt_plan(&plan, args.dry_run))
}

/// What a status-changing command means: its target status, the statuses it is meant to
/// start from, and what to say when the folder is elsewhere.
struct Transition {
    command: &'static str,
    action: AuditAction,
    to: Status,
    from: &'static [Status],
    hint: &'static str,
}

const TRASH: Transition = Transition {
    command: "trash",
    action: AuditAction::Trash,
    to: Status::DeletePending,
    from: &[Status::Ready],
    hint: "only moves a live folder (ready) to the trash",
};
const RESTORE: Transition = Transition {
    command: "restore",
    action: AuditAction::Restore,
    to: Status::Ready,
    from: &[Status::DeletePending],
    hint: "only takes a folder out of the trash (delete-pending)",
};
const PURGE: Transition = Transition {
    command: "purge",
    action: AuditAction::Purge,
    to: Status::DeleteOngoing,
    from: &[Status::DeletePending],
    hint: "only deletes a folder in the trash (delete-pending); use force-delete for a live folder, retry for delete-error",
};
const FORCE_DELETE: Transition = Transition {
    command: "force-delete",
    action: AuditAction::ForceDelete,
    to: Status::DeleteOngoing,
    from: &[Status::Ready],
    hint: "only deletes a live folder (ready); use purge for a folder in the trash, retry for delete-error",
};
const RETRY: Transition = Transition {
    command: "retry",
    action: AuditAction::Retry,
    to: Status::DeleteOngoing,
    from: &[Status::DeleteError],
    hint: "only restarts a failed removal (delete-error); use purge for a folder in the trash, force-delete for a live folder",
};

/// A folder with the values `show` and `trash list` derive for it.
#[derive(Debug, Serialize)]
struct Shown {
    #[serde(flatten)]
    detail: FolderDetail,
    /// Where the data is on this machine, when its volume is configured here.
    path: Option<PathBuf>,
    /// Why `path` is missing, when the volume is configured but the path cannot be computed
    /// (an invalid quota scope), or the volume is not configured here.
    #[serde(skip_serializing_if = "Option::is_none")]
    path_error: Option<String>,
    /// Attempts made: the stored count of retried failures, plus the final attempt when
    /// the controller gave up (see [`attempts_made`]).
    attempts_made: u32,
    /// When the trash timer deletes it (delete-pending only).
    purge_at: Option<DateTime<Utc>>,
    /// The folder's volume, while the controller has work for the folder and reports the
    /// volume unavailable (`show` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_on_volume: Option<store::VolumeState>,
}

/// A created folder and its directory.
#[derive(Debug, Serialize)]
struct Created {
    #[serde(flatten)]
    folder: Folder,
    path: PathBuf,
}

struct Ctx<'a> {
    store: &'a dyn Store,
    config: &'a Config,
    actor: String,
    json: bool,
}

impl Ctx<'_> {
    async fn dispatch(&self, command: Admin) -> Result<(), Error> {
        match command {
            Admin::Create(args) => self.create(args).await,
            Admin::List(args) => self.list(args).await,
            Admin::Trash(args) => self.trash(args).await,
            Admin::Restore(a) => self.change(a.id, &RESTORE, None).await,
            Admin::Purge(a) => self.change(a.id, &PURGE, None).await,
            Admin::ForceDelete(a) => self.change(a.id, &FORCE_DELETE, None).await,
            Admin::Retry(a) => self.change(a.id, &RETRY, None).await,
            Admin::Forget(a) => self.forget(a.id).await,
            Admin::Show(a) => self.show(a.id).await,
            Admin::History(a) => self.history(a.id).await,
            Admin::Audit(args) => self.audit(args).await,
            Admin::CleanHistory(a) => self.clean_history(a.older_than).await,
            Admin::Orphans(OrphansCommand::Scan(a)) => {
                super::orphans::scan(self.store, self.config, &self.actor, self.json, a).await
            }
            Admin::Orphans(OrphansCommand::Reclaim(a)) => {
                super::orphans::reclaim(self.store, self.config, &self.actor, self.json, a).await
            }
        }
    }

    async fn trash(&self, args: TrashArgs) -> Result<(), Error> {
        match (args.list, args.id) {
            (Some(TrashCommand::List), _) => self.trash_list().await,
            (None, Some(id)) => {
                let at = match args.purge_after {
                    Some(d) => Some(later(Utc::now(), d).ok_or_else(|| Error::BadInput {
                        flag: "--purge-after",
                        value: humantime::format_duration(d).to_string(),
                        reason: "too far in the future".to_owned(),
                    })?),
                    None => None,
                };
                self.change(id, &TRASH, at).await
            }
            // clap requires the id unless `list` is given.
            (None, None) => Err(Error::BadInput {
                flag: "trash",
                value: String::new(),
                reason: "give a folder ID or `list`".to_owned(),
            }),
        }
    }

    async fn create(&self, args: CreateArgs) -> Result<(), Error> {
        check_name(&args.name)?;
        let host = match args.host {
            Some(h) => h,
            None => self
                .config
                .volumes
                .first()
                .map(|v| v.host.clone())
                .unwrap_or_default(),
        };
        if self.config.volume(&host).is_none() {
            return Err(Error::UnknownVolume {
                configured: self
                    .config
                    .volumes
                    .iter()
                    .map(|v| v.host.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                host,
            });
        }
        run::ensure_builtin_volume(self.config)?;
        let (user, group, ownership_type, scope) = match (args.user, args.project) {
            (_, Some(p)) => (None, Some(p), "group", format!("project:{p}")),
            (u, None) => {
                let u = u.unwrap_or(DEFAULT_USER);
                (Some(u), None, "user", format!("user:{u}"))
            }
        };
        let new = NewFolder {
            id: Uuid::new_v4(),
            host,
            quota_scope_id: Some(scope),
            name: args.name,
            user,
            group,
            ownership_type: ownership_type.to_owned(),
        };
        let volumes = Volumes::new(&self.config.volumes);
        let folder_ref = FolderRef::from(&new);
        let storage_err = |source| Error::Storage {
            host: new.host.clone(),
            source,
        };
        // The directory first: the id is fresh, so nothing else uses this path, and a row is
        // never left pointing at a directory that could not be made. If the row is refused
        // (name taken), the empty directory is removed again.
        let path = volumes
            .get(&new.host)
            .and_then(|v| v.create_folder(&folder_ref))
            .map_err(storage_err)?;
        let path = absolute(&path);
        let folder = match self.store.create_folder(&new, &self.actor).await {
            Ok(f) => f,
            Err(e) => {
                remove_empty_dirs(&path);
                return Err(e.into());
            }
        };
        if self.json {
            return output::print_json(&Created { folder, path });
        }
        output::print(&fields(&[
            ("created", folder.id.to_string()),
            ("name", folder.name.clone()),
            ("host", folder.host.clone()),
            ("owner", opt(folder.quota_scope_id.as_deref())),
            ("status", folder.status.to_string()),
            ("path", path.display().to_string()),
        ]))
    }

    async fn list(&self, args: ListArgs) -> Result<(), Error> {
        // Without --status: the live folders, including statuses another service owns.
        let foreign = args.statuses.is_empty();
        let statuses = if args.statuses.is_empty() {
            crate::lifecycle::ALL
                .into_iter()
                .filter(|s| s.is_live())
                .collect()
        } else {
            args.statuses
        };
        let folders = self.store.list_folders(&statuses, foreign).await?;
        if self.json {
            return output::print_json(&folders);
        }
        let mut t = Table::new(&["ID", "NAME", "HOST", "OWNER", "STATUS", "SINCE"]);
        for f in &folders {
            t.row(vec![
                f.id.to_string(),
                f.name.clone(),
                f.host.clone(),
                owner(f),
                f.status.to_string(),
                opt_time(f.since()),
            ]);
        }
        output::print(&t.render())
    }

    async fn trash_list(&self) -> Result<(), Error> {
        let folders = self
            .store
            .list_folders(&[Status::DeletePending, Status::DeleteOngoing], false)
            .await?;
        let schema = self.store.schema().await?;
        let mut shown = Vec::with_capacity(folders.len());
        for f in folders {
            // The per-folder purge time lives in the controller state; a folder removed
            // between the two queries simply drops out of the list.
            match self.store.get_folder(f.id).await {
                Ok(detail) => shown.push(self.shown(detail, &schema, None)),
                Err(store::Error::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if self.json {
            return output::print_json(&shown);
        }
        let mut t = Table::new(&[
            "ID", "NAME", "HOST", "OWNER", "STATUS", "TRASHED", "PURGE AT",
        ]);
        for s in &shown {
            let f = &s.detail.folder;
            t.row(vec![
                f.id.to_string(),
                f.name.clone(),
                f.host.clone(),
                owner(f),
                f.status.to_string(),
                opt_time(f.status_changed),
                if f.status == Status::DeleteOngoing {
                    "being removed".to_owned()
                } else {
                    opt_time(s.purge_at)
                },
            ]);
        }
        output::print(&t.render())
    }

    /// Checks that the folder is in a status `tr` is meant for, then writes the status.
    async fn change(
        &self,
        id: Uuid,
        tr: &Transition,
        purge_after: Option<DateTime<Utc>>,
    ) -> Result<(), Error> {
        let current = self.store.get_folder(id).await?.folder;
        let request = StatusRequest {
            id,
            to: tr.to,
            actor: self.actor.clone(),
            action: tr.action,
            purge_after,
            expect_from: tr.from,
        };
        // The store checks the expectation under the row lock; only the hint is ours.
        let change = match self.store.set_status(&request).await {
            Err(store::Error::UnexpectedStatus { status, .. }) => {
                return Err(Error::WrongStatus {
                    id,
                    status,
                    command: tr.command,
                    hint: tr.hint.to_owned(),
                });
            }
            other => other?,
        };
        if self.json {
            return output::print_json(&change);
        }
        output::print(&describe_change(&current, &change, purge_after))
    }

    async fn forget(&self, id: Uuid) -> Result<(), Error> {
        self.store.forget(id, &self.actor).await?;
        if self.json {
            return output::print_json(&serde_json::json!({ "id": id, "forgotten": true }));
        }
        output::print(&format!(
            "vfolder {id}: row removed (its files were not touched); the audit log keeps the entry\n"
        ))
    }

    async fn show(&self, id: Uuid) -> Result<(), Error> {
        let detail = self.store.get_folder(id).await?;
        let schema = self.store.schema().await?;
        let volumes = Volumes::new(&self.config.volumes);
        let mut shown = self.shown(detail, &schema, Some(&volumes));
        shown.waiting_on_volume = self.waiting_on_volume(&shown.detail.folder).await;
        if self.json {
            return output::print_json(&shown);
        }
        let f = &shown.detail.folder;
        let state = shown.detail.state.as_ref();
        let location = state.map_or(Location::Live, |s| s.location);
        let mut pairs = vec![
            ("id", f.id.to_string()),
            ("name", f.name.clone()),
            ("host", f.host.clone()),
            ("owner", owner(f)),
            ("quota scope", opt(f.quota_scope_id.as_deref())),
            (
                "status",
                match f.status.known() {
                    Some(_) => format!("{} since {}", f.status, opt_time(f.since())),
                    None => format!(
                        "{} since {} (a status vfolder-controller does not own; left alone)",
                        f.status,
                        opt_time(f.since())
                    ),
                },
            ),
            (
                "path",
                match (&shown.path, &shown.path_error) {
                    (Some(p), _) => format!("{} ({})", p.display(), location_name(location)),
                    (None, Some(why)) => format!("- ({why})"),
                    (None, None) => "-".to_owned(),
                },
            ),
            ("created", opt_time(f.created_at)),
        ];
        if f.status == Status::DeletePending {
            let purge_at = match (shown.purge_at, self.config.controller.trash_retention) {
                (None, Retention::Never) => "never (trash_retention = never)".to_owned(),
                (t, _) => opt_time(t),
            };
            pairs.push(("purge at", purge_at));
        }
        if let Some(v) = &shown.waiting_on_volume {
            pairs.push((
                "waiting",
                format!(
                    "volume {} unavailable since {} ({}; seen by {})",
                    v.host,
                    time(v.since),
                    v.reason.as_deref().unwrap_or("no reason given"),
                    v.replica
                ),
            ));
        }
        pairs.extend([
            ("attempts", shown.attempts_made.to_string()),
            (
                "next attempt",
                opt_time(state.and_then(|s| s.next_attempt_at)),
            ),
            (
                "last error",
                opt(state.and_then(|s| s.last_error.as_deref())),
            ),
            (
                "lease",
                match state.and_then(|s| s.lease_owner.as_deref().zip(s.lease_expires_at)) {
                    Some((owner, until)) => format!("{owner} until {}", time(until)),
                    None => "-".to_owned(),
                },
            ),
            (
                "progress",
                state.map_or_else(
                    || "-".to_owned(),
                    |s| {
                        let p = s.progress;
                        format!(
                            "{} files, {} dirs, {} symlinks, {} bytes removed",
                            p.files, p.dirs, p.symlinks, p.bytes
                        )
                    },
                ),
            ),
        ]);
        let mut text = fields(&pairs);
        text.push_str(&format!(
            "history ({}):\n",
            history_shape_name(&shown.detail.history_shape)
        ));
        for line in history_table(&shown.detail).render().lines() {
            text.push_str("  ");
            text.push_str(line);
            text.push('\n');
        }
        output::print(&text)
    }

    async fn history(&self, id: Uuid) -> Result<(), Error> {
        let detail = self.store.get_folder(id).await?;
        if self.json {
            return output::print_json(&detail.history);
        }
        output::print(&history_table(&detail).render())
    }

    async fn audit(&self, args: AuditArgs) -> Result<(), Error> {
        let since = args
            .since
            .as_deref()
            .map(|s| super::parse_since(s, Utc::now()))
            .transpose()?;
        if let Some(n) = args.limit.filter(|n| *n < 1) {
            return Err(Error::BadInput {
                flag: "--limit",
                value: n.to_string(),
                reason: "must be at least 1".to_owned(),
            });
        }
        let entries = self
            .store
            .audit(&AuditFilter {
                id: args.id,
                since,
                limit: args.limit,
            })
            .await?;
        if self.json {
            return output::print_json(&entries);
        }
        let mut t = Table::new(&[
            "SEQ", "AT", "VFOLDER", "NAME", "ACTION", "FROM", "TO", "ACTOR", "REPLICA", "RESULT",
        ]);
        for e in &entries {
            t.row(vec![
                e.seq.to_string(),
                time(e.at),
                e.vfolder_id.to_string(),
                opt(e.name.as_deref()),
                e.action.clone(),
                opt(e.from_status.as_deref()),
                opt(e.to_status.as_deref()),
                opt(e.actor.as_deref()),
                opt(e.replica.as_deref()),
                audit_result(e),
            ]);
        }
        output::print(&t.render())
    }

    async fn clean_history(&self, older_than: Duration) -> Result<(), Error> {
        let removed = drain_batches(|| {
            self.store
                .clean_history(older_than, &self.actor, maintenance::BATCH)
        })
        .await?;
        if self.json {
            return output::print_json(&serde_json::json!({ "removed": removed }));
        }
        output::print(&format!(
            "removed {removed} delete-complete row(s) older than {}\n",
            humantime::format_duration(older_than)
        ))
    }

    /// Adds the data path (when `volumes` is given and knows the host) and the purge time,
    /// which counts by the timers' clock ([`Schema::clock_start`]).
    fn shown(&self, detail: FolderDetail, schema: &Schema, volumes: Option<&Volumes>) -> Shown {
        let f = &detail.folder;
        let state = detail.state.as_ref();
        let purge_at = (f.status == Status::DeletePending)
            .then(|| {
                state.and_then(|s| s.purge_after).or_else(|| {
                    let retention = self.config.controller.trash_retention.duration()?;
                    schema
                        .clock_start(f.status_changed)
                        .and_then(|t| later(t, retention))
                })
            })
            .flatten();
        let location = state.map_or(Location::Live, |s| s.location);
        let (path, path_error) = match volumes.map(|vs| data_path(vs, f, location)) {
            None => (None, None),
            Some(Ok(path)) => (Some(path), None),
            Some(Err(storage::Error::UnknownVolume { host })) => {
                (None, Some(format!("volume {host} is not configured here")))
            }
            Some(Err(e)) => (None, Some(e.to_string())),
        };
        let attempts_made = attempts_made(f, state);
        Shown {
            detail,
            path,
            path_error,
            attempts_made,
            purge_at,
            waiting_on_volume: None,
        }
    }

    /// The folder's volume state when the controller reports it unavailable and has work
    /// for the folder (a removal, or a trash move). A failed lookup only leaves the line out:
    /// `show` is a diagnostic and must work on a struggling database too.
    async fn waiting_on_volume(&self, f: &Folder) -> Option<store::VolumeState> {
        if !matches!(
            f.status.known(),
            Some(Status::DeleteOngoing | Status::DeletePending)
        ) {
            return None;
        }
        let state = self.store.volume_state(&f.host).await.ok().flatten()?;
        (!state.available).then_some(state)
    }
}

/// Where the folder's data is on this machine (absolute), or why that cannot be said.
fn data_path(volumes: &Volumes, f: &Folder, location: Location) -> Result<PathBuf, storage::Error> {
    let r = FolderRef::from(f);
    let v = volumes.get(&f.host)?;
    let relative = match location {
        Location::Live => v.folder_path(&r),
        Location::Trash => v.trash_path(&r),
    }?;
    Ok(absolute(&v.config().mount.join(relative)))
}

/// Attempts made on a folder's removal. The store counts an attempt when it schedules a
/// retry; the attempt after which the controller gives up is recorded as the status change
/// to `delete-error` (with its error) instead, so there it is one more than the stored count
/// and agrees with the error's "gave up after N attempts".
fn attempts_made(f: &Folder, state: Option<&store::ControllerState>) -> u32 {
    let Some(state) = state else {
        return 0;
    };
    let gave_up = f.status == Status::DeleteError && state.last_error.is_some();
    state.attempts.saturating_add(u32::from(gave_up))
}

/// Refuses a name `create` could not store the same way on both backends: empty, longer
/// than [`MAX_NAME_CHARS`], or holding control characters.
fn check_name(name: &str) -> Result<(), Error> {
    let chars = name.chars().count();
    let reason = if name.is_empty() {
        "a folder name cannot be empty".to_owned()
    } else if chars > MAX_NAME_CHARS {
        format!("is {chars} characters long; a folder name has at most {MAX_NAME_CHARS}")
    } else if name.chars().any(char::is_control) {
        "a folder name cannot hold control characters (newline, tab, escape, ...)".to_owned()
    } else {
        return Ok(());
    };
    // A 10,000-character name is not worth repeating in full.
    let shown: String = name.chars().take(MAX_NAME_CHARS).collect();
    Err(Error::BadInput {
        flag: "NAME",
        value: if chars > MAX_NAME_CHARS {
            format!("{shown}...")
        } else {
            shown
        },
        reason,
    })
}

fn describe_change(
    folder: &Folder,
    change: &StatusChange,
    purge_after: Option<DateTime<Utc>>,
) -> String {
    let who = format!("vfolder {} ({})", change.id, output::escape(&folder.name));
    if !change.changed {
        return format!("{who} is already {}; nothing changed\n", change.to);
    }
    let effect = match change.to {
        Status::DeletePending => match purge_after {
            Some(t) => format!("in the trash; deleted at {} unless restored", time(t)),
            None => "in the trash; deleted after the trash retention unless restored".to_owned(),
        },
        Status::Ready => "live again".to_owned(),
        Status::DeleteOngoing => "the controller removes its files now".to_owned(),
        _ => String::new(),
    };
    format!("{who}: {} -> {}: {effect}\n", change.from, change.to)
}

fn history_table(detail: &FolderDetail) -> Table {
    let mut t = Table::new(&["STATUS", "AT", "ACTOR"]);
    for h in &detail.history {
        t.row(vec![h.status.clone(), time(h.at), opt(h.actor.as_deref())]);
    }
    if let HistoryShape::Unreadable(raw) = &detail.history_shape {
        t.row(vec!["(unreadable)".to_owned(), "-".to_owned(), raw.clone()]);
    }
    t
}

/// How a history is stored, for the heading of `show`.
fn history_shape_name(shape: &HistoryShape) -> &'static str {
    match shape {
        HistoryShape::List => "list",
        HistoryShape::Object => "the platform's object {STATUS: time}, in time order",
        HistoryShape::Null => "none recorded",
        HistoryShape::Unreadable(_) => "unreadable, shown raw",
    }
}

/// The owner column of the tables: the user or group id, else the quota scope.
fn owner(f: &Folder) -> String {
    match (f.user, f.group) {
        (Some(u), _) => format!("user:{u}"),
        (None, Some(g)) => format!("project:{g}"),
        (None, None) => opt(f.quota_scope_id.as_deref()),
    }
}

fn audit_result(e: &AuditEntry) -> String {
    if let Some(err) = &e.error {
        return format!("error: {err}");
    }
    match (e.progress, e.duration_ms) {
        (Some(p), d) => format!(
            "{} files, {} dirs, {} bytes{}",
            p.files,
            p.dirs,
            p.bytes,
            d.map(|ms| format!(" in {ms} ms")).unwrap_or_default()
        ),
        (None, _) => String::new(),
    }
}

fn location_name(l: Location) -> &'static str {
    match l {
        Location::Live => "live path",
        Location::Trash => "in the volume's trash directory",
    }
}

/// `t + d`, or `None` when that is not representable.
fn later(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    t.checked_add_signed(chrono::Duration::from_std(d).ok()?)
}

/// `path` made absolute against the working directory (the built-in volume's mount is
/// relative), without touching the filesystem.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Undoes `create`'s directory when the row was refused: removes the (empty) folder
/// directory and its two fan-out parents if they are empty. `remove_dir` never removes
/// anything that has content, so this cannot destroy data.
fn remove_empty_dirs(path: &Path) {
    for dir in path.ancestors().take(3) {
        if std::fs::remove_dir(dir).is_err() {
            break;
        }
    }
}
