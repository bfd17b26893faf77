//! Appending to the audit log: exclusive lock, continue the chain from the last line
//! (or from the newest rotated file), append one whole line, fsync, update the head.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::record::{GENESIS, Record, line_hash};
use super::tail::{Tail, read_tail};
use super::{DEFAULT_KEEP, DEFAULT_MAX_BYTES, Event, head_path, rotated_path};
use crate::Error;
use crate::fsutil;

/// How many times an append reopens a log that was rotated under it before giving up.
const MAX_REOPENS: usize = 64;

/// An audit log file that this process appends to. Cheap to clone; clones share one
/// in-process lock, and a `flock` on the file serializes other processes.
#[derive(Clone, Debug)]
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    local: Arc<Mutex<()>>,
}

/// The head file: where the chain ended after the last append.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(super) struct Head {
    /// The last record's sequence number.
    pub(super) seq: u64,
    /// SHA-256 of the last record's line.
    pub(super) hash: String,
}

/// The record the next one follows: its sequence number and line hash.
pub(super) struct Predecessor {
    pub(super) seq: u64,
    pub(super) hash: String,
}

impl AuditLog {
    /// The log at `path`, rotated at the default size.
    pub fn new(path: impl Into<PathBuf>) -> AuditLog {
        AuditLog {
            path: path.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            keep: DEFAULT_KEEP,
            local: Arc::new(Mutex::new(())),
        }
    }

    /// The same log, rotated once it would grow past `max_bytes`, keeping `keep`
    /// rotated files (at least one: the chain continues from the newest).
    pub fn with_rotation(mut self, max_bytes: u64, keep: u32) -> AuditLog {
        self.max_bytes = max_bytes.max(1);
        self.keep = keep.max(1);
        self
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks, changing nothing, that the log can be continued: its end matches the
    /// head file. Commands call this before they change state, so a log that was cut
    /// stops them before anything happens rather than after.
    pub fn check(&self) -> Result<(), Error> {
        let _local = self.hold();
        if !self.path.exists() {
            return self.predecessor(&Tail::default()).map(|_| ());
        }
        let file = self.open_locked()?;
        let tail = self.tail(&file)?;
        self.predecessor(&tail).map(|_| ())
    }

    /// Appends `event` as the next record and returns its sequence number. The line
    /// is written with one `write` to the locked file and fsynced before the head
    /// file is updated.
    pub fn append(&self, event: &Event) -> Result<u64, Error> {
        self.append_all(std::slice::from_ref(event))
    }

    /// Appends `events` in order as consecutive records under one lock, with one
    /// `write` and one fsync per file they land in (the log may rotate between them),
    /// and returns the sequence number the log then ends at. This is what lets a
    /// busy agent record every request without one fsync each.
    pub fn append_all(&self, events: &[Event]) -> Result<u64, Error> {
        let _local = self.hold();
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fsutil::create_private_dir(dir)?;
        }
        let (mut file, mut pred, mut len) = self.continue_chain()?;
        let mut batch = Batch::default();
        for event in events {
            let mut line = encode(pred.as_ref(), event);
            let before = len + batch.bytes.len() as u64;
            if before > 0 && before + line.len() as u64 + 1 > self.max_bytes {
                self.commit(&mut file, &batch)?;
                self.rotate()?;
                // Another process may append to the new file before we lock it: the
                // chain continues from wherever it now ends.
                (file, pred, len) = self.continue_chain()?;
                line = encode(pred.as_ref(), event);
                batch = Batch::default();
            }
            pred = Some(batch.push_line(pred.as_ref(), line));
        }
        self.commit(&mut file, &batch)?;
        Ok(pred.map_or(0, |p| p.seq))
    }

    /// Holds this process's lock on the log (other processes: the `flock` on the file).
    pub(super) fn hold(&self) -> MutexGuard<'_, ()> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens and locks the log and finds where its chain ends: the locked file, the
    /// record the next one follows, and the file's length. A torn last line (an append
    /// cut short by a crash, never acknowledged) is cut off and recorded.
    fn continue_chain(&self) -> Result<(File, Option<Predecessor>, u64), Error> {
        let mut file = self.open_locked()?;
        let tail = self.tail(&file)?;
        let mut pred = self.predecessor(&tail)?;
        if pred.is_none() && read_head(&self.path)?.is_none() {
            // A new chain: a head before the first line, so a crash between that line's
            // fsync and its head leaves a head behind the log (accepted), never none.
            self.write_head(0, GENESIS)?;
        }
        let mut len = tail.complete_len;
        if tail.torn > 0 {
            file.set_len(tail.complete_len)
                .map_err(|e| Error::io(format!("cannot repair {}", self.path.display()), e))?;
            let note = Event::new("audit_torn_tail_discarded").with("bytes", tail.torn);
            let mut batch = Batch::default();
            pred = Some(batch.push(pred.as_ref(), &note));
            len += batch.bytes.len() as u64;
            self.commit(&mut file, &batch)?;
            tracing::warn!(log = %self.path.display(), bytes = tail.torn, "discarded a torn last line of the audit log");
        }
        Ok((file, pred, len))
    }

    /// Opens (creating, mode 0600) and locks the log, reopening when another process
    /// rotated it between our open and our lock.
    pub(super) fn open_locked(&self) -> Result<File, Error> {
        let p = &self.path;
        for _ in 0..MAX_REOPENS {
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .mode(fsutil::SECRET_FILE_MODE)
                .open(p)
                .map_err(|e| Error::io(format!("cannot open the audit log {}", p.display()), e))?;
            file.lock()
                .map_err(|e| Error::io(format!("cannot lock {}", p.display()), e))?;
            let ours = file
                .metadata()
                .map_err(|e| Error::io(format!("cannot stat {}", p.display()), e))?;
            if let Ok(now) = fs::metadata(p)
                && (now.dev(), now.ino()) == (ours.dev(), ours.ino())
            {
                return Ok(file);
            }
        }
        Err(Error::State(format!(
            "cannot lock {}: it keeps being replaced",
            p.display()
        )))
    }

    pub(super) fn tail(&self, file: &File) -> Result<Tail, Error> {
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {}", self.path.display()), e))?
            .len();
        read_tail(file, len, &self.path)
    }

    /// The last complete line of the chain: the log's, else the newest rotated file's
    /// (right after a rotation), with the file it is in; `None` for a new chain.
    pub(super) fn last_line(&self, tail: &Tail) -> Result<(Option<Vec<u8>>, PathBuf), Error> {
        if let Some(l) = &tail.last_line {
            return Ok((Some(l.clone()), self.path.clone()));
        }
        let rotated = rotated_path(&self.path, 1);
        let line = match File::open(&rotated) {
            Ok(f) => {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                read_tail(&f, len, &rotated)?.last_line
            }
            Err(_) => None,
        };
        Ok((line, rotated))
    }

    /// The record the next one follows, or none (a new chain). Refuses when the chain
    /// has records but no head file (nothing vouches for its end), or its end is behind
    /// the head file or differs from it: lines were removed or changed, and continuing
    /// would hide it.
    pub(super) fn predecessor(&self, tail: &Tail) -> Result<Option<Predecessor>, Error> {
        let (line, from) = self.last_line(tail)?;
        let recover = format!("`keyward audit recover --log {}`", self.path.display());
        let pred = match line {
            None => None,
            Some(l) => {
                let seq = Record::decode_seq(&l).map_err(|why| {
                    Error::State(format!(
                        "the last line of the audit log {} is damaged ({why}); {recover} sets the log aside and starts a new chain",
                        from.display()
                    ))
                })?;
                Some(Predecessor {
                    seq,
                    hash: line_hash(&l),
                })
            }
        };
        let head = read_head(&self.path)?;
        let (seq, hash) = pred
            .as_ref()
            .map_or((0, GENESIS), |p| (p.seq, p.hash.as_str()));
        match head {
            None if pred.is_some() => Err(Error::State(format!(
                "the audit log {} has records but no head file {}, so lines removed from its end cannot be detected; {recover} sets it aside and starts a new chain",
                self.path.display(),
                head_path(&self.path).display()
            ))),
            Some(head) if head.seq > seq || (head.seq == seq && head.hash != hash) => {
                Err(Error::State(format!(
                    "the audit log {} ends at seq {seq} but {} records seq {}: lines were removed or changed; {recover} sets it aside and starts a new chain",
                    self.path.display(),
                    head_path(&self.path).display(),
                    head.seq
                )))
            }
            _ => Ok(pred),
        }
    }

    /// Writes `batch` with one `write`, fsyncs it, then records its last line in the
    /// head file. Nothing to do for an empty batch. A write that fails part-way (a full
    /// disk, a file size limit) is cut off again, so the log never keeps a torn line
    /// for a record whose operation was undone.
    fn commit(&self, file: &mut File, batch: &Batch) -> Result<(), Error> {
        let Some(last) = &batch.last else {
            return Ok(());
        };
        let error = |e| {
            Error::io(
                format!("cannot write the audit log {}", self.path.display()),
                e,
            )
        };
        let start = file.metadata().map_err(error)?.len();
        if let Err(e) = file.write_all(&batch.bytes).and_then(|()| file.sync_data()) {
            if let Err(cut) = file.set_len(start) {
                tracing::warn!(log = %self.path.display(), error = %cut, "cannot cut a failed append off the audit log; the next append discards the torn line");
            }
            return Err(error(e));
        }
        self.write_head(last.seq, &last.hash)
    }

    /// Records in the head file that the chain ends at `seq`, whose line hashes to `hash`.
    pub(super) fn write_head(&self, seq: u64, hash: &str) -> Result<(), Error> {
        let head = Head {
            seq,
            hash: hash.to_string(),
        };
        fsutil::write_json(&head_path(&self.path), &head)
    }

    /// Shifts `LOG.k` to `LOG.k+1` (dropping the oldest past `keep`) and `LOG` to
    /// `LOG.1`. Called with the log locked; the next append creates the new file.
    fn rotate(&self) -> Result<(), Error> {
        for k in (1..self.keep).rev() {
            let from = rotated_path(&self.path, k);
            if from.exists() {
                let to = rotated_path(&self.path, k + 1);
                fs::rename(&from, &to)
                    .map_err(|e| Error::io(format!("cannot rotate {}", from.display()), e))?;
            }
        }
        let to = rotated_path(&self.path, 1);
        fs::rename(&self.path, &to)
            .map_err(|e| Error::io(format!("cannot rotate {}", self.path.display()), e))?;
        fsutil::sync_dir(
            self.path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )?;
        tracing::info!(log = %self.path.display(), rotated_to = %to.display(), "rotated the audit log");
        Ok(())
    }
}

/// Lines encoded for one write, and the record the last of them is.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    last: Option<Predecessor>,
}

impl Batch {
    /// Adds `event` as the record after `pred`; returns what the next one follows.
    fn push(&mut self, pred: Option<&Predecessor>, event: &Event) -> Predecessor {
        self.push_line(pred, encode(pred, event))
    }

    /// Adds `line`, already encoded as the record after `pred`.
    fn push_line(&mut self, pred: Option<&Predecessor>, line: String) -> Predecessor {
        let this = Predecessor {
            seq: pred.map_or(1, |p| p.seq + 1),
            hash: line_hash(line.as_bytes()),
        };
        self.bytes.extend_from_slice(line.as_bytes());
        self.bytes.push(b'\n');
        self.last = Some(Predecessor {
            seq: this.seq,
            hash: this.hash.clone(),
        });
        this
    }
}

/// The next record's line after `pred`, stamped now.
pub(super) fn encode(pred: Option<&Predecessor>, event: &Event) -> String {
    let (seq, prev) = pred.map_or((1, GENESIS), |p| (p.seq + 1, p.hash.as_str()));
    let now = super::event::rfc3339(time::OffsetDateTime::now_utc());
    Record::encode(seq, &now, &event.name, &event.fields, prev)
}

/// The head file beside the log at `log`, if there is one.
pub(super) fn read_head(log: &Path) -> Result<Option<Head>, Error> {
    fsutil::read_json(&head_path(log))
}
