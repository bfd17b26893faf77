use super::*;
use time::Duration;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2030-06-01 12:00:00 UTC);

fn level_at(days: f64) -> AlertLevel {
    let not_after = NOW + Duration::seconds_f64(days * 86_400.0);
    alert_level(not_after, NOW, &AlertThresholds::default())
}

#[test]
fn alert_levels_at_expired_5_20_60_days() {
    assert_eq!(level_at(-1.0), AlertLevel::Critical);
    assert_eq!(level_at(0.0), AlertLevel::Critical);
    assert_eq!(level_at(5.0), AlertLevel::Error);
    assert_eq!(level_at(20.0), AlertLevel::Warning);
    assert_eq!(level_at(60.0), AlertLevel::Ok);
}

#[test]
fn alert_thresholds_are_inclusive_whole_days() {
    assert_eq!(level_at(7.0), AlertLevel::Error);
    assert_eq!(level_at(7.9), AlertLevel::Error, "7 whole days left");
    assert_eq!(level_at(8.0), AlertLevel::Warning);
    assert_eq!(level_at(30.5), AlertLevel::Warning);
    assert_eq!(level_at(31.0), AlertLevel::Ok);
    assert_eq!(level_at(0.2), AlertLevel::Error, "hours left, not expired");
    let strict = AlertThresholds {
        warning_days: 90,
        error_days: 45,
    };
    assert_eq!(
        alert_level(NOW + Duration::days(60), NOW, &strict),
        AlertLevel::Warning
    );
}

#[test]
fn days_left_rounds_down_and_goes_negative() {
    assert_eq!(days_left(NOW + Duration::hours(47), NOW), 1);
    assert_eq!(days_left(NOW - Duration::hours(1), NOW), -1);
}

#[test]
fn alert_level_text_and_json() {
    let all = [
        AlertLevel::Ok,
        AlertLevel::Warning,
        AlertLevel::Error,
        AlertLevel::Critical,
    ];
    let shown: Vec<String> = all.iter().map(|l| l.to_string()).collect();
    assert_eq!(shown, ["OK", "WARNING", "ERROR", "CRITICAL"]);
    assert_eq!(
        serde_json::to_string(&all).unwrap(),
        r#"["OK","WARNING","ERROR","CRITICAL"]"#
    );
    assert!(AlertLevel::Critical > AlertLevel::Warning);
}

fn some_cert() -> Vec<u8> {
    rcgen::generate_simple_self_signed(vec!["a.example".to_string()])
        .unwrap()
        .cert
        .der()
        .to_vec()
}

#[test]
fn pem_round_trip_keeps_order_and_skips_other_blocks() {
    let (a, b) = (some_cert(), some_cert());
    let text = ders_to_pem(&[a.clone(), b.clone()]);
    assert!(!text.contains('\r'));
    let with_key = format!(
        "junk before\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{text}"
    );
    assert_eq!(
        pem_to_ders(with_key.as_bytes()).unwrap(),
        vec![a.clone(), b]
    );
    assert_eq!(pem_to_ders(&a).unwrap(), vec![a], "a bare DER certificate");
}

#[test]
fn pem_without_certificates_or_with_a_broken_one_is_refused() {
    let e = pem_to_ders(b"hello").unwrap_err().to_string();
    assert!(e.contains("no PEM CERTIFICATE block"), "{e}");
    let broken = "-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n";
    let e = pem_to_ders(broken.as_bytes()).unwrap_err().to_string();
    assert!(
        e.contains("PEM certificate #1") && e.contains("malformed"),
        "{e}"
    );
}

#[test]
fn summary_of_a_self_signed_certificate() {
    let der = some_cert();
    let s = summarize(&der).unwrap();
    assert_eq!(s.sans, vec!["DNS:a.example"]);
    assert_eq!(s.key_algorithm, "ecdsa-p256");
    assert_eq!(s.subject, s.issuer);
    assert_eq!(s.sha256_fingerprint.len(), 32 * 3 - 1);
    let json = serde_json::to_value(&s).unwrap();
    assert!(
        json["not_after"]
            .as_str()
            .unwrap()
            .starts_with("4096-01-01")
    );
}

#[test]
fn names_escape_what_the_subject_parser_reads_back() {
    let mut params = rcgen::CertificateParams::default();
    let dn = crate::issuance::parse_subject(r"CN=Acme\, Inc.,O=Acme + Co").unwrap();
    params.distinguished_name = dn;
    let key = rcgen::KeyPair::generate().unwrap();
    let der = params.self_signed(&key).unwrap().der().to_vec();
    let subject = summarize(&der).unwrap().subject;
    assert_eq!(subject, r"CN=Acme\, Inc., O=Acme \+ Co");
    let again = crate::issuance::parse_subject(&subject).unwrap();
    assert_eq!(
        again,
        crate::issuance::parse_subject(r"CN=Acme\, Inc.,O=Acme + Co").unwrap()
    );
}

#[test]
fn thresholds_from_durations_are_whole_days() {
    let d = |days: u64| std::time::Duration::from_secs(days * 86_400);
    let t = AlertThresholds::from_durations(d(60), d(10)).unwrap();
    assert_eq!((t.warning_days, t.error_days), (60, 10));
    assert!(AlertThresholds::from_durations(d(5), d(10)).is_err());
    assert!(AlertThresholds::from_durations(std::time::Duration::from_secs(3600), d(0)).is_err());
}

#[test]
fn renewed_certificates_alert_on_overdue_renewal() {
    let start = NOW - Duration::minutes(10);
    let at = |minutes_left: i64| {
        renewal_alert_level(
            start,
            start + Duration::hours(1),
            start + Duration::hours(1) - Duration::minutes(minutes_left),
            0.5,
        )
    };
    assert_eq!(at(50), AlertLevel::Ok);
    assert_eq!(
        at(28),
        AlertLevel::Ok,
        "within the grace after the renewal point"
    );
    assert_eq!(at(20), AlertLevel::Warning);
    assert_eq!(at(5), AlertLevel::Error);
    assert_eq!(at(0), AlertLevel::Critical);
}
