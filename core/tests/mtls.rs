//! Mutual TLS with keyward-issued certificates: an in-process rustls server and client
//! (aws-lc-rs provider) over a tokio duplex pipe, for each CA key type; a client whose
//! certificate comes from another CA is refused.

mod common;

use std::sync::Arc;

use common::*;
use keyward_core::Algorithm;
use keyward_core::issuance::{self, CaIssuer};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(root_der: &[u8]) -> Arc<RootCertStore> {
    let mut store = RootCertStore::empty();
    store.add(CertificateDer::from(root_der.to_vec())).unwrap();
    Arc::new(store)
}

/// A leaf's certificate chain (leaf, then the intermediate) and its private key.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

async fn identity(ca: &CaIssuer, alg: Algorithm, name: &str, uri: &str) -> Identity {
    let mut p = profile(name, &[]);
    p.uris = vec![uri.to_string()];
    let (cert, pkcs8) = service(ca, alg, &p).await;
    let mut chain = vec![CertificateDer::from(cert.der)];
    chain.extend(untrusted_chain(ca).into_iter().map(CertificateDer::from));
    Identity {
        chain,
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec())),
    }
}

fn server_config(root_der: &[u8], id: Identity) -> Arc<ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(root_der), provider())
        .build()
        .unwrap();
    Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(id.chain, id.key)
            .unwrap(),
    )
}

fn client_config(root_der: &[u8], id: Identity) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(root_der))
            .with_client_auth_cert(id.chain, id.key)
            .unwrap(),
    )
}

/// Runs one connection: the client sends "ping", the server answers "pong". Returns the
/// server's result (the client certificate's DER it saw) and the client's result.
async fn exchange(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> (
    Result<Vec<u8>, std::io::Error>,
    Result<Vec<u8>, std::io::Error>,
) {
    let (c_io, s_io) = tokio::io::duplex(64 * 1024);
    let server_side = async move {
        let mut tls = TlsAcceptor::from(server).accept(s_io).await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        tls.write_all(b"pong").await?;
        tls.shutdown().await?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .expect("client certificate")
            .to_vec();
        Ok(peer[0].to_vec())
    };
    let client_side = async move {
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = TlsConnector::from(client).connect(name, c_io).await?;
        tls.write_all(b"ping").await?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await?;
        Ok(buf)
    };
    tokio::join!(server_side, client_side)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_handshake_with_keyward_certificates() {
    for alg in [
        Algorithm::EcdsaP256Sha256,
        Algorithm::EcdsaP384Sha384,
        Algorithm::Ed25519,
        Algorithm::RsaPkcs1Sha256(keyward_core::RsaBits::B2048),
    ] {
        let root = root(alg, "CN=mTLS Root", issuance::DEFAULT_ROOT_VALIDITY).await;
        let int = intermediate(&root, alg, "CN=mTLS Intermediate").await;
        let server_id = identity(&int, alg, "localhost", "spiffe://example.org/server").await;
        let client_id = identity(&int, alg, "client.example", "spiffe://example.org/client").await;
        let client_leaf = client_id.chain[0].to_vec();
        let root_der = root.certificate_der().to_vec();
        let (server, client) = exchange(
            server_config(&root_der, server_id),
            client_config(&root_der, client_id),
        )
        .await;
        assert_eq!(
            server.unwrap_or_else(|e| panic!("{alg}: server: {e}")),
            client_leaf,
            "{alg}"
        );
        assert_eq!(
            client.unwrap_or_else(|e| panic!("{alg}: client: {e}")),
            b"pong",
            "{alg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_from_another_ca_is_refused() {
    let alg = Algorithm::EcdsaP256Sha256;
    let root_a = root(alg, "CN=Root A", issuance::DEFAULT_ROOT_VALIDITY).await;
    let int_a = intermediate(&root_a, alg, "CN=Intermediate A").await;
    let root_b = root(alg, "CN=Root B", issuance::DEFAULT_ROOT_VALIDITY).await;
    let server_id = identity(&int_a, alg, "localhost", "spiffe://example.org/server").await;
    let stranger = identity(
        &root_b,
        alg,
        "stranger.example",
        "spiffe://other.org/client",
    )
    .await;
    // The client trusts the server's root; the server trusts only root A.
    let (server, client) = exchange(
        server_config(root_a.certificate_der(), server_id),
        client_config(root_a.certificate_der(), stranger),
    )
    .await;
    let err = server.expect_err("the server must refuse a client certificate from root B");
    let msg = err.to_string();
    assert!(
        msg.contains("UnknownIssuer") || msg.contains("invalid peer certificate"),
        "server error: {msg}"
    );
    assert!(client.is_err(), "the client must not get an answer");
}
