//! Certificates waiting for a CA whose key signs in process (it answers at the first
//! poll, like a software key): they queue here and a few blocking-pool threads take them
//! one after the other, instead of one `spawn_blocking` per certificate.
//!
//! Why: for such a key the signature and the post-issuance check take about 100 µs,
//! and handing each certificate to a fresh blocking-pool task (queue it, wake a thread,
//! let it sleep again afterwards) cost another tenth of the CPU time under load. Each
//! certificate still crosses to the blocking pool at most once, and is signed and
//! checked there exactly as before. Keys that make the adapter wait (HSMs, KMS, Vault)
//! never come here: they keep one blocking task per certificate, so slow signatures
//! still run side by side.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::IssuedCertificate;
use crate::Error;

/// One certificate to sign and check, and where its result goes.
type Job = (
    Box<dyn FnOnce() -> Result<IssuedCertificate, Error> + Send>,
    oneshot::Sender<Result<IssuedCertificate, Error>>,
);

/// Waiting certificates and how many threads are taking them.
struct State {
    jobs: VecDeque<Job>,
    workers: usize,
}

/// The queue of one CA.
pub(super) struct SignQueue {
    state: Mutex<State>,
    max_workers: usize,
}

impl SignQueue {
    /// An empty queue served by at most as many threads as the machine has cores (the
    /// work is CPU-bound: more threads would only take turns).
    pub(super) fn new() -> Self {
        SignQueue {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                workers: 0,
            }),
            max_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Jobs run outside the lock, so a poisoned lock still holds a consistent queue.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `job` on a blocking-pool thread of this queue, starting one when fewer than
    /// the limit are running, and waits for its result.
    pub(super) async fn run(
        self: &Arc<Self>,
        job: impl FnOnce() -> Result<IssuedCertificate, Error> + Send + 'static,
    ) -> Result<IssuedCertificate, Error> {
        let (reply, result) = oneshot::channel();
        let start_worker = {
            let mut state = self.lock();
            state.jobs.push_back((Box::new(job), reply));
            let start = state.workers < self.max_workers;
            if start {
                state.workers += 1;
            }
            start
        };
        if start_worker {
            let worker = Worker {
                queue: self.clone(),
                left: false,
            };
            // Dropping the JoinHandle detaches the worker; it leaves once the queue is
            // empty, and every job's reply is sent or dropped (an error) by then.
            drop(tokio::task::spawn_blocking(move || worker.work()));
        }
        result
            .await
            .map_err(|_| Error::backend("certificate issuance task failed"))?
    }
}

/// A blocking-pool thread taking jobs from a queue. Should the pool drop it unrun (the
/// runtime shutting down), it gives its place back and, if it was the last, fails the
/// queued jobs rather than leaving their callers waiting.
struct Worker {
    queue: Arc<SignQueue>,
    /// Set when the worker has left the queue on its own (it found it empty).
    left: bool,
}

impl Worker {
    /// Takes jobs until the queue is empty. A panicking job is answered with an error
    /// and the worker goes on, so queued jobs are never stranded.
    fn work(mut self) {
        loop {
            let (job, reply) = {
                let mut state = self.queue.lock();
                match state.jobs.pop_front() {
                    Some(job) => job,
                    None => {
                        state.workers -= 1;
                        drop(state);
                        self.left = true;
                        return;
                    }
                }
            };
            super::adapter::clear_sign_error();
            let result = catch_unwind(AssertUnwindSafe(job)).unwrap_or_else(|_| {
                Err(Error::backend(
                    "certificate issuance task failed (it panicked)",
                ))
            });
            // The caller may have gone away (its future dropped): nothing to tell.
            let _ = reply.send(result);
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.left {
            return;
        }
        let mut state = self.queue.lock();
        state.workers -= 1;
        if state.workers == 0 {
            state.jobs.clear();
        }
    }
}
