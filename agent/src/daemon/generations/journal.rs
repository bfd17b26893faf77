//! STATE/agent/generations.json: one journal for every kind of generation the agent
//! rotates, so a restarted agent continues with the same generations (the same
//! current one, the same prepared next one, the retired ones still published).
//!
//! ```json
//! { "version": 1,
//!   "kinds": { "local_intermediate": { "last": 3, "generations": [
//!       { "n": 3, "activates": "2026-12-05T10:00:00Z", "detail": { "cert": "-----BEGIN..." } } ] },
//!     "jwt_key": { "last": 7, "key_fingerprint": "ab12...", "generations": [ ... ] } } }
//! ```
//!
//! Only numbers, times, certificates and name suffixes are written: key URIs are
//! recomputed from the configured templates, so no PIN or token label is ever written.
//! Each kind owns its section; the whole file is rewritten atomically (through
//! [`StateDir`], under its lock) whenever any section changes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use keyward_core::Error;
use keyward_core::store::{AgentRecord, StateDir};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

/// The journal's format version.
const VERSION: u32 = 1;

/// The whole file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: u32,
    /// Each kind's section, by kind name.
    #[serde(default)]
    kinds: BTreeMap<String, Value>,
}

/// One kind's generations as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section<D> {
    /// The highest generation number ever made, kept when every generation is gone, so
    /// numbers (and the keys they name) are never reused.
    pub last: u64,
    /// For kinds that tie their generations to the configured key: SHA-256 of its URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// The live generations, oldest first.
    pub generations: Vec<Entry<D>>,
}

impl<D> Section<D> {
    /// A section with no generation yet.
    pub fn empty(key_fingerprint: Option<String>) -> Self {
        Section {
            last: 0,
            key_fingerprint,
            generations: Vec::new(),
        }
    }
}

/// One generation as recorded: its number, its times and what its kind keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry<D> {
    /// The generation number (1, 2, ...; `{n}` in key templates).
    pub n: u64,
    /// When it starts (or started) issuing or signing.
    #[serde(with = "time::serde::rfc3339")]
    pub activates: OffsetDateTime,
    /// When the next generation took over from it.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub retired: Option<OffsetDateTime>,
    /// What the kind records (a certificate, a name suffix).
    pub detail: D,
}

/// The journal, shared by every kind's engine; cheap to clone.
#[derive(Clone, Debug)]
pub struct Journal {
    state: StateDir,
    doc: Arc<Mutex<Document>>,
}

impl Journal {
    /// Reads STATE/agent/generations.json (an empty journal when there is none yet).
    pub fn open(state: &StateDir) -> Result<Journal, Error> {
        let doc: Document = state
            .read_agent_record(AgentRecord::Generations)?
            .unwrap_or(Document {
                version: VERSION,
                kinds: BTreeMap::new(),
            });
        if doc.version != VERSION {
            return Err(Error::State(format!(
                "{}/agent/generations.json has version {}, this keyward reads version {VERSION}",
                state.path().display(),
                doc.version
            )));
        }
        Ok(Journal {
            state: state.clone(),
            doc: Arc::new(Mutex::new(doc)),
        })
    }

    /// The state directory the journal lives in.
    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// The section of `kind`, or `None` when the journal has none.
    pub fn section<D: DeserializeOwned>(&self, kind: &str) -> Result<Option<Section<D>>, Error> {
        let doc = self.lock();
        doc.kinds
            .get(kind)
            .map(|v| {
                Section::deserialize(v).map_err(|e| {
                    Error::State(format!(
                        "{}/agent/generations.json: the {kind} section is malformed: {e}",
                        self.state.path().display()
                    ))
                })
            })
            .transpose()
    }

    /// Replaces the section of `kind` and rewrites the file.
    pub fn store<D: Serialize>(&self, kind: &str, section: &Section<D>) -> Result<(), Error> {
        let value = serde_json::to_value(section)
            .map_err(|e| Error::backend_with("cannot encode the generations journal", e))?;
        let mut doc = self.lock();
        let previous = doc.kinds.insert(kind.to_string(), value);
        let written = self
            .state
            .write_agent_record(AgentRecord::Generations, &*doc);
        if written.is_err() {
            // Keep memory as the file is, so a later write of another kind does not
            // record this one half-done.
            match previous {
                Some(v) => doc.kinds.insert(kind.to_string(), v),
                None => doc.kinds.remove(kind),
            };
        }
        written
    }

    fn lock(&self) -> MutexGuard<'_, Document> {
        self.doc.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_round_trip_and_kinds_keep_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        std::fs::create_dir_all(dir.path()).unwrap();
        let j = Journal::open(&state).unwrap();
        assert!(j.section::<Value>("a").unwrap().is_none());
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mut s = Section::empty(Some("f".into()));
        s.last = 2;
        s.generations.push(Entry {
            n: 2,
            activates: at,
            retired: None,
            detail: 7u32,
        });
        j.store("a", &s).unwrap();
        j.store("b", &Section::<u32>::empty(None)).unwrap();
        let again = Journal::open(&state).unwrap();
        let a: Section<u32> = again.section("a").unwrap().unwrap();
        assert_eq!((a.last, a.generations[0].detail), (2, 7));
        assert_eq!(a.generations[0].activates, at);
        assert!(again.section::<u32>("b").unwrap().is_some());
        let text = std::fs::read_to_string(dir.path().join("agent/generations.json")).unwrap();
        assert!(
            text.contains("\"activates\": \"2027-01-15T08:00:00Z\""),
            "{text}"
        );
    }
}
