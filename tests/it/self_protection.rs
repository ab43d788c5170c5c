//! The process protects itself: slow HTTP clients cannot take the descriptors removals need,
//! and running out of descriptors is the process's own transient condition, never a
//! folder's attempt nor a volume outage. Real processes under real `prlimit` limits.

use crate::common;
use crate::harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::TestDb;
use harness::{Proc, Site, free_port, metric};
use vfolder_controller::lifecycle::Status;

const LONG: Duration = Duration::from_secs(90);

conformance!(
    slow_clients_cannot_starve_a_removal_or_the_health_check,
    running_out_of_descriptors_burns_no_attempt_and_pauses_no_volume,
);

/// Opens `n` connections to the port, each sending half a request and then nothing.
fn slow_clients(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").ok()?;
            Some(s)
        })
        .collect()
}

/// `GET /healthz`, waiting up to `timeout` for the answer (it may wait in the backlog).
fn healthz(port: u16, timeout: Duration) -> Option<u16> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

fn pid(proc: &Proc) -> String {
    proc.child.id().to_string()
}

/// Open descriptors of a process.
fn open_fds(proc: &Proc) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", pid(proc)))
        .expect("/proc/<pid>/fd")
        .count()
}

/// Sets the soft limit on open files of a running process (the hard limit stays).
fn set_soft_nofile(proc: &Proc, limit: &str) {
    let st = Command::new("prlimit")
        .args(["--pid", &pid(proc), &format!("--nofile={limit}:")])
        .status()
        .expect("prlimit");
    assert!(st.success(), "prlimit --pid");
}

/// The soft limit on open files of a running process.
fn soft_nofile(proc: &Proc) -> String {
    let out = Command::new("prlimit")
        .args([
            "--pid",
            &pid(proc),
            "--nofile",
            "--output=SOFT",
            "--noheadings",
        ])
        .output()
        .expect("prlimit");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn slow_clients_cannot_starve_a_removal_or_the_health_check(db: TestDb) {
    let site = Site::new(
        db,
        "",
        "removal_threads = 2\nmax_ops_per_second = 2000\ncount_bytes = true",
    )
    .await;
    let folder = site.folder_with_tree("big", 30, 100).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // Without the connection cap, 400 half-sent requests hold 400 descriptors: more than
    // the process has.
    let proc = site.start_wrapped(
        "r1",
        &[("VFOLDER_CONTROLLER_HTTP_LISTEN", &listen)],
        &["prlimit", "--nofile=256:256", "--"],
    );
    proc.wait_log("controller running", LONG);
    let clients = slow_clients(port, 400);
    assert!(
        clients.len() > 300,
        "{} slow clients connected",
        clients.len()
    );
    site.raw_sql(&format!(
        "UPDATE vfolders SET status = 'delete-ongoing' WHERE id = '{}'",
        folder.id
    ))
    .await;
    // The health check answers while the slow clients are still connected: they are cut
    // off after the header-read timeout, not held for ever.
    assert_eq!(
        healthz(port, Duration::from_secs(60)),
        Some(200),
        "/healthz answers:\n{}",
        site.logs()
    );
    site.wait_for(folder.id, LONG, "delete-complete", |d| {
        d.folder.status == Status::DeleteComplete
    })
    .await;
    drop(clients);
    let audit = site.audit(Some(folder.id)).await;
    let removed: Vec<_> = audit.iter().filter(|e| e.action == "removed").collect();
    assert_eq!(removed.len(), 1, "{audit:#?}");
    assert_eq!(removed[0].progress.map(|p| p.files), Some(3000));
    assert!(
        audit.iter().all(|e| e.error.is_none()),
        "no failed attempt: {audit:#?}"
    );
    let log = proc.log_text();
    assert!(!log.contains("volume unavailable"), "{log}");
    assert!(!site.folder_path(&folder).exists());
}

async fn running_out_of_descriptors_burns_no_attempt_and_pauses_no_volume(db: TestDb) {
    let site = Site::new(db, "max_attempts = 2", "removal_threads = 2").await;
    let folder = site.folder_with_tree("f", 5, 10).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let proc = site.start_with("r1", &[("VFOLDER_CONTROLLER_HTTP_LISTEN", &listen)]);
    proc.wait_log("volume available", LONG);
    let gauge = "vfolder_controller_volume_available{volume=\"local:volume1\"}";
    assert_eq!(metric(port, gauge), Some(1.0));
    // Not one descriptor more: every open() of the removal and the volume guard fails with
    // EMFILE from here on.
    let soft = soft_nofile(&proc);
    set_soft_nofile(&proc, &open_fds(&proc).to_string());
    site.raw_sql(&format!(
        "UPDATE vfolders SET status = 'delete-ongoing' WHERE id = '{}'",
        folder.id
    ))
    .await;
    // Several claims meet the shortage (attempts would have reached max_attempts).
    let deadline = Instant::now() + LONG;
    while proc
        .log_text()
        .matches("out of descriptors or memory")
        .count()
        < 3
    {
        assert!(
            Instant::now() < deadline,
            "never met the shortage:\n{}",
            proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d = site.detail(folder.id).await;
    assert_eq!(d.folder.status, Status::DeleteOngoing, "not delete-error");
    let state = d.state.expect("state");
    assert_eq!(state.attempts, 0, "no attempt burned: {state:?}");
    assert!(!proc.log_text().contains("volume unavailable"));
    set_soft_nofile(&proc, &soft);
    site.wait_for(
        folder.id,
        LONG,
        "delete-complete once descriptors are back",
        |d| d.folder.status == Status::DeleteComplete,
    )
    .await;
    assert_eq!(
        metric(port, gauge),
        Some(1.0),
        "the volume was never paused"
    );
    let log = proc.log_text();
    assert!(!log.contains("volume unavailable"), "{log}");
}
