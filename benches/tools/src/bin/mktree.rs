//! `mktree SHAPE DIR N...`: builds the same benchmark tree every time, fast (two threads where
//! the shape allows), and prints what it built as `files=.. dirs=.. bytes=..` (`dirs`
//! includes `DIR` itself, as the removal engine counts it).
//!
//! Shapes:
//! - `wide DIR DIRS FILES`: `DIRS` directories two levels deep (`tNN/sNN`, about 100
//!   subdirectories per top directory), `FILES` files spread evenly over all of them.
//! - `deep DIR DEPTH PER_LEVEL`: a chain of `DEPTH` directories (`DIR/d/d/...`, `DIR` is the
//!   first), each holding `PER_LEVEL` files. Built by walking the working directory down,
//!   so no path ever exceeds `PATH_MAX`.
//! - `flat DIR FILES`: one directory holding `FILES` files.
//! - `big DIR FILES MIB`: `FILES` files of `MIB` MiB each, really written (not sparse).
//!
//! Small files get a deterministic size between 0 and 4095 bytes (a hash of their index), so
//! most of them own one data block that removal has to free, as in real folders.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What a build created.
#[derive(Default)]
struct Built {
    files: u64,
    dirs: u64,
    bytes: u64,
}

impl Built {
    fn add(&mut self, other: Built) {
        self.files += other.files;
        self.dirs += other.dirs;
        self.bytes += other.bytes;
    }
}

type Result<T> = std::result::Result<T, String>;

const USAGE: &str = "usage: mktree wide DIR DIRS FILES | deep DIR DEPTH PER_LEVEL | flat DIR FILES | big DIR FILES MIB";

/// Bytes of filler that small files are cut from.
static FILLER: [u8; 4096] = [b'v'; 4096];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(b) => {
            println!("files={} dirs={} bytes={}", b.files, b.dirs, b.bytes);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mktree: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<Built> {
    let num = |i: usize| -> Result<u64> {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| USAGE.to_string())
    };
    let shape = args.first().ok_or(USAGE)?;
    let dir = PathBuf::from(args.get(1).ok_or(USAGE)?);
    if dir.symlink_metadata().is_ok() {
        return Err(format!("{} already exists", dir.display()));
    }
    match shape.as_str() {
        "wide" => wide(&dir, num(2)?, num(3)?),
        "deep" => deep(&dir, num(2)?, num(3)?),
        "flat" => flat(&dir, num(2)?),
        "big" => big(&dir, num(2)?, num(3)?),
        _ => Err(USAGE.to_string()),
    }
}

fn ctx(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> String {
    let msg = format!("{what} {}", path.display());
    move |e| format!("{msg}: {e}")
}

fn mkdir(path: &Path) -> Result<()> {
    fs::create_dir(path).map_err(ctx("mkdir", path))
}

/// The size of small file number `i`: deterministic, spread over 0..4096.
fn small_size(i: u64) -> usize {
    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as usize
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(ctx("create", path))?;
    f.write_all(data).map_err(ctx("write", path))
}

/// Creates small files `indices` in `dirs[i % dirs.len()]`, named after their index.
fn small_files(dirs: &[PathBuf], indices: impl Iterator<Item = u64>) -> Result<Built> {
    let mut built = Built::default();
    for i in indices {
        let len = small_size(i);
        let path = dirs[(i % dirs.len() as u64) as usize].join(format!("f{i}"));
        write_file(&path, &FILLER[..len])?;
        built.files += 1;
        built.bytes += len as u64;
    }
    Ok(built)
}

/// Runs `work(k, n)` on `n` threads (`k` = 0..n) and sums what they built.
fn parallel(n: u64, work: impl Fn(u64, u64) -> Result<Built> + Sync) -> Result<Built> {
    let results: Vec<Result<Built>> = std::thread::scope(|s| {
        let work = &work;
        let handles: Vec<_> = (0..n).map(|k| s.spawn(move || work(k, n))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("builder thread panicked".into()))
            })
            .collect()
    });
    let mut total = Built::default();
    for r in results {
        total.add(r?);
    }
    Ok(total)
}

/// Builder threads: the machine's cores (creating files is CPU-bound in the kernel).
fn builder_threads() -> u64 {
    std::thread::available_parallelism().map_or(2, |n| n.get() as u64)
}

fn wide(root: &Path, ndirs: u64, nfiles: u64) -> Result<Built> {
    if ndirs == 0 {
        return Err("wide needs at least one directory".into());
    }
    mkdir(root)?;
    let tops = (ndirs / 100).max(1);
    let mut dirs = Vec::with_capacity(ndirs as usize);
    for t in 0..tops {
        // The first `ndirs % tops` top directories take one extra subdirectory.
        let count = ndirs / tops + u64::from(t < ndirs % tops);
        let top = root.join(format!("t{t:02}"));
        mkdir(&top)?;
        dirs.push(top.clone());
        for s in 1..count {
            let sub = top.join(format!("s{s:02}"));
            mkdir(&sub)?;
            dirs.push(sub);
        }
    }
    let mut built = parallel(builder_threads(), |k, n| {
        small_files(&dirs, (k..nfiles).step_by(n as usize))
    })?;
    built.dirs = ndirs + 1;
    Ok(built)
}

fn flat(root: &Path, nfiles: u64) -> Result<Built> {
    mkdir(root)?;
    let dirs = [root.to_path_buf()];
    let mut built = parallel(builder_threads(), |k, n| {
        small_files(&dirs, (k..nfiles).step_by(n as usize))
    })?;
    built.dirs = 1;
    Ok(built)
}

fn deep(root: &Path, depth: u64, per_level: u64) -> Result<Built> {
    if depth == 0 {
        return Err("deep needs a depth of at least one".into());
    }
    mkdir(root)?;
    std::env::set_current_dir(root).map_err(ctx("chdir", root))?;
    let here = [PathBuf::from(".")];
    let mut built = Built {
        dirs: 1,
        ..Built::default()
    };
    for level in 0..depth {
        built.add(small_files(
            &here,
            (level * per_level)..(level + 1) * per_level,
        )?);
        if level + 1 < depth {
            let next = Path::new("d");
            mkdir(next)?;
            std::env::set_current_dir(next).map_err(ctx("chdir", next))?;
            built.dirs += 1;
        }
    }
    Ok(built)
}

fn big(root: &Path, nfiles: u64, mib: u64) -> Result<Built> {
    mkdir(root)?;
    // Pseudo-random bytes, so nothing on the way can shortcut zeroes.
    let mut chunk = vec![0u8; 1 << 20];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for b in chunk.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut built = parallel(builder_threads(), |k, n| {
        let mut built = Built::default();
        for i in (k..nfiles).step_by(n as usize) {
            let path = root.join(format!("big{i:02}"));
            let mut f = File::create(&path).map_err(ctx("create", &path))?;
            for _ in 0..mib {
                f.write_all(&chunk).map_err(ctx("write", &path))?;
            }
            built.files += 1;
            built.bytes += mib << 20;
        }
        Ok(built)
    })?;
    built.dirs = 1;
    Ok(built)
}
