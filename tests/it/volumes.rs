//! Volume outages and per-volume rate limits, end to end: the real binary, real bind mounts
//! that are lazily unmounted under it, real PostgreSQL.
//!
//! The sites use the harness's retry settings (`backoff_min = 100ms`, `backoff_max =
//! 400ms`) with `max_attempts = 3`: a folder's whole retry budget is under a second, so an
//! outage of [`OUTAGE`] is more than 30 times longer than it.

use crate::common;
use crate::harness;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::TestDb;
use harness::{BindMount, Proc, Site, Tmpfs, free_port, http_get, metric};
use vfolder_controller::lifecycle::Status;
use vfolder_controller::store::{Folder, FolderDetail, VolumeState};

const LONG: Duration = Duration::from_secs(60);

conformance!(volume_state_is_recorded_per_host_and_the_last_write_wins);

async fn volume_state_is_recorded_per_host_and_the_last_write_wins(db: TestDb) {
    let store = db.migrated().await;
    assert_eq!(store.volume_state("nfs:home").await.expect("read"), None);
    let since = chrono::Utc::now() - chrono::Duration::minutes(3);
    let down = VolumeState {
        host: "nfs:home".into(),
        available: false,
        since,
        reason: Some("/mnt/home is not a mount point".into()),
        replica: "r1".into(),
        updated_at: since,
    };
    store.record_volume_state(&down).await.expect("write");
    let got = store
        .volume_state("nfs:home")
        .await
        .expect("read")
        .expect("recorded");
    assert!(!got.available);
    assert_eq!(got.reason, down.reason);
    assert_eq!(got.replica, "r1");
    assert!((got.since - since).num_milliseconds().abs() <= 1, "{got:?}");
    assert!(got.updated_at >= got.since);

    let up = VolumeState {
        available: true,
        since: chrono::Utc::now(),
        reason: None,
        replica: "r2".into(),
        ..down.clone()
    };
    store.record_volume_state(&up).await.expect("write");
    let got = store
        .volume_state("nfs:home")
        .await
        .expect("read")
        .expect("recorded");
    assert!(got.available && got.reason.is_none() && got.replica == "r2");
    assert_eq!(
        store.volume_state("other:volume").await.expect("read"),
        None
    );
}

/// The folders' retry budget: the largest delays before attempts 2 and 3 (400 ms cap).
const RETRY_BUDGET: Duration = Duration::from_millis(200 + 400);

/// How long a volume stays away in the outage tests.
const OUTAGE: Duration = Duration::from_secs(20);

/// How fast a returned volume's folders must all be complete ("within a few seconds"):
/// the probe interval at its cap (1 s) plus the removals.
const RESUME: Duration = Duration::from_secs(10);

const PROBES: &str = "max_attempts = 3\nvolume_probe_min = \"200ms\"\nvolume_probe_max = \"1s\"";

fn gauge(volume: &str) -> String {
    format!("vfolder_controller_volume_available{{volume=\"{volume}\"}}")
}

/// Starts a controller whose HTTP endpoint listens on the returned port.
fn start(site: &Site, replica: &str) -> (Proc, u16) {
    let port = free_port();
    let proc = site.start_with(
        replica,
        &[(
            "VFOLDER_CONTROLLER_HTTP_LISTEN",
            &format!("127.0.0.1:{port}"),
        )],
    );
    proc.wait_log("controller running", LONG);
    (proc, port)
}

fn wait_gauge(port: u16, volume: &str, value: f64, site: &Site) {
    let deadline = Instant::now() + LONG;
    while metric(port, &gauge(volume)) != Some(value) {
        assert!(
            Instant::now() < deadline,
            "{volume} gauge never read {value}: {:?}\n{}",
            metric(port, &gauge(volume)),
            site.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn force_delete(site: &Site, folders: &[&Folder]) {
    let ids: Vec<String> = folders.iter().map(|f| format!("'{}'", f.id)).collect();
    site.raw_sql(&format!(
        "UPDATE vfolders SET status = 'delete-ongoing' WHERE id IN ({})",
        ids.join(", ")
    ))
    .await;
}

fn attempts(d: &FolderDetail) -> u32 {
    d.state.as_ref().map_or(0, |s| s.attempts)
}

/// Asserts that every folder waits as the volume's outage demands: `delete-ongoing`, no
/// attempt counted, no backoff scheduled, no lease held.
async fn assert_waiting(site: &Site, folders: &[&Folder]) {
    for f in folders {
        let d = site.detail(f.id).await;
        assert_eq!(d.folder.status, Status::DeleteOngoing, "{d:#?}");
        assert_eq!(attempts(&d), 0, "an outage costs no attempt: {d:#?}");
        let state = d.state.as_ref();
        assert!(
            state.and_then(|s| s.next_attempt_at).is_none(),
            "no folder backoff: {d:#?}"
        );
    }
}

/// Where `folder`'s data really is while its volume (bind-mounted from `bind.source`) is
/// unmounted.
fn on_source(site: &Site, bind: &BindMount, folder: &Folder) -> PathBuf {
    let path = site.folder_path(folder);
    bind.source.join(
        path.strip_prefix(&bind.target)
            .expect("folder under the mount"),
    )
}

fn count_files(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                _ => n += 1,
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_down_30_times_the_retry_budget_costs_no_attempts_and_resumes_at_once() {
    assert!(OUTAGE >= RETRY_BUDGET * 30);
    let site = Site::new(
        TestDb::postgres().await,
        PROBES,
        "require_mount_point = true",
    )
    .await;
    let bind = BindMount::mount(&site.dir.path().join("source1"), site.mount());
    let folders = site.folders_with_trees("f", 5, 3, 10).await;
    let refs: Vec<&Folder> = folders.iter().collect();
    bind.unmount();
    let down_at = Instant::now();

    let (proc, port) = start(&site, "r1");
    force_delete(&site, &refs).await;
    wait_gauge(port, "local:volume1", 0.0, &site);
    let (code, show, _) = site.cli(&["show", &folders[0].id.to_string()]);
    assert_eq!(code, 0);
    assert!(
        show.contains("volume local:volume1 unavailable since"),
        "show names the outage:\n{show}"
    );
    // One replica's other duties go on: neither probe fails because a volume is down.
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(http_get(port, "/readyz").map(|r| r.0), Some(200));

    tokio::time::sleep(OUTAGE.saturating_sub(down_at.elapsed())).await;
    assert_waiting(&site, &refs).await;
    assert_eq!(metric(port, &gauge("local:volume1")), Some(0.0));
    assert_eq!(
        proc.log_text()
            .matches("volume unavailable: its folders wait")
            .count(),
        1,
        "the outage is logged once, not once per folder:\n{}",
        proc.log_text()
    );

    let _back = BindMount::mount(&bind.source, &bind.target);
    site.wait_all_complete(folders.len(), RESUME).await;
    wait_gauge(port, "local:volume1", 1.0, &site);
    for f in &folders {
        assert_eq!(attempts(&site.detail(f.id).await), 0);
        assert!(!site.folder_path(f).exists());
    }
    let audit = site.audit(None).await;
    assert!(
        !audit.iter().any(|e| e.action == "remove-failed"),
        "{audit:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_one_volume_is_down_the_other_converges_and_keeps_its_folder_errors() {
    let second = tempfile::tempdir().expect("tempdir");
    let site = Site::new(
        TestDb::postgres().await,
        PROBES,
        &format!(
            "require_mount_point = true\n[[volumes]]\nhost = \"local:volume2\"\nmount = \"{}\"\nrequire_mount_point = false\n",
            second.path().display()
        ),
    )
    .await;
    let bind = BindMount::mount(&site.dir.path().join("source1"), site.mount());
    let mut down = Vec::new();
    let mut healthy = Vec::new();
    for i in 0..3 {
        down.push(
            site.folder_on("local:volume1", &format!("d{i}"), 2, 10)
                .await,
        );
        healthy.push(
            site.folder_on("local:volume2", &format!("h{i}"), 2, 10)
                .await,
        );
    }
    // A permanent folder error on the healthy volume: a filesystem mounted inside the tree.
    let broken = site.folder_on("local:volume2", "broken", 2, 3).await;
    let inner = Tmpfs::mount(&site.folder_path(&broken).join("d0001/mnt"));
    bind.unmount();

    let (_proc, port) = start(&site, "r1");
    let all: Vec<&Folder> = down.iter().chain(&healthy).chain([&broken]).collect();
    force_delete(&site, &all).await;
    for f in &healthy {
        site.wait_for(f.id, LONG, "healthy volume converges", |d| {
            d.folder.status == Status::DeleteComplete
        })
        .await;
    }
    let d = site
        .wait_for(broken.id, LONG, "folder error on a healthy volume", |d| {
            d.folder.status == Status::DeleteError
        })
        .await;
    let error = d.state.and_then(|s| s.last_error).expect("error text");
    assert!(error.contains("mnt"), "the folder's own error: {error}");
    wait_gauge(port, "local:volume1", 0.0, &site);
    assert_eq!(metric(port, &gauge("local:volume2")), Some(1.0));
    assert_waiting(&site, &down.iter().collect::<Vec<_>>()).await;

    let _back = BindMount::mount(&bind.source, &bind.target);
    for f in &down {
        site.wait_for(f.id, RESUME, "down volume resumes", |d| {
            d.folder.status == Status::DeleteComplete
        })
        .await;
    }
    assert_eq!(
        site.detail(broken.id).await.folder.status,
        Status::DeleteError
    );
    drop(inner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_lost_in_the_middle_of_a_removal_keeps_the_folder_and_finishes_after() {
    // The rate limit makes the 100,000-file removal last seconds whatever the disk, so the
    // unmount lands in its middle.
    let site = Site::new(
        TestDb::postgres().await,
        PROBES,
        "require_mount_point = true\nmax_ops_per_second = 20000",
    )
    .await;
    let bind = BindMount::mount(&site.dir.path().join("source1"), site.mount());
    let folder = site.folder_with_tree("big", 100, 1000).await;
    let source = on_source(&site, &bind, &folder);

    let (_proc, port) = start(&site, "r1");
    force_delete(&site, &[&folder]).await;
    site.wait_for(folder.id, LONG, "removal under way", |d| {
        d.state.as_ref().is_some_and(|s| s.progress.files > 0)
    })
    .await;
    bind.unmount();
    let d = site
        .wait_for(folder.id, LONG, "lease handed back", |d| {
            d.state.as_ref().is_some_and(|s| s.lease_owner.is_none())
        })
        .await;
    assert_eq!(d.folder.status, Status::DeleteOngoing);
    assert_eq!(attempts(&d), 0, "{d:#?}");
    let left = count_files(&source);
    assert!(left > 0, "the removal stopped before the end");
    wait_gauge(port, "local:volume1", 0.0, &site);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count_files(&source),
        left,
        "nothing is removed while it is away"
    );

    let _back = BindMount::mount(&bind.source, &bind.target);
    let d = site
        .wait_for(
            folder.id,
            LONG,
            "delete-complete after the volume returns",
            |d| d.folder.status == Status::DeleteComplete,
        )
        .await;
    assert_eq!(attempts(&d), 0);
    assert!(!source.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removals_on_a_rate_limited_volume_together_stay_under_the_limit() {
    const LIMIT: u32 = 2000;
    const RATE: f64 = LIMIT as f64;
    let site = Site::new(
        TestDb::postgres().await,
        "",
        &format!("max_ops_per_second = {LIMIT}\nmax_concurrent_removals = 4"),
    )
    .await;
    let folders = site.folders_with_trees("r", 3, 10, 200).await;
    let refs: Vec<&Folder> = folders.iter().collect();
    let (_proc, _port) = start(&site, "r1");
    let started = Instant::now();
    force_delete(&site, &refs).await;
    site.wait_all_complete(folders.len(), LONG).await;
    let elapsed = started.elapsed();

    let mut ops = 0;
    for f in &folders {
        let audit = site.audit(Some(f.id)).await;
        let p = audit
            .iter()
            .find(|e| e.action == "removed")
            .and_then(|e| e.progress)
            .expect("removal counts");
        ops += p.files + p.dirs + p.symlinks;
    }
    assert_eq!(ops, 3 * (10 * 201 + 11), "every entry was removed");
    // Upper bound only: no more than the limit (plus one burst), with 10 % slack.
    let burst = RATE * vfolder_controller::storage::rate::BURST.as_secs_f64();
    let rate = ops as f64 / elapsed.as_secs_f64();
    let bound = 1.1 * (RATE + burst / elapsed.as_secs_f64());
    assert!(
        rate <= bound,
        "{ops} operations in {elapsed:?}: {rate:.0}/s > {bound:.0}/s"
    );
}
