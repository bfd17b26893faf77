//! The exposition keeps its names, labels and escaping.

use super::*;

/// The exposition as the hand-written writer this registry replaced printed it.
const EXPECTED: &str = r#"# HELP keyward_svid_issuance_total Workload SVID issuances, by the CA key's backend and outcome.
# TYPE keyward_svid_issuance_total counter
keyward_svid_issuance_total{backend="file",outcome="success"} 1
# HELP keyward_ca_sign_operations_total Signing operations with CA keys (issuances and health probes), by backend and outcome.
# TYPE keyward_ca_sign_operations_total counter
keyward_ca_sign_operations_total{backend="file",outcome="failure"} 1
# HELP keyward_ca_sign_duration_seconds Time taken by CA signing operations, by backend.
# TYPE keyward_ca_sign_duration_seconds histogram
keyward_ca_sign_duration_seconds_bucket{backend="file",le="0.001"} 0
keyward_ca_sign_duration_seconds_bucket{backend="file",le="0.0025"} 0
keyward_ca_sign_duration_seconds_bucket{backend="file",le="0.005"} 1
keyward_ca_sign_duration_seconds_bucket{backend="file",le="0.01"} 1
keyward_ca_sign_duration_seconds_bucket{backend="file",le="0.025"} 1
keyward_ca_sign_duration_seconds_bucket{backend="file",le="0.05"} 1
keyward_ca_sign_duration_seconds_bucket{backend="file",le="0.1"} 1
keyward_ca_sign_duration_seconds_bucket{backend="file",le="0.25"} 1
keyward_ca_sign_duration_seconds_bucket{backend="file",le="0.5"} 1
keyward_ca_sign_duration_seconds_bucket{backend="file",le="1"} 1
keyward_ca_sign_duration_seconds_bucket{backend="file",le="2.5"} 1
keyward_ca_sign_duration_seconds_bucket{backend="file",le="5"} 1
keyward_ca_sign_duration_seconds_bucket{backend="file",le="10"} 1
keyward_ca_sign_duration_seconds_bucket{backend="file",le="+Inf"} 1
keyward_ca_sign_duration_seconds_sum{backend="file"} 0.003
keyward_ca_sign_duration_seconds_count{backend="file"} 1
# HELP keyward_workload_api_denied_total Workload API requests refused, by reason.
# TYPE keyward_workload_api_denied_total counter
keyward_workload_api_denied_total{reason="rate_limited"} 2
# HELP keyward_workload_api_open_streams Workload API streams open now.
# TYPE keyward_workload_api_open_streams gauge
keyward_workload_api_open_streams 1
# HELP keyward_backend_up 1 when the backend answered its last signing operation or probe, else 0.
# TYPE keyward_backend_up gauge
keyward_backend_up{backend="file"} 0
# HELP keyward_ready 1 when the CA is loaded and its backend answers (as /readyz), else 0.
# TYPE keyward_ready gauge
keyward_ready 0
# HELP keyward_generation_active The generation issuing now, by kind (local_intermediate, upstream_intermediate, jwt_key).
# TYPE keyward_generation_active gauge
keyward_generation_active{kind="upstream_intermediate"} 3
# HELP keyward_generation_prepare_failures Failed attempts in a row to prepare the next generation, by kind (0 once one succeeds).
# TYPE keyward_generation_prepare_failures gauge
keyward_generation_prepare_failures{kind="upstream_intermediate"} 2
# HELP keyward_certificate_expiry_seconds Seconds until the certificate expires (negative once expired).
# TYPE keyward_certificate_expiry_seconds gauge
keyward_certificate_expiry_seconds{role="svid",name="spiffe://example.org/a",subject="CN=a \"b\" \\ c\nd",spiffe_id="spiffe://example.org/a",serial="01"} -60
# HELP keyward_certificate_alert_level Alert level per certificate: 0 OK, 1 WARNING, 2 ERROR, 3 CRITICAL.
# TYPE keyward_certificate_alert_level gauge
keyward_certificate_alert_level{role="svid",name="spiffe://example.org/a",subject="CN=a \"b\" \\ c\nd",spiffe_id="spiffe://example.org/a",serial="01",level="CRITICAL"} 3
# HELP keyward_certificates Watched certificates, by alert level.
# TYPE keyward_certificates gauge
keyward_certificates{level="OK"} 0
keyward_certificates{level="WARNING"} 0
keyward_certificates{level="ERROR"} 0
keyward_certificates{level="CRITICAL"} 1
"#;

#[test]
fn the_exposition_keeps_its_names_labels_and_escaping() {
    let r = Registry::default();
    r.issued("file", true);
    r.signed(&SigningLabels::new("file"), Duration::from_millis(3), false);
    r.denied("rate_limited");
    r.denied("rate_limited");
    r.open_streams().inc();
    let now = OffsetDateTime::UNIX_EPOCH;
    let svid = CertRow {
        role: "svid",
        name: "spiffe://example.org/a".into(),
        subject: "CN=a \"b\" \\ c\nd".into(),
        issuer: "CN=root".into(),
        serial_hex: "01".into(),
        not_after: now - time::Duration::minutes(1),
        days_left: 0,
        level: AlertLevel::Critical,
    };
    let down = Health {
        ok: false,
        reason: "no answer".into(),
    };
    let text = r.render(Scraped {
        now,
        certificates: vec![svid],
        health: BTreeMap::from([("file".to_string(), down)]),
        ready: false,
        generations: BTreeMap::from([(
            "upstream_intermediate",
            GenerationStatus {
                active: 3,
                failures: 2,
                gates_readiness: true,
                reason: Some("unreachable".into()),
            },
        )]),
    });
    assert_eq!(text, EXPECTED);
}
