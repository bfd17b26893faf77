//! CRL checks for `verify`, `status` and the agent: a CRL must be signed by the CA that
//! issued the certificates it lists and must not be past its nextUpdate.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::{name_to_string, parse_cert, serial_hex, signature_algorithm, to_datetime};
use crate::issuance::{CrlContents, RevocationReason, RevokedCert};
use crate::{Error, verify_signature};

/// Parses one DER CRL, refusing trailing bytes.
pub(crate) fn parse_crl(der: &[u8]) -> Result<CertificateRevocationList<'_>, Error> {
    let (rest, crl) = CertificateRevocationList::from_der(der)
        .map_err(|e| Error::InvalidInput(format!("malformed CRL: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::InvalidInput(
            "malformed CRL: trailing bytes after the CRL".into(),
        ));
    }
    Ok(crl)
}

/// Checks the CRL `crl_der` (named `label` in errors, e.g. its path) against the CA
/// certificate `issuer_der` at time `now`: [`read_crl`]'s checks, then that it is not
/// from the future and not past its nextUpdate. Returns what it lists.
pub fn check_crl(
    crl_der: &[u8],
    issuer_der: &[u8],
    label: &str,
    now: OffsetDateTime,
) -> Result<CrlContents, Error> {
    let contents = read_crl(crl_der, issuer_der, label)?;
    if now < contents.this_update {
        return Err(Error::Verification(format!(
            "the CRL {label} is not valid before {}",
            fmt_time(contents.this_update)
        )));
    }
    if now > contents.next_update {
        return Err(Error::Verification(format!(
            "the CRL {label} is past its nextUpdate ({}); re-sign it with `keyward crl`",
            fmt_time(contents.next_update)
        )));
    }
    Ok(contents)
}

/// Reads the CRL `crl_der` (named `label` in errors) issued by the CA certificate
/// `issuer_der`, whatever the time: it must parse, name that CA as its issuer, carry a
/// nextUpdate, and its signature must verify under the CA's key.
pub fn read_crl(crl_der: &[u8], issuer_der: &[u8], label: &str) -> Result<CrlContents, Error> {
    let crl = parse_crl(crl_der).map_err(|e| Error::Verification(format!("{label}: {e}")))?;
    let issuer = parse_cert(issuer_der)?;
    let ca = name_to_string(issuer.subject());
    if crl.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(Error::Verification(format!(
            "the CRL {label} was issued by '{}', not by '{ca}'",
            name_to_string(crl.issuer())
        )));
    }
    let bad_signature = || {
        Error::Verification(format!(
            "the CRL {label} does not verify under the key of its issuer '{ca}'"
        ))
    };
    if crl.tbs_cert_list.signature != crl.signature_algorithm {
        return Err(bad_signature());
    }
    let alg = signature_algorithm(&crl.signature_algorithm, issuer.public_key())
        .map_err(|_| bad_signature())?;
    verify_signature(
        alg,
        issuer.public_key().raw,
        crl.tbs_cert_list.as_ref(),
        &crl.signature_value.data,
    )
    .map_err(|_| bad_signature())?;
    let this_update = to_datetime(crl.last_update());
    let next_update = crl
        .next_update()
        .map(to_datetime)
        .ok_or_else(|| Error::Verification(format!("the CRL {label} has no nextUpdate")))?;
    let crl_number = crl
        .crl_number()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| RevokedCert {
            serial_hex: serial_hex(r.raw_serial()),
            reason: r
                .reason_code()
                .and_then(|(_, code)| RevocationReason::from_code(code.0))
                .unwrap_or(RevocationReason::Unspecified),
            revoked_at: to_datetime(r.revocation_date),
        })
        .collect();
    Ok(CrlContents {
        crl_number,
        this_update,
        next_update,
        revoked,
    })
}

/// The entry for the certificate with serial `serial_hex` in `crl`, if it is revoked.
pub fn find_revoked<'a>(crl: &'a CrlContents, serial_hex: &str) -> Option<&'a RevokedCert> {
    crl.revoked
        .iter()
        .find(|r| r.serial_hex.eq_ignore_ascii_case(serial_hex))
}

fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}
