//! Chain verification: good chains, wrong issuers, expiry, and certificates in roles
//! they may not play.

mod common;

use std::time::Duration;

use common::*;
use keyward_core::issuance::{self, CaIssuer};
use keyward_core::{Algorithm, check};
use rcgen::{
    CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData,
};
use time::OffsetDateTime;

const P256: Algorithm = Algorithm::EcdsaP256Sha256;

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

struct Pki {
    root: CaIssuer,
    int: CaIssuer,
    leaf: Vec<u8>,
}

async fn pki() -> Pki {
    let root = root(P256, "CN=Chain Root", issuance::DEFAULT_ROOT_VALIDITY).await;
    let int = intermediate(&root, P256, "CN=Chain Intermediate").await;
    let (leaf, _) = service(&int, P256, &profile("leaf.example", &[])).await;
    Pki {
        root,
        int,
        leaf: leaf.der,
    }
}

fn root_der(p: &Pki) -> Vec<u8> {
    p.root.certificate_der().to_vec()
}

#[tokio::test]
async fn good_chain_returns_the_path_leaf_first() {
    let p = pki().await;
    let path = check::verify_chain(
        &p.leaf,
        &[p.int.certificate_der().to_vec()],
        &[root_der(&p)],
        now(),
    )
    .unwrap();
    let subjects: Vec<_> = path.iter().map(|s| s.subject.as_str()).collect();
    assert_eq!(
        subjects,
        ["CN=leaf.example", "CN=Chain Intermediate", "CN=Chain Root"]
    );
    assert!(!path[0].is_ca && path[1].is_ca && path[2].is_ca);
    // Extra, unrelated certificates in the chain do no harm; the root may be there too.
    let (other, _) = service(&p.root, P256, &profile("other.example", &[])).await;
    check::verify_chain(
        &p.leaf,
        &[other.der, p.int.certificate_der().to_vec(), root_der(&p)],
        &[root_der(&p)],
        now(),
    )
    .unwrap();
}

#[tokio::test]
async fn leaf_directly_under_the_root_and_a_trusted_root_alone() {
    let p = pki().await;
    let (leaf, _) = service(&p.root, P256, &profile("direct.example", &[])).await;
    assert_eq!(
        check::verify_chain(&leaf.der, &[], &[root_der(&p)], now())
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        check::verify_chain(&root_der(&p), &[], &[root_der(&p)], now())
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn missing_intermediate_names_the_issuer() {
    let p = pki().await;
    assert_err(
        check::verify_chain(&p.leaf, &[], &[root_der(&p)], now()),
        "the issuer of 'CN=leaf.example' ('CN=Chain Intermediate') is neither in the chain nor in the trust bundle",
    );
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let p = pki().await;
    // Another CA altogether.
    let other = root(P256, "CN=Other Root", issuance::DEFAULT_ROOT_VALIDITY).await;
    assert_err(
        check::verify_chain(
            &p.leaf,
            &[p.int.certificate_der().to_vec()],
            &[other.certificate_der().to_vec()],
            now(),
        ),
        "'CN=Chain Intermediate' ('CN=Chain Root') is neither in the chain nor in the trust bundle",
    );
    // A root with the same name and another key: the signature gives it away.
    let twin = root(P256, "CN=Chain Root", issuance::DEFAULT_ROOT_VALIDITY).await;
    assert_err(
        check::verify_chain(
            &p.leaf,
            &[p.int.certificate_der().to_vec()],
            &[twin.certificate_der().to_vec()],
            now(),
        ),
        "the signature of 'CN=Chain Intermediate' does not verify under the key of 'CN=Chain Root'",
    );
}

#[tokio::test]
async fn expired_and_not_yet_valid_certificates_are_refused() {
    let p = pki().await;
    let chain = [p.int.certificate_der().to_vec()];
    let leaf = check::summarize(&p.leaf).unwrap();
    assert_err(
        check::verify_chain(
            &p.leaf,
            &chain,
            &[root_der(&p)],
            leaf.not_after + time::Duration::days(1),
        ),
        "'CN=leaf.example' expired on",
    );
    assert_err(
        check::verify_chain(
            &p.leaf,
            &chain,
            &[root_der(&p)],
            leaf.not_before - time::Duration::days(1),
        ),
        "'CN=leaf.example' is not valid before",
    );
}

#[tokio::test]
async fn a_leaf_used_as_an_issuer_is_refused() {
    let p = pki().await;
    // The leaf's key is an rcgen key pair, so rcgen can sign with it.
    let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = p
        .int
        .issue_service(
            &kp.subject_public_key_info(),
            &profile("leaf2.example", &[]),
        )
        .await
        .unwrap();
    let issuer = Issuer::from_ca_cert_der(&leaf.der.as_slice().into(), &kp).unwrap();
    let child_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(vec!["child.example".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "child.example");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let child = params.signed_by(&child_key, &issuer).unwrap();
    assert_err(
        check::verify_chain(
            child.der(),
            &[leaf.der, p.int.certificate_der().to_vec()],
            &[root_der(&p)],
            now(),
        ),
        "'CN=leaf2.example' is not a CA (basicConstraints cA is not set) but issued 'CN=child.example'",
    );
}

#[tokio::test]
async fn a_ca_certificate_is_not_a_leaf() {
    let p = pki().await;
    assert_err(
        check::verify_chain(p.int.certificate_der(), &[], &[root_der(&p)], now()),
        "'CN=Chain Intermediate' is a CA certificate, not a leaf",
    );
}

#[tokio::test]
async fn path_length_and_eku_are_enforced() {
    let p = pki().await;
    // A second intermediate under the pathLen-0 intermediate, made with rcgen.
    let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let int = {
        let root = &p.root;
        root.issue_intermediate(
            &kp.subject_public_key_info(),
            "CN=Int A",
            Duration::from_secs(DAY),
        )
        .await
        .unwrap()
    };
    let int_issuer = Issuer::from_ca_cert_der(&int.der.as_slice().into(), &kp).unwrap();
    let sub_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut sub = CertificateParams::default();
    sub.distinguished_name.push(DnType::CommonName, "Int B");
    sub.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    sub.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let sub_cert = sub.signed_by(&sub_key, &int_issuer).unwrap();
    let sub_issuer = Issuer::new(sub, &sub_key);
    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut leaf = CertificateParams::new(vec!["deep.example".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "deep.example");
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &sub_issuer).unwrap();
    assert_err(
        check::verify_chain(
            leaf_cert.der(),
            &[sub_cert.der().to_vec(), int.der.clone()],
            &[root_der(&p)],
            now(),
        ),
        "'CN=Int A' allows 0 intermediate CA(s) below it (pathLenConstraint) but the chain has 1",
    );
    // A leaf without extendedKeyUsage, straight under Int A.
    let mut no_eku = CertificateParams::new(vec!["noeku.example".to_string()]).unwrap();
    no_eku
        .distinguished_name
        .push(DnType::CommonName, "noeku.example");
    let no_eku = no_eku.signed_by(&leaf_key, &int_issuer).unwrap();
    assert_err(
        check::verify_chain(no_eku.der(), &[int.der], &[root_der(&p)], now()),
        "'CN=noeku.example' has no extendedKeyUsage extension",
    );
}

#[test]
fn an_empty_trust_bundle_is_an_input_error() {
    let der = rcgen::generate_simple_self_signed(vec!["a.example".into()])
        .unwrap()
        .cert
        .der()
        .to_vec();
    assert_err(
        check::verify_chain(&der, &[], &[], now()),
        "the trust bundle is empty",
    );
}
