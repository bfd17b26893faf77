//! Reading a state directory (and the software CA keys it names) into a payload.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::payload::{ArchiveManifest, ArchivedFile, ArchivedKey, Payload};
use super::{FORMAT_NAME, MANIFEST_VERSION};
use crate::store::{StateDir, StateLock, sha256_hex};
use crate::{Error, KeyUri};

/// What [`collect`] read: the manifest, the encoded payload, and what it left out.
pub struct Collected {
    /// The archive's manifest.
    pub manifest: ArchiveManifest,
    /// The plaintext payload ([`Payload::encode`] layout), zeroized on drop.
    pub payload: Zeroizing<Vec<u8>>,
    /// Entries of the state directory not archived, with the reason (sockets, symlinks).
    pub skipped: Vec<String>,
}

/// Reads every regular file of the state directory (except the lock file and temporary
/// files, whose names start with `.`) and the private key of every `file:` key the CA
/// manifest names. Take the state lock first (`lock` proves it), so no keyward writer
/// changes the directory half-way. A software CA key that cannot be read fails the
/// backup: an archive without it could not rebuild the CA.
pub fn collect(state: &StateDir, _lock: &StateLock) -> Result<Collected, Error> {
    let root = std::path::absolute(state.path())
        .map_err(|e| Error::io(format!("bad state directory {}", state.path().display()), e))?;
    let mut files = Vec::new();
    let mut contents = Vec::new();
    let mut skipped = Vec::new();
    walk(&root, &root, &mut files, &mut contents, &mut skipped)?;

    let mut keys = Vec::new();
    let mut key_contents = Vec::new();
    if let Some(ca) = state.ca()? {
        let named = ca
            .root_key
            .iter()
            .map(|k| ("root", k))
            .chain(ca.intermediate.iter().map(|(_, k)| ("intermediate", k)));
        for (role, uri) in named {
            keys.push(archive_key(&root, &files, role, uri, &mut key_contents)?);
        }
    }
    contents.extend(key_contents);
    let manifest = ArchiveManifest {
        format: FORMAT_NAME.into(),
        version: MANIFEST_VERSION,
        created_at: OffsetDateTime::now_utc(),
        source_state_dir: root,
        files,
        keys,
    };
    let payload = Payload::encode(&manifest, &contents);
    Ok(Collected {
        manifest,
        payload,
        skipped,
    })
}

/// The manifest entry for one CA key; its bytes go to `contents` when they are stored
/// as their own entry (a `file:` key outside the state directory).
fn archive_key(
    root: &Path,
    files: &[ArchivedFile],
    role: &str,
    uri: &KeyUri,
    contents: &mut Vec<Zeroizing<Vec<u8>>>,
) -> Result<ArchivedKey, Error> {
    let mut entry = ArchivedKey {
        role: role.into(),
        uri: uri.to_string(),
        included: false,
        state_file: None,
        size: None,
        sha256: None,
    };
    let KeyUri::File(f) = uri else {
        return Ok(entry);
    };
    entry.included = true;
    let inside = f
        .path
        .strip_prefix(root)
        .ok()
        .and_then(|rel| rel.to_str())
        .filter(|rel| files.iter().any(|x| x.path == *rel));
    if let Some(rel) = inside {
        entry.state_file = Some(rel.to_string());
        return Ok(entry);
    }
    let bytes = Zeroizing::new(fs::read(&f.path).map_err(|e| {
        Error::io(
            format!(
                "cannot read the {role} CA key {} to back it up",
                f.path.display()
            ),
            e,
        )
    })?);
    entry.size = Some(bytes.len() as u64);
    entry.sha256 = Some(sha256_hex(&bytes));
    contents.push(bytes);
    Ok(entry)
}

/// Adds every regular file under `dir` (sorted, recursively) to `files`/`contents`.
fn walk(
    root: &Path,
    dir: &Path,
    files: &mut Vec<ArchivedFile>,
    contents: &mut Vec<Zeroizing<Vec<u8>>>,
    skipped: &mut Vec<String>,
) -> Result<(), Error> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
    entries.sort();
    for path in entries {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_none_or(|n| n.starts_with('.')) {
            continue;
        }
        let meta = fs::symlink_metadata(&path)
            .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?;
        let Some(rel) = path.strip_prefix(root).ok().and_then(|r| r.to_str()) else {
            skipped.push(format!("{} (name is not UTF-8)", path.display()));
            continue;
        };
        if meta.is_dir() {
            walk(root, &path, files, contents, skipped)?;
        } else if meta.is_file() {
            let data = Zeroizing::new(
                fs::read(&path)
                    .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?,
            );
            files.push(ArchivedFile {
                path: rel.to_string(),
                mode: meta.permissions().mode() & 0o777,
                size: data.len() as u64,
                sha256: sha256_hex(&data),
            });
            contents.push(data);
        } else if meta.file_type().is_symlink() {
            skipped.push(format!("{} (a symbolic link)", path.display()));
        }
        // Sockets and other special files (the agent's socket) are not state.
    }
    Ok(())
}
