//! The remover on real directories: counts, shapes, concurrency, cancellation, fan-out
//! pruning, trash moves and an oracle check against a sequential walk.

use crate::storage_support;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rustix::fs::{Mode, OFlags};
use storage_support::*;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use vfolder_controller::storage::{Counts, FolderRef, Progress};

#[test]
fn a_filled_folder_is_removed_counted_and_reported_live() {
    let sb = Sandbox::with(|c| c.count_bytes = true);
    let f = new_folder();
    let path = sb.create(&f);
    let mut expected = fill(&path, 20, 30);
    std::fs::write(path.join("big"), vec![1u8; 12_345]).unwrap();
    symlink("big", path.join("ln")).unwrap();
    expected.files += 1;
    expected.symlinks = 1;
    expected.bytes = 20 * 30 + 12_345;
    let before = sb.snapshot_except(&path);
    let progress = Progress::default();
    let outcome = sb
        .volume
        .remove_folder(&f, &CancellationToken::new(), &progress)
        .unwrap();
    assert_eq!(completed(outcome), expected);
    assert_eq!(progress.snapshot(), expected);
    assert!(!path.exists());
    assert_same(&before, &sb.snapshot_except(&path));
}

#[test]
fn non_utf8_names_are_removed() {
    let sb = Sandbox::new();
    let f = new_folder();
    let path = sb.create(&f);
    let dir = path.join(OsStr::from_bytes(b"d\xff\x80"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join(OsStr::from_bytes(b"\xfe\xfd file")), b"x").unwrap();
    std::fs::write(path.join(OsStr::from_bytes(b"\x01\x02\xc3\x28")), b"x").unwrap();
    symlink(
        OsStr::from_bytes(b"\xff"),
        path.join(OsStr::from_bytes(b"l\xff")),
    )
    .unwrap();
    let before = sb.snapshot_except(&path);
    let counts = completed(sb.remove(&f).unwrap());
    assert_eq!((counts.files, counts.dirs, counts.symlinks), (2, 2, 1));
    assert!(!path.exists());
    assert_same(&before, &sb.snapshot_except(&path));
}

#[test]
fn a_10000_deep_chain_is_removed() {
    let sb = Sandbox::new();
    let f = new_folder();
    let path = sb.create(&f);
    // Deeper than PATH_MAX allows by name, so build it with directory descriptors.
    let mut fd =
        rustix::fs::open(&path, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    for _ in 0..10_000 {
        rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
        fd = rustix::fs::openat(&fd, "d", OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())
            .unwrap();
    }
    let file = rustix::fs::openat(
        &fd,
        "bottom",
        OFlags::CREATE | OFlags::WRONLY,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    drop((file, fd));
    let before = sb.snapshot_except(&path);
    let counts = completed(sb.remove(&f).unwrap());
    assert_eq!((counts.files, counts.dirs), (1, 10_001));
    assert!(!path.exists());
    assert_same(&before, &sb.snapshot_except(&path));
}

/// Creates `n` empty files named `entry-<i>` in `dir`.
fn many_files(dir: &Path, n: usize) {
    let dir = rustix::fs::open(dir, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    for i in 0..n {
        let name = format!("entry-{i}");
        drop(
            rustix::fs::openat(
                &dir,
                name.as_str(),
                OFlags::CREATE | OFlags::WRONLY,
                Mode::from_raw_mode(0o644),
            )
            .unwrap(),
        );
    }
}

/// Fills `dir` with `n` empty files; the counts of removing it (it included).
fn one_directory(dir: &Path, n: usize) -> Counts {
    many_files(dir, n);
    Counts {
        files: n as u64,
        dirs: 1,
        ..Counts::default()
    }
}

#[test]
fn a_directory_of_100000_entries_is_removed_by_both_threads() {
    let sb = Sandbox::new();
    let f = new_folder();
    let path = sb.create(&f);
    many_files(&path, 100_000);
    let before = sb.snapshot_except(&path);
    let report = completed_report(sb.remove(&f).unwrap());
    assert_eq!((report.counts.files, report.counts.dirs), (100_000, 1));
    // The second thread had no directory of its own: everything it did was help.
    assert!(
        report.helped > 0 && report.helped < 100_000,
        "the thread that read the directory and its helper share it: {report:?}"
    );
    assert!(!path.exists());
    assert_same(&before, &sb.snapshot_except(&path));
}

/// A removal starts its other `removal_threads` only once there is work one of them could
/// take, so the many small folders of a purge do not each pay for thread starts they cannot
/// use (with one thread per core on a 16-core host that was most of a small folder's cost).
#[test]
fn a_removal_starts_its_other_threads_only_when_there_is_work_for_them() {
    let sb = Sandbox::with(|c| {
        c.removal_threads = 8;
        c.max_removal_threads = Some(8);
    });
    type Make = fn(&Path) -> Counts;
    let cases: [(&str, Make, usize); 5] = [
        (
            "one directory of 60 files (one block)",
            |p| one_directory(p, 60),
            1,
        ),
        ("one subdirectory of 20 files", |p| fill(p, 1, 20), 1),
        (
            "one directory of 1,000 files (blocks to share)",
            |p| one_directory(p, 1_000),
            8,
        ),
        ("three subdirectories of 10 files", |p| fill(p, 3, 10), 8),
        (
            "a subdirectory beside 10 files",
            |p| {
                let mut c = fill(p, 1, 10);
                c.files += one_directory(p, 10).files;
                c
            },
            8,
        ),
    ];
    for (shape, make, threads) in cases {
        let f = new_folder();
        let path = sb.create(&f);
        let expected = make(&path);
        let before = sb.snapshot_except(&path);
        let report = completed_report(sb.remove(&f).unwrap());
        assert_eq!(report.counts, expected, "{shape}");
        assert_eq!(report.threads, threads, "{shape}: {report:?}");
        assert!(!path.exists(), "{shape}");
        assert_same(&before, &sb.snapshot_except(&path));
    }
}

#[test]
fn a_big_directory_shared_by_its_threads_stops_when_cancelled_and_a_second_call_finishes() {
    let sb = Sandbox::new();
    let f = new_folder();
    let path = sb.create(&f);
    many_files(&path, 60_000);
    let sub = path.join("sub");
    std::fs::create_dir(&sub).unwrap();
    many_files(&sub, 5_000);
    let before = sb.snapshot_except(&path);
    let cancel = CancellationToken::new();
    let progress = Arc::new(Progress::default());
    let first = cancel_after(20_000, &cancel, &progress, || {
        sb.volume.remove_folder(&f, &cancel, &progress)
    })
    .unwrap();
    let first = cancelled_report(first);
    assert!(path.exists(), "partly removed");
    assert!(first.counts.files < 65_000, "{first:?}");
    let second = completed_report(sb.remove(&f).unwrap());
    let mut total = first.counts;
    total.add(&second.counts);
    assert_eq!(
        (total.files, total.dirs),
        (65_000, 2),
        "each entry counted once"
    );
    assert!(!path.exists());
    assert_same(&before, &sb.snapshot_except(&path));
}

#[test]
fn an_already_removed_folder_is_success_with_zero_counts() {
    let sb = Sandbox::new();
    let f = new_folder();
    let before = snapshot(sb.root());
    assert_eq!(completed(sb.remove(&f).unwrap()), Counts::default());
    let path = sb.create(&f);
    fill(&path, 2, 2);
    completed(sb.remove(&f).unwrap());
    assert_eq!(completed(sb.remove(&f).unwrap()), Counts::default());
    // The scope directory created on the way stays; nothing else changed.
    let mut after = snapshot(sb.root());
    after.remove(Path::new("vol/fedcba9876543210fedcba9876543210"));
    assert_same(&before, &after);
}

#[test]
fn two_removals_of_the_same_folder_at_once_both_succeed_and_count_each_entry_once() {
    for _ in 0..5 {
        let sb = Sandbox::new();
        let f = new_folder();
        let path = sb.create(&f);
        let expected = fill(&path, 100, 40);
        // One directory big enough that each removal's threads share it.
        many_files(&path.join("d0"), 3_000);
        for d in 0..30 {
            let nested = path.join(format!("d{d}/n1/n2"));
            std::fs::create_dir_all(&nested).unwrap();
            std::fs::write(nested.join("f"), b"x").unwrap();
        }
        let before = sb.snapshot_except(&path);
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2).map(|_| s.spawn(|| sb.remove(&f))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut total = Counts::default();
        for r in results {
            total.add(&completed(r.expect("both removals succeed")));
        }
        assert_eq!(total.files, expected.files + 3_030);
        assert_eq!(total.dirs, expected.dirs + 60);
        assert!(!path.exists());
        assert_same(&before, &sb.snapshot_except(&path));
    }
}

#[test]
fn cancellation_returns_cancelled_and_a_second_call_finishes() {
    let sb = Sandbox::new();
    let f = new_folder();
    let path = sb.create(&f);
    let expected = fill(&path, 100, 150);
    let cancel = CancellationToken::new();
    let progress = Arc::new(Progress::default());
    let first = cancel_after(500, &cancel, &progress, || {
        sb.volume.remove_folder(&f, &cancel, &progress)
    })
    .unwrap();
    let first = cancelled_report(first);
    assert!(path.exists(), "partly removed");
    assert!(first.counts.files < expected.files);
    let second = completed(sb.remove(&f).unwrap());
    let mut total = first.counts;
    total.add(&second);
    assert_eq!(total, expected);
    assert!(!path.exists());
}

fn with_prefix(prefix: &str) -> Uuid {
    let rest = &Uuid::new_v4().simple().to_string()[4..];
    Uuid::parse_str(&format!("{prefix}{rest}")).unwrap()
}

#[test]
fn fanout_parents_go_when_empty_and_stay_when_shared_but_scope_and_root_stay() {
    let sb = Sandbox::new();
    let a = folder(with_prefix("abcd"));
    let b = folder(with_prefix("abcd"));
    let c = FolderRef {
        quota_scope_id: None,
        ..folder(with_prefix("ef01"))
    };
    for f in [&a, &b, &c] {
        fill(&sb.create(f), 1, 1);
    }
    let scope = sb.vol().join("fedcba9876543210fedcba9876543210");
    completed(sb.remove(&a).unwrap());
    assert!(scope.join("ab/cd").is_dir(), "still holds b");
    completed(sb.remove(&b).unwrap());
    assert!(!scope.join("ab").exists(), "both fan-out levels pruned");
    assert!(scope.is_dir(), "scope directory stays");
    completed(sb.remove(&c).unwrap());
    assert!(!sb.vol().join("ef").exists());
    assert!(sb.vol().is_dir(), "volume root stays");
}

/// What a trivially correct sequential removal would leave and count: a directory goes
/// only if everything in it goes; `keep` entries (immutable files) stay.
fn oracle(
    dir: &Path,
    keep: &BTreeSet<PathBuf>,
    counts: &mut Counts,
    survivors: &mut BTreeSet<PathBuf>,
) -> bool {
    let mut all_gone = true;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let ft = std::fs::symlink_metadata(&p).unwrap().file_type();
        let gone = if ft.is_dir() {
            oracle(&p, keep, counts, survivors)
        } else if keep.contains(&p) {
            false
        } else {
            if ft.is_symlink() {
                counts.symlinks += 1;
            } else {
                counts.files += 1;
            }
            true
        };
        if !gone {
            survivors.insert(p);
            all_gone = false;
        }
    }
    if all_gone {
        counts.dirs += 1;
    }
    all_gone
}

#[test]
fn the_parallel_remover_matches_a_sequential_oracle_on_random_trees() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for round in 0..4 {
        let sb = Sandbox::with(|c| c.removal_threads = 4);
        let f = new_folder();
        let path = sb.create(&f);
        let mut dirs = vec![path.clone()];
        let mut files = Vec::new();
        for i in 0..600 {
            let parent = dirs[rng.random_range(0..dirs.len())].clone();
            match rng.random_range(0..10) {
                0..=2 => {
                    let d = parent.join(format!("d{i}"));
                    std::fs::create_dir(&d).unwrap();
                    dirs.push(d);
                }
                3 => symlink(sb.outside(), parent.join(format!("l{i}"))).unwrap(),
                _ => {
                    let p = parent.join(format!("f{i}"));
                    std::fs::write(&p, b"data").unwrap();
                    files.push(p);
                }
            }
        }
        // Some rounds have unremovable files: the survivors must match too.
        let keep: BTreeSet<PathBuf> = (0..round)
            .map(|_| files[rng.random_range(0..files.len())].clone())
            .collect();
        let _guards: Vec<_> = keep.iter().map(|p| Immutable::set(p)).collect();
        let mut want = Counts::default();
        let mut survivors = BTreeSet::new();
        let whole_gone = oracle(&path, &keep, &mut want, &mut survivors);
        let outside = sb.snapshot_except(&path);
        let progress = Progress::default();
        let result = sb
            .volume
            .remove_folder(&f, &CancellationToken::new(), &progress);
        if whole_gone {
            assert_eq!(completed(result.unwrap()), want);
            assert!(!path.exists());
        } else {
            let err = result.unwrap_err();
            assert_eq!(err.kind(), "permission", "{err}");
            assert!(!err.is_transient());
            assert_eq!(progress.snapshot(), want);
            let left: BTreeSet<PathBuf> =
                snapshot(&path).into_keys().map(|p| path.join(p)).collect();
            assert_eq!(left, survivors);
        }
        assert_same(&outside, &sb.snapshot_except(&path));
    }
}

#[test]
fn move_to_trash_and_restore_round_trip_byte_for_byte() {
    let sb = Sandbox::new();
    let f = new_folder();
    let live = sb.create(&f);
    make_sentinel(&live.join("content"));
    fill(&live, 3, 3);
    let trash = sb.vol().join(sb.volume.trash_path(&f).unwrap());
    let content = snapshot(&live);
    let others = sb.snapshot_except(&live);

    sb.volume.move_to_trash(&f).unwrap();
    assert!(!live.exists());
    assert_eq!(snapshot(&trash), content);
    sb.volume.move_to_trash(&f).unwrap(); // already done

    sb.volume.restore_from_trash(&f).unwrap();
    assert!(!trash.exists());
    assert_eq!(snapshot(&live), content);
    let mut now = sb.snapshot_except(&live);
    // The trash directory and its scope directory stay for the next folder.
    assert!(now.remove(Path::new("vol/.trash")).is_some());
    assert!(
        now.remove(Path::new("vol/.trash/fedcba9876543210fedcba9876543210"))
            .is_some()
    );
    assert_same(&others, &now);

    // Both copies present: refuse rather than overwrite either.
    std::fs::create_dir_all(&trash).unwrap();
    let err = sb.volume.move_to_trash(&f).unwrap_err();
    assert_eq!(err.kind(), "conflict");
    assert_eq!(snapshot(&live), content);

    // remove_folder takes both copies.
    std::fs::write(trash.join("t"), b"x").unwrap();
    let counts = completed(sb.remove(&f).unwrap());
    assert!(!live.exists() && !trash.exists());
    assert_eq!(
        counts.dirs,
        content.values().filter(|e| **e == Entry::Dir).count() as u64 + 2
    );
}

#[test]
fn remove_tree_removes_an_arbitrary_directory_beneath_an_open_parent() {
    use std::os::fd::AsFd;
    use vfolder_controller::storage::{RemoveOptions, remove_tree};
    let sb = Sandbox::new();
    let tree = sb.root().join("bench/tree");
    let expected = fill(&tree, 10, 10);
    let parent = rustix::fs::open(
        sb.root().join("bench").as_path(),
        OFlags::DIRECTORY | OFlags::RDONLY,
        Mode::empty(),
    )
    .unwrap();
    let opts = RemoveOptions {
        threads: 3,
        count_bytes: false,
        folder: None,
        display_path: "tree".into(),
        limiter: None,
        ..RemoveOptions::default()
    };
    let progress = Progress::default();
    let outcome = remove_tree(
        parent.as_fd(),
        c"tree",
        &opts,
        &CancellationToken::new(),
        &progress,
    )
    .unwrap();
    assert_eq!(completed(outcome), expected);
    assert!(!tree.exists() && sb.root().join("bench").is_dir());
    assert_eq!(progress.errors(), 0);
    // A tree root that is a symlink is refused and left in place.
    symlink(sb.outside(), sb.root().join("bench/tree")).unwrap();
    let err = remove_tree(
        parent.as_fd(),
        c"tree",
        &opts,
        &CancellationToken::new(),
        &progress,
    )
    .unwrap_err();
    assert_eq!(err.kind(), "unsafe-path");
    assert!(
        sb.root()
            .join("bench/tree")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(snapshot(&sb.outside()).len(), 7);
}

#[test]
fn create_folder_makes_the_root_of_a_volume_that_need_not_be_mounted() {
    let sb = Sandbox::new();
    std::fs::remove_dir(sb.vol()).unwrap();
    let f = new_folder();
    assert_eq!(sb.remove(&f).unwrap_err().kind(), "volume-unavailable");
    let path = sb.create(&f);
    assert!(path.is_dir());
    assert_eq!(path, sb.vol().join(sb.volume.folder_path(&f).unwrap()));
}

#[test]
fn two_removals_on_a_rate_limited_volume_together_stay_under_the_limit() {
    const RATE: u32 = 1000;
    let sb = Sandbox::with(|c| c.max_ops_per_second = Some(RATE));
    let (a, b) = (new_folder(), new_folder());
    let mut ops = 0;
    for f in [&a, &b] {
        let c = fill(&sb.create(f), 10, 100);
        // Every file and directory, plus the folder's two fan-out parents.
        ops += c.files + c.dirs + 2;
    }
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for f in [&a, &b] {
            let sb = &sb;
            s.spawn(move || completed(sb.remove(f).unwrap()));
        }
    });
    let elapsed = started.elapsed();
    // Upper bound only: no more than the limit (plus its one burst, 10 % slack).
    let rate = ops as f64 / elapsed.as_secs_f64();
    let burst = f64::from(RATE) * vfolder_controller::storage::rate::BURST.as_secs_f64();
    let bound = 1.1 * (f64::from(RATE) + burst / elapsed.as_secs_f64());
    assert!(
        rate <= bound,
        "{ops} operations in {elapsed:?}: {rate:.0}/s > {bound:.0}/s"
    );
    assert!(!sb.vol().join(sb.volume.folder_path(&a).unwrap()).exists());
    assert!(!sb.vol().join(sb.volume.folder_path(&b).unwrap()).exists());
}

#[test]
fn a_removal_waiting_for_its_rate_limit_stops_when_cancelled() {
    let sb = Sandbox::with(|c| c.max_ops_per_second = Some(2));
    let f = new_folder();
    let path = sb.create(&f);
    fill(&path, 1, 50);
    let cancel = CancellationToken::new();
    let outcome = std::thread::scope(|s| {
        let removal = s.spawn(|| {
            sb.volume
                .remove_folder(&f, &cancel, &Progress::default())
                .unwrap()
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        cancel.cancel();
        removal.join().unwrap()
    });
    let report = cancelled_report(outcome);
    assert!(report.counts.files < 50, "{report:?}");
    assert!(path.is_dir(), "what is left stays for the next attempt");
    assert_eq!(
        std::fs::read_dir(path.join("d0")).unwrap().count() as u64,
        50 - report.counts.files
    );
}

/// A sandbox whose removals start with 1 thread and may grow to 6, under `rate_limit`.
fn growing_sandbox(rate_limit: Option<u32>) -> Sandbox {
    Sandbox::with(|c| {
        c.removal_threads = 1;
        c.max_removal_threads = Some(6);
        c.max_ops_per_second = rate_limit;
    })
}

#[test]
fn a_removal_whose_threads_wait_on_the_storage_starts_more_up_to_its_cap() {
    let sb = growing_sandbox(None);
    let _disk = Ext4Image::new(&sb.vol(), 64);
    let f = new_folder();
    let path = sb.create(&f);
    let expected = fill(&path, 20, 40);
    sync_directory_updates(&path);
    let before = sb.snapshot_except(&path);
    let progress = Progress::default();
    let (outcome, most_seen) = std::thread::scope(|s| {
        let removal = s.spawn(|| {
            sb.volume
                .remove_folder(&f, &CancellationToken::new(), &progress)
                .unwrap()
        });
        let mut most = 0;
        while !removal.is_finished() {
            most = most.max(progress.threads());
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        (removal.join().unwrap(), most)
    });
    let report = completed_report(outcome);
    assert_eq!(report.counts, expected);
    assert!(
        (2..=6).contains(&report.threads),
        "started with 1 thread, may grow to 6: {report:?}"
    );
    // The live count shows the growth while it runs, and nothing once it returned.
    assert!(
        most_seen >= 2 && most_seen as usize <= report.threads,
        "seen {most_seen} threads at work, report {report:?}"
    );
    assert_eq!(progress.threads(), 0);
    assert!(!path.exists());
    assert_same(&before, &sb.snapshot_except(&path));
}

#[test]
fn a_rate_limited_removal_keeps_its_threads_though_they_wait() {
    let sb = growing_sandbox(Some(1_000_000));
    let _disk = Ext4Image::new(&sb.vol(), 64);
    let f = new_folder();
    let path = sb.create(&f);
    let expected = fill(&path, 10, 20);
    sync_directory_updates(&path);
    let report = completed_report(sb.remove(&f).unwrap());
    assert_eq!(report.counts, expected);
    assert_eq!(report.threads, 1, "{report:?}");
    assert!(
        report.elapsed > 2 * vfolder_controller::storage::remove::GROW_WINDOW,
        "the removal outlasted the windows it was judged in: {report:?}"
    );
}

#[test]
fn a_removal_that_keeps_its_core_busy_does_not_start_more_threads() {
    let sb = growing_sandbox(None);
    // On tmpfs an unlink never waits for a device: the one thread is busy, not asleep.
    let _tmpfs = TmpfsMount::new(&sb.vol());
    let f = new_folder();
    let path = sb.create(&f);
    for d in 0..100 {
        let dir = path.join(format!("d{d}"));
        std::fs::create_dir(&dir).unwrap();
        for i in 0..600 {
            std::fs::File::create(dir.join(format!("f{i}"))).unwrap();
        }
    }
    let report = completed_report(sb.remove(&f).unwrap());
    assert_eq!(report.counts.files, 60_000);
    assert_eq!(report.threads, 1, "{report:?}");
    assert!(
        report.elapsed > 2 * vfolder_controller::storage::remove::GROW_WINDOW,
        "the removal outlasted the windows it was judged in: {report:?}"
    );
}
