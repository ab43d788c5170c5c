//! Deleted rows and the data no row accounts for: tombstones, finishing a removal whose row
//! was deleted under it, `orphans scan` and `orphans reclaim`. Real processes, real
//! databases (both backends), real directories.

mod common;
mod harness;
mod storage_support;

use std::time::{Duration, Instant};

use common::TestDb;
use harness::Site;
use storage_support::snapshot;
use uuid::Uuid;

const LONG: Duration = Duration::from_secs(60);

conformance!(
    a_row_deleted_mid_removal_is_removed_from_its_tombstone,
    every_deleted_row_leaves_a_tombstone_and_one_audit_entry,
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
