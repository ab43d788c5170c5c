//! The real binary's `/metrics` after a real removal, checked by value, by `promtool`, and by
//! a real Prometheus server scraping it over loopback.

use crate::common;
use crate::harness;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::storage_support::{Ext4Image, sync_directory_updates};
use common::TestDb;
use harness::{Site, free_port, http_get};
use vfolder_controller::lifecycle::Status;

/// The value of the sample `name{labels}` in a Prometheus text scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == series).then(|| value.parse().ok())?
    })
}

fn scrape(port: u16) -> String {
    let (code, body) = http_get(port, "/metrics").expect("metrics endpoint answers");
    assert_eq!(code, 200);
    body
}

/// Starts a controller serving `/metrics` on `port` and waits until it runs.
fn start_serving_metrics(site: &Site, port: u16) -> harness::Proc {
    let proc = site.start_with(
        "m1",
        &[(
            "VFOLDER_CONTROLLER_HTTP_LISTEN",
            &format!("127.0.0.1:{port}"),
        )],
    );
    proc.wait_log("controller running", Duration::from_secs(60));
    proc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_real_removal_and_pass_promtool_and_prometheus() {
    let port = free_port();
    let site = Site::new(TestDb::postgres().await, "", "").await;
    let folder = site.folder_with_tree("measured", 4, 25).await;
    let _proc = start_serving_metrics(&site, port);

    let volume = "volume=\"local:volume1\"";
    let before = scrape(port);
    let files_before = sample(
        &before,
        &format!("vfolder_controller_files_removed_total{{{volume}}}"),
    )
    .unwrap_or(0.0);

    assert_eq!(site.cli(&["force-delete", &folder.id.to_string()]).0, 0);
    site.wait_for(folder.id, Duration::from_secs(60), "delete-complete", |d| {
        d.folder.status == Status::DeleteComplete
    })
    .await;

    // The table-wide gauges refresh every 6 resync intervals (6 s in tests); wait for one.
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let s = scrape(port);
        if sample(&s, "vfolder_controller_folders{status=\"delete-complete\"}") == Some(1.0) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "folders gauge never refreshed:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let files = sample(
        &after,
        &format!("vfolder_controller_files_removed_total{{{volume}}}"),
    );
    assert_eq!(files, Some(files_before + 100.0), "100 files removed");
    assert_eq!(
        sample(
            &after,
            &format!("vfolder_controller_dirs_removed_total{{{volume}}}")
        ),
        Some(5.0),
        "4 directories and the folder itself"
    );
    assert_eq!(
        sample(
            &after,
            "vfolder_controller_reconciles_total{action=\"remove\",result=\"ok\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            &format!("vfolder_controller_removals_in_flight{{{volume}}}")
        ),
        Some(0.0)
    );
    // A removal takes back the threads it reported (none, if it ended within a second).
    assert!(
        matches!(
            sample(
                &after,
                &format!("vfolder_controller_removal_threads{{{volume}}}")
            ),
            None | Some(0.0)
        ),
        "{after}"
    );
    assert!(after.contains("vfolder_controller_build_info"));

    // promtool's linter accepts the exposition.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(after.as_bytes())
        .expect("write");
    let out = promtool.wait_with_output().expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}"
    );

    // A real Prometheus server scrapes the controller over loopback.
    let prom_port = free_port();
    let prom_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        prom_dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vfolder-controller\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .expect("prometheus config");
    let mut prom = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            prom_dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package prometheus) is installed");
    let query = |q: &str| -> Option<String> {
        http_get(prom_port, &format!("/api/v1/query?query={q}")).map(|(_, body)| body)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = query("up").unwrap_or_default();
        let metric = query("vfolder_controller_files_removed_total").unwrap_or_default();
        if up.contains("\"value\":[") && up.contains(",\"1\"]") && metric.contains("local:volume1")
        {
            assert!(metric.contains(",\"100\"]"), "{metric}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the controller: up={up} metric={metric}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = prom.kill();
    let _ = prom.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_turns_503_while_the_loop_is_blocked_and_recovers() {
    use sqlx::Connection;
    let port = free_port();
    let site = Site::new(TestDb::postgres().await, "", "").await;
    let proc = site.start_with(
        "h1",
        &[(
            "VFOLDER_CONTROLLER_HTTP_LISTEN",
            &format!("127.0.0.1:{port}"),
        )],
    );
    proc.wait_log("controller running", Duration::from_secs(60));
    let wait_code = |path: &str, code: u16| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = http_get(port, path);
            if got.as_ref().is_some_and(|(c, _)| *c == code) {
                return got.map(|(_, b)| b).unwrap_or_default();
            }
            assert!(Instant::now() < deadline, "{path} never {code}: {got:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_code("/healthz", 200);
    wait_code("/readyz", 200);

    // Block the loop: an exclusive lock makes its next claim query wait.
    let mut blocker = sqlx::PgConnection::connect(&site.database_url)
        .await
        .expect("connect");
    sqlx::raw_sql("BEGIN; LOCK TABLE vfolders IN ACCESS EXCLUSIVE MODE;")
        .execute(&mut blocker)
        .await
        .expect("lock");
    let reason = wait_code("/healthz", 503);
    assert!(reason.contains("pass"), "503 says why: {reason}");

    sqlx::raw_sql("ROLLBACK;")
        .execute(&mut blocker)
        .await
        .expect("unlock");
    wait_code("/healthz", 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_thread_gauge_shows_a_removal_growing_on_slow_storage_and_its_end() {
    let port = free_port();
    let site = Site::new(TestDb::postgres().await, "", "").await;
    // The volume on its own ext4 filesystem, the folder's directories with synchronous
    // updates: every unlink waits for a journal commit, so the removal's threads wait.
    let _disk = Ext4Image::new(site.mount(), 256);
    let folder = site.folder_with_tree("slow", 40, 250).await;
    sync_directory_updates(&site.folder_path(&folder));
    let proc = start_serving_metrics(&site, port);
    let series = "vfolder_controller_removal_threads{volume=\"local:volume1\"}";

    assert_eq!(site.cli(&["force-delete", &folder.id.to_string()]).0, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut most = 0.0f64;
    while site.detail(folder.id).await.folder.status != Status::DeleteComplete {
        most = most.max(sample(&scrape(port), series).unwrap_or(0.0));
        assert!(Instant::now() < deadline, "the removal did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start = site.volume.removal_threads as f64;
    assert!(
        most > start || start >= 16.0,
        "the gauge never showed more than the {start} threads a removal starts with: {most}"
    );
    assert_eq!(
        sample(&scrape(port), series),
        Some(0.0),
        "{}",
        proc.log_text()
    );
    assert!(
        proc.log_text().contains("threads="),
        "the completion log line names the threads: {}",
        proc.log_text()
    );
}
