//! `orphans scan` and `orphans reclaim`: the report of data no row accounts for, and its
//! removal after the grace period (the work is done by [`crate::controller::orphans`]).
//!
//! Findings are printed as they are made (one line each, or one JSON object per line with
//! `--json`), so the report of a volume with millions of folders needs no memory for them.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::output::{self, time};
use super::{Error, OrphanReclaimArgs, OrphanScanArgs};
use crate::config::Config;
use crate::controller::orphans::{
    self, Finding, Reclaim, ReclaimTotals, ScanRequest, reclaim_volume, scan_volume,
};
use crate::storage::{ScanProgress, Volume, Volumes};
use crate::store::{ScanSummary, Store};

/// How often the progress line on a terminal is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// The volumes a command works on: `--volume`, or every configured one.
fn selected(config: &Config, only: Option<&str>) -> Result<Vec<Volume>, Error> {
    if let Some(host) = only {
        if config.volume(host).is_none() {
            return Err(Error::UnknownVolume {
                host: host.to_owned(),
                configured: config
                    .volumes
                    .iter()
                    .map(|v| v.host.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let volumes = Volumes::new(&config.volumes);
    Ok(volumes
        .iter()
        .filter(|v| only.is_none_or(|h| h == v.host()))
        .cloned()
        .collect())
}

fn map_err(e: orphans::Error) -> Error {
    match e {
        orphans::Error::Store(e) => Error::Store(e),
        orphans::Error::Storage { host, source } => Error::Storage { host, source },
        orphans::Error::Panicked { host, reason } => {
            Error::Output(std::io::Error::other(format!("volume {host}: {reason}")))
        }
    }
}

/// A token cancelled by Ctrl-C, so an interrupted scan stores nothing as complete.
fn interruptible() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            t.cancel();
        }
    });
    token
}

/// Prints one line, remembering the first output error (the callbacks cannot return one).
struct Out {
    json: bool,
    failed: Option<Error>,
}

impl Out {
    fn line(&mut self, text: String) {
        if self.failed.is_none() {
            if let Err(e) = output::print(&(text + "\n")) {
                self.failed = Some(e);
            }
        }
    }

    fn json(&mut self, volume: &str, kind: Option<&str>, value: &impl serde::Serialize) {
        let mut v = serde_json::to_value(value).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            obj.insert("volume".into(), volume.into());
            if let Some(kind) = kind {
                obj.insert("kind".into(), kind.into());
            }
        }
        self.line(v.to_string());
    }

    fn done(self) -> Result<(), Error> {
        self.failed.map_or(Ok(()), Err)
    }
}

/// `1.2 MiB`-style sizes.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn counts_text(c: &crate::storage::scan::FolderCounts) -> String {
    let mut text = format!(
        "{} files, {} dirs, {} symlinks, {}",
        c.counts.files,
        c.counts.dirs,
        c.counts.symlinks,
        size(c.counts.bytes)
    );
    if c.not_entered > 0 {
        text.push_str(&format!(", {} mounts not entered", c.not_entered));
    }
    if c.unreadable > 0 {
        text.push_str(&format!(", {} unreadable", c.unreadable));
    }
    text
}

/// The text line of one finding.
fn finding_text(f: &Finding) -> String {
    match f {
        Finding::Orphan(o) => {
            let mut line = format!("orphan      {}  {}", o.path, o.id);
            if let Some(c) = &o.counts {
                line.push_str(&format!("  ({})", counts_text(c)));
            }
            if let (Some(first), Some(scans)) = (o.first_seen, o.scans) {
                line.push_str(&format!(
                    "\n            no row; seen since {} ({} scan{}), reclaimable after {}",
                    time(first),
                    scans,
                    if scans == 1 { "" } else { "s" },
                    o.reclaimable_after.map_or_else(|| "-".to_owned(), time)
                ));
            }
            if let Some(row) = &o.row {
                line.push_str(&format!(
                    "\n            a row has this id ({} on {}{}); this directory is not its data and is never reclaimed",
                    row.status,
                    row.host,
                    row.path
                        .as_deref()
                        .map(|p| format!(", data at {p}"))
                        .unwrap_or_default()
                ));
            }
            if let Some(t) = &o.tombstone {
                line.push_str(&format!(
                    "\n            tombstone: row {:?} deleted {} by {} ({}, was {}, removal {})",
                    t.name.as_deref().unwrap_or("-"),
                    time(t.deleted_at),
                    t.actor.as_deref().unwrap_or("unknown"),
                    t.cause,
                    t.status.as_deref().unwrap_or("-"),
                    t.removal.as_str()
                ));
            }
            line
        }
        Finding::Unfinished(u) => {
            let mut line = format!(
                "unfinished  {}  {} {:?}  delete-complete since {}, data still there",
                u.path,
                u.id,
                u.name,
                output::opt_time(u.since)
            );
            if let Some(c) = &u.counts {
                line.push_str(&format!("  ({})", counts_text(c)));
            }
            line
        }
        Finding::Missing(m) => format!(
            "missing     {}  {} {:?}  {}: no data at its live or trash path",
            m.path, m.id, m.name, m.status
        ),
        Finding::Foreign(f) => {
            format!("foreign     {}  {}: {}", f.path.display(), f.kind, f.reason)
        }
    }
}

fn summary_text(s: &ScanSummary, elapsed: Duration) -> String {
    let bytes = |b: Option<u64>| b.map(|b| format!(" ({})", size(b))).unwrap_or_default();
    format!(
        "volume {}: {} orphan(s){}, {} unfinished removal(s){}, {} live folder(s) missing their data, {} foreign entr{}; scanned in {:.1}s",
        s.host,
        s.orphans,
        bytes(s.orphan_bytes),
        s.unfinished,
        bytes(s.unfinished_bytes),
        s.missing,
        s.foreign_entries,
        if s.foreign_entries == 1 { "y" } else { "ies" },
        elapsed.as_secs_f64()
    )
}

/// Redraws a progress line on standard error while a scan runs (terminals only).
fn progress_line(host: String, progress: Arc<ScanProgress>, count: bool) -> CancellationToken {
    let stop = CancellationToken::new();
    if !std::io::stderr().is_terminal() {
        return stop;
    }
    let done = stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        loop {
            tokio::select! {
                _ = done.cancelled() => break,
                _ = tick.tick() => {
                    let c = progress.snapshot();
                    let counted = if count {
                        format!(", {} files, {}", c.files, size(c.bytes))
                    } else {
                        String::new()
                    };
                    eprint!("\r\x1b[Kscanning {host}: {} folders, {} foreign{counted}", c.folders, c.foreign);
                }
            }
        }
        eprint!("\r\x1b[K");
    });
    stop
}

/// `orphans scan`.
pub async fn scan(
    store: &dyn Store,
    config: &Config,
    actor: &str,
    json: bool,
    args: OrphanScanArgs,
) -> Result<(), Error> {
    let cancel = interruptible();
    let mut out = Out { json, failed: None };
    for volume in selected(config, args.volume.as_deref())? {
        let host = volume.host().to_owned();
        let req = ScanRequest {
            count: args.count,
            grace: volume.config().orphan_grace,
            actor: actor.to_owned(),
        };
        let progress = Arc::new(ScanProgress::default());
        let stop = progress_line(host.clone(), progress.clone(), args.count);
        let started = std::time::Instant::now();
        let result = {
            let host = host.clone();
            let out = &mut out;
            let mut emit = move |f: Finding| {
                if out.json {
                    out.json(&host, None, &f);
                } else {
                    out.line(finding_text(&f));
                }
            };
            scan_volume(store, &volume, &req, progress, &cancel, &mut emit).await
        };
        stop.cancel();
        // Let the progress task clear its line before the summary.
        tokio::task::yield_now().await;
        match result.map_err(map_err)? {
            Some(summary) if json => out.json(&host, Some("summary"), &summary),
            Some(summary) => out.line(summary_text(&summary, started.elapsed())),
            None => {
                out.line(format!(
                    "volume {host}: scan interrupted; nothing recorded as complete"
                ));
                break;
            }
        }
    }
    out.done()
}

/// `orphans reclaim`.
pub async fn reclaim(
    store: &dyn Store,
    config: &Config,
    actor: &str,
    json: bool,
    args: OrphanReclaimArgs,
) -> Result<(), Error> {
    let cancel = interruptible();
    let mut out = Out { json, failed: None };
    for volume in selected(config, args.volume.as_deref())? {
        let host = volume.host().to_owned();
        let grace = volume.config().orphan_grace;
        let totals: ReclaimTotals = {
            let host = host.clone();
            let out = &mut out;
            let mut emit = move |r: Reclaim| {
                if out.json {
                    out.json(&host, Some("reclaim"), &r);
                    return;
                }
                let what = format!("{}  {}", r.sighting.seen.path, r.sighting.seen.vfolder_id);
                let seen = format!(
                    "seen without a row since {} ({} scans)",
                    time(r.sighting.first_seen),
                    r.sighting.scans
                );
                out.line(match (r.result, r.counts, r.reason) {
                    ("reclaimed", Some(c), _) => format!(
                        "reclaimed      {what}  {} files, {} dirs, {} symlinks, {}; {seen}",
                        c.files,
                        c.dirs,
                        c.symlinks,
                        size(c.bytes)
                    ),
                    (result, _, Some(reason)) => format!("{result:<14} {what}  {reason}"),
                    (result, _, None) => format!("{result:<14} {what}  {seen}"),
                });
            };
            reclaim_volume(
                store,
                &volume,
                grace,
                actor,
                args.dry_run,
                &cancel,
                &mut emit,
            )
            .await
            .map_err(map_err)?
        };
        if json {
            out.json(&host, Some("summary"), &totals);
        } else {
            out.line(format!(
                "volume {host}: {} {} ({}), {} skipped, {} failed{}",
                totals.reclaimed,
                if args.dry_run {
                    "would be reclaimed"
                } else {
                    "reclaimed"
                },
                size(totals.counts.bytes),
                totals.skipped,
                totals.failed,
                if args.dry_run {
                    "; dry run: nothing was changed"
                } else {
                    ""
                }
            ));
        }
    }
    out.done()
}
