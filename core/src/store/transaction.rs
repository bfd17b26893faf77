//! [`Transaction`]: the one way the state directory changes. It holds the lock, writes
//! the pending record before the first change, remembers how to undo every write, and
//! commits by appending the operation's audit record: when the work or the append
//! fails, every write is undone and the pending record removed, so a failure changes
//! nothing. Only a crash (or an undo that fails too) leaves the pending record, for
//! `keyward pending resolve`.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use zeroize::Zeroizing;

use super::{Plan, StateDir, StateLock};
use crate::audit::Event;
use crate::fsutil::{self, Replace};
use crate::{Error, chain_line};

/// How a transaction appends its audit record: durably, or it fails (and the
/// transaction is undone).
pub type AuditAppend<'a> = dyn Fn(Event) -> Result<(), Error> + Sync + 'a;

/// What a transaction is, as its pending record tells it.
#[derive(Clone, Debug)]
pub struct Operation {
    /// The command, e.g. `issue` or `ca init`.
    pub name: String,
    /// What it changes, for a person, e.g. `serial 1F to /srv/api`.
    pub detail: String,
    /// What it changes, for `keyward pending resolve`.
    pub plan: Plan,
}

/// Changes to the state directory (and the files an operation delivers outside it)
/// made under the lock; see [`StateDir::transaction`].
#[derive(Debug)]
pub struct Transaction<'s> {
    state: &'s StateDir,
    _lock: StateLock,
    undo: Vec<Undo>,
    event: Option<Event>,
    /// Files written since [`Transaction::defer_sync`], not yet durable.
    unsynced: Option<Vec<PathBuf>>,
}

/// How to put back one change.
#[derive(Debug)]
enum Undo {
    /// Write back what the file held, with its mode.
    Restore {
        path: PathBuf,
        data: Zeroizing<Vec<u8>>,
        mode: u32,
    },
    /// Remove a file the transaction created.
    Remove(PathBuf),
    /// Remove a directory the transaction created, when it is empty again.
    RemoveDir(PathBuf),
}

impl StateDir {
    /// Runs `work` as one transaction named by `op`: takes the lock (creating the
    /// directory for a CA operation), writes the pending record, runs `work`, then
    /// appends the audit record `work` set with [`Transaction::audit`] through `audit`
    /// and removes the pending record. When `work` or the append fails, every change
    /// made through the transaction is undone and the error returned.
    pub async fn transaction<T>(
        &self,
        op: &Operation,
        audit: &AuditAppend<'_>,
        work: impl AsyncFnOnce(&mut Transaction<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let lock = if op.plan.may_create_state() {
            self.create_and_lock()?
        } else {
            self.lock()?
        };
        let record = self.write_pending(op)?;
        let mut tx = Transaction {
            state: self,
            _lock: lock,
            undo: Vec::new(),
            event: None,
            unsynced: None,
        };
        let outcome = match work(&mut tx).await {
            Ok(value) => tx.commit(audit).map(|()| value),
            Err(e) => Err(e),
        };
        if let Err(e) = &outcome
            && let Err(undo) = tx.roll_back()
        {
            return Err(Error::State(format!(
                "{}; undoing its changes failed too ({}), so {} stays for `keyward pending resolve`",
                chain_line(e),
                chain_line(&undo),
                record.display()
            )));
        }
        if let Err(e) = self.remove_pending(&record) {
            tracing::warn!(error = %chain_line(&e), "cannot remove the pending record of an operation that changed nothing or completed; `keyward pending resolve` settles it");
        }
        outcome
    }
}

impl<'s> Transaction<'s> {
    /// The state directory this transaction changes.
    pub fn state(&self) -> &'s StateDir {
        self.state
    }

    /// Sets the audit record the transaction commits with (one per transaction; a
    /// later call replaces it). A transaction that changed anything must set one.
    pub fn audit(&mut self, event: Event) {
        self.event = Some(event);
    }

    /// Writes `data` to `path` with [`fsutil::write_atomic`], to be undone on failure
    /// (after [`Transaction::defer_sync`], made durable later).
    pub fn write(
        &mut self,
        path: &Path,
        data: &[u8],
        mode: u32,
        replace: Replace,
    ) -> Result<(), Error> {
        if self.unsynced.is_none() {
            return self.change(path, || fsutil::write_atomic(path, data, mode, replace));
        }
        self.change(path, || {
            fsutil::write_atomic_unsynced(path, data, mode, replace)
        })?;
        self.unsynced
            .get_or_insert_default()
            .push(path.to_path_buf());
        Ok(())
    }

    /// From now on [`Transaction::write`] leaves files to be synced together, by
    /// [`Transaction::sync`] or at the latest before the commit: for operations that
    /// write many files (thousands of certificates), where one fsync each would
    /// dominate.
    pub fn defer_sync(&mut self) {
        self.unsynced.get_or_insert_default();
    }

    /// Makes every file written since [`Transaction::defer_sync`] durable, e.g. before
    /// the record that names them is written.
    pub fn sync(&mut self) -> Result<(), Error> {
        match self.unsynced.as_mut() {
            Some(files) if !files.is_empty() => fsutil::sync_files(&std::mem::take(files)),
            _ => Ok(()),
        }
    }

    /// Writes `value` to `path` with [`fsutil::write_json`], to be undone on failure.
    pub fn write_json<T: Serialize>(&mut self, path: &Path, value: &T) -> Result<(), Error> {
        self.change(path, || fsutil::write_json(path, value))
    }

    /// Removes the file at `path`, to be put back on failure.
    pub fn remove(&mut self, path: &Path) -> Result<(), Error> {
        self.change(path, || remove_file(path))
    }

    /// Creates `dir` and its missing parents (0700), to be removed on failure.
    pub fn create_dir(&mut self, dir: &Path) -> Result<(), Error> {
        if dir.is_dir() {
            return Ok(());
        }
        let missing: Vec<&Path> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .collect();
        self.undo.extend(
            missing
                .iter()
                .rev()
                .map(|d| Undo::RemoveDir(d.to_path_buf())),
        );
        fsutil::create_private_dir(dir)
    }

    /// Runs `f`, which changes the file at `path`, and remembers how to undo it.
    fn change(&mut self, path: &Path, f: impl FnOnce() -> Result<(), Error>) -> Result<(), Error> {
        let undo = match fs::read(path) {
            Ok(data) => Undo::Restore {
                path: path.to_path_buf(),
                data: Zeroizing::new(data),
                mode: fsutil::mode_of(path)?,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Undo::Remove(path.to_path_buf()),
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
        };
        f()?;
        self.undo.push(undo);
        Ok(())
    }

    /// Appends the audit record: the commit. Nothing to append when nothing changed.
    fn commit(&mut self, audit: &AuditAppend<'_>) -> Result<(), Error> {
        self.sync()?;
        match self.event.take() {
            Some(event) => audit(event),
            None if self.undo.is_empty() => Ok(()),
            None => Err(Error::State(
                "an operation changed the state directory without an audit record".into(),
            )),
        }
    }

    /// Undoes every change, newest first; goes on past a failed step and returns the
    /// first failure.
    fn roll_back(&mut self) -> Result<(), Error> {
        let mut first = None;
        for step in self.undo.drain(..).rev() {
            if let Err(e) = step.apply() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Undo {
    fn apply(self) -> Result<(), Error> {
        match self {
            Undo::Restore { path, data, mode } => {
                fsutil::write_atomic(&path, &data, mode, Replace::Allow)
            }
            Undo::Remove(path) => match fs::symlink_metadata(&path) {
                Ok(_) => remove_file(&path),
                Err(_) => Ok(()),
            },
            Undo::RemoveDir(dir) => match fs::remove_dir(&dir) {
                Ok(()) => fsutil::sync_dir(fsutil::parent_dir(&dir)),
                // Gone already, or holding files someone else put there: left alone.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::DirectoryNotEmpty
                    ) =>
                {
                    Ok(())
                }
                Err(e) => Err(Error::io(format!("cannot remove {}", dir.display()), e)),
            },
        }
    }
}

/// Removes the file at `path` durably (the directory is fsynced).
fn remove_file(path: &Path) -> Result<(), Error> {
    fs::remove_file(path).map_err(|e| Error::io(format!("cannot remove {}", path.display()), e))?;
    fsutil::sync_dir(fsutil::parent_dir(path))
}
