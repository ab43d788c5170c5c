//! Volumes: proving a volume is the configured one, and resolving, creating, trashing and
//! removing folders on it without ever following a symlink below the volume root.
//!
//! The volume root itself (`mount` in the configuration) is opened once per operation and
//! checked (a directory; a mount point when `require_mount_point`; holding `marker_file`
//! when set), and everything else is opened relative to that descriptor, one component at a
//! time with `O_NOFOLLOW`. So "the folder is not there" is only believed on a volume that
//! has been proven present; an unmounted volume is [`Error::VolumeUnavailable`] (transient),
//! never "already removed". The configured mount path may itself contain symlinks: it is
//! the administrator's choice, not data.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::layout::{Layout, TRASH_DIR};
use super::remove::{DIR_FLAGS, RemoveOptions, ident, remove_tree};
use super::{Error, FolderRef, OpsLimiter, Outcome, Progress, Report};
use crate::config::VolumeConfig;

/// Mode of directories this module creates (subject to the umask).
const DIR_MODE: u32 = 0o755;

/// All configured volumes, by host.
#[derive(Debug, Clone)]
pub struct Volumes {
    volumes: Vec<Volume>,
}

impl Volumes {
    /// Wraps the configured volumes (validated by `Config::validate`: hosts are unique).
    pub fn new(configs: &[VolumeConfig]) -> Volumes {
        Volumes {
            volumes: configs.iter().cloned().map(Volume::new).collect(),
        }
    }

    /// The volume for `host`, or the permanent [`Error::UnknownVolume`].
    pub fn get(&self, host: &str) -> Result<&Volume, Error> {
        self.volumes
            .iter()
            .find(|v| v.config.host == host)
            .ok_or_else(|| Error::UnknownVolume {
                host: host.to_owned(),
            })
    }

    /// The volumes in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Volume> {
        self.volumes.iter()
    }
}

/// One configured volume. Clones share the volume's rate limit.
#[derive(Debug, Clone)]
pub struct Volume {
    config: VolumeConfig,
    /// `max_ops_per_second`, shared by every removal on this volume that goes through this
    /// value or its clones (the controller holds one [`Volumes`] per process).
    limiter: Option<Arc<OpsLimiter>>,
}

impl Volume {
    /// Wraps one volume's configuration. Nothing is touched until an operation runs.
    pub fn new(config: VolumeConfig) -> Volume {
        let limiter = config
            .max_ops_per_second
            .map(|n| Arc::new(OpsLimiter::new(n)));
        Volume { config, limiter }
    }

    /// The configuration this volume was built from.
    pub fn config(&self) -> &VolumeConfig {
        &self.config
    }

    /// The `<proxy>:<volume>` host string.
    pub fn host(&self) -> &str {
        &self.config.host
    }

    /// Proves the volume is the configured one and answering: the mount path is a
    /// directory, a mount point when `require_mount_point` is set, holds `marker_file` when
    /// one is set, and its filesystem answers `statfs`. Any failure is the transient
    /// [`Error::VolumeUnavailable`] with the reason. This is the controller's volume probe.
    pub fn check_available(&self) -> Result<(), Error> {
        let root = self.open_root()?;
        // A network filesystem whose server went away (or a FUSE daemon that died) may still
        // open its root from the dentry cache; statfs asks the filesystem itself, so it
        // surfaces ENOTCONN, ESTALE and EIO on the volume root.
        rustix::fs::fstatvfs(root.as_fd()).map_err(|e| {
            self.guard_failed(
                "statfs",
                ".",
                e,
                format!(
                    "cannot stat the filesystem of {}: {e}",
                    self.config.mount.display()
                ),
            )
        })?;
        Ok(())
    }

    /// The folder's live path relative to the volume root (validates the quota scope).
    pub fn folder_path(&self, folder: &FolderRef<'_>) -> Result<PathBuf, Error> {
        Ok(Layout::of(folder)?.relative(false))
    }

    /// The folder's path in the volume's trash (`.trash/<live path>`), relative to the root.
    pub fn trash_path(&self, folder: &FolderRef<'_>) -> Result<PathBuf, Error> {
        Ok(Layout::of(folder)?.relative(true))
    }

    /// Creates the folder's directory and any missing parents beneath the root, refusing
    /// symlinks on the way; an existing directory is fine. Returns its absolute path.
    /// A volume that need not be a mount point (like the built-in default volume) has its
    /// root directory created on first use; a mount-point volume must already be mounted.
    pub fn create_folder(&self, folder: &FolderRef<'_>) -> Result<PathBuf, Error> {
        let layout = Layout::of(folder)?;
        if !self.config.require_mount_point && !self.config.mount.exists() {
            std::fs::create_dir_all(&self.config.mount).map_err(|e| {
                self.unavailable(format!(
                    "cannot create {}: {e}",
                    self.config.mount.display()
                ))
            })?;
        }
        let root = self.open_root()?;
        let mut comps: Vec<&str> = layout.parents().collect();
        comps.push(&layout.leaf);
        self.make_dirs(root.as_fd(), &comps, folder.id)?;
        Ok(self.config.mount.join(layout.relative(false)))
    }

    /// Removes the folder's data at its live path and at its trash path (either or both
    /// may be missing: that is success), then its two fan-out parents if they are empty.
    /// Blocking; checks availability first. The report's counts cover both paths.
    /// Cancellation returns [`Outcome::Cancelled`] with the data partly removed.
    pub fn remove_folder(
        &self,
        folder: &FolderRef<'_>,
        cancel: &CancellationToken,
        progress: &Progress,
    ) -> Result<Outcome, Error> {
        let started = std::time::Instant::now();
        let layout = Layout::of(folder)?;
        let root = self.open_root()?;
        let mut report = Report::nothing();
        for trash in [false, true] {
            let copy =
                self.remove_copy(root.as_fd(), &layout, trash, folder.id, cancel, progress)?;
            let (Outcome::Completed(r) | Outcome::Cancelled(r)) = copy;
            report.absorb(&r);
            if let Outcome::Cancelled(_) = copy {
                return Ok(Outcome::Cancelled(report.since(started)));
            }
        }
        Ok(Outcome::Completed(report.since(started)))
    }

    /// Removes one copy of the folder: the trash copy with `trash`, else the live one, then
    /// its fan-out parents if they are empty; the other copy is not touched. A missing copy
    /// is success. What `orphans reclaim` removes: the one directory a scan saw without a row.
    /// Blocking; checks availability first; the same engine and rules as
    /// [`Volume::remove_folder`].
    pub fn remove_folder_copy(
        &self,
        folder: &FolderRef<'_>,
        trash: bool,
        cancel: &CancellationToken,
        progress: &Progress,
    ) -> Result<Outcome, Error> {
        let layout = Layout::of(folder)?;
        let root = self.open_root()?;
        self.remove_copy(root.as_fd(), &layout, trash, folder.id, cancel, progress)
    }

    /// Whether the folder's data is at its live path and at its trash path (directories,
    /// reached without following symlinks). A symlink or file in the way is
    /// [`Error::UnsafePath`]. Blocking; checks availability first; changes nothing.
    pub fn locate(&self, folder: &FolderRef<'_>) -> Result<[bool; 2], Error> {
        let layout = Layout::of(folder)?;
        let root = self.open_root()?;
        let leaf = leaf_name(&layout, folder.id)?;
        let mut found = [false; 2];
        for (slot, trash) in found.iter_mut().zip([false, true]) {
            let comps = parent_comps(&layout, trash);
            let Some(dirs) = self.open_dirs(root.as_fd(), &comps, folder.id)? else {
                continue;
            };
            let parent = dirs.last().map_or(root.as_fd(), |f| f.as_fd());
            *slot = match rustix::fs::statat(parent, &leaf, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode) == FileType::Directory,
                Err(Errno::NOENT) => false,
                Err(source) => {
                    return Err(Error::Io {
                        folder: Some(folder.id),
                        op: "stat",
                        path: layout.relative(trash),
                        source,
                    });
                }
            };
        }
        Ok(found)
    }

    /// Renames the folder from its live path to its trash path, creating the trash
    /// parents. Already in the trash (or in neither place) is success; in both places is
    /// the permanent [`Error::Conflict`]. Blocking; checks availability first.
    pub fn move_to_trash(&self, folder: &FolderRef<'_>) -> Result<(), Error> {
        self.move_folder(folder, false)
    }

    /// Renames the folder from its trash path back to its live path; the mirror image of
    /// [`Volume::move_to_trash`] with the same rules.
    pub fn restore_from_trash(&self, folder: &FolderRef<'_>) -> Result<(), Error> {
        self.move_folder(folder, true)
    }

    /// Options for running the remover on this volume directly.
    pub fn remove_options(&self, folder: Option<Uuid>, display_path: PathBuf) -> RemoveOptions {
        RemoveOptions {
            threads: self.config.removal_threads.max(1),
            max_threads: self.config.removal_threads_cap(),
            count_bytes: self.config.count_bytes,
            folder,
            display_path,
            limiter: self.limiter.clone(),
            ..RemoveOptions::default()
        }
    }

    fn unavailable(&self, reason: impl Into<String>) -> Error {
        Error::VolumeUnavailable {
            host: self.config.host.clone(),
            reason: reason.into(),
        }
    }

    /// A failed system call of the volume guard: the volume's failure, unless the process
    /// itself is out of descriptors or memory (then the plain errno, which the controller
    /// treats as its own condition: the guard learned nothing about the volume).
    fn guard_failed(&self, op: &'static str, path: &str, errno: Errno, reason: String) -> Error {
        if super::error::is_exhaustion_errno(errno) {
            return Error::Io {
                folder: None,
                op,
                path: PathBuf::from(path),
                source: errno,
            };
        }
        self.unavailable(reason)
    }

    /// Opens the volume root and proves its identity (see [`Volume::check_available`]).
    pub(super) fn open_root(&self) -> Result<OwnedFd, Error> {
        let mount = &self.config.mount;
        let root = rustix::fs::open(
            mount,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOENT => self.unavailable(format!("{} does not exist", mount.display())),
            Errno::NOTDIR => self.unavailable(format!("{} is not a directory", mount.display())),
            e => self.guard_failed(
                "open",
                ".",
                e,
                format!("cannot open {}: {e}", mount.display()),
            ),
        })?;
        if self.config.require_mount_point {
            let id = ident(root.as_fd()).map_err(|e| {
                self.guard_failed(
                    "stat",
                    ".",
                    e,
                    format!("cannot stat {}: {e}", mount.display()),
                )
            })?;
            let parent = rustix::fs::openat(root.as_fd(), c"..", DIR_FLAGS, Mode::empty())
                .and_then(|p| ident(p.as_fd()))
                .map_err(|e| {
                    self.guard_failed(
                        "open",
                        "..",
                        e,
                        format!("cannot stat the parent of {}: {e}", mount.display()),
                    )
                })?;
            if !id.mount_root && id.dev == parent.dev {
                return Err(self.unavailable(format!("{} is not a mount point", mount.display())));
            }
        }
        if let Some(marker) = &self.config.marker_file {
            match rustix::fs::statat(root.as_fd(), marker, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(_) => {}
                Err(Errno::NOENT) => {
                    return Err(self.unavailable(format!(
                        "marker file {} is missing",
                        mount.join(marker).display()
                    )));
                }
                Err(e) => {
                    return Err(self.guard_failed(
                        "stat",
                        &marker.display().to_string(),
                        e,
                        format!(
                            "cannot stat marker file {}: {e}",
                            mount.join(marker).display()
                        ),
                    ));
                }
            }
        }
        Ok(root)
    }

    /// Opens `comps` one below the other beneath `base` without following symlinks.
    /// Returns every opened directory (the last is the deepest), or `None` when one is
    /// missing. A symlink or non-directory on the way is [`Error::UnsafePath`].
    fn open_dirs(
        &self,
        base: BorrowedFd<'_>,
        comps: &[&str],
        folder: Uuid,
    ) -> Result<Option<Vec<OwnedFd>>, Error> {
        let mut fds: Vec<OwnedFd> = Vec::with_capacity(comps.len());
        for (i, comp) in comps.iter().enumerate() {
            let dir = fds.last().map_or(base, |f| f.as_fd());
            match rustix::fs::openat(dir, *comp, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => fds.push(fd),
                Err(Errno::NOENT) => return Ok(None),
                Err(e) => return Err(path_error(folder, &comps[..=i], "open", e)),
            }
        }
        Ok(Some(fds))
    }

    /// Like [`Volume::open_dirs`], creating missing directories. A directory that vanishes
    /// on the way (a concurrent removal pruning an empty fan-out directory) is retried.
    fn make_dirs(
        &self,
        base: BorrowedFd<'_>,
        comps: &[&str],
        folder: Uuid,
    ) -> Result<OwnedFd, Error> {
        let mut attempts = 0;
        loop {
            match self.make_dirs_once(base, comps, folder) {
                Err(Error::Io {
                    source: Errno::NOENT,
                    ..
                }) if attempts < 3 => attempts += 1,
                result => return result,
            }
        }
    }

    fn make_dirs_once(
        &self,
        base: BorrowedFd<'_>,
        comps: &[&str],
        folder: Uuid,
    ) -> Result<OwnedFd, Error> {
        let mut current: Option<OwnedFd> = None;
        for (i, comp) in comps.iter().enumerate() {
            let dir = current.as_ref().map_or(base, |f| f.as_fd());
            match rustix::fs::mkdirat(dir, *comp, Mode::from_raw_mode(DIR_MODE)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(path_error(folder, &comps[..=i], "create directory", e)),
            }
            let fd = rustix::fs::openat(dir, *comp, DIR_FLAGS, Mode::empty())
                .map_err(|e| path_error(folder, &comps[..=i], "open", e))?;
            current = Some(fd);
        }
        current.ok_or(Error::Io {
            folder: Some(folder),
            op: "create directory",
            path: PathBuf::new(),
            source: Errno::INVAL,
        })
    }

    /// Removes one copy (live or trash) of the folder and prunes its fan-out parents.
    fn remove_copy(
        &self,
        root: BorrowedFd<'_>,
        layout: &Layout,
        trash: bool,
        folder: Uuid,
        cancel: &CancellationToken,
        progress: &Progress,
    ) -> Result<Outcome, Error> {
        let comps = parent_comps(layout, trash);
        let started = std::time::Instant::now();
        let Some(dirs) = self.open_dirs(root, &comps, folder)? else {
            return Ok(Outcome::Completed(Report::nothing().since(started)));
        };
        let leaf = leaf_name(layout, folder)?;
        let parent = dirs.last().map_or(root, |f| f.as_fd());
        let opts = self.remove_options(Some(folder), layout.relative(trash));
        let outcome = remove_tree(parent, &leaf, &opts, cancel, progress)?;
        if let Outcome::Completed(_) = outcome {
            prune_fanout(root, &dirs, &comps, folder, self.limiter.as_deref())?;
        }
        Ok(outcome)
    }

    fn move_folder(&self, folder: &FolderRef<'_>, from_trash: bool) -> Result<(), Error> {
        let layout = Layout::of(folder)?;
        let root = self.open_root()?;
        let leaf = leaf_name(&layout, folder.id)?;
        let src_comps = parent_comps(&layout, from_trash);
        let dst_comps = parent_comps(&layout, !from_trash);
        let src_rel = layout.relative(from_trash);
        let dst_rel = layout.relative(!from_trash);
        let exists = |dirs: &Option<Vec<OwnedFd>>, rel: &Path| -> Result<bool, Error> {
            let Some(parent) = dirs.as_ref().and_then(|d| d.last()) else {
                return Ok(false);
            };
            match rustix::fs::statat(parent.as_fd(), &leaf, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => Ok(true),
                Ok(_) => Err(Error::UnsafePath {
                    folder: Some(folder.id),
                    path: rel.to_owned(),
                    reason: "the folder path is a symlink or not a directory",
                }),
                Err(Errno::NOENT) => Ok(false),
                Err(e) => Err(Error::Io {
                    folder: Some(folder.id),
                    op: "stat",
                    path: rel.to_owned(),
                    source: e,
                }),
            }
        };
        let src_dirs = self.open_dirs(root.as_fd(), &src_comps, folder.id)?;
        if !exists(&src_dirs, &src_rel)? {
            // Already moved, or nothing to move: either way there is nothing to do.
            return Ok(());
        }
        let dst_dirs = self.open_dirs(root.as_fd(), &dst_comps, folder.id)?;
        if exists(&dst_dirs, &dst_rel)? {
            return Err(Error::Conflict {
                folder: folder.id,
                from: src_rel,
                to: dst_rel,
            });
        }
        let dst_parent = self.make_dirs(root.as_fd(), &dst_comps, folder.id)?;
        let Some(src_dirs) = src_dirs else {
            return Ok(());
        };
        let src_parent = src_dirs.last().map_or(root.as_fd(), |f| f.as_fd());
        match rustix::fs::renameat_with(
            src_parent,
            &leaf,
            dst_parent.as_fd(),
            &leaf,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                return Err(Error::Conflict {
                    folder: folder.id,
                    from: src_rel,
                    to: dst_rel,
                });
            }
            Err(e) => {
                return Err(Error::Io {
                    folder: Some(folder.id),
                    op: "rename",
                    path: src_rel,
                    source: e,
                });
            }
        }
        prune_fanout(
            root.as_fd(),
            &src_dirs,
            &src_comps,
            folder.id,
            self.limiter.as_deref(),
        )
    }
}

/// The directories above the folder: `.trash` (for the trash copy), the scope, the fan-out.
fn parent_comps(layout: &Layout, trash: bool) -> Vec<&str> {
    let trash_dir = trash.then_some(TRASH_DIR);
    trash_dir.into_iter().chain(layout.parents()).collect()
}

fn leaf_name(layout: &Layout, folder: Uuid) -> Result<CString, Error> {
    // Cannot fail: the leaf is hex digits.
    CString::new(layout.leaf.as_bytes()).map_err(|_| Error::Io {
        folder: Some(folder),
        op: "name",
        path: PathBuf::from(&layout.leaf),
        source: Errno::INVAL,
    })
}

/// Removes the two fan-out directories (the last two of `dirs`) if they are empty. The
/// scope directory, `.trash` and the volume root are never candidates. Each rmdir counts
/// against the volume's rate limit.
fn prune_fanout(
    root: BorrowedFd<'_>,
    dirs: &[OwnedFd],
    comps: &[&str],
    folder: Uuid,
    limiter: Option<&OpsLimiter>,
) -> Result<(), Error> {
    let n = dirs.len();
    for level in (n.saturating_sub(2)..n).rev() {
        // `dirs[level]` is a fan-out directory; remove it from its parent by name.
        let parent = if level == 0 {
            root
        } else {
            dirs[level - 1].as_fd()
        };
        if let Some(limiter) = limiter {
            // Not cancellable: the folder itself is gone, and this waits one slot at most
            // per fan-out level.
            limiter.acquire(|| false);
        }
        match rustix::fs::unlinkat(parent, comps[level], AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(Errno::NOTEMPTY | Errno::EXIST) => return Ok(()),
            Err(e) => return Err(path_error(folder, &comps[..=level], "remove directory", e)),
        }
    }
    Ok(())
}

fn path_error(folder: Uuid, comps: &[&str], op: &'static str, e: Errno) -> Error {
    let path: PathBuf = comps.iter().collect();
    match e {
        Errno::LOOP | Errno::NOTDIR => Error::UnsafePath {
            folder: Some(folder),
            path,
            reason: "a symlink or non-directory is in the way",
        },
        source => Error::Io {
            folder: Some(folder),
            op,
            path,
            source,
        },
    }
}
