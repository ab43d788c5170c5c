//! Configuration: a TOML file, overridden by `VFOLDER_CONTROLLER_*` environment variables,
//! overridden by command-line flags (applied by the CLI).
//!
//! Every key has a documented default, so an empty file (or none at all) gives a working
//! single-process setup: the embedded SQLite database in the working directory and one volume,
//! `local:volume1`, under `./var/volumes/volume1`. Unknown keys and unknown
//! `VFOLDER_CONTROLLER_*` variables are errors, because a typo in a deletion controller's
//! configuration should stop it rather than be silently ignored.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Prefix of every environment variable that overrides a configuration key.
pub const ENV_PREFIX: &str = "VFOLDER_CONTROLLER_";

/// The sections whose keys can be overridden from the environment as
/// `VFOLDER_CONTROLLER_<SECTION>_<KEY>`.
const ENV_SECTIONS: [&str; 3] = ["http", "controller", "log"];

/// Environment variables with the prefix that are flags, not configuration keys.
const ENV_NOT_KEYS: [&str; 1] = ["CONFIG"];

/// Errors while loading the configuration. Each names the file, variable or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file (with the environment applied) is not a valid configuration.
    #[error("invalid configuration{}: {message}", origin.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Invalid {
        /// The file, when there was one.
        origin: Option<PathBuf>,
        /// What is wrong, with the key.
        message: String,
    },
    /// An environment variable with the prefix names no configuration key.
    #[error(
        "unknown environment variable {0} (expected {ENV_PREFIX}DATABASE_URL or {ENV_PREFIX}<HTTP|CONTROLLER|LOG>_<KEY>)"
    )]
    UnknownEnv(String),
    /// Two volumes have the same host, or a volume is otherwise unusable.
    #[error("invalid volume configuration: {0}")]
    Volume(String),
    /// A `VFOLDER_CONTROLLER_*` variable's value does not fit the key it sets.
    #[error("invalid value of environment variable {variable}: {message}")]
    Env {
        /// The variable.
        variable: String,
        /// What is wrong, from the key's point of view.
        message: String,
    },
    /// A duration key is outside its documented range.
    #[error("invalid configuration: {key} = {value} is out of range: {expected}")]
    OutOfRange {
        /// The key, e.g. `controller.poll_interval`.
        key: &'static str,
        /// The value as configured (humane).
        value: String,
        /// The valid range.
        expected: String,
    },
    /// The database URL cannot be used (does not parse, names no file, unknown scheme).
    #[error("invalid {key}: {message}")]
    DatabaseUrl {
        /// Where the URL came from: `database_url` or `--database-url`.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `sqlite://FILE` (embedded default) or `postgres://user@host/db`.
    pub database_url: String,
    /// The HTTP endpoint for `/metrics`, `/healthz` and `/readyz`.
    pub http: HttpConfig,
    /// The reconcile loop.
    pub controller: ControllerConfig,
    /// Logging.
    pub log: LogConfig,
    /// The storage volumes this controller removes folders from.
    pub volumes: Vec<VolumeConfig>,
}

/// The HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on; `127.0.0.1:9464` by default (use `0.0.0.0:9464` in a pod).
    pub listen: SocketAddr,
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (human, the default) or `json` (one object per line).
    pub format: LogFormat,
    /// A `RUST_LOG`-style filter; `RUST_LOG` itself wins when set. Default `info`.
    pub filter: String,
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// The reconcile loop's knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerConfig {
    /// Period of the safety-net resync poll on PostgreSQL (jittered). Default 10 s.
    #[serde(with = "humane")]
    pub resync_interval: Duration,
    /// Period of the poll on SQLite, which has no LISTEN/NOTIFY. Default 1 s.
    #[serde(with = "humane")]
    pub poll_interval: Duration,
    /// Removals running at once in this process, over all volumes. Default 8.
    pub max_concurrent_removals: usize,
    /// How long a claim is valid without renewal. Default 30 s.
    #[serde(with = "humane")]
    pub lease_duration: Duration,
    /// How often a running removal renews its lease and flushes progress. Default 10 s.
    #[serde(with = "humane")]
    pub lease_renew_interval: Duration,
    /// Attempts before a folder whose removal keeps failing goes to `delete-error`. Default 10.
    pub max_attempts: u32,
    /// First retry delay after a transient failure. Default 1 s.
    #[serde(with = "humane")]
    pub backoff_min: Duration,
    /// Cap of the exponential retry delay. Default 10 min.
    #[serde(with = "humane")]
    pub backoff_max: Duration,
    /// How long a folder stays in the trash before the timer purges it; `never` purges only
    /// folders with their own purge time. Default 7 days.
    pub trash_retention: Retention,
    /// How long a `delete-complete` row is kept before it is removed; `never` keeps them.
    /// Default 30 days.
    pub history_retention: Retention,
    /// How long a graceful shutdown may take before the process exits anyway. Default 10 s.
    #[serde(with = "humane")]
    pub shutdown_grace: Duration,
    /// This replica's name in leases and audit entries. Default `<hostname>-<pid>`.
    pub replica_id: Option<String>,
    /// Restrict this replica to these volume hosts (sharding by volume). Empty: all volumes.
    pub only_volumes: Vec<String>,
    /// First delay before probing an unavailable volume again; doubles (with jitter) per
    /// failed probe. Default 1 s.
    #[serde(with = "humane")]
    pub volume_probe_min: Duration,
    /// Cap of the delay between probes of an unavailable volume. Default 1 min.
    #[serde(with = "humane")]
    pub volume_probe_max: Duration,
}

/// A retention period: a duration, or `never` (nothing is removed by age).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Removed by age once this long has passed (at most [`MAX_RETENTION`]).
    After(Duration),
    /// Never removed by age. For the trash, folders with their own purge time
    /// (`trash --purge-after`) are still purged at that time.
    Never,
}

/// The longest finite retention (and `clean-history --older-than`, `trash --purge-after`):
/// 100 years. Longer values would reach beyond the timestamps the databases store, and the
/// timer statements would fail on every run (silently stopping every purge), so they are
/// refused at load; `never` says "not by age" instead.
pub const MAX_RETENTION: Duration = Duration::from_secs(100 * YEAR_SECS);

/// A year as humane durations count it (365.25 days), so `100y` is exactly the maximum.
const YEAR_SECS: u64 = 31_557_600;

/// What `never` means to the database statements, which take an age: 1000 years, far beyond
/// any timestamp a row written by this program (or the platform) carries, yet well inside
/// the range of both databases' date arithmetic. A fixed, finite horizon keeps the one
/// statement per timer (and with it the per-folder purge times) instead of a second code path.
pub const NEVER_HORIZON: Duration = Duration::from_secs(1000 * YEAR_SECS);

impl Retention {
    /// The finite duration; `None` for `never`.
    pub fn duration(self) -> Option<Duration> {
        match self {
            Retention::After(d) => Some(d),
            Retention::Never => None,
        }
    }

    /// The age the timer statements compare with: the duration, or [`NEVER_HORIZON`].
    pub fn horizon(self) -> Duration {
        self.duration().unwrap_or(NEVER_HORIZON)
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retention::After(d) => write!(f, "{}", humantime::format_duration(*d)),
            Retention::Never => f.write_str("never"),
        }
    }
}

impl Serialize for Retention {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "never" {
            return Ok(Retention::Never);
        }
        humane::parse(&s)
            .map(Retention::After)
            .map_err(|e| serde::de::Error::custom(format!("{e}, or never")))
    }
}

/// The valid range of one duration key.
struct Range {
    key: &'static str,
    min: Duration,
    max: Duration,
    /// Why the bounds are what they are, shown with the error.
    why: &'static str,
}

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

impl Range {
    fn check(&self, value: Duration) -> Result<(), Error> {
        if (self.min..=self.max).contains(&value) {
            return Ok(());
        }
        Err(Error::OutOfRange {
            key: self.key,
            value: humantime::format_duration(value).to_string(),
            expected: format!(
                "expected {} to {} ({})",
                humantime::format_duration(self.min),
                humantime::format_duration(self.max),
                self.why
            ),
        })
    }
}

/// Where a trashed folder's data lives while it is `delete-pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrashMode {
    /// The data stays at its live path (the default).
    InPlace,
    /// The data is renamed into the volume's trash directory, and back on restore.
    Move,
}

/// One storage volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    /// The `<proxy>:<volume>` host string that rows on this volume carry in `vfolders.host`.
    pub host: String,
    /// Where the volume is mounted on this machine.
    pub mount: PathBuf,
    /// OS threads one removal starts with on this volume. Default: the number of cores.
    #[serde(default = "default_removal_threads")]
    pub removal_threads: usize,
    /// The most OS threads one removal may grow to while its threads mostly sleep waiting
    /// on the storage (slow disks, network filesystems); see
    /// [`VolumeConfig::removal_threads_cap`]. Set it to `removal_threads` to keep the number
    /// fixed. Default: [`DEFAULT_MAX_REMOVAL_THREADS`], or `removal_threads` if that is more.
    #[serde(default)]
    pub max_removal_threads: Option<usize>,
    /// Removals running at once on this volume. Default 4.
    #[serde(default = "default_volume_concurrency")]
    pub max_concurrent_removals: usize,
    /// `in-place` (default) or `move`.
    #[serde(default = "default_trash_mode")]
    pub trash: TrashMode,
    /// Refuse to work unless `mount` is a mount point. Default `true` for a configured volume,
    /// so an unmounted volume reads as "not available", never as "already removed".
    #[serde(default = "default_true")]
    pub require_mount_point: bool,
    /// A file that must exist in the volume root before anything is trusted or removed.
    #[serde(default)]
    pub marker_file: Option<PathBuf>,
    /// Count the bytes of removed files (one `stat` per file; slower). Default `false`.
    #[serde(default)]
    pub count_bytes: bool,
    /// At most this many unlinks and rmdirs per second on this volume, summed over every
    /// removal this process runs on it (polite to a metadata server that running workloads
    /// share). Default: unlimited.
    #[serde(default)]
    pub max_ops_per_second: Option<u32>,
    /// How long every scan must see a folder directory without a row before
    /// `orphans reclaim` (or the controller, with `reclaim_orphans`) may remove it.
    /// Default 7 days.
    #[serde(default = "default_orphan_grace", with = "humane")]
    pub orphan_grace: Duration,
    /// When set, `run` scans this volume for orphans this often (jittered), keeping the
    /// orphan gauges current. Default: unset (scans are run with `orphans scan`).
    #[serde(default, with = "humane_opt")]
    pub orphan_scan_interval: Option<Duration>,
    /// With `orphan_scan_interval`, `run` also reclaims the orphans that are due after each
    /// scan. Default `false`.
    #[serde(default)]
    pub reclaim_orphans: bool,
}

/// The default of `volumes[].max_removal_threads`: on a disk that waits on the device or a
/// network filesystem, 16 threads removed 2.5–4 times faster than 2 (`benches/README.md`).
pub const DEFAULT_MAX_REMOVAL_THREADS: usize = 16;

fn default_removal_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
fn default_volume_concurrency() -> usize {
    4
}
fn default_trash_mode() -> TrashMode {
    TrashMode::InPlace
}
fn default_true() -> bool {
    true
}
fn default_orphan_grace() -> Duration {
    Duration::from_secs(7 * 86_400)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: "sqlite://vfolder-controller.db".to_owned(),
            http: HttpConfig::default(),
            controller: ControllerConfig::default(),
            log: LogConfig::default(),
            volumes: Vec::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info".to_owned(),
        }
    }
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            resync_interval: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            max_concurrent_removals: 8,
            lease_duration: Duration::from_secs(30),
            lease_renew_interval: Duration::from_secs(10),
            max_attempts: 10,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            trash_retention: Retention::After(Duration::from_secs(7 * 86_400)),
            history_retention: Retention::After(Duration::from_secs(30 * 86_400)),
            shutdown_grace: Duration::from_secs(10),
            replica_id: None,
            only_volumes: Vec::new(),
            volume_probe_min: Duration::from_secs(1),
            volume_probe_max: Duration::from_secs(60),
        }
    }
}

impl VolumeConfig {
    /// The most threads one removal on this volume may use: `max_removal_threads`, or its
    /// default; never fewer than `removal_threads`.
    pub fn removal_threads_cap(&self) -> usize {
        self.max_removal_threads
            .unwrap_or(DEFAULT_MAX_REMOVAL_THREADS)
            .max(self.removal_threads)
    }

    /// The volume used when no volume is configured: `local:volume1` under
    /// `./var/volumes/volume1`, not required to be a mount point, created on first use.
    pub fn builtin_default() -> Self {
        VolumeConfig {
            host: "local:volume1".to_owned(),
            mount: PathBuf::from("var/volumes/volume1"),
            removal_threads: default_removal_threads(),
            max_removal_threads: None,
            max_concurrent_removals: default_volume_concurrency(),
            trash: TrashMode::InPlace,
            require_mount_point: false,
            marker_file: None,
            count_bytes: false,
            max_ops_per_second: None,
            orphan_grace: default_orphan_grace(),
            orphan_scan_interval: None,
            reclaim_orphans: false,
        }
    }
}

impl Config {
    /// Loads the configuration: the file (if any), then the `VFOLDER_CONTROLLER_*` variables
    /// of `env`, then validation. With no volumes configured, the built-in default volume
    /// is added.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Error> {
        let table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                    path: path.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>().map_err(|e| Error::Invalid {
                    origin: Some(path.to_owned()),
                    message: e.to_string(),
                })?
            }
            None => toml::Table::new(),
        };
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        let mut merged = table.clone();
        apply_env(&mut merged, env.iter().cloned())?;
        let mut config: Config = match decode(merged) {
            Ok(config) => config,
            Err(e) => return Err(blame_decode_error(file, table, &env, e)),
        };
        config.check_configured_volumes()?;
        if config.volumes.is_empty() {
            config.volumes.push(VolumeConfig::builtin_default());
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: the database URL, unique volume hosts that neither nest
    /// nor repeat a mount, non-zero limits, durations in range, a known shard filter.
    pub fn validate(&self) -> Result<(), Error> {
        check_database_url("database_url", &self.database_url)?;
        let mut seen = BTreeSet::new();
        for v in &self.volumes {
            if !seen.insert(v.host.as_str()) {
                return Err(Error::Volume(format!(
                    "volume host {:?} is configured twice",
                    v.host
                )));
            }
            if v.removal_threads == 0 || v.max_concurrent_removals == 0 {
                return Err(Error::Volume(format!(
                    "volume {:?}: removal_threads and max_concurrent_removals must be at least 1",
                    v.host
                )));
            }
            if let Some(max) = v.max_removal_threads.filter(|&m| m < v.removal_threads) {
                return Err(Error::Volume(format!(
                    "volume {:?}: max_removal_threads ({max}) is below removal_threads ({}); set it to removal_threads to keep the number fixed",
                    v.host, v.removal_threads
                )));
            }
            if v.reclaim_orphans && v.orphan_scan_interval.is_none() {
                return Err(Error::Volume(format!(
                    "volume {:?}: reclaim_orphans needs orphan_scan_interval (reclaims follow the controller's own scans)",
                    v.host
                )));
            }
            if v.max_ops_per_second == Some(0) {
                return Err(Error::Volume(format!(
                    "volume {:?}: max_ops_per_second must be at least 1 (leave it out for no limit)",
                    v.host
                )));
            }
        }
        check_disjoint_mounts(&self.volumes)?;
        for host in &self.controller.only_volumes {
            if !seen.contains(host.as_str()) {
                return Err(Error::Volume(format!(
                    "controller.only_volumes names {host:?}, which is not a configured volume"
                )));
            }
        }
        let c = &self.controller;
        if c.max_concurrent_removals == 0 || c.max_attempts == 0 {
            return Err(Error::Invalid {
                origin: None,
                message: "controller.max_concurrent_removals and controller.max_attempts must be at least 1".into(),
            });
        }
        c.check_durations()
    }

    /// Refuses a relative `mount` on a configured volume: it would be resolved against the
    /// working directory of each process, so the controller and the CLI could see two
    /// different volumes under one host. (The built-in default volume is relative on
    /// purpose and documented so; it is added after this check.)
    fn check_configured_volumes(&self) -> Result<(), Error> {
        for (i, v) in self.volumes.iter().enumerate() {
            if !v.mount.is_absolute() {
                return Err(Error::Volume(format!(
                    "volumes[{i}].mount of volume {:?} is the relative path {:?}; give an absolute path (a relative one depends on each process's working directory)",
                    v.host,
                    v.mount.display().to_string()
                )));
            }
        }
        Ok(())
    }
    /// The configured volume whose host is `host`.
    pub fn volume(&self, host: &str) -> Option<&VolumeConfig> {
        self.volumes.iter().find(|v| v.host == host)
    }

    /// This replica's id: the configured one or `<hostname>-<pid>`.
    pub fn replica_id(&self) -> String {
        self.controller.replica_id.clone().unwrap_or_else(|| {
            let host = rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned();
            format!("{host}-{}", std::process::id())
        })
    }
}

impl ControllerConfig {
    /// Every duration within its documented range (docs/configuration.md), and the pairs in
    /// order: a zero interval spins or panics a timer, a huge one overflows the clock
    /// arithmetic of the timers and the database.
    fn check_durations(&self) -> Result<(), Error> {
        let ranges = [
            (
                self.resync_interval,
                Range {
                    key: "controller.resync_interval",
                    min: 100 * MS,
                    max: DAY,
                    why: "a shorter poll only loads the database",
                },
            ),
            (
                self.poll_interval,
                Range {
                    key: "controller.poll_interval",
                    min: 10 * MS,
                    max: DAY,
                    why: "zero would spin",
                },
            ),
            (
                self.lease_duration,
                Range {
                    key: "controller.lease_duration",
                    min: SECOND,
                    max: DAY,
                    why: "a crashed replica's folders wait this long",
                },
            ),
            (
                self.lease_renew_interval,
                Range {
                    key: "controller.lease_renew_interval",
                    min: 10 * MS,
                    max: DAY,
                    why: "and shorter than controller.lease_duration",
                },
            ),
            (
                self.backoff_min,
                Range {
                    key: "controller.backoff_min",
                    min: MS,
                    max: DAY,
                    why: "and at most controller.backoff_max",
                },
            ),
            (
                self.backoff_max,
                Range {
                    key: "controller.backoff_max",
                    min: MS,
                    max: 7 * DAY,
                    why: "a longer wait is better spent in delete-error",
                },
            ),
            (
                self.shutdown_grace,
                Range {
                    key: "controller.shutdown_grace",
                    min: Duration::ZERO,
                    max: HOUR,
                    why: "keep it below the supervisor's stop timeout",
                },
            ),
            (
                self.volume_probe_min,
                Range {
                    key: "controller.volume_probe_min",
                    min: 10 * MS,
                    max: HOUR,
                    why: "and at most controller.volume_probe_max",
                },
            ),
            (
                self.volume_probe_max,
                Range {
                    key: "controller.volume_probe_max",
                    min: 10 * MS,
                    max: DAY,
                    why: "a returned volume waits up to this long",
                },
            ),
        ];
        for (value, range) in &ranges {
            range.check(*value)?;
        }
        for (value, key) in [
            (self.trash_retention, "controller.trash_retention"),
            (self.history_retention, "controller.history_retention"),
        ] {
            if let Some(d) = value.duration() {
                Range {
                    key,
                    min: Duration::ZERO,
                    max: MAX_RETENTION,
                    why: "or never",
                }
                .check(d)?;
            }
        }
        let ordered = [
            (
                "controller.lease_renew_interval",
                self.lease_renew_interval,
                "controller.lease_duration",
                self.lease_duration,
                true,
            ),
            (
                "controller.backoff_min",
                self.backoff_min,
                "controller.backoff_max",
                self.backoff_max,
                false,
            ),
            (
                "controller.volume_probe_min",
                self.volume_probe_min,
                "controller.volume_probe_max",
                self.volume_probe_max,
                false,
            ),
        ];
        for (short, a, long, b, strict) in ordered {
            let (fine, relation) = if strict {
                (a < b, "shorter than")
            } else {
                (a <= b, "at most")
            };
            if !fine {
                return Err(Error::Invalid {
                    origin: None,
                    message: format!(
                        "{short} ({}) must be {relation} {long} ({})",
                        humantime::format_duration(a),
                        humantime::format_duration(b)
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A duration given on the command line for an age (`clean-history --older-than`,
/// `trash --purge-after`): a humane duration of at most [`MAX_RETENTION`].
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let d = humane::parse(s)?;
    if d > MAX_RETENTION {
        return Err(format!(
            "{s:?} is out of range: at most {}",
            humantime::format_duration(MAX_RETENTION)
        ));
    }
    Ok(d)
}

/// Checks that `url` can be used as the database URL, without connecting: a PostgreSQL URL
/// whose options parse, or a SQLite URL that names a file (`sqlite://` alone would open a
/// fresh temporary database per connection). `key` names where it came from.
pub fn check_database_url(key: &'static str, url: &str) -> Result<(), Error> {
    use std::str::FromStr;
    let bad = |message: String| Error::DatabaseUrl { key, message };
    // sqlx wraps its configuration errors twice in the same words; say them once.
    let refused = |e: sqlx::Error| {
        let text = e.to_string();
        bad(text.replace("error with configuration: ", ""))
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        sqlx::postgres::PgConnectOptions::from_str(url)
            .map(drop)
            .map_err(refused)
    } else if url.starts_with("sqlite:") {
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).map_err(refused)?;
        let in_memory = url.starts_with("sqlite::memory:");
        if !in_memory && options.get_filename().as_os_str().is_empty() {
            return Err(bad(format!(
                "{url:?} names no database file; use sqlite://FILE (e.g. sqlite://vfolder-controller.db)"
            )));
        }
        Ok(())
    } else {
        Err(bad(format!(
            "unsupported database URL {url:?} (expected postgres://... or sqlite://...)"
        )))
    }
}

/// Refuses two volumes whose mounts are the same directory or lie one inside the other
/// (compared after resolving symlinks): removing a folder of the outer volume could then
/// delete a live folder of the inner one.
fn check_disjoint_mounts(volumes: &[VolumeConfig]) -> Result<(), Error> {
    let resolved: Vec<PathBuf> = volumes.iter().map(|v| resolve(&v.mount)).collect();
    for (i, a) in resolved.iter().enumerate() {
        for (j, b) in resolved.iter().enumerate().skip(i + 1) {
            let (outer, inner, relation) = if a == b {
                (i, j, "is the same directory as")
            } else if b.starts_with(a) {
                (i, j, "lies inside")
            } else if a.starts_with(b) {
                (j, i, "lies inside")
            } else {
                continue;
            };
            return Err(Error::Volume(format!(
                "volumes[{inner}].mount of volume {:?} ({}) {relation} volumes[{outer}].mount of volume {:?} ({}); volume mounts must not overlap",
                volumes[inner].host,
                resolved[inner].display(),
                volumes[outer].host,
                resolved[outer].display()
            )));
        }
    }
    Ok(())
}

/// `path` made absolute and resolved: symlinks in its longest existing prefix are followed
/// (`canonicalize`), the rest is normalised lexically (a mount point may not exist yet).
fn resolve(path: &Path) -> PathBuf {
    use std::path::Component;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut lexical = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    let mut missing = Vec::new();
    let mut existing = lexical.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            return missing.iter().rev().fold(real, |p, name| p.join(name));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_owned());
                existing = parent;
            }
            _ => return lexical,
        }
    }
}

/// Deserializes a merged table.
fn decode(table: toml::Table) -> Result<Config, toml::de::Error> {
    toml::Value::Table(table).try_into()
}

/// Says whose fault a failed decode is: the file's when the file alone does not decode,
/// otherwise the first environment variable whose value does not fit its key.
fn blame_decode_error(
    file: Option<&Path>,
    table: toml::Table,
    env: &[(String, String)],
    error: toml::de::Error,
) -> Error {
    let in_file = || Error::Invalid {
        origin: file.map(Path::to_owned),
        message: error.to_string(),
    };
    if decode(table.clone()).is_err() {
        return in_file();
    }
    let mut merged = table;
    for (name, value) in env {
        if apply_env(&mut merged, [(name.clone(), value.clone())]).is_err() {
            continue;
        }
        if let Err(e) = decode(merged.clone()) {
            return Error::Env {
                variable: name.clone(),
                message: e.message().trim().to_owned(),
            };
        }
    }
    in_file()
}

/// Overlays `VFOLDER_CONTROLLER_*` variables onto the parsed file. A value that parses as a
/// TOML value (number, boolean, array) is taken as one; anything else is a string.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), Error> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if ENV_NOT_KEYS.contains(&rest) {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        if lower == "database_url" {
            table.insert(lower, parsed);
            continue;
        }
        let Some((section, key)) = ENV_SECTIONS.iter().find_map(|s| {
            lower
                .strip_prefix(s)
                .and_then(|k| k.strip_prefix('_'))
                .map(|k| (*s, k))
        }) else {
            return Err(Error::UnknownEnv(name));
        };
        let entry = table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key.to_owned(), parsed);
            }
            _ => {
                return Err(Error::Invalid {
                    origin: None,
                    message: format!("{section} must be a table"),
                });
            }
        }
    }
    Ok(())
}

/// Serde adapter for humane durations (`500ms`, `10s`, `7d`).
pub mod humane {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Parses a humane duration string.
    pub fn parse(s: &str) -> Result<Duration, String> {
        humantime::parse_duration(s)
            .map_err(|e| format!("invalid duration {s:?} ({e}); use e.g. 500ms, 10s, 5m, 7d"))
    }

    /// Serializes as a humane string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Deserializes from a humane string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Serde adapter for an optional humane duration (absent or a humane string).
pub mod humane_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as a humane string, or as none.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::humane::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Deserializes from a humane string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        super::humane::parse(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_file_gives_sqlite_and_the_builtin_volume() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.database_url, "sqlite://vfolder-controller.db");
        assert_eq!(c.volumes, vec![VolumeConfig::builtin_default()]);
        assert_eq!(
            c.controller.trash_retention,
            Retention::After(Duration::from_secs(604_800))
        );
    }

    #[test]
    fn a_removal_may_grow_to_16_threads_or_its_starting_number_if_more() {
        let mut v = VolumeConfig::builtin_default();
        v.removal_threads = 2;
        assert_eq!(v.removal_threads_cap(), DEFAULT_MAX_REMOVAL_THREADS);
        v.removal_threads = 32;
        assert_eq!(v.removal_threads_cap(), 32);
        v.max_removal_threads = Some(40);
        assert_eq!(v.removal_threads_cap(), 40);
        v.removal_threads = 2;
        v.max_removal_threads = Some(2);
        assert_eq!(v.removal_threads_cap(), 2, "fixed");
    }

    #[test]
    fn env_overrides_file_and_durations_are_humane() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            r#"
database_url = "sqlite://a.db"
[controller]
lease_duration = "45s"
max_attempts = 3
[[volumes]]
host = "p:v"
mount = "/mnt/v"
"#,
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            env(&[
                ("VFOLDER_CONTROLLER_DATABASE_URL", "postgres://x@y/z"),
                ("VFOLDER_CONTROLLER_CONTROLLER_MAX_ATTEMPTS", "7"),
                ("VFOLDER_CONTROLLER_CONTROLLER_TRASH_RETENTION", "2d"),
                ("VFOLDER_CONTROLLER_HTTP_LISTEN", "0.0.0.0:1234"),
                ("VFOLDER_CONTROLLER_CONFIG", "ignored"),
                ("UNRELATED", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.database_url, "postgres://x@y/z");
        assert_eq!(c.controller.max_attempts, 7);
        assert_eq!(c.controller.lease_duration, Duration::from_secs(45));
        assert_eq!(
            c.controller.trash_retention,
            Retention::After(Duration::from_secs(172_800))
        );
        assert_eq!(c.http.listen.port(), 1234);
        assert_eq!(c.volumes.len(), 1);
        assert!(
            c.volumes[0].require_mount_point,
            "on for configured volumes"
        );
    }

    #[test]
    fn typos_are_errors_that_name_the_key() {
        let err = Config::load(None, env(&[("VFOLDER_CONTROLLER_CONTROLER_X", "1")])).unwrap_err();
        assert!(
            err.to_string().contains("VFOLDER_CONTROLLER_CONTROLER_X"),
            "{err}"
        );
        let err = Config::load(
            None,
            env(&[("VFOLDER_CONTROLLER_CONTROLLER_LEASE_DURATON", "1s")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("lease_duraton"), "{err}");
        let err = Config::load(
            None,
            env(&[("VFOLDER_CONTROLLER_CONTROLLER_LEASE_DURATION", "soon")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"soon\""), "{err}");
    }
}
