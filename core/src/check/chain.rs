//! Chain verification: from a leaf through intermediates to a certificate of the trust
//! bundle, checking signatures, validity windows, basic constraints, key usage and EKU.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::certificate::X509Certificate;

use super::{
    CertSummary, name_to_string, parse_cert, serial_hex, signature_algorithm, summary_of,
    to_datetime,
};
use crate::{Error, verify_signature};

/// Longest path accepted (leaf, intermediates, anchor).
const MAX_PATH: usize = 8;

/// How a certificate is named in error messages: its subject, or its serial if the
/// subject is empty.
pub(crate) fn label(cert: &X509Certificate<'_>) -> String {
    let s = name_to_string(cert.subject());
    if s.is_empty() {
        format!("serial {}", serial_hex(cert.raw_serial()))
    } else {
        s
    }
}

fn fail(msg: String) -> Error {
    Error::Verification(msg)
}

fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Checks that `child`'s signature verifies under `issuer`'s public key, using
/// [`crate::verify_signature`]; the error says why in plain words.
pub(crate) fn verify_signed_by(
    child: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
) -> Result<(), String> {
    if child.tbs_certificate.signature != child.signature_algorithm {
        return Err(format!(
            "'{}' has different signature algorithms inside and outside its TBS part",
            label(child)
        ));
    }
    let alg = signature_algorithm(&child.signature_algorithm, issuer.public_key())
        .map_err(|e| format!("'{}': {e}", label(child)))?;
    verify_signature(
        alg,
        issuer.public_key().raw,
        child.tbs_certificate.as_ref(),
        &child.signature_value.data,
    )
    .map_err(|_| {
        format!(
            "the signature of '{}' does not verify under the key of '{}'",
            label(child),
            label(issuer)
        )
    })
}

/// Parses a list of DER certificates, naming the one that fails by `what` and position.
fn parse_all<'a>(
    ders: &'a [Vec<u8>],
    what: &str,
) -> Result<Vec<(X509Certificate<'a>, &'a [u8])>, Error> {
    ders.iter()
        .enumerate()
        .map(|(i, d)| {
            parse_cert(d)
                .map(|c| (c, d.as_slice()))
                .map_err(|e| Error::InvalidInput(format!("{what} #{}: {e}", i + 1)))
        })
        .collect()
}

/// One certificate on the path, with whether it came from the trust bundle.
struct Link<'a> {
    cert: X509Certificate<'a>,
    der: &'a [u8],
    anchor: bool,
}

/// Verifies `leaf` up to a certificate in `trust`, using `intermediates` as needed, at
/// time `now`. Returns the path, leaf first and trust anchor last.
///
/// Checked: every signature (with [`crate::verify_signature`]), every validity window,
/// unknown critical extensions, basicConstraints cA and pathLenConstraint and keyUsage
/// keyCertSign on every issuer, and on the leaf: not a CA (unless the leaf is itself in
/// the trust bundle), digitalSignature if keyUsage is present, and an extendedKeyUsage
/// allowing serverAuth or clientAuth. Errors name the certificate and the failed check.
pub fn verify_chain(
    leaf: &[u8],
    intermediates: &[Vec<u8>],
    trust: &[Vec<u8>],
    now: OffsetDateTime,
) -> Result<Vec<CertSummary>, Error> {
    if trust.is_empty() {
        return Err(Error::InvalidInput("the trust bundle is empty".into()));
    }
    let leaf_cert = parse_cert(leaf)?;
    let anchors = parse_all(trust, "trust bundle certificate")?;
    let inters = parse_all(intermediates, "chain certificate")?;

    let leaf_is_anchor = trust.iter().any(|t| t.as_slice() == leaf);
    let mut path = vec![Link {
        cert: leaf_cert,
        der: leaf,
        anchor: leaf_is_anchor,
    }];
    let mut used = vec![false; inters.len()];
    while !path.last().is_some_and(|l| l.anchor) {
        if path.len() >= MAX_PATH {
            return Err(fail(format!("chain longer than {MAX_PATH} certificates")));
        }
        let current = &path.last().expect("path is never empty").cert;
        let mut sig_error = None;
        let mut found = None;
        let candidates = anchors.iter().map(|(c, d)| (c, *d, true, None)).chain(
            inters
                .iter()
                .enumerate()
                .map(|(i, (c, d))| (c, *d, false, Some(i))),
        );
        for (cand, der, anchor, idx) in candidates {
            if idx.is_some_and(|i| used[i]) || cand.subject().as_raw() != current.issuer().as_raw()
            {
                continue;
            }
            if der == path.last().expect("path is never empty").der {
                continue; // a self-signed certificate that is not trusted
            }
            match verify_signed_by(current, cand) {
                Ok(()) => {
                    found = Some((cand.clone(), der, anchor, idx));
                    break;
                }
                Err(e) => sig_error = sig_error.or(Some(e)),
            }
        }
        match found {
            Some((cert, der, anchor, idx)) => {
                if let Some(i) = idx {
                    used[i] = true;
                }
                path.push(Link { cert, der, anchor });
            }
            None => {
                return Err(fail(sig_error.unwrap_or_else(|| {
                    if current.subject().as_raw() == current.issuer().as_raw() {
                        format!("'{}' is self-signed and not in the trust bundle", label(current))
                    } else {
                        format!(
                            "the issuer of '{}' ('{}') is neither in the chain nor in the trust bundle",
                            label(current),
                            name_to_string(current.issuer())
                        )
                    }
                })));
            }
        }
    }

    check_path(&path, now)?;
    Ok(path.iter().map(|l| summary_of(&l.cert, l.der)).collect())
}

/// The per-certificate checks, leaf first, so the first failure reported is the lowest.
fn check_path(path: &[Link<'_>], now: OffsetDateTime) -> Result<(), Error> {
    for (i, link) in path.iter().enumerate() {
        let cert = &link.cert;
        let name = label(cert);
        let nb = to_datetime(cert.validity().not_before);
        let na = to_datetime(cert.validity().not_after);
        if now < nb {
            return Err(fail(format!(
                "'{name}' is not valid before {}",
                fmt_time(nb)
            )));
        }
        if now > na {
            return Err(fail(format!("'{name}' expired on {}", fmt_time(na))));
        }
        if let Some(ext) = cert
            .extensions()
            .iter()
            .find(|e| e.critical && e.parsed_extension().unsupported())
        {
            return Err(fail(format!(
                "'{name}' has an unsupported critical extension {}",
                ext.oid.to_id_string()
            )));
        }
        let bc = cert
            .basic_constraints()
            .map_err(|e| fail(format!("'{name}': malformed basicConstraints: {e}")))?
            .map(|b| b.value.clone());
        let ku = cert
            .key_usage()
            .map_err(|e| fail(format!("'{name}': malformed keyUsage: {e}")))?
            .map(|k| *k.value);
        let eku = cert
            .extended_key_usage()
            .map_err(|e| fail(format!("'{name}': malformed extendedKeyUsage: {e}")))?
            .map(|e| e.value);

        if i == 0 {
            if link.anchor {
                continue; // a trusted certificate checked on its own
            }
            if bc.as_ref().is_some_and(|b| b.ca) {
                return Err(fail(format!("'{name}' is a CA certificate, not a leaf")));
            }
            if let Some(ku) = ku {
                if ku.key_cert_sign() {
                    return Err(fail(format!(
                        "'{name}' is a leaf with keyUsage keyCertSign"
                    )));
                }
                if !ku.digital_signature() {
                    return Err(fail(format!("'{name}' keyUsage lacks digitalSignature")));
                }
            }
            match eku {
                None => {
                    return Err(fail(format!("'{name}' has no extendedKeyUsage extension")));
                }
                Some(e) if !(e.any || e.server_auth || e.client_auth) => {
                    return Err(fail(format!(
                        "'{name}' extendedKeyUsage allows neither serverAuth nor clientAuth"
                    )));
                }
                Some(_) => {}
            }
            continue;
        }

        let child = label(&path[i - 1].cert);
        match &bc {
            Some(b) if b.ca => {}
            None if link.anchor => {} // a v1 root in the trust bundle
            _ => {
                return Err(fail(format!(
                    "'{name}' is not a CA (basicConstraints cA is not set) but issued '{child}'"
                )));
            }
        }
        match ku {
            Some(k) if k.key_cert_sign() => {}
            None if link.anchor => {}
            Some(_) => {
                return Err(fail(format!(
                    "'{name}' keyUsage lacks keyCertSign but issued '{child}'"
                )));
            }
            None => {
                return Err(fail(format!(
                    "'{name}' has no keyUsage extension but issued '{child}' (an issuing CA needs keyCertSign)"
                )));
            }
        }
        let below = i - 1;
        if let Some(n) = bc.as_ref().and_then(|b| b.path_len_constraint)
            && below as u64 > u64::from(n)
        {
            return Err(fail(format!(
                "'{name}' allows {n} intermediate CA(s) below it (pathLenConstraint) but the chain has {below}"
            )));
        }
        if let Some(e) = eku
            && !(e.any || e.server_auth || e.client_auth)
        {
            return Err(fail(format!(
                "'{name}' extendedKeyUsage allows neither serverAuth nor clientAuth, so it cannot issue TLS certificates"
            )));
        }
    }
    // A self-signed anchor's own signature is checked too: a corrupted bundle shows at once.
    if let Some(last) = path.last()
        && last.anchor
        && last.cert.subject().as_raw() == last.cert.issuer().as_raw()
    {
        verify_signed_by(&last.cert, &last.cert).map_err(fail)?;
    }
    Ok(())
}
