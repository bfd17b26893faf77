//! The enrollment listener's own certificate: a fresh in-memory P-256 key and a
//! certificate for `[acme] names` issued by this CA, renewed like an SVID (after the
//! agent's `renew_fraction` of its lifetime, and whenever the issuing CA changes) and
//! swapped into the TLS configuration without a restart ([`ServerCert`] is rustls's
//! certificate resolver).

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use keyward_core::audit::Event;
use keyward_core::issuance::ServiceProfile;
use keyward_core::{Algorithm, Error, KeySigner, KeyUri};
use keyward_software::SoftwareKey;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use super::super::audit::Audit;
use super::super::ca::{AgentCa, CaView};

/// How long each listener certificate is valid.
const LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How long to wait before trying again after a failed renewal.
const RETRY: Duration = Duration::from_secs(30);

/// The listener's current certificate and key; rustls asks it on every handshake.
#[derive(Debug)]
pub struct ServerCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ServerCert {
    /// The certificate served now.
    fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, next: Arc<CertifiedKey>) {
        match self.current.write() {
            Ok(mut guard) => *guard = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }

    /// Issues the first certificate for `names` and starts the task that renews it.
    pub async fn start(
        names: Vec<String>,
        mut ca: AgentCa,
        renew_fraction: f64,
        audit: Audit,
    ) -> Result<(Arc<ServerCert>, tokio::task::JoinHandle<()>), Error> {
        let (key, not_after) = issue(&ca.view(), &names, &audit).await?;
        let cert = Arc::new(ServerCert {
            current: RwLock::new(key),
        });
        let served = cert.clone();
        let task = tokio::spawn(async move {
            let mut renew_in = renewal_delay(not_after, renew_fraction);
            loop {
                tokio::select! {
                    () = tokio::time::sleep(renew_in) => {}
                    () = ca.changed() => {}
                }
                match issue(&ca.view(), &names, &audit).await {
                    Ok((key, not_after)) => {
                        served.replace(key);
                        renew_in = renewal_delay(not_after, renew_fraction);
                    }
                    Err(e) => {
                        tracing::error!(error = %keyward_core::chain_line(&e), "cannot renew the enrollment listener's certificate; retrying");
                        renew_in = RETRY;
                    }
                }
            }
        });
        Ok((cert, task))
    }
}

/// How long until a certificate valid until `not_after` for [`LIFETIME`] is renewed.
fn renewal_delay(not_after: OffsetDateTime, renew_fraction: f64) -> Duration {
    let left = (not_after - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
    let left = Duration::try_from(left).unwrap_or_default();
    let spent_by_renewal = LIFETIME.mul_f64(renew_fraction);
    left.saturating_sub(LIFETIME - spent_by_renewal)
        .max(Duration::from_secs(1))
}

/// A new key and a certificate for `names` from `ca`, as rustls serves them (with the
/// intermediates), and its notAfter.
async fn issue(
    ca: &CaView,
    names: &[String],
    audit: &Audit,
) -> Result<(Arc<CertifiedKey>, OffsetDateTime), Error> {
    let (spki, pkcs8) = tokio::task::spawn_blocking(|| {
        let uri = KeyUri::file("/keyward-agent/in-memory-enrollment-listener-key")?;
        let (key, pkcs8) = SoftwareKey::generate(Algorithm::EcdsaP256Sha256, uri)?;
        Ok::<_, Error>((key.public_key_spki_der().to_vec(), pkcs8))
    })
    .await
    .map_err(|e| Error::backend_with("listener key generation task failed", e))??;
    let (ips, dns): (Vec<_>, Vec<_>) = names.iter().partition(|n| n.parse::<IpAddr>().is_ok());
    let profile = ServiceProfile {
        common_name: names[0].clone(),
        dns: dns.into_iter().cloned().collect(),
        ips: ips.iter().filter_map(|n| n.parse().ok()).collect(),
        uris: Vec::new(),
        validity: LIFETIME,
    };
    let cert = ca.issuer.issue_service(&spki, &profile).await?;
    audit.record(
        Event::issued(
            "enrollment_listener_certificate_issued",
            &cert.der,
            ca.issuer.signer().uri(),
        )
        .with("names", names),
    );
    tracing::info!(serial = %cert.serial_hex, names = ?names, "issued the enrollment listener's certificate");
    let mut chain = vec![CertificateDer::from(cert.der)];
    chain.extend(ca.intermediates.iter().cloned().map(CertificateDer::from));
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| Error::backend_with("the listener's new certificate does not load", e))?;
    Ok((Arc::new(certified), cert.not_after))
}

#[cfg(test)]
mod tests {
    use keyward_core::issuance::{CaIssuer, self_signed_root};
    use tokio::sync::watch;

    use super::*;

    /// A view of a new software root CA named `subject`.
    async fn root_view(subject: &str) -> Arc<CaView> {
        let uri = KeyUri::file("/test/ca.pem").unwrap();
        let (key, _) = SoftwareKey::generate(Algorithm::EcdsaP256Sha256, uri).unwrap();
        let signer: Arc<dyn KeySigner> = Arc::new(key);
        let root = self_signed_root(signer.clone(), subject, LIFETIME * 10)
            .await
            .unwrap();
        let issuer = CaIssuer::new(root.der.clone(), Vec::new(), signer).unwrap();
        Arc::new(CaView::new(issuer, &[root.der]))
    }

    /// The issuer of the certificate served now, as text.
    fn served_issuer(cert: &ServerCert) -> String {
        let key = cert.current();
        let (_, leaf) = x509_parser::parse_x509_certificate(key.cert[0].as_ref()).unwrap();
        leaf.issuer().to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_issuing_ca_swaps_the_served_certificate() {
        let (tx, rx) = watch::channel(root_view("CN=first root").await);
        let names = vec!["ca.internal".to_string(), "127.0.0.1".to_string()];
        let (cert, task) = ServerCert::start(names, AgentCa::Rotating(rx), 0.5, Audit::default())
            .await
            .unwrap();
        assert_eq!(served_issuer(&cert), "CN=first root");
        let served = cert.current();
        let (_, leaf) = x509_parser::parse_x509_certificate(served.cert[0].as_ref()).unwrap();
        let sans = leaf.subject_alternative_name().unwrap().unwrap();
        assert_eq!(sans.value.general_names.len(), 2, "one DNS and one IP name");
        tx.send(root_view("CN=second root").await).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while served_issuer(&cert) != "CN=second root" {
            assert!(
                std::time::Instant::now() < deadline,
                "the certificate was not swapped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
    }

    #[test]
    fn renewal_comes_after_the_fraction_of_the_lifetime() {
        let now = OffsetDateTime::now_utc();
        let fresh = renewal_delay(now + LIFETIME, 0.5);
        assert!(fresh > LIFETIME / 2 - Duration::from_secs(5) && fresh <= LIFETIME / 2);
        assert_eq!(renewal_delay(now, 0.5), Duration::from_secs(1));
    }
}
