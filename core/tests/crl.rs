//! CRLs signed through the rcgen adapter: contents round-trip through the checks,
//! reasons parse in both spellings, and tampered or stale CRLs are refused.

mod common;

use std::time::Duration;

use common::*;
use keyward_core::issuance::{CrlContents, RevocationReason, RevokedCert};
use keyward_core::{Algorithm, RsaBits, check};
use time::OffsetDateTime;

fn contents(revoked: Vec<RevokedCert>) -> CrlContents {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    CrlContents {
        crl_number: 7,
        this_update: now,
        next_update: now + Duration::from_secs(86_400),
        revoked,
    }
}

fn entry(serial: &str, reason: RevocationReason) -> RevokedCert {
    RevokedCert {
        serial_hex: serial.into(),
        reason,
        revoked_at: OffsetDateTime::now_utc().replace_nanosecond(0).unwrap(),
    }
}

#[tokio::test]
async fn signed_crl_reads_back_for_every_issuer_algorithm() {
    for alg in [
        Algorithm::EcdsaP256Sha256,
        Algorithm::EcdsaP384Sha384,
        Algorithm::Ed25519,
        Algorithm::RsaPkcs1Sha256(RsaBits::B2048),
    ] {
        let ca = root(alg, "CN=CRL Root", Duration::from_secs(86_400 * 30)).await;
        let want = contents(vec![
            entry("7F01", RevocationReason::KeyCompromise),
            entry("0A", RevocationReason::PrivilegeWithdrawn),
        ]);
        let crl = ca.sign_crl(&want).await.unwrap();
        assert!(crl.pem().starts_with("-----BEGIN X509 CRL-----\n"));
        let got = check::check_crl(
            &crl.der,
            ca.certificate_der(),
            "test",
            OffsetDateTime::now_utc(),
        )
        .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(got, want, "{alg}");
    }
}

#[tokio::test]
async fn unspecified_reason_is_written_as_no_reason_code_and_reads_back() {
    let ca = root(
        Algorithm::EcdsaP256Sha256,
        "CN=CRL Root",
        Duration::from_secs(86_400),
    )
    .await;
    let want = contents(vec![entry("01", RevocationReason::Unspecified)]);
    let crl = ca.sign_crl(&want).await.unwrap();
    let got = check::read_crl(&crl.der, ca.certificate_der(), "test").unwrap();
    assert_eq!(got.revoked, want.revoked);
}

#[tokio::test]
async fn crl_from_an_intermediate_is_refused_under_the_root_and_when_stale_or_tampered() {
    let root_ca = root(
        Algorithm::EcdsaP256Sha256,
        "CN=CRL Root",
        Duration::from_secs(86_400 * 30),
    )
    .await;
    let inter = intermediate(&root_ca, Algorithm::Ed25519, "CN=CRL Issuing").await;
    let crl = inter.sign_crl(&contents(vec![])).await.unwrap();
    let now = OffsetDateTime::now_utc();
    check::check_crl(&crl.der, inter.certificate_der(), "c", now).unwrap();
    let e = check::check_crl(&crl.der, root_ca.certificate_der(), "c", now).unwrap_err();
    assert!(e.to_string().contains("not by 'CN=CRL Root'"), "{e}");
    let e = check::check_crl(
        &crl.der,
        inter.certificate_der(),
        "c",
        now + Duration::from_secs(2 * 86_400),
    )
    .unwrap_err();
    assert!(e.to_string().contains("past its nextUpdate"), "{e}");
    let mut bad = crl.der.clone();
    *bad.last_mut().unwrap() ^= 0x40;
    let e = check::check_crl(&bad, inter.certificate_der(), "c", now).unwrap_err();
    assert!(e.to_string().contains("does not verify"), "{e}");
}

#[test]
fn reasons_parse_in_rfc_and_kebab_case() {
    for (s, r, code) in [
        ("keyCompromise", RevocationReason::KeyCompromise, 1),
        ("key-compromise", RevocationReason::KeyCompromise, 1),
        ("caCompromise", RevocationReason::CaCompromise, 2),
        (
            "affiliation-changed",
            RevocationReason::AffiliationChanged,
            3,
        ),
        ("superseded", RevocationReason::Superseded, 4),
        (
            "cessationOfOperation",
            RevocationReason::CessationOfOperation,
            5,
        ),
        (
            "privilege-withdrawn",
            RevocationReason::PrivilegeWithdrawn,
            9,
        ),
        ("unspecified", RevocationReason::Unspecified, 0),
    ] {
        let parsed: RevocationReason = s.parse().unwrap();
        assert_eq!(parsed, r);
        assert_eq!(parsed.code(), code);
        assert_eq!(RevocationReason::from_code(code), Some(r));
    }
    for bad in ["KeyCompromise", "certificateHold", "", "key_compromise"] {
        let e = bad.parse::<RevocationReason>().unwrap_err();
        assert!(e.to_string().contains("unknown revocation reason"), "{e}");
    }
}
