//! Getting work from async callers onto tokio's blocking threads, at most `cap` at once.
//!
//! A plain `spawn_blocking` per signature costs two thread wake-ups per operation (the
//! blocking thread, then the waiting task), which on a small machine is a large share
//! of a 60-90 µs SoftHSM `C_Sign`. Here each token has a queue of jobs and up to `cap`
//! blocking tasks (started with `spawn_blocking`) that drain it. A drainer that runs out
//! of work waits up to 200 µs for the next job before it returns its thread: while a CPU
//! is left for the async side it spins (then yields), so a caller signing in a loop finds
//! it still there and only the wake-up of the waiting task remains; when every CPU is
//! busy signing it sleeps on a condition variable instead of taking CPU from them.
//!
//! A caller that finds a slot free and nothing queued ahead of it runs its job on its
//! own thread instead (`block_in_place`, on the multi-threaded runtime only): a caller
//! signing in a loop then pays no wake-up at all. Measured with
//! `cargo bench -p keyward-pkcs11 --bench sign` (paired rounds), one session went
//! from 58% of the raw `C_Sign` rate to 81-95%, two sessions from 57% to 74-79%.
//!
//! At most `cap` jobs run at once (drainers plus callers running in place), each using
//! one session at a time, so `cap` bounds the sessions in use.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use keyward_core::Error;

use crate::module::lock;

/// How long an idle drainer waits for the next job before it gives its thread back.
const LINGER: Duration = Duration::from_micros(200);

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A job queue drained by at most `cap` blocking tasks.
pub(crate) struct Dispatcher {
    queue: Mutex<Queue>,
    ready: Condvar,
    active: AtomicUsize,
    cap: AtomicUsize,
    /// Drainers may spin for the next job only while they leave a CPU free for the
    /// async side; beyond that they sleep on `ready`.
    cores: usize,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    sleeping: usize,
}

impl Dispatcher {
    /// A dispatcher running at most `cap` jobs at once.
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Dispatcher {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            active: AtomicUsize::new(0),
            cap: AtomicUsize::new(cap.max(1)),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    }

    /// Lowers the bound to `cap` (a later URI asked for fewer sessions); never raises it.
    /// Drainers above the new bound finish their current job and stop.
    pub(crate) fn limit(&self, cap: usize) {
        self.cap.fetch_min(cap.max(1), Ordering::SeqCst);
    }

    /// Runs `f` on a blocking thread and returns its result.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, Error> + Send + 'static,
    {
        if self.may_run_in_place() {
            return self.run_in_place(f);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move || {
            let _ = tx.send(f());
        }));
        rx.await
            .map_err(|_| Error::backend("PKCS#11 operation failed: its worker panicked"))?
    }

    /// Whether the caller's own thread may run the job: on a multi-threaded runtime
    /// (whose other tasks `block_in_place` moves to another thread), with no job
    /// waiting ahead of it and a slot free. This spares a sequential caller both
    /// thread wake-ups of a hand-off, the larger part of a SoftHSM signature's
    /// overhead.
    fn may_run_in_place(&self) -> bool {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        multi_thread && lock(&self.queue).jobs.is_empty() && self.try_start()
    }

    /// Runs `f` here, in the slot [`Self::may_run_in_place`] took, then gives the slot
    /// back (starting a drainer for any job queued meanwhile).
    fn run_in_place<T>(self: &Arc<Self>, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        let result = catch_unwind(AssertUnwindSafe(|| tokio::task::block_in_place(f)));
        self.active.fetch_sub(1, Ordering::SeqCst);
        if !lock(&self.queue).jobs.is_empty() && self.try_start() {
            let this = Arc::clone(self);
            tokio::task::spawn_blocking(move || this.drain());
        }
        result.unwrap_or_else(|_| Err(Error::backend("PKCS#11 operation failed: it panicked")))
    }

    fn submit(self: &Arc<Self>, job: Job) {
        let wake = {
            let mut q = lock(&self.queue);
            q.jobs.push_back(job);
            q.sleeping > 0
        };
        if wake {
            self.ready.notify_one();
        }
        if self.try_start() {
            let this = Arc::clone(self);
            tokio::task::spawn_blocking(move || this.drain());
        }
    }

    /// Takes a drainer slot if one is free.
    fn try_start(&self) -> bool {
        let mut active = self.active.load(Ordering::SeqCst);
        loop {
            if active >= self.cap.load(Ordering::SeqCst) {
                return false;
            }
            match self.active.compare_exchange(
                active,
                active + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(now) => active = now,
            }
        }
    }

    fn pop(&self) -> Option<Job> {
        lock(&self.queue).jobs.pop_front()
    }

    /// The body of a blocking task: run jobs until there are none for a while.
    fn drain(&self) {
        loop {
            let job = match self.pop() {
                Some(job) => Some(job),
                None => self.linger(),
            };
            if let Some(job) = job {
                // A panicking job drops its result sender (its caller gets an error);
                // the drainer and its slot stay.
                let _ = catch_unwind(AssertUnwindSafe(job));
                if self.active.load(Ordering::SeqCst) <= self.cap.load(Ordering::SeqCst) {
                    continue;
                }
            }
            // Give the slot back, then make sure no job pushed meanwhile is stranded.
            self.active.fetch_sub(1, Ordering::SeqCst);
            if lock(&self.queue).jobs.is_empty() || !self.try_start() {
                return;
            }
        }
    }

    /// Waits up to `LINGER` for a job. While a CPU is left for the async side, it spins,
    /// yielding the CPU to whoever will submit the job, so that job starts without a
    /// wake-up; when every CPU is busy signing it sleeps instead, leaving them to work.
    fn linger(&self) -> Option<Job> {
        let deadline = Instant::now() + LINGER;
        if self.active.load(Ordering::SeqCst) < self.cores {
            let mut spins = 0u32;
            while Instant::now() < deadline {
                // Briefly spin in place (the submitter usually runs on another CPU),
                // then yield the CPU between looks.
                if spins < 64 {
                    spins += 1;
                    for _ in 0..64 {
                        std::hint::spin_loop();
                    }
                } else {
                    std::thread::yield_now();
                }
                if let Some(job) = self.pop() {
                    return Some(job);
                }
            }
            return None;
        }
        let mut q = lock(&self.queue);
        q.sleeping += 1;
        let job = loop {
            if let Some(job) = q.jobs.pop_front() {
                break Some(job);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            q = self
                .ready
                .wait_timeout(q, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        q.sleeping -= 1;
        job
    }
}
