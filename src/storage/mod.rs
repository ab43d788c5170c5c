//! Storage: volumes, the folder path layout and the safe parallel remover.
//!
//! This module knows nothing of the database or of tokio's runtime: every operation is a
//! blocking function meant for `spawn_blocking` (it only borrows tokio-util's
//! `CancellationToken` type). Safety rules, from the design brief: the target is resolved
//! beneath the volume root without following symlinks; a volume root, a quota-scope root or
//! anything outside the volume is never removed; an unmounted volume is "not available",
//! never "already removed". See [`remove`] for the remover's guarantees.
//!
//! Entry points:
//! - [`Volumes`] / [`Volume`] for the controller and CLI: [`Volume::remove_folder`],
//!   [`Volume::move_to_trash`], [`Volume::restore_from_trash`], [`Volume::create_folder`],
//!   [`Volume::remove_folder_copy`] (one copy only: what `orphans reclaim` removes).
//! - [`Volume::scan`] for the read-only walk of a volume's layout (`orphans scan`).
//! - [`remove_tree`] for removing an arbitrary directory beneath an open parent directory
//!   (what the benchmark binary calls: open the parent of the bench tree with
//!   `rustix::fs::open(.., OFlags::DIRECTORY, ..)`, then `remove_tree(parent.as_fd(),
//!   c"tree", &RemoveOptions { threads, display_path: "tree".into(),
//!   ..RemoveOptions::default() }, &token, &progress)`). `Volume::remove_folder` on a volume
//!   whose mount is the bench directory works too, with the folder layout.

mod error;
mod layout;
pub mod rate;
pub mod remove;
pub mod scan;
mod volume;
mod waiting;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use error::Error;
pub use layout::{FolderRef, TRASH_DIR};

/// A `quota_scope_id` that addresses the directory of quota scope `scope` (the layout has
/// the scope's uuid only, so a folder found on disk is addressed as `user:<scope>`; the
/// kind does not change the path).
pub fn path_scope(scope: uuid::Uuid) -> String {
    layout::scope_ref(scope)
}
pub use rate::OpsLimiter;
pub use remove::{EntryOrder, RemoveOptions, remove_tree};
pub use scan::{Found, FoundFolder, ScanEnd, ScanOptions, ScanProgress};
pub use volume::{Volume, Volumes};

/// Live counters of what a removal has removed so far, readable from any thread while it
/// runs. Updated in batches (at least once per directory chunk), so a reader sees a recent,
/// never an inflated, value. One `Progress` may be shared by several removals: it sums them.
#[derive(Debug, Default)]
pub struct Progress {
    files: AtomicU64,
    dirs: AtomicU64,
    symlinks: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    threads: AtomicU64,
}

impl Progress {
    /// OS threads removing right now (0 once the removal returned). With growth
    /// ([`RemoveOptions::max_threads`]) this rises while the storage makes threads wait.
    pub fn threads(&self) -> u64 {
        self.threads.load(Ordering::Relaxed)
    }

    /// A removal thread starts (`true`) or ends its work.
    fn thread_working(&self, working: bool) {
        if working {
            self.threads.fetch_add(1, Ordering::Relaxed);
        } else {
            self.threads.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// How many entries failed so far (the first failure is what the removal returns).
    /// Updated when a pass over the tree ends.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn add_errors(&self, n: u64) {
        self.errors.fetch_add(n, Ordering::Relaxed);
    }

    /// The counts so far (each field read atomically; the set is not one snapshot).
    pub fn snapshot(&self) -> Counts {
        Counts {
            files: self.files.load(Ordering::Relaxed),
            dirs: self.dirs.load(Ordering::Relaxed),
            symlinks: self.symlinks.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    fn add(&self, c: &Counts) {
        self.files.fetch_add(c.files, Ordering::Relaxed);
        self.dirs.fetch_add(c.dirs, Ordering::Relaxed);
        self.symlinks.fetch_add(c.symlinks, Ordering::Relaxed);
        self.bytes.fetch_add(c.bytes, Ordering::Relaxed);
    }
}

/// What was removed: non-directory entries other than symlinks (`files`), directories,
/// symlinks, and the bytes of regular files (only when the volume's `count_bytes` is set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Regular files and other non-directory, non-symlink entries removed.
    pub files: u64,
    /// Directories removed (including the folder's own directory).
    pub dirs: u64,
    /// Symlinks removed (never followed).
    pub symlinks: u64,
    /// Sizes of the regular files removed, when counted.
    pub bytes: u64,
}

impl Counts {
    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &Counts) {
        self.files += other.files;
        self.dirs += other.dirs;
        self.symlinks += other.symlinks;
        self.bytes += other.bytes;
    }
}

/// How a removal ended. Cancellation is not an error: the tree is partly removed and a
/// later call finishes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything is gone (or was already).
    Completed(Report),
    /// Stopped early because the token was cancelled.
    Cancelled(Report),
}

/// What one call removed and how long it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// What this call removed (not including earlier attempts).
    pub counts: Counts,
    /// Wall-clock time of this call.
    pub elapsed: Duration,
    /// The most OS threads that removed at once: at most [`RemoveOptions::threads`] (1 for a
    /// small folder, which gave the others no work to start for), or more when the removal
    /// grew because its threads were waiting on the storage.
    pub threads: usize,
    /// Files and symlinks unlinked by a thread that helped another empty a big directory
    /// (see `storage::remove`), included in `counts`.
    pub helped: u64,
}

impl Report {
    /// Nothing removed yet, by one thread, in no time.
    fn nothing() -> Report {
        Report {
            counts: Counts::default(),
            elapsed: Duration::ZERO,
            threads: 1,
            helped: 0,
        }
    }

    /// Adds what `other` removed; `threads` keeps the most that removed at once.
    fn absorb(&mut self, other: &Report) {
        self.counts.add(&other.counts);
        self.threads = self.threads.max(other.threads);
        self.helped += other.helped;
    }

    /// This report, timed from `started` until now.
    fn since(mut self, started: Instant) -> Report {
        self.elapsed = started.elapsed();
        self
    }
}
