//! The remover never touches anything outside the folder: symlinks in the path and in the
//! tree, a directory swapped for a symlink mid-removal, bad scope ids, unknown hosts,
//! unmounted volumes, mounts inside the tree, immutable files and unreadable directories.
//! Every test compares the rest of the sandbox byte for byte before and after.

use crate::storage_support;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rustix::fs::{CWD, RenameFlags};
use storage_support::*;
use tokio_util::sync::CancellationToken;
use vfolder_controller::storage::{FolderRef, Progress, Volumes};

#[test]
fn a_folder_path_that_is_a_symlink_to_outside_is_refused_and_left_alone() {
    let sb = Sandbox::new();
    let f = new_folder();
    let path = sb.create(&f);
    std::fs::remove_dir(&path).unwrap();
    symlink(sb.outside(), &path).unwrap();
    let before = snapshot(sb.root());
    let err = sb.remove(&f).unwrap_err();
    assert_eq!(err.kind(), "unsafe-path", "{err}");
    assert!(!err.is_transient());
    assert!(
        err.to_string().contains(&f.id.simple().to_string()),
        "{err}"
    );
    assert_same(&before, &snapshot(sb.root()));
    assert_eq!(
        sb.volume.move_to_trash(&f).unwrap_err().kind(),
        "unsafe-path"
    );
    assert_same(&before, &snapshot(sb.root()));
}

#[test]
fn a_scope_directory_that_is_a_symlink_to_outside_is_refused() {
    let sb = Sandbox::new();
    let f = new_folder();
    // The same layout outside, reachable only through the symlinked scope directory.
    let rel = sb.volume.folder_path(&f).unwrap();
    let decoy_scope = sb.outside().join("scope");
    fill(
        &decoy_scope.join(rel.strip_prefix(rel.iter().next().unwrap()).unwrap()),
        2,
        2,
    );
    std::fs::create_dir_all(sb.vol()).unwrap();
    symlink(&decoy_scope, sb.vol().join(rel.iter().next().unwrap())).unwrap();
    let before = snapshot(sb.root());
    for err in [
        sb.remove(&f).unwrap_err(),
        sb.volume.create_folder(&f).unwrap_err(),
        sb.volume.move_to_trash(&f).unwrap_err(),
    ] {
        assert_eq!(err.kind(), "unsafe-path", "{err}");
        assert!(!err.is_transient());
    }
    assert_same(&before, &snapshot(sb.root()));
}

#[test]
fn symlinks_inside_the_tree_are_unlinked_not_followed() {
    let sb = Sandbox::new();
    let f = new_folder();
    let path = sb.create(&f);
    symlink(sb.outside().join("top.txt"), path.join("to-file")).unwrap();
    symlink(sb.outside().join("d1"), path.join("to-dir")).unwrap();
    std::fs::create_dir(path.join("sub")).unwrap();
    symlink("../../../../../outside", path.join("sub/relative")).unwrap();
    symlink("/", path.join("sub/root")).unwrap();
    let before = sb.snapshot_except(&path);
    let counts = completed(sb.remove(&f).unwrap());
    assert_eq!((counts.symlinks, counts.files, counts.dirs), (4, 0, 2));
    assert!(!path.exists());
    assert_same(&before, &sb.snapshot_except(&path));
}

/// Swaps two names in one directory atomically, over and over, until told to stop.
fn swap_until(stop: &AtomicBool, swaps: &AtomicUsize, a: &Path, b: &Path) {
    while !stop.load(Ordering::Relaxed) {
        // Fails once the remover has taken one of the names; keep trying anyway.
        if rustix::fs::renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).is_ok() {
            swaps.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn a_directory_swapped_for_a_symlink_during_removal_never_redirects_it() {
    let sb = Sandbox::new();
    let victim = sb.outside().join("victim");
    fill(&victim, 5, 5);
    let started = std::time::Instant::now();
    let mut rounds = 0;
    while rounds < 20 || started.elapsed() < std::time::Duration::from_secs(3) {
        rounds += 1;
        let f = new_folder();
        let path = sb.create(&f);
        fill(&path.join("a"), 8, 8);
        symlink(&victim, path.join("b")).unwrap();
        fill(&path.join("a/d0/deep"), 4, 4);
        symlink(&victim, path.join("a/d0/link")).unwrap();
        let before = sb.snapshot_except(&path);
        let stop = AtomicBool::new(false);
        let swaps = AtomicUsize::new(0);
        let result = std::thread::scope(|s| {
            s.spawn(|| swap_until(&stop, &swaps, &path.join("a"), &path.join("b")));
            s.spawn(|| {
                swap_until(
                    &stop,
                    &swaps,
                    &path.join("a/d0/deep"),
                    &path.join("a/d0/link"),
                )
            });
            // Attack first, then remove while the swapping goes on.
            while swaps.load(Ordering::Relaxed) < 100 {
                std::thread::yield_now();
            }
            let r = sb.remove(&f);
            stop.store(true, Ordering::Relaxed);
            r
        });
        // Whatever the outcome under attack, nothing outside moved.
        if let Err(e) = &result {
            assert!(matches!(e.kind(), "tree-changed" | "io"), "{e}");
        }
        assert_same(&before, &sb.snapshot_except(&path));
        // Without the attacker, a second call finishes the job.
        completed(sb.remove(&f).unwrap());
        assert!(!path.exists());
        assert_same(&before, &sb.snapshot_except(&path));
    }
}

#[test]
fn bad_quota_scope_ids_are_permanent_errors_naming_folder_and_value() {
    let sb = Sandbox::new();
    let before = snapshot(sb.root());
    for bad in [
        "..",
        "/",
        "user:../..",
        "user:/etc",
        "",
        "garbage",
        "user:",
        "project:1234",
    ] {
        let f = FolderRef {
            quota_scope_id: Some(bad),
            ..new_folder()
        };
        let errs = [
            sb.remove(&f).unwrap_err(),
            sb.volume.create_folder(&f).unwrap_err(),
            sb.volume.move_to_trash(&f).unwrap_err(),
            sb.volume.restore_from_trash(&f).unwrap_err(),
            sb.volume.folder_path(&f).unwrap_err(),
        ];
        for err in errs {
            assert_eq!(err.kind(), "bad-scope", "{bad:?}: {err}");
            assert!(!err.is_transient());
            let msg = err.to_string();
            assert!(
                msg.contains(&f.id.simple().to_string()) && msg.contains(&format!("{bad:?}")),
                "{msg}"
            );
        }
    }
    assert_same(&before, &snapshot(sb.root()));
}

#[test]
fn a_host_without_a_configured_volume_is_a_permanent_error() {
    let sb = Sandbox::new();
    let volumes = Volumes::new(std::slice::from_ref(sb.volume.config()));
    assert_eq!(volumes.get(HOST).unwrap().host(), HOST);
    assert_eq!(volumes.iter().count(), 1);
    let err = volumes.get("local:nope").unwrap_err();
    assert_eq!(err.kind(), "unknown-volume");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("local:nope"));
}

#[test]
fn an_unmounted_volume_is_unavailable_not_already_removed() {
    let sb = Sandbox::with(|c| {
        c.require_mount_point = true;
        c.marker_file = Some(".vfolder-volume".into());
    });
    let mut mount = TmpfsMount::new(&sb.vol());
    let f = new_folder();
    let missing_marker = sb.volume.check_available().unwrap_err();
    assert_eq!(missing_marker.kind(), "volume-unavailable");
    assert!(
        missing_marker.to_string().contains("marker"),
        "{missing_marker}"
    );
    std::fs::write(sb.vol().join(".vfolder-volume"), b"").unwrap();
    sb.volume.check_available().unwrap();
    fill(&sb.create(&f), 2, 2);
    mount.unmount();
    let before = snapshot(sb.root());
    for err in [
        sb.volume.check_available().unwrap_err(),
        sb.remove(&f).unwrap_err(),
        sb.volume.move_to_trash(&f).unwrap_err(),
        sb.volume.create_folder(&f).unwrap_err(),
    ] {
        assert_eq!(err.kind(), "volume-unavailable", "{err}");
        assert!(err.is_transient());
        assert!(err.to_string().contains(HOST), "{err}");
    }
    assert_same(&before, &snapshot(sb.root()));
    // A missing mount directory is unavailable too.
    std::fs::remove_dir(sb.vol()).unwrap();
    assert_eq!(sb.remove(&f).unwrap_err().kind(), "volume-unavailable");
}

#[test]
fn a_filesystem_mounted_inside_the_tree_is_not_entered() {
    let sb = Sandbox::new();
    let f = new_folder();
    let path = sb.create(&f);
    fill(&path, 3, 3);
    let _mount = TmpfsMount::new(&path.join("sub/mnt"));
    make_sentinel(&path.join("sub/mnt/data"));
    let inside = snapshot(&path.join("sub/mnt"));
    let before = sb.snapshot_except(&path);
    let err = sb.remove(&f).unwrap_err();
    assert_eq!(err.kind(), "mount-inside-tree", "{err}");
    assert!(!err.is_transient());
    let rel = sb.volume.folder_path(&f).unwrap().join("sub/mnt");
    assert!(
        err.to_string().contains(&rel.display().to_string()),
        "{err}"
    );
    assert_eq!(snapshot(&path.join("sub/mnt")), inside);
    assert!(!path.join("d0").exists(), "the rest of the tree is removed");
    assert_same(&before, &sb.snapshot_except(&path));
}

#[test]
fn an_immutable_file_is_a_permanent_permission_error_naming_it() {
    let sb = Sandbox::new();
    let f = new_folder();
    let path = sb.create(&f);
    fill(&path, 3, 3);
    std::fs::write(path.join("d1/locked"), b"keep").unwrap();
    let guard = Immutable::set(&path.join("d1/locked"));
    let before = sb.snapshot_except(&path);
    let progress = Progress::default();
    let err = sb
        .volume
        .remove_folder(&f, &CancellationToken::new(), &progress)
        .unwrap_err();
    assert_eq!(err.kind(), "permission", "{err}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("d1/locked"), "{err}");
    assert_eq!(std::fs::read(path.join("d1/locked")).unwrap(), b"keep");
    assert_eq!(progress.snapshot().files, 9);
    assert_eq!(progress.errors(), 1);
    assert_same(&before, &sb.snapshot_except(&path));
    drop(guard);
    completed(sb.remove(&f).unwrap());
    assert!(!path.exists());
}

#[test]
fn a_directory_with_mode_000_is_removed_by_root() {
    let sb = Sandbox::new();
    let f = new_folder();
    let path = sb.create(&f);
    fill(&path.join("closed"), 2, 2);
    std::fs::set_permissions(
        path.join("closed/d0"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    std::fs::set_permissions(path.join("closed"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let before = sb.snapshot_except(&path);
    let counts = completed(sb.remove(&f).unwrap());
    assert_eq!((counts.files, counts.dirs), (4, 4));
    assert!(!path.exists());
    assert_same(&before, &sb.snapshot_except(&path));
}
