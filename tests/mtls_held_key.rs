//! End-to-end: keyward-rustls's `HeldKeySource` against a real agent (software CA).
//! The source holds its own key, sends a CSR over `SignX509SVID`, and serves the SVID
//! from a rustls server; `openssl s_client` (a client nobody here wrote) completes
//! mutual TLS with it, holding an SVID made from an openssl key by `keyward crypto
//! svid-from-csr`. The SVID carries exactly the held key; short-lived SVIDs are
//! renewed by the source (a new key each time by default, the same key when it is the
//! application's) and the renewed certificate still verifies with openssl; while the
//! agent is away the current SVID keeps serving, and renewal resumes when it is back.
//! A request for a SPIFFE ID or DNS name the entry does not grant fails with the
//! agent's reason.
//! The agent never sees the key: its state directory and audit log hold no copy.

mod agent_common;
mod common;
mod keys_common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_common::*;
use common::{openssl, openssl_csr};
use keys_common::crypto;
use keyward_rustls::{
    Authorizer, HeldKey, HeldKeyOptions, HeldKeySource, SpiffeId, peer_spiffe_id, provider,
    server_config,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::SigningKey;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Generous bound for a renewal of a 4 s SVID to be served.
const RENEWED_WITHIN: Duration = Duration::from_secs(30);

fn id(path: &str) -> SpiffeId {
    SpiffeId::new(format!("spiffe://{TRUST_DOMAIN}/{path}")).unwrap()
}

/// An agent with `app` (uid 0, DNS app.internal, SVIDs of `app_ttl`) and `client`
/// (uid 0, 1 h) entries.
fn agent(app_ttl: &str) -> Agent {
    let entries = format!(
        "{}\n{}",
        entry("app", 0, app_ttl, "dns = [\"app.internal\"]"),
        entry("client", 0, "1h", "")
    );
    let mut agent = Agent::new(&entries);
    agent.start();
    agent
}

/// The application's own key: an rcgen P-256 key pair (its PKCS#8 DER, kept by the
/// test to look for it later), loaded as a rustls signing key.
fn application_key() -> (Arc<dyn SigningKey>, Vec<u8>) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let pkcs8 = pair.serialize_der();
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.clone()));
    let key = provider().key_provider.load_private_key(der).unwrap();
    (key, pkcs8)
}

/// A PEM file of DER certificates.
fn write_pem(path: &Path, certs: &[CertificateDer<'_>]) -> PathBuf {
    let text: String = certs
        .iter()
        .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec())))
        .collect();
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// The client's files for s_client: an openssl key, its SVID from `keyward crypto
/// svid-from-csr` (leaf, intermediates), and the bundle.
struct ClientFiles {
    key: PathBuf,
    cert: PathBuf,
    chain: Option<PathBuf>,
    bundle: PathBuf,
}

fn client_files(agent: &Agent, dir: &Path) -> ClientFiles {
    let key = dir.join("client.key");
    let csr = dir.join("client.csr");
    let san = format!("subjectAltName=URI:{}", id("client"));
    openssl_csr(&key, &csr, "/CN=client", &["-addext", &san]);
    let bundle = dir.join("bundle.pem");
    let svid = crypto(
        agent,
        &["svid-from-csr", "--bundle-out", bundle.to_str().unwrap()],
        &std::fs::read(&csr).unwrap(),
    );
    let certs: Vec<CertificateDer<'_>> = keyward_core::check::pem_to_ders(&svid)
        .unwrap()
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let cert = write_pem(&dir.join("client.pem"), &certs[..1]);
    let chain = (certs.len() > 1).then(|| write_pem(&dir.join("client-chain.pem"), &certs[1..]));
    ClientFiles {
        key,
        cert,
        chain,
        bundle,
    }
}

/// A rustls server (the source's credentials, clients authorized as `client`) on
/// loopback: each connection gets "hello <peer SPIFFE ID>", then its first line echoed.
async fn serve(source: &HeldKeySource) -> std::net::SocketAddr {
    let config = server_config(source, Authorizer::exact(id("client"))).unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
                let peer = peer_spiffe_id(&peer).unwrap();
                let mut tls = BufReader::new(tls);
                let greeting = format!("hello {peer}\n");
                tls.get_mut().write_all(greeting.as_bytes()).await.unwrap();
                let mut line = String::new();
                tls.read_line(&mut line).await.unwrap();
                tls.get_mut().write_all(line.as_bytes()).await.unwrap();
                tls.get_mut().shutdown().await.unwrap();
            });
        }
    });
    addr
}

/// `openssl s_client` to `addr` with the client's SVID, verifying the server strictly
/// against the bundle; asserts the mutual handshake and the echo.
async fn s_client(addr: std::net::SocketAddr, client: &ClientFiles) {
    let mut cmd = tokio::process::Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string()])
        .args(["-verify_return_error", "-x509_strict", "-ign_eof"])
        .arg("-CAfile")
        .arg(&client.bundle)
        .arg("-cert")
        .arg(&client.cert)
        .arg("-key")
        .arg(&client.key);
    if let Some(chain) = &client.chain {
        cmd.arg("-cert_chain").arg(chain);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"ping from openssl\n")
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("s_client finished within 30 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("Verify return code: 0 (ok)"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("hello {}", id("client"))),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ping from openssl"), "{stdout}\n{stderr}");
}

/// The leaf the source serves now, as PEM in `path`, verified by openssl against the
/// bundle the source holds.
fn served_leaf(source: &HeldKeySource, path: &Path) -> String {
    let creds = source.cell().load();
    let leaf = write_pem(path, &creds.chain()[..1]);
    let untrusted = write_pem(&path.with_extension("chain.pem"), creds.chain());
    let bundle = write_pem(&path.with_extension("bundle.pem"), creds.bundle());
    let (l, u, b) = (
        leaf.to_str().unwrap(),
        untrusted.to_str().unwrap(),
        bundle.to_str().unwrap(),
    );
    openssl(&["verify", "-x509_strict", "-CAfile", b, "-untrusted", u, l]);
    openssl(&["x509", "-in", l, "-noout", "-pubkey"])
}

/// The public key of a PKCS#8 DER private key, as openssl prints it.
fn openssl_public_key(dir: &Path, pkcs8: &[u8]) -> String {
    let path = dir.join("held.key");
    std::fs::write(&path, pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8))).unwrap();
    openssl(&["pkey", "-in", path.to_str().unwrap(), "-pubout"])
}

/// The 32-byte private scalar inside a P-256 PKCS#8 key (ECPrivateKey's privateKey).
fn private_scalar(pkcs8: &[u8]) -> &[u8] {
    let at = pkcs8
        .windows(5)
        .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
        .expect("ECPrivateKey in the PKCS#8");
    &pkcs8[at + 5..at + 37]
}

/// Asserts no file under `dir` holds `needle`.
fn nowhere_in(dir: &Path, needle: &[u8], what: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            nowhere_in(&path, needle, what);
        } else if let Ok(bytes) = std::fs::read(&path) {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds the {what}",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_completes_mtls_with_the_held_key_svid_which_the_agent_never_saw() {
    let mut agent = agent("1h");
    let dir = agent.dir.path().join("held");
    std::fs::create_dir_all(&dir).unwrap();
    let (key, pkcs8) = application_key();
    let mut options = HeldKeyOptions::new(id("app"));
    options.dns_names = vec!["app.internal".into()];
    options.key = HeldKey::Kept(key);
    let source = HeldKeySource::connect(Some(&agent.endpoint()), options)
        .await
        .unwrap();
    let addr = serve(&source).await;
    let client = client_files(&agent, &dir);
    s_client(addr, &client).await;

    let certified = served_leaf(&source, &dir.join("served.pem"));
    assert_eq!(
        certified,
        openssl_public_key(&dir, &pkcs8),
        "the SVID carries another key than the held one"
    );
    let text = openssl(&[
        "x509",
        "-in",
        dir.join("served.pem").to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    assert!(
        text.contains(&format!("URI:{}", id("app"))) && text.contains("DNS:app.internal"),
        "{text}"
    );

    agent.stop();
    let audit = std::fs::read_to_string(agent.state.join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"op\":\"sign-x509-svid\""), "{audit}");
    nowhere_in(&agent.state, &pkcs8, "held key's PKCS#8 DER");
    nowhere_in(
        &agent.state,
        private_scalar(&pkcs8),
        "held key's private scalar",
    );
    let hex = hex_lower(private_scalar(&pkcs8));
    nowhere_in(
        &agent.state,
        hex.as_bytes(),
        "held key's private scalar in hex",
    );
    assert!(!agent.log().contains(&hex), "the agent's log holds the key");
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until the source serves a leaf other than `before`; returns it.
async fn renewed(source: &HeldKeySource, before: &CertificateDer<'_>) -> CertificateDer<'static> {
    let deadline = Instant::now() + RENEWED_WITHIN;
    loop {
        let leaf = source.cell().load().chain()[0].clone();
        if leaf != *before {
            return leaf;
        }
        assert!(
            Instant::now() < deadline,
            "no renewal within {RENEWED_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spki(cert: &CertificateDer<'_>) -> Vec<u8> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).unwrap();
    c.public_key().raw.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_svids_are_renewed_and_still_verify_with_openssl() {
    let mut agent = agent("4s");
    let dir = agent.dir.path().join("held");
    std::fs::create_dir_all(&dir).unwrap();
    let client = client_files(&agent, &dir);

    // The default: a new key for every SVID.
    let fresh = HeldKeySource::connect(Some(&agent.endpoint()), HeldKeyOptions::new(id("app")))
        .await
        .unwrap();
    let addr = serve(&fresh).await;
    let mut leaf = fresh.cell().load().chain()[0].clone();
    for round in 0..2 {
        let next = renewed(&fresh, &leaf).await;
        assert_ne!(spki(&next), spki(&leaf), "renewal {round} kept the key");
        served_leaf(&fresh, &dir.join(format!("fresh-{round}.pem")));
        s_client(addr, &client).await;
        leaf = next;
    }

    // The application's own key: renewed certificate, same key.
    let (key, pkcs8) = application_key();
    let mut options = HeldKeyOptions::new(id("app"));
    options.key = HeldKey::Kept(key);
    let kept = HeldKeySource::connect(Some(&agent.endpoint()), options)
        .await
        .unwrap();
    let first = kept.cell().load().chain()[0].clone();
    let next = renewed(&kept, &first).await;
    assert_eq!(spki(&next), spki(&first));
    let certified = served_leaf(&kept, &dir.join("kept.pem"));
    assert_eq!(certified, openssl_public_key(&dir, &pkcs8));
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csr_the_entry_does_not_allow_fails_with_the_agents_reason() {
    let mut agent = agent("1h");
    let other =
        HeldKeySource::connect(Some(&agent.endpoint()), HeldKeyOptions::new(id("payments")))
            .await
            .unwrap_err()
            .to_string();
    assert!(
        other.contains("not the SPIFFE ID of an entry for this caller")
            && other.contains("payments"),
        "{other}"
    );
    assert_eq!(other.lines().count(), 1, "{other}");

    let mut options = HeldKeyOptions::new(id("app"));
    options.dns_names = vec!["evil.example".into()];
    let dns = HeldKeySource::connect(Some(&agent.endpoint()), options)
        .await
        .unwrap_err()
        .to_string();
    assert!(dns.contains("DNS name evil.example"), "{dns}");
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_agent_is_away_the_current_svid_keeps_serving_until_renewal_resumes() {
    let mut agent = agent("6s");
    let dir = agent.dir.path().join("held");
    std::fs::create_dir_all(&dir).unwrap();
    let source = HeldKeySource::connect(Some(&agent.endpoint()), HeldKeyOptions::new(id("app")))
        .await
        .unwrap();
    let leaf = source.cell().load().chain()[0].clone();
    agent.stop();
    // Past the renewal point (half of 6 s) with no agent: renewals fail and are retried,
    // and the current SVID is still the one served.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(source.cell().load().chain()[0], leaf);
    agent.start();
    renewed(&source, &leaf).await;
    served_leaf(&source, &dir.join("after-outage.pem"));
    agent.stop();
}
