//! Peers checked against the cell's CRLs: a revoked intermediate or leaf is refused on
//! the next handshake (by servers and by clients), and a CRL of another key that only
//! shares the issuer's name (another node's or another generation's intermediate)
//! refuses nobody and breaks nothing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use keyward_core::CaIssuer;
use keyward_core::issuance::{CrlContents, RevocationReason, RevokedCert};
use keyward_rustls::{Authorizer, CredentialCell, RevocationLists, client_config, server_config};
use time::OffsetDateTime;

const SERVER: &str = "spiffe://example.org/server";
const CLIENT: &str = "spiffe://example.org/client";

fn serial(der: &[u8]) -> String {
    keyward_core::check::summarize(der).unwrap().serial_hex
}

/// A CRL signed by `ca` listing `serials`.
async fn crl(ca: &CaIssuer, serials: &[String]) -> Vec<u8> {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let contents = CrlContents {
        crl_number: 1,
        this_update: now,
        next_update: now + Duration::from_secs(86_400),
        revoked: serials
            .iter()
            .map(|s| RevokedCert {
                serial_hex: s.clone(),
                reason: RevocationReason::KeyCompromise,
                revoked_at: now,
            })
            .collect(),
    };
    ca.sign_crl(&contents).await.unwrap().der
}

/// A server with `ca`'s SVID for [`SERVER`], accepting any client of the trust domain;
/// its cell takes the CRLs.
async fn server(ca: &Ca) -> (CredentialCell, EchoServer) {
    let cell = CredentialCell::new(ca.creds(SERVER).await);
    let srv = EchoServer::start(server_config(&cell, Authorizer::any()).unwrap()).await;
    (cell, srv)
}

fn client(cell: &CredentialCell) -> Arc<rustls::ClientConfig> {
    Arc::new(client_config(cell, Authorizer::any()).unwrap())
}

#[tokio::test]
async fn a_client_whose_intermediate_the_roots_crl_lists_is_refused_from_the_next_handshake() {
    let ca = Ca::new("example").await;
    let (server_cell, mut srv) = server(&ca).await;
    let client_cell = CredentialCell::new(ca.creds(CLIENT).await);
    echo(srv.addr, &client(&client_cell)).await.unwrap();
    assert_eq!(srv.outcome().await.unwrap(), CLIENT);

    let intermediate = serial(ca.issuer.certificate_der());
    let revoked = crl(&ca.root, &[intermediate]).await;
    server_cell.store_crls(RevocationLists::from_der([&revoked]).unwrap());
    assert!(echo(srv.addr, &client(&client_cell)).await.is_err());
    let refused = srv.outcome().await.unwrap_err();
    assert!(refused.contains("Revoked"), "{refused}");

    // A CRL of the root that lists nothing else lets the client in again.
    let clean = crl(&ca.root, &[]).await;
    server_cell.store_crls(RevocationLists::from_der([&clean]).unwrap());
    echo(srv.addr, &client(&client_cell)).await.unwrap();
    assert_eq!(srv.outcome().await.unwrap(), CLIENT);
}

#[tokio::test]
async fn a_revoked_leaf_is_refused_and_its_siblings_are_not() {
    let ca = Ca::new("example").await;
    let (server_cell, mut srv) = server(&ca).await;
    let (bad_chain, bad_key) = ca.leaf("bad.test", &[CLIENT]).await;
    let bad = CredentialCell::new(ca.creds_from(&bad_chain, &bad_key));
    let good = CredentialCell::new(ca.creds(CLIENT).await);
    let listed = crl(&ca.issuer, &[serial(&bad_chain[0])]).await;
    server_cell.store_crls(RevocationLists::from_der([&listed]).unwrap());

    assert!(echo(srv.addr, &client(&bad)).await.is_err());
    assert!(srv.outcome().await.unwrap_err().contains("Revoked"));
    echo(srv.addr, &client(&good)).await.unwrap();
    assert_eq!(srv.outcome().await.unwrap(), CLIENT);
}

#[tokio::test]
async fn a_client_refuses_a_server_whose_chain_is_revoked() {
    let ca = Ca::new("example").await;
    let (_, srv) = server(&ca).await;
    let client_cell = CredentialCell::new(ca.creds(CLIENT).await);
    let revoked = crl(&ca.root, &[serial(ca.issuer.certificate_der())]).await;
    client_cell.store_crls(RevocationLists::from_der([&revoked]).unwrap());
    let e = echo(srv.addr, &client(&client_cell)).await.unwrap_err();
    assert!(e.contains("Revoked"), "{e}");
}

#[tokio::test]
async fn a_crl_of_another_key_with_the_same_issuer_name_refuses_nobody() {
    // Two CAs with the same names and different keys, like the intermediates of two
    // nodes (or two generations of one) under one upstream root.
    let ca = Ca::new("example").await;
    let twin = Ca::new("example").await;
    assert_eq!(
        keyward_core::check::summarize(ca.issuer.certificate_der())
            .unwrap()
            .subject,
        keyward_core::check::summarize(twin.issuer.certificate_der())
            .unwrap()
            .subject
    );
    let (server_cell, mut srv) = server(&ca).await;
    let (chain, key) = ca.leaf("client.test", &[CLIENT]).await;
    let client_cell = CredentialCell::new(ca.creds_from(&chain, &key));
    // The twin's CRLs name the client's issuers and even list its serials, but they do
    // not verify under the keys of the client's chain.
    let forged_leaf = crl(&twin.issuer, &[serial(&chain[0])]).await;
    let forged_inter = crl(&twin.root, &[serial(ca.issuer.certificate_der())]).await;
    server_cell.store_crls(RevocationLists::from_der([&forged_leaf, &forged_inter]).unwrap());
    echo(srv.addr, &client(&client_cell)).await.unwrap();
    assert_eq!(srv.outcome().await.unwrap(), CLIENT);
}

#[test]
fn crls_read_from_pem_and_malformed_ones_are_refused() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ca = rt.block_on(Ca::new("example"));
    let der = rt.block_on(crl(&ca.root, &[]));
    let text = pem::encode(&pem::Pem::new("X509 CRL", der.clone())).repeat(2);
    assert_eq!(RevocationLists::from_pem(text.as_bytes()).unwrap().len(), 2);
    assert!(RevocationLists::from_pem(b"").unwrap().is_empty());
    let e = RevocationLists::from_der([&der[..10]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("CRL #1"), "{e}");
}

#[tokio::test]
async fn a_file_source_on_fetch_output_checks_peers_against_its_crl_pem() {
    let ca = Ca::new("example").await;
    let dir = tempfile::TempDir::new().unwrap();
    ca.write_files(dir.path(), SERVER).await;
    std::fs::rename(dir.path().join("ca.pem"), dir.path().join("bundle.pem")).unwrap();
    // Written by an older `keyward fetch`: no crl.pem at all.
    let source =
        keyward_rustls::FileSource::watch_fetched(dir.path(), Duration::from_millis(50)).unwrap();
    assert!(source.cell().crls().is_empty());
    let mut srv = EchoServer::start(server_config(&source, Authorizer::any()).unwrap()).await;
    let client_cell = CredentialCell::new(ca.creds(CLIENT).await);
    echo(srv.addr, &client(&client_cell)).await.unwrap();
    assert_eq!(srv.outcome().await.unwrap(), CLIENT);

    let revoked = crl(&ca.root, &[serial(ca.issuer.certificate_der())]).await;
    let text = pem::encode(&pem::Pem::new("X509 CRL", revoked));
    std::fs::write(dir.path().join(".crl.pem.tmp"), text).unwrap();
    std::fs::rename(dir.path().join(".crl.pem.tmp"), dir.path().join("crl.pem")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while source.cell().crls().is_empty() {
        assert!(std::time::Instant::now() < deadline, "crl.pem never loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(echo(srv.addr, &client(&client_cell)).await.is_err());
    assert!(srv.outcome().await.unwrap_err().contains("Revoked"));
}
