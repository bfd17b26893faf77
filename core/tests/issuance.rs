//! Certificate profiles, serials, validity, and the inputs issuance refuses.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use keyward_core::issuance::{self, ServiceProfile};
use keyward_core::{Algorithm, RsaBits, check};
use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_PKCS1_SHA256WITHRSA, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519,
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_KEY_USAGE,
    OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};

const P256: Algorithm = Algorithm::EcdsaP256Sha256;

fn ski(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<u8> {
    match cert
        .get_extension_unique(&OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)
        .unwrap()
        .expect("SKI present")
        .parsed_extension()
    {
        ParsedExtension::SubjectKeyIdentifier(k) => k.0.to_vec(),
        other => panic!("{other:?}"),
    }
}

fn aki(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<u8> {
    match cert
        .get_extension_unique(&OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
        .unwrap()
        .expect("AKI present")
        .parsed_extension()
    {
        ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().unwrap().0.to_vec(),
        other => panic!("{other:?}"),
    }
}

fn critical(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    oid: &x509_parser::oid_registry::Oid<'_>,
) -> bool {
    cert.get_extension_unique(oid)
        .unwrap()
        .expect("extension present")
        .critical
}

#[tokio::test]
async fn root_profile() {
    let before = OffsetDateTime::now_utc();
    let (k, _) = key(P256, "root");
    let root =
        issuance::self_signed_root(k, "CN=Test Root,O=keyward", issuance::DEFAULT_ROOT_VALIDITY)
            .await
            .unwrap();
    let c = parse(&root.der);
    assert_eq!(root.subject, "CN=Test Root, O=keyward");
    assert_eq!(c.subject().as_raw(), c.issuer().as_raw());
    let bc = c.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca && bc.value.path_len_constraint.is_none());
    let ku = c.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert_eq!(ku.value.flags, 0b110_0000, "exactly keyCertSign + cRLSign");
    assert_eq!(ski(&c).len(), 20);
    assert!(c.extended_key_usage().unwrap().is_none());
    let years = (root.not_after - root.not_before).whole_days();
    assert!((3650..=3651).contains(&years), "{years} days");
    let backdate = before - root.not_before;
    assert!(backdate >= time::Duration::seconds(299) && backdate <= time::Duration::seconds(301));
    check::verify_chain(
        &root.der,
        &[],
        std::slice::from_ref(&root.der),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
}

#[tokio::test]
async fn intermediate_profile() {
    let r = root(P256, "CN=Test Root", issuance::DEFAULT_ROOT_VALIDITY).await;
    let i = intermediate(&r, P256, "CN=Test Intermediate").await;
    let (rc, ic) = (parse(r.certificate_der()), parse(i.certificate_der()));
    assert_eq!(ic.issuer().as_raw(), rc.subject().as_raw());
    let bc = ic.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, Some(0));
    assert!(critical(&ic, &OID_X509_EXT_KEY_USAGE));
    assert_eq!(ic.key_usage().unwrap().unwrap().value.flags, 0b110_0000);
    assert_eq!(aki(&ic), ski(&rc));
    assert_ne!(ski(&ic), ski(&rc));
    let days =
        (ic.validity().not_after.timestamp() - ic.validity().not_before.timestamp()) / DAY as i64;
    assert_eq!(
        days, 365,
        "default intermediate validity plus the 5 minute backdate"
    );
}

#[tokio::test]
async fn service_profile_for_ecdsa_and_rsa_keys() {
    let r = root(P256, "CN=Test Root", issuance::DEFAULT_ROOT_VALIDITY).await;
    let i = intermediate(&r, P256, "CN=Test Intermediate").await;
    let mut p = profile("api.internal", &["api.example.com"]);
    p.ips = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    p.uris = vec!["spiffe://example.org/ns/prod/api".into()];
    for (alg, ku_flags) in [
        (P256, 0b1u16),
        (Algorithm::RsaPkcs1Sha256(RsaBits::B2048), 0b101),
        (Algorithm::Ed25519, 0b1),
    ] {
        let (cert, _) = service(&i, alg, &p).await;
        let c = parse(&cert.der);
        assert_eq!(cert.subject, "CN=api.internal");
        let bc = c.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && !bc.value.ca, "{alg}: CA:FALSE, critical");
        let ku = c.key_usage().unwrap().unwrap();
        assert!(ku.critical);
        assert_eq!(ku.value.flags, ku_flags, "{alg}: keyUsage");
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth && !eku.any);
        let sans = &c
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(
            sans,
            &vec![
                GeneralName::DNSName("api.internal"),
                GeneralName::DNSName("api.example.com"),
                GeneralName::IPAddress(&[127, 0, 0, 1]),
                GeneralName::IPAddress(&"::1".parse::<std::net::Ipv6Addr>().unwrap().octets()),
                GeneralName::URI("spiffe://example.org/ns/prod/api"),
            ]
        );
        assert_eq!(aki(&c), ski(&parse(i.certificate_der())));
        assert_eq!(ski(&c).len(), 20);
        let path = check::verify_chain(
            &cert.der,
            &untrusted_chain(&i),
            &[root_of(&i)],
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        assert_eq!(path.len(), 3);
        assert_eq!(path[0].key_algorithm, alg.name());
    }
}

#[tokio::test]
async fn common_name_becomes_a_dns_san_only_when_it_is_a_new_dns_name() {
    let r = root(P256, "CN=Test Root", issuance::DEFAULT_ROOT_VALIDITY).await;
    let sans = |der: &[u8]| check::summarize(der).unwrap().sans;
    let (c, _) = service(&r, P256, &profile("My Service", &["svc.example"])).await;
    assert_eq!(sans(&c.der), vec!["DNS:svc.example"]);
    let (c, _) = service(
        &r,
        P256,
        &profile("API.example", &["api.example", "Api.Example"]),
    )
    .await;
    assert_eq!(
        sans(&c.der),
        vec!["DNS:api.example"],
        "case-insensitive duplicates dropped"
    );
    let (k, _) = key(P256, "nosan");
    assert_err(
        r.issue_service(k.public_key_spki_der(), &profile("My Service", &[]))
            .await,
        "at least one DNS, IP or URI name",
    );
}

#[tokio::test]
async fn bad_service_inputs_are_refused_with_one_line() {
    let r = root(P256, "CN=Test Root", issuance::DEFAULT_ROOT_VALIDITY).await;
    let (k, _) = key(P256, "bad");
    let spki = k.public_key_spki_der();
    let with = |f: &dyn Fn(&mut ServiceProfile)| {
        let mut p = profile("svc.example", &[]);
        f(&mut p);
        p
    };
    let cases: Vec<(ServiceProfile, &str)> = vec![
        (with(&|p| p.common_name = "  ".into()), "empty common name"),
        (
            with(&|p| p.dns = vec!["bad_name.example".into()]),
            "invalid DNS name 'bad_name.example'",
        ),
        (with(&|p| p.dns = vec!["".into()]), "empty DNS name"),
        (
            with(&|p| p.uris = vec!["example.org/api".into()]),
            "not an absolute URI",
        ),
        (
            with(&|p| p.uris = vec!["spiffe://example.org".into()]),
            "invalid SPIFFE ID",
        ),
        (with(&|p| p.validity = Duration::ZERO), "validity"),
    ];
    for (p, want) in cases {
        assert_err(r.issue_service(spki, &p).await, want);
    }
    assert_err(
        r.issue_service(b"not a key", &profile("svc.example", &[]))
            .await,
        "malformed subject public key",
    );
    assert_err(
        r.issue_intermediate(spki, "CN=x,XX=y", Duration::from_secs(DAY))
            .await,
        "unknown attribute 'XX'",
    );
}

#[tokio::test]
async fn serials_are_random_positive_and_16_bytes() {
    let r = root(P256, "CN=Test Root", issuance::DEFAULT_ROOT_VALIDITY).await;
    let (k, _) = key(P256, "serial");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..32 {
        let cert = r
            .issue_service(k.public_key_spki_der(), &profile("svc.example", &[]))
            .await
            .unwrap();
        let c = parse(&cert.der);
        let raw = c.raw_serial();
        assert_eq!(raw.len(), 16, "no sign padding, no leading zero");
        assert_eq!(raw[0] & 0x80, 0);
        assert_ne!(raw[0], 0);
        assert_eq!(cert.serial_hex, hex::encode_upper(raw));
        assert_eq!(
            cert.serial_hex,
            check::summarize(&cert.der).unwrap().serial_hex
        );
        assert!(seen.insert(cert.serial_hex), "serial repeated");
    }
}

#[tokio::test]
async fn validity_is_capped_at_the_issuer_and_starts_after_it() {
    let r = root(P256, "CN=Short Root", Duration::from_secs(30 * DAY)).await;
    let rc = parse(r.certificate_der());
    let root_nb = rc.validity().not_before.timestamp();
    let root_na = rc.validity().not_after.timestamp();
    let (svc, _) = service(&r, P256, &profile("svc.example", &[])).await;
    assert_eq!(
        svc.not_after.unix_timestamp(),
        root_na,
        "90 days capped at the root's 30"
    );
    assert!(svc.not_before.unix_timestamp() >= root_nb);
    let (k, _) = key(P256, "int");
    let int = r
        .issue_intermediate(
            k.public_key_spki_der(),
            "CN=Int",
            Duration::from_secs(365 * DAY),
        )
        .await
        .unwrap();
    assert_eq!(int.not_after.unix_timestamp(), root_na);
    let (short, _) = service(
        &r,
        P256,
        &ServiceProfile {
            validity: Duration::from_secs(DAY),
            ..profile("svc.example", &[])
        },
    )
    .await;
    let span = short.not_after - short.not_before;
    assert_eq!(
        span,
        time::Duration::seconds(DAY as i64 + 300),
        "not capped: 1 day plus the backdate"
    );
}

#[tokio::test]
async fn signature_hash_follows_the_issuer_key() {
    let cases = [
        (P256, OID_SIG_ECDSA_WITH_SHA256),
        (Algorithm::EcdsaP384Sha384, OID_SIG_ECDSA_WITH_SHA384),
        (Algorithm::Ed25519, OID_SIG_ED25519),
        (
            Algorithm::RsaPkcs1Sha256(RsaBits::B2048),
            OID_PKCS1_SHA256WITHRSA,
        ),
    ];
    for (alg, oid) in cases {
        let r = root(alg, "CN=Test Root", issuance::DEFAULT_ROOT_VALIDITY).await;
        let (cert, _) = service(&r, P256, &profile("svc.example", &[])).await;
        assert_eq!(parse(&cert.der).signature_algorithm.algorithm, oid, "{alg}");
        assert_eq!(
            parse(r.certificate_der()).signature_algorithm.algorithm,
            oid,
            "{alg} root"
        );
    }
}

#[tokio::test]
async fn issued_pem_round_trips_and_addresses_are_kept() {
    let r = root(P256, "CN=Test Root", issuance::DEFAULT_ROOT_VALIDITY).await;
    let mut p = profile("10.1.2.3", &[]);
    p.ips = vec![IpAddr::from([10, 1, 2, 3])];
    let (cert, _) = service(&r, P256, &p).await;
    assert_eq!(
        check::pem_to_ders(cert.pem().as_bytes()).unwrap(),
        vec![cert.der.clone()]
    );
    assert_eq!(
        check::summarize(&cert.der).unwrap().sans,
        vec!["IP:10.1.2.3"]
    );
}
