//! keyward's service-certificate profile (core/src/issuance/profile.rs) built straight
//! with rcgen, for the raw baselines beside keyward's issuance: this benchmark's
//! "rcgen direct" and keyward-bench's same-work baseline (which includes this file).

use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyUsagePurpose,
    SanType, SerialNumber,
};

/// A service certificate named `cn` with `sans`, valid for `validity`: serverAuth +
/// clientAuth, digitalSignature, SHA-256 key identifiers with the AKI, a random positive
/// 16-byte serial, notBefore 5 minutes back.
pub fn service_params(cn: &str, sans: Vec<SanType>, validity: time::Duration) -> CertificateParams {
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).expect("random serial");
    serial[0] = (serial[0] & 0x7f) | 1;
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 ns");
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.subject_alt_names = sans;
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + validity;
    p.key_identifier_method = KeyIdMethod::Sha256;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    p
}
