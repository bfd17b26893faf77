//! The agent's ACME server (RFC 8555) against real ACME clients nobody here wrote, with
//! the CA key in SoftHSM: EFF's certbot (PyPI, scripts/pyclients.sh) obtains, renews and
//! revokes a certificate in standalone http-01 mode; an identifier outside `[acme]
//! allowed` gets `rejectedIdentifier`; a request replayed with its nonce (sent by the
//! `acme`/`josepy` packages certbot ships, tests/clients/acme_replay.py) gets
//! `badNonce`; and the `instant-acme` crate proves tls-alpn-01 (which certbot lacks)
//! with a challenge certificate this test serves with rustls.
//!
//! Needs SOFTHSM2_CONF and KEYWARD_TEST_PYTHON: run through scripts/with-backends.sh.

mod acme_common;
mod agent_common;
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use acme_common::{python, revoked_serials, serial_of, serve_challenge, start};
use common::{keyward_ok, openssl};
use serde_json::Value;

#[test]
fn certbot_obtains_renews_and_revokes_a_certificate() {
    let mut acme = start();
    let out = acme.certonly("web.internal");
    assert!(
        out.status.success(),
        "certbot certonly failed:\n{}\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        acme.agent.log()
    );
    let (cert, chain) = (
        acme.live("web.internal", "cert.pem"),
        acme.live("web.internal", "chain.pem"),
    );
    acme.verify(&cert, &chain);
    let text = openssl(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(
        text.contains("DNS:web.internal") && !text.contains("DNS:other"),
        "{text}"
    );
    let first = serial_of(&cert);
    let first_copy = acme.agent.dir.path().join("first.pem");
    std::fs::copy(&cert, &first_copy).unwrap();

    acme.certbot_ok(&["renew", "--force-renewal", "--no-random-sleep-on-renew"]);
    acme.verify(&cert, &chain);
    let second = serial_of(&cert);
    assert_ne!(first, second, "renewal must issue a new certificate");

    // Both are in the inventory (`keyward status`) and the audit log.
    let status = keyward_ok(acme.state(), &["status"]);
    for serial in [&first, &second] {
        assert!(
            status.contains(serial.as_str()),
            "status lacks {serial}:\n{status}"
        );
    }
    assert!(status.contains("acme:web.internal"), "{status}");
    let audit = std::fs::read_to_string(acme.state().join("audit.jsonl")).unwrap();
    assert_eq!(
        audit.matches("\"kind\":\"acme\"").count(),
        2,
        "one issuance record per certificate"
    );

    // Revoked by the account, then the renewed one by its own key (`jwk`).
    acme.certbot_ok(&[
        "revoke",
        "--server",
        &acme.directory,
        "--cert-path",
        first_copy.to_str().unwrap(),
        "--no-delete-after-revoke",
    ]);
    let key = acme.live("web.internal", "privkey.pem");
    acme.certbot_ok(&[
        "revoke",
        "--server",
        &acme.directory,
        "--cert-path",
        cert.to_str().unwrap(),
        "--key-path",
        key.to_str().unwrap(),
        "--reason",
        "keycompromise",
        "--no-delete-after-revoke",
    ]);
    let crl = revoked_serials(acme.state());
    for serial in [&first, &second] {
        assert!(
            crl.contains(&format!("Serial Number: {serial}")),
            "CRL lacks {serial}:\n{crl}"
        );
    }
    assert!(crl.contains("Key Compromise"), "{crl}");
    let again = acme.certbot(&[
        "revoke",
        "--server",
        &acme.directory,
        "--cert-path",
        first_copy.to_str().unwrap(),
        "--no-delete-after-revoke",
    ]);
    assert!(!again.status.success());
    assert!(
        acme.certbot_log()
            .contains("urn:ietf:params:acme:error:alreadyRevoked")
    );
    acme.agent.stop();
}

#[test]
fn an_identifier_outside_allowed_is_rejected() {
    let mut acme = start();
    let out = acme.certonly("www.example.com");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("outside what this server may issue"), "{err}");
    let log = acme.certbot_log();
    assert!(
        log.contains("urn:ietf:params:acme:error:rejectedIdentifier"),
        "{log}"
    );
    let status = keyward_ok(acme.state(), &["status"]);
    assert!(
        !status.contains("acme:"),
        "nothing may be issued:\n{status}"
    );
    acme.agent.stop();
}

#[test]
fn a_replayed_nonce_gets_bad_nonce_and_a_fresh_one() {
    let mut acme = start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/acme_replay.py");
    let out = Command::new(python())
        .arg(script)
        .args([&acme.directory, acme.bundle.to_str().unwrap()])
        .output()
        .expect("run acme_replay.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["first_status"], 201, "{v}");
    assert_eq!(v["replayed_status"], 400, "{v}");
    assert_eq!(
        v["replayed_type"], "urn:ietf:params:acme:error:badNonce",
        "{v}"
    );
    assert_eq!(
        v["replayed_content_type"], "application/problem+json",
        "{v}"
    );
    assert_eq!(v["fresh_nonce"], true, "{v}");
    acme.agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_acme_obtains_a_certificate_with_tls_alpn_01() {
    use instant_acme::{
        Account, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
    };
    // Two rustls providers are in the test binary's tree; the challenge server names its
    // own, instant-acme's client takes the process default.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut acme = tokio::task::spawn_blocking(start).await.unwrap();
    let (account, _) = Account::builder_with_root(&acme.bundle)
        .unwrap()
        .create(
            &NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            acme.directory.clone(),
            None,
        )
        .await
        .expect("create the account");
    let ids = [Identifier::Dns("alpn.internal".into())];
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .expect("new order");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", acme.tls_port))
        .await
        .unwrap();
    let mut authorizations = order.authorizations();
    let mut authz = authorizations
        .next()
        .await
        .expect("one authorization")
        .unwrap();
    let mut challenge = authz
        .challenge(ChallengeType::TlsAlpn01)
        .expect("tls-alpn-01 offered");
    let digest = challenge.key_authorization().digest().as_ref().to_vec();
    let server = tokio::spawn(serve_challenge(listener, "alpn.internal", digest));
    challenge.set_ready().await.unwrap();
    let retries = RetryPolicy::new().timeout(Duration::from_secs(30));
    let ready = order.poll_ready(&retries).await.unwrap();
    assert_eq!(
        ready,
        OrderStatus::Ready,
        "agent log:\n{}",
        acme.agent.log()
    );
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["alpn.internal".to_string()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    order
        .finalize_csr(params.serialize_request(&key).unwrap().der())
        .await
        .unwrap();
    let chain = order.poll_certificate(&retries).await.unwrap();
    server.abort();
    let cert = acme.agent.dir.path().join("alpn.pem");
    std::fs::write(&cert, &chain).unwrap();
    acme.verify(&cert, &cert);
    let ders = keyward_core::check::pem_to_ders(chain.as_bytes()).unwrap();
    assert_eq!(
        keyward_core::check::summarize(&ders[0]).unwrap().sans,
        vec!["DNS:alpn.internal".to_string()]
    );
    tokio::task::spawn_blocking(move || acme.agent.stop())
        .await
        .unwrap();
}
