//! The controller's Prometheus metrics: one registry, one typed handle per family.
//!
//! Every family is named `vfolder_controller_*` and follows the controller-runtime
//! conventions: counters end in `_total`, durations are histograms in seconds. Labels are
//! bounded by configuration or by code (volume hosts, statuses, work kinds, actions, results),
//! never a folder id, so the number of series cannot grow with the number of folders.
//!
//! Two encodings of the same registry are offered: [`Metrics::encode`] gives the classic
//! Prometheus text format (0.0.4), which `promtool check metrics` and every scraper accept;
//! [`Metrics::encode_openmetrics`] gives OpenMetrics 1.0 text, which the `/metrics` endpoint
//! serves to scrapers that ask for it in `Accept`.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::lifecycle;
use crate::store::StatusCount;

/// The prefix of every metric name.
pub const PREFIX: &str = "vfolder_controller";

/// Content type of [`Metrics::encode`].
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Content type of [`Metrics::encode_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionResult {
    action: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeLabel {
    volume: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeResult {
    volume: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TimerLabel {
    timer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Reconcile passes over one folder take milliseconds (a status write) to minutes (a large
/// removal): 5 ms … ~82 s.
fn reconcile_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Whole removals take from 100 ms (an empty folder) to hours (millions of files on NFS):
/// 0.1 s … ~7.3 h.
fn removal_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 4.0, 10))
}

/// The registry and a handle on every family. Cheap to share behind an `Arc`; every method
/// takes `&self` and is safe to call from any thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ActionResult, Counter>,
    reconcile_duration: HistogramFamily<ActionLabel>,
    removals_in_flight: Family<VolumeLabel, Gauge>,
    removal_threads: Family<VolumeLabel, Gauge>,
    removals: Family<VolumeResult, Counter>,
    files_removed: Family<VolumeLabel, Counter>,
    dirs_removed: Family<VolumeLabel, Counter>,
    bytes_removed: Family<VolumeLabel, Counter>,
    removal_duration: HistogramFamily<VolumeLabel>,
    worker_slots: Family<StateLabel, Gauge>,
    folders: Family<StatusLabel, Gauge>,
    folders_estimated: Family<StatusLabel, Gauge>,
    unreadable_rows: Gauge,
    oldest_unconverged: Family<KindLabel, FloatGauge>,
    /// The kinds that have an `oldest_unconverged_seconds` series, to reset the stale ones.
    unconverged_kinds: Mutex<BTreeSet<String>>,
    lease_reclaims: Counter,
    retries: Family<KindLabel, Counter>,
    terminal_errors: Family<KindLabel, Counter>,
    database_errors: Family<OperationLabel, Counter>,
    listener_reconnects: Counter,
    timer_runs: Family<TimerLabel, Counter>,
    timer_rows: Family<TimerLabel, Counter>,
    volume_available: Family<VolumeLabel, Gauge>,
    volume_changed: Family<VolumeLabel, FloatGauge>,
    orphans: Family<VolumeLabel, Gauge>,
    orphan_bytes: Family<VolumeLabel, Gauge>,
    unfinished_removals: Family<VolumeLabel, Gauge>,
    unfinished_removal_bytes: Family<VolumeLabel, Gauge>,
    orphan_scan_time: Family<VolumeLabel, FloatGauge>,
    orphans_reclaimed: Family<VolumeLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates the registry with every family registered, and `build_info` set to this
    /// binary's version. Families without labels, `worker_slots` and `folders` (every status)
    /// export a sample from the start, so dashboards and alerts see zeros, not gaps.
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix(PREFIX),
            reconciles: Family::default(),
            reconcile_duration: Family::new_with_constructor(reconcile_histogram),
            removals_in_flight: Family::default(),
            removal_threads: Family::default(),
            removals: Family::default(),
            files_removed: Family::default(),
            dirs_removed: Family::default(),
            bytes_removed: Family::default(),
            removal_duration: Family::new_with_constructor(removal_histogram),
            worker_slots: Family::default(),
            folders: Family::default(),
            folders_estimated: Family::default(),
            unreadable_rows: Gauge::default(),
            oldest_unconverged: Family::default(),
            unconverged_kinds: Mutex::new(BTreeSet::new()),
            lease_reclaims: Counter::default(),
            retries: Family::default(),
            terminal_errors: Family::default(),
            database_errors: Family::default(),
            listener_reconnects: Counter::default(),
            timer_runs: Family::default(),
            timer_rows: Family::default(),
            volume_available: Family::default(),
            volume_changed: Family::default(),
            orphans: Family::default(),
            orphan_bytes: Family::default(),
            unfinished_removals: Family::default(),
            unfinished_removal_bytes: Family::default(),
            orphan_scan_time: Family::default(),
            orphans_reclaimed: Family::default(),
        };
        m.register_families();
        m.set_worker_slots(0, 0);
        m.set_folders_by_status(&[]);
        m
    }

    /// Registers every family (and the constant `build_info`) in `self.registry`.
    fn register_families(&mut self) {
        let registry = &mut self.registry;
        let build_info: Family<VersionLabel, Gauge> = Family::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the label carries the version of the running binary",
            build_info,
        );
        // Counter names are registered without `_total`: the encoder appends it.
        registry.register(
            "reconciles",
            "Reconciles of one folder, by action and result",
            self.reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile of one folder took, by action",
            self.reconcile_duration.clone(),
        );
        registry.register(
            "removals_in_flight",
            "Folder removals running now in this replica, by volume",
            self.removals_in_flight.clone(),
        );
        registry.register(
            "removal_threads",
            "OS threads the running folder removals use now in this replica, by volume",
            self.removal_threads.clone(),
        );
        registry.register(
            "removals",
            "Finished folder removals (complete, failed or cancelled), by volume and result",
            self.removals.clone(),
        );
        registry.register(
            "files_removed",
            "Files (and symlinks and other non-directories) removed, by volume",
            self.files_removed.clone(),
        );
        registry.register(
            "dirs_removed",
            "Directories removed, by volume",
            self.dirs_removed.clone(),
        );
        registry.register(
            "bytes_removed",
            "Bytes of removed regular files, by volume (0 unless the volume counts bytes)",
            self.bytes_removed.clone(),
        );
        registry.register(
            "removal_duration_seconds",
            "Time one whole folder removal took, by volume",
            self.removal_duration.clone(),
        );
        registry.register(
            "worker_slots",
            "Removal worker slots of this replica: total and busy",
            self.worker_slots.clone(),
        );
        registry.register(
            "folders",
            "Folder rows in the database by status (the same in every replica); delete-pending, delete-ongoing and delete-error exact, the others above 10,000 rows estimated on PostgreSQL (see folders_estimated)",
            self.folders.clone(),
        );
        registry.register(
            "folders_estimated",
            "1 when the folders gauge of this status is the query planner's estimate, 0 when it is an exact count",
            self.folders_estimated.clone(),
        );
        registry.register(
            "unreadable_rows",
            "Folder rows parked because they cannot be read (the same in every replica)",
            self.unreadable_rows.clone(),
        );
        registry.register(
            "oldest_unconverged_seconds",
            "Age of the oldest folder still waiting for this kind of work (0 when none waits)",
            self.oldest_unconverged.clone(),
        );
        registry.register(
            "lease_reclaims",
            "Claims that took over another replica's expired lease",
            self.lease_reclaims.clone(),
        );
        registry.register(
            "retries",
            "Transient failures scheduled for a retry with backoff, by kind of work",
            self.retries.clone(),
        );
        registry.register(
            "terminal_errors",
            "Permanent failures that moved a folder to delete-error, by kind of work",
            self.terminal_errors.clone(),
        );
        registry.register(
            "database_errors",
            "Failed database operations, by operation",
            self.database_errors.clone(),
        );
        registry.register(
            "listener_reconnects",
            "Times the PostgreSQL LISTEN connection was re-established",
            self.listener_reconnects.clone(),
        );
        registry.register(
            "timer_runs",
            "Runs of a periodic maintenance job, by timer",
            self.timer_runs.clone(),
        );
        registry.register(
            "timer_rows",
            "Rows changed by a periodic maintenance job, by timer",
            self.timer_rows.clone(),
        );
        registry.register(
            "volume_available",
            "1 when the volume guard passes in this replica, 0 while the volume is unavailable (its folders wait)",
            self.volume_available.clone(),
        );
        registry.register(
            "volume_availability_changed_timestamp_seconds",
            "Unix time of the volume's last change between available and unavailable (or of its first probe)",
            self.volume_changed.clone(),
        );
        registry.register(
            "orphans",
            "Folder directories no row accounts for, as the volume's last complete orphan scan found them",
            self.orphans.clone(),
        );
        registry.register(
            "orphan_bytes",
            "Bytes of those orphans, when the last scan counted them",
            self.orphan_bytes.clone(),
        );
        registry.register(
            "unfinished_removals",
            "delete-complete rows whose data still exists, as the volume's last complete orphan scan found them",
            self.unfinished_removals.clone(),
        );
        registry.register(
            "unfinished_removal_bytes",
            "Bytes of those unfinished removals, when the last scan counted them",
            self.unfinished_removal_bytes.clone(),
        );
        registry.register(
            "orphan_scan_timestamp_seconds",
            "Unix time the volume's last complete orphan scan finished",
            self.orphan_scan_time.clone(),
        );
        registry.register(
            "orphans_reclaimed",
            "Orphans this replica removed after their grace period (reclaim_orphans)",
            self.orphans_reclaimed.clone(),
        );
    }

    /// Every family in the classic Prometheus text format (version 0.0.4), which
    /// `promtool check metrics` accepts without complaints.
    pub fn encode(&self) -> String {
        openmetrics_to_prometheus(&self.encode_openmetrics())
    }

    /// Every family in OpenMetrics 1.0 text format, ending with `# EOF`.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a label
        // value's encoding, and a partial exposition is still the best answer then.
        if let Err(e) = text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// One reconcile of one folder finished: counts it by `action` and `result` and records
    /// its duration by `action`.
    pub fn reconcile(&self, action: &str, result: &str, duration: Duration) {
        self.reconciles
            .get_or_create(&ActionResult {
                action: action.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        self.reconcile_duration
            .get_or_create(&ActionLabel {
                action: action.to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// A removal on `volume` started: the in-flight gauge goes up by one.
    pub fn removal_started(&self, volume: &str) {
        self.removals_in_flight
            .get_or_create(&volume_label(volume))
            .inc();
    }

    /// The running removals on `volume` use `delta` more (or fewer) OS threads than last
    /// reported. A removal reports the change of its own count and, when it ends, takes
    /// back all it reported, so the gauge is the sum over the removals running now.
    pub fn add_removal_threads(&self, volume: &str, delta: i64) {
        if delta != 0 {
            self.removal_threads
                .get_or_create(&volume_label(volume))
                .inc_by(delta);
        }
    }

    /// A removal on `volume` ended (any `result`): the in-flight gauge goes down by one, it
    /// is counted by result and its duration recorded, and `files`, `dirs` and `bytes` are
    /// added to the removed counters. Those are the amounts not yet reported with
    /// [`Metrics::add_removed`]: a caller that reports progress while removing passes the
    /// remainder here, one that does not passes the totals. Call it exactly once per
    /// [`Metrics::removal_started`].
    pub fn removal_finished(
        &self,
        volume: &str,
        files: u64,
        dirs: u64,
        bytes: u64,
        duration: Duration,
        result: &str,
    ) {
        let label = volume_label(volume);
        self.removals_in_flight.get_or_create(&label).dec();
        self.add_removed(volume, files, dirs, bytes);
        self.removals
            .get_or_create(&VolumeResult {
                volume: volume.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        self.removal_duration
            .get_or_create(&label)
            .observe(duration.as_secs_f64());
    }

    /// Adds removed entries to the per-volume counters without ending a removal: progress
    /// reported while a long removal runs (so throughput graphs are smooth), or what a
    /// removal that was abandoned without [`Metrics::removal_finished`] had removed.
    pub fn add_removed(&self, volume: &str, files: u64, dirs: u64, bytes: u64) {
        let label = volume_label(volume);
        self.files_removed.get_or_create(&label).inc_by(files);
        self.dirs_removed.get_or_create(&label).inc_by(dirs);
        self.bytes_removed.get_or_create(&label).inc_by(bytes);
    }

    /// Sets the worker slot gauge: `total` configured, `busy` running now.
    pub fn set_worker_slots(&self, total: i64, busy: i64) {
        self.worker_slots
            .get_or_create(&StateLabel { state: "total" })
            .set(total);
        self.worker_slots
            .get_or_create(&StateLabel { state: "busy" })
            .set(busy);
    }

    /// Sets the number of rows parked because they cannot be read.
    pub fn set_unreadable_rows(&self, n: i64) {
        self.unreadable_rows.set(n);
    }

    /// Sets the folder count of every status: the listed counts (and whether each is an
    /// estimate), and an exact 0 for every status missing from `counts` (so a status that
    /// emptied out reads 0, not its last value).
    pub fn set_folders_by_status(&self, counts: &[StatusCount]) {
        for status in lifecycle::ALL {
            let (rows, exact) = counts
                .iter()
                .find(|c| c.status == status)
                .map_or((0, true), |c| (c.rows, c.exact));
            let label = StatusLabel {
                status: status.as_str(),
            };
            self.folders.get_or_create(&label).set(rows);
            self.folders_estimated
                .get_or_create(&label)
                .set(i64::from(!exact));
        }
    }

    /// Sets the age of the oldest folder waiting for `kind` of work (`remove`,
    /// `trash-timer`, …); pass `Duration::ZERO` when none waits.
    pub fn set_oldest_unconverged(&self, kind: &str, age: Duration) {
        // A poisoned lock only means another thread panicked while inserting a string;
        // the set is still usable.
        self.unconverged_kinds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(kind.to_owned());
        self.oldest_unconverged
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .set(age.as_secs_f64());
    }

    /// Sets the ages reported by `Store::oldest_unconverged` and resets to 0 every kind seen
    /// before that is missing now (nothing of that kind waits any more).
    pub fn set_oldest_unconverged_all(&self, ages: &[(&str, Duration)]) {
        let stale: Vec<String> = self
            .unconverged_kinds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter(|known| !ages.iter().any(|(kind, _)| kind == known))
            .cloned()
            .collect();
        for kind in stale {
            self.set_oldest_unconverged(&kind, Duration::ZERO);
        }
        for (kind, age) in ages {
            self.set_oldest_unconverged(kind, *age);
        }
    }

    /// A claim took over an expired lease of another replica.
    pub fn lease_reclaimed(&self) {
        self.lease_reclaims.inc();
    }

    /// A transient failure of `kind` of work was scheduled for a retry.
    pub fn retry(&self, kind: &str) {
        self.retries
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// A permanent failure of `kind` of work moved a folder to `delete-error`.
    pub fn terminal_error(&self, kind: &str) {
        self.terminal_errors
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// A database `operation` failed.
    pub fn database_error(&self, operation: &str) {
        self.database_errors
            .get_or_create(&OperationLabel {
                operation: operation.to_owned(),
            })
            .inc();
    }

    /// The `LISTEN` connection was re-established after it broke.
    pub fn listener_reconnect(&self) {
        self.listener_reconnects.inc();
    }

    /// A periodic maintenance job (`trash-timer`, `history-cleanup`) ran and changed `rows`.
    pub fn timer_run(&self, timer: &str, rows: u64) {
        let label = TimerLabel {
            timer: timer.to_owned(),
        };
        self.timer_runs.get_or_create(&label).inc();
        self.timer_rows.get_or_create(&label).inc_by(rows);
    }
}

impl Metrics {
    /// Sets `volume`'s availability gauge and the time it last changed.
    pub fn set_volume_available(
        &self,
        volume: &str,
        available: bool,
        since: chrono::DateTime<chrono::Utc>,
    ) {
        let label = volume_label(volume);
        self.volume_available
            .get_or_create(&label)
            .set(i64::from(available));
        self.volume_changed
            .get_or_create(&label)
            .set(since.timestamp_millis() as f64 / 1000.0);
    }
}

impl Metrics {
    /// Sets the orphan gauges of a volume from its last complete scan (read from the
    /// database, so every replica reports the same; bytes only when the scan counted them).
    pub fn set_orphan_scan(&self, scan: &crate::store::ScanSummary) {
        let label = volume_label(&scan.host);
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.orphans.get_or_create(&label).set(n(scan.orphans));
        self.unfinished_removals
            .get_or_create(&label)
            .set(n(scan.unfinished));
        if let Some(b) = scan.orphan_bytes {
            self.orphan_bytes.get_or_create(&label).set(n(b));
        }
        if let Some(b) = scan.unfinished_bytes {
            self.unfinished_removal_bytes
                .get_or_create(&label)
                .set(n(b));
        }
        self.orphan_scan_time
            .get_or_create(&label)
            .set(scan.finished_at.timestamp_millis() as f64 / 1000.0);
    }

    /// Counts orphans this replica reclaimed on `volume`.
    pub fn orphans_reclaimed(&self, volume: &str, n: u64) {
        self.orphans_reclaimed
            .get_or_create(&volume_label(volume))
            .inc_by(n);
    }
}

fn volume_label(volume: &str) -> VolumeLabel {
    VolumeLabel {
        volume: volume.to_owned(),
    }
}

/// Rewrites the OpenMetrics text of this registry into Prometheus text 0.0.4.
///
/// The two differ, for the metric types used here, only in three points: OpenMetrics names
/// a counter family without `_total` in `# HELP`/`# TYPE` (0.0.4 parsers then see the
/// samples as a separate untyped family), it may have `# UNIT` lines, and it ends with
/// `# EOF`. Everything else (label and value syntax, histograms, gauges) is identical.
pub fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match descriptor {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(p);
                out.push_str(name);
                if counters.contains(&name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}
