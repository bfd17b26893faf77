//! Certificate issuance: self-signed roots, intermediates, service certificates and
//! CSR signing, all signed through a [`KeySigner`] wherever the key lives.
//!
//! rcgen builds and encodes the certificates through an adapter over the signer
//! (see `adapter.rs`): certificates a CA issues with an EC or Ed25519 key on the calling
//! task, everything else (RSA CA keys, roots, CSRs, CRLs, batches) in `spawn_blocking`.
//! Every certificate is parsed back and verified under the issuer's public key before
//! it is returned (see `postcheck.rs`).

mod adapter;
mod ca_issuer;
mod chain;
mod crl;
pub(crate) mod csr;
mod names;
mod postcheck;
mod profile;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::SanType;
use rcgen::string::Ia5String;
use time::OffsetDateTime;

use crate::check;
use crate::{Error, KeySigner};
use adapter::{RcgenKey, clear_sign_error, map_rcgen_error};
use postcheck::{IssuerKey, check_csr, check_issued};
use profile::{random_serial, validity_window};

pub use ca_issuer::CaIssuer;
pub use chain::CaChain;
pub use crl::{CrlContents, RevocationReason, RevokedCert, SignedCrl, serial_bytes};
pub use names::parse_subject;
pub use postcheck::verify_issued;

/// Default validity of a root CA: 10 years.
pub const DEFAULT_ROOT_VALIDITY: Duration = Duration::from_secs(3650 * 86_400);
/// Default validity of an intermediate CA: 1 year.
pub const DEFAULT_INTERMEDIATE_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// Default validity of a service certificate: 90 days.
pub const DEFAULT_SERVICE_VALIDITY: Duration = Duration::from_secs(90 * 86_400);

/// A certificate keyward has just issued and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The DER certificate.
    pub der: Vec<u8>,
    /// Its serial number, upper-case hex (as `openssl x509 -serial` prints it).
    pub serial_hex: String,
    /// Its subject, e.g. `CN=api.internal`.
    pub subject: String,
    /// Its issuer's distinguished name, as [`check::summarize`] gives it.
    pub issuer: String,
    /// Its subject alternative names (`DNS:x`, `IP:x`, `URI:x`), as
    /// [`check::summarize`] gives them.
    pub sans: Vec<String>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl IssuedCertificate {
    /// The certificate as one PEM `CERTIFICATE` block.
    pub fn pem(&self) -> String {
        check::ders_to_pem(std::slice::from_ref(&self.der))
    }
}

/// What a service certificate is for: its names and how long it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceProfile {
    /// Subject common name; also added as a DNS SAN when it is a DNS name not listed.
    pub common_name: String,
    /// DNS subject alternative names.
    pub dns: Vec<String>,
    /// IP address subject alternative names.
    pub ips: Vec<IpAddr>,
    /// URI subject alternative names (absolute URIs; `spiffe://` IDs are checked).
    pub uris: Vec<String>,
    /// Requested lifetime (capped at the CA's own notAfter).
    pub validity: Duration,
}

/// Checks names and assembles the SAN list: DNS (the CN first when it is a DNS name not
/// already listed), then IPs, then URIs; duplicates dropped; at least one name required.
pub(crate) fn build_sans(
    common_name: Option<&str>,
    dns: &[String],
    ips: &[IpAddr],
    uris: &[String],
) -> Result<Vec<SanType>, Error> {
    let ia5 = |s: &str| {
        Ia5String::try_from(s).map_err(|e| Error::InvalidInput(format!("name '{s}': {e}")))
    };
    let mut dns_seen: Vec<String> = Vec::new();
    let mut sans = Vec::new();
    for d in dns {
        names::check_dns_name(d)?;
        let lower = d.to_ascii_lowercase();
        if !dns_seen.contains(&lower) {
            sans.push(SanType::DnsName(ia5(d)?));
            dns_seen.push(lower);
        }
    }
    if let Some(cn) = common_name
        && names::check_dns_name(cn).is_ok()
        && !dns_seen.contains(&cn.to_ascii_lowercase())
    {
        sans.insert(0, SanType::DnsName(ia5(cn)?));
    }
    for ip in ips {
        if !sans.contains(&SanType::IpAddress(*ip)) {
            sans.push(SanType::IpAddress(*ip));
        }
    }
    for u in uris {
        names::check_uri(u)?;
        let san = SanType::URI(ia5(u)?);
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    if sans.is_empty() {
        return Err(Error::InvalidInput(match common_name {
            Some(cn) => format!(
                "a service certificate needs at least one DNS, IP or URI name, and the \
                 common name '{cn}' is not a DNS name"
            ),
            None => "a service certificate needs at least one DNS, IP or URI name".into(),
        }));
    }
    Ok(sans)
}

/// Runs `work` on the blocking pool (where the rcgen adapter may wait for the signer).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(move || {
        clear_sign_error();
        work()
    })
    .await
    .map_err(|e| Error::backend_with("certificate issuance task failed", e))?
}

/// Creates a self-signed root CA certificate for `signer`, named by `subject` (see
/// [`parse_subject`]): basicConstraints CA (critical), keyUsage keyCertSign + cRLSign
/// (critical), SKI, random serial, notBefore 5 minutes back. Callers usually pass
/// [`DEFAULT_ROOT_VALIDITY`].
pub async fn self_signed_root(
    signer: Arc<dyn KeySigner>,
    subject: &str,
    validity: Duration,
) -> Result<IssuedCertificate, Error> {
    let dn = parse_subject(subject)?;
    let key = RcgenKey::new(signer.clone())?;
    let window = validity_window(OffsetDateTime::now_utc(), validity, None)?;
    let params = profile::root_params(dn, &window, &random_serial()?);
    let issuer_key = IssuerKey::of(&*signer);
    blocking(move || {
        let cert = params
            .self_signed(&key)
            .map_err(|e| map_rcgen_error(e, "root certificate"))?;
        check_issued(cert.der().to_vec(), &issuer_key, key.raw_public_key())
    })
    .await
}

/// A PEM CSR for an intermediate CA key (`signer`), named by `subject`, asking for
/// basicConstraints CA with pathLenConstraint 0 and keyCertSign + cRLSign: for an
/// upstream CA (such as Vault PKI) to sign. The CSR is checked under the key before
/// it is returned.
pub async fn csr_pem(signer: Arc<dyn KeySigner>, subject: &str) -> Result<String, Error> {
    let dn = parse_subject(subject)?;
    let key = RcgenKey::new(signer.clone())?;
    let issuer_key = IssuerKey::of(&*signer);
    blocking(move || {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = dn;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let csr = params
            .serialize_request(&key)
            .map_err(|e| map_rcgen_error(e, "certificate signing request"))?;
        check_csr(csr.der(), &issuer_key)?;
        csr.pem()
            .map_err(|e| Error::backend_with("cannot encode the CSR as PEM", e))
    })
    .await
}
