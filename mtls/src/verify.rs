//! Peer verification against the cell's current bundle, CRLs, trust domain and an
//! [`Authorizer`]; the rustls client- and server-certificate verifiers built on it.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use spiffe::SpiffeId;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::authorizer::Authorizer;
use crate::credentials::CredentialCell;
use crate::revocation::Issued;

/// Why a peer was refused, in plain words (carried inside a rustls error).
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refused(msg: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refused(msg)))))
}

/// The SPIFFE ID of a certificate that carries exactly one URI SAN, a `spiffe://` ID;
/// otherwise a plain-words reason.
pub fn peer_spiffe_id(leaf: &CertificateDer<'_>) -> Result<SpiffeId, String> {
    let (_, cert) =
        X509Certificate::from_der(leaf).map_err(|e| format!("certificate does not parse: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("subjectAltName does not parse: {e}"))?;
    let uris: Vec<&str> = san
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    match uris.as_slice() {
        [one] => SpiffeId::new(one).map_err(|e| format!("URI SAN '{one}' is not a SPIFFE ID: {e}")),
        [] => Err("certificate has no URI SAN (no SPIFFE ID)".into()),
        more => Err(format!(
            "certificate has {} URI SANs; a SPIFFE peer has exactly one",
            more.len()
        )),
    }
}

/// Maps a webpki chain error to the closest rustls certificate error.
fn chain_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let c = match e {
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::CertExpired { .. } => CertificateError::Expired,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::CertRevoked => CertificateError::Revoked,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(c)
}

/// Verifies peers: the chain (with the intermediates the peer sent) against the cell's
/// current bundle, no certificate of it listed in the cell's CRLs, then exactly one
/// SPIFFE URI SAN in the current trust domain, then the authorizer. Used as both the server's client verifier and the client's server
/// verifier; the server name is ignored (SPIFFE peers are named by ID, not DNS).
#[derive(Debug)]
pub struct PeerVerifier {
    cell: CredentialCell,
    authorizer: Authorizer,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    /// A verifier reading `cell` on every handshake, accepting what `authorizer` allows.
    pub fn new(cell: CredentialCell, authorizer: Authorizer) -> Self {
        PeerVerifier {
            cell,
            authorizer,
            algorithms: crate::config::provider().signature_verification_algorithms,
        }
    }

    /// Checks a peer chain for `usage` at `now`; returns the peer's SPIFFE ID.
    pub fn verify_peer(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        server_peer: bool,
    ) -> Result<SpiffeId, rustls::Error> {
        let creds = self.cell.load();
        let usage = if server_peer {
            webpki::KeyUsage::server_auth()
        } else {
            webpki::KeyUsage::client_auth()
        };
        let ee = webpki::EndEntityCert::try_from(end_entity).map_err(chain_error)?;
        let path = ee
            .verify_for_usage(
                self.algorithms.all,
                creds.anchors(),
                intermediates,
                now,
                usage,
                None,
                None,
            )
            .map_err(chain_error)?;
        let crls = self.cell.crls();
        if !crls.is_empty() {
            let anchor = creds
                .anchors()
                .iter()
                .position(|a| std::ptr::eq(a, path.anchor()))
                .map(|i| creds.bundle()[i].as_ref())
                .unwrap_or_default();
            let inters: Vec<_> = path.intermediate_certificates().collect();
            let ders: Vec<_> = inters.iter().map(|c| c.der()).collect();
            let issuers = ders.iter().map(AsRef::as_ref).chain([anchor]);
            let certs = std::iter::once(&**path.end_entity()).chain(inters.iter().copied());
            let links: Vec<Issued<'_>> = certs
                .zip(issuers)
                .map(|(c, issuer)| Issued {
                    serial: c.serial(),
                    issuer_name: c.issuer(),
                    issuer,
                })
                .collect();
            if let Some(serial) = crls.revoked(&links) {
                tracing::warn!(serial = %serial, "peer refused: its chain holds a revoked certificate");
                return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
            }
        }
        let id = peer_spiffe_id(end_entity).map_err(|e| refused(format!("peer refused: {e}")))?;
        if !id.is_member_of(creds.trust_domain()) {
            return Err(refused(format!(
                "peer {id} is not in trust domain {}",
                creds.trust_domain()
            )));
        }
        if !self.authorizer.allows(&id) {
            return Err(refused(format!("peer {id} is not authorized")));
        }
        Ok(id)
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify_peer(end_entity, intermediates, now, false)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify_peer(end_entity, intermediates, now, true)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
