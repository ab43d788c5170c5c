//! Shared fixtures for the storage tests: a sandbox with a volume and an outside tree,
//! snapshots that compare trees byte for byte, and guards that undo mounts and `chattr +i`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use vfolder_controller::config::{TrashMode, VolumeConfig};
use vfolder_controller::storage::{Counts, FolderRef, Outcome, Progress, Report, Volume};

pub const HOST: &str = "local:test";
pub const SCOPE: &str = "user:fedcba98-7654-3210-fedc-ba9876543210";

/// What a path is, with its content: enough to prove "untouched".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
}

/// Every path under `root` (relative), never following symlinks.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    snapshot_skipping(root, |_| false)
}

/// Like [`snapshot`], leaving out (and not entering) relative paths for which `skip` holds.
pub fn snapshot_skipping(root: &Path, skip: impl Fn(&Path) -> bool) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if skip(&rel) {
                continue;
            }
            let ft = std::fs::symlink_metadata(&p).unwrap().file_type();
            if ft.is_symlink() {
                out.insert(rel, Entry::Symlink(std::fs::read_link(&p).unwrap()));
            } else if ft.is_dir() {
                out.insert(rel, Entry::Dir);
                stack.push(p);
            } else {
                out.insert(rel, Entry::File(std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// Asserts two snapshots are equal, naming only the paths that differ.
pub fn assert_same(before: &BTreeMap<PathBuf, Entry>, after: &BTreeMap<PathBuf, Entry>) {
    let missing: Vec<_> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    let added: Vec<_> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    let changed: Vec<_> = before
        .iter()
        .filter(|(k, v)| after.get(*k).is_some_and(|a| a != *v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        missing.is_empty() && added.is_empty() && changed.is_empty(),
        "trees differ: missing {missing:?}, added {added:?}, changed {changed:?}"
    );
}

/// A temporary directory on the root filesystem holding `vol/` (the volume root) and
/// `outside/` (a sentinel tree that no removal may touch).
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub volume: Volume,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox::with(|_| {})
    }

    /// A sandbox whose volume configuration is adjusted by `f` before use.
    pub fn with(f: impl FnOnce(&mut VolumeConfig)) -> Sandbox {
        // /tmp is on the root ext4 filesystem here, so chattr works in it.
        let dir = tempfile::Builder::new()
            .prefix("vfc-storage-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::create_dir(dir.path().join("vol")).unwrap();
        make_sentinel(&dir.path().join("outside"));
        let mut config = VolumeConfig {
            host: HOST.to_owned(),
            mount: dir.path().join("vol"),
            removal_threads: 2,
            max_removal_threads: None,
            max_concurrent_removals: 4,
            trash: TrashMode::Move,
            require_mount_point: false,
            marker_file: None,
            count_bytes: false,
            max_ops_per_second: None,
            ..VolumeConfig::builtin_default()
        };
        f(&mut config);
        Sandbox {
            dir,
            volume: Volume::new(config),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn vol(&self) -> PathBuf {
        self.dir.path().join("vol")
    }

    pub fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    /// Creates the folder's directory through the API and returns its absolute path.
    pub fn create(&self, folder: &FolderRef<'_>) -> PathBuf {
        self.volume.create_folder(folder).unwrap()
    }

    pub fn remove(
        &self,
        folder: &FolderRef<'_>,
    ) -> Result<Outcome, vfolder_controller::storage::Error> {
        self.volume
            .remove_folder(folder, &CancellationToken::new(), &Progress::default())
    }

    /// Everything in the sandbox except what lies under `target` (absolute) and its two
    /// fan-out parents themselves (which a removal may prune when they become empty).
    pub fn snapshot_except(&self, target: &Path) -> BTreeMap<PathBuf, Entry> {
        let rel = target.strip_prefix(self.root()).unwrap();
        let fan2 = rel.parent().unwrap();
        let fan1 = fan2.parent().unwrap();
        snapshot_skipping(self.root(), |p| p.starts_with(rel))
            .into_iter()
            .filter(|(p, _)| p != fan2 && p != fan1)
            .collect()
    }
}

pub fn folder(id: Uuid) -> FolderRef<'static> {
    FolderRef {
        id,
        host: HOST,
        quota_scope_id: Some(SCOPE),
    }
}

pub fn new_folder() -> FolderRef<'static> {
    folder(Uuid::new_v4())
}

/// A small tree of every kind of entry, including a non-UTF-8 name.
pub fn make_sentinel(root: &Path) {
    std::fs::create_dir_all(root.join("d1/d2")).unwrap();
    std::fs::write(root.join("top.txt"), b"top secret").unwrap();
    std::fs::write(root.join("d1/one"), b"1").unwrap();
    std::fs::write(root.join("d1/d2/two"), vec![7u8; 10_000]).unwrap();
    std::fs::write(root.join(OsStr::from_bytes(b"bin\xff\xfe")), b"bytes").unwrap();
    symlink("d1/one", root.join("link")).unwrap();
}

/// Fills `dir` with `dirs` subdirectories of `files` small files each; returns the counts
/// that removing `dir` itself should report.
pub fn fill(dir: &Path, dirs: usize, files: usize) -> Counts {
    for d in 0..dirs {
        let sub = dir.join(format!("d{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..files {
            std::fs::write(sub.join(format!("f{f}")), b"x").unwrap();
        }
    }
    Counts {
        files: (dirs * files) as u64,
        dirs: dirs as u64 + 1,
        symlinks: 0,
        bytes: 0,
    }
}

/// The report of a removal that must have completed.
pub fn completed_report(outcome: Outcome) -> Report {
    match outcome {
        Outcome::Completed(r) => r,
        Outcome::Cancelled(r) => panic!("cancelled: {r:?}"),
    }
}

/// The report of a removal that must have been cancelled.
pub fn cancelled_report(outcome: Outcome) -> Report {
    match outcome {
        Outcome::Cancelled(r) => r,
        Outcome::Completed(r) => panic!("expected Cancelled, completed: {r:?}"),
    }
}

pub fn completed(outcome: Outcome) -> Counts {
    completed_report(outcome).counts
}

/// Runs `removal` on another thread and cancels `cancel` once `progress` has counted
/// `files` files (or the removal ended first); returns what the removal returned.
pub fn cancel_after<T: Send>(
    files: u64,
    cancel: &CancellationToken,
    progress: &Progress,
    removal: impl FnOnce() -> T + Send,
) -> T {
    std::thread::scope(|s| {
        let h = s.spawn(removal);
        while progress.snapshot().files < files && !h.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        cancel.cancel();
        h.join().unwrap()
    })
}

/// Mounts a tmpfs at `at`; unmounts it (lazily) when dropped, also on test failure.
pub struct TmpfsMount {
    pub at: PathBuf,
    mounted: bool,
}

impl TmpfsMount {
    pub fn new(at: &Path) -> TmpfsMount {
        std::fs::create_dir_all(at).unwrap();
        rustix::mount::mount(
            "tmpfs",
            at,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            Some(c"size=64m"),
        )
        .unwrap();
        TmpfsMount {
            at: at.to_path_buf(),
            mounted: true,
        }
    }

    pub fn unmount(&mut self) {
        if self.mounted {
            rustix::mount::unmount(&self.at, rustix::mount::UnmountFlags::DETACH).unwrap();
            self.mounted = false;
        }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = rustix::mount::unmount(&self.at, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// A fresh ext4 filesystem in a sparse image file (in a directory of its own, so that
/// snapshots of the sandbox do not read it), loop-mounted at `at`; unmounted (lazily, which
/// also frees the loop device) when dropped, also on test failure.
pub struct Ext4Image {
    pub at: PathBuf,
    _image_dir: tempfile::TempDir,
}

impl Ext4Image {
    /// Makes a `mib` MiB image and mounts it at `at`.
    pub fn new(at: &Path, mib: u64) -> Ext4Image {
        let image_dir = tempfile::Builder::new()
            .prefix("vfc-ext4-")
            .tempdir_in("/tmp")
            .unwrap();
        let image = image_dir.path().join("fs.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(mib << 20))
            .unwrap();
        let run = |cmd: &mut std::process::Command| {
            let out = cmd.output().expect("run");
            assert!(out.status.success(), "{cmd:?}: {out:?}");
        };
        run(std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&image));
        std::fs::create_dir_all(at).unwrap();
        run(std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(at));
        Ext4Image {
            at: at.to_owned(),
            _image_dir: image_dir,
        }
    }
}

impl Drop for Ext4Image {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.at, rustix::mount::UnmountFlags::DETACH);
    }
}

/// Marks `root` and every directory under it for synchronous directory updates
/// (`chattr +D`; symlinks, which have no flags, are passed by): on [`Ext4Image`] each
/// unlink then waits for its own journal commit (milliseconds), so a removal's threads are
/// asleep most of the time, as on a disk that is slow to write or a network filesystem.
pub fn sync_directory_updates(root: &Path) {
    let mut dirs = vec![root.to_path_buf()];
    let mut i = 0;
    while let Some(dir) = dirs.get(i).cloned() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            }
        }
        i += 1;
    }
    let st = std::process::Command::new("chattr")
        .arg("+D")
        .args(&dirs)
        .status()
        .expect("run chattr");
    assert!(st.success(), "chattr +D under {}", root.display());
}

/// Sets the immutable attribute on `path`; clears it when dropped.
pub struct Immutable(pub PathBuf);

impl Immutable {
    pub fn set(path: &Path) -> Immutable {
        let st = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success(), "chattr +i failed on {}", path.display());
        Immutable(path.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}
