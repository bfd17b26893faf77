//! The JWT signing keys: one signs at a time; the next is generated and published
//! `key_overlap` before it takes over (after `key_ttl`), and a retired key stays
//! published until every token it signed has expired (`ttl` after it stopped signing).
//! Every change publishes a new [`KeySet`] on a `watch` channel.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyward_core::backoff::Backoff;
use keyward_core::store::StateDir;
use keyward_core::{Error, KeySigner, KeyUri};
use keyward_software::SoftwareKey;
use prost::bytes::Bytes;
use serde_json::Value;
use tokio::sync::watch;

use super::record::{self, GenRecord, Record};
use super::{jose_name, jwk, naming};
use crate::backends::Backends;
use crate::daemon::config::JwtSettings;

/// The delay before retrying a failed key generation: 1 s doubling up to 32 s.
const BACKOFF: Backoff = Backoff::doubling(Duration::from_secs(1), Duration::from_secs(32));
/// A retired key stays published this much longer than its last token (`exp` is in
/// whole seconds).
const EXPIRY_SLACK_MS: u64 = 1000;

/// One signing key and its public JWK.
#[derive(Debug)]
pub struct Generation {
    /// The key; it signs through its backend.
    pub signer: Arc<dyn KeySigner>,
    /// The JOSE `alg` it signs.
    pub jose_alg: &'static str,
    /// The JWK `kid` (RFC 7638 thumbprint).
    pub kid: String,
    /// The public JWK as published.
    pub jwk: Value,
}

/// What the Workload API answers from: the signing key and every published key.
#[derive(Debug)]
pub struct KeySet {
    /// The key new JWT-SVIDs are signed with.
    pub active: Arc<Generation>,
    /// Every key a token may be validated with (the active one, the next one, and
    /// retired ones whose tokens have not all expired).
    pub published: Vec<Arc<Generation>>,
    /// The JWKS document of `published`.
    pub jwks: Bytes,
    /// The lifetime of each JWT-SVID.
    pub ttl: Duration,
}

impl KeySet {
    /// The published key with `kid`.
    pub fn find(&self, kid: &str) -> Option<&Arc<Generation>> {
        self.published.iter().find(|g| g.kid == kid)
    }
}

struct Slot {
    rec: GenRecord,
    generation: Arc<Generation>,
}

/// The signing keys and their schedule; run by one task.
pub struct JwtKeys {
    settings: JwtSettings,
    state: StateDir,
    backends: Arc<Backends>,
    slots: Vec<Slot>,
    failures: u32,
}

/// The current time in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl JwtKeys {
    /// Loads the recorded keys (or makes the first), publishes them and starts the
    /// rotation task; the task ends when every receiver is gone.
    pub async fn start(
        settings: &JwtSettings,
        state: StateDir,
        backends: Arc<Backends>,
    ) -> Result<watch::Receiver<Arc<KeySet>>, Error> {
        let mut slots = Vec::new();
        let mut recorded = false;
        if let Some(base) = &settings.key
            && let Some(rec) = record::read(&state)?
        {
            if rec.key_fingerprint == record::fingerprint(base) {
                recorded = true;
            } else {
                tracing::warn!(
                    "the recorded JWT keys were made from another [jwt] key; starting from the configured one"
                );
            }
            let now = now_ms();
            for g in rec.generations.into_iter().filter(|_| recorded) {
                if g.retired_ms
                    .is_some_and(|r| r + ms(settings.ttl) + EXPIRY_SLACK_MS <= now)
                {
                    continue;
                }
                let uri = uri_of(base, g.suffix);
                match open_generation(&backends, &uri).await {
                    Ok(generation) => slots.push(Slot { rec: g, generation }),
                    Err(e) => {
                        tracing::warn!(key = %uri, error = %keyward_core::chain_line(&e), "a recorded JWT signing key does not open; it is no longer published")
                    }
                }
            }
        }
        let mut keys = JwtKeys {
            settings: settings.clone(),
            state,
            backends,
            slots,
            failures: 0,
        };
        keys.settle(now_ms(), recorded).await?;
        keys.write_record()?;
        let (tx, rx) = watch::channel(keys.key_set());
        tokio::spawn(keys.run(tx));
        Ok(rx)
    }

    /// Runs the schedule until every receiver is gone.
    async fn run(mut self, tx: watch::Sender<Arc<KeySet>>) {
        loop {
            let wait = Duration::from_millis(self.next_event().saturating_sub(now_ms()));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = tx.closed() => return,
            }
            let changed = match self.settle(now_ms(), true).await {
                Ok(changed) => {
                    self.failures = 0;
                    changed
                }
                Err(e) => {
                    self.failures += 1;
                    tracing::error!(error = %keyward_core::chain_line(&e), "cannot prepare the next JWT signing key; the current one keeps signing and this is retried");
                    // Expired keys may have been dropped before the failure.
                    true
                }
            };
            if changed {
                if let Err(e) = self.write_record() {
                    tracing::error!(error = %keyward_core::chain_line(&e), "cannot record the JWT signing keys; a restart may not find the current one");
                }
                tx.send_replace(self.key_set());
            }
        }
    }

    /// When something next changes (unix ms).
    fn next_event(&self) -> u64 {
        let now = now_ms();
        if self.failures > 0 {
            return now + ms(BACKOFF.delay(self.failures));
        }
        let ttl = ms(self.settings.ttl);
        let mut next = now + 3_600_000;
        for s in &self.slots {
            match s.rec.retired_ms {
                Some(r) => next = next.min(r + ttl + EXPIRY_SLACK_MS),
                None if s.rec.activates_ms > now => next = next.min(s.rec.activates_ms),
                None => {
                    let prepare = s.rec.activates_ms + ms(self.settings.key_ttl)
                        - ms(self.settings.key_overlap);
                    if !self
                        .slots
                        .iter()
                        .any(|o| o.rec.activates_ms > s.rec.activates_ms)
                    {
                        next = next.min(prepare);
                    }
                }
            }
        }
        next
    }

    /// Brings the keys up to date at `now`: drops expired keys, hands over to a
    /// prepared key that is due, and prepares the next key when it is time; says
    /// whether anything changed. `recorded` says whether generations were made before
    /// from this key (the configured URI names only the very first key).
    async fn settle(&mut self, now: u64, recorded: bool) -> Result<bool, Error> {
        let ttl = ms(self.settings.ttl);
        let before = self.slots.len();
        self.slots.retain(|s| {
            s.rec
                .retired_ms
                .is_none_or(|r| r + ttl + EXPIRY_SLACK_MS > now)
        });
        let mut changed = self.slots.len() != before;
        // The newest key whose time has come signs; every earlier one retires now.
        let due: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                self.slots[i].rec.retired_ms.is_none() && self.slots[i].rec.activates_ms <= now
            })
            .collect();
        if let Some((&newest, older)) = due.split_last() {
            for &i in older {
                self.slots[i].rec.retired_ms = Some(now);
            }
            if !older.is_empty() {
                changed = true;
                tracing::info!(kid = %self.slots[newest].generation.kid, "a new JWT signing key took over");
            }
        } else if let Some(next) = self.slots.iter_mut().find(|s| s.rec.retired_ms.is_none()) {
            // No key signs yet (a restart after a long stop): the prepared one starts now.
            next.rec.activates_ms = now;
            changed = true;
        } else {
            self.add(now, now, recorded).await?;
            changed = true;
        }
        let active = &self.slots[self.active_index(now)].rec;
        let has_next = self.slots.iter().any(|s| s.rec.activates_ms > now);
        let key_ttl = ms(self.settings.key_ttl);
        if !has_next && active.activates_ms + key_ttl - ms(self.settings.key_overlap) <= now {
            let starts = (active.activates_ms + key_ttl).max(now);
            self.add(now, starts, true).await?;
            changed = true;
        }
        Ok(changed)
    }

    /// The slot that signs at `now`.
    fn active_index(&self, now: u64) -> usize {
        (0..self.slots.len())
            .rev()
            .find(|&i| {
                self.slots[i].rec.retired_ms.is_none() && self.slots[i].rec.activates_ms <= now
            })
            .unwrap_or(0)
    }

    /// Makes a new key that starts signing at `starts` (unix ms).
    async fn add(&mut self, now: u64, starts: u64, recorded: bool) -> Result<(), Error> {
        let last_suffix = self.slots.iter().filter_map(|s| s.rec.suffix).max();
        let suffix = if recorded || !self.slots.is_empty() {
            Some((starts / 1000).max(last_suffix.map_or(0, |s| s + 1)))
        } else {
            None
        };
        let generation = match &self.settings.key {
            None => describe(in_memory(self.settings.algorithm, starts)?)?,
            Some(base) => {
                let uri = uri_of(base, suffix);
                let backend = self.backends.for_uri(&uri).await?;
                let signer = match backend.generate(&uri, self.settings.algorithm).await {
                    Ok(s) => s,
                    Err(Error::AlreadyExists(_)) => backend.open(&uri).await?,
                    Err(e) => return Err(e),
                };
                if signer.algorithm() != self.settings.algorithm {
                    tracing::warn!(key = %uri, algorithm = %signer.algorithm(), configured = %self.settings.algorithm, "the existing JWT key has another algorithm than [jwt] algorithm; it is used as it is");
                }
                describe(signer)?
            }
        };
        tracing::info!(kid = %generation.kid, alg = generation.jose_alg, key = %generation.signer.uri(), starts_in_ms = starts.saturating_sub(now), "JWT signing key ready");
        self.slots.push(Slot {
            rec: GenRecord {
                suffix,
                activates_ms: starts,
                retired_ms: None,
            },
            generation,
        });
        Ok(())
    }

    fn write_record(&self) -> Result<(), Error> {
        let Some(base) = &self.settings.key else {
            return Ok(());
        };
        record::write(
            &self.state,
            &Record {
                version: 1,
                key_fingerprint: record::fingerprint(base),
                generations: self.slots.iter().map(|s| s.rec.clone()).collect(),
            },
        )
    }

    /// What the Workload API answers from now.
    fn key_set(&self) -> Arc<KeySet> {
        let published: Vec<Arc<Generation>> =
            self.slots.iter().map(|s| s.generation.clone()).collect();
        Arc::new(KeySet {
            active: self.slots[self.active_index(now_ms())].generation.clone(),
            jwks: Bytes::from(jwk::set(published.iter().map(|g| &g.jwk))),
            published,
            ttl: self.settings.ttl,
        })
    }
}

/// The URI of the generation with `suffix` (`None`: the configured key itself).
fn uri_of(base: &KeyUri, suffix: Option<u64>) -> KeyUri {
    suffix.map_or_else(|| base.clone(), |s| naming::generation_uri(base, s))
}

async fn open_generation(backends: &Backends, uri: &KeyUri) -> Result<Arc<Generation>, Error> {
    describe(backends.open(uri).await?)
}

/// A software key that exists only in this process.
fn in_memory(alg: keyward_core::Algorithm, starts: u64) -> Result<Arc<dyn KeySigner>, Error> {
    let label = KeyUri::file(format!("/in-memory/keyward-jwt-{}", starts / 1000))?;
    Ok(Arc::new(SoftwareKey::generate(alg, label)?.0))
}

fn describe(signer: Arc<dyn KeySigner>) -> Result<Arc<Generation>, Error> {
    let alg = signer.algorithm();
    let jose_alg = jose_name(alg).ok_or_else(|| {
        Error::Unsupported(format!(
            "{}: {alg} keys cannot sign JWT-SVIDs (use ES256, ES384, RS256 or EdDSA)",
            signer.uri()
        ))
    })?;
    let jwk = jwk::from_spki(alg, jose_alg, signer.public_key_spki_der())?;
    let kid = jwk["kid"].as_str().unwrap_or_default().to_string();
    Ok(Arc::new(Generation {
        signer,
        jose_alg,
        kid,
        jwk,
    }))
}
