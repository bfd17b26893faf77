//! Live rotation: a long-lived server built once keeps accepting while its credentials
//! (certificate, key, bundle) are swapped in the cell or rewritten on disk.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use keyward_rustls::{Authorizer, CredentialCell, FileSource, client_config, server_config};

const SERVER: &str = "spiffe://example.org/server";
const CLIENT: &str = "spiffe://example.org/client";

#[tokio::test]
async fn swapping_the_cell_three_times_changes_the_presented_certificate_each_time() {
    let ca = Ca::new("example").await;
    let cell = CredentialCell::new(ca.creds(SERVER).await);
    let mut srv = EchoServer::start(server_config(&cell, Authorizer::any()).unwrap()).await;
    let client_cell = CredentialCell::new(ca.creds(CLIENT).await);
    let client = Arc::new(client_config(&client_cell, Authorizer::exact(id(SERVER))).unwrap());
    let mut seen = vec![echo(srv.addr, &client).await.unwrap()];
    srv.outcome().await.unwrap();
    for round in 1..=3 {
        cell.store(ca.creds(SERVER).await);
        let want = cell.load().chain()[0].to_vec();
        let got = echo(srv.addr, &client).await.unwrap();
        assert_eq!(
            got, want,
            "round {round}: the server presents the new certificate"
        );
        assert!(
            !seen.contains(&got),
            "round {round}: the certificate changed"
        );
        assert_eq!(srv.outcome().await.unwrap(), CLIENT);
        seen.push(got);
    }
}

#[tokio::test]
async fn a_rotated_bundle_takes_effect_on_the_next_handshake() {
    let old_ca = Ca::new("old").await;
    let new_ca = Ca::new("new").await;
    let cell = CredentialCell::new(old_ca.creds(SERVER).await);
    let mut srv = EchoServer::start(server_config(&cell, Authorizer::any()).unwrap()).await;
    // The old client trusts both roots, so only the server's check can refuse it.
    let (chain, key) = old_ca.leaf("client.test", &[CLIENT]).await;
    let chain: Vec<&[u8]> = chain.iter().map(|c| c.as_slice()).collect();
    let both: [&[u8]; 2] = [&old_ca.root_der, &new_ca.root_der];
    let old_client =
        CredentialCell::new(keyward_rustls::Credentials::from_der(&chain, &key, &both).unwrap());
    let new_client = CredentialCell::new(new_ca.creds(CLIENT).await);
    echo(
        srv.addr,
        &Arc::new(client_config(&old_client, Authorizer::any()).unwrap()),
    )
    .await
    .unwrap();
    srv.outcome().await.unwrap();

    // The server moves to the new CA (its certificate and its bundle) in one swap.
    cell.store(new_ca.creds(SERVER).await);
    let old_cfg = Arc::new(client_config(&old_client, Authorizer::any()).unwrap());
    assert!(
        echo(srv.addr, &old_cfg).await.is_err(),
        "a client of the old CA is refused"
    );
    let err = srv.outcome().await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    echo(
        srv.addr,
        &Arc::new(client_config(&new_client, Authorizer::any()).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(srv.outcome().await.unwrap(), CLIENT);
}

/// Connects until the server presents `want` (the file watcher polls), up to 10 s.
async fn wait_for_cert(srv: &mut EchoServer, client: &Arc<rustls::ClientConfig>, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = echo(srv.addr, client)
            .await
            .expect("the server keeps accepting");
        srv.outcome().await.expect("the server accepts the client");
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not pick up the rewritten files"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn rewriting_the_files_three_times_changes_the_presented_certificate_each_time() {
    let ca = Ca::new("example").await;
    let dir = tempfile::tempdir().unwrap();
    let first = ca.write_files(dir.path(), SERVER).await;
    let (cert, key, bundle) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("ca.pem"),
    );
    let source = FileSource::watch_every(&cert, &key, &bundle, Duration::from_millis(100)).unwrap();
    let mut srv = EchoServer::start(server_config(&source, Authorizer::any()).unwrap()).await;
    let client_cell = CredentialCell::new(ca.creds(CLIENT).await);
    let client = Arc::new(client_config(&client_cell, Authorizer::exact(id(SERVER))).unwrap());
    wait_for_cert(&mut srv, &client, &first).await;
    let mut seen = vec![first];
    for round in 1..=3 {
        let leaf = ca.write_files(dir.path(), SERVER).await;
        assert!(!seen.contains(&leaf), "round {round}");
        wait_for_cert(&mut srv, &client, &leaf).await;
        seen.push(leaf);
    }
}

#[tokio::test]
async fn a_failed_reload_keeps_the_previous_credentials() {
    let ca = Ca::new("example").await;
    let dir = tempfile::tempdir().unwrap();
    let first = ca.write_files(dir.path(), SERVER).await;
    let (cert, key, bundle) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("ca.pem"),
    );
    let source = FileSource::watch_every(&cert, &key, &bundle, Duration::from_millis(50)).unwrap();
    let mut srv = EchoServer::start(server_config(&source, Authorizer::any()).unwrap()).await;
    let client_cell = CredentialCell::new(ca.creds(CLIENT).await);
    let client = Arc::new(client_config(&client_cell, Authorizer::any()).unwrap());

    // A key that does not match the certificate: the reload fails, the old set serves.
    let other = tempfile::tempdir().unwrap();
    ca.write_files(other.path(), SERVER).await;
    std::fs::copy(other.path().join("key.pem"), &key).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(echo(srv.addr, &client).await.unwrap(), first);
    srv.outcome().await.unwrap();
    assert_eq!(source.cell().load().chain()[0].to_vec(), first);

    // Then the matching certificate arrives and the pair loads.
    std::fs::copy(other.path().join("cert.pem"), &cert).unwrap();
    let second = std::fs::read(&cert).unwrap();
    let second = pem::parse_many(&second).unwrap()[0].contents().to_vec();
    wait_for_cert(&mut srv, &client, &second).await;
}
