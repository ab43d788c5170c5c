//! The metrics registry: values after calls, the exposition formats, and promtool's lint.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use vfolder_controller::lifecycle::{self, Status};
use vfolder_controller::observe::{Metrics, openmetrics_to_prometheus};
use vfolder_controller::store::StatusCount;

fn exact(status: Status, rows: i64) -> StatusCount {
    StatusCount {
        status,
        rows,
        exact: true,
    }
}

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

fn value(m: &Metrics, series: &str) -> f64 {
    let text = m.encode();
    sample(&text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// Runs `promtool check metrics` on `text`; returns its combined output on failure.
fn promtool_check(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (Debian package `prometheus`)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}

/// A registry with every method called at least once.
fn exercised() -> Metrics {
    let m = Metrics::new();
    m.reconcile("remove", "ok", Duration::from_millis(30));
    m.reconcile("remove", "retry", Duration::from_millis(3));
    m.reconcile("trash-timer", "ok", Duration::from_secs(2));
    m.removal_started("local:volume1");
    m.removal_started("local:volume1");
    m.removal_started("nfs:volume2");
    // Two removals on nfs:volume2: one grew from 2 to 16 threads, one started with 2 and
    // ended (taking back what it had added).
    m.add_removal_threads("nfs:volume2", 2);
    m.add_removal_threads("nfs:volume2", 2);
    m.add_removal_threads("nfs:volume2", 14);
    m.add_removal_threads("nfs:volume2", -2);
    m.removal_finished(
        "local:volume1",
        1000,
        20,
        1 << 20,
        Duration::from_secs(3),
        "ok",
    );
    m.add_removed("nfs:volume2", 5, 1, 10);
    m.set_worker_slots(8, 2);
    m.set_folders_by_status(&[
        StatusCount {
            status: Status::Ready,
            rows: 40_000,
            exact: false,
        },
        exact(Status::DeleteError, 2),
    ]);
    m.set_oldest_unconverged("remove", Duration::from_secs(90));
    m.lease_reclaimed();
    m.retry("remove");
    m.retry("remove");
    m.terminal_error("remove");
    m.database_error("claim");
    m.listener_reconnect();
    m.timer_run("trash-timer", 3);
    m.timer_run("trash-timer", 0);
    m.timer_run("history-cleanup", 7);
    m.set_volume_available("local:volume1", true, chrono::Utc::now());
    m.set_volume_available("nfs:volume2", false, chrono::Utc::now());
    m.set_orphan_scan(&scan("local:volume1", Some(4096)));
    m.orphans_reclaimed("local:volume1", 2);
    m
}

/// A scan's totals: 3 orphans, 1 unfinished removal, bytes when counted.
fn scan(host: &str, bytes: Option<u64>) -> vfolder_controller::store::ScanSummary {
    let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    vfolder_controller::store::ScanSummary {
        host: host.to_owned(),
        started_at: at,
        finished_at: at,
        counted: bytes.is_some(),
        orphans: 3,
        orphan_bytes: bytes,
        unfinished: 1,
        unfinished_bytes: bytes.map(|b| b / 2),
        missing: 0,
        foreign_entries: 5,
        actor: None,
    }
}

#[test]
fn orphan_gauges_follow_the_last_scan_and_bytes_only_when_counted() {
    let m = Metrics::new();
    m.set_orphan_scan(&scan("nfs:a", None));
    let text = m.encode();
    assert!(
        text.contains("vfolder_controller_orphans{volume=\"nfs:a\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("vfolder_controller_unfinished_removals{volume=\"nfs:a\"} 1"),
        "{text}"
    );
    assert!(!text.contains("vfolder_controller_orphan_bytes{"), "{text}");
    m.set_orphan_scan(&scan("nfs:a", Some(4096)));
    let text = m.encode();
    assert!(
        text.contains("vfolder_controller_orphan_bytes{volume=\"nfs:a\"} 4096"),
        "{text}"
    );
    assert!(
        text.contains(
            "vfolder_controller_orphan_scan_timestamp_seconds{volume=\"nfs:a\"} 1800000000"
        ),
        "{text}"
    );
}

#[test]
fn a_fresh_registry_exports_build_info_zeros_and_every_status() {
    let m = Metrics::new();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(
            &m,
            &format!("vfolder_controller_build_info{{version=\"{version}\"}}")
        ),
        1.0
    );
    assert_eq!(value(&m, "vfolder_controller_lease_reclaims_total"), 0.0);
    assert_eq!(
        value(&m, "vfolder_controller_listener_reconnects_total"),
        0.0
    );
    assert_eq!(
        value(&m, "vfolder_controller_worker_slots{state=\"total\"}"),
        0.0
    );
    for status in lifecycle::ALL {
        let series = format!("vfolder_controller_folders{{status=\"{status}\"}}");
        assert_eq!(value(&m, &series), 0.0);
        let series = format!("vfolder_controller_folders_estimated{{status=\"{status}\"}}");
        assert_eq!(value(&m, &series), 0.0);
    }
}

#[test]
fn calls_show_up_with_their_labels_and_values() {
    let m = exercised();
    let v = |s: &str| value(&m, s);
    assert_eq!(
        v("vfolder_controller_reconciles_total{action=\"remove\",result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        v("vfolder_controller_reconciles_total{action=\"remove\",result=\"retry\"}"),
        1.0
    );
    assert_eq!(
        v("vfolder_controller_reconcile_duration_seconds_count{action=\"remove\"}"),
        2.0
    );
    let sum = v("vfolder_controller_reconcile_duration_seconds_sum{action=\"remove\"}");
    assert!((sum - 0.033).abs() < 1e-9, "{sum}");
    assert_eq!(
        v("vfolder_controller_reconcile_duration_seconds_bucket{le=\"0.005\",action=\"remove\"}"),
        1.0
    );
    assert_eq!(
        v("vfolder_controller_removals_in_flight{volume=\"local:volume1\"}"),
        1.0
    );
    assert_eq!(
        v("vfolder_controller_removals_in_flight{volume=\"nfs:volume2\"}"),
        1.0
    );
    assert_eq!(
        v("vfolder_controller_removal_threads{volume=\"nfs:volume2\"}"),
        16.0
    );
    assert_eq!(
        v("vfolder_controller_files_removed_total{volume=\"local:volume1\"}"),
        1000.0
    );
    assert_eq!(
        v("vfolder_controller_dirs_removed_total{volume=\"local:volume1\"}"),
        20.0
    );
    assert_eq!(
        v("vfolder_controller_bytes_removed_total{volume=\"local:volume1\"}"),
        1048576.0
    );
    assert_eq!(
        v("vfolder_controller_files_removed_total{volume=\"nfs:volume2\"}"),
        5.0
    );
    assert_eq!(
        v("vfolder_controller_removals_total{volume=\"local:volume1\",result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        v("vfolder_controller_removal_duration_seconds_count{volume=\"local:volume1\"}"),
        1.0
    );
    assert_eq!(v("vfolder_controller_worker_slots{state=\"total\"}"), 8.0);
    assert_eq!(v("vfolder_controller_worker_slots{state=\"busy\"}"), 2.0);
    assert_eq!(v("vfolder_controller_folders{status=\"ready\"}"), 40_000.0);
    assert_eq!(
        v("vfolder_controller_folders_estimated{status=\"ready\"}"),
        1.0
    );
    assert_eq!(
        v("vfolder_controller_folders_estimated{status=\"delete-error\"}"),
        0.0
    );
    assert_eq!(
        v("vfolder_controller_folders{status=\"delete-error\"}"),
        2.0
    );
    assert_eq!(
        v("vfolder_controller_folders{status=\"delete-pending\"}"),
        0.0
    );
    assert_eq!(
        v("vfolder_controller_oldest_unconverged_seconds{kind=\"remove\"}"),
        90.0
    );
    assert_eq!(v("vfolder_controller_lease_reclaims_total"), 1.0);
    assert_eq!(v("vfolder_controller_retries_total{kind=\"remove\"}"), 2.0);
    assert_eq!(
        v("vfolder_controller_terminal_errors_total{kind=\"remove\"}"),
        1.0
    );
    assert_eq!(
        v("vfolder_controller_database_errors_total{operation=\"claim\"}"),
        1.0
    );
    assert_eq!(v("vfolder_controller_listener_reconnects_total"), 1.0);
    assert_eq!(
        v("vfolder_controller_timer_runs_total{timer=\"trash-timer\"}"),
        2.0
    );
    assert_eq!(
        v("vfolder_controller_timer_rows_total{timer=\"trash-timer\"}"),
        3.0
    );
    assert_eq!(
        v("vfolder_controller_timer_rows_total{timer=\"history-cleanup\"}"),
        7.0
    );
}

#[test]
fn a_status_that_empties_out_reads_zero_again() {
    let m = Metrics::new();
    m.set_folders_by_status(&[exact(Status::DeleteOngoing, 5)]);
    assert_eq!(
        value(&m, "vfolder_controller_folders{status=\"delete-ongoing\"}"),
        5.0
    );
    m.set_folders_by_status(&[exact(Status::Ready, 1)]);
    assert_eq!(
        value(&m, "vfolder_controller_folders{status=\"delete-ongoing\"}"),
        0.0
    );
}

#[test]
fn a_kind_that_no_longer_waits_is_reset_to_zero() {
    let m = Metrics::new();
    m.set_oldest_unconverged_all(&[
        ("remove", Duration::from_secs(5)),
        ("trash-timer", Duration::from_secs(7)),
    ]);
    m.set_oldest_unconverged_all(&[("trash-timer", Duration::from_secs(9))]);
    assert_eq!(
        value(
            &m,
            "vfolder_controller_oldest_unconverged_seconds{kind=\"remove\"}"
        ),
        0.0
    );
    assert_eq!(
        value(
            &m,
            "vfolder_controller_oldest_unconverged_seconds{kind=\"trash-timer\"}"
        ),
        9.0
    );
}

#[test]
fn prometheus_text_has_total_in_counter_descriptors_and_no_openmetrics_markers() {
    let text = exercised().encode();
    assert!(
        text.contains("# TYPE vfolder_controller_reconciles_total counter\n"),
        "{text}"
    );
    assert!(text.contains("# HELP vfolder_controller_reconciles_total "));
    assert!(!text.contains("# EOF"));
    assert!(!text.contains("# UNIT"));
    // The conversion leaves non-counter descriptors alone.
    assert!(text.contains("# TYPE vfolder_controller_removal_duration_seconds histogram\n"));
    let om = "# HELP a_b Help.\n# TYPE a_b counter\n# UNIT a_b bytes\na_b_total 1\n# EOF\n";
    assert_eq!(
        openmetrics_to_prometheus(om),
        "# HELP a_b_total Help.\n# TYPE a_b_total counter\na_b_total 1\n"
    );
}

#[test]
fn openmetrics_text_ends_with_eof() {
    let text = exercised().encode_openmetrics();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE vfolder_controller_reconciles counter\n"));
}

#[test]
fn promtool_accepts_the_exposition_without_complaints() {
    promtool_check(&Metrics::new().encode()).unwrap();
    promtool_check(&exercised().encode()).unwrap();
}

#[test]
fn promtool_check_is_able_to_fail() {
    // The OpenMetrics spelling of counter descriptors (no `_total`) makes promtool report
    // "no help text" for every counter: the reason `encode` converts.
    let err = promtool_check(&exercised().encode_openmetrics()).unwrap_err();
    assert!(err.contains("no help text"), "{err}");
}

/// The label names of one sample line, without the histogram's `le`.
fn sample_label_names(line: &str) -> Vec<String> {
    let labels = line
        .split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map_or("", |(inner, _)| inner);
    labels
        .split(',')
        .filter_map(|pair| pair.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .filter(|k| k != "le")
        .collect()
}

/// Each family of `text` (Prometheus 0.0.4): name, type and the label names of its samples.
fn families(text: &str) -> Vec<(String, String, BTreeSet<String>)> {
    let mut out: Vec<(String, String, BTreeSet<String>)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            out.push((name.to_owned(), kind.to_owned(), BTreeSet::new()));
        } else if !line.starts_with('#') {
            out.last_mut().unwrap().2.extend(sample_label_names(line));
        }
    }
    out
}

#[test]
fn every_family_is_documented_with_its_type_and_labels() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md"),
    )
    .unwrap();
    let rows: Vec<Vec<&str>> = doc
        .lines()
        .filter(|l| l.starts_with("| `vfolder_controller_"))
        .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect())
        .collect();
    let exported = families(&exercised().encode());
    let mut problems = Vec::new();
    for (name, kind, labels) in &exported {
        let Some(row) = rows.iter().find(|r| r[0] == format!("`{name}`")) else {
            problems.push(format!("{name} is not in docs/metrics.md"));
            continue;
        };
        if row[1] != kind {
            problems.push(format!("{name}: documented as {}, is a {kind}", row[1]));
        }
        let documented: BTreeSet<String> = row[2]
            .split(", ")
            .filter(|l| *l != "(none)")
            .map(|l| l.trim_matches('`').to_owned())
            .collect();
        if &documented != labels {
            problems.push(format!(
                "{name}: documented labels {documented:?}, exported {labels:?}"
            ));
        }
    }
    for row in &rows {
        let name = row[0].trim_matches('`');
        if !exported.iter().any(|(n, _, _)| n == name) {
            problems.push(format!(
                "docs/metrics.md documents {name}, which is not exported"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
