//! `[jwt]`: the JWT-SVID signing key as a kind of generation. A key signs for `key_ttl`;
//! the next is made and published `key_overlap` before it takes over; a retired key
//! stays published until every token it signed has expired (`ttl` after it stopped
//! signing, plus a second: `exp` is in whole seconds).
//!
//! The configured URI names the first key; each later one appends `-<unix time it
//! starts signing>` to its name (`jwt::naming`). The journal keeps only that suffix,
//! and a fingerprint of the configured URI tells whether its generations belong to
//! it. Without `[jwt] key` the keys live in memory only and nothing is recorded.
//!
//! Agents before the journal kept these generations in STATE/agent/jwt-keys.json; it
//! is read once and migrated.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keyward_core::audit::Event;
use keyward_core::store::{AgentRecord, StateDir, sha256_hex};
use keyward_core::{Error, KeyUri};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Entry, Kind, Next, Section, Slot, new_key};
use crate::backends::Backends;
use crate::daemon::audit::Audit;
use crate::daemon::config::JwtSettings;
use crate::daemon::jwt::keys::{self, Generation, KeySet};
use crate::daemon::jwt::naming;

/// A retired key stays published this much longer than its last token.
const EXPIRY_SLACK: Duration = Duration::from_secs(1);

/// The JWT signing keys.
pub struct JwtKey {
    settings: JwtSettings,
    backends: Arc<Backends>,
    audit: Audit,
}

impl JwtKey {
    /// The keys `settings` describe, in `backends`.
    pub fn new(settings: JwtSettings, backends: Arc<Backends>, audit: Audit) -> Self {
        JwtKey {
            settings,
            backends,
            audit,
        }
    }

    fn uri(&self, base: &KeyUri, suffix: Option<u64>) -> KeyUri {
        suffix.map_or_else(|| base.clone(), |s| naming::generation_uri(base, s))
    }
}

/// What the journal keeps of one key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyDetail {
    /// The name suffix (unix seconds); `None` for the configured key itself.
    pub suffix: Option<u64>,
}

/// STATE/agent/jwt-keys.json as agents before the journal wrote it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyRecord {
    #[serde(rename = "version")]
    _version: u32,
    key_fingerprint: String,
    generations: Vec<LegacyGeneration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyGeneration {
    suffix: Option<u64>,
    activates_ms: u64,
    retired_ms: Option<u64>,
}

fn from_ms(ms: u64) -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + Duration::from_millis(ms)
}

#[async_trait]
impl Kind for JwtKey {
    type Detail = KeyDetail;
    type Open = Arc<Generation>;
    type Published = KeySet;

    const NAME: &'static str = "jwt_key";
    const WHAT: &'static str = "JWT signing key";
    const GATES_READINESS: bool = false;
    const LEGACY: Option<AgentRecord> = Some(AgentRecord::JwtKeys);

    fn key_fingerprint(&self) -> Option<String> {
        self.settings
            .key
            .as_ref()
            .map(|k| sha256_hex(k.to_string().as_bytes()))
    }

    fn persistent(&self) -> bool {
        self.settings.key.is_some()
    }

    /// The old record's keys numbered in order; a record with none left still counts
    /// as one generation made, so the next key gets a suffix as before.
    fn migrate(&self, state: &StateDir) -> Result<Option<Section<KeyDetail>>, Error> {
        let Some(old) = state.read_agent_record::<LegacyRecord>(AgentRecord::JwtKeys)? else {
            return Ok(None);
        };
        let mut section = Section::empty(Some(old.key_fingerprint));
        for (n, g) in (1..).zip(old.generations) {
            section.generations.push(Entry {
                n,
                activates: from_ms(g.activates_ms),
                retired: g.retired_ms.map(from_ms),
                detail: KeyDetail { suffix: g.suffix },
            });
            section.last = n;
        }
        section.last = section.last.max(1);
        tracing::info!(
            generations = section.generations.len(),
            "migrated the JWT keys from STATE/agent/jwt-keys.json into STATE/agent/generations.json"
        );
        Ok(Some(section))
    }

    fn next(&self, active: &Entry<KeyDetail>) -> Next {
        Next {
            prepare_at: active.activates + self.settings.key_ttl - self.settings.key_overlap,
            activates: active.activates + self.settings.key_ttl,
        }
    }

    fn leaves_at(&self, entry: &Entry<KeyDetail>) -> Option<OffsetDateTime> {
        entry.retired.map(|r| r + self.settings.ttl + EXPIRY_SLACK)
    }

    async fn prepare(
        &mut self,
        n: u64,
        activates: OffsetDateTime,
        slots: &[Slot<Self>],
    ) -> Result<(KeyDetail, Arc<Generation>), Error> {
        let starts = u64::try_from(activates.unix_timestamp()).unwrap_or(0);
        let last_suffix = slots.iter().filter_map(|s| s.entry.detail.suffix).max();
        // The first generation ever is the configured key itself.
        let suffix = (n > 1).then(|| starts.max(last_suffix.map_or(0, |s| s + 1)));
        let signer = match &self.settings.key {
            None => keys::in_memory(self.settings.algorithm, activates.unix_timestamp())?,
            Some(base) => {
                let uri = self.uri(base, suffix);
                let signer =
                    new_key(&self.backends, &uri, self.settings.algorithm, &self.audit).await?;
                if signer.algorithm() != self.settings.algorithm {
                    tracing::warn!(key = %uri, algorithm = %signer.algorithm(), configured = %self.settings.algorithm, "the existing JWT key has another algorithm than [jwt] algorithm; it is used as it is");
                }
                signer
            }
        };
        Ok((KeyDetail { suffix }, keys::describe(signer)?))
    }

    async fn open(&self, entry: &Entry<KeyDetail>) -> Result<Arc<Generation>, Error> {
        let base = self
            .settings
            .key
            .as_ref()
            .ok_or_else(|| Error::State("in-memory JWT keys are never recorded".into()))?;
        keys::describe(
            self.backends
                .open(&self.uri(base, entry.detail.suffix))
                .await?,
        )
    }

    fn publish(&self, active: usize, slots: &[Slot<Self>]) -> KeySet {
        let published = slots.iter().map(|s| s.open.clone()).collect();
        KeySet::new(active, published, self.settings.ttl)
    }

    fn event(&self, name: &str, slot: &Slot<Self>) -> Event {
        Event::new(name)
            .with("kid", &slot.open.kid)
            .key("key", slot.open.signer.uri())
            .with("activates", slot.entry.activates.unix_timestamp())
    }
}
