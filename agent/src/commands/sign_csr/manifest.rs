//! The manifest of a `sign-csr --batch` output directory (`OUT/manifest.json`): per CSR
//! file, its SHA-256 and what became of it. The file is compact JSON, exactly what
//! `serde_json::to_vec` gives for [`Manifest`].
//!
//! While a run goes on, each recorded chunk adds a part, `OUT/manifest.d/part-NNNNNN.json`
//! (the same shape, with the entries the chunk set), in the same transaction that records
//! its certificates; when the run ends, on SIGINT too, the whole manifest is written to
//! `manifest.json` and the parts are removed. The manifest is `manifest.json` with the
//! parts read over it in order, so a run stopped at any point (killed, or crashed) leaves
//! it naming exactly what was signed, and the next run folds the parts in. Writing the
//! whole file with every chunk instead made a run's writes grow with the square of its
//! size (at 10,000 CSRs eleven files growing to 1.9 MB, each read back first for the
//! transaction's undo; at a million, about 100 GB).
//!
//! The parts go in one step: after `manifest.json` is written, their directory is renamed
//! to `.manifest.d.done` and then deleted, so they are either all there (and folding them
//! again changes nothing) or gone. A `.manifest.d.done` a crash left is deleted by the
//! next run's end. A `manifest.d` that is not a directory of its own (a symbolic link
//! someone who can write OUT planted) is refused, never written through.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use keyward_core::Error;
use keyward_core::fsutil::{self, Replace};
use serde::{Deserialize, Serialize};

use super::numbered::NumberedFiles;

/// The manifest's file name in the output directory.
const FILE_NAME: &str = "manifest.json";
/// The directory of the parts in the output directory.
const PARTS_DIR: &str = "manifest.d";
/// What the parts' directory is renamed to once `manifest.json` holds them.
const FOLDED_DIR: &str = ".manifest.d.done";
/// The parts: `part-NNNNNN.json`.
const PARTS: NumberedFiles = NumberedFiles {
    prefix: "part-",
    suffix: ".json",
};

/// What became of one CSR file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Outcome {
    /// Signed and recorded: the certificate (chain) is in `cert`, next to the manifest.
    Signed {
        /// Serial number, upper-case hex.
        serial: String,
        /// The output file's name: its chain file, or the JSON Lines bundle holding it.
        cert: String,
    },
    /// Not signed, and why (tried again by the next run).
    Refused {
        /// The one-line reason.
        reason: String,
    },
}

/// One CSR file's line in the manifest; made only by [`Manifest::set`], so its kept
/// JSON always matches its fields.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// SHA-256 (hex) of the CSR file as it was signed or refused.
    csr_sha256: String,
    /// What became of it.
    #[serde(flatten)]
    outcome: Outcome,
    /// `"NAME":{...}`, the entry as it appears in the file, once encoded.
    #[serde(skip)]
    json: OnceLock<Box<[u8]>>,
}

/// The manifest: CSR file name → its entry.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// The entries, by CSR file name.
    csrs: BTreeMap<String, Entry>,
    /// The names set since the last part.
    #[serde(skip)]
    unwritten: Vec<String>,
    /// The number of the last part (0: none).
    #[serde(skip)]
    last_part: u32,
}

impl Manifest {
    /// Where the manifest of output directory `out` lives.
    pub fn path(out: &Path) -> PathBuf {
        out.join(FILE_NAME)
    }

    /// The manifest of `out` (`manifest.json` and the parts over it), empty when there
    /// is none yet.
    pub fn load(out: &Path) -> Result<Manifest, Error> {
        let mut manifest: Manifest = fsutil::read_json(&Self::path(out))?.unwrap_or_default();
        let parts = match parts_dir(out)? {
            Some(dir) => PARTS.in_dir(&dir)?,
            None => Vec::new(),
        };
        for (_, path) in &parts {
            let part: Manifest = fsutil::read_json(path)?.unwrap_or_default();
            manifest.csrs.extend(part.csrs);
        }
        manifest.last_part = parts.last().map_or(0, |(n, _)| *n);
        Ok(manifest)
    }

    /// Whether the manifest says anything of the CSR file `name`.
    pub fn lists(&self, name: &str) -> bool {
        self.csrs.contains_key(name)
    }

    /// Whether the CSR file `name` with content hash `sha256` was signed already.
    pub fn is_signed(&self, name: &str, sha256: &str) -> bool {
        self.csrs
            .get(name)
            .is_some_and(|e| e.csr_sha256 == sha256 && matches!(e.outcome, Outcome::Signed { .. }))
    }

    /// Records what became of the CSR file `name` (written with the next part).
    pub fn set(&mut self, name: &str, csr_sha256: &str, outcome: Outcome) {
        self.csrs.insert(
            name.to_string(),
            Entry {
                csr_sha256: csr_sha256.to_string(),
                outcome,
                json: OnceLock::new(),
            },
        );
        self.unwritten.push(name.to_string());
    }

    /// The next part of `out`'s manifest, with the entries set since the last one: its
    /// path and content (its directory made); `None` when nothing was set.
    pub fn next_part(&mut self, out: &Path) -> Result<Option<(PathBuf, Vec<u8>)>, Error> {
        if self.unwritten.is_empty() {
            return Ok(None);
        }
        let mut names = std::mem::take(&mut self.unwritten);
        names.sort_unstable();
        names.dedup();
        let entries = names
            .iter()
            .filter_map(|name| self.csrs.get_key_value(name.as_str()));
        let json = encode(entries, names.len())?;
        if parts_dir(out)?.is_none() {
            fsutil::create_private_dir(&out.join(PARTS_DIR))?;
        }
        // Checked again: what was created (or found) is a directory of its own.
        let dir = parts_dir(out)?.ok_or_else(|| {
            Error::State(format!(
                "{} vanished as it was made",
                out.join(PARTS_DIR).display()
            ))
        })?;
        self.last_part += 1;
        let path = dir.join(PARTS.name(self.last_part));
        Ok(Some((path, json)))
    }

    /// Writes the whole manifest to `out`'s `manifest.json` and removes the parts, when
    /// the file lacks anything.
    pub fn compact(&mut self, out: &Path) -> Result<(), Error> {
        let folded = out.join(FOLDED_DIR);
        let gone = |r: std::io::Result<()>, what: &Path| match r {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("cannot remove {}", what.display()), e))
            }
            _ => Ok(()),
        };
        gone(std::fs::remove_dir_all(&folded), &folded)?;
        // `manifest.json` lacks nothing without parts and without entries set since.
        if self.last_part == 0 && self.unwritten.is_empty() {
            return Ok(());
        }
        let json = self.to_json()?;
        fsutil::write_atomic(
            &Self::path(out),
            &json,
            fsutil::PUBLIC_FILE_MODE,
            Replace::Allow,
        )?;
        let parts = out.join(PARTS_DIR);
        if parts.exists() {
            std::fs::rename(&parts, &folded)
                .map_err(|e| Error::io(format!("cannot rename {}", parts.display()), e))?;
            fsutil::sync_dir(out)?;
            gone(std::fs::remove_dir_all(&folded), &folded)?;
        }
        self.unwritten.clear();
        self.last_part = 0;
        Ok(())
    }

    /// The whole manifest: `{"csrs":{...}}`, each entry encoded once.
    pub fn to_json(&self) -> Result<Vec<u8>, Error> {
        encode(self.csrs.iter(), self.csrs.len())
    }
}

/// `out`'s parts directory, when there is one; refused when `manifest.d` is a symbolic
/// link or anything but a directory: parts are never written through a link someone
/// who can write OUT planted (into a directory of their choosing).
fn parts_dir(out: &Path) -> Result<Option<PathBuf>, Error> {
    let dir = out.join(PARTS_DIR);
    match std::fs::symlink_metadata(&dir) {
        Ok(meta) if meta.is_dir() => Ok(Some(dir)),
        Ok(_) => Err(Error::InvalidInput(format!(
            "{} is not a directory (a symbolic link or a file): the manifest's parts go only into a directory of their own; remove it",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot read {}", dir.display()), e)),
    }
}

/// `{"csrs":{...}}` with `entries` (`count` of them), each entry's JSON made once and
/// kept.
fn encode<'a>(
    entries: impl Iterator<Item = (&'a String, &'a Entry)>,
    count: usize,
) -> Result<Vec<u8>, Error> {
    let encode_error =
        |e: serde_json::Error| Error::State(format!("cannot encode the batch manifest: {e}"));
    let mut out = Vec::with_capacity(16 + count * 200);
    out.extend_from_slice(b"{\"csrs\":{");
    for (i, (name, entry)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let json = match entry.json.get() {
            Some(json) => json,
            None => {
                let mut json = serde_json::to_vec(name).map_err(encode_error)?;
                json.push(b':');
                serde_json::to_writer(&mut json, entry).map_err(encode_error)?;
                entry.json.get_or_init(|| json.into())
            }
        };
        out.extend_from_slice(json);
    }
    out.extend_from_slice(b"}}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kept entries give the bytes serde_json gives for the whole manifest, also
    /// after entries are added and replaced between two writes.
    #[test]
    fn the_file_is_serde_jsons_encoding_of_the_manifest() {
        let mut m = Manifest::default();
        assert_eq!(m.to_json().unwrap(), serde_json::to_vec(&m).unwrap());
        let signed = |n: u32| Outcome::Signed {
            serial: format!("{n:032X}"),
            cert: format!("dev-{n}.pem"),
        };
        m.set("b.csr", &"ab".repeat(32), signed(2));
        m.set("a \"quoted\"\\é.csr", &"cd".repeat(32), signed(1));
        let first = m.to_json().unwrap();
        assert_eq!(first, serde_json::to_vec(&m).unwrap());
        m.set(
            "b.csr",
            &"ef".repeat(32),
            Outcome::Refused {
                reason: "its signature\ndoes not verify".into(),
            },
        );
        m.set("c.csr", &"01".repeat(32), signed(3));
        let second = m.to_json().unwrap();
        assert_eq!(second, serde_json::to_vec(&m).unwrap());
        let back: Manifest = serde_json::from_slice(&second).unwrap();
        assert_eq!(back.to_json().unwrap(), second);
        assert!(back.is_signed("c.csr", &"01".repeat(32)));
        assert!(!back.is_signed("b.csr", &"ef".repeat(32)));
        assert!(back.lists("b.csr") && !back.lists("d.csr"));
    }

    /// Writes `m`'s next part to `out`, as a chunk's transaction does.
    fn write_part(m: &mut Manifest, out: &Path) -> PathBuf {
        let (path, json) = m.next_part(out).unwrap().expect("a part");
        fsutil::write_atomic(&path, &json, fsutil::PUBLIC_FILE_MODE, Replace::Refuse).unwrap();
        path
    }

    /// Parts are read over `manifest.json` in their order; a run's end folds them into
    /// the file and removes them; a last part left beside a file that holds it (a crash
    /// between the two steps) changes nothing.
    #[test]
    fn parts_are_read_in_order_and_folded_at_the_end() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path();
        let signed = |n: u32| Outcome::Signed {
            serial: format!("{n:032X}"),
            cert: "certificates-000001.jsonl".into(),
        };
        let refused = || Outcome::Refused {
            reason: "its signature does not verify".into(),
        };
        let mut first = Manifest::load(out).unwrap();
        first.set("a.csr", &"aa".repeat(32), refused());
        first.set("b.csr", &"bb".repeat(32), signed(1));
        first.compact(out).unwrap();
        assert!(!out.join(PARTS_DIR).exists(), "no part without a chunk");

        // A run killed before its end: two parts, the second changing a.csr again.
        let mut run = Manifest::load(out).unwrap();
        assert!(run.next_part(out).unwrap().is_none(), "nothing set yet");
        run.set("a.csr", &"aa".repeat(32), signed(2));
        write_part(&mut run, out);
        run.set("c.csr", &"cc".repeat(32), signed(3));
        run.set("a.csr", &"ab".repeat(32), refused());
        let last = write_part(&mut run, out);
        assert!(
            last.ends_with("manifest.d/part-000002.json"),
            "{}",
            last.display()
        );
        let read = Manifest::load(out).unwrap();
        assert_eq!(read.to_json().unwrap(), run.to_json().unwrap());
        assert!(read.is_signed("c.csr", &"cc".repeat(32)));
        assert!(!read.is_signed("a.csr", &"aa".repeat(32)));
        assert_eq!(read.last_part, 2, "numbered on");

        // The next run's end folds them.
        let kept = std::fs::read(&last).unwrap();
        let mut next = Manifest::load(out).unwrap();
        next.compact(out).unwrap();
        assert!(!out.join(PARTS_DIR).exists() && !out.join(FOLDED_DIR).exists());
        let whole = std::fs::read(Manifest::path(out)).unwrap();
        assert_eq!(whole, run.to_json().unwrap());

        std::fs::create_dir(out.join(PARTS_DIR)).unwrap();
        std::fs::write(&last, kept).unwrap();
        std::fs::create_dir(out.join(FOLDED_DIR)).unwrap();
        let mut after_crash = Manifest::load(out).unwrap();
        assert_eq!(after_crash.to_json().unwrap(), whole);
        after_crash.compact(out).unwrap();
        assert!(!out.join(PARTS_DIR).exists() && !out.join(FOLDED_DIR).exists());
        assert_eq!(std::fs::read(Manifest::path(out)).unwrap(), whole);
    }

    /// A `manifest.d` that is a symbolic link is refused when the manifest is read and
    /// when a part is to be written, and nothing goes where it points.
    #[test]
    fn a_parts_directory_that_is_a_link_is_refused_and_not_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let (out, elsewhere) = (tmp.path().join("out"), tmp.path().join("elsewhere"));
        std::fs::create_dir(&out).unwrap();
        std::fs::create_dir(&elsewhere).unwrap();
        let link = out.join(PARTS_DIR);
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let e = Manifest::load(&out).unwrap_err().to_string();
        assert!(e.contains("manifest.d is not a directory"), "{e}");

        std::fs::remove_file(&link).unwrap();
        let mut m = Manifest::load(&out).unwrap();
        m.set(
            "a.csr",
            &"aa".repeat(32),
            Outcome::Refused {
                reason: "bad".into(),
            },
        );
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let e = m.next_part(&out).unwrap_err().to_string();
        assert!(e.contains("manifest.d is not a directory"), "{e}");
        assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none());
    }
}
