//! End-to-end tests of `vfolder-controller run`: real processes, real PostgreSQL and SQLite,
//! real directories and mounts, real signals.

use crate::common;
use crate::harness;
use crate::storage_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::TestDb;
use harness::{Site, Tmpfs};
use rustix::process::Signal;
use storage_support::snapshot;
use uuid::Uuid;
use vfolder_controller::lifecycle::Status;
use vfolder_controller::store::Location;

const LONG: Duration = Duration::from_secs(60);

fn sentinel_snapshots(site: &Site) -> Vec<BTreeMap<std::path::PathBuf, storage_support::Entry>> {
    site.sentinels().iter().map(|p| snapshot(p)).collect()
}

async fn audit_actions(site: &Site, id: Uuid) -> Vec<String> {
    site.audit(Some(id))
        .await
        .into_iter()
        .map(|e| e.action)
        .collect()
}

/// Another session's open transaction that has run `sql` (a lock a platform, a report or an
/// operator might hold); `COMMIT` on it lets go.
async fn hold_in_transaction(site: &Site, sql: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    let mut other = sqlx::PgConnection::connect(&site.database_url)
        .await
        .expect("connect");
    sqlx::raw_sql(&format!("BEGIN; {sql}"))
        .execute(&mut other)
        .await
        .expect(sql);
    other
}

/// Ends a transaction of [`hold_in_transaction`].
async fn let_go(mut other: sqlx::PgConnection) {
    sqlx::raw_sql("COMMIT")
        .execute(&mut other)
        .await
        .expect("commit");
}

conformance!(
    raw_sql_delete_ongoing_removes_the_tree_and_completes,
    trash_timer_purges_after_retention_and_purge_after_wins,
    history_cleanup_removes_old_rows_and_keeps_the_audit,
    trash_move_mode_restores_data_byte_for_byte,
    sighup_stops_gracefully_and_releases_the_lease,
    a_cancelled_removal_saves_its_progress_and_the_final_counts_cover_it,
    trash_retention_never_keeps_old_trash_but_honours_purge_after,
    giving_up_shows_as_many_attempts_as_the_error_says,
    a_row_on_a_volume_no_replica_serves_waits_visibly,
);

/// Files and symlinks still under `path`.
fn remaining(path: &std::path::Path) -> (u64, u64) {
    let (mut files, mut links) = (0, 0);
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_symlink() => links += 1,
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => files += 1,
                Err(_) => {}
            }
        }
    }
    (files, links)
}

/// A site whose removals run at a known, slow pace (so a signal lands mid-removal) and
/// whose leases are not renewed during the test (so only a flush can save progress).
async fn slow_site(db: TestDb) -> Site {
    Site::new(
        db,
        "",
        "removal_threads = 1\nmax_ops_per_second = 400\ncount_bytes = true",
    )
    .await
}

const NO_RENEWAL: [(&str, &str); 2] = [
    ("VFOLDER_CONTROLLER_CONTROLLER_LEASE_DURATION", "120s"),
    ("VFOLDER_CONTROLLER_CONTROLLER_LEASE_RENEW_INTERVAL", "60s"),
];

/// Starts a removal of `folder` under replica `replica` and waits until part of it is gone.
async fn removal_under_way(
    site: &Site,
    folder: &vfolder_controller::store::Folder,
    replica: &str,
) -> harness::Proc {
    let proc = site.start_with(replica, &NO_RENEWAL);
    proc.wait_log("controller running", LONG);
    assert_eq!(site.cli(&["force-delete", &folder.id.to_string()]).0, 0);
    let path = site.folder_path(folder);
    let deadline = Instant::now() + LONG;
    while remaining(&path).0 > 1500 {
        assert!(
            Instant::now() < deadline,
            "removal never started:\n{}",
            site.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proc
}

async fn sighup_stops_gracefully_and_releases_the_lease(db: TestDb) {
    let site = slow_site(db).await;
    let folder = site.folder_with_tree("hup", 20, 100).await;
    let mut proc = removal_under_way(&site, &folder, "first").await;
    proc.signal(Signal::HUP);
    let status = proc
        .wait_timeout(Duration::from_secs(12))
        .expect("exits within the grace period");
    assert!(
        status.success(),
        "exit 0 on SIGHUP: {status:?}\n{}",
        proc.log_text()
    );
    assert!(proc.log_text().contains("SIGHUP"), "{}", proc.log_text());
    let d = site.detail(folder.id).await;
    assert_eq!(d.folder.status, Status::DeleteOngoing);
    let state = d.state.expect("state");
    assert_eq!(state.lease_owner, None, "lease released");
    assert_eq!(state.attempts, 0);
}

async fn a_cancelled_removal_saves_its_progress_and_the_final_counts_cover_it(db: TestDb) {
    let site = slow_site(db).await;
    let folder = site.folder_with_tree("partial", 20, 100).await;
    let path = site.folder_path(&folder);
    let mut first = removal_under_way(&site, &folder, "first").await;
    first.signal(Signal::TERM);
    let status = first
        .wait_timeout(Duration::from_secs(12))
        .expect("exits within the grace period");
    assert!(status.success(), "{status:?}");
    let (files_left, links_left) = remaining(&path);
    assert!(files_left > 0, "the removal was interrupted");
    let saved = site.detail(folder.id).await.state.expect("state").progress;
    assert_eq!(
        (saved.files, saved.symlinks),
        (2000 - files_left, 20 - links_left),
        "what was removed before the signal is saved\n{}",
        first.log_text()
    );
    let _second = site.start_with("second", &NO_RENEWAL);
    site.wait_for(folder.id, LONG, "delete-complete", |d| {
        d.folder.status == Status::DeleteComplete
    })
    .await;
    let audit = site.audit(Some(folder.id)).await;
    let removed: Vec<_> = audit.iter().filter(|e| e.action == "removed").collect();
    assert_eq!(removed.len(), 1, "{audit:#?}");
    let p = removed[0].progress.expect("counts");
    assert_eq!(
        (p.files, p.symlinks),
        (2000, 20),
        "the whole removal is counted"
    );
    let final_counts = site.detail(folder.id).await.state.expect("state").progress;
    assert_eq!((final_counts.files, final_counts.symlinks), (2000, 20));
}

async fn trash_retention_never_keeps_old_trash_but_honours_purge_after(db: TestDb) {
    let site = Site::new(db, "trash_retention = \"never\"", "").await;
    let old = site.folder_with_tree("old", 1, 2).await;
    let timed = site.folder_with_tree("timed", 1, 2).await;
    assert_eq!(site.cli(&["trash", &old.id.to_string()]).0, 0);
    // In the trash for 99 years, as far as the row says.
    site.raw_sql(&format!(
        "UPDATE vfolders SET status_changed = '1927-01-01T00:00:00.000Z' WHERE id = '{}'",
        old.id
    ))
    .await;
    let (code, show, _) = site.cli(&["show", &old.id.to_string()]);
    assert_eq!(code, 0);
    assert!(show.contains("never (trash_retention = never)"), "{show}");
    let proc = site.start("r1");
    proc.wait_log("controller running", LONG);
    assert_eq!(
        site.cli(&["trash", &timed.id.to_string(), "--purge-after", "300ms"])
            .0,
        0
    );
    site.wait_for(timed.id, LONG, "purge-after honoured", |d| {
        d.folder.status == Status::DeleteComplete
    })
    .await;
    // The run of the timer that purged `timed` looked at `old` too.
    assert_eq!(
        site.detail(old.id).await.folder.status,
        Status::DeletePending
    );
    assert!(site.folder_path(&old).join("d0000/f0000").is_file());
    assert!(
        !proc.log_text().contains("maintenance job failed"),
        "{}",
        proc.log_text()
    );
}

async fn giving_up_shows_as_many_attempts_as_the_error_says(db: TestDb) {
    let site = Site::new(db, "max_attempts = 3", "").await;
    let folder = site.folder_with_tree("busy", 1, 2).await;
    // A file bind-mounted over a file of the folder: unlinking it fails with EBUSY, a
    // transient error of the folder (the volume is fine), on every attempt.
    let target = site.folder_path(&folder).join("d0000/f0000");
    let source = site.dir.path().join("outside-file");
    std::fs::write(&source, b"x").expect("write");
    let st = std::process::Command::new("mount")
        .arg("--bind")
        .arg(&source)
        .arg(&target)
        .status()
        .expect("mount");
    assert!(st.success(), "bind-mount a file (tests run as root)");
    let _proc = site.start("r1");
    assert_eq!(site.cli(&["force-delete", &folder.id.to_string()]).0, 0);
    let d = site
        .wait_for(folder.id, LONG, "delete-error", |d| {
            d.folder.status == Status::DeleteError
        })
        .await;
    harness::lazy_unmount(&target);
    let error = d.state.and_then(|s| s.last_error).expect("error");
    assert!(error.starts_with("gave up after 3 attempts"), "{error}");
    let (code, show, _) = site.cli(&["show", &folder.id.to_string()]);
    assert_eq!(code, 0);
    let attempts = show
        .lines()
        .find_map(|l| l.strip_prefix("attempts:"))
        .map(str::trim);
    assert_eq!(attempts, Some("3"), "{show}");
}

async fn a_row_on_a_volume_no_replica_serves_waits_visibly(db: TestDb) {
    let site = Site::new(db, "", "").await;
    let served = site.folder_with_tree("served", 1, 2).await;
    let orphan = site.folder_with_tree("orphan", 1, 2).await;
    site.raw_sql(&format!(
        "UPDATE vfolders SET host = 'elsewhere:v9' WHERE id = '{}'",
        orphan.id
    ))
    .await;
    site.raw_sql("UPDATE vfolders SET status = 'delete-ongoing'")
        .await;
    let port = harness::free_port();
    let listen = format!("127.0.0.1:{port}");
    let proc = site.start_with("r1", &[("VFOLDER_CONTROLLER_HTTP_LISTEN", &listen)]);
    site.wait_for(served.id, LONG, "the served folder is removed", |d| {
        d.folder.status == Status::DeleteComplete
    })
    .await;
    // The unserved row is the oldest unconverged removal: the gauge behind the
    // VfolderRemovalBacklog alert shows it.
    let gauge = "vfolder_controller_oldest_unconverged_seconds{kind=\"remove\"}";
    let deadline = Instant::now() + LONG;
    while harness::metric(port, gauge).is_none_or(|age| age <= 0.0) {
        assert!(
            Instant::now() < deadline,
            "gauge never showed the row:\n{}",
            proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let d = site.detail(orphan.id).await;
    assert_eq!(
        d.folder.status,
        Status::DeleteOngoing,
        "it waits, never delete-error"
    );
    assert!(
        d.state
            .is_none_or(|s| s.attempts == 0 && s.last_error.is_none()),
        "never claimed"
    );
    assert!(
        site.audit(Some(orphan.id))
            .await
            .iter()
            .all(|e| e.error.is_none())
    );
    let (_, show, _) = site.cli(&["show", &orphan.id.to_string()]);
    assert!(
        show.contains("volume elsewhere:v9 is not configured here"),
        "{show}"
    );
}

async fn raw_sql_delete_ongoing_removes_the_tree_and_completes(db: TestDb) {
    let backend = db.backend;
    let site = Site::new(db, "", "").await;
    let before = sentinel_snapshots(&site);
    let folder = site.folder_with_tree("photos", 5, 20).await;
    let path = site.folder_path(&folder);
    let scope_dir = path.ancestors().nth(3).expect("scope dir").to_owned();
    assert!(path.join("d0004/f0019").is_file());

    let mut listener = match backend {
        common::Backend::Postgres => {
            let mut l = sqlx::postgres::PgListener::connect(&site.database_url)
                .await
                .expect("listener");
            l.listen(vfolder_controller::store::EVENT_CHANNEL)
                .await
                .expect("listen");
            Some(l)
        }
        common::Backend::Sqlite => None,
    };

    let proc = site.start("r1");
    proc.wait_log("controller running", LONG);
    site.raw_sql(&format!(
        "UPDATE vfolders SET status = 'delete-ongoing' WHERE id = '{}'",
        folder.id
    ))
    .await;
    site.wait_for(folder.id, LONG, "delete-complete", |d| {
        d.folder.status == Status::DeleteComplete
    })
    .await;

    assert!(!path.exists(), "folder data must be gone");
    assert!(
        !path.parent().expect("fan-out").exists(),
        "empty fan-out parents are removed"
    );
    assert!(scope_dir.is_dir(), "the quota-scope directory is kept");
    let audit = site.audit(Some(folder.id)).await;
    let removed: Vec<_> = audit.iter().filter(|e| e.action == "removed").collect();
    assert_eq!(removed.len(), 1, "one completion audit entry: {audit:#?}");
    let progress = removed[0].progress.expect("removal counts in the audit");
    assert_eq!(progress.files, 100);
    assert_eq!(progress.symlinks, 5);
    assert_eq!(removed[0].replica.as_deref(), Some("r1"));
    assert_eq!(removed[0].to_status.as_deref(), Some("delete-complete"));

    if let Some(listener) = listener.as_mut() {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while !seen
            .iter()
            .any(|(_, to): &(String, String)| to == "delete-complete")
        {
            let left = deadline.saturating_duration_since(Instant::now());
            let n = tokio::time::timeout(left, listener.recv())
                .await
                .expect("NOTIFY for delete-complete within 10 s")
                .expect("notification");
            let payload: serde_json::Value =
                serde_json::from_str(n.payload()).expect("JSON payload");
            if payload["id"] == folder.id.to_string() {
                seen.push((
                    payload["from"].as_str().unwrap_or_default().to_owned(),
                    payload["to"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
        assert!(
            seen.contains(&("delete-ongoing".to_owned(), "delete-complete".to_owned())),
            "{seen:?}"
        );
    }
    assert_eq!(
        sentinel_snapshots(&site),
        before,
        "nothing outside the folder changed"
    );
}

async fn trash_timer_purges_after_retention_and_purge_after_wins(db: TestDb) {
    let site = Site::new(db, "trash_retention = \"3s\"", "").await;
    let default_ret = site.folder_with_tree("a", 1, 3).await;
    let short = site.folder_with_tree("b", 1, 3).await;
    let long = site.folder_with_tree("c", 1, 3).await;
    let live = site.folder_with_tree("d", 1, 3).await;
    let proc = site.start("r1");
    proc.wait_log("controller running", LONG);

    let id = |f: &vfolder_controller::store::Folder| f.id.to_string();
    assert_eq!(site.cli(&["trash", &id(&default_ret)]).0, 0);
    assert_eq!(
        site.cli(&["trash", &id(&short), "--purge-after", "500ms"])
            .0,
        0
    );
    assert_eq!(site.cli(&["trash", &id(&long), "--purge-after", "1h"]).0, 0);
    assert_eq!(
        site.detail(default_ret.id).await.folder.status,
        Status::DeletePending,
        "not purged before the retention"
    );
    site.wait_for(short.id, LONG, "purge-after purge", |d| {
        d.folder.status == Status::DeleteComplete
    })
    .await;
    site.wait_for(default_ret.id, LONG, "retention purge", |d| {
        d.folder.status == Status::DeleteComplete
    })
    .await;
    assert!(!site.folder_path(&default_ret).exists());
    assert!(
        audit_actions(&site, default_ret.id)
            .await
            .contains(&"trash-timer".to_owned())
    );
    // A later purge-after wins over the shorter default retention; live folders are untouched.
    assert_eq!(
        site.detail(long.id).await.folder.status,
        Status::DeletePending
    );
    assert!(site.folder_path(&long).join("d0000/f0000").is_file());
    assert_eq!(site.detail(live.id).await.folder.status, Status::Ready);
    assert!(site.folder_path(&live).join("d0000/f0000").is_file());
}

async fn history_cleanup_removes_old_rows_and_keeps_the_audit(db: TestDb) {
    let site = Site::new(db, "history_retention = \"1s\"", "").await;
    let folder = site.folder_with_tree("old", 1, 2).await;
    let keep = site.folder_with_tree("keep", 1, 2).await;
    let proc = site.start("r1");
    proc.wait_log("controller running", LONG);
    assert_eq!(site.cli(&["force-delete", &folder.id.to_string()]).0, 0);
    let deadline = Instant::now() + LONG;
    loop {
        match site.store.get_folder(folder.id).await {
            Err(vfolder_controller::store::Error::NotFound(_)) => break,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(
            Instant::now() < deadline,
            "row never cleaned up:\n{}",
            site.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let actions = audit_actions(&site, folder.id).await;
    for expected in ["create", "force-delete", "removed", "history-cleanup"] {
        assert!(actions.contains(&expected.to_owned()), "{actions:?}");
    }
    assert_eq!(site.detail(keep.id).await.folder.status, Status::Ready);
}

async fn trash_move_mode_restores_data_byte_for_byte(db: TestDb) {
    let site = Site::new(db, "", "trash = \"move\"").await;
    let folder = site.folder_with_tree("moving", 4, 6).await;
    let live = site.folder_path(&folder);
    let trash = site.trash_path(&folder);
    let original = snapshot(&live);
    let proc = site.start("r1");
    proc.wait_log("controller running", LONG);
    let id = folder.id.to_string();

    assert_eq!(site.cli(&["trash", &id]).0, 0);
    site.wait_for(folder.id, LONG, "moved to trash", |d| {
        d.state
            .as_ref()
            .is_some_and(|s| s.location == Location::Trash)
    })
    .await;
    assert!(!live.exists(), "live path emptied");
    assert_eq!(
        snapshot(&trash),
        original,
        "trash holds the data byte for byte"
    );

    assert_eq!(site.cli(&["restore", &id]).0, 0);
    site.wait_for(folder.id, LONG, "restored from trash", |d| {
        d.state
            .as_ref()
            .is_some_and(|s| s.location == Location::Live)
    })
    .await;
    assert_eq!(
        snapshot(&live),
        original,
        "restore brings the data back byte for byte"
    );
    assert!(!trash.exists());

    // Trash again, then purge: the data is removed from the trash path.
    assert_eq!(site.cli(&["trash", &id]).0, 0);
    site.wait_for(folder.id, LONG, "moved to trash again", |d| {
        d.state
            .as_ref()
            .is_some_and(|s| s.location == Location::Trash)
    })
    .await;
    assert_eq!(site.cli(&["purge", &id]).0, 0);
    site.wait_for(folder.id, LONG, "purged", |d| {
        d.folder.status == Status::DeleteComplete
    })
    .await;
    assert!(!trash.exists() && !live.exists());
}

/// Starts a replica whose resync poll is an hour away and waits past its first pass: from
/// then on only a wake-up (or a refill after a finished folder) makes its loop claim.
async fn start_with_the_poll_an_hour_away(site: &Site) -> harness::Proc {
    let proc = site.start_with(
        "r1",
        &[
            ("VFOLDER_CONTROLLER_CONTROLLER_RESYNC_INTERVAL", "1h"),
            ("VFOLDER_CONTROLLER_CONTROLLER_POLL_INTERVAL", "1h"),
        ],
    );
    proc.wait_log("listening for status events", LONG);
    tokio::time::sleep(Duration::from_millis(500)).await;
    proc
}

/// The wake-up path on its own: with the resync poll an hour away, only the NOTIFY a status
/// change sends can bring the controller to a folder within seconds (every other controller
/// test also converges by polling, so a broken listener would pass them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_change_is_picked_up_by_notify_alone() {
    let site = Site::new(TestDb::postgres().await, "", "").await;
    let folder = site.folder_with_tree("notify-only", 2, 10).await;
    let _proc = start_with_the_poll_an_hour_away(&site).await;
    site.raw_sql(&format!(
        "UPDATE vfolders SET status = 'delete-ongoing' WHERE id = '{}'",
        folder.id
    ))
    .await;
    site.wait_for(folder.id, Duration::from_secs(2), "delete-complete", |d| {
        d.folder.status == Status::DeleteComplete
    })
    .await;
    assert!(!site.folder_path(&folder).exists());
}

/// Moves are looked for on a pass a status change woke, and on the refills that follow
/// while moves keep being found: a backlog of moves on a volume with one slot converges
/// folder after folder, though all of them were trashed by one statement (one wake-up) and
/// the resync poll is an hour away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_moves_keeps_its_slot_busy_without_the_poll() {
    let site = Site::new(
        TestDb::postgres().await,
        "",
        "trash = \"move\"\nmax_concurrent_removals = 1",
    )
    .await;
    let folders = site.folders_with_trees("backlog-", 6, 2, 5).await;
    let _proc = start_with_the_poll_an_hour_away(&site).await;
    site.raw_sql("UPDATE vfolders SET status = 'delete-pending' WHERE name LIKE 'backlog-%'")
        .await;
    for folder in &folders {
        site.wait_for(folder.id, Duration::from_secs(10), "moved to trash", |d| {
            d.state
                .as_ref()
                .is_some_and(|s| s.location == Location::Trash)
        })
        .await;
        assert!(site.trash_path(folder).is_dir() && !site.folder_path(folder).exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_goes_to_delete_error_and_retry_recovers() {
    let site = Site::new(TestDb::postgres().await, "", "").await;
    let folder = site.folder_with_tree("with-mount", 2, 3).await;
    let inner = site.folder_path(&folder).join("d0001/mnt");
    let tmpfs = Tmpfs::mount(&inner);
    std::fs::write(inner.join("precious"), b"keep me").expect("write");

    let proc = site.start("r1");
    proc.wait_log("controller running", LONG);
    let id = folder.id.to_string();
    assert_eq!(site.cli(&["force-delete", &id]).0, 0);
    let d = site
        .wait_for(folder.id, LONG, "delete-error", |d| {
            d.folder.status == Status::DeleteError
        })
        .await;
    let error = d.state.and_then(|s| s.last_error).expect("error text");
    assert!(error.contains("mnt"), "error names the mount: {error}");
    assert_eq!(
        std::fs::read(inner.join("precious")).expect("tmpfs contents survive"),
        b"keep me"
    );
    let audit = site.audit(Some(folder.id)).await;
    assert!(
        audit
            .iter()
            .any(|e| e.to_status.as_deref() == Some("delete-error") && e.error.is_some()),
        "{audit:#?}"
    );

    tmpfs.unmount();
    assert_eq!(site.cli(&["retry", &id]).0, 0);
    site.wait_for(folder.id, LONG, "delete-complete after retry", |d| {
        d.folder.status == Status::DeleteComplete
    })
    .await;
}

/// A removal slot is given back when the folder's files are gone, not when its result is
/// written: with one slot and every result held up by the database (the audit table locked
/// against inserts, as a long report or a backup tool might), the next folders are still
/// removed, up to the bound on folders in flight; the rest wait for the database. Once it
/// takes the results, every folder ends with exactly one audit entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slot_removes_the_next_folder_while_the_last_result_waits_for_the_database() {
    use vfolder_controller::controller::IN_FLIGHT_PER_SLOT;
    let site = Site::new(
        TestDb::postgres().await,
        "max_concurrent_removals = 1",
        "removal_threads = 1\nmax_concurrent_removals = 1",
    )
    .await;
    let folders = site
        .folders_with_trees("f", IN_FLIGHT_PER_SLOT + 2, 2, 10)
        .await;
    let proc = site.start("r1");
    proc.wait_log("listening for status events", LONG);
    let blocker = hold_in_transaction(&site, "LOCK TABLE vfolder_audit IN SHARE MODE").await;
    site.raw_sql("UPDATE vfolders SET status = 'delete-ongoing'")
        .await;

    let gone = || {
        folders
            .iter()
            .filter(|f| !site.folder_path(f).exists())
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while gone() < IN_FLIGHT_PER_SLOT {
        assert!(
            Instant::now() < deadline,
            "with the first result waiting, the one slot must take the next folders \
             ({} removed):\n{}",
            gone(),
            site.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The bound: no folder beyond it is claimed while the results wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(gone(), IN_FLIGHT_PER_SLOT, "{}", site.logs());
    for f in &folders {
        assert_eq!(
            site.detail(f.id).await.folder.status,
            Status::DeleteOngoing,
            "the results are still waiting for the audit table"
        );
    }

    let_go(blocker).await;
    site.wait_all_complete(folders.len(), LONG).await;
    for f in &folders {
        assert!(!site.folder_path(f).exists());
        assert_eq!(
            audit_actions(&site, f.id).await,
            ["create", "removed"],
            "{}",
            f.id
        );
    }
    assert!(site.sentinels().iter().all(|p| p.exists()));
}

/// Results are written one batch at a time, but a batch stuck on a row lock (a transaction
/// of the platform's holding one folder's row) does not hold up the others: the next batch
/// is written beside it, and the stuck folder ends once the lock is gone, with exactly one
/// audit entry like every other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_stuck_on_a_row_lock_does_not_hold_up_the_others() {
    let site = Site::new(
        TestDb::postgres().await,
        "max_concurrent_removals = 2",
        // Slow enough that the first folder's row is locked before its removal ends.
        "removal_threads = 1\nmax_concurrent_removals = 2\nmax_ops_per_second = 200",
    )
    .await;
    let stuck = site.folder_with_tree("stuck", 2, 100).await;
    let other = site.folder_with_tree("other", 2, 300).await;
    let proc = site.start("r1");
    proc.wait_log("listening for status events", LONG);
    let raw = site.db.raw().await;
    raw.set_status(stuck.id, "delete-ongoing")
        .await
        .expect("purge");
    site.wait_for(stuck.id, LONG, "the first removal under way", |d| {
        d.state.as_ref().is_some_and(|s| s.lease_owner.is_some())
    })
    .await;
    let platform = hold_in_transaction(
        &site,
        &format!("SELECT 1 FROM vfolders WHERE id = '{}' FOR SHARE", stuck.id),
    )
    .await;
    raw.set_status(other.id, "delete-ongoing")
        .await
        .expect("purge");

    site.wait_for(other.id, LONG, "the other folder's result", |d| {
        d.folder.status == Status::DeleteComplete
    })
    .await;
    assert!(!site.folder_path(&stuck).exists(), "{}", site.logs());
    assert_eq!(
        site.detail(stuck.id).await.folder.status,
        Status::DeleteOngoing,
        "the stuck folder's result waits for the lock"
    );

    let_go(platform).await;
    site.wait_for(stuck.id, LONG, "the stuck folder's result", |d| {
        d.folder.status == Status::DeleteComplete
    })
    .await;
    for f in [&stuck, &other] {
        assert_eq!(
            audit_actions(&site, f.id).await,
            ["create", "removed"],
            "{}",
            f.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_work() {
    let site = Site::new(
        TestDb::postgres().await,
        "max_concurrent_removals = 2",
        "removal_threads = 1\nmax_concurrent_removals = 2\ncount_bytes = true",
    )
    .await;
    let before = sentinel_snapshots(&site);
    let folders = site.folders_with_trees("f", 200, 6, 100).await;
    site.raw_sql("UPDATE vfolders SET status = 'delete-ongoing'")
        .await;

    let mut kills = 0;
    let mut completed_at_kill = Vec::new();
    while kills < 12 {
        let mut proc = site.start(&format!("crash-{kills}"));
        let wait = Duration::from_millis(rand::random_range(150..900));
        std::thread::sleep(wait);
        proc.kill9();
        kills += 1;
        let done = site
            .store
            .list_folders(&[Status::DeleteComplete], false)
            .await
            .expect("list")
            .len();
        completed_at_kill.push(done);
    }
    assert!(
        completed_at_kill.first() < Some(&200),
        "the kills must interrupt work: {completed_at_kill:?}"
    );
    let _last = site.start("final");
    site.wait_all_complete(folders.len(), Duration::from_secs(180))
        .await;
    assert!(
        site.store
            .list_folders(&[Status::DeleteError], false)
            .await
            .expect("list")
            .is_empty()
    );
    let audit = site.audit(None).await;
    let mut completions: BTreeMap<Uuid, usize> = BTreeMap::new();
    for e in audit.iter().filter(|e| e.action == "removed") {
        *completions.entry(e.vfolder_id).or_default() += 1;
    }
    for f in &folders {
        assert_eq!(completions.get(&f.id), Some(&1), "folder {}", f.id);
        assert!(!site.folder_path(f).exists());
    }
    assert_eq!(sentinel_snapshots(&site), before);
    eprintln!("completed folders at each kill: {completed_at_kill:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lease_and_another_replica_resumes_at_once() {
    let site = Site::new(
        TestDb::postgres().await,
        "",
        "removal_threads = 1\ncount_bytes = true",
    )
    .await;
    // A lease far longer than the test: resuming must not wait for it to expire.
    let long_lease = [
        ("VFOLDER_CONTROLLER_CONTROLLER_LEASE_DURATION", "120s"),
        (
            "VFOLDER_CONTROLLER_CONTROLLER_LEASE_RENEW_INTERVAL",
            "200ms",
        ),
    ];
    let folder = site.folder_with_tree("big", 100, 1000).await;
    let path = site.folder_path(&folder);
    let mut first = site.start_with("first", &long_lease);
    first.wait_log("controller running", LONG);
    assert_eq!(site.cli(&["force-delete", &folder.id.to_string()]).0, 0);
    site.wait_for(folder.id, LONG, "removal in progress", |d| {
        d.state
            .as_ref()
            .is_some_and(|s| s.lease_owner.as_deref() == Some("first") && s.progress.files > 0)
    })
    .await;
    first.signal(Signal::TERM);
    let status = first
        .wait_timeout(Duration::from_secs(12))
        .expect("exits within the grace period");
    assert!(
        status.success(),
        "exit 0 on SIGTERM: {status:?}\n{}",
        first.log_text()
    );
    let d = site.detail(folder.id).await;
    assert_eq!(
        d.folder.status,
        Status::DeleteOngoing,
        "cancellation is not an error"
    );
    let state = d.state.expect("state");
    assert_eq!(state.lease_owner, None, "lease released on shutdown");
    assert_eq!(
        state.attempts, 0,
        "cancellation is not counted as a failure"
    );
    assert!(path.exists(), "the tree was only partly removed");

    let resumed = Instant::now();
    let _second = site.start_with("second", &long_lease);
    site.wait_for(folder.id, LONG, "second replica completes", |d| {
        d.folder.status == Status::DeleteComplete
    })
    .await;
    assert!(
        resumed.elapsed() < Duration::from_secs(100),
        "resumed before the 120 s lease could have expired"
    );
    assert!(!path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_work_and_never_double_start() {
    let site = Site::new(TestDb::postgres().await, "", "").await;
    let folders = site.folders_with_trees("r", 300, 2, 4).await;
    // Structured logs: the starts are counted from JSON fields, not from human text.
    let procs: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|r| site.start_with(r, &[("VFOLDER_CONTROLLER_LOG_FORMAT", "json")]))
        .collect();
    for p in &procs {
        p.wait_log("controller running", LONG);
    }
    site.raw_sql("UPDATE vfolders SET status = 'delete-ongoing'")
        .await;
    site.wait_all_complete(folders.len(), LONG * 2).await;
    let audit = site.audit(None).await;
    let mut by_replica: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_folder: BTreeMap<Uuid, usize> = BTreeMap::new();
    for e in audit.iter().filter(|e| e.action == "removed") {
        *by_replica
            .entry(e.replica.clone().unwrap_or_default())
            .or_default() += 1;
        *per_folder.entry(e.vfolder_id).or_default() += 1;
    }
    assert!(
        per_folder.values().all(|n| *n == 1),
        "one completion per folder"
    );
    assert_eq!(per_folder.len(), 300);
    assert!(
        by_replica.len() >= 2,
        "work spread over replicas: {by_replica:?}"
    );
    // Every claim is logged when a removal starts: no folder was started twice.
    let mut starts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &procs {
        for line in p.log_text().lines() {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if entry["message"] == "removal started" {
                let id = entry["span"]["id"]
                    .as_str()
                    .expect("a start names its folder");
                starts
                    .entry(id.to_owned())
                    .or_default()
                    .push(p.log.display().to_string());
            }
        }
    }
    assert_eq!(starts.len(), 300, "every folder's start is logged");
    let twice: Vec<_> = starts.iter().filter(|(_, r)| r.len() != 1).collect();
    assert!(
        twice.is_empty(),
        "folders started more than once: {twice:?}"
    );
    eprintln!("completions by replica: {by_replica:?}");
}
