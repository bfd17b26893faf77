//! Group commit for a busy writer: events are queued by any thread and one writer
//! thread appends whatever has gathered with [`AuditLog::append_all`], so a thousand
//! requests a second cost a few fsyncs a second rather than three thousand.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{AuditLog, Event};

/// How many events may wait for the writer before `enqueue` blocks its caller: a
/// stalled disk slows requests down rather than growing memory without bound.
pub const QUEUE_CAPACITY: usize = 65_536;

/// The most events one write carries.
const MAX_BATCH: usize = 4_096;

/// The shortest time between the starts of two writes while events keep coming: under
/// load the writer gathers for this long rather than paying a lock, a write and three
/// fsyncs for every few events (profiled at 14k fetches/s, writing as soon as anything
/// was queued took 29% of the agent's CPU). An event after a quiet spell, or one a
/// caller waits for, is written at once.
const MIN_WRITE_INTERVAL: Duration = Duration::from_millis(10);

/// An audit log appended by its own writer thread. Dropping it writes what is still
/// queued, then stops the thread.
#[derive(Debug)]
pub struct AuditQueue {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

/// A place in the queue: the event is in the log (or its write failed and was
/// reported) once [`AuditQueue::wait`] returns for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when events arrive or the queue closes.
    work: Condvar,
    /// Signalled when a batch is done (written, or failed and reported).
    done: Condvar,
}

#[derive(Debug, Default)]
struct State {
    pending: VecDeque<Event>,
    /// Events ever queued; the last one's ticket.
    queued: u64,
    /// Events the writer has finished with.
    finished: u64,
    /// Callers in [`AuditQueue::wait`]: while there are any, the writer does not hold
    /// off for [`MIN_WRITE_INTERVAL`].
    waiting: usize,
    closed: bool,
}

impl AuditQueue {
    /// Starts the writer thread for `log`. A failed write is passed to `on_error`
    /// (with the number of events it held) and the writer goes on with the next batch.
    pub fn start(
        log: AuditLog,
        on_error: impl Fn(&crate::Error, usize) + Send + 'static,
    ) -> std::io::Result<AuditQueue> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("keyward-audit".into())
                .spawn(move || write_batches(&shared, &log, &on_error))?
        };
        Ok(AuditQueue {
            shared,
            writer: Some(writer),
        })
    }

    /// Queues `event` without waiting, unless the queue is full; `Err` gives the
    /// event back when it is.
    pub fn try_enqueue(&self, event: Event) -> Result<Ticket, Event> {
        let mut state = self.shared.lock();
        if state.pending.len() >= QUEUE_CAPACITY {
            return Err(event);
        }
        Ok(self.push(&mut state, event))
    }

    /// Queues `event`, waiting while the queue is full.
    pub fn enqueue(&self, event: Event) -> Ticket {
        let mut state = self.shared.lock();
        while state.pending.len() >= QUEUE_CAPACITY {
            state = self.shared.wait(&self.shared.done, state);
        }
        self.push(&mut state, event)
    }

    fn push(&self, state: &mut State, event: Event) -> Ticket {
        state.pending.push_back(event);
        state.queued += 1;
        self.shared.work.notify_one();
        Ticket(state.queued)
    }

    /// Waits until the writer has finished with `ticket`'s event and every one before.
    pub fn wait(&self, ticket: Ticket) {
        let mut state = self.shared.lock();
        if state.finished >= ticket.0 {
            return;
        }
        state.waiting += 1;
        self.shared.work.notify_one();
        while state.finished < ticket.0 {
            state = self.shared.wait(&self.shared.done, state);
        }
        state.waiting -= 1;
    }

    /// Waits until every event queued so far has been written.
    pub fn flush(&self) {
        let last = Ticket(self.shared.lock().queued);
        self.wait(last);
    }
}

impl Drop for AuditQueue {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, cv: &Condvar, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        cv.wait(guard).unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer thread: takes what has gathered (up to [`MAX_BATCH`], at most one write
/// per [`MIN_WRITE_INTERVAL`] unless a caller waits for its record), appends it with
/// one write, and repeats until the queue is closed and empty.
fn write_batches(shared: &Shared, log: &AuditLog, on_error: &dyn Fn(&crate::Error, usize)) {
    let mut last_write: Option<Instant> = None;
    loop {
        let batch: Vec<Event> = {
            let mut state = shared.lock();
            while state.pending.is_empty() && !state.closed {
                state = shared.wait(&shared.work, state);
            }
            if state.pending.is_empty() {
                return;
            }
            // Hold off while records keep coming, unless someone waits for theirs.
            if let Some(last) = last_write {
                let until = last + MIN_WRITE_INTERVAL;
                while state.waiting == 0 && !state.closed {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    state = shared
                        .work
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
            last_write = Some(Instant::now());
            let n = state.pending.len().min(MAX_BATCH);
            state.pending.drain(..n).collect()
        };
        if let Err(e) = log.append_all(&batch) {
            on_error(&e, batch.len());
        }
        shared.lock().finished += batch.len() as u64;
        shared.done.notify_all();
    }
}
