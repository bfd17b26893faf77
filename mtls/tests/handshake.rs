//! mTLS between configs built by keyward-rustls from in-process credentials: success,
//! authorization by SPIFFE ID on both sides, foreign CAs, and malformed SPIFFE names.

mod common;

use std::sync::Arc;

use common::*;
use keyward_rustls::{Authorizer, CredentialCell, client_config, server_config};

const SERVER: &str = "spiffe://example.org/server";
const CLIENT: &str = "spiffe://example.org/client";

async fn server(ca: &Ca, authorizer: Authorizer) -> EchoServer {
    let cell = CredentialCell::new(ca.creds(SERVER).await);
    EchoServer::start(server_config(&cell, authorizer).unwrap()).await
}

fn client(cell: &CredentialCell, authorizer: Authorizer) -> Arc<rustls::ClientConfig> {
    Arc::new(client_config(cell, authorizer).unwrap())
}

#[tokio::test]
async fn mutual_tls_completes_and_each_side_sees_the_others_spiffe_id() {
    let ca = Ca::new("example").await;
    let mut srv = server(&ca, Authorizer::any()).await;
    let cell = CredentialCell::new(ca.creds(CLIENT).await);
    let leaf = echo(srv.addr, &client(&cell, Authorizer::exact(id(SERVER))))
        .await
        .unwrap();
    assert_eq!(
        keyward_rustls::peer_spiffe_id(&leaf.into()).unwrap(),
        id(SERVER)
    );
    assert_eq!(srv.outcome().await.unwrap(), CLIENT);
}

#[tokio::test]
async fn tls12_mutual_tls_completes_too() {
    let ca = Ca::new("example").await;
    let mut srv = server(&ca, Authorizer::any()).await;
    let cell = CredentialCell::new(ca.creds(CLIENT).await);
    let cfg = client_config(&cell, Authorizer::any()).unwrap();
    let tls12 = rustls::ClientConfig::builder_with_provider(Arc::new(keyward_rustls::provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    // Keep keyward's verifier and resolver; allow only TLS 1.2.
    let mut cfg12 = tls12;
    cfg12.client_auth_cert_resolver = cfg.client_auth_cert_resolver.clone();
    cfg12
        .dangerous()
        .set_certificate_verifier(Arc::new(keyward_rustls::PeerVerifier::new(
            cell.clone(),
            Authorizer::any(),
        )));
    let leaf = echo(srv.addr, &Arc::new(cfg12)).await.unwrap();
    assert_eq!(
        keyward_rustls::peer_spiffe_id(&leaf.into()).unwrap(),
        id(SERVER)
    );
    assert_eq!(srv.outcome().await.unwrap(), CLIENT);
}

#[tokio::test]
async fn the_servers_authorizer_refuses_a_client_whose_spiffe_id_is_not_allowed() {
    let ca = Ca::new("example").await;
    let intruder = CredentialCell::new(ca.creds("spiffe://example.org/intruder").await);
    let allowed = CredentialCell::new(ca.creds(CLIENT).await);
    for authorizer in [
        Authorizer::exact(id(CLIENT)),
        Authorizer::one_of([id(CLIENT), id("spiffe://example.org/other")]),
        Authorizer::predicate(|i| i.path().starts_with("/client")),
    ] {
        let mut srv = server(&ca, authorizer.clone()).await;
        let refused = echo(srv.addr, &client(&intruder, Authorizer::any())).await;
        assert!(refused.is_err(), "{authorizer:?}: the intruder got an echo");
        let err = srv.outcome().await.unwrap_err();
        assert!(
            err.contains("spiffe://example.org/intruder is not authorized"),
            "{authorizer:?}: {err}"
        );
        echo(srv.addr, &client(&allowed, Authorizer::any()))
            .await
            .unwrap();
        assert_eq!(srv.outcome().await.unwrap(), CLIENT, "{authorizer:?}");
    }
}

#[tokio::test]
async fn the_clients_authorizer_refuses_a_server_whose_spiffe_id_is_not_allowed() {
    let ca = Ca::new("example").await;
    let srv = server(&ca, Authorizer::any()).await;
    let cell = CredentialCell::new(ca.creds(CLIENT).await);
    let err = echo(
        srv.addr,
        &client(&cell, Authorizer::exact(id("spiffe://example.org/db"))),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("spiffe://example.org/server is not authorized"),
        "{err}"
    );
}

#[tokio::test]
async fn a_client_with_a_certificate_from_another_ca_is_refused() {
    let ca = Ca::new("example").await;
    let other = Ca::new("other").await;
    let mut srv = server(&ca, Authorizer::any()).await;
    // Same trust domain and an allowed ID, but issued by another CA; the client itself
    // trusts the server's CA so only the server's check can refuse it.
    let (chain, key) = other.leaf("client.test", &[CLIENT]).await;
    let chain: Vec<&[u8]> = chain.iter().map(|c| c.as_slice()).collect();
    let stranger = CredentialCell::new(
        keyward_rustls::Credentials::from_der(&chain, &key, &[&ca.root_der]).unwrap(),
    );
    assert!(
        echo(srv.addr, &client(&stranger, Authorizer::any()))
            .await
            .is_err()
    );
    let err = srv.outcome().await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn a_client_in_another_trust_domain_is_refused() {
    let ca = Ca::new("example").await;
    let mut srv = server(&ca, Authorizer::any()).await;
    // Issued by the trusted CA, but named in another trust domain.
    let cfg = raw_client(&ca, &["spiffe://other.org/client"]).await;
    assert!(echo(srv.addr, &cfg).await.is_err());
    let err = srv.outcome().await.unwrap_err();
    assert!(err.contains("not in trust domain example.org"), "{err}");
}

/// A client cell whose leaf has `uris` (and would not pass `Credentials::new` itself):
/// its key and chain are served by a raw rustls config.
async fn raw_client(ca: &Ca, uris: &[&str]) -> Arc<rustls::ClientConfig> {
    let (chain, key) = ca.leaf("odd.test", uris).await;
    let chain = chain
        .into_iter()
        .map(rustls::pki_types::CertificateDer::from)
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.to_vec().into());
    let trusted = CredentialCell::new(ca.creds(CLIENT).await);
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(keyward_rustls::provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(keyward_rustls::PeerVerifier::new(
            trusted,
            Authorizer::any(),
        )))
        .with_client_auth_cert(chain, key)
        .unwrap();
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

#[tokio::test]
async fn a_peer_with_two_uri_sans_is_refused() {
    let ca = Ca::new("example").await;
    let mut srv = server(&ca, Authorizer::any()).await;
    let cfg = raw_client(&ca, &[CLIENT, "spiffe://example.org/also"]).await;
    assert!(echo(srv.addr, &cfg).await.is_err());
    let err = srv.outcome().await.unwrap_err();
    assert!(err.contains("2 URI SANs"), "{err}");
}

#[tokio::test]
async fn a_peer_without_a_uri_san_is_refused() {
    let ca = Ca::new("example").await;
    let mut srv = server(&ca, Authorizer::any()).await;
    let cfg = raw_client(&ca, &[]).await;
    assert!(echo(srv.addr, &cfg).await.is_err());
    let err = srv.outcome().await.unwrap_err();
    assert!(err.contains("no URI SAN"), "{err}");
}

#[tokio::test]
async fn own_credentials_without_exactly_one_spiffe_id_are_rejected() {
    let ca = Ca::new("example").await;
    for uris in [&[][..], &[CLIENT, "spiffe://example.org/also"][..]] {
        let (chain, key) = ca.leaf("odd.test", uris).await;
        let chain: Vec<&[u8]> = chain.iter().map(|c| c.as_slice()).collect();
        let err = keyward_rustls::Credentials::from_der(&chain, &key, &[&ca.root_der]).unwrap_err();
        let line = err.to_string();
        assert!(
            line.contains("spiffe:// URI SAN") && !line.contains('\n'),
            "{line}"
        );
    }
}
