//! Optional TLS client certificates on the enrollment listener: a client may present a
//! certificate issued by this CA (EST re-enrollment) or, when `[est] manufacturer_ca` is
//! set, a device certificate from the manufacturer's CA (first enrollment). Either is
//! verified with rustls's WebPKI verifier against its own roots; a client without a
//! certificate is let through (ACME and HTTP Basic need none). Which roots a chain
//! verified against is decided again by the handlers ([`ClientRoots`]).

use std::sync::Arc;

use keyward_core::Error;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::super::ca::AgentCa;

/// The client certificate verifiers: this CA's, and the manufacturer CA's if any.
#[derive(Debug, Clone)]
pub struct ClientRoots {
    own: Arc<dyn ClientCertVerifier>,
    manufacturer: Option<Arc<dyn ClientCertVerifier>>,
    ca: AgentCa,
}

impl ClientRoots {
    /// Verifiers for this CA's roots (its current bundle) and for `manufacturer` (DER
    /// CA certificates).
    pub fn new(ca: AgentCa, manufacturer: Option<&[Vec<u8>]>) -> Result<ClientRoots, Error> {
        let own = verifier(&split_bundle(&ca.view().bundle)?)?;
        let manufacturer = manufacturer.map(verifier).transpose()?;
        Ok(ClientRoots {
            own,
            manufacturer,
            ca,
        })
    }

    /// Whether `chain` (leaf first) verifies against this CA's roots, with the CA's
    /// current intermediates added to those the client sent.
    pub fn issued_here(&self, chain: &[CertificateDer<'static>]) -> bool {
        verify_with(&*self.own, chain, &self.ca_intermediates())
    }

    /// Whether `chain` (leaf first) verifies against the manufacturer CA.
    pub fn issued_by_manufacturer(&self, chain: &[CertificateDer<'static>]) -> bool {
        self.manufacturer
            .as_ref()
            .is_some_and(|m| verify_with(&**m, chain, &[]))
    }

    /// The intermediates between this CA's roots and the certificates it issues now.
    fn ca_intermediates(&self) -> Vec<CertificateDer<'static>> {
        self.ca
            .view()
            .intermediates
            .into_iter()
            .map(CertificateDer::from)
            .collect()
    }

    /// The verifier the listener's TLS configuration uses.
    pub fn tls_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        let mut hints = self.own.root_hint_subjects().to_vec();
        if let Some(m) = &self.manufacturer {
            hints.extend_from_slice(m.root_hint_subjects());
        }
        Arc::new(EitherRoots {
            roots: self.clone(),
            hints,
        })
    }
}

/// Whether `chain` verifies with `verifier`, given `extra` intermediates.
fn verify_with(
    verifier: &dyn ClientCertVerifier,
    chain: &[CertificateDer<'static>],
    extra: &[CertificateDer<'static>],
) -> bool {
    let Some((leaf, sent)) = chain.split_first() else {
        return false;
    };
    let mut intermediates = sent.to_vec();
    intermediates.extend_from_slice(extra);
    verifier
        .verify_client_cert(leaf, &intermediates, UnixTime::now())
        .is_ok()
}

/// The DER certificates of a concatenated DER bundle.
pub(super) fn split_bundle(bundle: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let mut rest = bundle;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (after, _) = x509_parser::parse_x509_certificate(rest)
            .map_err(|e| Error::InvalidInput(format!("the CA bundle does not parse: {e}")))?;
        out.push(rest[..rest.len() - after.len()].to_vec());
        rest = after;
    }
    Ok(out)
}

/// A WebPKI verifier for `roots` (DER) that also lets clients without a certificate in.
fn verifier(roots: &[Vec<u8>]) -> Result<Arc<dyn ClientCertVerifier>, Error> {
    let mut store = RootCertStore::empty();
    for der in roots {
        store.add(CertificateDer::from(der.clone())).map_err(|e| {
            Error::InvalidInput(format!("a client CA certificate is unusable: {e}"))
        })?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| Error::InvalidInput(format!("cannot build the client verifier: {e}")))
}

/// Accepts a client certificate that verifies against either set of roots.
#[derive(Debug)]
struct EitherRoots {
    roots: ClientRoots,
    hints: Vec<DistinguishedName>,
}

impl ClientCertVerifier for EitherRoots {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let mut with_ours = intermediates.to_vec();
        with_ours.extend(self.roots.ca_intermediates());
        match self
            .roots
            .own
            .verify_client_cert(end_entity, &with_ours, now)
        {
            Ok(v) => Ok(v),
            Err(e) => match &self.roots.manufacturer {
                Some(m) => m.verify_client_cert(end_entity, intermediates, now),
                None => Err(e),
            },
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.roots.own.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.roots.own.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.roots.own.supported_verify_schemes()
    }
}
