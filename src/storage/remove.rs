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
//! - **Cancellation** is checked before every unlink (a relaxed atomic load; the token itself
//!   is polled every few entries and by idle threads every 20 ms), so a removal stops within
//!   milliseconds plus one system call. A removal waiting for its volume's rate limit
//!   ([`RemoveOptions::limiter`], before every unlink and rmdir) polls the token while it
//!   waits and stops as promptly. It returns [`Outcome::Cancelled`] with the tree partly
//!   removed; calling again resumes from what is left. Cancellation is not an error.
//! - **Bounded resources.** A fixed number of OS threads share a stack of directories to
//!   open; entries are read with `getdents64` into one reusable buffer per thread and
//!   unlinked straight from it, so memory grows with the number of directories waiting to be
//!   opened, not with the number of files. No recursion: depth costs heap, not stack.
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
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, SeekFrom, StatxAttributes, StatxFlags};
use rustix::io::Errno;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

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

/// How [`remove_tree`] runs.
#[derive(Clone, Debug)]
pub struct RemoveOptions {
    /// OS threads to use (at least one; the calling thread is one of them).
    pub threads: usize,
    /// Count the bytes of regular files (one `statx` per file before unlinking it).
    pub count_bytes: bool,
    /// The folder being removed, named in errors.
    pub folder: Option<Uuid>,
    /// The tree root's path relative to the volume root, the prefix of every path in errors.
    pub display_path: PathBuf,
    /// The volume's operations-per-second limit, shared with every other removal on it;
    /// waited on before each unlink and rmdir. `None`: unlimited.
    pub limiter: Option<Arc<OpsLimiter>>,
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
    let mut counts = Counts::default();
    for _ in 0..MAX_PASSES {
        let (pass, end) = run_pass(parent, name, opts, cancel, progress)?;
        counts.add(&pass);
        match end {
            PassEnd::Completed => return Ok(Outcome::Completed(Report::new(counts, started))),
            PassEnd::Cancelled => return Ok(Outcome::Cancelled(Report::new(counts, started))),
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
) -> Result<(Counts, PassEnd), Error> {
    let io = |op, source| Error::Io {
        folder: opts.folder,
        op,
        path: opts.display_path.clone(),
        source,
    };
    let parent_ident = ident(parent).map_err(|e| io("stat parent of", e))?;
    let root_fd = match rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok((Counts::default(), PassEnd::Completed)),
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
    let shared = Shared {
        opts,
        cancel,
        progress,
        stop: AtomicBool::new(false),
        root_dev: root_ident.dev,
        root_parent: parent_ident,
        queue: Mutex::new(Queue {
            work: vec![Work::Scan(root, root_fd)],
            active: 0,
            finished: false,
        }),
        wake: Condvar::new(),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
        root_done: AtomicBool::new(false),
        restart: AtomicBool::new(false),
    };
    let threads = opts.threads.max(1);
    let counts = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|i| {
                std::thread::Builder::new()
                    .name(format!("remove-{i}"))
                    .spawn_scoped(scope, || Worker::new(&shared).run())
                    // Fewer threads is slower, not wrong.
                    .ok()
            })
            .collect();
        let mut total = Worker::new(&shared).run();
        for h in helpers {
            // A panicking helper is a bug; its counts are lost but the others stand.
            if let Ok(c) = h.join() {
                total.add(&c);
            }
        }
        total
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
    Ok((counts, end))
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
}

struct Queue {
    work: Vec<Work>,
    /// Threads currently holding a work item (which may produce more).
    active: usize,
    finished: bool,
}

struct Shared<'a> {
    opts: &'a RemoveOptions,
    cancel: &'a CancellationToken,
    progress: &'a Progress,
    stop: AtomicBool,
    root_dev: (u32, u32),
    root_parent: Ident,
    queue: Mutex<Queue>,
    wake: Condvar,
    errors: AtomicU64,
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

/// One thread's state: its `getdents` buffer, counts not yet published, and directories
/// found but not yet handed to the shared stack.
struct Worker<'s, 'a> {
    shared: &'s Shared<'a>,
    buf: Vec<MaybeUninit<u8>>,
    unpublished: Counts,
    total: Counts,
    children: Vec<Work>,
    until_poll: u32,
}

impl<'s, 'a> Worker<'s, 'a> {
    fn new(shared: &'s Shared<'a>) -> Self {
        Worker {
            shared,
            buf: vec![MaybeUninit::uninit(); DIRENT_BUF],
            unpublished: Counts::default(),
            total: Counts::default(),
            children: Vec::with_capacity(CHILD_BATCH),
            until_poll: 0,
        }
    }

    fn run(mut self) -> Counts {
        while let Some(work) = self.next_work() {
            let mut next = match work {
                Work::Open { parent, name } => self.open_child(&parent, &name),
                Work::Scan(node, fd) => Some((node, fd)),
            };
            while let Some((node, fd)) = next {
                next = self.scan(node, fd);
            }
            self.hand_over_children();
            self.publish();
            let mut q = lock(&self.shared.queue);
            q.active -= 1;
            if q.active == 0 && q.work.is_empty() {
                q.finished = true;
                self.shared.wake.notify_all();
            }
        }
        self.publish();
        self.total
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
                return Some(w);
            }
            if q.active == 0 {
                q.finished = true;
                continue;
            }
            q = self
                .shared
                .wake
                .wait_timeout(q, IDLE_POLL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
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
    fn scan(&mut self, node: Arc<Node>, fd: Arc<OwnedFd>) -> Option<(Arc<Node>, Arc<OwnedFd>)> {
        let mut buf = mem::take(&mut self.buf);
        let mut stopped = false;
        {
            let mut dir = RawDir::new(fd.as_fd(), &mut buf);
            while let Some(entry) = dir.next() {
                let entry = match entry {
                    Ok(e) => e,
                    // Removed by someone else while we read it: nothing left to read.
                    Err(Errno::NOENT) => break,
                    Err(e) => {
                        self.shared.io_error(&node, "read directory", None, e);
                        node.poison();
                        break;
                    }
                };
                let name = entry.file_name();
                if name == c"." || name == c".." {
                    continue;
                }
                if self.should_stop() {
                    stopped = true;
                    break;
                }
                self.entry(&node, fd.as_fd(), name, entry.file_type());
                if dir.is_buffer_empty() || self.children.len() >= CHILD_BATCH {
                    self.hand_over_children();
                    self.publish();
                }
            }
        }
        self.buf = buf;
        if stopped {
            return None;
        }
        node.release_unopened();
        if node.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            return self.finish(node, Some(fd));
        }
        None
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
        node.pending.fetch_add(1, Ordering::AcqRel);
        node.unopened.fetch_add(1, Ordering::AcqRel);
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

/// Locks a mutex, ignoring poisoning: every critical section here leaves consistent state.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
