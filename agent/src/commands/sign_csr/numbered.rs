//! Files numbered in the order a run writes them, `PREFIXNNNNNN.SUFFIX` (six digits):
//! the JSON Lines bundles in OUT and the manifest's parts. Only names of exactly that
//! shape count, so a temporary file of an atomic write never does.

use std::path::{Path, PathBuf};

use keyward_core::Error;

/// A family of numbered files: what their names start and end with.
pub struct NumberedFiles {
    /// The start of each name.
    pub prefix: &'static str,
    /// The end of each name.
    pub suffix: &'static str,
}

impl NumberedFiles {
    /// The file name of number `n`.
    pub fn name(&self, n: u32) -> String {
        format!("{}{n:06}{}", self.prefix, self.suffix)
    }

    /// The number of the file named `name`, when it is one of these.
    pub fn number_of(&self, name: &str) -> Option<u32> {
        let digits = name.strip_prefix(self.prefix)?.strip_suffix(self.suffix)?;
        (digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())
            .flatten()
    }

    /// These files in `dir`, by number; none when `dir` does not exist.
    pub fn in_dir(&self, dir: &Path) -> Result<Vec<(u32, PathBuf)>, Error> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("cannot read {}", dir.display()), e)),
        };
        let mut files: Vec<(u32, PathBuf)> = entries
            .flatten()
            .filter_map(|e| Some((self.number_of(e.file_name().to_str()?)?, e.path())))
            .collect();
        files.sort();
        Ok(files)
    }

    /// The number after the last of these files in `dir` (1 when there is none).
    pub fn next_in(&self, dir: &Path) -> Result<u32, Error> {
        Ok(self.in_dir(dir)?.last().map_or(1, |(n, _)| n + 1))
    }
}
