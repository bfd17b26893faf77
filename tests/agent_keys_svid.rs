//! End-to-end: `SignX509SVID` (`keyward crypto svid-from-csr`), an X.509-SVID for a key
//! the workload keeps. openssl makes the key and the CSR; the SVID the agent returns
//! verifies with openssl against the bundle it returns, names the entry's SPIFFE ID and
//! carries exactly the CSR's public key. Refused, each with one clear line and nothing
//! on stdout: a CSR for another SPIFFE ID, with CA:TRUE, with keyCertSign, with a DNS
//! name the entry lacks, with a signature that does not verify, and any CSR from
//! uid 65534 (whose own entry has another SPIFFE ID).

mod agent_common;
mod common;
mod keys_common;

use std::path::Path;

use agent_common::*;
use common::{openssl, openssl_csr};
use keys_common::*;
use tempfile::TempDir;

/// The SPIFFE ID of the test entry for root.
fn app_id() -> String {
    format!("spiffe://{TRUST_DOMAIN}/app")
}

/// An agent with an entry for root (`app`, DNS name app.internal) and one for 65534.
fn agent() -> Agent {
    let entries = format!(
        "{}\n{}",
        entry("app", 0, "1h", "dns = [\"app.internal\"]"),
        entry("nobody", NOBODY, "1h", "")
    );
    let mut agent = Agent::new(&entries);
    agent.start();
    agent
}

/// A new key and CSR in `dir` named `name`, with `subjectAltName=SAN` and any other
/// `-addext` values; returns the CSR's path.
fn csr(dir: &Path, name: &str, san: &str, more: &[&str]) -> std::path::PathBuf {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let san = format!("subjectAltName={san}");
    let mut extra = vec!["-addext", &san];
    for m in more {
        extra.extend(["-addext", m]);
    }
    openssl_csr(&key, &csr, "/CN=app", &extra);
    csr
}

fn svid_from_csr(uid: u32, agent: &Agent, csr: &Path, needle: &str) {
    let input = std::fs::read(csr).unwrap();
    refused(uid, agent, &["svid-from-csr"], &input, needle);
}

#[test]
fn an_svid_for_the_callers_own_key_verifies_and_carries_that_key() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut agent = agent();
    let request = csr(
        dir,
        "app",
        &format!("URI:{},DNS:app.internal", app_id()),
        &[],
    );
    let bundle = dir.join("bundle.pem");
    let svid = crypto(
        &agent,
        &["svid-from-csr", "--bundle-out", bundle.to_str().unwrap()],
        &std::fs::read(&request).unwrap(),
    );
    let cert = dir.join("svid.pem");
    std::fs::write(&cert, &svid).unwrap();
    let (c, b) = (cert.to_str().unwrap(), bundle.to_str().unwrap());
    openssl(&["verify", "-x509_strict", "-CAfile", b, "-untrusted", c, c]);
    let leaf = keyward_core::check::pem_to_ders(&svid).unwrap();
    assert_eq!(uri_sans(&leaf[0]), vec![app_id()]);
    let key = dir.join("app.key");
    let certified = openssl(&["x509", "-in", c, "-noout", "-pubkey"]);
    let kept = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    assert_eq!(certified, kept, "the SVID carries another key");
    let text = openssl(&["x509", "-in", c, "-noout", "-text"]);
    assert!(
        text.contains("CA:FALSE") && !text.contains("Certificate Sign"),
        "{text}"
    );
    let audit = std::fs::read_to_string(agent.state.join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"op\":\"sign-x509-svid\""), "{audit}");
    agent.stop();
}

#[test]
fn csrs_asking_for_more_than_the_entry_are_refused() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut agent = agent();
    let other = csr(
        dir,
        "other",
        &format!("URI:spiffe://{TRUST_DOMAIN}/payments"),
        &[],
    );
    svid_from_csr(
        0,
        &agent,
        &other,
        "not the SPIFFE ID of an entry for this caller",
    );
    let ca = csr(
        dir,
        "ca",
        &format!("URI:{}", app_id()),
        &["basicConstraints=critical,CA:TRUE"],
    );
    svid_from_csr(0, &agent, &ca, "CA:TRUE");
    let signer = csr(
        dir,
        "signer",
        &format!("URI:{}", app_id()),
        &["keyUsage=critical,digitalSignature,keyCertSign"],
    );
    svid_from_csr(0, &agent, &signer, "keyCertSign");
    let dns = csr(
        dir,
        "dns",
        &format!("URI:{},DNS:evil.example", app_id()),
        &[],
    );
    svid_from_csr(0, &agent, &dns, "DNS name evil.example");
    let two = csr(
        dir,
        "two",
        &format!("URI:{},URI:{}/x", app_id(), app_id()),
        &[],
    );
    svid_from_csr(0, &agent, &two, "exactly one");

    // A CSR whose signature is not its key's: no proof of possession.
    let good = csr(dir, "good", &format!("URI:{}", app_id()), &[]);
    let der_path = dir.join("good.der");
    let (g, d) = (good.to_str().unwrap(), der_path.to_str().unwrap());
    openssl(&["req", "-in", g, "-outform", "DER", "-out", d]);
    let mut der = std::fs::read(&der_path).unwrap();
    let last = der.len() - 2;
    der[last] ^= 0x55;
    refused(0, &agent, &["svid-from-csr"], &der, "proof of possession");

    // uid 65534 has an entry, for another SPIFFE ID: root's CSR gets it nothing.
    svid_from_csr(NOBODY, &agent, &good, "PermissionDenied");
    agent.stop();
}
