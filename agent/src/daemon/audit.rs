//! The agent's side of the audit log (`[audit]`, by default STATE/audit.jsonl, shared
//! with the CLI commands): SVIDs issued and renewed, callers served and refused,
//! intermediates rotated, configuration reloads. Never holds key material.
//!
//! Records go through one writer thread that appends whatever has gathered with one
//! fsync ([`AuditQueue`]), so serving thousands of callers a second does not mean
//! thousands of fsyncs a second.

use std::sync::Arc;

use keyward_core::Error;
use keyward_core::audit::{AuditLog, AuditQueue, Event, Ticket};

use super::config::AuditSettings;

mod served;

/// The audit log; a no-op for [`Audit::default`] (unit tests). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    queue: Option<Arc<AuditQueue>>,
    /// The repeated `svid_served` records being counted (see `served`).
    served: Arc<served::Served>,
}

impl Audit {
    /// The log `settings` name; fails (so the agent does not start) when the log
    /// cannot be continued, e.g. its end no longer matches its head file.
    pub fn open(settings: &AuditSettings) -> Result<Self, Error> {
        let log = AuditLog::new(&settings.path).with_rotation(settings.max_bytes, settings.keep);
        log.check()?;
        let queue = AuditQueue::start(log, |e, n| {
            tracing::error!(records = n, error = %keyward_core::chain_line(e), "cannot write the audit log");
        })
        .map_err(|e| Error::io("cannot start the audit log's writer thread", e))?;
        Ok(Audit {
            queue: Some(Arc::new(queue)),
            served: Arc::default(),
        })
    }

    /// Appends a record of a change (a key, a certificate, a reload) and returns once
    /// it is on disk. A failure is logged, not returned: the agent keeps serving.
    pub fn record(&self, event: Event) {
        let Some(queue) = &self.queue else { return };
        let ticket = enqueue(queue, event);
        off_worker(|| queue.wait(ticket));
    }

    /// Queues a record of a change without waiting: [`Audit::wait_for`] the ticket
    /// returns once it is on disk. Many changes recorded this way (the thousand SVIDs
    /// issued at start) share group commits rather than paying an fsync each.
    pub fn record_later(&self, event: Event) -> Option<Ticket> {
        self.queue.as_ref().map(|queue| enqueue(queue, event))
    }

    /// Waits until the record `ticket` stands for, and every one queued before it, is
    /// on disk.
    pub fn wait_for(&self, ticket: Option<Ticket>) {
        if let (Some(queue), Some(ticket)) = (&self.queue, ticket) {
            off_worker(|| queue.wait(ticket));
        }
    }

    /// Queues a record of a request served or refused, without waiting for the disk:
    /// the writer commits it with the others gathered meanwhile, within milliseconds.
    /// A crash can lose those last milliseconds of request records, never a change's.
    pub fn note(&self, event: Event) {
        if let Some(queue) = &self.queue {
            enqueue(queue, event);
        }
    }

    /// Waits until every record queued so far, and the count of repeated services, is
    /// on disk (at shutdown).
    pub fn flush(&self) {
        self.write_repeats();
        if let Some(queue) = &self.queue {
            off_worker(|| queue.flush());
        }
    }
}

/// Queues `event`, waiting (off the async workers) only while the queue is full.
fn enqueue(queue: &AuditQueue, event: Event) -> Ticket {
    match queue.try_enqueue(event) {
        Ok(ticket) => ticket,
        Err(event) => off_worker(|| queue.enqueue(event)),
    }
}

/// Runs blocking `f`; on the multi-threaded runtime other tasks move to another worker
/// meanwhile.
fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    let on_worker = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if on_worker {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}
