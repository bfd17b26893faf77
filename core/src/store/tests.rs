use super::*;
use crate::check::pem_to_ders;
use time::OffsetDateTime;

/// A distinct real certificate per `tag` (the store checks that PEM holds certificates).
fn fake_cert_der(tag: u8) -> Vec<u8> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CERTS: OnceLock<Mutex<HashMap<u8, Vec<u8>>>> = OnceLock::new();
    let mut certs = CERTS.get_or_init(Default::default).lock().unwrap();
    certs
        .entry(tag)
        .or_insert_with(|| {
            let c = rcgen::generate_simple_self_signed(vec![format!("t{tag}.test")]).unwrap();
            c.cert.der().to_vec()
        })
        .clone()
}

fn key() -> KeyUri {
    KeyUri::parse("file:/k/ca.pem").unwrap()
}

#[test]
fn root_then_intermediate_round_trip_and_never_replaced() {
    let d = tempfile::tempdir().unwrap();
    let s = StateDir::new(d.path().join("state"));
    assert!(s.ca().unwrap().is_none());
    assert!(s.lock().is_err(), "lock must not create the directory");
    assert!(!s.exists());
    let lock = s.create_and_lock().unwrap();
    assert_eq!(fsutil::mode_of(s.path()).unwrap(), 0o700);
    s.install_root(&lock, &[fake_cert_der(1)], Some(&key()))
        .unwrap();
    let e = s
        .install_root(&lock, &[fake_cert_der(2)], Some(&key()))
        .unwrap_err();
    assert!(e.to_string().contains("never replaces"), "{e}");
    let inter_key = KeyUri::parse("transit:inter").unwrap();
    s.install_intermediate(&lock, &fake_cert_der(3), &inter_key)
        .unwrap();
    assert!(
        s.install_intermediate(&lock, &fake_cert_der(4), &inter_key)
            .is_err()
    );
    let ca = s.ca().unwrap().unwrap();
    assert_eq!(ca.roots, vec![fake_cert_der(1)]);
    let issuing = ca.issuing().unwrap();
    assert_eq!(issuing.cert_der, fake_cert_der(3));
    assert_eq!(issuing.key, inter_key);
    assert_eq!(issuing.chain_der, vec![fake_cert_der(1)]);
    assert!(s.problems().unwrap().is_empty());
}

#[test]
fn altered_ca_file_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let s = StateDir::new(d.path());
    let lock = s.create_and_lock().unwrap();
    s.install_root(&lock, &[fake_cert_der(1)], Some(&key()))
        .unwrap();
    let root = d.path().join("ca/root.pem");
    let text = std::fs::read_to_string(&root).unwrap();
    std::fs::write(&root, &text[..text.len() / 2]).unwrap();
    let e = s.ca().unwrap_err().to_string();
    assert!(e.contains("does not match the CA manifest"), "{e}");
    assert_eq!(s.problems().unwrap().len(), 1);
}

#[test]
fn inventory_records_and_orphans() {
    let d = tempfile::tempdir().unwrap();
    let s = StateDir::new(d.path());
    let lock = s.create_and_lock().unwrap();
    let now = OffsetDateTime::now_utc();
    let rec = IssuedRecord {
        serial_hex: "0a0b".into(),
        kind: IssuedKind::Service,
        name: "api".into(),
        subject: "CN=api".into(),
        sans: vec!["DNS:api".into()],
        issuer: "CN=root".into(),
        ca_key: key(),
        not_before: now,
        not_after: now,
        issued_at: now,
        out: None,
        cert_file: String::new(),
        cert_sha256: String::new(),
    };
    let pem = crate::check::ders_to_pem(&[fake_cert_der(9)]);
    s.record_issued(&lock, rec.clone(), &pem).unwrap();
    let inv = s.inventory().unwrap();
    assert_eq!(inv.len(), 1);
    assert_eq!(
        pem_to_ders(&std::fs::read(d.path().join(&inv[0].cert_file)).unwrap()).unwrap(),
        vec![fake_cert_der(9)]
    );
    // The same serial twice is refused, and the inventory is unchanged.
    assert!(s.record_issued(&lock, rec, &pem).is_err());
    assert_eq!(s.inventory().unwrap().len(), 1);
    std::fs::write(d.path().join("issued/ffff.pem"), "x").unwrap();
    let p = s.problems().unwrap();
    assert!(
        p.iter()
            .any(|l| l.contains("ffff.pem") && l.contains("not in the inventory")),
        "{p:?}"
    );
}

#[test]
fn unfinished_operations_are_reported_until_done() {
    let d = tempfile::tempdir().unwrap();
    let s = StateDir::new(d.path());
    let lock = s.create_and_lock().unwrap();
    let p = s.begin(&lock, "ca init", "key file:/k/ca.pem").unwrap();
    let left = s.unfinished().unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].describe().contains("`ca init`"));
    p.done().unwrap();
    assert!(s.unfinished().unwrap().is_empty());
    drop(s.begin(&lock, "issue", "serial 01").unwrap());
    assert_eq!(
        s.problems().unwrap().len(),
        1,
        "a dropped operation stays reported"
    );
}
