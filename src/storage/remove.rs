//! The parallel, streaming remover: deletes one directory tree beneath a directory fd.
//!
//! Guarantees:
//! - **Symlinks are never followed.** The tree root and every directory inside it are opened
//!   with `O_NOFOLLOW | O_DIRECTORY` relative to the file descriptor of the directory that
//!   listed them, and entries are removed with `unlinkat` relative to that descriptor. A
//!   symlink (to a file or a directory, inside or outside the volume) is unlinked as a name;
//!   a directory swapped for a symlink after it was listed fails to open as a directory and
//!   the symlink is unlinked instead. If the tree root itself is a symlink or not a
//!   directory, nothing is touched and [`Error::UnsafePath`] is returned.
//! - **Parents are proven, not trusted.** A directory is removed from its parent once its
//!   last child is gone ("children delete parents", as in fuc's rmz). The parent is reached
//!   by opening `..` relative to the emptied directory and checking that its device and
//!   inode are those recorded when the parent was opened; if the directory was moved
//!   elsewhere meanwhile, it is left in place and [`Error::TreeChanged`] (transient) is
//!   reported. This keeps at most a few descriptors per thread open even for a chain
//!   10,000 directories deep.
//! - **Mounts are not crossed.** A directory on another device, or that `statx` marks as a
//!   mount root (which also catches bind mounts of the same filesystem), is not entered;
//!   [`Error::MountInsideTree`] names it and everything above it stays.
//! - **Cancellation** is checked before every unlink, also in the middle of a chunk (a
//!   relaxed atomic load; the token itself is polled every few entries and by idle threads
//!   every 20 ms), so a removal stops within milliseconds plus one system call. A removal
//!   waiting for its volume's rate limit ([`RemoveOptions::limiter`], before every unlink
//!   and rmdir) polls the token while it waits and stops as promptly. It returns
//!   [`Outcome::Cancelled`] with the tree partly removed; calling again resumes from what
//!   is left. Cancellation is not an error.
//! - **Inode order, in bounded chunks.** Each directory's files and symlinks are unlinked in
//!   inode-number order ([`EntryOrder::Inode`], the default and the rule everywhere: on ext4
//!   it frees inode-table and bitmap blocks in order rather than at random, and no measured
//!   shape was slower for it; numbers in `benches/README.md`). A thread reads at most
//!   [`RemoveOptions::chunk_entries`] entries ([`DEFAULT_CHUNK_ENTRIES`], 64 Ki) and about
//!   4 MiB of names of one directory, sorts that chunk by inode, unlinks it, then reads the
//!   next chunk; a larger directory is sorted chunk by chunk, not as a whole. Subdirectories
//!   are queued for the other threads as soon as they are read. Reading on from the same
//!   offset after unlinking is safe (see `Worker::scan`); an entry missed anyway is found
//!   by the rescan of a directory that is not empty when its removal is tried.
//! - **Threads with nothing else to do help with a big directory.** A sorted chunk is
//!   unlinked in blocks of 64 entries, claimed in inode order; while it has blocks left, a
//!   thread waiting for work is offered a share and claims blocks beside the thread that
//!   read it (`Offered`). Unlinks in one directory take turns on its lock, but freeing each
//!   inode and its blocks runs after the lock is released, beside the next unlink, so one
//!   directory of 100,000 small files empties about 1.5 × faster with two threads than
//!   with one (`benches/README.md`). A helper unlinks relative to the same descriptor as
//!   the thread that read the directory, with the same checks, and the directory is
//!   removed only once every helper is done with it.
//!   [`Report::helped`](super::Report::helped) counts what helpers unlinked.
//! - **Threads only where there is work for them.** The calling thread starts alone; it
//!   starts the other [`RemoveOptions::threads`] the first time another thread could take
//!   work: a directory queued while it is busy (or a second one when it is done), or a
//!   chunk of more than one block. So a small folder (one directory of at most 64 entries,
//!   or a single subdirectory) is removed without starting a thread, however many
//!   `threads` are configured: with one per core on a 16-core host, starting 15 threads for
//!   each small folder of a purge made it converge about 6 × slower (`benches/README.md`).
//! - **Bounded resources.** At most [`RemoveOptions::threads`] OS threads (until the
//!   removal grows, below) share a stack of directories to open; entries are read with
//!   `getdents64` into one reusable buffer per thread and collected into that thread's one
//!   chunk, so memory grows with the number of threads (a chunk takes at most about 6 MiB:
//!   32 bytes per entry plus 4 MiB of names; 2.5 MiB for 64 Ki names of 8 bytes; a helper
//!   may keep a chunk until its last block is done, and offers not yet taken keep at most
//!   one chunk per thread waiting for work) and the number of directories waiting to be
//!   opened, not with the number of files. No recursion: depth costs heap, not stack.
//! - **More threads only while they wait on the storage.** With
//!   [`RemoveOptions::max_threads`] above `threads`, the calling thread looks every
//!   [`GROW_WINDOW`] at how the removal's threads spent it (the kernel's per-thread
//!   scheduler statistics, see `storage::waiting`): when they slept more than half of it
//!   (waiting for the device, a journal commit, a network filesystem), not counting time
//!   spent idle or waiting for a core, and directories are queued that no thread has
//!   taken, it starts more, at most doubling each time, up to `max_threads`. A removal that
//!   keeps its cores busy, or that ends within one window (a small folder), never starts
//!   more than `threads`; none are started under a rate limit (its waits are sleep too).
//!   A thread started this way holds an eighth of a chunk (8 Ki entries, 512 KiB of names),
//!   so growing to 16 threads adds at most about 11 MiB, not 84.
//!   [`Report::threads`](super::Report::threads) says how many worked at most.
//! - **Errors are counted, not fatal.** A failed entry marks its directory (and so every
//!   ancestor) as not removable, the walk goes on with the rest, and the first error is
//!   returned at the end.
//!
//! Caveats: the contents of a directory are those of the inode opened while it was inside the
//! tree; if someone renames a directory out of the tree while it is being emptied, its
//! remaining entries are still removed (as with `rm -rf`). Hard links are counted once per
//! name. Two removals of the same tree may run at once: entries the other one removed first
//! are skipped (`ENOENT`), a directory found non-empty is rescanned a few times, and when a
//! directory vanishes (or its name is swapped away) before its parent could be reached
//! through it, the walk starts again from the top, at most a few times before reporting
//! [`Error::TreeChanged`]. A directory's descriptor stays open only while some listed
//! subdirectory has yet to be opened relative to it, so a pathological tree (thousands of
//! levels each with several subdirectories) can still need one descriptor per level;
//! running out of descriptors is a transient error.

use std::ffi::{CStr, CString, OsStr};
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, SeekFrom, StatxAttributes, StatxFlags};
use rustix::io::Errno;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::waiting::WaitProbe;
use super::{Counts, Error, OpsLimiter, Outcome, Progress, Report};

/// Flags for opening any directory of the tree: never through a symlink.
pub(crate) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Size of each thread's `getdents64` buffer.
const DIRENT_BUF: usize = 64 * 1024;

/// How many directories a scan collects before handing them to the shared stack.
const CHILD_BATCH: usize = 16;

/// How many entries pass between polls of the cancellation token (it takes a lock).
const CANCEL_POLL: u32 = 32;

/// How often an idle thread wakes to look at the cancellation token.
const IDLE_POLL: Duration = Duration::from_millis(20);

/// How many times a directory found non-empty at removal time is scanned again (another
/// removal of the same tree may still be emptying a subdirectory).
const MAX_RESCANS: u32 = 8;

/// The default of [`RemoveOptions::chunk_entries`]: at most this many entries of one
/// directory are held (and sorted) by one thread at a time.
pub const DEFAULT_CHUNK_ENTRIES: usize = 64 * 1024;

/// A chunk also ends once the names it holds reach this many bytes, so that a directory of
/// long names cannot make a chunk of [`DEFAULT_CHUNK_ENTRIES`] entries take 16 MiB.
const CHUNK_NAME_BYTES: usize = 4 * 1024 * 1024;

/// A thread started because the others were waiting ([`RemoveOptions::max_threads`]) holds
/// this share of a chunk (both caps), so a removal grown to 16 threads holds at most about
/// 2 × 6 + 14 × 0.8 MiB of entries, not 16 × 6. Where threads wait on the storage, the
/// round trips, not the order within a big directory, set the pace.
const GROWN_CHUNK_SHARE: usize = 8;

/// How many entries of a chunk a thread claims at a time (see [`Offered`]): small enough
/// that a helper joins within a millisecond or so, large enough that claiming costs nothing.
const HELP_BLOCK: usize = 64;

/// How many entries are unlinked between two publications of the live progress counters.
const PUBLISH_EVERY: u64 = 1024;

/// How often a removal that may grow ([`RemoveOptions::max_threads`]) looks at how its
/// threads spent their time. Short enough that a removal of a few seconds reaches its
/// cap early; long enough that the look (one `pread` per thread) costs nothing.
pub const GROW_WINDOW: Duration = Duration::from_millis(20);

/// In which order a directory's files and symlinks are unlinked. Subdirectories are queued
/// for the other threads as soon as they are read, in either order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EntryOrder {
    /// Read up to [`RemoveOptions::chunk_entries`] entries, sort them by inode number, unlink
    /// them in that order, then read the next chunk (as GNU `rm` does for a whole
    /// directory). On ext4 this frees inode-table and bitmap blocks in order instead of at
    /// random, which makes a large directory markedly faster; see `benches/README.md`.
    #[default]
    Inode,
    /// Unlink in the order `getdents64` returns the entries (hash order on ext4), one
    /// buffer of about 1,500 names at a time. The engine's order before inode ordering,
    /// kept so that the benchmark can compare the two in one run.
    Directory,
}

/// How [`remove_tree`] runs.
#[derive(Clone, Debug)]
pub struct RemoveOptions {
    /// OS threads the removal works with (at least one; the calling thread is one of them).
    /// The others are started only once there is work for them (see the module docs).
    pub threads: usize,
    /// The most OS threads the removal may grow to while its threads mostly sleep waiting
    /// on the storage (see the module docs). At or below `threads`: exactly `threads`.
    pub max_threads: usize,
    /// Count the bytes of regular files (one `statx` per file before unlinking it).
    pub count_bytes: bool,
    /// The folder being removed, named in errors.
    pub folder: Option<Uuid>,
    /// The tree root's path relative to the volume root, the prefix of every path in errors.
    pub display_path: PathBuf,
    /// The volume's operations-per-second limit, shared with every other removal on it;
    /// waited on before each unlink and rmdir. `None`: unlimited.
    pub limiter: Option<Arc<OpsLimiter>>,
    /// The order in which a directory's entries are unlinked; [`EntryOrder::Inode`] unless
    /// a benchmark asks otherwise.
    pub order: EntryOrder,
    /// The memory cap of [`EntryOrder::Inode`]: the most entries of one directory a thread
    /// reads (and sorts) before unlinking them ([`DEFAULT_CHUNK_ENTRIES`]; 0 counts as 1).
    /// A larger directory is removed in several chunks, each sorted on its own.
    pub chunk_entries: usize,
}

impl Default for RemoveOptions {
    /// One thread that never grows, no byte counting, no rate limit, inode order in chunks
    /// of [`DEFAULT_CHUNK_ENTRIES`], no folder and an empty display path.
    fn default() -> Self {
        RemoveOptions {
            threads: 1,
            max_threads: 1,
            count_bytes: false,
            folder: None,
            display_path: PathBuf::new(),
            limiter: None,
            order: EntryOrder::default(),
            chunk_entries: DEFAULT_CHUNK_ENTRIES,
        }
    }
}

/// Removes the directory `name` inside the directory `parent`, with everything in it.
///
/// Blocking: run it on a dedicated thread (`spawn_blocking`). `name` is one path component.
/// A missing `name` is success with zero counts; a `name` that is a symlink or not a
/// directory is [`Error::UnsafePath`] and is left alone. See the module docs for the
/// guarantees. The benchmark binary may call this directly on any directory.
pub fn remove_tree(
    parent: BorrowedFd<'_>,
    name: &CStr,
    opts: &RemoveOptions,
    cancel: &CancellationToken,
    progress: &Progress,
) -> Result<Outcome, Error> {
    let started = Instant::now();
    let mut report = Report::nothing();
    for _ in 0..MAX_PASSES {
        let (pass, end) = run_pass(parent, name, opts, cancel, progress)?;
        report.absorb(&pass);
        match end {
            PassEnd::Completed => return Ok(Outcome::Completed(report.since(started))),
            PassEnd::Cancelled => return Ok(Outcome::Cancelled(report.since(started))),
            PassEnd::Restart => {}
        }
    }
    Err(Error::TreeChanged {
        folder: opts.folder,
        path: opts.display_path.clone(),
    })
}

/// How many times the walk starts again from the top after directories vanished under it.
const MAX_PASSES: usize = 8;

/// How one walk over the tree ended (errors aside).
enum PassEnd {
    Completed,
    Cancelled,
    /// Directories vanished under the walk (another removal of the same tree got to them
    /// first), so some ancestors could not be reached: walk again from the top.
    Restart,
}

fn run_pass(
    parent: BorrowedFd<'_>,
    name: &CStr,
    opts: &RemoveOptions,
    cancel: &CancellationToken,
    progress: &Progress,
) -> Result<(Report, PassEnd), Error> {
    let io = |op, source| Error::Io {
        folder: opts.folder,
        op,
        path: opts.display_path.clone(),
        source,
    };
    let parent_ident = ident(parent).map_err(|e| io("stat parent of", e))?;
    let root_fd = match rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => {
            return Ok((Report::nothing(), PassEnd::Completed));
        }
        Err(Errno::LOOP | Errno::NOTDIR) => {
            return Err(Error::UnsafePath {
                folder: opts.folder,
                path: opts.display_path.clone(),
                reason: "the folder path is a symlink or not a directory",
            });
        }
        Err(e) => return Err(io("open", e)),
    };
    let root_ident = ident(root_fd.as_fd()).map_err(|e| io("stat", e))?;
    if root_ident.mount_root || root_ident.dev != parent_ident.dev {
        return Err(Error::MountInsideTree {
            folder: opts.folder,
            path: opts.display_path.clone(),
        });
    }
    let root = Node::new(None, name.to_owned(), root_ident);
    let root_fd = Arc::new(root_fd);
    *lock(&root.fd) = Some(root_fd.clone());
    let threads = opts.threads.max(1);
    let max_threads = opts.max_threads.max(threads);
    let shared = Shared {
        opts,
        cancel,
        progress,
        grows: max_threads > threads && opts.limiter.is_none(),
        tids: Mutex::new(Vec::new()),
        idle_ns: AtomicU64::new(0),
        idle: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        root_dev: root_ident.dev,
        root_parent: parent_ident,
        queue: Mutex::new(Queue {
            work: vec![Work::Scan(root, root_fd)],
            active: 0,
            offers: 0,
            finished: false,
        }),
        wake: Condvar::new(),
        errors: AtomicU64::new(0),
        helped: AtomicU64::new(0),
        first_error: Mutex::new(None),
        root_done: AtomicBool::new(false),
        restart: AtomicBool::new(false),
    };
    let pass = std::thread::scope(|scope| {
        let mut crew = Crew::new(scope, &shared, threads, max_threads);
        let mut tick = |at: Moment<'_>| crew.tick(at);
        let starts: Option<&mut dyn FnMut(Moment<'_>)> = (max_threads > 1).then_some(&mut tick);
        let mut counts = Worker::new(&shared, starts, false).run();
        let threads = crew.threads();
        counts.add(&crew.join());
        Report {
            counts,
            elapsed: Duration::ZERO,
            threads,
            helped: shared.helped.load(Ordering::Relaxed),
        }
    });
    progress.add_errors(shared.errors.load(Ordering::Relaxed));
    if let Some(err) = lock(&shared.first_error).take() {
        return Err(err);
    }
    let end = if shared.root_done.load(Ordering::Acquire) {
        PassEnd::Completed
    } else if shared.restart.load(Ordering::Acquire) {
        PassEnd::Restart
    } else {
        // The only other way for the root to stay is a cancelled walk.
        PassEnd::Cancelled
    };
    Ok((pass, end))
}

/// The helper threads of one pass, started and joined by the calling thread, which decides
/// (in [`Crew::tick`], between its own entries) when to start them and whether to start more.
struct Crew<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    shared: &'env Shared<'env>,
    helpers: Vec<ScopedJoinHandle<'scope, Counts>>,
    /// [`RemoveOptions::threads`]: started as soon as there is work for them.
    base: usize,
    max: usize,
    /// Created at the first look, so a removal shorter than a window never reads `/proc`.
    probe: Option<WaitProbe>,
    /// How many of `Shared::tids` the probe watches already.
    watching: usize,
    next_look: Instant,
}

impl<'scope, 'env> Crew<'scope, 'env> {
    fn new(
        scope: &'scope Scope<'scope, 'env>,
        shared: &'env Shared<'env>,
        base: usize,
        max: usize,
    ) -> Self {
        Crew {
            scope,
            shared,
            helpers: Vec::new(),
            base,
            max,
            probe: None,
            watching: 0,
            next_look: Instant::now() + GROW_WINDOW,
        }
    }

    /// The threads started so far, the caller included. Every one works until the pass
    /// ends, so this is also the most that worked at once.
    fn threads(&self) -> usize {
        self.helpers.len() + 1
    }

    /// Starts up to `n` more helpers, never beyond the cap.
    fn start(&mut self, n: usize) {
        for _ in 0..n.min(self.max.saturating_sub(self.threads())) {
            let shared = self.shared;
            let grown = self.threads() >= shared.opts.threads.max(1);
            let spawned = std::thread::Builder::new()
                .name(format!("remove-{}", self.threads()))
                .spawn_scoped(self.scope, move || Worker::new(shared, None, grown).run());
            match spawned {
                Ok(handle) => self.helpers.push(handle),
                // Fewer threads is slower, not wrong.
                Err(_) => break,
            }
        }
    }

    /// Starts the other [`RemoveOptions::threads`] the first time there is work for them
    /// (a small folder never pays for threads it cannot use). Then, if the pass grows, once
    /// per [`GROW_WINDOW`]: starts more helpers if the threads slept more than half of the
    /// window (idle waits for work aside) while directories were waiting for a thread. A
    /// thread is judged from its first whole window on.
    fn tick(&mut self, at: Moment<'_>) {
        if self.threads() < self.base {
            if self.work_to_share(at) {
                self.start(self.base - self.threads());
            }
            return;
        }
        if !self.shared.grows {
            return;
        }
        let now = Instant::now();
        if now < self.next_look {
            return;
        }
        self.next_look = now + GROW_WINDOW;
        let probe = self.probe.get_or_insert_with(WaitProbe::new);
        {
            let tids = lock(&self.shared.tids);
            for tid in tids.iter().skip(self.watching) {
                probe.watch(*tid);
            }
            self.watching = tids.len();
        }
        let window = probe.sample();
        let idle = Duration::from_nanos(self.shared.idle_ns.swap(0, Ordering::Relaxed));
        if window.threads == 0 || self.threads() >= self.max {
            return;
        }
        let waiting = lock(&self.shared.queue).work.len();
        let asleep = window.slept.saturating_sub(idle);
        let total = window
            .length
            .saturating_mul(u32::try_from(window.threads).unwrap_or(u32::MAX));
        if waiting > 0 && asleep * 2 > total {
            self.start(waiting.min(self.threads()));
        }
    }

    /// Whether another thread could take work now: blocks of the calling thread's chunk
    /// nobody has claimed, or a queued directory that the calling thread is not about to
    /// take itself. Only the calling thread queues work until the helpers start.
    fn work_to_share(&self, at: Moment<'_>) -> bool {
        let taken_by_caller = match at {
            Moment::InChunk(offered) if offered.blocks_left() > 0 => return true,
            Moment::InChunk(_) | Moment::Busy => 0,
            Moment::BetweenItems => 1,
        };
        lock(&self.shared.queue).work.len() > taken_by_caller
    }

    /// Waits for every helper and sums what they removed.
    fn join(&mut self) -> Counts {
        let mut total = Counts::default();
        for h in self.helpers.drain(..) {
            // A panicking helper is a bug; its counts are lost but the others stand.
            if let Ok(c) = h.join() {
                total.add(&c);
            }
        }
        total
    }
}

/// Device and inode of an open directory, and whether it is the root of a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ident {
    pub dev: (u32, u32),
    pub ino: u64,
    pub mount_root: bool,
}

/// Identifies an open file with `statx`.
pub(crate) fn ident(fd: BorrowedFd<'_>) -> Result<Ident, Errno> {
    let st = rustix::fs::statx(
        fd,
        c"",
        AtFlags::EMPTY_PATH,
        StatxFlags::TYPE | StatxFlags::INO,
    )?;
    Ok(Ident {
        dev: (st.stx_dev_major, st.stx_dev_minor),
        ino: st.stx_ino,
        // Kernels before 5.8 do not report the attribute; the device check still applies.
        mount_root: st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
            && st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT),
    })
}

/// A directory that has been opened and not yet removed.
struct Node {
    parent: Option<Arc<Node>>,
    name: CString,
    ident: Ident,
    /// Unfinished work under this directory: its own scan plus each listed subdirectory.
    /// Whoever brings it to zero removes the directory.
    pending: AtomicUsize,
    /// Its own scan plus listed subdirectories not yet opened; `fd` is dropped at zero.
    unopened: AtomicUsize,
    /// Kept while children still need to open themselves relative to it.
    fd: Mutex<Option<Arc<OwnedFd>>>,
    /// Something below could not be removed, so this directory cannot be either.
    failed: AtomicBool,
    rescans: AtomicU32,
}

impl Node {
    fn new(parent: Option<Arc<Node>>, name: CString, ident: Ident) -> Arc<Node> {
        Arc::new(Node {
            parent,
            name,
            ident,
            pending: AtomicUsize::new(1),
            unopened: AtomicUsize::new(1),
            fd: Mutex::new(None),
            failed: AtomicBool::new(false),
            rescans: AtomicU32::new(0),
        })
    }

    /// Adds `n` units of work that keep this directory both unfinished and open: listed
    /// subdirectories not yet opened, or threads helping with one of its chunks.
    fn hold(&self, n: usize) {
        self.pending.fetch_add(n, Ordering::AcqRel);
        self.unopened.fetch_add(n, Ordering::AcqRel);
    }

    /// Ends one unit of "unopened" work; the last one closes the directory's descriptor.
    fn release_unopened(&self) {
        if self.unopened.fetch_sub(1, Ordering::AcqRel) == 1 {
            *lock(&self.fd) = None;
        }
    }

    /// Marks this directory as not removable; [`Worker::finish`] passes it on upwards.
    fn poison(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// The path of `child` (or of this directory) relative to the volume root.
    fn path(&self, base: &std::path::Path, child: Option<&CStr>) -> PathBuf {
        let mut names: Vec<&CStr> = child.into_iter().collect();
        let mut n = self;
        while let Some(p) = &n.parent {
            names.push(&n.name);
            n = p;
        }
        let mut path = base.to_path_buf();
        for name in names.iter().rev() {
            path.push(OsStr::from_bytes(name.to_bytes()));
        }
        path
    }
}

enum Work {
    /// Open the subdirectory `name` of `parent`, then scan it.
    Open { parent: Arc<Node>, name: CString },
    /// Scan an already opened directory (the tree root).
    Scan(Arc<Node>, Arc<OwnedFd>),
    /// Help unlink another thread's chunk (see [`Offered`]).
    Help(Arc<Offered>),
}

struct Queue {
    work: Vec<Work>,
    /// Threads currently holding a work item (which may produce more).
    active: usize,
    /// [`Work::Help`] items in `work` (see [`Worker::offer_help`]).
    offers: usize,
    finished: bool,
}

struct Shared<'a> {
    opts: &'a RemoveOptions,
    cancel: &'a CancellationToken,
    progress: &'a Progress,
    /// The pass may start more threads ([`Crew::tick`]).
    grows: bool,
    /// The thread ids of the workers, for the probe (only when the pass `grows`).
    tids: Mutex<Vec<rustix::thread::Pid>>,
    /// Nanoseconds the workers spent waiting for work since the last look (when `grows`).
    idle_ns: AtomicU64,
    /// Workers waiting for work right now: a thread unlinking a big chunk offers them a
    /// share of it.
    idle: AtomicUsize,
    stop: AtomicBool,
    root_dev: (u32, u32),
    root_parent: Ident,
    queue: Mutex<Queue>,
    wake: Condvar,
    errors: AtomicU64,
    /// Files and symlinks unlinked by threads helping with another thread's chunk.
    helped: AtomicU64,
    first_error: Mutex<Option<Error>>,
    root_done: AtomicBool,
    /// A directory vanished before its parent could be reached through it.
    restart: AtomicBool,
}

impl Shared<'_> {
    fn record(&self, err: Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        lock(&self.first_error).get_or_insert(err);
    }

    fn io_error(&self, node: &Node, op: &'static str, child: Option<&CStr>, source: Errno) {
        self.record(Error::Io {
            folder: self.opts.folder,
            op,
            path: node.path(&self.opts.display_path, child),
            source,
        });
    }

    fn cancelled(&self) -> bool {
        if self.cancel.is_cancelled() {
            self.stop.store(true, Ordering::Relaxed);
        }
        self.stop.load(Ordering::Relaxed)
    }
}

/// Where a directory's removal ended.
enum Removed {
    /// Removed by us (`true`) or already gone (`false`); here is its parent, opened
    /// through `..` and verified.
    Done(OwnedFd, bool),
    /// Still has entries: scan it again.
    NotEmpty,
    /// Could not be removed: an error is recorded, or the walk must restart from the top.
    Failed,
}

/// One listed file, symlink or entry of unknown type, waiting in a [`Chunk`].
struct Listed {
    ino: u64,
    /// Its name in [`Chunk::names`], with the terminating NUL.
    name: std::ops::Range<usize>,
    ty: FileType,
}

/// How much of one directory a thread holds at a time: entries and bytes of names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ChunkCap {
    entries: usize,
    name_bytes: usize,
}

impl ChunkCap {
    /// The cap of a thread of a removal run with `opts`; a `grown` thread (started beyond
    /// [`RemoveOptions::threads`]) gets [`GROWN_CHUNK_SHARE`] of it.
    fn of(opts: &RemoveOptions, grown: bool) -> ChunkCap {
        let entries = match opts.order {
            EntryOrder::Inode => opts.chunk_entries.max(1),
            // A chunk ends with its getdents buffer; never earlier.
            EntryOrder::Directory => usize::MAX,
        };
        let share = if grown { GROWN_CHUNK_SHARE } else { 1 };
        ChunkCap {
            entries: (entries / share).max(1),
            name_bytes: CHUNK_NAME_BYTES / share,
        }
    }
}

/// The non-directory entries of one directory read so far and not yet unlinked: at most
/// [`RemoveOptions::chunk_entries`] of them and about [`CHUNK_NAME_BYTES`] of names (less
/// on a thread the removal grew by, see [`ChunkCap`]). The
/// names share one buffer, so a chunk costs 32 bytes per entry plus its name, and no
/// allocation per entry; the buffers are kept (cleared) for the thread's next directory.
#[derive(Default)]
struct Chunk {
    entries: Vec<Listed>,
    names: Vec<u8>,
}

impl Chunk {
    fn push(&mut self, ino: u64, name: &CStr, ty: FileType) {
        let start = self.names.len();
        self.names.extend_from_slice(name.to_bytes_with_nul());
        self.entries.push(Listed {
            ino,
            name: start..self.names.len(),
            ty,
        });
    }

    fn is_full(&self, cap: ChunkCap) -> bool {
        self.entries.len() >= cap.entries || self.names.len() >= cap.name_bytes
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.names.clear();
    }

    fn name(&self, e: &Listed) -> Option<&CStr> {
        // Always `Some`: each range is one name copied with its NUL, and a directory entry's
        // name has no other NUL in it.
        self.names
            .get(e.name.clone())
            .and_then(|bytes| CStr::from_bytes_with_nul(bytes).ok())
    }
}

/// A sorted chunk being unlinked, in blocks of [`HELP_BLOCK`] entries claimed in order by
/// the thread that read it and by threads that had nothing else to do ([`Work::Help`]).
/// Unlinks in one directory queue for its lock, but the rest of each one (freeing the
/// inode and its blocks) runs beside the next, so two threads empty a big directory of
/// small files faster than one (`benches/README.md`). Every unlink is relative to the same
/// descriptor, opened `O_NOFOLLOW` inside the tree, whichever thread makes it.
struct Offered {
    node: Arc<Node>,
    fd: Arc<OwnedFd>,
    chunk: Chunk,
    /// The first entry of the next block nobody has claimed.
    next: AtomicUsize,
}

impl Offered {
    /// Claims the next block of entries, if any is left.
    fn claim(&self) -> Option<std::ops::Range<usize>> {
        let len = self.chunk.entries.len();
        let start = self.next.fetch_add(HELP_BLOCK, Ordering::Relaxed);
        (start < len).then(|| start..len.min(start + HELP_BLOCK))
    }

    /// Blocks nobody has claimed yet.
    fn blocks_left(&self) -> usize {
        let len = self.chunk.entries.len();
        len.saturating_sub(self.next.load(Ordering::Relaxed))
            .div_ceil(HELP_BLOCK)
    }
}

/// Where the calling thread is when it looks whether to start threads ([`Crew::tick`]).
#[derive(Clone, Copy)]
enum Moment<'o> {
    /// In the middle of a work item, so any queued directory is left for others.
    Busy,
    /// Unlinking this chunk (busy too): its blocks nobody has claimed are work to share.
    InChunk(&'o Offered),
    /// Done with a work item: it takes the next queued one itself.
    BetweenItems,
}

/// One thread's state: its `getdents` buffer, the chunk of entries it is removing, counts
/// not yet published, and directories found but not yet handed to the shared stack.
struct Worker<'s, 'a> {
    shared: &'s Shared<'a>,
    /// On the thread that starts the others ([`Crew::tick`]): called between entries.
    starts: Option<&'s mut dyn FnMut(Moment<'_>)>,
    cap: ChunkCap,
    buf: Vec<MaybeUninit<u8>>,
    chunk: Chunk,
    unpublished: Counts,
    total: Counts,
    children: Vec<Work>,
    until_poll: u32,
}

impl<'s, 'a> Worker<'s, 'a> {
    /// `grown`: started beyond [`RemoveOptions::threads`], so it holds a smaller chunk.
    fn new(
        shared: &'s Shared<'a>,
        starts: Option<&'s mut dyn FnMut(Moment<'_>)>,
        grown: bool,
    ) -> Self {
        shared.progress.thread_working(true);
        Worker {
            shared,
            starts,
            cap: ChunkCap::of(shared.opts, grown),
            buf: vec![MaybeUninit::uninit(); DIRENT_BUF],
            chunk: Chunk::default(),
            unpublished: Counts::default(),
            total: Counts::default(),
            children: Vec::with_capacity(CHILD_BATCH),
            until_poll: 0,
        }
    }

    fn run(mut self) -> Counts {
        if self.shared.grows {
            lock(&self.shared.tids).push(rustix::thread::gettid());
        }
        while let Some(work) = self.next_work() {
            let mut next = match work {
                Work::Open { parent, name } => self.open_child(&parent, &name),
                Work::Scan(node, fd) => Some((node, fd)),
                Work::Help(offered) => self.help(&offered),
            };
            while let Some((node, fd)) = next {
                next = self.scan(node, fd);
            }
            self.hand_over_children();
            self.publish();
            self.tick(Moment::BetweenItems);
            let mut q = lock(&self.shared.queue);
            q.active -= 1;
            if q.active == 0 && q.work.is_empty() {
                q.finished = true;
                self.shared.wake.notify_all();
            }
        }
        self.publish();
        mem::take(&mut self.total)
    }

    fn next_work(&mut self) -> Option<Work> {
        let mut q = lock(&self.shared.queue);
        loop {
            if q.finished || self.shared.cancelled() {
                self.shared.wake.notify_all();
                return None;
            }
            if let Some(w) = q.work.pop() {
                q.active += 1;
                if matches!(w, Work::Help(_)) {
                    q.offers -= 1;
                }
                return Some(w);
            }
            if q.active == 0 {
                q.finished = true;
                continue;
            }
            let idle_from = self.shared.grows.then(Instant::now);
            self.shared.idle.fetch_add(1, Ordering::Relaxed);
            q = self
                .shared
                .wake
                .wait_timeout(q, IDLE_POLL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            self.shared.idle.fetch_sub(1, Ordering::Relaxed);
            if let Some(from) = idle_from {
                let ns = u64::try_from(from.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.shared.idle_ns.fetch_add(ns, Ordering::Relaxed);
            }
        }
    }

    /// Lets the thread that starts the others look whether it should.
    fn tick(&mut self, at: Moment<'_>) {
        if let Some(starts) = self.starts.as_mut() {
            starts(at);
        }
    }

    fn should_stop(&mut self) -> bool {
        if self.until_poll == 0 {
            self.until_poll = CANCEL_POLL;
            return self.shared.cancelled();
        }
        self.until_poll -= 1;
        self.shared.stop.load(Ordering::Relaxed)
    }

    fn hand_over_children(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut q = lock(&self.shared.queue);
        let n = self.children.len();
        q.work.append(&mut self.children);
        drop(q);
        if n == 1 {
            self.shared.wake.notify_one();
        } else {
            self.shared.wake.notify_all();
        }
    }

    /// Files and symlinks this thread has unlinked so far.
    fn removed_entries(&self) -> u64 {
        let (t, u) = (&self.total, &self.unpublished);
        t.files + t.symlinks + u.files + u.symlinks
    }

    fn publish(&mut self) {
        let c = mem::take(&mut self.unpublished);
        if c != Counts::default() {
            self.shared.progress.add(&c);
            self.total.add(&c);
        }
    }

    /// Opens a listed subdirectory relative to its parent's descriptor. Returns it for
    /// scanning, or handles whatever it turned out to be.
    fn open_child(&mut self, parent: &Arc<Node>, name: &CStr) -> Option<(Arc<Node>, Arc<OwnedFd>)> {
        let parent_fd = lock(&parent.fd).clone();
        let result = match &parent_fd {
            // Cannot happen: `unopened` counts this child, so the parent keeps its fd.
            None => Err(Errno::BADF),
            Some(pfd) => rustix::fs::openat(pfd.as_fd(), name, DIR_FLAGS, Mode::empty()),
        };
        let mut child = None;
        match result {
            Ok(fd) => match ident(fd.as_fd()) {
                Ok(id) if id.mount_root || id.dev != self.shared.root_dev => {
                    self.shared.record(Error::MountInsideTree {
                        folder: self.shared.opts.folder,
                        path: parent.path(&self.shared.opts.display_path, Some(name)),
                    });
                    parent.poison();
                }
                Ok(id) => {
                    let node = Node::new(Some(parent.clone()), name.to_owned(), id);
                    let fd = Arc::new(fd);
                    *lock(&node.fd) = Some(fd.clone());
                    child = Some((node, fd));
                }
                Err(e) => {
                    self.shared.io_error(parent, "stat", Some(name), e);
                    parent.poison();
                }
            },
            Err(Errno::NOENT) => {}
            // Replaced by a symlink or a file since it was listed: remove that name instead.
            // (With O_NOFOLLOW | O_DIRECTORY a symlink gives either errno; look again.)
            Err(Errno::LOOP | Errno::NOTDIR) => {
                if let Some(pfd) = &parent_fd {
                    self.entry(parent, pfd.as_fd(), name, FileType::Unknown);
                }
            }
            Err(e) => {
                self.shared.io_error(parent, "open", Some(name), e);
                parent.poison();
            }
        }
        parent.release_unopened();
        if child.is_some() {
            return child;
        }
        // This child is finished without a scan; it may have been the parent's last.
        if parent.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            return self.finish(parent.clone(), parent_fd);
        }
        None
    }

    /// Reads `node` and removes its non-directory entries; subdirectories go to the shared
    /// stack. Returns a directory to scan again, if one turned out not empty.
    ///
    /// The directory is read in chunks (see [`EntryOrder`]): subdirectories are queued as
    /// they are read, so other threads can start on them at once; files and symlinks are
    /// collected until the chunk is full (or, in directory order, until the `getdents64`
    /// buffer is used up), then unlinked, then the next chunk is read from where the last
    /// one stopped.
    ///
    /// Reading on after unlinking: the directory's file offset advances past every entry
    /// returned, and removing entries that were already returned does not make ext4 (hash
    /// cookies), XFS, btrfs (index numbers) or tmpfs (stable offsets) skip or repeat the
    /// ones not yet returned; it is what `rm -rf` and rmz do too. Should some filesystem
    /// (an NFS server reusing cookies, say) skip entries anyway, nothing is lost: the
    /// directory is then not empty when its removal is tried, and [`Worker::finish`]
    /// rewinds it to offset 0 and scans it again (at most [`MAX_RESCANS`] times).
    fn scan(&mut self, node: Arc<Node>, fd: Arc<OwnedFd>) -> Option<(Arc<Node>, Arc<OwnedFd>)> {
        let mut buf = mem::take(&mut self.buf);
        let mut chunk = mem::take(&mut self.chunk);
        let order = self.shared.opts.order;
        let mut stopped = false;
        {
            let mut dir = RawDir::new(fd.as_fd(), &mut buf);
            let mut at_end = false;
            while !at_end && !stopped {
                chunk.clear();
                // Read one chunk.
                loop {
                    let entry = match dir.next() {
                        None => {
                            at_end = true;
                            break;
                        }
                        Some(Ok(e)) => e,
                        // Removed by someone else while we read it: nothing left to read.
                        Some(Err(Errno::NOENT)) => {
                            at_end = true;
                            break;
                        }
                        Some(Err(e)) => {
                            self.shared.io_error(&node, "read directory", None, e);
                            node.poison();
                            at_end = true;
                            break;
                        }
                    };
                    let name = entry.file_name();
                    if name != c"." && name != c".." {
                        if entry.file_type() == FileType::Directory {
                            if self.should_stop() {
                                stopped = true;
                                break;
                            }
                            self.push_child(&node, name);
                            if self.children.len() >= CHILD_BATCH {
                                self.hand_over_children();
                                self.tick(Moment::Busy);
                            }
                        } else {
                            chunk.push(entry.ino(), name, entry.file_type());
                        }
                    }
                    if chunk.is_full(self.cap)
                        || (order == EntryOrder::Directory && dir.is_buffer_empty())
                    {
                        break;
                    }
                }
                // Other threads may work on the subdirectories while this one unlinks.
                self.hand_over_children();
                if order == EntryOrder::Inode {
                    chunk.entries.sort_unstable_by_key(|e| e.ino);
                }
                // Unlink it; threads with nothing else to do may help (see `Offered`).
                if !stopped {
                    let offered = Arc::new(Offered {
                        node: node.clone(),
                        fd: fd.clone(),
                        chunk: mem::take(&mut chunk),
                        next: AtomicUsize::new(0),
                    });
                    stopped = !self.unlink_offered(&offered);
                    // Its buffers come back for the next chunk unless a helper still holds it.
                    chunk = Arc::try_unwrap(offered).map_or_else(|_| Chunk::default(), |o| o.chunk);
                }
                self.hand_over_children();
                self.publish();
            }
        }
        chunk.clear();
        self.chunk = chunk;
        self.buf = buf;
        if stopped {
            return None;
        }
        self.release(node, fd)
    }

    /// Ends this thread's scan of (or help with) `node`, open as `fd`: the last unit of
    /// work in it removes the directory. Returns a directory to scan again, if one turned
    /// out not empty.
    fn release(&mut self, node: Arc<Node>, fd: Arc<OwnedFd>) -> Option<(Arc<Node>, Arc<OwnedFd>)> {
        node.release_unopened();
        if node.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            return self.finish(node, Some(fd));
        }
        None
    }

    /// Unlinks blocks of `offered` until none is left to claim, offering idle threads a
    /// share as it goes. `false` when the removal was stopped meanwhile.
    fn unlink_offered(&mut self, offered: &Arc<Offered>) -> bool {
        let fd = offered.fd.as_fd();
        while let Some(block) = offered.claim() {
            self.offer_help(offered);
            for listed in &offered.chunk.entries[block] {
                if self.should_stop() {
                    return false;
                }
                if let Some(name) = offered.chunk.name(listed) {
                    self.entry(&offered.node, fd, name, listed.ty);
                }
                self.tick(Moment::InChunk(offered));
            }
            if self.children.len() >= CHILD_BATCH
                || self.unpublished.files + self.unpublished.symlinks >= PUBLISH_EVERY
            {
                self.hand_over_children();
                self.publish();
            }
        }
        true
    }

    /// Puts one help offer on the shared stack for each thread waiting for work that no
    /// offer is waiting for yet, while `offered` has blocks nobody has claimed. Offers not
    /// yet taken are counted, so at most one chunk per thread is kept alive by them.
    fn offer_help(&mut self, offered: &Arc<Offered>) {
        let idle = self.shared.idle.load(Ordering::Relaxed);
        if idle == 0 {
            return;
        }
        let mut q = lock(&self.shared.queue);
        let n = idle.saturating_sub(q.offers).min(offered.blocks_left());
        if n == 0 {
            return;
        }
        // A helper keeps the directory open and unfinished, as a scan of it does.
        offered.node.hold(n);
        q.offers += n;
        q.work.extend((0..n).map(|_| Work::Help(offered.clone())));
        drop(q);
        self.shared.wake.notify_all();
    }

    /// Works on another thread's chunk until every block is claimed, then ends the
    /// helper's share of the directory (which may be the last unfinished work in it).
    fn help(&mut self, offered: &Arc<Offered>) -> Option<(Arc<Node>, Arc<OwnedFd>)> {
        let before = self.removed_entries();
        if !self.unlink_offered(offered) {
            return None;
        }
        self.hand_over_children();
        self.publish();
        let helped = self.removed_entries() - before;
        self.shared.helped.fetch_add(helped, Ordering::Relaxed);
        self.release(offered.node.clone(), offered.fd.clone())
    }

    fn entry(&mut self, node: &Arc<Node>, fd: BorrowedFd<'_>, name: &CStr, ty: FileType) {
        let ty = if ty == FileType::Unknown {
            match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(Errno::NOENT) => return,
                Err(e) => {
                    self.shared.io_error(node, "stat", Some(name), e);
                    node.poison();
                    return;
                }
            }
        } else {
            ty
        };
        if ty == FileType::Directory {
            self.push_child(node, name);
        } else {
            self.unlink(node, fd, name, ty);
        }
    }

    fn push_child(&mut self, node: &Arc<Node>, name: &CStr) {
        node.hold(1);
        self.children.push(Work::Open {
            parent: node.clone(),
            name: name.to_owned(),
        });
    }

    /// Waits for the volume's rate limit, if it has one. `false` when the removal was
    /// cancelled while waiting.
    fn throttle(&self) -> bool {
        match &self.shared.opts.limiter {
            None => true,
            Some(limiter) => limiter.acquire(|| self.shared.cancelled()),
        }
    }

    /// Unlinks one non-directory name (never following it).
    fn unlink(&mut self, node: &Arc<Node>, fd: BorrowedFd<'_>, name: &CStr, ty: FileType) {
        let bytes = if self.shared.opts.count_bytes && ty == FileType::RegularFile {
            // A size we cannot read is not worth failing the removal over.
            rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)
                .map_or(0, |st| u64::try_from(st.st_size).unwrap_or(0))
        } else {
            0
        };
        if !self.throttle() {
            // Cancelled while waiting: the entry stays for the next attempt.
            return;
        }
        match rustix::fs::unlinkat(fd, name, AtFlags::empty()) {
            Ok(()) => {
                if ty == FileType::Symlink {
                    self.unpublished.symlinks += 1;
                } else {
                    self.unpublished.files += 1;
                }
                self.unpublished.bytes += bytes;
            }
            Err(Errno::NOENT) => {}
            // Became a directory since it was listed.
            Err(Errno::ISDIR) => self.push_child(node, name),
            Err(e) => {
                self.shared.io_error(node, "unlink", Some(name), e);
                node.poison();
            }
        }
    }

    /// `node` has no unfinished work left: remove it from its parent, then finish every
    /// ancestor this was the last child of. `fd` is the node's own descriptor, absent only
    /// when the node is poisoned (then it is not needed).
    fn finish(
        &mut self,
        mut node: Arc<Node>,
        mut fd: Option<Arc<OwnedFd>>,
    ) -> Option<(Arc<Node>, Arc<OwnedFd>)> {
        loop {
            let mut parent_fd = None;
            let removed = match (&fd, node.failed.load(Ordering::Acquire)) {
                (Some(own), false) => self.remove_dir(&node, own.as_fd()),
                _ => Removed::Failed,
            };
            match removed {
                Removed::Done(pfd, counted) => {
                    if counted {
                        self.unpublished.dirs += 1;
                    }
                    parent_fd = Some(Arc::new(pfd));
                }
                Removed::NotEmpty => {
                    if let Some(own) = fd.take() {
                        if node.rescans.fetch_add(1, Ordering::Relaxed) < MAX_RESCANS
                            && !self.shared.cancelled()
                            && rustix::fs::seek(own.as_fd(), SeekFrom::Start(0)).is_ok()
                        {
                            node.pending.store(1, Ordering::Release);
                            node.unopened.store(1, Ordering::Release);
                            *lock(&node.fd) = Some(own.clone());
                            return Some((node, own));
                        }
                    }
                    if !self.shared.cancelled() {
                        self.shared
                            .io_error(&node, "remove directory", None, Errno::NOTEMPTY);
                    }
                    node.poison();
                }
                Removed::Failed => node.poison(),
            }
            let Some(parent) = node.parent.clone() else {
                if !node.failed.load(Ordering::Acquire) {
                    self.shared.root_done.store(true, Ordering::Release);
                }
                return None;
            };
            if node.failed.load(Ordering::Acquire) {
                parent.poison();
            }
            if parent.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
                return None;
            }
            node = parent;
            fd = parent_fd;
        }
    }

    /// Removes the empty directory `node` (open as `own`) from its verified parent.
    fn remove_dir(&mut self, node: &Node, own: BorrowedFd<'_>) -> Removed {
        let parent = match rustix::fs::openat(own, c"..", DIR_FLAGS, Mode::empty()) {
            Ok(p) => p,
            // The directory was removed by someone else (a concurrent removal of the same
            // tree); its parent is unreachable from here, so the next pass will finish it.
            Err(Errno::NOENT) => {
                self.shared.restart.store(true, Ordering::Relaxed);
                return Removed::Failed;
            }
            Err(e) => {
                self.shared.io_error(node, "open parent of", None, e);
                return Removed::Failed;
            }
        };
        let expected = node
            .parent
            .as_ref()
            .map_or(self.shared.root_parent, |p| p.ident);
        match ident(parent.as_fd()) {
            Ok(id) if id.dev == expected.dev && id.ino == expected.ino => {}
            Ok(_) => {
                self.shared.record(Error::TreeChanged {
                    folder: self.shared.opts.folder,
                    path: node.path(&self.shared.opts.display_path, None),
                });
                return Removed::Failed;
            }
            Err(e) => {
                self.shared.io_error(node, "stat parent of", None, e);
                return Removed::Failed;
            }
        }
        if !self.throttle() {
            // Cancelled while waiting; nothing is recorded (cancellation is not an error).
            return Removed::Failed;
        }
        match rustix::fs::unlinkat(parent.as_fd(), &node.name, AtFlags::REMOVEDIR) {
            Ok(()) => Removed::Done(parent, true),
            Err(Errno::NOENT) => Removed::Done(parent, false),
            Err(Errno::NOTEMPTY | Errno::EXIST) => Removed::NotEmpty,
            // The name now belongs to something else (it was swapped for a symlink or a
            // file); our directory lives on under another name, which the next pass finds.
            Err(Errno::NOTDIR) => {
                self.shared.restart.store(true, Ordering::Relaxed);
                Removed::Failed
            }
            Err(e) => {
                self.shared.io_error(node, "remove directory", None, e);
                Removed::Failed
            }
        }
    }
}

impl Drop for Worker<'_, '_> {
    /// Also when the thread unwinds: `Progress::threads` counts only threads at work.
    fn drop(&mut self) {
        self.shared.progress.thread_working(false);
    }
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves consistent state.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_gives_back_every_name_with_its_type_in_inode_order_once_sorted() {
        let mut chunk = Chunk::default();
        chunk.push(30, c"c", FileType::RegularFile);
        chunk.push(10, c"a\xff", FileType::Symlink);
        chunk.push(20, c"b", FileType::Unknown);
        chunk.entries.sort_unstable_by_key(|e| e.ino);
        let got: Vec<_> = chunk
            .entries
            .iter()
            .map(|e| (e.ino, chunk.name(e).map(CStr::to_owned), e.ty))
            .collect();
        assert_eq!(
            got,
            [
                (10, Some(c"a\xff".to_owned()), FileType::Symlink),
                (20, Some(c"b".to_owned()), FileType::Unknown),
                (30, Some(c"c".to_owned()), FileType::RegularFile),
            ]
        );
        chunk.clear();
        assert!(chunk.entries.is_empty() && chunk.names.is_empty());
    }

    #[test]
    fn a_chunk_is_full_at_its_entry_cap_or_its_name_budget() {
        let two = ChunkCap {
            entries: 2,
            name_bytes: CHUNK_NAME_BYTES,
        };
        let mut chunk = Chunk::default();
        chunk.push(1, c"x", FileType::RegularFile);
        assert!(!chunk.is_full(two));
        chunk.push(2, c"y", FileType::RegularFile);
        assert!(chunk.is_full(two));
        let name = CString::new(vec![b'n'; 255]).unwrap_or_default();
        for grown in [false, true] {
            let cap = ChunkCap::of(&RemoveOptions::default(), grown);
            let mut long = Chunk::default();
            while !long.is_full(cap) {
                long.push(0, &name, FileType::RegularFile);
            }
            assert_eq!(long.entries.len(), cap.name_bytes.div_ceil(256));
        }
    }

    #[test]
    fn a_thread_the_removal_grew_by_holds_an_eighth_of_a_chunk() {
        let opts = RemoveOptions::default();
        assert_eq!(
            ChunkCap::of(&opts, false),
            ChunkCap {
                entries: 65_536,
                name_bytes: 4 << 20
            }
        );
        assert_eq!(
            ChunkCap::of(&opts, true),
            ChunkCap {
                entries: 8_192,
                name_bytes: 512 << 10
            }
        );
        let tiny = RemoveOptions {
            chunk_entries: 3,
            ..RemoveOptions::default()
        };
        assert_eq!(
            ChunkCap::of(&tiny, true).entries,
            1,
            "never below one entry"
        );
        let directory = RemoveOptions {
            order: EntryOrder::Directory,
            ..RemoveOptions::default()
        };
        assert!(
            ChunkCap::of(&directory, true).entries > 1 << 40,
            "buffer-bound"
        );
    }

    #[test]
    fn a_shared_chunk_gives_out_each_block_once_in_order_until_none_is_left() {
        let mut chunk = Chunk::default();
        for ino in 0..150 {
            chunk.push(ino, c"f", FileType::RegularFile);
        }
        let fd = rustix::fs::open("/", DIR_FLAGS, Mode::empty()).map(Arc::new);
        let Ok(fd) = fd else {
            panic!("cannot open /: {fd:?}");
        };
        let ident = Ident {
            dev: (0, 0),
            ino: 0,
            mount_root: false,
        };
        let offered = Offered {
            node: Node::new(None, c"d".to_owned(), ident),
            fd,
            chunk,
            next: AtomicUsize::new(0),
        };
        assert_eq!(offered.blocks_left(), 3);
        assert_eq!(offered.claim(), Some(0..64));
        assert_eq!(offered.blocks_left(), 2);
        assert_eq!(offered.claim(), Some(64..128));
        assert_eq!(offered.claim(), Some(128..150));
        assert_eq!(offered.blocks_left(), 0);
        assert_eq!(offered.claim(), None);
        assert_eq!(offered.claim(), None, "and stays exhausted");
        assert_eq!(offered.blocks_left(), 0);
    }

    #[test]
    fn the_default_options_use_inode_order_in_chunks_of_64_ki() {
        let opts = RemoveOptions::default();
        assert_eq!(opts.order, EntryOrder::Inode);
        assert_eq!(opts.chunk_entries, 65_536);
        assert_eq!(opts.threads, 1);
    }
}
