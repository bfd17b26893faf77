//! The CA issuer itself: what it refuses to be built from, what it refuses to issue,
//! batches, the standalone post-issuance check, and CSRs for upstream signing.

mod common;

use std::time::Duration;

use common::*;
use keyward_core::issuance::{self, CaIssuer};
use keyward_core::{Algorithm, Error, RsaBits, check};
use time::OffsetDateTime;

const P256: Algorithm = Algorithm::EcdsaP256Sha256;

#[tokio::test]
async fn ca_issuer_refuses_non_ca_certificates_foreign_keys_and_missing_chains() {
    let r = root(P256, "CN=Test Root", issuance::DEFAULT_ROOT_VALIDITY).await;
    let (leaf_key, _) = key(P256, "leaf");
    let leaf = r
        .issue_service(leaf_key.public_key_spki_der(), &profile("svc.example", &[]))
        .await
        .unwrap();
    assert_err(
        CaIssuer::new(leaf.der, vec![], leaf_key),
        "is not a CA certificate",
    );
    let (other, _) = key(P256, "other");
    assert_err(
        CaIssuer::new(r.certificate_der().to_vec(), vec![], other.clone()),
        "does not match the public key",
    );
    let i = intermediate(&r, P256, "CN=Int").await;
    assert_err(
        CaIssuer::new(i.certificate_der().to_vec(), vec![], i.signer().clone()),
        "no chain above it",
    );
    let (unrelated, _) = key(P256, "unrelated-root");
    let unrelated_root =
        issuance::self_signed_root(unrelated, "CN=Other Root", Duration::from_secs(DAY))
            .await
            .unwrap();
    assert_err(
        CaIssuer::new(
            i.certificate_der().to_vec(),
            vec![unrelated_root.der],
            i.signer().clone(),
        ),
        "CA chain",
    );
}

#[tokio::test]
async fn an_intermediate_cannot_issue_intermediates() {
    let r = root(P256, "CN=Test Root", issuance::DEFAULT_ROOT_VALIDITY).await;
    let i = intermediate(&r, P256, "CN=Int").await;
    let (k, _) = key(P256, "sub");
    assert_err(
        i.issue_intermediate(k.public_key_spki_der(), "CN=Sub", Duration::from_secs(DAY))
            .await,
        "pathLenConstraint 0",
    );
}

#[tokio::test]
async fn rsa_pss_keys_cannot_sign_certificates() {
    let (k, _) = key(Algorithm::RsaPssSha256(RsaBits::B2048), "pss");
    let e = assert_err(
        issuance::self_signed_root(k.clone(), "CN=PSS Root", Duration::from_secs(DAY)).await,
        "RSA-PSS",
    );
    assert!(matches!(e, keyward_core::Error::Unsupported(_)));
    assert_err(issuance::csr_pem(k, "CN=PSS Int").await, "RSA-PSS");
}

#[tokio::test]
async fn csr_for_an_intermediate_key_asks_for_a_ca() {
    let (k, _) = key(Algorithm::EcdsaP384Sha384, "upstream-int");
    let pem = issuance::csr_pem(k.clone(), "CN=keyward Intermediate,O=keyward")
        .await
        .unwrap();
    let req =
        rcgen::CertificateSigningRequestParams::from_pem(&pem).expect("CSR signature verifies");
    assert_eq!(
        req.params.is_ca,
        rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0))
    );
    assert_eq!(
        rcgen::PublicKeyData::der_bytes(&req.public_key).to_vec(),
        keyward_core::subject_public_key(k.public_key_spki_der()).unwrap()
    );
}

#[tokio::test]
async fn a_batch_is_issued_in_order_with_errors_kept_per_request() {
    let r = root(P256, "CN=Batch Root", issuance::DEFAULT_ROOT_VALIDITY).await;
    let keys: Vec<_> = (0..4).map(|n| key(P256, &format!("b{n}")).0).collect();
    let profiles = [
        profile("a.example", &[]),
        profile("b.example", &[]),
        profile("bad name", &[]),
        profile("d.example", &[]),
    ];
    let requests: Vec<(&[u8], &issuance::ServiceProfile)> = keys
        .iter()
        .zip(&profiles)
        .map(|(k, p)| (k.public_key_spki_der(), p))
        .collect();
    let results = r.issue_service_batch(&requests).await;
    assert_eq!(results.len(), 4);
    for (i, res) in results.into_iter().enumerate() {
        if i == 2 {
            assert_err(res, "at least one DNS, IP or URI name");
            continue;
        }
        let cert = res.unwrap();
        assert_eq!(cert.subject, format!("CN={}", profiles[i].common_name));
        let c = parse(&cert.der);
        assert_eq!(c.public_key().raw, keys[i].public_key_spki_der());
        check::verify_chain(
            &cert.der,
            &[],
            &[r.certificate_der().to_vec()],
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    }
}

#[tokio::test]
async fn the_post_issuance_check_on_its_own() {
    let r = root(P256, "CN=Check Root", issuance::DEFAULT_ROOT_VALIDITY).await;
    let (cert, _) = service(&r, P256, &profile("svc.example", &[])).await;
    issuance::verify_issued(&cert.der, &**r.signer()).unwrap();
    let (other, _) = key(P256, "not-the-ca");
    let e = assert_err(
        issuance::verify_issued(&cert.der, &*other),
        "does not verify under the public key of file:/nonexistent/keyward-tests/not-the-ca.pem",
    );
    assert!(matches!(e, Error::Verification(_)));
    assert_err(
        issuance::verify_issued(b"junk", &**r.signer()),
        "does not parse",
    );
}
