//! Fleet revocation: the upstream authority's CRL (Vault/OpenBao PKI, `MOUNT/crl`),
//! fetched every `[ca.upstream] crl_refresh` and on SIGHUP, so that an intermediate
//! revoked upstream (a lost node's, `pki/revoke`) stops being trusted by the workloads
//! of every other node.
//!
//! A fetched CRL is served only once it verifies under an upstream CA the agent trusts
//! now (issuer, signature, a nextUpdate, a thisUpdate not in the future)
//! and is not older than the one already kept (a cluster's lagging standby may answer
//! with an older copy). It is then stored in STATE/agent/upstream-crl.der (atomically,
//! so a restart serves it at once) and audited; [`super::crl::CrlWatch`] serves it from
//! there. A failed fetch or a CRL that does not verify keeps the previous one, is
//! logged, and marks the source down in the backend health the metrics and status
//! page show. A CRL past its nextUpdate is still served, with a warning.

use keyward_core::Error;
use keyward_core::check;
use keyward_core::issuance::CrlContents;
use keyward_core::store::StateDir;
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::audit::Audit;
use super::ca::{AgentCa, UpstreamClient};
use super::config::CaSettings;
use super::crl::CrlWatch;
use super::metrics::Metrics;

/// The agent's CRL watch and, with `[ca.upstream]`, the task that keeps the upstream
/// CRL current (the watch then serves it too), fetching through `client`, the Vault
/// client the upstream intermediates use.
pub fn start(
    settings: &CaSettings,
    client: Option<UpstreamClient>,
    ca: &AgentCa,
    state: &StateDir,
    audit: &Audit,
    metrics: &Metrics,
) -> Result<(CrlWatch, Option<JoinHandle<()>>), Error> {
    let watch = CrlWatch::new(state.clone());
    #[cfg(feature = "vault")]
    if let (Some(upstream), Some(client)) = (&settings.upstream, client) {
        let task = UpstreamCrl::new(
            upstream,
            client,
            ca.clone(),
            state.clone(),
            audit.clone(),
            metrics.clone(),
        )?;
        return Ok((watch.with_upstream(ca.clone()), Some(task.spawn())));
    }
    // Without the vault backend, `[ca.upstream]` is refused when the config is read.
    #[cfg(not(feature = "vault"))]
    let _ = (settings, client, ca, audit, metrics);
    Ok((watch, None))
}

/// How far in the future a CRL's thisUpdate may be (the clocks of this node and of the
/// upstream differ a little).
const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// The upstream CA certificates the agent trusts now, which the upstream authority's
/// CRL must be signed by: the chain above the issuing intermediate (up to the root)
/// and the roots of the bundle served.
pub fn upstream_cas(ca: &AgentCa) -> Vec<Vec<u8>> {
    let view = ca.view();
    let mut cas: Vec<Vec<u8>> = view.issuer.chain_der().to_vec();
    let mut rest: &[u8] = &view.bundle;
    while let Ok((next, _)) = X509Certificate::from_der(rest) {
        let der = rest[..rest.len() - next.len()].to_vec();
        if !cas.contains(&der) {
            cas.push(der);
        }
        rest = next;
    }
    cas
}

/// Verifies `der` (named `label` in errors) as the upstream authority's CRL: signed by
/// one of `cas` ([`upstream_cas`]), with a nextUpdate and a thisUpdate not in the
/// future. One past its nextUpdate passes, with a warning.
pub fn verify(cas: &[Vec<u8>], der: &[u8], label: &str) -> Result<CrlContents, Error> {
    let (_, crl) = CertificateRevocationList::from_der(der)
        .map_err(|e| Error::Verification(format!("the CRL {label} is malformed: {e}")))?;
    let named = crl.issuer().as_raw();
    let mut failure = None;
    for ca in cas {
        if X509Certificate::from_der(ca).is_ok_and(|(_, c)| c.subject().as_raw() == named) {
            match check::read_crl(der, ca, label) {
                Ok(contents) => return sane(contents, label),
                Err(e) => failure = Some(e),
            }
        }
    }
    Err(failure.unwrap_or_else(|| {
        Error::Verification(format!(
            "the CRL {label} was issued by '{}', which is not an upstream CA of this agent",
            crl.issuer()
        ))
    }))
}

/// The time checks of [`verify`].
fn sane(contents: CrlContents, label: &str) -> Result<CrlContents, Error> {
    let now = OffsetDateTime::now_utc();
    if contents.this_update > now + CLOCK_SKEW {
        return Err(Error::Verification(format!(
            "the CRL {label} is not valid before {} (thisUpdate in the future)",
            contents.this_update
        )));
    }
    if contents.next_update < contents.this_update {
        return Err(Error::Verification(format!(
            "the CRL {label} has its nextUpdate before its thisUpdate"
        )));
    }
    if contents.next_update < now {
        tracing::warn!(crl = label, next_update = %contents.next_update, "the upstream CRL is past its nextUpdate; serving it until a fresh one is fetched");
    }
    Ok(contents)
}

/// Whether `fresh` may replace `kept`: not older (by CRL number, then thisUpdate).
#[cfg(any(feature = "vault", test))]
fn newer_or_same(fresh: &CrlContents, kept: &CrlContents) -> bool {
    (fresh.crl_number, fresh.this_update) >= (kept.crl_number, kept.this_update)
}

#[cfg(feature = "vault")]
use fetcher::UpstreamCrl;

#[cfg(feature = "vault")]
mod fetcher {
    use std::time::Duration;

    use keyward_core::Error;
    use keyward_core::audit::Event;
    use keyward_core::backoff::Backoff;
    use keyward_core::issuance::CrlContents;
    use keyward_core::store::StateDir;
    use keyward_vault::{VaultClient, VaultPkiUpstream};
    use tokio::signal::unix::{SignalKind, signal};
    use tokio::task::JoinHandle;

    use super::{newer_or_same, upstream_cas, verify};
    use crate::daemon::audit::Audit;
    use crate::daemon::ca::AgentCa;
    use crate::daemon::config::UpstreamSettings;
    use crate::daemon::metrics::Metrics;

    /// The wait before retrying a failed fetch: 1 s doubling, never past the refresh
    /// interval.
    const RETRY: Backoff = Backoff::doubling(Duration::from_secs(1), Duration::from_secs(60));

    /// The task that keeps the upstream CRL in the state directory current.
    pub struct UpstreamCrl {
        /// `vault-pki:MOUNT`, for logs, audit records and the health entry.
        authority: String,
        mount: String,
        client: VaultClient,
        ca: AgentCa,
        state: StateDir,
        audit: Audit,
        metrics: Metrics,
        refresh: Duration,
    }

    impl UpstreamCrl {
        /// A task fetching the CRL of `settings`' authority every `crl_refresh`,
        /// checking it under the upstream CAs of `ca`, keeping it in `state`, through
        /// `client`, the one the upstream intermediates use.
        pub fn new(
            settings: &UpstreamSettings,
            client: VaultClient,
            ca: AgentCa,
            state: StateDir,
            audit: Audit,
            metrics: Metrics,
        ) -> Result<Self, Error> {
            let target = VaultPkiUpstream::parse(&settings.authority)?;
            Ok(UpstreamCrl {
                authority: format!("{}:{}", VaultPkiUpstream::SCHEME, target.mount),
                mount: target.mount,
                client,
                ca,
                state,
                audit,
                metrics,
                refresh: settings.crl_refresh,
            })
        }

        /// Starts fetching: at once, then every `crl_refresh` and on every SIGHUP.
        pub fn spawn(self) -> JoinHandle<()> {
            tokio::spawn(self.run())
        }

        async fn run(self) {
            // Every SIGHUP listener gets every signal: the agent's reload sees it too.
            let mut hup = match signal(SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "SIGHUP will not refresh the upstream CRL");
                    None
                }
            };
            let mut failures = 0;
            loop {
                let wait = match self.refresh_once().await {
                    Ok(()) => {
                        failures = 0;
                        self.refresh
                    }
                    Err(e) => {
                        failures += 1;
                        let wait = RETRY.delay(failures).min(self.refresh);
                        tracing::warn!(authority = %self.authority, error = %keyward_core::chain_line(&e), retry_in = ?wait, "cannot refresh the upstream CRL; serving the one kept");
                        wait
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    Some(()) = async { hup.as_mut()?.recv().await } => {
                        tracing::info!(authority = %self.authority, "SIGHUP: refreshing the upstream CRL");
                    }
                }
            }
        }

        /// Fetches, verifies and (when it is new) stores the upstream CRL; the backend
        /// health entry `AUTHORITY CRL` follows the outcome.
        pub async fn refresh_once(&self) -> Result<(), Error> {
            let outcome = self.fetch_and_store().await;
            let health = format!("{} CRL", self.authority);
            self.metrics.backend_health(
                &health,
                outcome
                    .as_ref()
                    .map_err(|e| keyward_core::chain_line(e))
                    .copied(),
            );
            outcome
        }

        /// An older CRL than the one kept (a lagging standby's) leaves it in place.
        async fn fetch_and_store(&self) -> Result<(), Error> {
            let der = keyward_vault::fetch_crl_with(&self.client, &self.mount).await?;
            let label = format!("from {}/crl", self.authority);
            let cas = upstream_cas(&self.ca);
            let fresh = verify(&cas, &der, &label)?;
            let path = self.state.upstream_crl_der_path();
            let kept = std::fs::read(&path).ok();
            if kept.as_deref() == Some(der.as_slice()) {
                return Ok(());
            }
            let kept_contents = kept.and_then(|k| verify(&cas, &k, "kept").ok());
            if let Some(k) = &kept_contents
                && !newer_or_same(&fresh, k)
            {
                tracing::warn!(authority = %self.authority, fetched = fresh.crl_number, kept = k.crl_number, "the upstream answered with an older CRL; keeping the newer one");
                return Ok(());
            }
            self.state.write_upstream_crl(&der)?;
            self.record(&fresh);
            Ok(())
        }

        fn record(&self, crl: &CrlContents) {
            tracing::info!(authority = %self.authority, crl_number = crl.crl_number, revoked = crl.revoked.len(), "stored a new upstream CRL");
            self.audit.record(
                Event::new("upstream_crl_updated")
                    .with("authority", &self.authority)
                    .with("crl_number", crl.crl_number)
                    .with("revoked", crl.revoked.len()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crl(number: u64, this: time::Duration, next: time::Duration) -> CrlContents {
        let now = OffsetDateTime::now_utc();
        CrlContents {
            crl_number: number,
            this_update: now + this,
            next_update: now + next,
            revoked: Vec::new(),
        }
    }

    #[test]
    fn a_crl_from_the_future_or_ending_before_it_starts_is_refused_and_a_stale_one_passes() {
        let hour = time::Duration::hours(1);
        let e = sane(crl(1, hour, 2 * hour), "X").unwrap_err().to_string();
        assert!(e.contains("the CRL X is not valid before"), "{e}");
        let e = sane(crl(1, -hour, -2 * hour), "X").unwrap_err().to_string();
        assert!(e.contains("nextUpdate before its thisUpdate"), "{e}");
        assert!(
            sane(crl(1, time::Duration::minutes(1), hour), "X").is_ok(),
            "clock skew"
        );
        assert!(
            sane(crl(1, -2 * hour, -hour), "X").is_ok(),
            "stale: served with a warning"
        );
    }

    #[test]
    fn only_a_crl_at_least_as_new_as_the_kept_one_replaces_it() {
        let (hour, day) = (time::Duration::hours(1), time::Duration::days(1));
        let kept = crl(5, -hour, day);
        assert!(newer_or_same(&crl(6, -2 * hour, day), &kept));
        assert!(newer_or_same(&crl(5, time::Duration::ZERO, day), &kept));
        assert!(!newer_or_same(&crl(4, time::Duration::ZERO, day), &kept));
        assert!(!newer_or_same(&crl(5, -2 * hour, day), &kept));
    }
}
