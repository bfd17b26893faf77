//! [`CaIssuer`]: a CA certificate, the chain above it and its key, issuing
//! intermediates, service certificates and certificates from CSRs.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::adapter::{RcgenKey, SubjectKey, clear_sign_error, map_rcgen_error, sign_on_task};
use super::postcheck::{IssuerKey, check_issued};
use super::profile::{self, IssuerWindow, Window, random_serial, validity_window};
use super::{IssuedCertificate, ServiceProfile, blocking, build_sans, csr, names, parse_subject};
use crate::check::{self, parse_cert};
use crate::{Error, KeySigner, KeyType};

/// The shared state of a [`CaIssuer`].
struct Inner {
    cert_der: Vec<u8>,
    chain_der: Vec<Vec<u8>>,
    signer: Arc<dyn KeySigner>,
    issuer: rcgen::Issuer<'static, RcgenKey>,
    key: IssuerKey,
    window: IssuerWindow,
    path_len: Option<u32>,
}

/// A CA that issues certificates: its certificate, the chain above it, and its key.
/// Cheap to clone; the rcgen issuer is prepared once, in [`CaIssuer::new`].
#[derive(Clone)]
pub struct CaIssuer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CaIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaIssuer")
            .field("subject", &self.inner.window.subject)
            .field("key", &self.inner.key.uri)
            .finish_non_exhaustive()
    }
}

impl CaIssuer {
    /// A CA from its DER certificate, the chain above it (issuer first, up to and
    /// including the root; empty for a root) and its key. Checks that the certificate
    /// is a CA with keyCertSign, that the key is the certificate's key, that each chain
    /// certificate signed the one before, and that rcgen can sign with the key
    /// (RSA-PSS keys are `Unsupported`).
    pub fn new(
        cert_der: Vec<u8>,
        chain_der: Vec<Vec<u8>>,
        signer: Arc<dyn KeySigner>,
    ) -> Result<Self, Error> {
        let key = RcgenKey::new(signer.clone())?;
        let cert = parse_cert(&cert_der)
            .map_err(|e| Error::InvalidInput(format!("CA certificate: {e}")))?;
        let subject = check::name_to_string(cert.subject());
        let bc = cert
            .basic_constraints()
            .ok()
            .flatten()
            .map(|b| b.value.clone());
        if !bc.as_ref().is_some_and(|b| b.ca) {
            return Err(Error::InvalidInput(format!(
                "'{subject}' is not a CA certificate (basicConstraints cA is not set)"
            )));
        }
        if !cert
            .key_usage()
            .ok()
            .flatten()
            .is_some_and(|k| k.value.key_cert_sign())
        {
            return Err(Error::InvalidInput(format!(
                "CA certificate '{subject}' has no keyUsage keyCertSign"
            )));
        }
        let signer_spki = signer_spki(&*signer)?;
        if cert.public_key().subject_public_key.data != signer_spki.subject_public_key.data
            || check::key_type(cert.public_key()) != check::key_type(&signer_spki)
        {
            return Err(Error::InvalidInput(format!(
                "the key {} does not match the public key of CA certificate '{subject}'",
                signer.uri()
            )));
        }
        check_chain(&cert, &chain_der)?;
        let window = IssuerWindow {
            subject: subject.clone(),
            not_before: check::to_datetime(cert.validity().not_before),
            not_after: check::to_datetime(cert.validity().not_after),
        };
        let path_len = bc.and_then(|b| b.path_len_constraint);
        drop(cert);
        let issuer =
            rcgen::Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key).map_err(|e| {
                Error::Unsupported(format!(
                    "CA certificate '{subject}' cannot be issued from: {e}"
                ))
            })?;
        Ok(CaIssuer {
            inner: Arc::new(Inner {
                key: IssuerKey::of(&*signer),
                cert_der,
                chain_der,
                signer,
                issuer,
                window,
                path_len,
            }),
        })
    }

    /// The CA's own certificate (DER).
    pub fn certificate_der(&self) -> &[u8] {
        &self.inner.cert_der
    }

    /// The certificates above this CA, issuer first, up to and including the root.
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.inner.chain_der
    }

    /// The CA's key.
    pub fn signer(&self) -> &Arc<dyn KeySigner> {
        &self.inner.signer
    }

    /// Runs `sign` with this CA's rcgen issuer on the blocking pool, for objects other
    /// than certificates (CRLs); a signer failure comes back as the signer's own error.
    pub(super) async fn with_rcgen_issuer<T: Send + 'static>(
        &self,
        sign: impl FnOnce(&rcgen::Issuer<'static, RcgenKey>) -> Result<T, rcgen::Error> + Send + 'static,
        what: &'static str,
    ) -> Result<T, Error> {
        let inner = self.inner.clone();
        blocking(move || sign(&inner.issuer).map_err(|e| map_rcgen_error(e, what))).await
    }

    /// The window for a certificate valid for `validity`, capped at this CA's notAfter.
    fn window(&self, validity: Duration) -> Result<Window, Error> {
        let w = validity_window(
            OffsetDateTime::now_utc(),
            validity,
            Some(&self.inner.window),
        )?;
        if w.capped {
            tracing::warn!(
                ca = %self.inner.window.subject,
                not_after = %w.not_after,
                requested_days = validity.as_secs() / 86_400,
                "requested validity runs past the CA certificate; notAfter capped at the CA's notAfter"
            );
        }
        Ok(w)
    }

    /// Signs `params` for `subject_key`, then checks the result. An EC or Ed25519 CA
    /// key signs on this task (see `adapter::sign_on_task`: about 100 µs of work with a
    /// software key, no hand-off to another thread; a key that answers at once is
    /// followed by one yield, so that a task issuing in a loop still lets the runtime's
    /// other tasks and timers run); an RSA CA key signs on the blocking pool, as its
    /// signatures take milliseconds in software.
    async fn issue(
        &self,
        params: rcgen::CertificateParams,
        subject_key: SubjectKey,
    ) -> Result<IssuedCertificate, Error> {
        let inner = self.inner.clone();
        if matches!(inner.key.alg.key_type(), KeyType::Rsa(_)) {
            return blocking(move || sign_and_check(&inner, &params, &subject_key)).await;
        }
        let cert = sign_on_task(
            || params.signed_by(&subject_key, &inner.issuer),
            "certificate",
        )
        .await?;
        check_issued(cert.der().to_vec(), &inner.key, subject_key.raw())
    }

    /// Issues an intermediate CA certificate (pathLenConstraint 0, keyCertSign +
    /// cRLSign, AKI/SKI) for the key `subject_spki_der`, named by `subject` (see
    /// [`parse_subject`]). Refused when this CA's own pathLenConstraint is 0.
    pub async fn issue_intermediate(
        &self,
        subject_spki_der: &[u8],
        subject: &str,
        validity: Duration,
    ) -> Result<IssuedCertificate, Error> {
        if self.inner.path_len == Some(0) {
            return Err(Error::State(format!(
                "'{}' has pathLenConstraint 0: it cannot issue intermediate CAs",
                self.inner.window.subject
            )));
        }
        let dn = parse_subject(subject)?;
        let key = SubjectKey::from_spki(subject_spki_der)?;
        let window = self.window(validity)?;
        let params = profile::intermediate_params(dn, &window, &random_serial()?);
        self.issue(params, key).await
    }

    /// Checks a service request and builds its certificate parameters.
    fn prepare_service(
        &self,
        subject_spki_der: &[u8],
        profile: &ServiceProfile,
    ) -> Result<(rcgen::CertificateParams, SubjectKey), Error> {
        names::check_common_name(&profile.common_name)?;
        let sans = build_sans(
            Some(&profile.common_name),
            &profile.dns,
            &profile.ips,
            &profile.uris,
        )?;
        let key = SubjectKey::from_spki(subject_spki_der)?;
        let window = self.window(profile.validity)?;
        let params = profile::service_params(
            Some(&profile.common_name),
            sans,
            key.is_rsa(),
            &window,
            &random_serial()?,
        );
        Ok((params, key))
    }

    /// Issues a service certificate for the key `subject_spki_der` as `profile` says:
    /// serverAuth + clientAuth, digitalSignature (+ keyEncipherment for RSA keys), the
    /// profile's names (at least one), a random 16-byte serial, notBefore 5 minutes back.
    pub async fn issue_service(
        &self,
        subject_spki_der: &[u8],
        profile: &ServiceProfile,
    ) -> Result<IssuedCertificate, Error> {
        let (params, key) = self.prepare_service(subject_spki_der, profile)?;
        self.issue(params, key).await
    }

    /// Issues several service certificates in one trip to the blocking pool (for many
    /// workloads rotating at once): each request is checked, signed and verified exactly
    /// as [`CaIssuer::issue_service`] does; results come back in request order.
    pub async fn issue_service_batch(
        &self,
        requests: &[(&[u8], &ServiceProfile)],
    ) -> Vec<Result<IssuedCertificate, Error>> {
        let prepared: Vec<_> = requests
            .iter()
            .map(|(spki, profile)| self.prepare_service(spki, profile))
            .collect();
        let n = prepared.len();
        let inner = self.inner.clone();
        let joined = tokio::task::spawn_blocking(move || {
            prepared
                .into_iter()
                .map(|request| {
                    clear_sign_error();
                    let (params, key) = request?;
                    sign_and_check(&inner, &params, &key)
                })
                .collect::<Vec<_>>()
        })
        .await;
        match joined {
            Ok(results) => results,
            Err(e) => (0..n)
                .map(|_| {
                    Err(Error::backend(format!(
                        "certificate issuance task failed: {e}"
                    )))
                })
                .collect(),
        }
    }

    /// Signs a CSR (PEM or DER) as a service certificate valid for `validity`. The
    /// CSR's signature must verify; only its SANs and CN are used; CA:TRUE, keyCertSign
    /// and any other usage it asks for are never granted.
    pub async fn sign_csr(
        &self,
        csr: &[u8],
        validity: Duration,
    ) -> Result<IssuedCertificate, Error> {
        let req = csr::read_csr(csr)?;
        let cn = req.common_name.as_deref();
        let sans = build_sans(cn, &req.dns, &req.ips, &req.uris)?;
        let window = self.window(validity)?;
        let params =
            profile::service_params(cn, sans, req.key.is_rsa(), &window, &random_serial()?);
        self.issue(params, req.key).await
    }
}

/// Signs `params` for `key` with the CA's key and runs the post-issuance check.
/// Runs on the blocking pool.
fn sign_and_check(
    inner: &Inner,
    params: &rcgen::CertificateParams,
    key: &SubjectKey,
) -> Result<IssuedCertificate, Error> {
    let cert = params
        .signed_by(key, &inner.issuer)
        .map_err(|e| map_rcgen_error(e, "certificate"))?;
    check_issued(cert.der().to_vec(), &inner.key, key.raw())
}

/// The parsed public key of `signer`.
fn signer_spki(signer: &dyn KeySigner) -> Result<SubjectPublicKeyInfo<'_>, Error> {
    SubjectPublicKeyInfo::from_der(signer.public_key_spki_der())
        .map(|(_, s)| s)
        .map_err(|e| {
            Error::backend(format!(
                "{} returned a malformed public key: {e}",
                signer.uri()
            ))
        })
}

/// Checks that `cert` was signed by `chain[0]`, each chain certificate by the next, and
/// that a self-signed last certificate (or `cert` itself when the chain is empty)
/// verifies under its own key.
fn check_chain(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    chain: &[Vec<u8>],
) -> Result<(), Error> {
    let bad = |m: String| Error::InvalidInput(format!("CA chain: {m}"));
    let parsed = chain
        .iter()
        .enumerate()
        .map(|(i, d)| parse_cert(d).map_err(|e| bad(format!("certificate #{}: {e}", i + 1))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut child = cert;
    for parent in &parsed {
        check::verify_signed_by(child, parent).map_err(bad)?;
        child = parent;
    }
    if child.subject().as_raw() == child.issuer().as_raw() {
        check::verify_signed_by(child, child).map_err(bad)?;
    } else if parsed.is_empty() {
        return Err(bad(format!(
            "'{}' is not self-signed and no chain above it was given",
            check::name_to_string(cert.subject())
        )));
    }
    Ok(())
}
