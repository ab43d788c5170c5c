//! The read-only walk of a volume's folder layout: what `orphans scan` sees on disk.
//!
//! The walk visits `<root>/[.trash/][<scope hex>/]<id[0:2]>/<id[2:4]>/<id[4:]>` and reports
//! every folder directory it finds ([`Found::Folder`]) and every entry of the layout that does
//! not parse as one ([`Found::Foreign`]: a stray file, a symlink, `lost+found`, an uppercase
//! name, a mount point, ...). The database is not its business: the caller decides which
//! folders no row accounts for.
//!
//! Guarantees:
//! - **Nothing is changed.** Directories are opened read-only and listed; files are at most
//!   `stat`ed (when counting bytes). No entry is created, renamed or removed.
//! - **Symlinks are never followed.** Every directory is opened relative to its parent's
//!   descriptor with `O_NOFOLLOW | O_DIRECTORY`; a symlink anywhere in the layout is reported
//!   as foreign, and inside a folder it is counted as a symlink, never entered.
//! - **Mounts are not crossed.** A directory on another device than the volume root, or that
//!   `statx` marks as a mount root, is not entered: in the layout it is reported as foreign,
//!   inside a folder it is counted in [`FolderCounts::not_entered`].
//! - **Bounded memory.** The layout levels are listed one directory at a time (the largest
//!   listing held is the volume root's, i.e. one name per quota scope), folders are handed to
//!   the visitor as they are found, and a folder's contents are counted with one reusable
//!   `getdents64` buffer and a stack of directories still to open, so memory does not grow
//!   with the number of folders or files.
//! - **Cancellation** is checked between entries; a cancelled walk returns
//!   [`ScanEnd::Cancelled`] and the caller must not treat what it saw as complete.

use std::ffi::{CStr, CString, OsStr};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, RawDir};
use rustix::io::Errno;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::layout::{Component, TRASH_DIR, id_from_parts, scope_ref};
use super::remove::{DIR_FLAGS, Ident, ident};
use super::{Counts, Error, FolderRef, Volume};

/// Size of the `getdents64` buffer.
const DIRENT_BUF: usize = 32 * 1024;

/// What the walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A directory at a folder's place in the layout.
    Folder(FoundFolder),
    /// An entry of the layout that is not a folder and not a layout directory: listed,
    /// never touched.
    Foreign(Foreign),
}

/// A folder directory on the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFolder {
    /// The folder id its path spells.
    pub id: Uuid,
    /// The quota scope uuid its path spells (`None`: a folder without a quota scope).
    pub scope: Option<Uuid>,
    /// Under the volume's trash directory.
    pub trash: bool,
    /// Its path relative to the volume root.
    pub path: PathBuf,
    /// What it holds, when the walk counts.
    pub counts: Option<FolderCounts>,
}

impl FoundFolder {
    /// A `quota_scope_id` that addresses this directory's path (see
    /// [`FoundFolder::folder_ref`]).
    pub fn quota_scope(&self) -> Option<String> {
        self.scope.map(scope_ref)
    }

    /// The folder as the storage layer addresses it on `host`, with `quota_scope` from
    /// [`FoundFolder::quota_scope`]: [`Volume::folder_path`] (or [`Volume::trash_path`]) of
    /// it is [`FoundFolder::path`].
    pub fn folder_ref<'a>(&self, host: &'a str, quota_scope: Option<&'a str>) -> FolderRef<'a> {
        FolderRef {
            id: self.id,
            host,
            quota_scope_id: quota_scope,
        }
    }
}

/// What a folder directory holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FolderCounts {
    /// Files, directories (the folder's own included), symlinks and bytes of regular files
    /// (apparent size, as the remover counts them).
    #[serde(flatten)]
    pub counts: Counts,
    /// Directories not entered: other filesystems mounted inside the folder.
    pub not_entered: u64,
    /// Entries that could not be read (permission, I/O): the counts are a lower bound.
    pub unreadable: u64,
}

/// An entry of the layout that is not a folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Foreign {
    /// Its path relative to the volume root (lossy for names that are not UTF-8).
    pub path: PathBuf,
    /// `directory`, `file`, `symlink` or `other` (`entry` in JSON, beside the report's
    /// `kind`).
    #[serde(rename = "entry")]
    pub kind: &'static str,
    /// Why it is not a folder.
    pub reason: String,
}

/// How the walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every entry of the layout was visited.
    Complete,
    /// Stopped by the token, or by the visitor: what was seen is partial.
    Cancelled,
}

/// How the walk runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanOptions {
    /// Count each folder's files, directories, symlinks and bytes (walks every folder's
    /// tree; without it the walk lists only the layout directories).
    pub count: bool,
}

/// Live counters of a walk, readable from another thread (a progress display).
#[derive(Debug, Default)]
pub struct ScanProgress {
    folders: AtomicU64,
    foreign: AtomicU64,
    files: AtomicU64,
    bytes: AtomicU64,
}

/// A snapshot of [`ScanProgress`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanCounters {
    /// Folder directories found.
    pub folders: u64,
    /// Foreign entries found.
    pub foreign: u64,
    /// Files counted inside folders.
    pub files: u64,
    /// Bytes counted inside folders.
    pub bytes: u64,
}

impl ScanProgress {
    /// The counters so far.
    pub fn snapshot(&self) -> ScanCounters {
        ScanCounters {
            folders: self.folders.load(Ordering::Relaxed),
            foreign: self.foreign.load(Ordering::Relaxed),
            files: self.files.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// Where in the layout a directory is.
#[derive(Clone, Copy)]
enum Level {
    /// The volume root (`trash: false`) or its trash directory.
    Base { trash: bool },
    /// A quota scope directory.
    Scope { trash: bool, scope: Uuid },
    /// The first fan-out directory.
    Fan1 {
        trash: bool,
        scope: Option<Uuid>,
        a: [u8; 2],
    },
    /// The second fan-out directory, holding folder directories.
    Fan2 {
        trash: bool,
        scope: Option<Uuid>,
        a: [u8; 2],
        b: [u8; 2],
    },
}

impl Volume {
    /// Walks this volume's layout and hands every folder directory and every foreign entry
    /// to `visit`, in name order per directory; `visit` returns `false` to stop. Blocking
    /// (run it on its own thread); checks the volume's availability first. See the module
    /// docs of `storage::scan` for what is guaranteed.
    pub fn scan(
        &self,
        opts: &ScanOptions,
        cancel: &CancellationToken,
        progress: &ScanProgress,
        visit: &mut dyn FnMut(Found) -> bool,
    ) -> Result<ScanEnd, Error> {
        let root = self.open_root()?;
        let root_ident = ident(root.as_fd()).map_err(|source| Error::Io {
            folder: None,
            op: "stat",
            path: PathBuf::new(),
            source,
        })?;
        let marker = self
            .config()
            .marker_file
            .as_ref()
            .and_then(|m| m.components().next())
            .map(|c| c.as_os_str().as_bytes().to_vec());
        let mut walker = Walker {
            opts: *opts,
            cancel,
            progress,
            visit,
            root_dev: root_ident.dev,
            marker,
            buf: vec![MaybeUninit::uninit(); DIRENT_BUF],
            stopped: false,
        };
        walker.walk(root.as_fd(), Level::Base { trash: false }, Path::new(""))?;
        Ok(if walker.stopped {
            ScanEnd::Cancelled
        } else {
            ScanEnd::Complete
        })
    }
}

struct Walker<'a> {
    opts: ScanOptions,
    cancel: &'a CancellationToken,
    progress: &'a ScanProgress,
    visit: &'a mut dyn FnMut(Found) -> bool,
    root_dev: (u32, u32),
    /// The first component of the configured marker file: part of the volume, not foreign.
    marker: Option<Vec<u8>>,
    buf: Vec<MaybeUninit<u8>>,
    stopped: bool,
}

/// The label of a file type in reports.
fn kind(ty: FileType) -> &'static str {
    match ty {
        FileType::Directory => "directory",
        FileType::RegularFile => "file",
        FileType::Symlink => "symlink",
        _ => "other",
    }
}

impl Walker<'_> {
    fn emit(&mut self, found: Found) {
        match &found {
            Found::Folder(_) => self.progress.folders.fetch_add(1, Ordering::Relaxed),
            Found::Foreign(_) => self.progress.foreign.fetch_add(1, Ordering::Relaxed),
        };
        if !(self.visit)(found) {
            self.stopped = true;
        }
    }

    fn foreign(&mut self, path: PathBuf, kind: &'static str, reason: impl Into<String>) {
        self.emit(Found::Foreign(Foreign {
            path,
            kind,
            reason: reason.into(),
        }));
    }

    fn halted(&mut self) -> bool {
        if self.cancel.is_cancelled() {
            self.stopped = true;
        }
        self.stopped
    }

    /// Lists one directory fully, sorted by name, with each entry's type. The layout's
    /// directories are small (at most 256 fan-out names, or one name per quota scope at the
    /// root), so holding one listing is bounded by the layout, not by the folders.
    fn list(&mut self, dir: BorrowedFd<'_>) -> Result<Vec<(CString, FileType)>, Errno> {
        let mut out = Vec::new();
        let mut raw = RawDir::new(dir, &mut self.buf);
        while let Some(entry) = raw.next() {
            let entry = entry?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let ty = match entry.file_type() {
                FileType::Unknown => rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_or(FileType::Unknown, |st| FileType::from_raw_mode(st.st_mode)),
                ty => ty,
            };
            out.push((name.to_owned(), ty));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Opens the subdirectory `name` of `dir` without following symlinks and without
    /// leaving the volume's filesystem. `Ok(None)` means it vanished.
    fn open_sub(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
    ) -> Result<Option<(OwnedFd, Ident)>, Refused> {
        match rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => match ident(fd.as_fd()) {
                Ok(id) if id.mount_root || id.dev != self.root_dev => Err(Refused::Mount),
                Ok(id) => Ok(Some((fd, id))),
                Err(e) => Err(Refused::Unreadable(format!("cannot stat: {e}"))),
            },
            Err(Errno::NOENT) => Ok(None),
            // Swapped for a symlink or a file since it was listed.
            Err(Errno::LOOP | Errno::NOTDIR) => Err(Refused::Symlink),
            Err(e) => Err(Refused::Unreadable(format!("cannot open: {e}"))),
        }
    }

    fn walk(&mut self, dir: BorrowedFd<'_>, level: Level, path: &Path) -> Result<(), Error> {
        let entries = self.list(dir).map_err(|source| Error::Io {
            folder: None,
            op: "list",
            path: path.to_owned(),
            source,
        })?;
        for (name, ty) in entries {
            if self.halted() {
                return Ok(());
            }
            let bytes = name.to_bytes();
            let child = path.join(OsStr::from_bytes(bytes));
            if let Level::Base { trash: false } = level {
                if self.marker.as_deref() == Some(bytes) {
                    continue;
                }
            }
            let next = match (level, Component::parse(bytes)) {
                (Level::Base { trash: false }, _) if bytes == TRASH_DIR.as_bytes() => {
                    Some(Level::Base { trash: true })
                }
                (Level::Base { trash }, Some(Component::Scope(scope))) => {
                    Some(Level::Scope { trash, scope })
                }
                (Level::Base { trash }, Some(Component::Fanout(a))) => Some(Level::Fan1 {
                    trash,
                    scope: None,
                    a,
                }),
                (Level::Scope { trash, scope }, Some(Component::Fanout(a))) => Some(Level::Fan1 {
                    trash,
                    scope: Some(scope),
                    a,
                }),
                (Level::Fan1 { trash, scope, a }, Some(Component::Fanout(b))) => {
                    Some(Level::Fan2 { trash, scope, a, b })
                }
                (Level::Fan2 { .. }, Some(Component::Leaf(_))) => None,
                _ => {
                    self.foreign(child, kind(ty), "not a name of the folder layout");
                    continue;
                }
            };
            if ty != FileType::Directory {
                let reason = if ty == FileType::Symlink {
                    "a symlink where the layout has a directory (never followed)"
                } else {
                    "not a directory where the layout has one"
                };
                self.foreign(child, kind(ty), reason);
                continue;
            }
            let (fd, _) = match self.open_sub(dir, &name) {
                Ok(Some(opened)) => opened,
                Ok(None) => continue,
                Err(refused) => {
                    let (kind, reason) = refused.describe();
                    self.foreign(child, kind, reason);
                    continue;
                }
            };
            match (next, level, Component::parse(bytes)) {
                (Some(next), _, _) => self.walk(fd.as_fd(), next, &child)?,
                (
                    None,
                    Level::Fan2 {
                        trash, scope, a, b, ..
                    },
                    Some(Component::Leaf(leaf)),
                ) => {
                    let Some(id) = id_from_parts([a, b], &leaf) else {
                        self.foreign(child, "directory", "not a folder id");
                        continue;
                    };
                    let counts = self.opts.count.then(|| self.count(fd));
                    self.emit(Found::Folder(FoundFolder {
                        id,
                        scope,
                        trash,
                        path: child,
                        counts,
                    }));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Counts what a folder directory holds: a depth-first walk with a stack of directories
    /// still to open (each with its parent's descriptor), one `getdents64` buffer.
    fn count(&mut self, folder: OwnedFd) -> FolderCounts {
        let mut c = FolderCounts::default();
        c.counts.dirs = 1;
        let mut stack: Vec<(Arc<OwnedFd>, CString)> = Vec::new();
        let mut next = Some(Arc::new(folder));
        loop {
            if self.halted() {
                break;
            }
            let dir = match next.take() {
                Some(dir) => dir,
                None => {
                    let Some((parent, name)) = stack.pop() else {
                        break;
                    };
                    match self.open_sub(parent.as_fd(), &name) {
                        Ok(Some((fd, _))) => {
                            c.counts.dirs += 1;
                            Arc::new(fd)
                        }
                        Ok(None) => continue,
                        Err(Refused::Symlink) => {
                            c.counts.symlinks += 1;
                            continue;
                        }
                        Err(Refused::Mount) => {
                            c.not_entered += 1;
                            continue;
                        }
                        Err(Refused::Unreadable(_)) => {
                            c.unreadable += 1;
                            continue;
                        }
                    }
                }
            };
            let mut raw = RawDir::new(dir.as_fd(), &mut self.buf);
            while let Some(entry) = raw.next() {
                let Ok(entry) = entry else {
                    c.unreadable += 1;
                    break;
                };
                let name = entry.file_name();
                if name == c"." || name == c".." {
                    continue;
                }
                let ty = match entry.file_type() {
                    FileType::Unknown => {
                        rustix::fs::statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW)
                            .map_or(FileType::Unknown, |st| FileType::from_raw_mode(st.st_mode))
                    }
                    ty => ty,
                };
                match ty {
                    FileType::Directory => stack.push((dir.clone(), name.to_owned())),
                    FileType::Symlink => c.counts.symlinks += 1,
                    FileType::RegularFile => {
                        c.counts.files += 1;
                        match rustix::fs::statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
                            Ok(st) => c.counts.bytes += u64::try_from(st.st_size).unwrap_or(0),
                            Err(_) => c.unreadable += 1,
                        }
                    }
                    _ => c.counts.files += 1,
                }
            }
        }
        self.progress
            .files
            .fetch_add(c.counts.files, Ordering::Relaxed);
        self.progress
            .bytes
            .fetch_add(c.counts.bytes, Ordering::Relaxed);
        c
    }
}

/// Why a directory is not entered.
enum Refused {
    /// It is (now) a symlink or not a directory.
    Symlink,
    /// Another filesystem is mounted there.
    Mount,
    /// It cannot be opened or identified.
    Unreadable(String),
}

impl Refused {
    /// The foreign entry's kind and reason.
    fn describe(self) -> (&'static str, String) {
        match self {
            Refused::Symlink => ("symlink", "a symlink (never followed)".to_owned()),
            Refused::Mount => (
                "directory",
                "another filesystem is mounted here; not entered".to_owned(),
            ),
            Refused::Unreadable(reason) => ("directory", reason),
        }
    }
}
