//! The agent's side of the audit log (`[audit]`, by default STATE/audit.jsonl, shared
//! with the CLI commands): SVIDs issued and renewed, callers served and refused,
//! intermediates rotated, configuration reloads. Never holds key material.

use keyward_core::Error;
use keyward_core::audit::{AuditLog, Event};

use super::config::AuditSettings;

/// The audit log; a no-op for [`Audit::default`] (unit tests). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    log: Option<AuditLog>,
}

impl Audit {
    /// The log `settings` name; fails (so the agent does not start) when the log
    /// cannot be continued, e.g. its end no longer matches its head file.
    pub fn open(settings: &AuditSettings) -> Result<Self, Error> {
        let log = AuditLog::new(&settings.path).with_rotation(settings.max_bytes, settings.keep);
        log.check()?;
        Ok(Audit { log: Some(log) })
    }

    /// Appends one event. A failure is logged, not returned: the agent keeps serving.
    pub fn record(&self, event: Event) {
        let Some(log) = &self.log else { return };
        // The append waits for the file lock and fsyncs: on the multi-threaded runtime,
        // let other tasks move to another worker meanwhile.
        let on_worker = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let result = if on_worker {
            tokio::task::block_in_place(|| log.append(&event))
        } else {
            log.append(&event)
        };
        if let Err(e) = result {
            tracing::error!(event = %event.name, error = %keyward_core::chain_line(&e), "cannot write the audit log");
        }
    }
}
