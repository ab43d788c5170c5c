//! The removal engine as a command: removes one directory tree and prints what it removed.
//!
//! Metric: wall-clock time to remove a whole tree, compared by `benches/run.sh` against
//! `rm -rf`, rmz and std's `remove_dir_all` on the same freshly built trees (medians,
//! files/s, ratios; see `benches/README.md` for the results and the machine). This binary is
//! the engine's side of that comparison; it calls `storage::remove_tree` exactly as the
//! controller does, minus the database.
//!
//! Exact commands:
//!
//! ```text
//! bash benches/run.sh [--quick]                              # the whole comparison (root)
//! bash benches/rate_limit.sh                                  # max_ops_per_second mode
//! cargo bench --bench remove -- DIR [--threads N] [--max-threads N] [--count-bytes]
//!                                    [--max-ops-per-second N] [--order inode|directory]
//!                                    [--chunk-entries N]
//! ```
//!
//! `--threads` is the number the removal starts with (default: the cores), `--max-threads`
//! the most it may grow to while its threads wait on the storage (default: `--threads`, a
//! fixed number; the controller's default is 16, see `volumes[].max_removal_threads`).
//!
//! With `DIR` it removes `DIR` and prints one line, `files=.. dirs=.. symlinks=.. bytes=..
//! elapsed_ms=.. threads=.. max_threads=.. helped=.. ops_per_s=.. limit=.. order=..`
//! (`threads`: the most that worked at once; `helped`: entries unlinked by a thread helping
//! another empty a big directory; `ops_per_s`: unlinks and rmdirs per second achieved;
//! `limit`: the volume limit it ran under, `none` or `N`; `order`: the engine's
//! `EntryOrder`, `inode` by default, `directory` for the order before it), exiting non-zero
//! if the engine reported an error or `DIR` is still there. Without `DIR` (as a plain
//! `cargo bench` or `cargo test --benches` runs it, with harness flags such as `--bench` or
//! `--test-threads=2` that are then ignored) it is a smoke check: it builds a small tree in
//! a temporary directory, removes it and exits non-zero unless every entry was counted and
//! the tree is gone.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};
use tokio_util::sync::CancellationToken;
use vfolder_controller::storage::{
    Counts, EntryOrder, OpsLimiter, Outcome, Progress, RemoveOptions, remove_tree,
};

/// What to remove and how.
struct Args {
    dir: PathBuf,
    threads: usize,
    /// `RemoveOptions::max_threads`; `None`: the same as `threads`.
    max_threads: Option<usize>,
    count_bytes: bool,
    /// A volume's `max_ops_per_second`; `None` is unlimited (no limiter at all).
    max_ops: Option<u32>,
    order: EntryOrder,
    /// `RemoveOptions::chunk_entries`: the inode-order memory cap.
    chunk_entries: usize,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match parse(&args) {
        Ok(Some(args)) => remove(&args).map(|_| ()),
        Ok(None) => smoke_check(),
        Err(message) => Err(message),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("remove: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(None)` when no directory was named (smoke-check mode; other arguments are then the
/// test harness's and are ignored).
fn parse(args: &[String]) -> Result<Option<Args>, String> {
    let mut dir = None;
    let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut max_threads = None;
    let mut count_bytes = false;
    let mut max_ops = None;
    let mut order = EntryOrder::default();
    let mut chunk_entries = RemoveOptions::default().chunk_entries;
    let mut flags = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--threads" => threads = positive(arg, rest.next())?,
            "--max-threads" => max_threads = Some(positive(arg, rest.next())?),
            "--count-bytes" => count_bytes = true,
            "--max-ops-per-second" => max_ops = Some(positive(arg, rest.next())?),
            "--order" => {
                order = match rest.next().map(String::as_str) {
                    Some("inode") => EntryOrder::Inode,
                    Some("directory") => EntryOrder::Directory,
                    _ => return Err("--order needs `inode` or `directory`".into()),
                };
            }
            "--chunk-entries" => chunk_entries = positive(arg, rest.next())?,
            // `cargo bench` appends it to every bench target's arguments.
            "--bench" => {}
            flag if flag.starts_with('-') => flags.push(flag),
            path if dir.is_none() => dir = Some(PathBuf::from(path)),
            extra => return Err(format!("unexpected argument {extra:?}")),
        }
    }
    let Some(dir) = dir else {
        return Ok(None);
    };
    if let Some(flag) = flags.first() {
        return Err(format!("unknown argument {flag:?}"));
    }
    Ok(Some(Args {
        dir,
        threads,
        max_threads,
        count_bytes,
        max_ops,
        order,
        chunk_entries,
    }))
}

/// The positive number given to `flag`.
fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(
    flag: &str,
    value: Option<&String>,
) -> Result<T, String> {
    value
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > T::from(0))
        .ok_or_else(|| format!("{flag} needs a positive number"))
}

/// Removes `args.dir` with the engine and prints the one-line report.
fn remove(args: &Args) -> Result<Counts, String> {
    let dir = &args.dir;
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(format!("{} has no parent directory", dir.display()));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let parent_fd = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open {}: {e}", parent.display()))?;
    let name_c = CString::new(name.as_bytes()).map_err(|e| e.to_string())?;
    let opts = RemoveOptions {
        threads: args.threads,
        max_threads: args.max_threads.unwrap_or(args.threads),
        count_bytes: args.count_bytes,
        folder: None,
        display_path: PathBuf::from(name),
        limiter: args.max_ops.map(|n| Arc::new(OpsLimiter::new(n))),
        order: args.order,
        chunk_entries: args.chunk_entries,
    };
    let outcome = remove_tree(
        std::os::fd::AsFd::as_fd(&parent_fd),
        &name_c,
        &opts,
        &CancellationToken::new(),
        &Progress::default(),
    )
    .map_err(|e| format!("removing {}: {e}", dir.display()))?;
    let report = match outcome {
        Outcome::Completed(report) => report,
        Outcome::Cancelled(_) => return Err("cancelled, though nothing cancels it".into()),
    };
    let c = report.counts;
    let ops = c.files + c.dirs + c.symlinks;
    println!(
        "files={} dirs={} symlinks={} bytes={} elapsed_ms={:.1} threads={} max_threads={} helped={} ops_per_s={:.0} limit={} order={}",
        c.files,
        c.dirs,
        c.symlinks,
        c.bytes,
        report.elapsed.as_secs_f64() * 1000.0,
        report.threads,
        opts.max_threads.max(opts.threads),
        report.helped,
        ops as f64 / report.elapsed.as_secs_f64(),
        args.max_ops
            .map_or_else(|| "none".to_owned(), |n| n.to_string()),
        match args.order {
            EntryOrder::Inode => "inode",
            EntryOrder::Directory => "directory",
        }
    );
    if dir.symlink_metadata().is_ok() {
        return Err(format!("{} still exists", dir.display()));
    }
    Ok(c)
}

/// Builds a small tree (nested directories, files with content, a symlink) in a temporary
/// directory, removes it with byte counting on two threads in chunks of three entries (so
/// every directory takes several), and checks every count.
fn smoke_check() -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = tmp.path().join("tree");
    let io = |e: std::io::Error| e.to_string();
    let mut expected = Counts {
        dirs: 1,
        ..Counts::default()
    };
    for d in 0..20 {
        let dir = root.join(format!("d{d:02}")).join("inner");
        std::fs::create_dir_all(&dir).map_err(io)?;
        expected.dirs += 2;
        for f in 0..10 {
            let content = vec![b'x'; d * 10 + f];
            std::fs::write(dir.join(format!("f{f}")), &content).map_err(io)?;
            expected.files += 1;
            expected.bytes += content.len() as u64;
        }
    }
    std::os::unix::fs::symlink("/", root.join("link-to-root")).map_err(io)?;
    expected.symlinks += 1;
    let counts = remove(&Args {
        dir: root,
        threads: 2,
        max_threads: Some(4),
        count_bytes: true,
        max_ops: None,
        order: EntryOrder::default(),
        chunk_entries: 3,
    })?;
    if counts != expected {
        return Err(format!(
            "smoke check: removed {counts:?}, expected {expected:?}"
        ));
    }
    println!("smoke check passed (run benches/run.sh for the benchmark)");
    Ok(())
}
