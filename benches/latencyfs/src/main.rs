//! `latencyfs BACKING MOUNTPOINT [--delay-us N] [--threads N]`: a FUSE passthrough of the
//! directory `BACKING` that sleeps `N` µs (default 1000) before answering every metadata
//! request (lookup, getattr, readlink, unlink, rmdir, opendir, readdir, releasedir, statfs,
//! access), to stand in for a network filesystem where each round trip costs about a
//! millisecond.
//!
//! Requests are served by `--threads` (default 32) FUSE worker threads, each with its own
//! `/dev/fuse` descriptor, so concurrent callers really wait concurrently: a sequential
//! remover pays every round trip, a parallel one overlaps them (as on NFS or CephFS).
//!
//! Only what removing a tree needs is implemented; the tree is built directly in `BACKING`
//! before mounting. Inode numbers are the backing filesystem's (its root maps to the FUSE
//! root, 1), paths are remembered per inode from lookups (no renames are supported). Each
//! `opendir` snapshots the directory's entries; `readdir` pages through that snapshot, as a
//! network client pages through the server's listing. It runs in the foreground until the
//! mount point is unmounted (`umount MOUNTPOINT`), then exits.
//!
//! Benchmark-only: built and run by `benches/run.sh`, not part of the controller.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::ffi::OsString;
use std::fs::Metadata;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    AccessFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, Request,
};

/// How long the kernel may cache entries and attributes, as an NFS client caches them.
const TTL: Duration = Duration::from_secs(1);

/// A known inode: where it is in the backing tree and how many lookups the kernel holds.
struct Node {
    path: PathBuf,
    lookups: u64,
}

/// One directory listing, taken at `opendir`.
type Listing = Vec<(u64, FileType, OsString)>;

struct LatencyFs {
    delay: Duration,
    /// The backing root's own inode number, shown to the kernel as the FUSE root (1).
    root_ino: u64,
    nodes: Mutex<HashMap<u64, Node>>,
    listings: Mutex<HashMap<u64, Listing>>,
    next_fh: AtomicU64,
}

/// Locks a table; a panic in another request handler must not wedge the whole mount.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from(e)
}

impl LatencyFs {
    /// The simulated round trip.
    fn wait(&self) {
        std::thread::sleep(self.delay);
    }

    fn fuse_ino(&self, backing_ino: u64) -> u64 {
        if backing_ino == self.root_ino {
            INodeNo::ROOT.0
        } else {
            backing_ino
        }
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        lock(&self.nodes)
            .get(&ino.0)
            .map(|n| n.path.clone())
            .ok_or(Errno::ESTALE)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    fn attr(&self, md: &Metadata) -> Result<FileAttr, Errno> {
        let kind = FileType::from_std(md.file_type()).ok_or(Errno::EIO)?;
        let time = |secs: i64, nsecs: i64| {
            UNIX_EPOCH + Duration::new(secs.max(0) as u64, nsecs.clamp(0, 999_999_999) as u32)
        };
        Ok(FileAttr {
            ino: INodeNo(self.fuse_ino(md.ino())),
            size: md.size(),
            blocks: md.blocks(),
            atime: time(md.atime(), md.atime_nsec()),
            mtime: time(md.mtime(), md.mtime_nsec()),
            ctime: time(md.ctime(), md.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind,
            perm: (md.mode() & 0o7777) as u16,
            nlink: md.nlink() as u32,
            uid: md.uid(),
            gid: md.gid(),
            rdev: md.rdev() as u32,
            blksize: md.blksize() as u32,
            flags: 0,
        })
    }

    fn lookup_path(&self, path: PathBuf) -> Result<FileAttr, Errno> {
        let md = std::fs::symlink_metadata(&path).map_err(errno)?;
        let attr = self.attr(&md)?;
        lock(&self.nodes)
            .entry(attr.ino.0)
            .or_insert(Node { path, lookups: 0 })
            .lookups += 1;
        Ok(attr)
    }

    fn list(&self, path: &Path, ino: INodeNo) -> Result<Listing, Errno> {
        let mut listing = vec![
            (ino.0, FileType::Directory, OsString::from(".")),
            (INodeNo::ROOT.0, FileType::Directory, OsString::from("..")),
        ];
        for entry in std::fs::read_dir(path).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            let kind = entry
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            listing.push((self.fuse_ino(entry.ino()), kind, entry.file_name()));
        }
        Ok(listing)
    }
}

impl Filesystem for LatencyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.wait();
        match self.child(parent, name).and_then(|p| self.lookup_path(p)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if ino == INodeNo::ROOT {
            return;
        }
        let mut nodes = lock(&self.nodes);
        if let Some(node) = nodes.get_mut(&ino.0) {
            node.lookups = node.lookups.saturating_sub(nlookup);
            if node.lookups == 0 {
                nodes.remove(&ino.0);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.wait();
        let r = self
            .path(ino)
            .and_then(|p| std::fs::symlink_metadata(p).map_err(errno))
            .and_then(|md| self.attr(&md));
        match r {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.wait();
        let r = self
            .path(ino)
            .and_then(|p| std::fs::read_link(p).map_err(errno));
        match r {
            Ok(target) => reply.data(target.as_os_str().as_encoded_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.wait();
        let r = self
            .child(parent, name)
            .and_then(|p| std::fs::remove_file(p).map_err(errno));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.wait();
        let r = self
            .child(parent, name)
            .and_then(|p| std::fs::remove_dir(p).map_err(errno));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.wait();
        match self.path(ino).and_then(|p| self.list(&p, ino)) {
            Ok(listing) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                lock(&self.listings).insert(fh, listing);
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.wait();
        let listings = lock(&self.listings);
        let Some(listing) = listings.get(&fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        for (i, (ino, kind, name)) in listing.iter().enumerate().skip(offset as usize) {
            // The offset handed back is where the next call resumes.
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        drop(listings);
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.wait();
        lock(&self.listings).remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.wait();
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        self.wait();
        reply.ok();
    }
}

struct Args {
    backing: PathBuf,
    mountpoint: PathBuf,
    delay: Duration,
    threads: usize,
}

fn parse() -> Result<Args, String> {
    let usage = "usage: latencyfs BACKING MOUNTPOINT [--delay-us N] [--threads N]";
    let mut positional = Vec::new();
    let mut delay = Duration::from_micros(1000);
    let mut threads = 32;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let mut number = || -> Result<u64, String> {
            args.next()
                .and_then(|v| v.to_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| usage.to_string())
        };
        match arg.to_str() {
            Some("--delay-us") => delay = Duration::from_micros(number()?),
            Some("--threads") => threads = number()?.max(1) as usize,
            _ => positional.push(PathBuf::from(arg)),
        }
    }
    let [backing, mountpoint] = <[PathBuf; 2]>::try_from(positional).map_err(|_| usage)?;
    Ok(Args {
        backing,
        mountpoint,
        delay,
        threads,
    })
}

fn run() -> Result<(), String> {
    let args = parse()?;
    let backing = args
        .backing
        .canonicalize()
        .map_err(|e| format!("{}: {e}", args.backing.display()))?;
    let root_ino = std::fs::metadata(&backing)
        .map_err(|e| format!("{}: {e}", backing.display()))?
        .ino();
    let fs = LatencyFs {
        delay: args.delay,
        root_ino,
        nodes: Mutex::new(HashMap::from([(
            INodeNo::ROOT.0,
            Node {
                path: backing,
                lookups: 1,
            },
        )])),
        listings: Mutex::new(HashMap::new()),
        next_fh: AtomicU64::new(1),
    };
    let mut config = Config::default();
    config.mount_options = vec![MountOption::FSName("latencyfs".into())];
    config.n_threads = Some(args.threads);
    config.clone_fd = true;
    fuser::mount(fs, &args.mountpoint, &config)
        .map_err(|e| format!("{}: {e}", args.mountpoint.display()))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latencyfs: {e}");
            ExitCode::FAILURE
        }
    }
}
