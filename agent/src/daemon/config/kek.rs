//! `[[kek]]`: key-encryption keys the agent rotates on a schedule, so data is
//! encrypted under a fresh version every `rotate_every` while blobs of earlier versions
//! still decrypt. A listed key need not be granted to any workload.
//!
//! ```toml
//! [[kek]]
//! key = "transit:db-kek"
//! rotate_every = "30d"
//! ```

use std::time::Duration;

use keyward_core::KeyUri;
use serde::Deserialize;
use toml::Spanned;

/// One `[[kek]]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKek {
    pub(super) key: Spanned<String>,
    pub(super) rotate_every: Spanned<String>,
}

/// One validated `[[kek]]`: a key-encryption key and how often it gets a new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekSchedule {
    /// `key`: the key-encryption key (any backend with key-encryption keys).
    pub key: KeyUri,
    /// `rotate_every`: the time between two rotations.
    pub rotate_every: Duration,
}
