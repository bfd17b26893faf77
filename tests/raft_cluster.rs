//! Evidence for the fleet's test infrastructure (issue 18): the 3-node OpenBao raft
//! cluster scripts/with-backends.sh starts signs a node's intermediate through a standby
//! with that node's AppRole token, signs again through a survivor after its leader is
//! SIGKILLed (the time that takes is printed), takes the killed node back as a voter,
//! and lists an intermediate the operator revoked in every node's CRL.

mod agent_common;
mod common;
mod raft_common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use agent_common::wait_for;
use raft_common::{Answer, RaftCluster};
use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData};
use x509_parser::prelude::{FromDer, X509Certificate};

/// A new P-256 key and a CSR for it with common name `cn`, as PEM.
fn csr(cn: &str) -> (KeyPair, String) {
    let key = KeyPair::generate().expect("generate a key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CSR parameters");
    params.distinguished_name.push(DnType::CommonName, cn);
    let pem = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .expect("CSR");
    (key, pem)
}

/// `pki/root/sign-intermediate` of `csr` through `node` with `token`.
fn sign(cluster: &RaftCluster, node: usize, token: &str, csr: &str) -> Answer {
    let body = serde_json::json!({"csr": csr, "ttl": "1h"}).to_string();
    cluster.call(
        node,
        "POST",
        "pki/root/sign-intermediate",
        Some(token),
        Some(&body),
    )
}

/// The first certificate of the PEM text at `field` of the answer's `data`, as DER.
fn der_at(answer: &Answer, field: &str) -> Vec<u8> {
    let json = answer.json();
    let pem = json["data"][field]
        .as_str()
        .unwrap_or_else(|| panic!("no data.{field} in {}", answer.text()));
    keyward_core::check::pem_to_ders(pem.as_bytes()).expect("PEM certificate")[0].clone()
}

/// The root CA certificate (`pki/cert/ca`, unauthenticated) as `node` serves it.
fn root_ca(cluster: &RaftCluster, node: usize) -> Vec<u8> {
    let answer = cluster.call(node, "GET", "pki/cert/ca", None, None);
    assert_eq!(
        answer.status,
        200,
        "pki/cert/ca on node {node}: {}",
        answer.text()
    );
    der_at(&answer, "certificate")
}

/// Checks a signed intermediate (a CA, for `key`, signed by `root`) and returns its
/// serial number as OpenBao names it (`aa:bb:...`) and as DER bytes.
fn check_intermediate(answer: &Answer, key: &KeyPair, root: &[u8]) -> (String, Vec<u8>) {
    assert_eq!(answer.status, 200, "sign-intermediate: {}", answer.text());
    let der = der_at(answer, "certificate");
    let (_, cert) = X509Certificate::from_der(&der).expect("intermediate certificate");
    let (_, root) = X509Certificate::from_der(root).expect("root certificate");
    assert!(cert.is_ca(), "the signed certificate is a CA");
    assert_eq!(
        cert.public_key().raw,
        key.subject_public_key_info(),
        "the signed certificate carries the CSR's key"
    );
    cert.verify_signature(Some(root.public_key()))
        .expect("the intermediate chains to the root");
    let name = answer.json()["data"]["serial_number"]
        .as_str()
        .expect("data.serial_number")
        .to_string();
    (name, cert.raw_serial().to_vec())
}

/// The serial numbers `node`'s CRL (`pki/crl`, DER) lists.
fn crl_serials(cluster: &RaftCluster, node: usize) -> BTreeSet<Vec<u8>> {
    let answer = cluster.call(node, "GET", "pki/crl", None, None);
    assert_eq!(
        answer.status,
        200,
        "pki/crl on node {node}: {}",
        answer.text()
    );
    let (_, crl) = x509_parser::parse_x509_crl(&answer.body).expect("a DER CRL");
    crl.iter_revoked_certificates()
        .map(|r| r.raw_serial().to_vec())
        .collect()
}

#[test]
fn raft_cluster_signs_through_a_leader_failover_and_revokes() {
    let cluster = RaftCluster::take();
    let leader = cluster.wait_leader(None);
    let standby = leader % 3 + 1;
    let token = cluster.approle_login(standby, standby);
    let root = root_ca(&cluster, standby);

    // A standby forwards the signing to the leader.
    let (first_key, first_csr) = csr("node intermediate before the failover");
    let answer = sign(&cluster, standby, &token, &first_csr);
    let (first_name, first_serial) = check_intermediate(&answer, &first_key, &root);

    // A node's token signs but cannot revoke: that is the operator's (root token).
    let revoke = serde_json::json!({ "serial_number": first_name }).to_string();
    let denied = cluster.call(standby, "POST", "pki/revoke", Some(&token), Some(&revoke));
    assert_eq!(
        denied.status,
        403,
        "a node token revoking: {}",
        denied.text()
    );

    cluster.kill(leader);
    let killed_at = Instant::now();
    let survivors = [leader % 3 + 1, (leader + 1) % 3 + 1];
    let (second_key, second_csr) = csr("node intermediate after the failover");
    let mut answers_meanwhile = BTreeSet::new();
    let (through, answer) = 'signed: loop {
        for node in survivors {
            let answer = sign(&cluster, node, &token, &second_csr);
            if answer.status == 200 {
                break 'signed (node, answer);
            }
            answers_meanwhile.insert((node, answer.status, answer.text()));
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(120),
            "no survivor signed within 120 s of the leader's SIGKILL; answers: {answers_meanwhile:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "raft failover: sign-intermediate through node {through} succeeded {:.1} s after \
         SIGKILL of leader node {leader}; answers meanwhile: {answers_meanwhile:?}",
        killed_at.elapsed().as_secs_f64()
    );
    check_intermediate(&answer, &second_key, &root);
    let new_leader = cluster.wait_leader(Some(leader));
    assert!(survivors.contains(&new_leader), "a survivor leads");

    // The killed node comes back sealed; unsealed, it rejoins as a voter and serves reads.
    cluster.restart(leader);
    cluster.wait_rejoined(leader);
    assert!(cluster.unsealed(leader), "node {leader} unsealed");
    let peers = cluster.peers(leader);
    assert_eq!(peers.len(), 3, "three raft peers: {peers:?}");
    assert!(
        peers.iter().all(|(_, voter)| *voter),
        "all voters: {peers:?}"
    );
    assert!(
        peers.iter().any(|(id, _)| *id == format!("node-{leader}")),
        "node {leader} is a peer: {peers:?}"
    );
    assert_eq!(
        root_ca(&cluster, leader),
        root,
        "node {leader} serves the root"
    );

    // The operator revokes the first intermediate; every node's CRL lists it.
    let revoked = cluster.root_call(leader, "POST", "pki/revoke", Some(&revoke));
    assert_eq!(revoked.status, 200, "revoke: {}", revoked.text());
    for node in 1..=3 {
        wait_for(
            &format!("node {node}'s CRL listing the revoked intermediate"),
            Duration::from_secs(30),
            || crl_serials(&cluster, node).contains(&first_serial),
        );
    }
}
