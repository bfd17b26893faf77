//! Records of operations in progress. A [`super::Transaction`] writes one before its
//! first change and removes it when it commits or is undone; one left behind by a crash
//! is reported by every later run until `keyward pending resolve` settles it, which the
//! record's [`Plan`] makes possible.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{NewCertificate, Operation, StateDir};
use crate::Error;
use crate::fsutil;

/// What an operation changes, recorded so that `keyward pending resolve` can finish it
/// or put it back after a crash.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "changes", rename_all = "kebab-case")]
pub enum Plan {
    /// CA files under `ca/`, committed by the manifest (`ca init`, `ca intermediate`,
    /// the agent's first root). May create the state directory.
    Ca,
    /// A certificate to deliver and add to the inventory (`issue`, `sign-csr`).
    Certificate(Box<NewCertificate>),
    /// Certificates to deliver and add to the inventory together (`sign-csr --batch`);
    /// each is settled as [`Plan::Certificate`] would be.
    Certificates {
        /// The certificates, in the order they are recorded.
        certificates: Vec<NewCertificate>,
    },
    /// The revocation list and the CRL signed from it: `revoke` (adding `serial_hex`)
    /// or `crl` (re-signing).
    Revocations {
        /// The serial `revoke` adds, upper-case hex; `None` for `crl`.
        serial_hex: Option<String>,
    },
    /// Settling another operation's pending record (`keyward pending resolve`).
    Resolve {
        /// That record's file.
        record: PathBuf,
    },
}

impl Plan {
    /// Whether the operation may create the state directory.
    pub(super) fn may_create_state(&self) -> bool {
        matches!(self, Plan::Ca)
    }
}

/// An unfinished operation found in the state directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingRecord {
    /// The command, e.g. `ca init` or `issue`.
    pub operation: String,
    /// What it was changing, e.g. the serial and output directory.
    pub detail: String,
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// What it was changing, for `keyward pending resolve` (`None` in a record that
    /// cannot be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// The record's file (filled in when read).
    #[serde(skip)]
    pub file: PathBuf,
}

/// A [`PendingRecord`] as a transaction writes it: the same fields, the operation's
/// plan borrowed rather than copied (a `sign-csr --batch` chunk's plan holds a thousand
/// certificates).
#[derive(Serialize)]
struct WrittenRecord<'a> {
    operation: &'a str,
    detail: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    started_at: OffsetDateTime,
    plan: &'a Plan,
}

impl PendingRecord {
    /// One line for a person: what did not finish and what to run.
    pub fn describe(&self) -> String {
        format!(
            "an earlier `{}` started {} did not finish ({}); `keyward pending resolve` finishes or undoes it ({})",
            self.operation,
            self.started(),
            self.detail,
            self.file.display()
        )
    }

    /// When it started, RFC 3339.
    pub fn started(&self) -> String {
        self.started_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    }
}

impl StateDir {
    /// Writes the pending record of `op` (called by a transaction under the lock).
    pub(super) fn write_pending(&self, op: &Operation) -> Result<PathBuf, Error> {
        let dir = self.root.join("pending");
        fsutil::create_private_dir(&dir)?;
        let now = OffsetDateTime::now_utc();
        let rec = WrittenRecord {
            operation: &op.name,
            detail: &op.detail,
            started_at: now,
            plan: &op.plan,
        };
        let name = format!(
            "{}-{}-{}.json",
            op.name.replace(' ', "-"),
            now.unix_timestamp_nanos(),
            std::process::id()
        );
        let path = dir.join(name);
        fsutil::write_json(&path, &rec)?;
        Ok(path)
    }

    /// Removes a transaction's own pending record.
    pub(super) fn remove_pending(&self, path: &Path) -> Result<(), Error> {
        fs::remove_file(path)
            .map_err(|e| Error::io(format!("cannot remove {}", path.display()), e))?;
        fsutil::sync_dir(fsutil::parent_dir(path))
    }

    /// Operations that started and never finished, oldest first. A record that cannot
    /// be read is listed as an `unknown` operation without a plan.
    pub fn unfinished(&self) -> Result<Vec<PendingRecord>, Error> {
        let dir = self.root.join("pending");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("cannot read {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let mut rec = match fsutil::read_json::<PendingRecord>(&path) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(_) => PendingRecord {
                    operation: "unknown".into(),
                    detail: "unreadable record".into(),
                    started_at: OffsetDateTime::UNIX_EPOCH,
                    plan: None,
                    file: PathBuf::new(),
                },
            };
            rec.file = path;
            out.push(rec);
        }
        out.sort_by_key(|r| r.started_at);
        Ok(out)
    }
}
