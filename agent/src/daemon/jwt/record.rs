//! STATE/agent/jwt-keys.json: which generations of the JWT signing key exist, so a
//! restarted agent keeps signing with the current key and keeps publishing the old ones
//! until their tokens expire.
//!
//! Only times and name suffixes are written: key URIs are recomputed from `[jwt] key`
//! (so no PIN or token label is written); a fingerprint of that URI tells whether the
//! record belongs to the configured key.

use std::path::{Path, PathBuf};

use keyward_core::Error;
use keyward_core::fsutil::{self, Replace};
use keyward_core::store::{StateDir, sha256_hex};
use serde::{Deserialize, Serialize};

/// The recorded generations.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Format version (1).
    pub version: u32,
    /// SHA-256 of the canonical `[jwt] key` URI the generations were made from.
    pub key_fingerprint: String,
    /// Every generation still published, oldest first.
    pub generations: Vec<GenRecord>,
}

/// One generation of the signing key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenRecord {
    /// The name suffix (unix seconds); `None` for the configured key itself.
    pub suffix: Option<u64>,
    /// When it starts (or started) signing, unix milliseconds.
    pub activates_ms: u64,
    /// When the next key took over, unix milliseconds.
    pub retired_ms: Option<u64>,
}

/// The record's path in the state directory.
pub fn path(state: &StateDir) -> PathBuf {
    state.path().join("agent/jwt-keys.json")
}

/// The fingerprint of a base key URI as the record stores it.
pub fn fingerprint(uri: &keyward_core::KeyUri) -> String {
    sha256_hex(uri.to_string().as_bytes())
}

/// The record, or `None` when there is none yet.
pub fn read(path: &Path) -> Result<Option<Record>, Error> {
    match std::fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| Error::State(format!("{} is corrupt: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}

/// Replaces the record atomically, under the state directory's lock.
pub fn write(state: &StateDir, record: &Record) -> Result<(), Error> {
    let json = serde_json::to_vec_pretty(record)
        .map_err(|e| Error::State(format!("cannot encode the JWT key record: {e}")))?;
    let path = path(state);
    let _lock = state.lock()?;
    fsutil::create_private_dir(path.parent().unwrap_or(state.path()))?;
    fsutil::write_atomic(&path, &json, fsutil::PUBLIC_FILE_MODE, Replace::Allow)
}
