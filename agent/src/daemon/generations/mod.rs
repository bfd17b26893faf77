//! One engine for everything the agent rotates by generations: its local intermediate
//! CA, its intermediate signed by an upstream authority, and its JWT signing key.
//!
//! Modelled on SPIRE's server CA manager (`pkg/server/ca/manager`): each generation is
//! prepared ahead of time (a key made or opened, a certificate obtained), published
//! beside the current one (the overlap), activated when its time comes (it issues or
//! signs from then on), retired when the next takes over, and removed once nothing it
//! issued can still be in use. One journal ([`journal`]) records every kind, so a
//! restart continues with the same generations. A failed preparation is retried with
//! backoff while the current generation keeps serving; `/readyz` and the metrics say
//! so.
//!
//! A kind ([`Kind`]) says how to prepare generation `n`, how to open a recorded one,
//! when the next is due, how long a generation stays published, and what to publish;
//! the engine ([`start`]) does the rest and publishes on a `watch` channel.

mod engine;
mod journal;
mod jwt_key;
mod local_intermediate;
#[cfg(feature = "vault")]
mod upstream_intermediate;
mod x509;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keyward_core::audit::Event;
use keyward_core::backoff::Backoff;
use keyward_core::store::{AgentRecord, StateDir};
use keyward_core::{Algorithm, Error, KeySigner, KeyUri};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use tokio::sync::watch;

use engine::Engine;
pub use journal::{Entry, Journal, Section};
pub use jwt_key::JwtKey;
pub use local_intermediate::LocalIntermediate;
#[cfg(feature = "vault")]
pub use upstream_intermediate::{UpstreamIntermediate, sign_at_upstream};

use super::audit::Audit;
use super::metrics::Metrics;
use crate::backends::Backends;

/// The delay before retrying a failed preparation: 1 s doubling up to 32 s.
const BACKOFF: Backoff = Backoff::doubling(Duration::from_secs(1), Duration::from_secs(32));
/// With nothing due, the engine still looks again this often.
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// One live generation: as recorded, and opened.
pub struct Slot<K: Kind> {
    /// The journal entry.
    pub entry: Entry<K::Detail>,
    /// The opened generation (its key and certificate).
    pub open: K::Open,
}

/// When the generation after the active one is prepared, and when it takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Next {
    /// When to prepare it.
    pub prepare_at: OffsetDateTime,
    /// When it starts issuing (never before it is prepared).
    pub activates: OffsetDateTime,
}

/// A kind of generation the engine rotates.
#[async_trait]
pub trait Kind: Send + Sync + Sized + 'static {
    /// What the journal keeps per generation besides its number and times (never a key
    /// URI: those are recomputed from the configuration).
    type Detail: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// An opened generation.
    type Open: Send + Sync + 'static;
    /// What is published on the watch channel.
    type Published: Send + Sync + 'static;

    /// The journal section, metrics label and audit `kind`.
    const NAME: &'static str;
    /// What a generation is, for log lines ("intermediate CA").
    const WHAT: &'static str;
    /// Whether a failing preparation makes the agent not ready.
    const GATES_READINESS: bool;
    /// The record agents kept before the journal, removed once migrated.
    const LEGACY: Option<AgentRecord> = None;

    /// The fingerprint that ties recorded generations to the configured key (`None`:
    /// not tied).
    fn key_fingerprint(&self) -> Option<String> {
        None
    }

    /// Whether generations outlive the process (in-memory keys do not).
    fn persistent(&self) -> bool {
        true
    }

    /// The generations to start from when the journal has no section for this kind:
    /// what an older agent recorded, or what the state directory already holds.
    fn migrate(&self, _state: &StateDir) -> Result<Option<Section<Self::Detail>>, Error> {
        Ok(None)
    }

    /// When the generation after `active` is due.
    fn next(&self, active: &Entry<Self::Detail>) -> Next;

    /// When `entry` stops being published (`None`: not known yet).
    fn leaves_at(&self, entry: &Entry<Self::Detail>) -> Option<OffsetDateTime>;

    /// Makes generation `n`, which starts issuing at `activates`; `slots` are the live
    /// generations. Nothing is recorded when it fails.
    async fn prepare(
        &mut self,
        n: u64,
        activates: OffsetDateTime,
        slots: &[Slot<Self>],
    ) -> Result<(Self::Detail, Self::Open), Error>;

    /// Opens a recorded generation.
    async fn open(&self, entry: &Entry<Self::Detail>) -> Result<Self::Open, Error>;

    /// What to publish with `slots[active]` issuing.
    fn publish(&self, active: usize, slots: &[Slot<Self>]) -> Self::Published;

    /// The audit event `name` about `slot` (the engine adds `kind` and `generation`).
    fn event(&self, name: &str, _slot: &Slot<Self>) -> Event {
        Event::new(name)
    }

    /// How often [`Kind::refresh`] runs (`None`: never).
    fn refresh_every(&self) -> Option<Duration> {
        None
    }

    /// Periodic work besides generations (say, the upstream's published roots);
    /// returns whether what is published changed.
    async fn refresh(&mut self) -> Result<bool, Error> {
        Ok(false)
    }
}

/// Loads `kind`'s generations from the journal (or what [`Kind::migrate`] finds), makes
/// sure one is active (preparing the first if needed), publishes, and keeps rotating in
/// a task that ends when every receiver is gone. Fails only when nothing can be served.
pub async fn start<K: Kind>(
    kind: K,
    journal: &Journal,
    audit: Audit,
    metrics: Metrics,
) -> Result<watch::Receiver<Arc<K::Published>>, Error> {
    let mut engine = Engine::load(kind, journal.clone(), audit, metrics).await?;
    let mut changes = Vec::new();
    let settled = engine.settle(now(), &mut changes).await;
    engine.commit(changes);
    if engine.active.is_none() {
        return Err(settled
            .err()
            .unwrap_or_else(|| Error::State(format!("no {} could be made active", K::WHAT))));
    }
    engine.outcome(settled);
    let (tx, rx) = watch::channel(Arc::new(engine.published()));
    tokio::spawn(engine.run(tx));
    Ok(rx)
}

/// The current time.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// How long from now until `at` (zero when past).
pub fn until(at: OffsetDateTime) -> Duration {
    Duration::try_from(at - OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO)
}

/// A new key for a generation at `uri` (audited); a key already there is one an
/// interrupted attempt made and never recorded, and is used as it is.
async fn new_key(
    backends: &Backends,
    uri: &KeyUri,
    algorithm: Algorithm,
    audit: &Audit,
) -> Result<Arc<dyn KeySigner>, Error> {
    let backend = backends.for_uri(uri).await?;
    match backend.generate(uri, algorithm).await {
        Ok(s) => {
            let fingerprint = keyward_core::store::sha256_hex(s.public_key_spki_der());
            audit.record(Event::key_generated(s.uri(), algorithm, &fingerprint));
            Ok(s)
        }
        Err(Error::AlreadyExists(_)) => {
            tracing::warn!(key = %uri, "the key for this generation exists without a recorded certificate (an earlier attempt was interrupted); using it");
            backend.open(uri).await
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
