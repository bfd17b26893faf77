//! End-to-end: `keyward agent` serving the SPIFFE Workload API, with the `spiffe`
//! crate (and a raw gRPC client) as the callers.

mod agent_common;
mod common;

use std::sync::Arc;
use std::time::Duration;

use agent_common::*;
use spiffe::{TrustDomain, WorkloadApiClient};
use tokio_stream::StreamExt;

async fn client(agent: &Agent) -> WorkloadApiClient {
    WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .expect("connect with the spiffe crate")
}

fn ders(certs: &[spiffe::Certificate]) -> Vec<Vec<u8>> {
    certs.iter().map(|c| c.as_bytes().to_vec()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_an_svid_whose_only_uri_is_its_spiffe_id_and_that_chains_to_the_served_bundle() {
    let mut agent = Agent::new(&entry("api", 0, "1h", "dns = [\"api.internal\"]"));
    agent.start();
    let c = client(&agent).await;

    let svid = c.fetch_x509_svid().await.expect("fetch X.509 SVID");
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/api");
    let chain = ders(svid.cert_chain());
    assert_eq!(
        uri_sans(&chain[0]),
        vec!["spiffe://example.org/api".to_string()]
    );

    let bundles = c.fetch_x509_bundles().await.expect("fetch X.509 bundles");
    let td = TrustDomain::new("example.org").unwrap();
    let bundle = bundles.get(&td).expect("a bundle for example.org");
    let roots = ders(bundle.authorities());
    verify(&chain, &roots);
    // The bundle is the CA in the state directory.
    assert_eq!(
        roots,
        keyward_core::check::pem_to_ders(&agent.root_pem()).unwrap()
    );
    // The SVID response carries the same bundle.
    let ctx = c.fetch_x509_context().await.expect("fetch X.509 context");
    assert_eq!(
        ders(ctx.bundle_set().get(&td).unwrap().authorities()),
        roots
    );
    agent.stop();
    assert!(!agent.socket.exists(), "the socket is removed at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_receives_a_rotated_svid() {
    let mut agent = Agent::new(&entry("short", 0, "4s", ""));
    agent.start();
    let c = client(&agent).await;
    let mut stream = c.stream_x509_svids().await.expect("open the stream");
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("first message at once")
        .expect("stream open")
        .expect("first SVID");
    let second = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("a rotated SVID within 20 s (ttl 4 s, renewed at half)")
        .expect("stream open")
        .expect("rotated SVID");
    assert_eq!(second.spiffe_id(), first.spiffe_id());
    let (a, b) = (ders(first.cert_chain()), ders(second.cert_chain()));
    assert_ne!(serial(&a[0]), serial(&b[0]), "a new certificate");
    assert_ne!(
        first.private_key().as_bytes(),
        second.private_key().as_bytes(),
        "a new key"
    );
    let roots = keyward_core::check::pem_to_ders(&agent.root_pem()).unwrap();
    verify(&b, &roots);
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workloads_complete_mutual_tls_with_their_fetched_svids() {
    let workloads = [
        entry("server", 0, "1h", "dns = [\"localhost\"]"),
        entry("client", NOBODY, "1h", ""),
    ]
    .concat();
    let mut agent = Agent::new(&workloads);
    agent.start();
    // The server workload is this process (uid 0), with the spiffe crate.
    let c = client(&agent).await;
    let server = c.fetch_x509_svid().await.expect("server SVID");
    let td = TrustDomain::new("example.org").unwrap();
    let roots = ders(
        c.fetch_x509_bundles()
            .await
            .unwrap()
            .get(&td)
            .unwrap()
            .authorities(),
    );
    // The client workload is another process under uid 65534, with `keyward fetch`.
    let out = agent.out_dir("client-svid", NOBODY);
    let o = fetch_as(NOBODY, &agent.socket, &out);
    assert!(
        o.status.success(),
        "keyward fetch as nobody: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let client_chain =
        keyward_core::check::pem_to_ders(&std::fs::read(out.join("cert.pem")).unwrap()).unwrap();
    let client_key = pem::parse(std::fs::read(out.join("key.pem")).unwrap())
        .unwrap()
        .into_contents();
    assert_eq!(
        uri_sans(&client_chain[0]),
        vec!["spiffe://example.org/client".to_string()]
    );

    let (server_peer, client_peer) = tls::handshake(
        (
            ders(server.cert_chain()),
            server.private_key().as_bytes().to_vec(),
        ),
        (client_chain, client_key),
        &roots,
    );
    assert_eq!(
        uri_sans(&server_peer),
        vec!["spiffe://example.org/client".to_string()],
        "server saw the client's ID"
    );
    assert_eq!(
        uri_sans(&client_peer),
        vec!["spiffe://example.org/server".to_string()],
        "client saw the server's ID"
    );
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_with_no_entry_gets_permission_denied_and_no_key_material() {
    let mut agent = Agent::new(&entry("root-only", 0, "1h", ""));
    let audit = agent.dir.path().join("audit.jsonl");
    let mut config = std::fs::read_to_string(&agent.config).unwrap();
    config.push_str(&format!("\n[audit]\npath = \"{}\"\n", audit.display()));
    std::fs::write(&agent.config, config).unwrap();
    agent.start();
    let out = agent.out_dir("nobody-svid", NOBODY);
    let o = fetch_as(NOBODY, &agent.socket, &out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "fetch as uid 65534 succeeded");
    assert!(stderr.contains("PermissionDenied"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "nothing was written"
    );
    // The entitled caller (uid 0) is still served on the same socket.
    let served = raw::fetch_x509(raw::channel(&agent.socket).await, true)
        .await
        .expect("uid 0 is served");
    assert_eq!(served.svids.len(), 1);
    agent.stop();
    // The audit log names the refusal and the issuance, and holds no key material.
    let log = std::fs::read_to_string(&audit).unwrap();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "denied" && e["fields"]["caller"]["uid"] == NOBODY),
        "{log}"
    );
    assert!(
        events.iter().any(|e| e["event"] == "svid_issued"
            && e["fields"]["spiffe_id"] == "spiffe://example.org/root-only"),
        "{log}"
    );
    assert!(
        !log.contains("PRIVATE KEY") && !log.contains("x509_svid_key"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_the_security_header_gets_invalid_argument() {
    let mut agent = Agent::new(&entry("api", 0, "1h", ""));
    agent.start();
    let ch = raw::channel(&agent.socket).await;
    let e = raw::fetch_x509(ch.clone(), false)
        .await
        .expect_err("served without the header");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let ok = raw::fetch_x509(ch, true)
        .await
        .expect("served with the header");
    assert_eq!(ok.svids[0].spiffe_id, "spiffe://example.org/api");
    assert!(!ok.svids[0].x509_svid_key.is_empty());
    agent.stop();
}

/// A TLS 1.3 handshake between two in-memory rustls endpoints, each trusting `roots`
/// and requiring the other's certificate. Returns the leaf each side received.
mod tls {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

    type Identity = (Vec<Vec<u8>>, Vec<u8>);

    fn certs(chain: &[Vec<u8>]) -> Vec<CertificateDer<'static>> {
        chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect()
    }

    fn key(der: &[u8]) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec()))
    }

    pub fn handshake(server: Identity, client: Identity, roots: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut store = RootCertStore::empty();
        for r in roots {
            store.add(CertificateDer::from(r.clone())).unwrap();
        }
        let store = Arc::new(store);
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            store.clone(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let server_cfg = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&server.0), key(&server.1))
            .expect("server SVID usable by rustls");
        let client_cfg = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_client_auth_cert(certs(&client.0), key(&client.1))
            .expect("client SVID usable by rustls");
        let mut s = ServerConnection::new(Arc::new(server_cfg)).unwrap();
        let mut c = ClientConnection::new(
            Arc::new(client_cfg),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        for _ in 0..20 {
            if !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
            pump(&mut c, &mut s);
        }
        assert!(
            !c.is_handshaking() && !s.is_handshaking(),
            "handshake did not complete"
        );
        // Application data flows both ways.
        use std::io::{Read, Write};
        c.writer().write_all(b"ping").unwrap();
        pump(&mut c, &mut s);
        let mut buf = [0u8; 4];
        s.reader().read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        let server_saw = s.peer_certificates().expect("client certificate")[0].to_vec();
        let client_saw = c.peer_certificates().expect("server certificate")[0].to_vec();
        (server_saw, client_saw)
    }

    fn pump(c: &mut ClientConnection, s: &mut ServerConnection) {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets().expect("server accepts the client");
        }
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().expect("client accepts the server");
        }
    }
}
