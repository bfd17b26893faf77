//! STATE/agent/jwt-keys.json: which generations of the JWT signing key exist, so a
//! restarted agent keeps signing with the current key and keeps publishing the old ones
//! until their tokens expire.
//!
//! Only times and name suffixes are written: key URIs are recomputed from `[jwt] key`
//! (so no PIN or token label is written); a fingerprint of that URI tells whether the
//! record belongs to the configured key.

use keyward_core::Error;
use keyward_core::store::{AgentRecord, StateDir, sha256_hex};
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

/// The fingerprint of a base key URI as the record stores it.
pub fn fingerprint(uri: &keyward_core::KeyUri) -> String {
    sha256_hex(uri.to_string().as_bytes())
}

/// The record, or `None` when there is none yet.
pub fn read(state: &StateDir) -> Result<Option<Record>, Error> {
    state.read_agent_record(AgentRecord::JwtKeys)
}

/// Replaces the record atomically, under the state directory's lock.
pub fn write(state: &StateDir, record: &Record) -> Result<(), Error> {
    state.write_agent_record(AgentRecord::JwtKeys, record)
}
