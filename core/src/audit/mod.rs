//! The tamper-evident audit log: one JSON record per line, each naming the SHA-256 of
//! the line before it, so an edited, removed or reordered line breaks the chain.
//!
//! Both the CLI commands and the agent append to the same file (`audit.jsonl` in the
//! state directory by default); an exclusive `flock` on the file serializes them.
//! A small head file beside the log (`audit.jsonl.head`: last sequence number and line
//! hash) lets [`verify`] notice lines removed from the end, and a full log is rotated
//! to `audit.jsonl.1`, `.2`, ... with the chain continuing into the new file.
//!
//! Records never hold secrets: key URIs are written with their `Display` form (which
//! omits `pin-value`), and no key bytes, PINs or passphrases are ever passed in.

mod event;
mod queue;
mod record;
mod tail;
mod verify;
mod writer;

use std::path::{Path, PathBuf};

pub use event::{Caller, Event};
pub use queue::{AuditQueue, QUEUE_CAPACITY, Ticket};
pub use record::{GENESIS, Record, line_hash};
pub use verify::{VerifyFailure, VerifySummary, verify};
pub use writer::AuditLog;

/// The audit log's file name in the state directory.
pub const DEFAULT_FILE_NAME: &str = "audit.jsonl";
/// The size past which the log is rotated, unless configured otherwise (64 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// How many rotated files (`.1` to `.N`) are kept, unless configured otherwise.
pub const DEFAULT_KEEP: u32 = 8;

/// The default audit log of a state directory: `STATE/audit.jsonl`.
pub fn default_path(state_dir: &Path) -> PathBuf {
    state_dir.join(DEFAULT_FILE_NAME)
}

/// The head file kept beside the log at `log`: `LOG.head`.
pub fn head_path(log: &Path) -> PathBuf {
    suffixed(log, ".head")
}

/// The `n`-th rotated file of the log at `log`: `LOG.n` (1 is the newest).
pub fn rotated_path(log: &Path, n: u32) -> PathBuf {
    suffixed(log, &format!(".{n}"))
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests;
