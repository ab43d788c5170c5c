//! Deleted rows and the data no row accounts for: tombstones, finishing a removal whose row
//! was deleted under it, `orphans scan` and `orphans reclaim`. Real processes, real
//! databases (both backends), real directories.

use crate::common;
use crate::harness;
use crate::storage_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::TestDb;
use harness::Site;
use storage_support::{snapshot, snapshot_skipping};
use uuid::Uuid;
use vfolder_controller::storage::FolderRef;

const LONG: Duration = Duration::from_secs(60);

conformance!(
    a_row_deleted_mid_removal_is_removed_from_its_tombstone,
    every_deleted_row_leaves_a_tombstone_and_one_audit_entry,
    the_scan_report_of_a_seeded_volume_is_exact,
    reclaim_removes_only_orphans_no_row_claimed_during_the_grace_period,
    a_volume_with_reclaim_orphans_is_scanned_and_reclaimed_by_run,
);

/// Polls a raw text query until it returns `want`, or panics with the site's logs.
async fn wait_text(site: &Site, sql: &str, want: &str) {
    let raw = site.db.raw().await;
    let deadline = Instant::now() + LONG;
    loop {
        let got = raw.text(sql).await;
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql}: {got:?}, want {want:?}\n{}",
            site.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_row_deleted_mid_removal_is_removed_from_its_tombstone(db: TestDb) {
    // Slow enough (400 unlinks a second over 3,000 files) that the DELETE lands mid-removal.
    let site = Site::new(db, "", "max_ops_per_second = 400").await;
    let sentinels: Vec<_> = site.sentinels().iter().map(|p| snapshot(p)).collect();
    let folder = site.folder_with_tree("big", 10, 300).await;
    let path = site.folder_path(&folder);
    let proc = site.start("r1");
    proc.wait_log("controller running", LONG);
    site.raw_sql(&format!(
        "UPDATE vfolders SET status = 'delete-ongoing' WHERE id = '{}'",
        folder.id
    ))
    .await;
    site.wait_for(folder.id, LONG, "removal progress", |d| {
        d.state.as_ref().is_some_and(|s| s.progress.files > 0)
    })
    .await;
    // An admin's plain DELETE, as the platform's purge issues it.
    site.raw_sql(&format!("DELETE FROM vfolders WHERE id = '{}'", folder.id))
        .await;

    wait_text(
        &site,
        &format!(
            "SELECT removal FROM vfolder_tombstones WHERE vfolder_id = '{}'",
            folder.id
        ),
        "removed",
    )
    .await;
    assert!(!path.exists(), "the tree must be gone");
    let after: Vec<_> = site.sentinels().iter().map(|p| snapshot(p)).collect();
    assert_eq!(sentinels, after, "nothing outside the folder was touched");

    let audit = site.audit(Some(folder.id)).await;
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "create",
            "row-deleted-during-removal",
            "removed-after-row-deleted"
        ],
        "{audit:#?}"
    );
    let deleted = &audit[1];
    assert_eq!(deleted.from_status.as_deref(), Some("delete-ongoing"));
    assert!(
        deleted
            .error
            .as_deref()
            .is_some_and(|e| e.contains("row deleted during removal")),
        "{deleted:?}"
    );
    let removed = &audit[2];
    let progress = removed.progress.expect("counts of the removal");
    // Every file was removed by this one removal, before and after the DELETE.
    assert_eq!(progress.files, 3000, "{removed:?}");
    assert_eq!(removed.replica.as_deref(), Some("r1"));
    let logs = proc.log_text();
    assert!(logs.contains("row deleted during removal"), "{logs}");
    assert!(!logs.contains("lease lost"), "{logs}");
}

async fn every_deleted_row_leaves_a_tombstone_and_one_audit_entry(db: TestDb) {
    let backend = db.backend;
    let site = Site::new(db, "", "").await;
    let trashed = site.folder_with_tree("trashed", 1, 3).await;
    let failed = site.folder_with_tree("failed", 1, 3).await;
    let raw = site.db.raw().await;
    raw.set_status(trashed.id, "delete-pending")
        .await
        .expect("trash");
    raw.set_status(failed.id, "delete-ongoing")
        .await
        .expect("ongoing");
    raw.set_status(failed.id, "delete-error")
        .await
        .expect("error");

    // The platform's purge: a plain DELETE of a trashed row.
    site.raw_sql(&format!("DELETE FROM vfolders WHERE id = '{}'", trashed.id))
        .await;
    // The controller's own forget writes its own audit entry; the tombstone adds none.
    let (code, _, err) = site.cli(&["--actor", "alice", "forget", &failed.id.to_string()]);
    assert_eq!(code, 0, "{err}");

    let tomb = |id: Uuid| {
        format!(
            "SELECT status || ' ' || cause || ' ' || removal || ' ' || coalesce(actor, '-')
             FROM vfolder_tombstones WHERE vfolder_id = '{id}'"
        )
    };
    let platform_actor = match backend {
        common::Backend::Postgres => "db:postgres",
        common::Backend::Sqlite => "-",
    };
    assert_eq!(
        raw.text(&tomb(trashed.id)).await.as_deref(),
        Some(format!("delete-pending row-deleted none {platform_actor}").as_str())
    );
    assert_eq!(
        raw.text(&tomb(failed.id)).await.as_deref(),
        Some("delete-error forget none alice")
    );
    let site = &site;
    let actions = |id| async move {
        site.audit(Some(id))
            .await
            .into_iter()
            .map(|e| e.action)
            .collect::<Vec<_>>()
    };
    assert_eq!(actions(trashed.id).await, ["create", "row-deleted"]);
    assert_eq!(actions(failed.id).await, ["create", "forget"]);
}

/// The layout path of a folder id (in the trash with `trash`), by the engine's one path
/// computation, and the directory created there with a small tree.
fn plant(site: &Site, id: Uuid, scope: Option<&str>, trash: bool) -> PathBuf {
    let volume = site.volumes.get("local:volume1").expect("volume");
    let folder = FolderRef {
        id,
        host: "local:volume1",
        quota_scope_id: scope,
    };
    let rel = if trash {
        volume.trash_path(&folder)
    } else {
        volume.folder_path(&folder)
    }
    .expect("path");
    harness::make_tree(&site.mount().join(&rel), 2, 3);
    rel
}

/// Runs `--json orphans scan` and returns its lines as JSON.
fn scan_json(site: &Site, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["--json", "orphans", "scan"];
    args.extend_from_slice(extra);
    let (code, out, err) = site.cli(&args);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// `(kind, path)` of every finding.
fn kinds_and_paths(lines: &[serde_json::Value]) -> BTreeSet<(String, String)> {
    lines
        .iter()
        .filter(|l| l["kind"] != "summary")
        .map(|l| {
            let path = l["path"].as_str().unwrap_or_default().to_owned();
            (l["kind"].as_str().unwrap_or_default().to_owned(), path)
        })
        .collect()
}

fn finding<'a>(lines: &'a [serde_json::Value], path: &Path) -> &'a serde_json::Value {
    let path = path.to_str().expect("utf-8 path");
    lines
        .iter()
        .find(|l| l["path"] == path)
        .unwrap_or_else(|| panic!("no finding for {path}: {lines:#?}"))
}

/// Files and bytes of a tree, the slow obvious way (the oracle of `--count`).
fn du(root: &Path) -> (u64, u64, u64, u64) {
    let (mut files, mut dirs, mut links, mut bytes) = (0, 1, 0, 0);
    for e in std::fs::read_dir(root).expect("read_dir") {
        let e = e.expect("entry");
        let ty = e.file_type().expect("type");
        if ty.is_symlink() {
            links += 1;
        } else if ty.is_dir() {
            let (f, d, l, b) = du(&e.path());
            files += f;
            dirs += d;
            links += l;
            bytes += b;
        } else {
            files += 1;
            bytes += e.metadata().expect("metadata").len();
        }
    }
    (files, dirs, links, bytes)
}

async fn the_scan_report_of_a_seeded_volume_is_exact(db: TestDb) {
    let site = Site::new(db, "", "trash = \"move\"").await;
    let raw = site.db.raw().await;
    let mount = site.mount().to_owned();
    let rel = |p: &Path| {
        p.strip_prefix(&mount)
            .expect("inside the volume")
            .to_owned()
    };

    // Accounted for: a live folder, a trashed one (moved into the trash by hand, as the
    // controller does), a delete-ongoing one mid-removal. None is reported.
    let live = site.folder_with_tree("live", 2, 3).await;
    let trashed = site.folder_with_tree("trashed", 2, 3).await;
    raw.set_status(trashed.id, "delete-pending")
        .await
        .expect("trash");
    std::fs::create_dir_all(site.trash_path(&trashed).parent().expect("parent")).expect("mkdir");
    std::fs::rename(site.folder_path(&trashed), site.trash_path(&trashed)).expect("move");

    // Orphans: purged by the platform (a plain DELETE of a trashed row), never had a row
    // (with a scope, without one, in the trash), and a directory at another scope than its
    // row's.
    let purged = site.folder_with_tree("purged", 2, 3).await;
    raw.set_status(purged.id, "delete-pending")
        .await
        .expect("trash");
    site.raw_sql(&format!("DELETE FROM vfolders WHERE id = '{}'", purged.id))
        .await;
    let scope = format!("project:{}", Uuid::new_v4());
    let stray = plant(&site, Uuid::new_v4(), Some(&scope), false);
    let scopeless = plant(&site, Uuid::new_v4(), None, false);
    let in_trash = plant(&site, Uuid::new_v4(), Some(&scope), true);
    let elsewhere = plant(&site, live.id, Some(&scope), false);
    // A folder directory created a moment before its row: an orphan at this moment.
    let early_id = Uuid::new_v4();
    let early = plant(&site, early_id, Some(&scope), false);

    // Unfinished: delete-complete, data still there.
    let complete = site.folder_with_tree("complete", 2, 3).await;
    raw.set_status(complete.id, "delete-ongoing")
        .await
        .expect("ongoing");
    raw.set_status(complete.id, "delete-complete")
        .await
        .expect("complete");
    // Missing: a live row whose directory is gone.
    let gone = site.folder_with_tree("gone", 1, 1).await;
    std::fs::remove_dir_all(site.folder_path(&gone)).expect("rm");

    // Foreign entries: a file and lost+found at the root, a non-hex fan-out, a file where a
    // folder belongs, a symlink where a folder belongs (to a directory outside the volume),
    // a symlink where a scope belongs, an uppercase folder name, the sentinel tree.
    let outside = site.dir.path().join("outside-target");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(mount.join("README"), "hi").expect("write");
    std::fs::create_dir_all(mount.join("lost+found")).expect("mkdir");
    let scope_dir = stray.ancestors().nth(3).expect("scope dir").to_owned();
    std::fs::create_dir_all(mount.join(&scope_dir).join("zz")).expect("mkdir");
    let fan2 = mount.join(stray.parent().expect("fan2"));
    let file_leaf = fan2.join("0".repeat(28));
    std::fs::write(&file_leaf, "not a dir").expect("write");
    let link_leaf = fan2.join("1".repeat(28));
    std::os::unix::fs::symlink(&outside, &link_leaf).expect("symlink");
    let link_scope = mount.join("2".repeat(32));
    std::os::unix::fs::symlink(&outside, &link_scope).expect("symlink");
    let upper = fan2.join("A".repeat(28));
    std::fs::create_dir_all(&upper).expect("mkdir");
    let sentinel = site.sentinels()[0].clone();
    let before = snapshot(&mount);

    let lines = scan_json(&site, &["--count"]);
    let got = kinds_and_paths(&lines);
    let s = |p: &Path| p.to_str().expect("utf-8").to_owned();
    let expected: BTreeSet<(String, String)> = [
        ("orphan", s(&rel(&site.folder_path(&purged)))),
        ("orphan", s(&stray)),
        ("orphan", s(&scopeless)),
        ("orphan", s(&in_trash)),
        ("orphan", s(&elsewhere)),
        ("orphan", s(&early)),
        ("unfinished", s(&rel(&site.folder_path(&complete)))),
        ("missing", s(&rel(&site.folder_path(&gone)))),
        ("foreign", "README".to_owned()),
        ("foreign", "lost+found".to_owned()),
        ("foreign", s(&scope_dir.join("zz"))),
        ("foreign", s(&rel(&file_leaf))),
        ("foreign", s(&rel(&link_leaf))),
        ("foreign", s(&rel(&link_scope))),
        ("foreign", s(&rel(&upper))),
        ("foreign", s(&rel(&sentinel))),
    ]
    .into_iter()
    .map(|(k, p)| (k.to_owned(), p))
    .collect();
    assert_eq!(got, expected, "{lines:#?}");
    assert_eq!(snapshot(&mount), before, "the scan changed the volume");
    assert!(outside.read_dir().expect("outside").next().is_none());

    // The stories.
    let purged_line = finding(&lines, &rel(&site.folder_path(&purged)));
    assert_eq!(purged_line["tombstone"]["status"], "delete-pending");
    assert_eq!(purged_line["tombstone"]["cause"], "row-deleted");
    assert_eq!(purged_line["tombstone"]["removal"], "none");
    let elsewhere_line = finding(&lines, &elsewhere);
    assert_eq!(elsewhere_line["row"]["status"], "ready");
    assert!(
        elsewhere_line.get("first_seen").is_none(),
        "{elsewhere_line}"
    );
    let stray_line = finding(&lines, &stray);
    assert_eq!(stray_line["scans"], 1);
    assert!(stray_line["reclaimable_after"].is_string(), "{stray_line}");
    assert_eq!(finding(&lines, &in_trash)["trash"], true);
    assert_eq!(finding(&lines, &rel(&link_leaf))["entry"], "symlink");
    assert_eq!(finding(&lines, &rel(&file_leaf))["entry"], "file");
    // Counts, against the obvious recursive walk.
    let (files, dirs, links, bytes) = du(&mount.join(&stray));
    let counts = &stray_line["counts"];
    assert_eq!(
        (
            &counts["files"],
            &counts["dirs"],
            &counts["symlinks"],
            &counts["bytes"]
        ),
        (&files.into(), &dirs.into(), &links.into(), &bytes.into()),
        "{stray_line}"
    );
    let summary = lines.last().expect("summary");
    assert_eq!(summary["kind"], "summary");
    assert_eq!(
        (
            &summary["orphans"],
            &summary["unfinished"],
            &summary["missing"],
            &summary["foreign_entries"]
        ),
        (&6.into(), &1.into(), &1.into(), &8.into())
    );
    let orphan_bytes: u64 = [
        &rel(&site.folder_path(&purged)),
        &stray,
        &scopeless,
        &in_trash,
        &elsewhere,
        &early,
    ]
    .iter()
    .map(|p| du(&mount.join(p)).3)
    .sum();
    assert_eq!(summary["orphan_bytes"], orphan_bytes);

    // The text report tells the same stories (printed for the record with --nocapture).
    let (code, text, err) = site.cli(&["orphans", "scan", "--count"]);
    assert_eq!(code, 0, "{err}");
    println!("{text}");
    assert!(
        text.contains("tombstone: row \"purged\" deleted")
            && text.contains("row-deleted, was delete-pending, removal none"),
        "{text}"
    );
    assert!(text.contains("volume local:volume1: 6 orphan(s)"), "{text}");

    // Its row arrives: the next scan no longer calls it an orphan.
    site.raw_sql(&format!(
        "INSERT INTO vfolders (id, host, quota_scope_id, name) VALUES ('{early_id}', 'local:volume1', '{scope}', 'early')"
    ))
    .await;
    let again = kinds_and_paths(&scan_json(&site, &[]));
    assert!(
        !again.contains(&("orphan".to_owned(), s(&early))),
        "{again:?}"
    );
    assert_eq!(again.len(), expected.len() - 1);
    let _ = live;
}

async fn reclaim_removes_only_orphans_no_row_claimed_during_the_grace_period(db: TestDb) {
    let site = Site::new(db, "", "orphan_grace = \"1s\"").await;
    let mount = site.mount().to_owned();
    let scope = format!("user:{}", Uuid::new_v4());
    // Orphans: one that stays rowless; one whose row arrives after the first scan (created a
    // moment before its row); one whose row comes and goes between the scans.
    let lost = plant(&site, Uuid::new_v4(), Some(&scope), false);
    let early_id = Uuid::new_v4();
    let early = plant(&site, early_id, Some(&scope), false);
    let blip_id = Uuid::new_v4();
    let blip = plant(&site, blip_id, Some(&scope), false);
    std::fs::write(mount.join("README"), "foreign").expect("write");
    site.sentinels();
    scan_json(&site, &[]);

    site.raw_sql(&format!(
        "INSERT INTO vfolders (id, host, quota_scope_id, name) VALUES ('{early_id}', 'local:volume1', '{scope}', 'early')"
    ))
    .await;
    site.raw_sql(&format!(
        "INSERT INTO vfolders (id, host, quota_scope_id, name) VALUES ('{blip_id}', 'local:volume1', '{scope}', 'blip')"
    ))
    .await;
    site.raw_sql(&format!("DELETE FROM vfolders WHERE id = '{blip_id}'"))
        .await;
    // Seen only by the second scan: not due either.
    let late = plant(&site, Uuid::new_v4(), Some(&scope), false);
    // Past the grace period of the first sightings.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    scan_json(&site, &[]);

    // The reclaimed folder and its fan-out directories (pruned when empty) aside.
    let fan1 = lost
        .parent()
        .and_then(Path::parent)
        .expect("fan-out")
        .to_owned();
    let before = snapshot_skipping(&mount, |p| p.starts_with(&fan1));
    let (code, out, err) = site.cli(&["orphans", "reclaim", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    let lost_text = lost.to_str().expect("utf-8");
    assert!(
        out.contains(&format!("would-reclaim  {lost_text}")),
        "{out}"
    );
    for other in [&early, &blip, &late] {
        assert!(!out.contains(other.to_str().expect("utf-8")), "{out}");
    }
    assert!(mount.join(&lost).is_dir(), "a dry run removed data");

    let (code, out, err) = site.cli(&["--actor", "alice", "orphans", "reclaim"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("reclaimed      {lost_text}")),
        "{out}"
    );
    assert!(!mount.join(&lost).exists(), "{out}");
    // Everything else is as it was: the folder that got its row, the one whose row came and
    // went, the one seen once, the foreign file, the sentinel.
    assert_eq!(snapshot_skipping(&mount, |p| p.starts_with(&fan1)), before);
    for kept in [&early, &blip, &late] {
        assert!(mount.join(kept).is_dir(), "{}", kept.display());
    }
    let audit = reclaims(&site).await;
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_eq!(audit[0].actor.as_deref(), Some("alice"));
    assert_eq!(audit[0].progress.map(|p| p.files), Some(6));
    // Reclaimed once: a second run finds nothing due.
    let (_, out, _) = site.cli(&["orphans", "reclaim"]);
    assert!(out.contains("0 reclaimed"), "{out}");
}

/// The audit entries of reclaimed orphans.
async fn reclaims(site: &Site) -> Vec<vfolder_controller::store::AuditEntry> {
    site.audit(None)
        .await
        .into_iter()
        .filter(|e| e.action == "orphan-reclaimed")
        .collect()
}

async fn a_volume_with_reclaim_orphans_is_scanned_and_reclaimed_by_run(db: TestDb) {
    let site = Site::new(
        db,
        "",
        "orphan_grace = \"1s\"\norphan_scan_interval = \"300ms\"\nreclaim_orphans = true",
    )
    .await;
    let mount = site.mount().to_owned();
    let live = site.folder_with_tree("live", 2, 3).await;
    let orphan = plant(
        &site,
        Uuid::new_v4(),
        Some("user:11111111-2222-3333-4444-555555555555"),
        false,
    );
    std::fs::write(mount.join("README"), "foreign").expect("write");
    let proc = site.start("r1");
    let deadline = Instant::now() + LONG;
    while mount.join(&orphan).exists() {
        assert!(Instant::now() < deadline, "not reclaimed:\n{}", site.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        site.folder_path(&live).is_dir(),
        "a live folder was touched"
    );
    assert!(mount.join("README").is_file(), "a foreign file was touched");
    // The audit entry is written once the removal has returned, a moment after the
    // directory is gone.
    let audit = loop {
        let audit = reclaims(&site).await;
        if !audit.is_empty() || Instant::now() >= deadline {
            break audit;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_eq!(audit[0].actor.as_deref(), Some("r1"));
    drop(proc);
}
