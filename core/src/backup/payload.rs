//! The archive's plaintext: a JSON manifest followed by the contents it describes.

use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{FORMAT_NAME, MANIFEST_VERSION};
use crate::Error;
use crate::store::sha256_hex;

/// The archive's table of contents (no secret in it: key URIs are in canonical form,
/// which never carries a PIN).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveManifest {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// When the backup was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The absolute path of the state directory that was backed up.
    pub source_state_dir: PathBuf,
    /// Every file of the state directory, path relative to it.
    pub files: Vec<ArchivedFile>,
    /// Every key the CA manifest names.
    pub keys: Vec<ArchivedKey>,
}

/// One file of the state directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchivedFile {
    /// Path relative to the state directory (`/`-separated, no `..`).
    pub path: String,
    /// Permission bits it had.
    pub mode: u32,
    /// Length of its contents.
    pub size: u64,
    /// Lower-case hex SHA-256 of its contents.
    pub sha256: String,
}

/// One key named by the CA manifest, and whether its private bytes are in the archive.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchivedKey {
    /// `root` or `intermediate`.
    pub role: String,
    /// The key's URI (canonical form, no PIN).
    pub uri: String,
    /// Whether the private key is in the archive (only software `file:` keys are).
    pub included: bool,
    /// When the key file lives inside the state directory: its path there (the bytes
    /// are then those of that file entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_file: Option<String>,
    /// When the key file lives outside the state directory: the length of its contents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// ... and their SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl ArchivedKey {
    /// Whether the key's bytes are stored as their own entry (a key outside the state
    /// directory), to be restored at the URI's path.
    pub fn has_own_contents(&self) -> bool {
        self.included && self.state_file.is_none()
    }
}

/// A decoded, fully checked payload. The plaintext is zeroized on drop.
pub struct Payload {
    manifest: ArchiveManifest,
    bytes: Zeroizing<Vec<u8>>,
    file_ranges: Vec<Range<usize>>,
    key_ranges: Vec<Option<Range<usize>>>,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("manifest", &self.manifest)
            .finish_non_exhaustive()
    }
}

impl Payload {
    /// Lays out the plaintext: `contents` holds one buffer per file entry, then one per
    /// key entry with its own contents, in manifest order. Built in one allocation of the
    /// exact size, so no partial copy of a key is left behind in freed memory.
    pub fn encode(
        manifest: &ArchiveManifest,
        contents: &[Zeroizing<Vec<u8>>],
    ) -> Zeroizing<Vec<u8>> {
        let json = serde_json::to_vec(manifest).expect("the archive manifest serializes");
        let total = 4 + json.len() + contents.iter().map(|c| c.len()).sum::<usize>();
        let mut out = Zeroizing::new(Vec::with_capacity(total));
        let len = u32::try_from(json.len()).expect("manifest under 4 GiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&json);
        for c in contents {
            out.extend_from_slice(c);
        }
        out
    }

    /// Parses a decrypted payload and checks everything: format and version, paths,
    /// sizes adding up to the payload exactly, and every SHA-256.
    pub fn decode(bytes: Zeroizing<Vec<u8>>) -> Result<Payload, Error> {
        let bad = |what: &str| Error::InvalidInput(format!("the archive's payload {what}"));
        let len_bytes: [u8; 4] = bytes
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("is truncated"))?;
        let json_end = 4usize
            .checked_add(u32::from_be_bytes(len_bytes) as usize)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| bad("has a manifest length past its end"))?;
        let manifest: ArchiveManifest = serde_json::from_slice(&bytes[4..json_end])
            .map_err(|e| bad(&format!("has an unreadable manifest: {e}")))?;
        if manifest.format != FORMAT_NAME || manifest.version != MANIFEST_VERSION {
            return Err(bad(&format!(
                "is {} version {}, not {FORMAT_NAME} version {MANIFEST_VERSION}",
                manifest.format, manifest.version
            )));
        }
        let mut pos = json_end;
        let mut take = |size: u64, sha256: &str, name: &str| -> Result<Range<usize>, Error> {
            let end = usize::try_from(size)
                .ok()
                .and_then(|s| pos.checked_add(s))
                .filter(|&end| end <= bytes.len())
                .ok_or_else(|| bad(&format!("is shorter than its manifest says ({name})")))?;
            let range = pos..end;
            if sha256_hex(&bytes[range.clone()]) != sha256 {
                return Err(bad(&format!("does not match its manifest hash ({name})")));
            }
            pos = end;
            Ok(range)
        };
        let mut file_ranges = Vec::with_capacity(manifest.files.len());
        for f in &manifest.files {
            check_relative_path(&f.path)?;
            file_ranges.push(take(f.size, &f.sha256, &f.path)?);
        }
        let mut key_ranges = Vec::with_capacity(manifest.keys.len());
        for k in &manifest.keys {
            if let Some(rel) = &k.state_file
                && !manifest.files.iter().any(|f| &f.path == rel)
            {
                return Err(bad(&format!("names a key file {rel} it does not hold")));
            }
            key_ranges.push(if k.has_own_contents() {
                let (Some(size), Some(sha)) = (k.size, k.sha256.as_deref()) else {
                    return Err(bad(&format!("has no size or hash for the key {}", k.uri)));
                };
                Some(take(size, sha, &k.uri)?)
            } else {
                None
            });
        }
        if pos != bytes.len() {
            return Err(bad("has bytes its manifest does not describe"));
        }
        Ok(Payload {
            manifest,
            bytes,
            file_ranges,
            key_ranges,
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &ArchiveManifest {
        &self.manifest
    }

    /// The whole decrypted payload (for inspection, e.g. to check what it does not hold).
    pub fn plaintext(&self) -> &[u8] {
        &self.bytes
    }

    /// The contents of the `i`-th file entry.
    pub fn file_contents(&self, i: usize) -> &[u8] {
        &self.bytes[self.file_ranges[i].clone()]
    }

    /// The contents of the `i`-th key entry, when it has its own.
    pub fn key_contents(&self, i: usize) -> Option<&[u8]> {
        self.key_ranges[i].clone().map(|r| &self.bytes[r])
    }
}

/// Accepts only plain relative paths (no root, no `.`/`..`, nothing empty), so a
/// restore cannot write outside its directory.
fn check_relative_path(p: &str) -> Result<(), Error> {
    let ok = !p.is_empty()
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "the archive names a file outside the state directory: {p:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(files: Vec<ArchivedFile>) -> ArchiveManifest {
        ArchiveManifest {
            format: FORMAT_NAME.into(),
            version: MANIFEST_VERSION,
            created_at: OffsetDateTime::UNIX_EPOCH,
            source_state_dir: "/s".into(),
            files,
            keys: Vec::new(),
        }
    }

    fn file(path: &str, data: &[u8]) -> ArchivedFile {
        ArchivedFile {
            path: path.into(),
            mode: 0o644,
            size: data.len() as u64,
            sha256: sha256_hex(data),
        }
    }

    #[test]
    fn round_trip_and_every_check() {
        let m = manifest(vec![file("ca/root.pem", b"root"), file("x", b"")]);
        let contents = [Zeroizing::new(b"root".to_vec()), Zeroizing::new(Vec::new())];
        let bytes = Payload::encode(&m, &contents);
        let p = Payload::decode(bytes.clone()).unwrap();
        assert_eq!(p.file_contents(0), b"root");
        assert_eq!(p.file_contents(1), b"");

        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Payload::decode(extra).is_err(), "trailing bytes");
        let mut short = bytes.clone();
        short.pop();
        assert!(Payload::decode(short).is_err(), "truncated");
        let mut flipped = bytes.clone();
        let n = flipped.len();
        flipped[n - 1] ^= 1;
        assert!(Payload::decode(flipped).is_err(), "hash mismatch");
        for bad in ["../x", "/etc/passwd", "a/../../b", "", "./a"] {
            let m = manifest(vec![file(bad, b"")]);
            let e = Payload::decode(Payload::encode(&m, &[Zeroizing::new(Vec::new())]));
            assert!(e.is_err(), "{bad:?} accepted");
        }
    }
}
