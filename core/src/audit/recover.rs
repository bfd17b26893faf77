//! `keyward audit recover`: the deliberate way past a chain that cannot be continued
//! (its head file lost, its end cut or damaged). Nothing is deleted: the log, its
//! rotated files and its head move together into a directory beside it, and a new chain
//! starts whose first record says what was set aside, why, and how far it verified.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::record::line_hash;
use super::writer::encode;
use super::{AuditLog, Caller, Event, Record, head_path, rotated_files, verify};
use crate::Error;
use crate::fsutil::{self, Replace};

/// What [`AuditLog::recover`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Why the old chain could not be continued.
    pub reason: String,
    /// What `audit verify` said of the old files (oldest first, the live log last).
    pub old_chain: String,
    /// The directory the old files were moved to.
    pub set_aside: PathBuf,
    /// The files moved there.
    pub moved: Vec<PathBuf>,
}

impl AuditLog {
    /// Sets aside a chain that cannot be continued and starts a new one. Refuses, changing
    /// nothing, when the chain can be continued. Under the log's lock: the log, its
    /// rotated files and its head file move into `LOG.unverified-TIME/` (same names), and
    /// the new log's first record, `audit_chain_restarted`, names that directory, the
    /// reason, the verify result and the old log's last line (sequence number and hash).
    pub fn recover(&self, caller: &Caller) -> Result<Recovery, Error> {
        let _local = self.hold();
        let file = self.open_locked()?;
        let tail = self.tail(&file)?;
        let reason = match self.predecessor(&tail) {
            Ok(_) => {
                return Err(Error::State(format!(
                    "the audit log {} can be continued (its end matches {}); there is nothing to recover",
                    self.path().display(),
                    head_path(self.path()).display()
                )));
            }
            Err(e) => e.to_string(),
        };
        let rotated = rotated_files(self.path());
        let mut files = rotated.clone();
        files.push(self.path().to_path_buf());
        let old_chain = match verify(&files) {
            Ok(Ok(s)) => format!(
                "intact: {} records, seq {} to {}",
                s.records,
                s.first_seq.unwrap_or(0),
                s.last_seq.unwrap_or(0)
            ),
            Ok(Err(broken)) => broken.to_string(),
            Err(unreadable) => unreadable.to_string(),
        };
        let (last, _) = self.last_line(&tail)?;

        let set_aside = self.aside_dir()?;
        let mut moved = Vec::new();
        let inside = |p: &Path| set_aside.join(p.file_name().unwrap_or_default());
        // A hard link first: the live log's name is never missing, and it is replaced by
        // the new chain in one rename below.
        fs::hard_link(self.path(), inside(self.path()))
            .map_err(|e| Error::io(format!("cannot link {}", self.path().display()), e))?;
        moved.push(inside(self.path()));
        let head = head_path(self.path());
        for p in rotated.iter().chain(head.exists().then_some(&head)) {
            fs::rename(p, inside(p))
                .map_err(|e| Error::io(format!("cannot move {}", p.display()), e))?;
            moved.push(inside(p));
        }
        fsutil::sync_dir(&set_aside)?;

        let mut event = Event::new("audit_chain_restarted")
            .with("reason", &reason)
            .with("old_chain", &old_chain)
            .with("set_aside", set_aside.display().to_string());
        if let Some(l) = &last {
            event = event
                .with("old_last_seq", Record::seq_of(l))
                .with("old_last_line_sha256", line_hash(l));
        }
        let line = encode(None, &event.caller(caller));
        fsutil::write_atomic(
            self.path(),
            format!("{line}\n").as_bytes(),
            fsutil::SECRET_FILE_MODE,
            Replace::Allow,
        )?;
        // The head last: a crash before it leaves a log without a head, which is refused
        // (and recovered again), never an old log under a new head.
        self.write_head(1, &line_hash(line.as_bytes()))?;
        Ok(Recovery {
            reason,
            old_chain,
            set_aside,
            moved,
        })
    }

    /// A new directory (0700) beside the log: `LOG.unverified-YYYYMMDDTHHMMSSZ`, with a
    /// counter appended when that exists.
    fn aside_dir(&self) -> Result<PathBuf, Error> {
        let stamp = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_default();
        let base = format!("{}.unverified-{stamp}", self.path().display());
        for n in 1..100 {
            let dir = PathBuf::from(if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            });
            match fs::DirBuilder::new()
                .mode(fsutil::PRIVATE_DIR_MODE)
                .create(&dir)
            {
                Ok(()) => return Ok(dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(format!("cannot create {}", dir.display()), e)),
            }
        }
        Err(Error::State(format!(
            "cannot create a directory {base}-N: too many exist"
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::tests::log_with;
    use super::super::*;

    fn only(path: &Path) -> Vec<PathBuf> {
        vec![path.to_path_buf()]
    }

    #[test]
    fn a_new_or_empty_log_needs_no_head_and_a_crash_before_the_first_head_is_accepted() {
        let d = tempfile::tempdir().unwrap();
        let log = AuditLog::new(d.path().join("audit.jsonl"));
        log.check().unwrap();
        std::fs::write(log.path(), b"").unwrap();
        log.check().unwrap();
        assert_eq!(verify(&only(log.path())).unwrap().unwrap().records, 0);
        assert_eq!(log.append(&Event::new("first")).unwrap(), 1);
        // The first line on disk with the head still at its new-chain value (a crash
        // between the line's fsync and the head): continued, and it verifies.
        let head = head_path(log.path());
        std::fs::write(&head, format!("{{\"seq\":0,\"hash\":\"{GENESIS}\"}}")).unwrap();
        verify(&only(log.path())).unwrap().unwrap();
        assert_eq!(log.append(&Event::new("second")).unwrap(), 2);
    }

    #[test]
    fn a_chain_continued_from_a_rotated_file_needs_the_head_too() {
        let d = tempfile::tempdir().unwrap();
        let log = log_with(d.path(), 3);
        std::fs::rename(log.path(), rotated_path(log.path(), 1)).unwrap();
        log.check().unwrap();
        std::fs::remove_file(head_path(log.path())).unwrap();
        let e = log.append(&Event::new("x")).unwrap_err().to_string();
        assert!(e.contains("keyward audit recover"), "{e}");
        // A rotated file alone verifies without a head: the next file vouches for its end.
        let rotated = only(&rotated_path(log.path(), 1));
        assert!(!verify(&rotated).unwrap().unwrap().head_checked);
        assert!(is_rotated(&rotated[0]) && !is_rotated(log.path()));
    }

    #[test]
    fn recover_sets_everything_aside_and_starts_a_chain_that_says_so() {
        let d = tempfile::tempdir().unwrap();
        let log = log_with(d.path(), 12).with_rotation(700, 8);
        log.append(&Event::new("rotate")).unwrap();
        let rotated = rotated_files(log.path());
        assert!(!rotated.is_empty(), "700-byte files must have rotated");
        let caller = Caller::this_process();
        let e = log.recover(&caller).unwrap_err().to_string();
        assert!(e.contains("nothing to recover"), "{e}");

        let old_log = std::fs::read(log.path()).unwrap();
        std::fs::remove_file(head_path(log.path())).unwrap();
        let r = log.recover(&caller).unwrap();
        assert!(r.reason.contains("no head file"), "{}", r.reason);
        assert!(r.old_chain.contains("no head file"), "{}", r.old_chain);
        let name = r
            .set_aside
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with("audit.jsonl.unverified-"), "{name}");
        assert_eq!(r.moved.len(), rotated.len() + 1, "{:?}", r.moved);
        let aside = |p: &Path| r.set_aside.join(p.file_name().unwrap());
        assert_eq!(std::fs::read(aside(log.path())).unwrap(), old_log);
        for p in &rotated {
            assert!(!p.exists() && aside(p).exists(), "{}", p.display());
        }
        // The new chain: one record, verified with its head, naming what happened.
        let s = verify(&only(log.path())).unwrap().unwrap();
        assert_eq!((s.records, s.last_seq, s.head_checked), (1, Some(1), true));
        let text = std::fs::read_to_string(log.path()).unwrap();
        let first: Record = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(first.event, "audit_chain_restarted");
        assert_eq!(first.fields["old_last_seq"], 13);
        assert_eq!(first.fields["set_aside"], r.set_aside.display().to_string());
        assert!(first.fields["caller"]["pid"].as_u64().is_some());
        assert_eq!(log.append(&Event::new("next")).unwrap(), 2);
        // The set-aside chain still verifies up to where nothing vouches for its end.
        let mut old: Vec<PathBuf> = rotated.iter().map(|p| aside(p)).collect();
        old.push(aside(log.path()));
        assert!(broken_at_end(&old).contains("no head file"));
        old.pop();
        verify(&old).unwrap().unwrap();
    }

    #[test]
    fn recover_takes_a_cut_log_with_its_head() {
        let d = tempfile::tempdir().unwrap();
        let log = log_with(d.path(), 5);
        let text = std::fs::read_to_string(log.path()).unwrap();
        let kept: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
        std::fs::write(log.path(), kept).unwrap();
        let r = log.recover(&Caller::this_process()).unwrap();
        assert!(r.reason.contains("ends at seq 2"), "{}", r.reason);
        assert!(
            r.old_chain.contains("missing from the end"),
            "{}",
            r.old_chain
        );
        assert!(r.set_aside.join("audit.jsonl.head").exists());
        verify(&only(log.path())).unwrap().unwrap();
    }

    #[test]
    fn recover_takes_a_corrupt_head() {
        let d = tempfile::tempdir().unwrap();
        let log = log_with(d.path(), 2);
        std::fs::write(head_path(log.path()), b"{not json").unwrap();
        let r = log.recover(&Caller::this_process()).unwrap();
        assert!(r.reason.contains("is corrupt"), "{}", r.reason);
        assert!(r.old_chain.contains("is corrupt"), "{}", r.old_chain);
        verify(&only(log.path())).unwrap().unwrap();
    }

    fn broken_at_end(files: &[PathBuf]) -> String {
        verify(files).unwrap().unwrap_err().to_string()
    }
}
