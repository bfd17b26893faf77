//! End-to-end: `keyward revoke` and `keyward crl`, checked with openssl and with
//! `keyward verify`, with and without an intermediate, and with the CA key on SoftHSM.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use tempfile::TempDir;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

/// Issues a service certificate named `name` into `dir/name`; returns (dir, serial).
fn issue(state: &Path, dir: &Path, name: &str) -> (PathBuf, String) {
    let out = dir.join(name);
    let serial = issue_named(state, name, &out);
    (out, serial)
}

/// (serial hex, reason code) of every entry of the DER CRL, and its CRL number.
fn crl_entries(der: &[u8]) -> (Vec<(String, Option<u8>)>, u64) {
    let (rest, crl) = CertificateRevocationList::from_der(der).expect("a DER CRL");
    assert!(rest.is_empty());
    let entries = crl
        .iter_revoked_certificates()
        .map(|r| (hex_upper(r.raw_serial()), r.reason_code().map(|(_, c)| c.0)))
        .collect();
    let number = crl
        .crl_number()
        .map(|n| u64::try_from(n).unwrap())
        .expect("cRLNumber");
    (entries, number)
}

fn hex_upper(raw: &[u8]) -> String {
    let mut s = raw;
    while s.len() > 1 && s[0] == 0 {
        s = &s[1..];
    }
    s.iter().map(|b| format!("{b:02X}")).collect()
}

/// Runs `openssl verify -crl_check` on `dir/cert.pem` with `crl`.
fn openssl_crl_check(dir: &Path, crl: &Path) -> std::process::Output {
    Command::new("openssl")
        .args(["verify", "-crl_check", "-CRLfile"])
        .arg(crl)
        .arg("-CAfile")
        .arg(dir.join("ca.pem"))
        .arg("-untrusted")
        .arg(dir.join("chain.pem"))
        .arg(dir.join("cert.pem"))
        .output()
        .expect("openssl")
}

/// The CA certificates above a certificate issued into `dir`: its intermediates
/// (chain.pem without the leaf) and the root, as one PEM file.
fn issuer_chain(dir: &Path) -> PathBuf {
    let chain =
        keyward_core::check::pem_to_ders(&std::fs::read(dir.join("chain.pem")).unwrap()).unwrap();
    let roots =
        keyward_core::check::pem_to_ders(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap();
    let all: Vec<Vec<u8>> = chain[1..].iter().chain(&roots).cloned().collect();
    let path = dir.join("issuers.pem");
    std::fs::write(&path, keyward_core::check::ders_to_pem(&all)).unwrap();
    path
}

/// Two certificates, one revoked (keyCompromise): the CRL lists exactly that one,
/// openssl accepts the CRL and rejects only the revoked certificate, so does
/// `keyward verify`, `status` marks it, and `keyward crl` re-signs with a higher number.
fn revoke_one_of_two(dir: &Path, state: &Path) {
    let (a, serial_a) = issue(state, dir, "alpha");
    let (b, serial_b) = issue(state, dir, "beta");
    let out = keyward_ok(
        state,
        &["revoke", "--serial", &serial_a, "--reason", "keyCompromise"],
    );
    assert!(
        out.contains(&serial_a) && out.contains("keyCompromise"),
        "{out}"
    );
    let crl_der = state.join("crl.der");
    let crl_pem = state.join("crl.pem");
    let (entries, number) = crl_entries(&std::fs::read(&crl_der).unwrap());
    assert_eq!(
        entries,
        vec![(serial_a.clone(), Some(1))],
        "exactly the revoked serial, keyCompromise"
    );
    assert_eq!(number, 1);
    // The PEM file is the same CRL.
    let pem_der = pem::parse(std::fs::read(&crl_pem).unwrap()).unwrap();
    assert_eq!(pem_der.tag(), "X509 CRL");
    assert_eq!(
        pem_der.contents(),
        std::fs::read(&crl_der).unwrap().as_slice()
    );

    let issuers = issuer_chain(&a);
    let o = Command::new("openssl")
        .args(["crl", "-noout", "-verify", "-in"])
        .arg(&crl_pem)
        .arg("-CAfile")
        .arg(&issuers)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success() && text.contains("verify OK"),
        "openssl crl -verify: {text}"
    );

    let o = openssl_crl_check(&a, &crl_pem);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !o.status.success() && text.contains("certificate revoked"),
        "revoked cert: {text}"
    );
    let o = openssl_crl_check(&b, &crl_pem);
    assert!(
        o.status.success(),
        "the other certificate: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    let line = keyward_fails(
        state,
        &["verify", "--cert", a.join("cert.pem").to_str().unwrap()],
        "revoked",
    );
    assert!(
        line.contains(&serial_a) && line.contains("keyCompromise"),
        "{line}"
    );
    keyward_ok(
        state,
        &["verify", "--cert", b.join("chain.pem").to_str().unwrap()],
    );

    let status: serde_json::Value =
        serde_json::from_str(&keyward_ok(state, &["status", "--json"])).unwrap();
    let certs = status["certificates"].as_array().unwrap();
    let revoked = |serial: &str| {
        certs
            .iter()
            .find(|c| c["serial_hex"] == serial)
            .map(|c| c["revoked"]["reason"].as_str().map(str::to_string))
            .expect("listed")
    };
    assert_eq!(revoked(&serial_a).as_deref(), Some("keyCompromise"));
    assert_eq!(revoked(&serial_b), None);
    let table = keyward_ok(state, &["status"]);
    let line_a = table.lines().find(|l| l.contains(&serial_a)).unwrap();
    assert!(line_a.contains("REVOKED (keyCompromise"), "{table}");
    assert!(
        !table
            .lines()
            .find(|l| l.contains(&serial_b))
            .unwrap()
            .contains("REVOKED")
    );

    let out = keyward_ok(state, &["crl", "--next-update", "3d"]);
    assert!(out.contains(crl_der.to_str().unwrap()), "{out}");
    let (entries, number) = crl_entries(&std::fs::read(&crl_der).unwrap());
    assert_eq!(entries, vec![(serial_a, Some(1))]);
    assert_eq!(number, 2, "every new CRL takes the next number");
    let o = openssl_crl_check(&b, &crl_pem);
    assert!(o.status.success());
}

#[test]
fn revoked_certificate_is_listed_and_rejected_under_a_root() {
    let tmp = TempDir::new().unwrap();
    let state = root_ca(tmp.path(), &software_key(tmp.path()), "ecdsa-p256");
    revoke_one_of_two(tmp.path(), &state);
}

#[test]
fn revoked_certificate_is_listed_and_rejected_under_an_intermediate() {
    let tmp = TempDir::new().unwrap();
    let state = root_ca(tmp.path(), &software_key(tmp.path()), "ecdsa-p384");
    let inter = format!("file:{}/keys/inter.pem", tmp.path().display());
    common::generate_key(&state, &inter, "ed25519");
    keyward_ok(&state, &["ca", "intermediate", "--key", &inter]);
    revoke_one_of_two(tmp.path(), &state);
    // The CRL is signed by the intermediate: it names it as issuer.
    let text = openssl(&[
        "crl",
        "-noout",
        "-issuer",
        "-in",
        state.join("crl.pem").to_str().unwrap(),
    ]);
    assert!(text.contains("keyward intermediate CA"), "{text}");
}

#[test]
fn crl_signed_by_a_softhsm_root_key_is_accepted_by_openssl() {
    let module = required_env("KEYWARD_TEST_PKCS11_MODULE");
    let tmp = TempDir::new().unwrap();
    let (token, pin) = softhsm_token(tmp.path(), "kw-crl");
    let key = format!(
        "pkcs11:token={token};object=crl-root?module-path={module}&pin-source=file:{}",
        pin.display()
    );
    let state = root_ca(tmp.path(), &key, "ecdsa-p256");
    revoke_one_of_two(tmp.path(), &state);
}

#[test]
fn bad_revocations_change_nothing() {
    let tmp = TempDir::new().unwrap();
    let state = root_ca(tmp.path(), &software_key(tmp.path()), "ecdsa-p256");
    let (_, serial) = issue(&state, tmp.path(), "svc");
    let before = snapshot(&state);
    keyward_fails(
        &state,
        &["revoke", "--serial", "0123ABCD"],
        "no certificate with serial 0123ABCD",
    );
    keyward_fails(
        &state,
        &["revoke", "--serial", "not-hex"],
        "not hexadecimal",
    );
    keyward_fails(
        &state,
        &["revoke", "--serial", &serial, "--reason", "lostIt"],
        "unknown revocation reason 'lostIt'",
    );
    keyward_fails(
        &state,
        &["revoke", "--serial", &serial, "--next-update", "0d"],
        "invalid duration",
    );
    assert_eq!(
        snapshot(&state),
        before,
        "failed revocations changed the state directory"
    );

    // kebab-case and lower-case serials are accepted
    keyward_ok(
        &state,
        &[
            "revoke",
            "--serial",
            &serial.to_lowercase(),
            "--reason",
            "cessation-of-operation",
        ],
    );
    let (entries, _) = crl_entries(&std::fs::read(state.join("crl.der")).unwrap());
    assert_eq!(entries, vec![(serial.clone(), Some(5))]);
    let after = snapshot(&state);
    let line = keyward_fails(
        &state,
        &["revoke", "--serial", &serial, "--reason", "superseded"],
        "already revoked at",
    );
    assert!(line.contains("cessationOfOperation"), "{line}");
    assert_eq!(
        snapshot(&state),
        after,
        "a second revocation changed the state directory"
    );
}

#[test]
fn verify_rejects_a_crl_that_does_not_verify_or_is_past_next_update() {
    let tmp = TempDir::new().unwrap();
    let state = root_ca(tmp.path(), &software_key(tmp.path()), "ecdsa-p256");
    let (svc, _) = issue(&state, tmp.path(), "svc");
    let cert = svc.join("cert.pem");
    let cert = cert.to_str().unwrap();
    keyward_ok(&state, &["crl"]);
    keyward_ok(&state, &["verify", "--cert", cert]);

    // One bit of the signature flipped.
    let crl_der = state.join("crl.der");
    let good = std::fs::read(&crl_der).unwrap();
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    std::fs::write(&crl_der, &bad).unwrap();
    keyward_fails(
        &state,
        &["verify", "--cert", cert],
        "does not verify under the key of its issuer",
    );
    std::fs::write(&crl_der, &good).unwrap();

    // A CRL valid for one second goes stale.
    keyward_ok(&state, &["crl", "--next-update", "1s"]);
    wait_until_fails(&state, cert);
    keyward_fails(&state, &["verify", "--cert", cert], "past its nextUpdate");
    keyward_ok(&state, &["crl"]);
    keyward_ok(&state, &["verify", "--cert", cert]);
}

/// Waits (at most 20 s) until `keyward verify` rejects `cert`.
fn wait_until_fails(state: &Path, cert: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while keyward(state, &["verify", "--cert", cert]).status.success() {
        assert!(
            std::time::Instant::now() < deadline,
            "the CRL never went stale"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
