//! The tamper-evident audit log: one JSON record per line, each naming the SHA-256 of
//! the line before it, so an edited, removed or reordered line breaks the chain.
//!
//! Both the CLI commands and the agent append to the same file (`audit.jsonl` in the
//! state directory by default); an exclusive `flock` on the file serializes them.
//! A small head file beside the log (`audit.jsonl.head`: last sequence number and line
//! hash) lets [`verify`] notice lines removed from the end, and a full log is rotated
//! to `audit.jsonl.1`, `.2`, ... with the chain continuing into the new file. Only the
//! live log has a head: a rotated file's end is vouched for by the first record of the
//! file after it. A chain with records and no head is never continued (a lost head could
//! hide a cut); [`AuditLog::recover`] sets such a chain aside and starts a new one.
//!
//! Records never hold secrets: key URIs are written with their `Display` form (which
//! omits `pin-value`), and no key bytes, PINs or passphrases are ever passed in.

mod event;
mod queue;
mod record;
mod recover;
mod tail;
mod verify;
mod writer;

use std::path::{Path, PathBuf};

pub use event::{Caller, Event};
pub use queue::{AuditQueue, QUEUE_CAPACITY, Ticket};
pub use record::{GENESIS, Record, line_hash};
pub use recover::Recovery;
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

/// Whether `path` is named like a rotated file (`NAME.N`, N a number): such a file has
/// no head of its own.
pub fn is_rotated(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    name.rsplit_once('.').is_some_and(|(base, n)| {
        !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The rotated files of the log at `log` that exist, oldest first (`LOG.N` ... `LOG.1`).
pub fn rotated_files(log: &Path) -> Vec<PathBuf> {
    let dir = log
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!("{}.", log.file_name().unwrap_or_default().to_string_lossy());
    let mut numbered: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let suffix = name.strip_prefix(&prefix)?;
            let n: u32 = suffix.parse().ok()?;
            (n.to_string() == suffix).then(|| (n, rotated_path(log, n)))
        })
        .collect();
    numbered.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    numbered.into_iter().map(|(_, p)| p).collect()
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests;
