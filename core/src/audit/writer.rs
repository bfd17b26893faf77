//! Appending to the audit log: exclusive lock, continue the chain from the last line
//! (or from the newest rotated file), append one whole line, fsync, update the head.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::record::{GENESIS, Record, line_hash};
use super::tail::{Tail, read_tail};
use super::{DEFAULT_KEEP, DEFAULT_MAX_BYTES, Event, head_path, rotated_path};
use crate::Error;
use crate::fsutil::{self, Replace};

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
struct Predecessor {
    seq: u64,
    hash: String,
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
        let _local = self.local.lock().unwrap_or_else(|p| p.into_inner());
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
        let _local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fsutil::create_private_dir(dir)?;
        }
        for _ in 0..MAX_REOPENS {
            let mut file = self.open_locked()?;
            let tail = self.tail(&file)?;
            let mut pred = self.predecessor(&tail)?;
            if tail.torn > 0 {
                // An append cut short by a crash: it was never acknowledged, so drop it
                // and say so in the chain.
                file.set_len(tail.complete_len)
                    .map_err(|e| Error::io(format!("cannot repair {}", self.path.display()), e))?;
                let note = Event::new("audit_torn_tail_discarded").with("bytes", tail.torn);
                pred = self.write(&mut file, pred.as_ref(), &note)?;
                tracing::warn!(log = %self.path.display(), bytes = tail.torn, "discarded a torn last line of the audit log");
            }
            let line = encode(pred.as_ref(), event);
            if tail.complete_len > 0 && tail.complete_len + line.len() as u64 + 1 > self.max_bytes {
                self.rotate()?;
                continue; // unlocks; the next round opens the new file
            }
            return Ok(self.write_line(&mut file, &line)?.seq);
        }
        Err(Error::State(format!(
            "cannot append to {}: it keeps being rotated by another process",
            self.path.display()
        )))
    }

    /// Opens (creating, mode 0600) and locks the log, reopening when another process
    /// rotated it between our open and our lock.
    fn open_locked(&self) -> Result<File, Error> {
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

    fn tail(&self, file: &File) -> Result<Tail, Error> {
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {}", self.path.display()), e))?
            .len();
        read_tail(file, len, &self.path)
    }

    /// The record the next one follows: the log's last line, else the newest rotated
    /// file's last line, else none (a new chain). Refuses when that is behind the head
    /// file or differs from it: lines were removed or changed, and continuing would
    /// hide it.
    fn predecessor(&self, tail: &Tail) -> Result<Option<Predecessor>, Error> {
        let (line, from) = match &tail.last_line {
            Some(l) => (Some(l.clone()), self.path.clone()),
            None => {
                let rotated = rotated_path(&self.path, 1);
                let l = match File::open(&rotated) {
                    Ok(f) => {
                        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                        read_tail(&f, len, &rotated)?.last_line
                    }
                    Err(_) => None,
                };
                (l, rotated)
            }
        };
        let pred = match line {
            None => None,
            Some(l) => {
                let rec = Record::decode(&l).map_err(|why| {
                    Error::State(format!(
                        "the last line of the audit log {} is damaged ({why}); run `keyward audit verify` and move the log and its .head file aside",
                        from.display()
                    ))
                })?;
                Some(Predecessor {
                    seq: rec.seq,
                    hash: line_hash(&l),
                })
            }
        };
        if let Some(head) = read_head(&self.path)? {
            let (seq, hash) = pred.as_ref().map_or((0, ""), |p| (p.seq, p.hash.as_str()));
            if head.seq > seq || (head.seq == seq && head.hash != hash) {
                return Err(Error::State(format!(
                    "the audit log {} ends at seq {seq} but {} records seq {}: lines were removed or changed; run `keyward audit verify` and move both files aside to start a new chain",
                    self.path.display(),
                    head_path(&self.path).display(),
                    head.seq
                )));
            }
        }
        Ok(pred)
    }

    fn write(
        &self,
        file: &mut File,
        pred: Option<&Predecessor>,
        event: &Event,
    ) -> Result<Option<Predecessor>, Error> {
        let line = encode(pred, event);
        self.write_line(file, &line).map(Some)
    }

    fn write_line(&self, file: &mut File, line: &str) -> Result<Predecessor, Error> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        file.write_all(&bytes)
            .and_then(|()| file.sync_data())
            .map_err(|e| {
                Error::io(
                    format!("cannot write the audit log {}", self.path.display()),
                    e,
                )
            })?;
        let seq = Record::seq_of(line.as_bytes()).unwrap_or_default();
        let head = Head {
            seq,
            hash: line_hash(line.as_bytes()),
        };
        let json = serde_json::to_vec(&head).expect("the head serializes");
        fsutil::write_atomic(
            &head_path(&self.path),
            &json,
            fsutil::SECRET_FILE_MODE,
            Replace::Allow,
        )?;
        Ok(Predecessor {
            seq: head.seq,
            hash: head.hash,
        })
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

/// The next record's line after `pred`, stamped now.
fn encode(pred: Option<&Predecessor>, event: &Event) -> String {
    let (seq, prev) = pred.map_or((1, GENESIS), |p| (p.seq + 1, p.hash.as_str()));
    let now = super::event::rfc3339(time::OffsetDateTime::now_utc());
    Record::encode(seq, &now, &event.name, &event.fields, prev)
}

/// The head file beside the log at `log`, if there is one.
pub(super) fn read_head(log: &Path) -> Result<Option<Head>, Error> {
    let path = head_path(log);
    match fs::read(&path) {
        Ok(d) => serde_json::from_slice(&d)
            .map(Some)
            .map_err(|e| Error::State(format!("{} is corrupt: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}
