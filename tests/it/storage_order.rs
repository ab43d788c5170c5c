//! The remover's entry order and its memory cap: directories larger than one chunk, in both
//! orders, keep every guarantee (exact counts, symlinks unlinked not followed, cancellation
//! in the middle of a chunk), and inode order really unlinks in inode order.

use crate::storage_support;

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};
use storage_support::*;
use tokio_util::sync::CancellationToken;
use vfolder_controller::storage::{
    Counts, EntryOrder, OpsLimiter, Outcome, Progress, RemoveOptions, remove_tree,
};

const ORDERS: [EntryOrder; 2] = [EntryOrder::Inode, EntryOrder::Directory];

fn open_dir(path: &Path) -> OwnedFd {
    rustix::fs::open(path, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap()
}

/// Removes `parent/name` with `opts`, returning the outcome.
fn remove(
    parent: &Path,
    name: &str,
    opts: &RemoveOptions,
    cancel: &CancellationToken,
    progress: &Progress,
) -> Outcome {
    let name = CString::new(name).unwrap();
    remove_tree(open_dir(parent).as_fd(), &name, opts, cancel, progress).unwrap()
}

/// One directory `dir` holding `files` files, `links` symlinks to `target` and `subdirs`
/// subdirectories (with two files each); returns what removing `dir` should count.
fn fill_wide_dir(dir: &Path, files: u64, links: u64, subdirs: u64, target: &Path) -> Counts {
    std::fs::create_dir(dir).unwrap();
    for i in 0..files {
        std::fs::write(dir.join(format!("f{i}")), b"x").unwrap();
    }
    for i in 0..links {
        symlink(target, dir.join(format!("l{i}"))).unwrap();
    }
    for i in 0..subdirs {
        let sub = dir.join(format!("d{i}"));
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("a"), b"x").unwrap();
        std::fs::write(sub.join("b"), b"x").unwrap();
    }
    Counts {
        files: files + 2 * subdirs,
        dirs: subdirs + 1,
        symlinks: links,
        bytes: 0,
    }
}

#[test]
fn a_directory_larger_than_a_chunk_is_removed_with_exact_counts_in_either_order() {
    for order in ORDERS {
        for (threads, chunk_entries) in [(1, 1), (1, 7), (3, 7), (2, 64)] {
            let sb = Sandbox::new();
            let tree = sb.root().join("tree");
            let expected = fill_wide_dir(&tree, 1000, 50, 40, &sb.outside());
            let before = snapshot_skipping(sb.root(), |p| p.starts_with("tree"));
            let opts = RemoveOptions {
                threads,
                display_path: "tree".into(),
                order,
                chunk_entries,
                ..RemoveOptions::default()
            };
            let progress = Progress::default();
            let outcome = remove(
                sb.root(),
                "tree",
                &opts,
                &CancellationToken::new(),
                &progress,
            );
            let what = format!("{order:?}, {threads} threads, chunks of {chunk_entries}");
            assert_eq!(completed(outcome), expected, "{what}");
            assert_eq!(progress.snapshot(), expected, "{what}");
            assert_eq!(progress.errors(), 0, "{what}");
            assert!(!tree.exists(), "{what}");
            assert_same(&before, &snapshot(sb.root()));
        }
    }
}

#[test]
fn a_chunk_size_of_zero_counts_as_one() {
    let sb = Sandbox::new();
    let tree = sb.root().join("tree");
    let expected = fill_wide_dir(&tree, 20, 3, 2, &sb.outside());
    let opts = RemoveOptions {
        chunk_entries: 0,
        ..RemoveOptions::default()
    };
    let outcome = remove(
        sb.root(),
        "tree",
        &opts,
        &CancellationToken::new(),
        &Progress::default(),
    );
    assert_eq!(completed(outcome), expected);
    assert!(!tree.exists());
}

#[test]
fn symlinks_in_a_directory_of_many_chunks_are_unlinked_not_followed() {
    for order in ORDERS {
        let sb = Sandbox::new();
        let tree = sb.root().join("tree");
        // Links to an outside file, an outside directory, the filesystem root and the
        // sandbox itself, interleaved with files across many small chunks.
        std::fs::create_dir(&tree).unwrap();
        let targets = [
            sb.outside().join("top.txt"),
            sb.outside().join("d1"),
            "/".into(),
            sb.root().to_path_buf(),
        ];
        for i in 0..200 {
            std::fs::write(tree.join(format!("f{i}")), b"x").unwrap();
            symlink(&targets[i % targets.len()], tree.join(format!("l{i}"))).unwrap();
        }
        let before = snapshot_skipping(sb.root(), |p| p.starts_with("tree"));
        let opts = RemoveOptions {
            threads: 2,
            order,
            chunk_entries: 16,
            ..RemoveOptions::default()
        };
        let counts = completed(remove(
            sb.root(),
            "tree",
            &opts,
            &CancellationToken::new(),
            &Progress::default(),
        ));
        assert_eq!((counts.files, counts.symlinks, counts.dirs), (200, 200, 1));
        assert!(!tree.exists());
        assert_same(&before, &snapshot(sb.root()));
    }
}

/// The names of `dir`'s entries, sorted by inode number.
fn by_inode(dir: &Path) -> Vec<String> {
    let mut entries: Vec<(u64, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.metadata().unwrap().ino(),
                e.file_name().into_string().unwrap(),
            )
        })
        .collect();
    entries.sort();
    entries.into_iter().map(|(_, name)| name).collect()
}

#[test]
fn cancellation_in_the_middle_of_a_chunk_stops_and_inode_order_leaves_the_highest_inodes() {
    const FILES: u64 = 3000;
    let sb = Sandbox::new();
    let tree = sb.root().join("tree");
    fill_wide_dir(&tree, FILES, 0, 0, &sb.outside());
    let order = by_inode(&tree);
    // The whole directory is one chunk, one thread removes it, and the rate limit makes it
    // take about 1.5 s, so the cancellation lands inside that one chunk.
    let opts = RemoveOptions {
        threads: 1,
        limiter: Some(Arc::new(OpsLimiter::new(2000))),
        ..RemoveOptions::default()
    };
    let cancel = CancellationToken::new();
    let progress = Progress::default();
    // Progress is published every 1,024 unlinks within a chunk.
    let first = cancel_after(1024, &cancel, &progress, || {
        remove(sb.root(), "tree", &opts, &cancel, &progress)
    });
    let first = cancelled_report(first);
    let removed = first.counts.files;
    assert!(
        (1024..FILES).contains(&removed),
        "stopped inside the chunk: {first:?}"
    );
    // Unlinked lowest inode first: exactly the highest-numbered ones are left.
    let left: BTreeSet<String> = std::fs::read_dir(&tree)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let want: BTreeSet<String> = order[usize::try_from(removed).unwrap()..]
        .iter()
        .cloned()
        .collect();
    assert_eq!(left, want);
    // A second call finishes; together they counted every file once.
    let opts = RemoveOptions {
        chunk_entries: 100,
        ..RemoveOptions::default()
    };
    let second = completed(remove(
        sb.root(),
        "tree",
        &opts,
        &CancellationToken::new(),
        &Progress::default(),
    ));
    assert_eq!(removed + second.files, FILES);
    assert_eq!(second.dirs, 1);
    assert!(!tree.exists());
}

#[test]
fn cancellation_between_chunks_of_a_large_directory_stops_in_either_order() {
    for order in ORDERS {
        let sb = Sandbox::new();
        let tree = sb.root().join("tree");
        let expected = fill_wide_dir(&tree, 2000, 100, 10, &sb.outside());
        let opts = RemoveOptions {
            threads: 2,
            order,
            chunk_entries: 50,
            limiter: Some(Arc::new(OpsLimiter::new(4000))),
            ..RemoveOptions::default()
        };
        let cancel = CancellationToken::new();
        let progress = Progress::default();
        let first = cancel_after(200, &cancel, &progress, || {
            remove(sb.root(), "tree", &opts, &cancel, &progress)
        });
        let Outcome::Cancelled(first) = first else {
            panic!("{order:?}: expected Cancelled, got {first:?}");
        };
        assert!(first.counts.files < expected.files, "{order:?}: {first:?}");
        assert!(tree.is_dir(), "{order:?}: what is left stays");
        let mut total = first.counts;
        total.add(&completed(remove(
            sb.root(),
            "tree",
            &opts,
            &CancellationToken::new(),
            &Progress::default(),
        )));
        assert_eq!(total, expected, "{order:?}");
        assert!(!tree.exists());
    }
}
