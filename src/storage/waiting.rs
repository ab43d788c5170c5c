//! How much of their time a removal's threads spend waiting on the storage.
//!
//! The kernel keeps, per thread, the time it ran and the time it was runnable but waiting for
//! a core (`/proc/<pid>/task/<tid>/schedstat`: `sum_exec_runtime run_delay timeslices`, both
//! in nanoseconds). Whatever is left of the wall-clock time the thread slept: in a removal
//! that is waiting for the device, a journal commit or a network filesystem's reply, or
//! waiting for work. Time spent waiting for a core is not counted, so a machine busy with
//! other work does not read as slow storage.

use std::fs::File;
use std::mem;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// Reads the scheduler statistics of a set of threads of this process and tells, window by
/// window, how long they slept in total.
///
/// Every failure (no `/proc`, a kernel without scheduler statistics, a thread that has
/// ended) makes a thread unwatched rather than an error: a probe that cannot see reports
/// nothing, and the caller then keeps its threads as they are.
#[derive(Debug)]
pub(crate) struct WaitProbe {
    threads: Vec<Watched>,
    since: Instant,
}

#[derive(Debug)]
struct Watched {
    file: File,
    /// Run time plus run-queue delay at the start of the window, in nanoseconds.
    busy_ns: u64,
    /// Watched since within the current window: it is counted from the next one on.
    fresh: bool,
}

/// How the watched threads spent one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    /// The window's wall-clock length.
    pub length: Duration,
    /// The threads watched for the whole window.
    pub threads: usize,
    /// The time those threads slept, summed (at most `length * threads`).
    pub slept: Duration,
}

impl WaitProbe {
    /// A probe that watches no thread yet; its first window starts now.
    pub(crate) fn new() -> WaitProbe {
        WaitProbe {
            threads: Vec::new(),
            since: Instant::now(),
        }
    }

    /// Starts watching thread `tid` of this process; it counts from the next window on.
    /// `false` if its statistics cannot be read.
    pub(crate) fn watch(&mut self, tid: rustix::thread::Pid) -> bool {
        let path = format!("/proc/self/task/{}/schedstat", tid.as_raw_nonzero());
        let Ok(file) = File::open(path) else {
            return false;
        };
        let Some(busy_ns) = busy(&file) else {
            return false;
        };
        self.threads.push(Watched {
            file,
            busy_ns,
            fresh: true,
        });
        true
    }

    /// Ends the current window and starts the next: how the threads watched for all of it
    /// spent it. A thread whose statistics can no longer be read (it ended) is dropped.
    pub(crate) fn sample(&mut self) -> Window {
        let now = Instant::now();
        let length = now.duration_since(self.since);
        self.since = now;
        let length_ns = u64::try_from(length.as_nanos()).unwrap_or(u64::MAX);
        let mut threads = 0;
        let mut slept_ns = 0u64;
        self.threads.retain_mut(|t| {
            let Some(now_busy) = busy(&t.file) else {
                return false;
            };
            let busy_ns = now_busy.saturating_sub(t.busy_ns);
            t.busy_ns = now_busy;
            if !mem::take(&mut t.fresh) {
                threads += 1;
                slept_ns = slept_ns.saturating_add(length_ns.saturating_sub(busy_ns));
            }
            true
        });
        Window {
            length,
            threads,
            slept: Duration::from_nanos(slept_ns),
        }
    }
}

/// A thread's run time plus run-queue delay so far, from its `schedstat` file.
fn busy(file: &File) -> Option<u64> {
    let mut buf = [0u8; 96];
    let n = file.read_at(&mut buf, 0).ok()?;
    parse_busy(buf.get(..n)?)
}

/// The sum of the first two numbers of a `schedstat` line.
fn parse_busy(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    let mut fields = text.split_ascii_whitespace().map(str::parse::<u64>);
    let run = fields.next()?.ok()?;
    let queued = fields.next()?.ok()?;
    run.checked_add(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedstat_line_gives_run_time_plus_run_queue_delay() {
        assert_eq!(parse_busy(b"1201511 300 3\n"), Some(1_201_811));
        assert_eq!(parse_busy(b"0 0 1\n"), Some(0));
        assert_eq!(parse_busy(b"12\n"), None);
        assert_eq!(parse_busy(b"x 1 2\n"), None);
        assert_eq!(parse_busy(b""), None);
    }

    #[test]
    fn a_sleeping_thread_reads_as_sleeping_and_a_spinning_one_does_not() {
        let mut probe = WaitProbe::new();
        assert!(
            probe.watch(rustix::thread::gettid()),
            "schedstat is readable"
        );
        std::thread::sleep(Duration::from_millis(30));
        let first = probe.sample();
        assert_eq!(
            first.threads, 0,
            "a fresh thread counts from the next window"
        );
        std::thread::sleep(Duration::from_millis(60));
        let w = probe.sample();
        assert_eq!(w.threads, 1);
        assert!(w.slept >= w.length / 2, "{w:?}: a window spent in sleep()");
        let until = Instant::now() + Duration::from_millis(60);
        let mut spins = 0u64;
        while Instant::now() < until {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
        let w = probe.sample();
        assert!(w.slept < w.length / 2, "{w:?}: a window spent spinning");
    }
}
