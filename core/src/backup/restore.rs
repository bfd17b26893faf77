//! Writing a checked payload back: a new state directory, built beside the target and
//! renamed into place, and the software CA keys that lived outside it. Every key is
//! checked against the CA certificate that names it before anything is written, and the
//! caller is shown the paths outside the state directory before they are written.
//!
//! Keys that lived outside the state directory go back to their recorded path when
//! nothing is there (so key URIs, and agent configurations naming them, stay valid).
//! An identical file already there is fine; a different one is never overwritten: the
//! restore refuses before writing anything. Keys that lived inside the state directory
//! come back with it, and when the directory is restored under another path the CA
//! manifest's URIs for them are rewritten to the new path.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use super::keycheck::check_key;
use super::payload::{ArchivedKey, Payload};
use crate::fsutil::{self, Replace};
use crate::{Error, KeyUri};

/// What happened to one key of the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyOutcome {
    /// Written to its recorded path (it was missing).
    Written(PathBuf),
    /// Its recorded path already held the same bytes; left as it was.
    AlreadyPresent(PathBuf),
    /// Restored inside the state directory, under this URI.
    InStateDir(String),
    /// Not in the archive (an HSM, KMS or Vault key): it must still exist there.
    NotIncluded,
}

/// The result of a restore.
#[derive(Clone, Debug)]
pub struct RestoreReport {
    /// How many state files were written.
    pub files: usize,
    /// Each key: its role, recorded URI, and what happened to it.
    pub keys: Vec<(String, String, KeyOutcome)>,
}

/// Refuses a target that exists and is not an empty directory; restore never merges.
pub fn check_restore_target(target: &Path) -> Result<(), Error> {
    let meta = match fs::symlink_metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("cannot stat {}", target.display()), e)),
    };
    let empty = meta.is_dir()
        && fs::read_dir(target)
            .map_err(|e| Error::io(format!("cannot read {}", target.display()), e))?
            .next()
            .is_none();
    if empty {
        Ok(())
    } else {
        Err(Error::State(format!(
            "{} already exists and is not empty; restore only into a new or empty directory",
            target.display()
        )))
    }
}

/// A restore checked and ready to write (see [`plan_restore`]).
#[derive(Debug)]
pub struct RestorePlan<'a> {
    payload: &'a Payload,
    target: PathBuf,
    keys: Vec<(String, String, KeyOutcome)>,
    /// Key files to write outside the state directory: role, path, key entry.
    outside: Vec<(String, PathBuf, usize)>,
    /// CA manifest key URIs to rewrite (old, new).
    relocated: Vec<(String, String)>,
}

/// Checks everything a restore of `payload` into `target` (absent or an empty
/// directory) depends on, writing nothing: every key the archive holds is PKCS#8 with
/// the public key of the archived CA certificate that names it, every key path outside
/// the state directory is a plain absolute path outside `target`, free or holding the
/// same bytes. [`RestorePlan::outside_state`] lists what would be written outside.
pub fn plan_restore<'a>(payload: &'a Payload, target: &Path) -> Result<RestorePlan<'a>, Error> {
    check_restore_target(target)?;
    let target = std::path::absolute(target)
        .map_err(|e| Error::io(format!("bad directory {}", target.display()), e))?;
    let m = payload.manifest();
    let mut plan = RestorePlan {
        payload,
        target,
        keys: Vec::new(),
        outside: Vec::new(),
        relocated: Vec::new(),
    };
    for (i, k) in m.keys.iter().enumerate() {
        let outcome = if let Some(rel) = &k.state_file {
            let file = m.files.iter().position(|f| &f.path == rel);
            check_key(
                payload,
                k,
                file.map_or(&[][..], |f| payload.file_contents(f)),
            )?;
            let new = KeyUri::file(plan.target.join(rel))?.to_string();
            if new != k.uri {
                plan.relocated.push((k.uri.clone(), new.clone()));
            }
            KeyOutcome::InStateDir(new)
        } else if let Some(bytes) = payload.key_contents(i) {
            check_key(payload, k, bytes)?;
            let path = outside_path(k, &plan.target)?;
            match fs::read(&path) {
                Ok(existing) if existing == bytes => KeyOutcome::AlreadyPresent(path),
                Ok(_) => {
                    return Err(Error::State(format!(
                        "{} already exists and is not the backed-up {} key; keyward never \
                         overwrites a key: move it away and run restore again",
                        path.display(),
                        k.role
                    )));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    plan.outside.push((k.role.clone(), path.clone(), i));
                    KeyOutcome::Written(path)
                }
                Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
            }
        } else {
            KeyOutcome::NotIncluded
        };
        plan.keys.push((k.role.clone(), k.uri.clone(), outcome));
    }
    Ok(plan)
}

/// The path a key entry with its own contents is restored to: its `file:` URI's path,
/// which must be absolute, plain (no `.` or `..`) and outside the restored directory.
fn outside_path(k: &ArchivedKey, target: &Path) -> Result<PathBuf, Error> {
    let path = match KeyUri::parse(&k.uri)? {
        KeyUri::File(f) => f.path,
        _ => return Err(Error::InvalidInput(format!("key {} has contents", k.uri))),
    };
    let plain = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !plain || path.starts_with(target) {
        return Err(Error::InvalidInput(format!(
            "the archive's {} key {} has a path that is not plain and absolute outside {}",
            k.role,
            k.uri,
            target.display()
        )));
    }
    Ok(path)
}

impl RestorePlan<'_> {
    /// The key files this restore writes outside the state directory (role, path):
    /// show them to the operator before [`RestorePlan::apply`].
    pub fn outside_state(&self) -> Vec<(&str, &Path)> {
        self.outside
            .iter()
            .map(|(role, path, _)| (role.as_str(), path.as_path()))
            .collect()
    }

    /// Writes the state directory beside the target and renames it into place, and
    /// the keys outside it; on a failure, everything written is removed again.
    pub fn apply(self) -> Result<RestoreReport, Error> {
        let (payload, target) = (self.payload, &self.target);
        let m = payload.manifest();
        let parent = target.parent().ok_or_else(|| {
            Error::InvalidInput(format!("cannot restore into {}", target.display()))
        })?;
        fsutil::create_private_dir(parent)?;
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let tmp = parent.join(format!(
            ".{name}.restore-{}-{}",
            std::process::id(),
            time::OffsetDateTime::now_utc().unix_timestamp_nanos()
        ));
        fs::DirBuilder::new()
            .mode(fsutil::PRIVATE_DIR_MODE)
            .create(&tmp)
            .map_err(|e| Error::io(format!("cannot create {}", tmp.display()), e))?;
        let mut written_keys = Vec::new();
        let result = (|| {
            for (i, f) in m.files.iter().enumerate() {
                let path = tmp.join(&f.path);
                fsutil::create_private_dir(path.parent().unwrap_or(&tmp))?;
                let mut data = payload.file_contents(i);
                let rewritten;
                if f.path == "ca/ca.json" && !self.relocated.is_empty() {
                    rewritten = relocate_ca_keys(data, &self.relocated)?;
                    data = &rewritten;
                }
                let mode = if m
                    .keys
                    .iter()
                    .any(|k| k.state_file.as_ref() == Some(&f.path))
                {
                    fsutil::SECRET_FILE_MODE
                } else {
                    f.mode & 0o666
                };
                fsutil::write_atomic(&path, data, mode, Replace::Refuse)?;
            }
            for (_, path, i) in &self.outside {
                let bytes = payload.key_contents(*i).unwrap_or_default();
                fsutil::create_private_dir(path.parent().unwrap_or(Path::new("/")))?;
                fsutil::write_atomic(path, bytes, fsutil::SECRET_FILE_MODE, Replace::Refuse)?;
                written_keys.push(path.clone());
            }
            fs::rename(&tmp, target).map_err(|e| {
                Error::io(
                    format!(
                        "cannot move the restored state into {} (did something create it meanwhile?)",
                        target.display()
                    ),
                    e,
                )
            })?;
            fsutil::sync_dir(parent)
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            for k in &written_keys {
                let _ = fs::remove_file(k);
            }
            return Err(e);
        }
        Ok(RestoreReport {
            files: m.files.len(),
            keys: self.keys,
        })
    }
}

/// The CA manifest (`ca/ca.json`) with each key URI in `moves` (old, new) replaced.
fn relocate_ca_keys(data: &[u8], moves: &[(String, String)]) -> Result<Vec<u8>, Error> {
    let corrupt = |e: serde_json::Error| Error::State(format!("the archived ca/ca.json: {e}"));
    let mut json: serde_json::Value = serde_json::from_slice(data).map_err(corrupt)?;
    for entry in ["root", "intermediate"] {
        if let Some(key) = json.get_mut(entry).and_then(|e| e.get_mut("key"))
            && let Some((_, new)) = moves.iter().find(|(old, _)| key.as_str() == Some(old))
        {
            *key = serde_json::Value::String(new.clone());
        }
    }
    serde_json::to_vec_pretty(&json).map_err(corrupt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uri: &str) -> ArchivedKey {
        ArchivedKey {
            role: "root".into(),
            uri: uri.into(),
            included: true,
            state_file: None,
            size: None,
            sha256: None,
        }
    }

    #[test]
    fn a_key_goes_only_to_a_plain_absolute_path_outside_the_target() {
        let target = Path::new("/srv/state");
        assert_eq!(
            outside_path(&key("file:/etc/keyward/ca.pem"), target).unwrap(),
            Path::new("/etc/keyward/ca.pem")
        );
        for bad in [
            "file:/srv/state/ca/ca.json",
            "file:/srv/keys/../state/x",
            "file:/etc/keyward/../../root/.ssh/authorized_keys",
        ] {
            let e = outside_path(&key(bad), target).unwrap_err().to_string();
            assert!(e.contains("not plain and absolute"), "{bad}: {e}");
        }
        assert!(outside_path(&key("pkcs11:token=t;object=o"), target).is_err());
    }
}
