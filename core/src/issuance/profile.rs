//! Certificate profiles (root CA, intermediate CA, service certificate), serial numbers
//! and validity windows.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::Error;

/// How far notBefore is set back from now, to absorb clock skew between machines.
pub(crate) const BACKDATE: time::Duration = time::Duration::minutes(5);

/// Length of the random serial number in bytes.
pub(crate) const SERIAL_LEN: usize = 16;

/// A fresh random serial: 16 bytes, top bit clear (positive), first byte non-zero (so
/// the DER INTEGER keeps all 16 bytes and at least 120 random bits).
pub(crate) fn random_serial() -> Result<[u8; SERIAL_LEN], Error> {
    let mut serial = [0u8; SERIAL_LEN];
    loop {
        aws_lc_rs::rand::fill(&mut serial)
            .map_err(|_| Error::backend("the system random generator failed"))?;
        serial[0] &= 0x7f;
        if serial[0] != 0 {
            return Ok(serial);
        }
    }
}

/// The validity window of a certificate about to be issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// notBefore: now minus [`BACKDATE`], but never before the issuer's notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter: now plus the validity, but never after the issuer's notAfter.
    pub not_after: OffsetDateTime,
    /// Whether notAfter was cut back to the issuer's notAfter.
    pub capped: bool,
}

/// The issuing CA's own validity and name, for [`validity_window`].
#[derive(Debug, Clone)]
pub(crate) struct IssuerWindow {
    pub subject: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// Computes the window for a certificate valid for `validity` from `now`, issued by
/// `issuer` (`None` for a self-signed root). Times are whole seconds, as X.509 stores them.
pub(crate) fn validity_window(
    now: OffsetDateTime,
    validity: Duration,
    issuer: Option<&IssuerWindow>,
) -> Result<Window, Error> {
    let now = now.replace_nanosecond(0).expect("0 is a valid nanosecond");
    if validity.as_secs() == 0 {
        return Err(Error::InvalidInput(
            "validity must be at least one second".into(),
        ));
    }
    let span = time::Duration::try_from(validity)
        .ok()
        .and_then(|d| now.checked_add(d))
        .filter(|t| t.year() <= 9999)
        .ok_or_else(|| Error::InvalidInput(format!("validity of {validity:?} is too long")))?;
    let mut window = Window {
        not_before: now - BACKDATE,
        not_after: span,
        capped: false,
    };
    if let Some(issuer) = issuer {
        if now >= issuer.not_after {
            return Err(Error::State(format!(
                "CA certificate '{}' expired on {}; renew the CA before issuing",
                issuer.subject, issuer.not_after
            )));
        }
        if now < issuer.not_before {
            return Err(Error::State(format!(
                "CA certificate '{}' is not valid before {}; check the system clock",
                issuer.subject, issuer.not_before
            )));
        }
        if window.not_before < issuer.not_before {
            window.not_before = issuer.not_before;
        }
        if window.not_after > issuer.not_after {
            window.not_after = issuer.not_after;
            window.capped = true;
        }
    }
    Ok(window)
}

/// Parameters shared by every profile: serial, window, subject, SKI by SHA-256.
fn base(dn: DistinguishedName, window: &Window, serial: &[u8]) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn;
    p.not_before = window.not_before;
    p.not_after = window.not_after;
    p.serial_number = Some(SerialNumber::from_slice(serial));
    p.key_identifier_method = rcgen::KeyIdMethod::Sha256;
    p
}

/// A self-signed root CA: basicConstraints CA (critical, no path length limit),
/// keyUsage keyCertSign + cRLSign (critical), subjectKeyIdentifier.
pub(crate) fn root_params(
    dn: DistinguishedName,
    window: &Window,
    serial: &[u8],
) -> CertificateParams {
    let mut p = base(dn, window, serial);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// An intermediate CA: basicConstraints CA with pathLenConstraint 0 (critical),
/// keyUsage keyCertSign + cRLSign (critical), authority and subject key identifiers.
pub(crate) fn intermediate_params(
    dn: DistinguishedName,
    window: &Window,
    serial: &[u8],
) -> CertificateParams {
    let mut p = base(dn, window, serial);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.use_authority_key_identifier_extension = true;
    p
}

/// A service (leaf) certificate: basicConstraints CA:FALSE (critical), keyUsage
/// digitalSignature (+ keyEncipherment for RSA keys, critical), extendedKeyUsage
/// serverAuth + clientAuth, the given SANs, authority and subject key identifiers.
/// An empty `common_name` leaves the subject empty (rcgen then marks the SAN critical).
pub(crate) fn service_params(
    common_name: Option<&str>,
    sans: Vec<SanType>,
    rsa_key: bool,
    window: &Window,
    serial: &[u8],
) -> CertificateParams {
    let mut dn = DistinguishedName::new();
    if let Some(cn) = common_name {
        dn.push(DnType::CommonName, cn);
    }
    let mut p = base(dn, window, serial);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if rsa_key {
        p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.subject_alt_names = sans;
    p.use_authority_key_identifier_extension = true;
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn issuer(nb: OffsetDateTime, na: OffsetDateTime) -> IssuerWindow {
        IssuerWindow {
            subject: "CN=Test CA".into(),
            not_before: nb,
            not_after: na,
        }
    }

    const DAY: u64 = 86_400;

    #[test]
    fn serial_is_positive_16_bytes_and_varies() {
        let a = random_serial().unwrap();
        let b = random_serial().unwrap();
        for s in [a, b] {
            assert_eq!(s.len(), 16);
            assert_eq!(s[0] & 0x80, 0, "top bit set: negative serial");
            assert_ne!(s[0], 0, "leading zero byte would shorten the serial");
        }
        assert_ne!(a, b);
    }

    #[test]
    fn window_backdates_five_minutes_and_drops_nanoseconds() {
        let now = datetime!(2030-01-01 12:00:00.5 UTC);
        let w = validity_window(now, Duration::from_secs(90 * DAY), None).unwrap();
        assert_eq!(w.not_before, datetime!(2030-01-01 11:55:00 UTC));
        assert_eq!(w.not_after, datetime!(2030-04-01 12:00:00 UTC));
        assert!(!w.capped);
    }

    #[test]
    fn window_never_starts_before_the_issuer() {
        let now = datetime!(2030-01-01 12:00:00 UTC);
        let ca = issuer(
            datetime!(2030-01-01 11:58:00 UTC),
            datetime!(2040-01-01 0:00 UTC),
        );
        let w = validity_window(now, Duration::from_secs(DAY), Some(&ca)).unwrap();
        assert_eq!(w.not_before, ca.not_before);
    }

    #[test]
    fn window_is_capped_at_the_issuer_not_after() {
        let now = datetime!(2030-01-01 12:00:00 UTC);
        let ca = issuer(
            datetime!(2029-01-01 0:00 UTC),
            datetime!(2030-02-01 0:00 UTC),
        );
        let w = validity_window(now, Duration::from_secs(90 * DAY), Some(&ca)).unwrap();
        assert_eq!(w.not_after, ca.not_after);
        assert!(w.capped);
        let w = validity_window(now, Duration::from_secs(DAY), Some(&ca)).unwrap();
        assert!(!w.capped);
    }

    #[test]
    fn expired_or_future_issuer_and_zero_validity_are_refused() {
        let now = datetime!(2030-01-01 12:00:00 UTC);
        let old = issuer(
            datetime!(2020-01-01 0:00 UTC),
            datetime!(2021-01-01 0:00 UTC),
        );
        let e = validity_window(now, Duration::from_secs(DAY), Some(&old)).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        let future = issuer(
            datetime!(2031-01-01 0:00 UTC),
            datetime!(2041-01-01 0:00 UTC),
        );
        let e = validity_window(now, Duration::from_secs(DAY), Some(&future)).unwrap_err();
        assert!(e.to_string().contains("not valid before"), "{e}");
        let e = validity_window(now, Duration::ZERO, None).unwrap_err();
        assert!(e.to_string().contains("validity"), "{e}");
        let e = validity_window(now, Duration::from_secs(u64::MAX), None).unwrap_err();
        assert!(e.to_string().contains("too long"), "{e}");
    }
}
