//! Observability: Prometheus metrics, health and readiness, expiry alerts and a
//! read-only HTML status page, served over HTTP on the loopback address of
//! `[metrics] listen`.
//!
//! Everything is fed through one cloneable [`Metrics`] handle: the rotation task counts
//! issuances, the Workload API counts refusals and open streams, a timing decorator
//! around every CA [`keyward_core::KeySigner`] records signing latency and backend
//! health, a probe signs with the CA key every few seconds, and the alert evaluator
//! keeps the list of certificates with their levels.

mod alerts;
mod http;
mod page;
mod probe;
mod registry;
mod timing;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use keyward_core::check::{AlertLevel, AlertThresholds};
use time::OffsetDateTime;

pub use alerts::spawn_evaluator;
pub use http::serve;
pub use probe::spawn_probe;
pub use timing::TimedBackend;

pub use registry::SigningLabels;
use registry::{Registry, Scraped};

/// A cloneable handle on the agent's metrics and health state. The default handle
/// records everything too (it is simply never served).
#[derive(Clone, Default)]
pub struct Metrics(Arc<Inner>);

#[derive(Default)]
struct Inner {
    registry: Registry,
    ca_loaded: AtomicBool,
    ca_backend: Mutex<Option<String>>,
    health: Mutex<BTreeMap<String, Health>>,
    certificates: Mutex<Vec<CertRow>>,
    policy: Mutex<Policy>,
    generations: Mutex<BTreeMap<&'static str, GenerationStatus>>,
}

/// One kind of rotated generation (an intermediate, the JWT key) as its engine last
/// reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationStatus {
    /// The generation issuing now.
    pub active: u64,
    /// Failed attempts to prepare the next one since the last success.
    pub failures: u32,
    /// Whether a failure makes the agent not ready.
    pub gates_readiness: bool,
    /// Why the last attempt failed, when it did.
    pub reason: Option<String>,
}

/// The last known state of one backend: the most recent signing outcome (a real
/// signing operation or the probe), whichever came last.
#[derive(Debug, Clone)]
pub struct Health {
    /// Whether the backend answered (and its signature verified).
    pub ok: bool,
    /// Why not, in one line, when it did not.
    pub reason: String,
}

/// How certificates are rated: the day thresholds, and the renewal fraction the
/// agent renews workload SVIDs at (their level follows renewal, not days).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// `[alerts]` thresholds for CA and stored certificates.
    pub thresholds: AlertThresholds,
    /// `[agent] renew_fraction`.
    pub renew_fraction: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            thresholds: AlertThresholds::default(),
            renew_fraction: super::config::DEFAULT_RENEW_FRACTION,
        }
    }
}

/// One certificate the agent watches, with its alert level at the last evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct CertRow {
    /// `root`, `intermediate`, `svid` or `issued` (the state directory's inventory).
    pub role: &'static str,
    /// The SPIFFE ID of an SVID, the name of an issued certificate, else empty.
    pub name: String,
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, upper-case hex.
    pub serial_hex: String,
    /// End of the validity window.
    pub not_after: OffsetDateTime,
    /// Whole days left (negative once expired).
    pub days_left: i64,
    /// The alert level.
    pub level: AlertLevel,
}

impl CertRow {
    /// The name alerts and the page use for this certificate: `role name-or-subject`.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            format!("{} {}", self.role, self.subject)
        } else {
            format!("{} {}", self.role, self.name)
        }
    }
}

/// Keeps the open-streams gauge up while a Workload API stream lives.
pub struct StreamGuard(Metrics);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.0.registry.open_streams().dec();
    }
}

/// Locks a mutex, going on with the data if a panicking holder poisoned it (every
/// value here stays consistent between statements).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// A handle rating certificates with `policy`.
    pub fn new(policy: Policy) -> Self {
        let m = Metrics::default();
        m.set_policy(policy);
        m
    }

    /// Replaces the rating policy (a configuration reload).
    pub fn set_policy(&self, policy: Policy) {
        *lock(&self.0.policy) = policy;
    }

    /// The current rating policy.
    pub fn policy(&self) -> Policy {
        *lock(&self.0.policy)
    }

    /// Counts one workload SVID issuance by the CA in `backend`.
    pub fn issued(&self, backend: &str, ok: bool) {
        self.0.registry.issued(backend, ok);
    }

    /// Records one CA signing operation in the backend of `labels`: its latency, and
    /// the backend's health (`Err` carries the reason).
    pub fn signed(&self, labels: &SigningLabels, took: Duration, outcome: Result<(), String>) {
        self.0.registry.signed(labels, took, outcome.is_ok());
        self.backend_health(labels.backend(), outcome);
    }

    /// Records whether `backend` answered (a probe or a real signing operation).
    pub fn backend_health(&self, backend: &str, outcome: Result<(), String>) {
        let (ok, reason) = match outcome {
            Ok(()) => (true, String::new()),
            Err(r) => (false, r),
        };
        let mut h = lock(&self.0.health);
        let was = h.get(backend).map(|h| h.ok);
        if was != Some(ok) {
            if ok {
                tracing::info!(backend, "backend health: answering");
            } else {
                tracing::warn!(backend, reason = %reason, "backend health: not answering");
            }
        }
        match h.get_mut(backend) {
            Some(known) => *known = Health { ok, reason },
            None => {
                h.insert(backend.to_string(), Health { ok, reason });
            }
        }
    }

    /// Counts one refused Workload API request, by reason.
    pub fn denied(&self, reason: &'static str) {
        self.0.registry.denied(reason);
    }

    /// Counts one KeyService operation on a granted key, by op and outcome.
    pub fn key_op(&self, op: &'static str, ok: bool) {
        self.0.registry.key_op(op, ok);
    }

    /// Counts a Workload API stream as open until the guard is dropped.
    pub fn stream_opened(&self) -> StreamGuard {
        self.0.registry.open_streams().inc();
        StreamGuard(self.clone())
    }

    /// Marks the CA as loaded; its key lives in `backend` (the one readiness watches).
    pub fn ca_loaded(&self, backend: &str) {
        *lock(&self.0.ca_backend) = Some(backend.to_string());
        self.0.ca_loaded.store(true, Ordering::Relaxed);
    }

    /// Records the state of the generations of `kind`: the active one, and the
    /// outcome of the last attempt to prepare the next (`failures` in a row).
    pub fn generation_status(
        &self,
        kind: &'static str,
        gates_readiness: bool,
        active: u64,
        failures: u32,
        outcome: Result<(), String>,
    ) {
        let status = GenerationStatus {
            active,
            failures,
            gates_readiness,
            reason: outcome.err(),
        };
        lock(&self.0.generations).insert(kind, status);
    }

    /// Every kind of generation's last reported state, by kind.
    pub fn generations(&self) -> BTreeMap<&'static str, GenerationStatus> {
        lock(&self.0.generations).clone()
    }

    /// `Ok` when the CA is loaded, its backend answers and its intermediate (if it
    /// rotates one) can be renewed, else the reason.
    pub fn readiness(&self) -> Result<(), String> {
        self.ca_readiness()?;
        let generations = lock(&self.0.generations);
        match generations
            .iter()
            .find(|(_, g)| g.gates_readiness && g.reason.is_some())
        {
            Some((kind, g)) => Err(format!(
                "{kind} (generation {} still serving): {}",
                g.active,
                g.reason.as_deref().unwrap_or_default()
            )),
            None => Ok(()),
        }
    }

    /// `Ok` when the CA is loaded and its backend answers, else the reason.
    fn ca_readiness(&self) -> Result<(), String> {
        if !self.0.ca_loaded.load(Ordering::Relaxed) {
            return Err("the CA is not loaded yet".into());
        }
        let backend = lock(&self.0.ca_backend).clone().unwrap_or_default();
        match lock(&self.0.health).get(&backend) {
            None => Err(format!("the CA backend {backend} has not answered yet")),
            Some(h) if h.ok => Ok(()),
            Some(h) => Err(format!(
                "the CA backend {backend} does not answer: {}",
                h.reason
            )),
        }
    }

    /// Every backend's last known health, by backend name.
    pub fn health(&self) -> BTreeMap<String, Health> {
        lock(&self.0.health).clone()
    }

    /// Replaces the watched certificates (the alert evaluator's latest result).
    pub fn set_certificates(&self, rows: Vec<CertRow>) {
        *lock(&self.0.certificates) = rows;
    }

    /// The watched certificates at the last evaluation.
    pub fn certificates(&self) -> Vec<CertRow> {
        lock(&self.0.certificates).clone()
    }

    /// The Prometheus text exposition of every metric, as of `now`.
    pub fn render(&self, now: OffsetDateTime) -> String {
        self.0.registry.render(Scraped {
            now,
            certificates: self.certificates(),
            health: self.health(),
            ready: self.readiness().is_ok(),
            generations: self.generations(),
        })
    }
}
