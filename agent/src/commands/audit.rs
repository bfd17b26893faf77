//! `keyward audit verify`, and how the other commands append to the state directory's
//! audit log (STATE/audit.jsonl, shared with the agent).

use std::path::PathBuf;

use keyward_core::Error;
use keyward_core::audit::{self, AuditLog, Caller, Event};
use keyward_core::store::StateDir;

/// The state directory's audit log.
pub fn log(state: &StateDir) -> AuditLog {
    AuditLog::new(audit::default_path(state.path()))
}

/// Fails, changing nothing, when the state directory's audit log cannot be continued;
/// commands call it before they change anything.
pub fn check(state: &StateDir) -> Result<(), Error> {
    log(state).check()
}

/// Appends `event` with this process as the caller.
pub fn record(state: &StateDir, event: Event) -> Result<(), Error> {
    log(state)
        .append(&event.caller(&Caller::this_process()))
        .map(|_| ())
}

/// Verifies the chain through `files` (oldest first): prints `ok: N records, chain
/// intact`, or fails with the first bad line.
pub fn verify(files: &[PathBuf]) -> Result<(), Error> {
    let summary = audit::verify(files)?.map_err(|f| Error::State(f.to_string()))?;
    println!("ok: {} records, chain intact", summary.records);
    if let Some(first) = summary.first_seq.filter(|&s| s > 1) {
        println!("note: the first record (seq {first}) continues an older file that was not given");
    }
    if !summary.head_checked
        && let Some(last) = files.last()
    {
        println!(
            "note: no {} beside the last file: lines removed from its end would go unnoticed",
            audit::head_path(last).display()
        );
    }
    Ok(())
}
