//! Reading the certificate of an inventory record. A record names its file in
//! `issued/` and the SHA-256 of its own PEM block: a certificate issued alone has a file
//! of its own (the whole file is the block), a chunk of `sign-csr --batch` shares one
//! file, its PEM blocks concatenated. Each file is read once however many records name
//! it, so checking 10,000 records reads a handful of files.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::IssuedRecord;
use crate::Error;
use crate::store::{StateDir, sha256_hex};

/// Where every PEM block of a file starts.
const BEGIN: &str = "-----BEGIN ";
/// A block starting on a line after the first.
const NEXT_BEGIN: &str = "\n-----BEGIN ";

/// The certificate files of the inventory, each read on first need and kept.
#[derive(Debug)]
pub struct IssuedFiles {
    root: PathBuf,
    files: HashMap<String, Result<FileBlocks, std::io::ErrorKind>>,
}

/// A file's content and where each of its blocks is, by SHA-256.
#[derive(Debug)]
struct FileBlocks {
    data: Vec<u8>,
    /// SHA-256 of the whole file: a record of a certificate issued alone names it.
    whole_sha256: String,
    blocks: HashMap<String, Range<usize>>,
}

impl FileBlocks {
    fn new(data: Vec<u8>) -> FileBlocks {
        let blocks = block_ranges(&data)
            .into_iter()
            .map(|r| (sha256_hex(&data[r.clone()]), r))
            .collect();
        FileBlocks {
            whole_sha256: sha256_hex(&data),
            data,
            blocks,
        }
    }

    /// The block whose SHA-256 is `sha256` (the whole file when it is the file's).
    fn block(&self, sha256: &str) -> Option<&[u8]> {
        if sha256 == self.whole_sha256 {
            return Some(&self.data);
        }
        self.blocks.get(sha256).map(|r| &self.data[r.clone()])
    }
}

/// Where each PEM block of `data` is: from a line starting `-----BEGIN ` to the next
/// one (or the end).
fn block_ranges(data: &[u8]) -> Vec<Range<usize>> {
    let starts: Vec<usize> = (0..data.len())
        .filter(|&i| (i == 0 || data[i - 1] == b'\n') && data[i..].starts_with(BEGIN.as_bytes()))
        .collect();
    let ends = starts.iter().skip(1).copied().chain([data.len()]);
    starts.iter().zip(ends).map(|(&s, e)| s..e).collect()
}

/// Whether `pem` is one whole PEM block that can be concatenated with others and found
/// again: it starts with `-----BEGIN `, holds no other block and ends with a newline.
/// Checked for every certificate a chunk stores, so with a substring search rather
/// than [`block_ranges`]' walk over every byte.
pub(super) fn is_one_block(pem: &str) -> bool {
    pem.starts_with(BEGIN) && !pem.contains(NEXT_BEGIN) && pem.ends_with('\n')
}

/// Why a record's certificate cannot be read.
pub(super) enum Unreadable {
    /// Its file cannot be read.
    File(std::io::ErrorKind),
    /// Its file holds no block with the record's SHA-256.
    Altered,
}

impl IssuedFiles {
    /// A reader of the certificate files under the state directory `root`.
    pub(super) fn new(root: &Path) -> IssuedFiles {
        IssuedFiles {
            root: root.to_path_buf(),
            files: HashMap::new(),
        }
    }

    /// The PEM block of `rec`'s certificate.
    pub fn pem(&mut self, rec: &IssuedRecord) -> Result<&[u8], Error> {
        let path = self.root.join(&rec.cert_file);
        match self.lookup(rec) {
            Ok(pem) => Ok(pem),
            Err(Unreadable::File(kind)) => Err(Error::io(
                format!("cannot read {}", path.display()),
                kind.into(),
            )),
            Err(Unreadable::Altered) => Err(Error::State(format!(
                "{} does not hold certificate {} as its inventory record describes it",
                path.display(),
                rec.serial_hex
            ))),
        }
    }

    /// [`IssuedFiles::pem`], with the reason it failed for the caller to word.
    pub(super) fn lookup(&mut self, rec: &IssuedRecord) -> Result<&[u8], Unreadable> {
        let file = self
            .files
            .entry(rec.cert_file.clone())
            .or_insert_with(|| {
                std::fs::read(self.root.join(&rec.cert_file))
                    .map(FileBlocks::new)
                    .map_err(|e| e.kind())
            })
            .as_ref()
            .map_err(|kind| Unreadable::File(*kind))?;
        file.block(&rec.cert_sha256).ok_or(Unreadable::Altered)
    }

    /// The files read so far whose blocks are not all among `named` (SHA-256 of the
    /// records' blocks), with how many are not; a file a record names whole is fine.
    fn unnamed_blocks<'a>(
        &'a self,
        named: &'a HashSet<&str>,
    ) -> impl Iterator<Item = (&'a str, usize)> + 'a {
        self.files.iter().filter_map(|(name, file)| {
            let file = file.as_ref().ok()?;
            if named.contains(file.whole_sha256.as_str()) {
                return None;
            }
            let unnamed = file
                .blocks
                .keys()
                .filter(|sha| !named.contains(sha.as_str()))
                .count();
            (unnamed > 0).then_some((name.as_str(), unnamed))
        })
    }
}

impl StateDir {
    /// A reader of the certificates of inventory records: [`IssuedFiles::pem`].
    pub fn issued_files(&self) -> IssuedFiles {
        IssuedFiles::new(&self.root)
    }

    /// The certificate (its PEM block) of the inventory record `rec`; to read many,
    /// [`StateDir::issued_files`] reads each file once.
    pub fn issued_pem(&self, rec: &IssuedRecord) -> Result<Vec<u8>, Error> {
        self.issued_files().pem(rec).map(<[u8]>::to_vec)
    }

    /// Records whose certificate is missing or altered, certificates in a file no
    /// record names, and files in `issued/` no record names.
    pub(in crate::store) fn inventory_problems(&self) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        let records = match self.all_records() {
            Ok(r) => r,
            Err(e) => return Ok(vec![e.to_string()]),
        };
        let mut files = self.issued_files();
        for r in &records {
            let path = self.root.join(&r.cert_file);
            match files.lookup(r) {
                Ok(_) => {}
                Err(Unreadable::Altered) => out.push(format!(
                    "{} does not match the inventory record of certificate {}",
                    path.display(),
                    r.serial_hex
                )),
                Err(Unreadable::File(_)) => out.push(format!(
                    "{} named by the inventory is missing",
                    path.display()
                )),
            }
        }
        let named: HashSet<&str> = records.iter().map(|r| r.cert_sha256.as_str()).collect();
        for (file, unnamed) in files.unnamed_blocks(&named) {
            out.push(format!(
                "{} holds {unnamed} certificate(s) no inventory record names",
                self.root.join(file).display()
            ));
        }
        let cert_files: HashSet<&str> = records.iter().map(|r| r.cert_file.as_str()).collect();
        let dir = self.root.join("issued");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = format!("issued/{}", e.file_name().to_string_lossy());
                if !cert_files.contains(name.as_str()) {
                    out.push(format!(
                        "{} is not in the inventory (an issuance was interrupted before it was recorded)",
                        self.root.join(&name).display()
                    ));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{block_ranges, is_one_block};

    /// The check a chunk makes agrees with how the file is read back: exactly one block,
    /// from the start to the end, ending with a newline.
    #[test]
    fn one_block_is_what_the_reader_finds_as_one() {
        let one = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let cases = [
            (one.to_string(), true),
            (format!("{one}{one}"), false),
            (one.trim_end().to_string(), false),
            (format!("junk\n{one}"), false),
            (format!("{one}x-----BEGIN X\n"), true),
            (String::new(), false),
        ];
        for (pem, expected) in cases {
            assert_eq!(is_one_block(&pem), expected, "{pem:?}");
            let whole =
                matches!(block_ranges(pem.as_bytes()).as_slice(), [r] if *r == (0..pem.len()));
            assert_eq!(whole && pem.ends_with('\n'), expected, "{pem:?}");
        }
    }
}
