//! Records of operations in progress. One is written before the first durable change of
//! an operation and removed when the operation completes; one left behind by a crash
//! (or a failure after durable changes) is reported by every later run.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{StateDir, StateLock};
use crate::Error;
use crate::fsutil::{self, Replace};

/// An unfinished operation found in the state directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingRecord {
    /// The command, e.g. `ca init` or `issue`.
    pub operation: String,
    /// What it was changing, e.g. the key URI and output directory.
    pub detail: String,
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// The record's file (filled in when read).
    #[serde(skip)]
    pub file: PathBuf,
}

impl PendingRecord {
    /// One line for a person: what did not finish and where to look.
    pub fn describe(&self) -> String {
        format!(
            "an earlier `{}` started {} did not finish ({}); check it, then remove {}",
            self.operation,
            self.started_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            self.detail,
            self.file.display()
        )
    }
}

/// An operation in progress; call [`Pending::done`] once all its changes are durable.
/// Dropping it without `done` leaves the record, so the next run reports it.
#[must_use = "call done() when the operation has completed"]
#[derive(Debug)]
pub struct Pending {
    path: PathBuf,
}

impl Pending {
    /// Marks the operation complete: removes its record.
    pub fn done(self) -> Result<(), Error> {
        fs::remove_file(&self.path)
            .map_err(|e| Error::io(format!("cannot remove {}", self.path.display()), e))?;
        fsutil::sync_dir(self.path.parent().unwrap_or(&self.path))
    }
}

impl StateDir {
    /// Records that `operation` is starting; call just before its first durable change.
    pub fn begin(
        &self,
        _lock: &StateLock,
        operation: &str,
        detail: &str,
    ) -> Result<Pending, Error> {
        let dir = self.root.join("pending");
        fsutil::create_private_dir(&dir)?;
        let now = OffsetDateTime::now_utc();
        let rec = PendingRecord {
            operation: operation.to_string(),
            detail: detail.to_string(),
            started_at: now,
            file: PathBuf::new(),
        };
        let name = format!(
            "{}-{}-{}.json",
            operation.replace(' ', "-"),
            now.unix_timestamp_nanos(),
            std::process::id()
        );
        let path = dir.join(name);
        let json = serde_json::to_vec_pretty(&rec).expect("pending record serializes");
        fsutil::write_atomic(&path, &json, fsutil::PUBLIC_FILE_MODE, Replace::Refuse)?;
        Ok(Pending { path })
    }

    /// Operations that started and never finished, oldest first.
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
            let mut rec: PendingRecord = match fs::read(&path)
                .ok()
                .and_then(|d| serde_json::from_slice(&d).ok())
            {
                Some(r) => r,
                None => PendingRecord {
                    operation: "unknown".into(),
                    detail: "unreadable record".into(),
                    started_at: OffsetDateTime::UNIX_EPOCH,
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
