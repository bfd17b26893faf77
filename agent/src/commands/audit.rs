//! `keyward audit verify` and `audit recover`, and how the other commands append to the state directory's
//! audit log (STATE/audit.jsonl, shared with the agent).

use std::path::{Path, PathBuf};

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
        && let Some(last) = files.last().filter(|l| audit::is_rotated(l))
    {
        println!(
            "note: {} is a rotated file: the next file's first record vouches for its end; give that file too to check it",
            last.display()
        );
    }
    Ok(())
}

/// Sets aside the log at `log` (default: the state directory's) when its chain cannot
/// be continued, and starts a new chain; prints what was verified and moved.
pub fn recover(state: &StateDir, log: Option<&Path>) -> Result<(), Error> {
    let log = log.map_or_else(|| self::log(state), AuditLog::new);
    let r = log.recover(&Caller::this_process())?;
    println!("could not continue: {}", r.reason);
    println!("old chain: {}", r.old_chain);
    for m in &r.moved {
        println!("moved to {}", m.display());
    }
    println!(
        "new chain started in {}: its first record, audit_chain_restarted, names {}",
        log.path().display(),
        r.set_aside.display()
    );
    Ok(())
}
