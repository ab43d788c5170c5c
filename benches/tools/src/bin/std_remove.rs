//! `std-remove DIR`: removes `DIR` with `std::fs::remove_dir_all`, the baseline that any
//! Rust program gets for free (sequential, fd-relative on Linux).

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: std-remove DIR");
        return ExitCode::FAILURE;
    };
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("std-remove: {}: {e}", dir.to_string_lossy());
            ExitCode::FAILURE
        }
    }
}
