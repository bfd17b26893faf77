//! Vault PKI as the upstream authority: an intermediate signed by OpenBao's PKI root,
//! a service certificate issued from it, and both verified against OpenBao's root alone.
#![forbid(unsafe_code)]

mod common;

use std::process::Command;
use std::time::Duration;

use keyward_core::Error;
use keyward_vault::{VaultPkiUpstream, sign_intermediate_upstream};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData,
};
use x509_parser::prelude::{FromDer, X509Certificate};

fn intermediate_csr(cn: &str) -> (KeyPair, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    (key, csr)
}

fn pem_of(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// OpenBao's root certificate as it publishes it.
async fn openbao_root_der() -> Vec<u8> {
    let v = common::Admin::shared().get("pki/cert/ca").await;
    pem::parse(v["data"]["certificate"].as_str().unwrap())
        .unwrap()
        .into_contents()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intermediate_signed_by_openbao_pki_chains_to_its_root() {
    let upstream = VaultPkiUpstream::parse("vault-pki:pki?role=agents").unwrap();
    let (key, csr) = intermediate_csr("ignored: common_name wins");
    let chain = sign_intermediate_upstream(
        &common::root_settings(),
        &upstream.mount,
        &csr,
        "keyward node-1 intermediate",
        Duration::from_secs(30 * 24 * 3600),
    )
    .await
    .unwrap_or_else(|e| panic!("{}", keyward_core::chain_line(&e)));

    // The bundle to serve is OpenBao's root, at the top of the chain.
    let root = openbao_root_der().await;
    assert_eq!(chain.root_der, root);
    assert_eq!(chain.chain_der.last(), Some(&root));

    // The intermediate: our key, a CA, named as asked, signed by the root.
    let inter_der = pem::parse(&chain.certificate_pem).unwrap().into_contents();
    let (_, inter) = X509Certificate::from_der(&inter_der).unwrap();
    let (_, root_cert) = X509Certificate::from_der(&root).unwrap();
    assert!(inter.is_ca());
    assert_eq!(inter.public_key().raw, &key.subject_public_key_info()[..]);
    assert_eq!(
        inter.subject().to_string(),
        "CN=keyward node-1 intermediate"
    );
    inter
        .verify_signature(Some(root_cert.public_key()))
        .unwrap();

    // A service certificate issued from the intermediate verifies against the root alone.
    let issuer = Issuer::from_ca_cert_pem(&chain.certificate_pem, &key).unwrap();
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = CertificateParams::new(vec!["api.internal".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let root_pem = write("root.pem", &pem_of(&root));
    let inter_pem = write("intermediate.pem", &chain.certificate_pem);
    let leaf_pem = write("leaf.pem", &leaf.pem());
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&root_pem)
        .arg("-untrusted")
        .arg(&inter_pem)
        .arg(&leaf_pem)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_common_name_takes_the_csr_subject() {
    let (_key, csr) = intermediate_csr("keyward node-2 intermediate");
    let chain = sign_intermediate_upstream(
        &common::root_settings(),
        "pki",
        &csr,
        "",
        Duration::from_secs(24 * 3600),
    )
    .await
    .unwrap();
    let der = pem::parse(&chain.certificate_pem).unwrap().into_contents();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(cert.subject().to_string(), "CN=keyward node-2 intermediate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_named() {
    let (_key, csr) = intermediate_csr("x");
    let ttl = Duration::from_secs(3600);
    let err = sign_intermediate_upstream(&common::root_settings(), "no-such-pki", &csr, "x", ttl)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-pki"), "{err}");

    let err = sign_intermediate_upstream(&common::root_settings(), "pki", "not a csr", "x", ttl)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");

    // A token without a policy on the PKI path: permission denied naming the path.
    let admin = common::Admin::shared();
    let token = admin.token(&["default"], "1h").await;
    let settings = keyward_vault::VaultSettings::new(
        &common::addr(),
        keyward_vault::VaultAuth::Token(zeroize::Zeroizing::new(token)),
    )
    .unwrap();
    let err = sign_intermediate_upstream(&settings, "pki", &csr, "x", ttl)
        .await
        .unwrap_err();
    let line = err.to_string();
    assert!(
        line.contains("permission denied") && line.contains("pki/root/sign-intermediate"),
        "{line}"
    );
}
