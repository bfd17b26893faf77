//! [`server_config`] and [`client_config`]: rustls configurations that read the cell on
//! every handshake (certificate resolvers here, verifiers in `verify.rs`).

use std::sync::Arc;

use keyward_core::Error;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};

use crate::authorizer::Authorizer;
use crate::credentials::CredentialCell;
use crate::verify::PeerVerifier;

/// The crypto provider every config and verifier of this crate uses: aws-lc-rs.
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// Hands out the cell's current chain and key on every handshake.
#[derive(Debug)]
struct CellResolver(CredentialCell);

impl ResolvesServerCert for CellResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().certified_key().clone())
    }
}

impl ResolvesClientCert for CellResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().certified_key().clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn config_error(e: rustls::Error) -> Error {
    Error::backend_with("cannot build the rustls configuration", e)
}

/// A server configuration (aws-lc-rs, TLS 1.3 and 1.2) that presents the cell's current
/// certificate, requires a client certificate, and accepts clients whose chain verifies
/// against the current bundle and whose single SPIFFE ID `authorizer` allows.
/// Session resumption is off, so every connection is fully verified against the
/// credentials current at that moment.
pub fn server_config(
    source: &impl AsRef<CredentialCell>,
    authorizer: Authorizer,
) -> Result<ServerConfig, Error> {
    let cell = source.as_ref().clone();
    let verifier = Arc::new(PeerVerifier::new(cell.clone(), authorizer));
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(CellResolver(cell)));
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A client configuration (aws-lc-rs, TLS 1.3 and 1.2) that presents the cell's current
/// certificate and accepts servers whose chain verifies against the current bundle and
/// whose single SPIFFE ID `authorizer` allows. The server name passed to `connect` is
/// not checked (SPIFFE servers have no DNS name); resumption is off.
pub fn client_config(
    source: &impl AsRef<CredentialCell>,
    authorizer: Authorizer,
) -> Result<ClientConfig, Error> {
    let cell = source.as_ref().clone();
    let verifier = Arc::new(PeerVerifier::new(cell.clone(), authorizer));
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(CellResolver(cell)));
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}
