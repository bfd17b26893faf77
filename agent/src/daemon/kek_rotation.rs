//! `[[kek]]`: the agent rotates each listed key-encryption key when `rotate_every` has
//! passed since its last rotation, so new data is encrypted under a fresh version
//! while blobs of earlier versions still decrypt.
//!
//! The time of each key's last rotation is kept in `STATE/agent/kek-rotations.json`
//! (0600 in a 0700 directory, rewritten atomically under the state directory's lock),
//! not read from the backend: Transit reports when each version was made, but a
//! software key's version files and KMS's rotation list do not say it the same way
//! everywhere. A key seen for the first time is recorded as rotated now (the agent does
//! not know when it was made), so the first rotation comes one period later. A restart
//! never rotates early; a rotation that fell due while the agent was down happens at
//! start.
//!
//! Rotation goes through the [`Keyring`] the KeyService uses, whose wrappers always
//! encrypt under the newest version (no backend caches it), so the very next
//! `GenerateDataKey` uses the new version. A failed rotation is logged, audited
//! (`kek_rotation_failed`), counted (`keyward_key_operations{op="kek-rotate"}`) and
//! retried with backoff; a success is audited (`kek_rotated`: key URI and version,
//! never key material) and counted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keyward_core::audit::Event;
use keyward_core::backoff::Backoff;
use keyward_core::store::StateDir;
use keyward_core::{Error, KeyUri, fsutil};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::task::JoinHandle;

use super::audit::Audit;
use super::config::kek::KekSchedule;
use super::keys::keyring::Keyring;
use super::metrics::Metrics;

/// The record's path under the state directory.
const RECORD: &str = "agent/kek-rotations.json";
/// The record's format version.
const FORMAT: u32 = 1;
/// The op label rotations are counted under in `keyward_key_operations`.
const METRIC_OP: &str = "kek-rotate";
/// The pause after a failed rotation: 1 s doubling up to 5 minutes, ±25 %.
const BACKOFF: Backoff =
    Backoff::doubling(Duration::from_secs(1), Duration::from_secs(300)).jittered(0.75, 1.25);
/// Below this period the agent warns: every rotation adds a version the backend keeps
/// for as long as old data may need it.
const SHORT_PERIOD: Duration = Duration::from_secs(3600);
/// The longest single sleep: a far-off rotation is waited for in steps, so the wait
/// follows the wall clock (the record holds wall-clock times).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// The record file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    version: u32,
    /// Each key's last rotation, by key URI (its display form, which has no PIN).
    #[serde(default)]
    keys: BTreeMap<String, LastRotation>,
}

/// When a key was last rotated, and to which version (absent when the agent only
/// started counting from then, see the module comment).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LastRotation {
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
}

/// The record, shared by every key's task.
#[derive(Debug)]
struct Records {
    state: StateDir,
    doc: Mutex<Record>,
}

impl Records {
    /// Reads the record (an empty one when there is none yet).
    fn open(state: &StateDir) -> Result<Records, Error> {
        let path = state.path().join(RECORD);
        let doc: Record = fsutil::read_json(&path)?.unwrap_or(Record {
            version: FORMAT,
            keys: BTreeMap::new(),
        });
        if doc.version != FORMAT {
            return Err(Error::State(format!(
                "{} has version {}, this keyward reads version {FORMAT}",
                path.display(),
                doc.version
            )));
        }
        Ok(Records {
            state: state.clone(),
            doc: Mutex::new(doc),
        })
    }

    fn path(&self) -> PathBuf {
        self.state.path().join(RECORD)
    }

    /// The last rotation of `key`, if recorded.
    fn last(&self, key: &KeyUri) -> Option<LastRotation> {
        let doc = self.doc.lock().unwrap_or_else(PoisonError::into_inner);
        doc.keys.get(&key.to_string()).copied()
    }

    /// Records `last` for `key` and rewrites the file; memory keeps it even when the
    /// file cannot be written, so this run never rotates twice for one period.
    fn store(&self, key: &KeyUri, last: LastRotation) -> Result<(), Error> {
        let mut doc = self.doc.lock().unwrap_or_else(PoisonError::into_inner);
        doc.keys.insert(key.to_string(), last);
        let path = self.path();
        let _lock = self.state.lock()?;
        fsutil::create_private_dir(path.parent().unwrap_or(self.state.path()))?;
        fsutil::write_json(&path, &*doc)
    }
}

/// What every key's task shares.
struct Rotator {
    records: Records,
    keyring: Keyring,
    audit: Audit,
    metrics: Metrics,
}

/// Starts one task per `[[kek]]`, rotating through `keyring`; the record is read now,
/// so a corrupt one stops the agent from starting.
pub fn start(
    keks: &[KekSchedule],
    keyring: Keyring,
    state: &StateDir,
    audit: Audit,
    metrics: Metrics,
) -> Result<Vec<JoinHandle<()>>, Error> {
    if keks.is_empty() {
        return Ok(Vec::new());
    }
    let rotator = Arc::new(Rotator {
        records: Records::open(state)?,
        keyring,
        audit,
        metrics,
    });
    for kek in keks {
        warn_if_unwise(kek);
    }
    Ok(keks
        .iter()
        .map(|kek| tokio::spawn(rotator.clone().run(kek.clone())))
        .collect())
}

/// Warns about a schedule that works but is likely a mistake.
fn warn_if_unwise(kek: &KekSchedule) {
    if kek.rotate_every < SHORT_PERIOD {
        tracing::warn!(key = %kek.key, every = ?kek.rotate_every, "key-encryption key rotated more often than hourly: every rotation adds a version the backend keeps");
    }
    if matches!(kek.key, KeyUri::AwsKms(_)) {
        tracing::warn!(key = %kek.key, "AWS KMS caps the on-demand rotations of a key over its life (10, lately 25); past the cap every scheduled rotation fails (KMS automatic rotation has no such cap)");
    }
}

impl Rotator {
    /// Rotates `kek` every period, for the agent's life.
    async fn run(self: Arc<Self>, kek: KekSchedule) {
        let mut last = match self.records.last(&kek.key) {
            Some(last) => last,
            None => {
                let first = LastRotation {
                    at: OffsetDateTime::now_utc(),
                    version: None,
                };
                self.save(&kek.key, first);
                tracing::info!(key = %kek.key, every = ?kek.rotate_every, "key-encryption key scheduled for rotation; the first comes one period from now");
                first
            }
        };
        loop {
            let due = last.at + kek.rotate_every;
            let wait = due - OffsetDateTime::now_utc();
            if wait.is_positive() {
                let wait = Duration::try_from(wait).unwrap_or(MAX_SLEEP);
                tokio::time::sleep(wait.min(MAX_SLEEP)).await;
                continue;
            }
            let version = self.rotate_until_done(&kek.key).await;
            last = LastRotation {
                at: OffsetDateTime::now_utc(),
                version: Some(version),
            };
            self.save(&kek.key, last);
        }
    }

    /// Rotates `key`, retrying with backoff until it works; returns the new version.
    async fn rotate_until_done(&self, key: &KeyUri) -> u32 {
        let mut failures = 0u32;
        loop {
            let result = async { self.keyring.wrapper(key).await?.rotate().await }.await;
            self.metrics.key_op(METRIC_OP, result.is_ok());
            match result {
                Ok(version) => {
                    tracing::info!(key = %key, version, "rotated key-encryption key on schedule");
                    self.audit.record(
                        Event::new("kek_rotated")
                            .key("key", key)
                            .with("version", version),
                    );
                    return version;
                }
                Err(e) => {
                    failures += 1;
                    let why = keyward_core::chain_line(&e);
                    let delay = BACKOFF.delay(failures);
                    tracing::warn!(key = %key, error = %why, attempt = failures, retry_in = ?delay, "cannot rotate key-encryption key");
                    self.audit.record(
                        Event::new("kek_rotation_failed")
                            .key("key", key)
                            .with("attempt", failures)
                            .with("error", &why),
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Records `last` for `key`; a failure is logged as an error (this run keeps the
    /// time in memory; a restart would not know it).
    fn save(&self, key: &KeyUri, last: LastRotation) {
        if let Err(e) = self.records.store(key, last) {
            let why = keyward_core::chain_line(&e);
            tracing::error!(key = %key, file = %self.records.path().display(), error = %why, "cannot record the key-encryption key's rotation");
        }
    }
}
