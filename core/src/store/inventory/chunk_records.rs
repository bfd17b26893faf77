//! The records of `sign-csr --batch` chunks: each chunk's records in a file of their
//! own, `inventory.d/batch-<FIRST SERIAL>.json`, written once in the chunk's
//! transaction (undone with it) and never rewritten, so that recording a chunk costs
//! the same however many records the inventory holds (rewriting one file of every
//! record made a bulk run quadratic). [`TakenSerials`] keeps the serials a run must not
//! use again across its chunks, reading only what changed in between.

use std::collections::HashSet;
use std::fs;

use serde::Deserialize;

use super::{INVENTORY, IssuedRecord, StateDir, Transaction};
use crate::Error;
use crate::fsutil::{self, Replace};

/// The directory of the chunks' record files, in the state directory.
const CHUNKS_DIR: &str = "inventory.d";

/// The serials the inventory holds, kept by a caller that records many chunks (a
/// `sign-csr --batch` run) so that each chunk reads only what changed since the last:
/// `inventory.json` is parsed again only when its content changed (another command
/// recorded a certificate), and each chunk file once, as chunk files never change.
#[derive(Debug, Default)]
pub struct TakenSerials {
    /// `inventory.json` as it was when last parsed (empty when there was none).
    alone: Option<Vec<u8>>,
    /// The chunk files whose serials are in `serials`.
    files: HashSet<String>,
    /// Every serial of the inventory.
    serials: HashSet<String>,
}

/// The one field of a record that taking serials needs.
#[derive(Deserialize)]
struct SerialOnly {
    serial_hex: String,
}

impl TakenSerials {
    /// An empty set, filled on first use.
    pub fn new() -> TakenSerials {
        TakenSerials::default()
    }

    /// Whether the inventory holds `serial`.
    pub(super) fn contains(&self, serial: &str) -> bool {
        self.serials.contains(serial)
    }

    /// Brings the set up to date with `state` (under its lock). A chunk file gone (a
    /// transaction undone) or `inventory.json` changed: everything is read again.
    pub(super) fn refresh(&mut self, state: &StateDir) -> Result<(), Error> {
        let alone_path = state.root.join(INVENTORY);
        let alone = match fs::read(&alone_path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(Error::io(
                    format!("cannot read {}", alone_path.display()),
                    e,
                ));
            }
        };
        let names = chunk_file_names(state)?;
        let gone = self.files.iter().any(|f| names.binary_search(f).is_err());
        if self.alone.as_ref() != Some(&alone) || gone {
            *self = TakenSerials::default();
            if !alone.is_empty() {
                let records: Vec<SerialOnly> = parse(&alone, &alone_path.display())?;
                self.serials
                    .extend(records.into_iter().map(|r| r.serial_hex));
            }
            self.alone = Some(alone);
        }
        for name in names {
            if self.files.contains(&name) {
                continue;
            }
            let path = state.root.join(CHUNKS_DIR).join(&name);
            let data = fs::read(&path)
                .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
            let records: Vec<SerialOnly> = parse(&data, &path.display())?;
            self.serials
                .extend(records.into_iter().map(|r| r.serial_hex));
            self.files.insert(name);
        }
        Ok(())
    }
}

/// `data` parsed as JSON, or an error naming the file `what`.
fn parse<T: serde::de::DeserializeOwned>(
    data: &[u8],
    what: &impl std::fmt::Display,
) -> Result<T, Error> {
    serde_json::from_slice(data).map_err(|e| Error::State(format!("{what} is corrupt: {e}")))
}

/// The names of the chunk record files (`*.json`, not hidden), sorted.
fn chunk_file_names(state: &StateDir) -> Result<Vec<String>, Error> {
    let dir = state.root.join(CHUNKS_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("cannot read {}", dir.display()), e)),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n.ends_with(".json"))
        .collect();
    names.sort();
    Ok(names)
}

impl Transaction<'_> {
    /// Writes the records of a chunk to a new file of `inventory.d/`, named after the
    /// first, and adds their serials to `taken`.
    pub(super) fn write_chunk_records(
        &mut self,
        records: &[IssuedRecord],
        taken: &mut TakenSerials,
    ) -> Result<(), Error> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        let name = format!("batch-{}.json", first.serial_hex);
        let dir = self.state().root.join(CHUNKS_DIR);
        let path = dir.join(&name);
        let data = serde_json::to_vec(records)
            .map_err(|e| Error::State(format!("cannot encode {}: {e}", path.display())))?;
        self.create_dir(&dir)?;
        self.write(&path, &data, fsutil::SECRET_FILE_MODE, Replace::Refuse)?;
        taken
            .serials
            .extend(records.iter().map(|r| r.serial_hex.clone()));
        taken.files.insert(name);
        Ok(())
    }
}

impl StateDir {
    /// The records of every bulk chunk, file by file (in name order).
    pub(super) fn chunk_records(&self) -> Result<Vec<IssuedRecord>, Error> {
        let mut all = Vec::new();
        for name in chunk_file_names(self)? {
            let path = self.root.join(CHUNKS_DIR).join(name);
            let data = fs::read(&path)
                .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
            all.extend(parse::<Vec<IssuedRecord>>(&data, &path.display())?);
        }
        Ok(all)
    }
}
