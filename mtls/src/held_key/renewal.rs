//! The held-key source's schedule: obtain an SVID (key, CSR, `SignX509SVID`, checks),
//! renew it at a fraction of its lifetime, retry failures with
//! [`keyward_core::backoff`] while the current credentials keep serving.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keyward_core::backoff::Backoff;
use keyward_core::{Algorithm, Error};
use rustls::sign::SigningKey;
use spiffe::SpiffeId;
use spiffe::transport::Endpoint;
use tokio::time::Instant;

use super::issued::{self, Issued};
use super::{HeldKey, HeldKeyOptions, csr, key_service};
use crate::credentials::CredentialCell;

/// The wait before each retry: 200 ms doubling up to 30 s, spread ±20 %.
const RETRY: Backoff =
    Backoff::doubling(Duration::from_millis(200), Duration::from_secs(30)).jittered(0.8, 1.2);

/// Obtains SVIDs for one set of options.
pub(super) struct Renewer {
    endpoint: Endpoint,
    shown: String,
    spiffe_id: SpiffeId,
    dns_names: Vec<String>,
    key: KeyPlan,
    renew_fraction: f64,
}

impl Renewer {
    /// A renewer for `options` against the agent at `endpoint`; a key generated once
    /// is generated here.
    pub(super) async fn new(
        endpoint: Endpoint,
        shown: String,
        options: HeldKeyOptions,
    ) -> Result<Self, Error> {
        let key = match options.key {
            HeldKey::NewEachRenewal(alg) => KeyPlan::Fresh(alg),
            HeldKey::GeneratedOnce(alg) => KeyPlan::Same(generate(alg).await?),
            HeldKey::Kept(key) => KeyPlan::Same(key),
        };
        Ok(Renewer {
            endpoint,
            shown,
            spiffe_id: options.spiffe_id,
            dns_names: options.dns_names,
            key,
            renew_fraction: options.renew_fraction,
        })
    }

    /// The first SVID: an unreachable agent is tried again, with backoff, for up to
    /// `within`; a refusal fails at once.
    pub(super) async fn first(&self, within: Duration) -> Result<Issued, Error> {
        let deadline = Instant::now() + within;
        let mut attempt = 0;
        loop {
            match self.obtain().await {
                Ok(issued) => return Ok(issued),
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) => {
                    attempt += 1;
                    let wait = RETRY.delay(attempt);
                    if Instant::now() + wait > deadline {
                        return Err(e);
                    }
                    tracing::debug!(attempt, retry_in = ?wait, error = %keyward_core::chain_line(&e), "no SVID for the held key yet");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// When an SVID expiring at `not_after`, issued now, is to be renewed.
    fn due(&self, not_after: SystemTime) -> Instant {
        Instant::now() + until(not_after).mul_f64(self.renew_fraction)
    }

    /// Renews the SVID expiring at `not_after`, just issued, and every later one, for
    /// ever, storing each checked SVID in `cell`.
    pub(super) async fn run(self, cell: CredentialCell, mut not_after: SystemTime) {
        let mut due = self.due(not_after);
        let mut failures = 0;
        loop {
            tokio::time::sleep_until(due).await;
            match self.obtain().await {
                Ok(issued) => {
                    tracing::info!(spiffe_id = %self.spiffe_id, "new X.509 SVID for the held key");
                    failures = 0;
                    not_after = issued.not_after;
                    due = self.due(not_after);
                    cell.store(issued.credentials);
                }
                Err(e) => {
                    failures += 1;
                    let mut wait = RETRY.delay(failures);
                    let left = until(not_after);
                    if !left.is_zero() {
                        // Never wait past the current SVID's expiry to try again.
                        wait = wait.min(left.max(RETRY.first));
                    }
                    tracing::warn!(
                        spiffe_id = %self.spiffe_id,
                        attempt = failures,
                        retry_in = ?wait,
                        error = %keyward_core::chain_line(&e),
                        "cannot renew the held key's SVID; serving the current one"
                    );
                    due = Instant::now() + wait;
                }
            }
        }
    }

    /// One SVID: the key, its CSR, the agent's answer, checked.
    async fn obtain(&self) -> Result<Issued, Error> {
        let key = match &self.key {
            KeyPlan::Fresh(alg) => generate(*alg).await?,
            KeyPlan::Same(key) => key.clone(),
        };
        let spki = csr::spki(&*key)?;
        let request = csr::request(&*key, &self.spiffe_id, &self.dns_names)?;
        let resp = key_service::sign_x509_svid(&self.endpoint, &self.shown, request).await?;
        issued::accept(resp, key, &spki, &self.spiffe_id)
    }
}

/// The key of each CSR.
enum KeyPlan {
    /// A new key of this algorithm every time.
    Fresh(Algorithm),
    /// This key every time.
    Same(Arc<dyn SigningKey>),
}

/// A new key of `alg`, generated off the runtime's threads (RSA takes a while).
async fn generate(alg: Algorithm) -> Result<Arc<dyn SigningKey>, Error> {
    tokio::task::spawn_blocking(move || csr::generate(alg))
        .await
        .map_err(|e| Error::backend_with("key generation panicked", e))?
}

/// The time left until `t` (zero once past).
fn until(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::now()).unwrap_or_default()
}
