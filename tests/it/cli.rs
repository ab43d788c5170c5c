//! The admin CLI end to end: the real binary against real SQLite and PostgreSQL databases
//! and a real volume directory. Every test that touches a database runs on both backends
//! (`sqlite::` and `postgres::`); PostgreSQL being unreachable fails the test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::common;
use common::{Backend, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_vfolder-controller");
const HOST: &str = "local:v1";
const OWNER: &str = "3f1c0f6e-1b7a-4f7e-9a53-0c2a8d1e4b11";

/// A fresh database (from `common::TestDb`), a volume directory and a config file pointing
/// at both, all removed when dropped.
struct Env {
    dir: tempfile::TempDir,
    db: TestDb,
    rt: tokio::runtime::Runtime,
}

impl Env {
    /// A fresh, empty database, a volume directory and a config file naming both.
    fn unmigrated(backend: Backend) -> Env {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let db = rt.block_on(async {
            match backend {
                Backend::Sqlite => TestDb::sqlite().await,
                Backend::Postgres => TestDb::postgres().await,
            }
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("vol")).unwrap();
        let env = Env { dir, db, rt };
        std::fs::write(
            env.config_path(),
            format!(
                "database_url = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[[volumes]]\nhost = {HOST:?}\nmount = {:?}\nrequire_mount_point = false\n",
                env.db.url,
                env.mount()
            ),
        )
        .unwrap();
        env
    }

    /// A fresh, migrated database.
    fn new(backend: Backend) -> Env {
        let env = Env::unmigrated(backend);
        env.ok(&["migrate"]);
        env
    }

    fn mount(&self) -> PathBuf {
        self.dir.path().join("vol")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Runs the binary with this environment's config and `--actor alice`.
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = command(self.dir.path());
        cmd.arg("--config")
            .arg(self.config_path())
            .args(["--actor", "alice"]);
        cmd.args(args).output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Creates a folder owned by [`OWNER`]; returns its id.
    fn create(&self, name: &str) -> String {
        let v = self.json(&["create", name, "--user", OWNER]);
        v["id"].as_str().unwrap().to_owned()
    }

    fn status(&self, id: &str) -> String {
        self.json(&["show", id])["folder"]["status"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Raw SQL on the database, as another writer (psql, a service) would do it.
    fn sql(&self, sql: &str) {
        self.rt.block_on(async {
            let raw = self.db.raw().await;
            raw.execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        });
    }
}

/// The binary with a clean environment (no inherited VFOLDER_CONTROLLER_* settings).
fn command(cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("VFOLDER_CONTROLLER_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    // Tests run side by side: never fight over the default metrics port.
    cmd.env("VFOLDER_CONTROLLER_HTTP_LISTEN", "127.0.0.1:0");
    cmd
}

/// Asserts the exit code and that stderr is one `error: ...` line containing `needle`.
fn assert_fails(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn layout_path(mount: &Path, scope: &str, id: &str) -> PathBuf {
    let scope = Uuid::parse_str(scope).unwrap().simple().to_string();
    let id = Uuid::parse_str(id).unwrap().simple().to_string();
    mount
        .join(scope)
        .join(&id[0..2])
        .join(&id[2..4])
        .join(&id[4..])
}

/// Runs each named test on both backends.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[test] fn $name() { super::$name(super::Backend::Sqlite) } )* }
        mod postgres { $( #[test] fn $name() { super::$name(super::Backend::Postgres) } )* }
    };
}

both_backends!(
    create_makes_the_directory_at_the_layout_path,
    trash_shows_the_folder_in_the_trash_only,
    restore_makes_it_live_again,
    purge_deletes_from_the_trash_and_repeating_is_a_no_op,
    purge_refuses_a_live_folder_and_changes_nothing,
    force_delete_retry_and_forget_are_audited_with_the_actor,
    forget_refuses_a_folder_that_is_not_in_delete_error,
    illegal_transition_exits_4_and_changes_nothing,
    unknown_id_exits_3,
    bad_uuid_and_bad_durations_exit_2,
    taken_name_exits_4_and_leaves_no_directory,
    json_output_parses,
    migrate_twice_is_ok,
    audit_filters_by_id_and_since,
    clean_history_removes_old_complete_rows_and_keeps_audit,
    run_logs_that_it_is_running_and_exits_0_on_sigterm,
    too_long_name_exits_2_before_anything_is_written,
    stored_names_are_escaped_for_humans_and_exact_in_json,
    show_names_an_invalid_owner_scope,
);

fn create_makes_the_directory_at_the_layout_path(b: Backend) {
    let env = Env::new(b);
    let v = env.json(&["create", "datasets", "--user", OWNER]);
    let id = v["id"].as_str().unwrap();
    let expected = layout_path(&env.mount(), OWNER, id);
    assert!(expected.is_dir(), "{} missing", expected.display());
    assert_eq!(v["path"].as_str().unwrap(), expected.to_str().unwrap());
    assert_eq!(v["status"], "ready");
    assert_eq!(v["quota_scope_id"], format!("user:{OWNER}"));
    let list = env.ok(&["list"]);
    assert!(list.contains(id) && list.contains("datasets"), "{list}");
    let show = env.ok(&["show", id]);
    assert!(show.contains(expected.to_str().unwrap()), "{show}");
    assert!(show.contains("alice"), "{show}");

    // A project folder and the default owner.
    let p = Uuid::new_v4().to_string();
    let v = env.json(&["create", "shared", "--project", &p]);
    assert_eq!(v["quota_scope_id"], format!("project:{p}"));
    assert_eq!(v["ownership_type"], "group");
    let v = env.json(&["create", "scratch"]);
    assert_eq!(
        v["quota_scope_id"],
        "user:00000000-0000-0000-0000-000000000001"
    );
}

fn trash_shows_the_folder_in_the_trash_only(b: Backend) {
    let env = Env::new(b);
    let id = env.create("datasets");
    let kept = env.create("kept");
    let out = env.ok(&["trash", &id, "--purge-after", "2d"]);
    assert!(out.contains("ready -> delete-pending"), "{out}");
    assert_eq!(env.status(&id), "delete-pending");
    let list = env.ok(&["list"]);
    assert!(!list.contains(&id) && list.contains(&kept), "{list}");
    let trash = env.ok(&["trash", "list"]);
    assert!(trash.contains(&id) && !trash.contains(&kept), "{trash}");
    let trash: Value = serde_json::from_str(&env.ok(&["--json", "trash", "list"])).unwrap();
    assert_eq!(trash.as_array().unwrap().len(), 1);
    // --purge-after 2d, not the default 7 days.
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let in_trash = at(&trash[0]["purge_at"]) - at(&trash[0]["folder"]["status_changed"]);
    assert!(
        in_trash > chrono::Duration::days(1) && in_trash < chrono::Duration::days(3),
        "{trash}"
    );
    let by_status = env.ok(&["list", "--status", "DELETE_PENDING"]);
    assert!(by_status.contains(&id), "{by_status}");
    // The data stays while in the trash (in-place).
    assert!(layout_path(&env.mount(), OWNER, &id).is_dir());
    let history = env.ok(&["history", &id]);
    assert!(
        history.contains("delete-pending") && history.contains("alice"),
        "{history}"
    );
}

fn restore_makes_it_live_again(b: Backend) {
    let env = Env::new(b);
    let id = env.create("datasets");
    env.ok(&["trash", &id]);
    let out = env.ok(&["restore", &id]);
    assert!(out.contains("delete-pending -> ready"), "{out}");
    assert_eq!(env.status(&id), "ready");
    assert!(env.ok(&["list"]).contains(&id));
    assert!(!env.ok(&["trash", "list"]).contains(&id));
    let out = env.ok(&["restore", &id]);
    assert!(out.contains("already ready"), "{out}");
}

fn purge_deletes_from_the_trash_and_repeating_is_a_no_op(b: Backend) {
    let env = Env::new(b);
    let id = env.create("datasets");
    env.ok(&["trash", &id]);
    let out = env.ok(&["purge", &id]);
    assert!(out.contains("delete-pending -> delete-ongoing"), "{out}");
    assert_eq!(env.status(&id), "delete-ongoing");
    let history_len = env.json(&["history", &id]).as_array().unwrap().len();
    let change = env.json(&["purge", &id]);
    assert_eq!(change["changed"], false);
    assert_eq!(
        env.json(&["history", &id]).as_array().unwrap().len(),
        history_len,
        "a repeated purge adds no history"
    );
    // Still in the trash list while being removed.
    assert!(env.ok(&["trash", "list"]).contains("being removed"));
}

fn purge_refuses_a_live_folder_and_changes_nothing(b: Backend) {
    let env = Env::new(b);
    let id = env.create("datasets");
    let before = env.json(&["show", &id]);
    let out = env.run(&["purge", &id]);
    assert_fails(
        &out,
        4,
        "is ready; purge only deletes a folder in the trash",
    );
    let out = env.run(&["retry", &id]);
    assert_fails(&out, 4, "retry only restarts a failed removal");
    assert_eq!(env.json(&["show", &id]), before);
}

fn force_delete_retry_and_forget_are_audited_with_the_actor(b: Backend) {
    let env = Env::new(b);
    let id = env.create("datasets");
    let out = env.ok(&["force-delete", &id]);
    assert!(out.contains("ready -> delete-ongoing"), "{out}");
    // The controller is not running here: play its failure with plain SQL.
    env.sql(&format!(
        "UPDATE vfolders SET status = 'delete-error' WHERE id = '{id}'"
    ));
    let out = env.ok(&["retry", &id]);
    assert!(out.contains("delete-error -> delete-ongoing"), "{out}");
    env.sql(&format!(
        "UPDATE vfolders SET status = 'delete-error' WHERE id = '{id}'"
    ));
    let out = env.ok(&["forget", &id]);
    assert!(out.contains("row removed"), "{out}");
    assert_fails(&env.run(&["show", &id]), 3, "not found");
    // forget removes the row, never the files.
    assert!(layout_path(&env.mount(), OWNER, &id).is_dir());

    let audit = env.json(&["audit", "--id", &id]);
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["actor"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for action in ["create", "force-delete", "retry", "forget"] {
        assert!(
            actions.contains(&(action, "alice")),
            "{action} by alice in {actions:?}"
        );
    }
    let text = env.ok(&["audit", "--id", &id]);
    assert!(
        text.contains("force-delete") && text.contains("alice"),
        "{text}"
    );
}

fn forget_refuses_a_folder_that_is_not_in_delete_error(b: Backend) {
    let env = Env::new(b);
    let id = env.create("datasets");
    let before = env.json(&["show", &id]);
    assert_fails(
        &env.run(&["forget", &id]),
        4,
        "only a folder in delete-error can be forgotten",
    );
    assert_eq!(env.json(&["show", &id]), before);
}

fn illegal_transition_exits_4_and_changes_nothing(b: Backend) {
    let env = Env::new(b);
    let id = env.create("datasets");
    env.ok(&["force-delete", &id]);
    env.sql(&format!(
        "UPDATE vfolders SET status = 'delete-complete' WHERE id = '{id}'"
    ));
    let before = env.json(&["show", &id]);
    let out = env.run(&["restore", &id]);
    assert_fails(
        &out,
        4,
        &format!("vfolder {id}: illegal status transition delete-complete -> ready"),
    );
    assert_fails(
        &env.run(&["trash", &id]),
        4,
        "delete-complete -> delete-pending",
    );
    assert_eq!(env.json(&["show", &id]), before);
}

fn unknown_id_exits_3(b: Backend) {
    let env = Env::new(b);
    let id = Uuid::new_v4().to_string();
    for cmd in [
        "show",
        "history",
        "trash",
        "restore",
        "purge",
        "force-delete",
        "retry",
        "forget",
    ] {
        assert_fails(&env.run(&[cmd, &id]), 3, &format!("vfolder {id} not found"));
    }
}

fn bad_uuid_and_bad_durations_exit_2(b: Backend) {
    let env = Env::new(b);
    for args in [
        &["show", "1234"][..],
        &["trash", "not-a-uuid"],
        &["audit", "--id", "x"],
        &[
            "trash",
            &Uuid::new_v4().to_string(),
            "--purge-after",
            "soon",
        ],
        &["clean-history", "--older-than", "old"],
        &["list", "--status", "deleted"],
    ] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));
    }
    assert_fails(
        &env.run(&["audit", "--since", "yesterday"]),
        2,
        "invalid --since \"yesterday\"",
    );
    assert_fails(
        &env.run(&["create", "x", "--host", "nope:v"]),
        2,
        "volume \"nope:v\" is not configured",
    );
    assert!(
        env.json(&["list", "--status", "ready", "--status", "delete-pending"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}

fn taken_name_exits_4_and_leaves_no_directory(b: Backend) {
    let env = Env::new(b);
    let id = env.create("datasets");
    let scope_dir = env
        .mount()
        .join(Uuid::parse_str(OWNER).unwrap().simple().to_string());
    let entries = || {
        std::fs::read_dir(&scope_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    };
    let before = entries();
    let out = env.run(&["create", "datasets", "--user", OWNER]);
    assert_fails(&out, 4, "\"datasets\" is already taken");
    assert_eq!(
        entries(),
        before,
        "the refused folder's directory is removed again"
    );
    assert_eq!(env.json(&["list"]).as_array().unwrap().len(), 1);
    // The name stays reserved in the trash and while being removed, and is free again once
    // the folder is gone.
    let taken = || {
        let out = env.run(&["create", "datasets", "--user", OWNER]);
        assert_fails(&out, 4, "already taken");
    };
    env.ok(&["trash", &id]);
    taken();
    env.ok(&["purge", &id]);
    taken();
    env.sql(&format!(
        "UPDATE vfolders SET status = 'delete-complete' WHERE id = '{id}'"
    ));
    env.create("datasets");
}

fn too_long_name_exits_2_before_anything_is_written(b: Backend) {
    let env = Env::new(b);
    let longest = "n".repeat(64);
    env.create(&longest);
    let before = std::fs::read_dir(env.mount()).unwrap().count();
    for (name, says) in [
        (
            "n".repeat(65),
            "65 characters long; a folder name has at most 64",
        ),
        ("x".repeat(10_000), "10000 characters long"),
        (String::new(), "cannot be empty"),
        ("two\nlines".to_owned(), "control characters"),
    ] {
        let out = env.run(&["create", &name, "--user", &Uuid::new_v4().to_string()]);
        assert_fails(&out, 2, says);
        assert!(
            out.stderr.len() < 400,
            "the name is not repeated in full: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        std::fs::read_dir(env.mount()).unwrap().count(),
        before,
        "no directory was made for a refused name"
    );
    assert_eq!(env.json(&["list"]).as_array().unwrap().len(), 1);
}

/// SQL for a name with a newline, a tab and a terminal escape sequence in it.
fn hostile_name_sql(b: Backend) -> &'static str {
    match b {
        Backend::Postgres => "'evil' || chr(10) || 'row' || chr(9) || chr(27) || '[31mred'",
        Backend::Sqlite => "'evil' || char(10) || 'row' || char(9) || char(27) || '[31mred'",
    }
}

fn is_terminal_safe(text: &str) -> bool {
    !text.contains('\u{1b}') && !text.contains('\t')
}

fn stored_names_are_escaped_for_humans_and_exact_in_json(b: Backend) {
    let env = Env::new(b);
    let id = env.create("plain");
    env.sql(&format!(
        "UPDATE vfolders SET name = {} WHERE id = '{id}'",
        hostile_name_sql(b)
    ));
    let raw = "evil\nrow\t\u{1b}[31mred";
    let escaped = r"evil\nrow\t\u{1b}[31mred";
    let list = env.ok(&["list"]);
    assert_eq!(list.lines().count(), 2, "one header, one row: {list}");
    assert!(list.contains(escaped), "{list}");
    assert!(is_terminal_safe(&list), "{list:?}");
    let show = env.ok(&["show", &id]);
    assert!(show.contains("name:") && show.contains(escaped), "{show}");
    assert!(is_terminal_safe(&show), "{show:?}");
    let out = env.ok(&["trash", &id]);
    assert!(out.contains(escaped) && is_terminal_safe(&out), "{out:?}");
    let trash = env.ok(&["trash", "list"]);
    assert_eq!(trash.lines().count(), 2, "{trash}");
    assert!(is_terminal_safe(&trash), "{trash:?}");
    let audit = env.ok(&["audit", "--id", &id]);
    assert!(is_terminal_safe(&audit), "{audit:?}");
    // JSON carries the stored name exactly.
    assert_eq!(env.json(&["show", &id])["folder"]["name"], raw);
    assert_eq!(env.json(&["trash", "list"])[0]["folder"]["name"], raw);
}

fn show_names_an_invalid_owner_scope(b: Backend) {
    let env = Env::new(b);
    let id = env.create("scoped");
    env.sql(&format!(
        "UPDATE vfolders SET quota_scope_id = 'user:not-a-uuid' WHERE id = '{id}'"
    ));
    let show = env.ok(&["show", &id]);
    assert!(
        show.contains("invalid quota_scope_id \"user:not-a-uuid\""),
        "{show}"
    );
    assert!(!show.contains("is not configured"), "{show}");
    let json = env.json(&["show", &id]);
    assert!(json["path"].is_null());
    assert!(
        json["path_error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid quota_scope_id")),
        "{json}"
    );
    // A volume that really is not configured here still says so.
    env.sql(&format!(
        "UPDATE vfolders SET host = 'elsewhere:v9', quota_scope_id = 'user:{OWNER}' WHERE id = '{id}'"
    ));
    let show = env.ok(&["show", &id]);
    assert!(
        show.contains("volume elsewhere:v9 is not configured here"),
        "{show}"
    );
}

fn json_output_parses(b: Backend) {
    let env = Env::new(b);
    let id = env.create("datasets");
    env.ok(&["trash", &id]);
    let show = env.json(&["show", &id]);
    assert_eq!(show["folder"]["id"], id.as_str());
    assert!(show["history"].is_array());
    assert!(show["path"].is_string());
    assert!(show["purge_at"].is_string());
    assert_eq!(
        env.json(&["list", "--status", "delete-pending"])[0]["id"],
        id.as_str()
    );
    assert_eq!(env.json(&["history", &id]).as_array().unwrap().len(), 2);
    let audit = env.json(&["audit"]);
    assert_eq!(audit.as_array().unwrap().len(), 2, "{audit}");
    assert_eq!(env.json(&["restore", &id])["to"], "ready");
}

fn migrate_twice_is_ok(b: Backend) {
    let env = Env::new(b);
    assert!(env.ok(&["migrate"]).contains("migrated"));
    assert_eq!(env.json(&["migrate"])["migrated"], true);
    env.create("datasets");
}

fn audit_filters_by_id_and_since(b: Backend) {
    let env = Env::new(b);
    let a = env.create("a");
    let b_ = env.create("b");
    let of_a = env.json(&["audit", "--id", &a]);
    assert!(
        of_a.as_array()
            .unwrap()
            .iter()
            .all(|e| e["vfolder_id"] == a.as_str())
    );
    assert_eq!(
        env.json(&["audit", "--since", "1h"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(
        env.json(&["audit", "--since", "2999-01-01T00:00:00Z"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    let last = env.json(&["audit", "--limit", "1"]);
    assert_eq!(last[0]["vfolder_id"], b_.as_str());
}

fn clean_history_removes_old_complete_rows_and_keeps_audit(b: Backend) {
    let env = Env::new(b);
    let done = env.create("done");
    let live = env.create("live");
    env.ok(&["force-delete", &done]);
    env.sql(&format!(
        "UPDATE vfolders SET status = 'delete-complete' WHERE id = '{done}'"
    ));
    let out = env.ok(&["clean-history", "--older-than", "1d"]);
    assert!(out.contains("removed 0"), "{out}");
    let v = env.json(&["clean-history", "--older-than", "0s"]);
    assert_eq!(v["removed"], 1);
    assert_fails(&env.run(&["show", &done]), 3, "not found");
    assert_eq!(env.status(&live), "ready");
    let audit = env.ok(&["audit", "--id", &done]);
    assert!(audit.contains("history-cleanup"), "{audit}");
}

/// Starts `run` with `args` in the environment's directory (no `--config`: the built-in
/// volume) and waits for the "running" log line; returns the child and that line.
fn start_run(env: &Env, args: &[&str]) -> (Running, String) {
    let mut child = command(env.dir.path())
        .args(["--database-url", &env.db.url])
        .args(args)
        .arg("run")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // The timeout only guards against a hang; the assertion is about the line.
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains("vfolder-controller running") => {
                return (Running(Some(child)), line);
            }
            Ok(_) => continue,
            Err(e) => {
                let _ = child.kill();
                panic!("no 'running' log line: {e}");
            }
        }
    }
}

/// A running `run` process, killed on drop so a failing test leaves nothing behind.
struct Running(Option<std::process::Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends SIGTERM and returns the exit code.
fn terminate(mut running: Running) -> Option<i32> {
    let mut child = running.0.take()?;
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    child.wait().unwrap().code()
}

fn run_logs_that_it_is_running_and_exits_0_on_sigterm(b: Backend) {
    let env = Env::unmigrated(b);
    let (child, running) = start_run(&env, &[]);
    let backend = match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert!(
        running.contains(backend) && running.contains("local:volume1"),
        "{running}"
    );
    assert!(env.dir.path().join("var/volumes/volume1").is_dir());
    assert_eq!(terminate(child), Some(0));
    // `run` migrated the database (PostgreSQL admin commands need that).
    assert_eq!(env.json(&["list"]).as_array().unwrap().len(), 0);
}

#[test]
fn run_writes_json_log_lines_when_asked() {
    let env = Env::unmigrated(Backend::Sqlite);
    let (child, running) = start_run(&env, &["--log-format", "json"]);
    let line: Value = serde_json::from_str(&running).unwrap();
    // Events are flattened: fields sit beside the message at the top level.
    assert_eq!(line["message"], "vfolder-controller running");
    assert_eq!(line["backend"], "sqlite");
    assert!(line["replica"].is_string(), "{line}");
    assert_eq!(terminate(child), Some(0));
}

#[test]
fn help_teaches_every_command_and_the_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let help = |args: &[&str]| {
        let out = command(dir.path())
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let top = help(&[]);
    for code in [
        "2  bad command line",
        "3  no vfolder",
        "4  not allowed",
        "5  database",
        "6  invalid configuration",
    ] {
        assert!(top.contains(code), "{code} in {top}");
    }
    for cmd in [
        "migrate",
        "run",
        "create",
        "list",
        "trash",
        "restore",
        "purge",
        "force-delete",
        "retry",
        "forget",
        "show",
        "history",
        "audit",
        "clean-history",
    ] {
        let text = help(&[cmd]);
        assert!(text.contains("vfolder-controller"), "{cmd}: {text}");
        assert!(text.contains("Example"), "{cmd} has an example: {text}");
    }
    assert!(help(&["purge"]).contains("delete-pending → delete-ongoing"));
    assert!(help(&["force-delete"]).contains("ready → delete-ongoing"));
    assert!(help(&["retry"]).contains("delete-error → delete-ongoing"));
    let written = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(written, 0, "--help creates no database");
}

#[test]
fn postgres_admin_commands_refuse_an_unmigrated_database() {
    let env = Env::unmigrated(Backend::Postgres);
    for args in [&["list"][..], &["create", "datasets"]] {
        assert_fails(&env.run(args), 5, "run `vfolder-controller migrate` first");
    }
    let created = std::fs::read_dir(env.mount()).unwrap().count();
    assert_eq!(created, 0, "create made no directory");
    env.ok(&["migrate"]);
    env.create("datasets");
}

#[test]
fn sqlite_admin_commands_migrate_on_first_use() {
    let env = Env::unmigrated(Backend::Sqlite);
    env.create("datasets");
}

#[test]
fn unreachable_database_exits_5() {
    let dir = tempfile::tempdir().unwrap();
    // An admin command and `migrate` (each waits for the store's connect timeout).
    for args in [&["show", &Uuid::new_v4().to_string()][..], &["migrate"]] {
        let out = command(dir.path())
            .args(["--database-url", "postgres://postgres@127.0.0.1:1/x"])
            .args(args)
            .output()
            .unwrap();
        assert_fails(&out, 5, "connecting");
    }
}

#[test]
fn bad_configuration_exits_6() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[controller]\nmax_attemps = 3\n").unwrap();
    let out = command(dir.path())
        .arg("--config")
        .arg(&path)
        .arg("list")
        .output()
        .unwrap();
    assert_fails(&out, 6, "max_attemps");
    let out = command(dir.path())
        .args(["--database-url", "mysql://x/y", "list"])
        .output()
        .unwrap();
    assert_fails(&out, 6, "unsupported database URL");
    let out = command(dir.path())
        .env("VFOLDER_CONTROLLER_CONTROLER_X", "1")
        .arg("list")
        .output()
        .unwrap();
    assert_fails(&out, 6, "VFOLDER_CONTROLLER_CONTROLER_X");
    assert!(
        !dir.path().join("vfolder-controller.db").exists(),
        "nothing was created"
    );
}

#[test]
fn example_config_loads_with_every_documented_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.example.toml");
    let config = vfolder_controller::config::Config::load(Some(&path), Vec::new()).unwrap();
    assert_eq!(config.volumes.len(), 1);
    assert_eq!(config.volumes[0].host, "local:volume1");
    assert_eq!(
        config.controller.trash_retention,
        vfolder_controller::config::Retention::After(Duration::from_secs(7 * 86_400))
    );
    // Every key of the serialized configuration appears in the example (commented or not).
    let text = std::fs::read_to_string(&path).unwrap();
    let full = toml::Value::try_from(&config).unwrap();
    let mut missing = Vec::new();
    collect_keys(&full, &mut |k, is_table| {
        let documented = if is_table {
            text.contains(&format!("[{k}]"))
        } else {
            text.contains(&format!("{k} ="))
        };
        if !documented {
            missing.push(k.to_owned());
        }
    });
    for optional in ["replica_id", "marker_file"] {
        assert!(
            text.contains(&format!("# {optional} =")),
            "{optional} documented"
        );
    }
    assert!(
        missing.is_empty(),
        "keys missing from the example: {missing:?}"
    );
}

/// Calls `f(key, value_is_table_or_array_of_tables)` for every key, recursively.
fn collect_keys(v: &toml::Value, f: &mut impl FnMut(&str, bool)) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                f(
                    k,
                    v.is_table()
                        || v.as_array()
                            .is_some_and(|a| a.iter().all(toml::Value::is_table) && !a.is_empty()),
                );
                collect_keys(v, f);
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|v| collect_keys(v, f)),
        _ => {}
    }
}
