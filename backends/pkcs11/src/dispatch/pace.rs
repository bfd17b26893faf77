//! How long a token's quick jobs (signatures) take: it tells the dispatcher whether a
//! signature may run straight on a runtime worker thread, as a software key's does, or
//! must first hand the worker's other tasks to another thread.
//!
//! A job's time is the token's, not the machine's: a job that spent most of its time
//! on the CPU (an in-process token such as SoftHSM) counts its thread's CPU time, so
//! that a busy or shared machine preempting its signatures does not make a fast token
//! look slow; a job that mostly waited (a USB or network HSM) counts its wall time.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::time::{ClockId, clock_gettime};

/// Quick jobs that take at most this run straight on the caller's worker thread, as a
/// software issuance (about 100 µs) does. A SoftHSM ECDSA P-256 signature takes 60-90 µs
/// on a quiet machine and about 150 µs on a busy shared VM (its raw loop: 6,800 a second
/// on one thread), more when preempted, and SoftHSM opens and locks its token files for
/// each one; at 200 µs such a token kept leaving the direct path on that VM
/// (`keyward-bench issue --ca softhsm --concurrency 4`: 0.65 of the raw loop, with a
/// fifth of the CPU idle and three to four times its context switches). Slower tokens
/// (RSA-2048 on SoftHSM, about 1 ms; USB and network HSMs) hand the worker's other tasks
/// to another thread first (`block_in_place`). Meanwhile those tasks wait at most this
/// long, unless another worker takes them first.
const SHORT: Duration = Duration::from_micros(500);

/// How many recent durations are kept.
const KEPT: usize = 8;

/// How many of them must be short for the direct path: a busy machine that preempts a
/// signature now and then does not push a fast token off it, while a token that is
/// slow more than now and then leaves it within a few jobs.
const SHORT_ENOUGH: usize = 6;

/// The durations of a token's most recent quick jobs, in µs (`u32::MAX` where none was
/// measured yet, so a new token takes the cautious path for its first jobs).
pub(super) struct Pace {
    recent_us: [AtomicU32; KEPT],
    next: AtomicUsize,
}

impl Pace {
    /// A pace with nothing measured.
    pub(super) fn new() -> Self {
        Pace {
            recent_us: std::array::from_fn(|_| AtomicU32::new(u32::MAX)),
            next: AtomicUsize::new(0),
        }
    }

    /// Whether recent quick jobs were short enough to run straight on a worker thread.
    pub(super) fn is_short(&self) -> bool {
        let short = SHORT.as_micros() as u32;
        self.recent_us
            .iter()
            .filter(|d| d.load(Ordering::Relaxed) <= short)
            .count()
            >= SHORT_ENOUGH
    }

    /// Runs `job` and keeps its duration ([`counted`]).
    pub(super) fn time<T>(&self, job: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let cpu_before = thread_cpu();
        let out = job();
        let took = counted(started.elapsed(), thread_cpu().saturating_sub(cpu_before));
        let took = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % KEPT;
        self.recent_us[slot].store(took, Ordering::Relaxed);
        out
    }
}

/// The time a job that took `wall` and `cpu` counts: its CPU time when that was at
/// least half of it (the rest was the thread waiting for a CPU), else its wall time
/// (it waited for the token).
fn counted(wall: Duration, cpu: Duration) -> Duration {
    if cpu * 2 >= wall { cpu } else { wall }
}

/// The CPU time this thread has used so far.
fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slow() {
        std::thread::sleep(Duration::from_millis(2));
    }

    #[test]
    fn a_token_is_short_after_enough_fast_jobs_and_until_slow_ones_add_up() {
        let pace = Pace::new();
        for _ in 0..SHORT_ENOUGH - 1 {
            pace.time(|| ());
        }
        assert!(!pace.is_short(), "too few measured");
        pace.time(|| ());
        assert!(pace.is_short());
        pace.time(slow);
        assert!(pace.is_short(), "one preempted job does not count");
        for _ in 0..KEPT - SHORT_ENOUGH {
            pace.time(slow);
        }
        assert!(!pace.is_short(), "3 slow of the last 8");
    }

    #[test]
    fn a_job_that_computed_counts_its_cpu_time_and_one_that_waited_its_wall_time() {
        let us = Duration::from_micros;
        assert_eq!(
            counted(us(400), us(150)),
            us(400),
            "waited more than it computed"
        );
        assert_eq!(
            counted(us(280), us(150)),
            us(150),
            "preempted while computing"
        );
        assert_eq!(counted(us(100), us(100)), us(100));
        // Measured: a sleep counts its wall time, a busy loop its CPU time.
        let pace = Pace::new();
        pace.time(slow);
        assert!(pace.recent_us[0].load(Ordering::Relaxed) >= 2_000);
        pace.time(|| {
            let start = Instant::now();
            while start.elapsed() < us(300) {
                std::hint::black_box(());
            }
        });
        let busy = pace.recent_us[1].load(Ordering::Relaxed);
        assert!((150..=300_000).contains(&busy), "{busy} µs");
    }
}
