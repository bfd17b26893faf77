//! Getting work from async callers onto threads that may block, at most `cap` at once.
//!
//! A plain `spawn_blocking` per signature costs two thread wake-ups per operation (the
//! blocking thread, then the waiting task). On a VM a wake-up across CPUs costs tens of
//! microseconds, a large share of a 60-90 µs SoftHSM `C_Sign`. So each token has `cap`
//! slots (one session each) and three ways to run a job in one:
//!
//! - **Straight.** A quick job (a signature, [`Dispatcher::run_quick`]) on a token whose
//!   quick jobs are short (see `pace`: an in-process token such as SoftHSM) runs on the
//!   caller's worker thread as it is, like a software signature, when a slot is free
//!   (multi-threaded runtime only). No thread hand-off at all.
//! - **In place.** Otherwise a quick job runs on its caller's own thread after handing
//!   the worker's other tasks to another thread (`block_in_place`, multi-threaded
//!   runtime only) when a slot is free, or after the caller waited up to `WAIT` for one,
//!   spinning, which it may only while that leaves a CPU idle. While it holds the slot
//!   it also runs up to `SERVE` quick jobs from the queue, the older ones before its own.
//! - **Queued, run by a slot holder.** A caller that may not run in place queues its job
//!   and awaits the result; a caller running in place picks the job up, so the waiter
//!   pays one wake-up and no drainer has to be started or woken.
//! - **Drainers.** Blocking tasks (`spawn_blocking`) that drain the queue, for slow jobs
//!   (key generation, listings: [`Dispatcher::run`]), for callers on a current-thread
//!   runtime, and for quick jobs left when the last caller running in place leaves. A
//!   drainer that runs out of work waits up to `LINGER` for the next job: spinning
//!   while a CPU is left for the async side, asleep on a condition variable otherwise.
//!
//! Measured with `cargo bench -p keyward-pkcs11 --bench sign`; see that benchmark for the
//! figures. At most `cap` jobs run at once, each using one session at a time, so `cap`
//! bounds the sessions in use.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keyward_core::Error;
use parking_lot::{Condvar, Mutex};

use pace::Pace;

mod pace;

/// How long an idle drainer waits for the next job before it gives its thread back.
const LINGER: Duration = Duration::from_micros(200);

/// How long a caller waits on its own thread for a slot before it queues its job.
const WAIT: Duration = Duration::from_micros(500);

/// How many queued jobs a caller running in place runs besides its own.
const SERVE: usize = 2;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A queued job, and whether it is quick enough for a caller running in place to run
/// it before returning to its own task.
struct Queued {
    job: Job,
    quick: bool,
}

/// A token's slots and the queue of jobs waiting for one.
pub(crate) struct Dispatcher {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Slots in use: callers running in place plus drainers.
    active: AtomicUsize,
    /// Slots running a slow job: the holders that will not look at the queue soon.
    slow: AtomicUsize,
    /// Callers waiting on their own thread for a slot.
    waiting: AtomicUsize,
    cap: AtomicUsize,
    /// Callers may spin for a slot, and drainers for the next job, only while they
    /// leave a CPU free; beyond that callers queue and drainers sleep.
    cores: usize,
    /// How long quick jobs take: whether they may run straight on a worker thread.
    pace: Pace,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Queued>,
    sleeping: usize,
}

impl Dispatcher {
    /// A dispatcher running at most `cap` jobs at once.
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Dispatcher {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            active: AtomicUsize::new(0),
            slow: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            cap: AtomicUsize::new(cap.max(1)),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pace: Pace::new(),
        })
    }

    /// Lowers the bound to `cap` (a later URI asked for fewer sessions); never raises it.
    /// Drainers above the new bound finish their current job and stop.
    pub(crate) fn limit(&self, cap: usize) {
        self.cap.fetch_min(cap.max(1), Ordering::SeqCst);
    }

    /// Runs a job that may take long (key generation, object listings) on a drainer
    /// and returns its result.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, Error> + Send + 'static,
    {
        self.queued(f, false).await
    }

    /// Runs a quick job (a signature) in place when it may (see the module
    /// documentation), queued otherwise, and returns its result.
    pub(crate) async fn run_quick<T, F>(self: &Arc<Self>, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, Error> + Send + 'static,
    {
        match self.try_in_place(f) {
            Ok(result) => result,
            Err(f) => self.queued(f, true).await,
        }
    }

    async fn queued<T, F>(self: &Arc<Self>, f: F, quick: bool) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, Error> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.submit(Queued { job, quick });
        rx.await
            .map_err(|_| Error::backend("PKCS#11 operation failed: its worker panicked"))?
    }

    /// Runs `f` on the caller's thread if it may: on a multi-threaded runtime, in a free
    /// slot nobody is waiting for (straight when quick jobs are short, else after
    /// `block_in_place` moved the worker's other tasks to another thread), or in one it
    /// waited for while a CPU would otherwise sit idle. Hands `f` back when it may not,
    /// or waited in vain.
    fn try_in_place<T, F>(self: &Arc<Self>, f: F) -> Result<Result<T, Error>, F>
    where
        F: FnOnce() -> Result<T, Error>,
    {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !multi_thread {
            return Err(f);
        }
        let has_slot = self.waiting.load(Ordering::SeqCst) == 0 && self.try_start();
        if has_slot && self.pace.is_short() {
            let result = self.pace.time(|| run_caught(f));
            self.release();
            return Ok(result);
        }
        if !has_slot && !self.may_wait() {
            return Err(f);
        }
        let outcome = tokio::task::block_in_place(|| {
            if !has_slot && !self.wait_for_slot() {
                return Err(f);
            }
            let served = self.serve(SERVE);
            let result = self.pace.time(|| run_caught(f));
            self.serve(SERVE - served);
            Ok(result)
        });
        if outcome.is_ok() {
            self.release();
        }
        outcome
    }

    /// Whether the caller may wait on its thread for a slot: only while it and the
    /// callers already waiting would otherwise leave a CPU idle. Counts it in.
    fn may_wait(&self) -> bool {
        let waiting = self.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        if self.active.load(Ordering::SeqCst) + waiting <= self.cores {
            return true;
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        false
    }

    /// Spins (then yields the CPU between looks) up to `WAIT` for a free slot, and takes
    /// it. Counts the caller out of `waiting` either way.
    fn wait_for_slot(&self) -> bool {
        let deadline = Instant::now() + WAIT;
        let mut looks = 0u32;
        let got = loop {
            if self.try_start() {
                break true;
            }
            looks += 1;
            if looks < 64 {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::yield_now();
            }
            if looks.is_multiple_of(16) && Instant::now() >= deadline {
                break false;
            }
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        got
    }

    /// Runs up to `max` quick jobs from the front of the queue; returns how many ran.
    fn serve(&self, max: usize) -> usize {
        let mut ran = 0;
        while ran < max {
            let job = {
                let mut q = self.queue.lock();
                match q.jobs.front() {
                    Some(front) if front.quick => q.jobs.pop_front(),
                    _ => None,
                }
            };
            let Some(job) = job else { break };
            self.pace.time(|| run_job(job.job));
            ran += 1;
        }
        ran
    }

    /// Gives back the slot of a caller that ran in place. Quick jobs still queued are
    /// left to the other holders busy with quick jobs, who look at the queue when they
    /// finish; when there is none, or a slow job is at the front, it starts a drainer.
    fn release(self: &Arc<Self>) {
        let others = self.active.fetch_sub(1, Ordering::SeqCst) - 1;
        let unserved = match self.queue.lock().jobs.front() {
            None => false,
            Some(front) => !front.quick || others <= self.slow.load(Ordering::SeqCst),
        };
        if unserved && self.try_start() {
            let this = Arc::clone(self);
            tokio::task::spawn_blocking(move || this.drain());
        }
    }

    fn submit(self: &Arc<Self>, job: Queued) {
        let wake = {
            let mut q = self.queue.lock();
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

    /// Takes a slot if one is free.
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

    fn pop(&self) -> Option<Queued> {
        self.queue.lock().jobs.pop_front()
    }

    /// The body of a blocking task: run jobs until there are none for a while.
    fn drain(&self) {
        loop {
            let job = match self.pop() {
                Some(job) => Some(job),
                // A caller waiting on its own thread gets the slot at once.
                None if self.waiting.load(Ordering::SeqCst) > 0 => None,
                None => self.linger(),
            };
            if let Some(Queued { job, quick }) = job {
                if quick {
                    self.pace.time(|| run_job(job));
                } else {
                    self.slow.fetch_add(1, Ordering::SeqCst);
                    run_job(job);
                    self.slow.fetch_sub(1, Ordering::SeqCst);
                }
                if self.active.load(Ordering::SeqCst) <= self.cap.load(Ordering::SeqCst) {
                    continue;
                }
            }
            // Give the slot back, then make sure no job pushed meanwhile is stranded.
            self.active.fetch_sub(1, Ordering::SeqCst);
            if self.queue.lock().jobs.is_empty() || !self.try_start() {
                return;
            }
        }
    }

    /// Waits up to `LINGER` for a job. While a CPU is left for the async side, it spins,
    /// yielding the CPU to whoever will submit the job, so that job starts without a
    /// wake-up; when every CPU is busy signing it sleeps instead, leaving them to work.
    /// Gives up at once when a caller starts waiting on its own thread for the slot.
    fn linger(&self) -> Option<Queued> {
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
                if self.waiting.load(Ordering::SeqCst) > 0 {
                    return None;
                }
            }
            return None;
        }
        let mut q = self.queue.lock();
        q.sleeping += 1;
        let job = loop {
            if let Some(job) = q.jobs.pop_front() {
                break Some(job);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            self.ready.wait_for(&mut q, left);
        };
        q.sleeping -= 1;
        job
    }
}

/// Runs a caller's own job; a panic becomes an error.
fn run_caught<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(Error::backend("PKCS#11 operation failed: it panicked")))
}

/// Runs a job. A panicking job drops its result sender (its caller gets an error);
/// whoever ran it, and its slot, stay.
fn run_job(job: Job) {
    let _ = catch_unwind(AssertUnwindSafe(job));
}

#[cfg(test)]
mod tests;
