//! Signature verification against a DER public key, used to check every signature a
//! backend returns (conformance suite) and every certificate keyward issues.

use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::{Algorithm, Error};

/// Checks that `signature` over `message` verifies under the `SubjectPublicKeyInfo`
/// `spki_der` with `alg`. RSA-PSS signatures are accepted with a salt as long as the
/// hash (the common choice) or of the maximum length (OpenBao's default).
pub fn verify_signature(
    alg: Algorithm,
    spki_der: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    let raw = subject_public_key(spki_der)?;
    let ok = aws_lc_rs::signature::UnparsedPublicKey::new(alg.verification(), &raw)
        .verify(message, signature)
        .is_ok()
        || (matches!(alg, Algorithm::RsaPssSha256(_))
            && aws_lc_rs::signature::UnparsedPublicKey::new(&PSS_MAX_SALT, &raw)
                .verify(message, signature)
                .is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::Verification(format!(
            "{alg} signature does not verify under the public key"
        )))
    }
}

/// RSA-PSS SHA-256 verification with the maximum salt length.
static PSS_MAX_SALT: aws_lc_rs::signature::RsaParameters =
    aws_lc_rs::signature::RSA_PSS_2048_8192_SHA256
        .with_pss_salt_length(aws_lc_rs::signature::RsaPssSaltLength::Max);

/// The raw `subjectPublicKey` bits of a DER `SubjectPublicKeyInfo`.
pub fn subject_public_key(spki_der: &[u8]) -> Result<Vec<u8>, Error> {
    let (rest, spki) = SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| Error::InvalidInput(format!("malformed SubjectPublicKeyInfo: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::InvalidInput(
            "trailing bytes after SubjectPublicKeyInfo".into(),
        ));
    }
    Ok(spki.subject_public_key.data.to_vec())
}

/// Converts an ECDSA signature from the fixed-width `r || s` form (PKCS#11, JOSE) to
/// the DER `Ecdsa-Sig-Value` that X.509 uses.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, Error> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 132 {
        return Err(Error::backend(format!(
            "ECDSA signature of {} bytes is not a valid r||s pair",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let r = der_unsigned_integer(r);
    let s = der_unsigned_integer(s);
    let mut out = Vec::with_capacity(r.len() + s.len() + 3);
    out.push(0x30);
    push_der_len(&mut out, r.len() + s.len());
    out.extend_from_slice(&r);
    out.extend_from_slice(&s);
    Ok(out)
}

/// Converts a DER `Ecdsa-Sig-Value` to fixed-width `r || s` of `field_len` bytes each.
pub fn ecdsa_der_to_raw(der: &[u8], field_len: usize) -> Result<Vec<u8>, Error> {
    let bad = || Error::backend("malformed DER ECDSA signature");
    let (body, rest) = der_take(der, 0x30).ok_or_else(bad)?;
    if !rest.is_empty() {
        return Err(bad());
    }
    let (r, body) = der_take(body, 0x02).ok_or_else(bad)?;
    let (s, body) = der_take(body, 0x02).ok_or_else(bad)?;
    if !body.is_empty() {
        return Err(bad());
    }
    let mut out = vec![0u8; field_len * 2];
    for (i, n) in [r, s].into_iter().enumerate() {
        let n = strip_leading_zeros(n);
        if n.len() > field_len {
            return Err(bad());
        }
        let end = field_len * (i + 1);
        out[end - n.len()..end].copy_from_slice(n);
    }
    Ok(out)
}

fn strip_leading_zeros(mut n: &[u8]) -> &[u8] {
    while n.len() > 1 && n[0] == 0 {
        n = &n[1..];
    }
    n
}

fn der_unsigned_integer(n: &[u8]) -> Vec<u8> {
    let n = strip_leading_zeros(n);
    let pad = n[0] & 0x80 != 0;
    let mut out = Vec::with_capacity(n.len() + 3);
    out.push(0x02);
    push_der_len(&mut out, n.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(n);
    out
}

fn push_der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        out.push(0x81);
        out.push(len as u8);
    }
}

/// Splits one DER element with tag `tag` off the front of `input`: (content, rest).
fn der_take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&l0, rest) = rest.split_first()?;
    let (len, rest) = match l0 {
        l if l < 0x80 => (l as usize, rest),
        0x81 => {
            let (&l, rest) = rest.split_first()?;
            (l as usize, rest)
        }
        _ => return None,
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_der_round_trip_with_high_bits_and_zeros() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a 0x00 pad
        raw[32] = 0x00;
        raw[33] = 0x01; // s has leading zero
        raw[63] = 0x7f;
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(der[0], 0x30);
        assert_eq!(ecdsa_der_to_raw(&der, 32).unwrap(), raw);
    }

    #[test]
    fn long_signatures_use_long_form_lengths() {
        let raw = vec![0xffu8; 132];
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(&der[..2], &[0x30, 0x81]);
        assert_eq!(ecdsa_der_to_raw(&der, 66).unwrap(), raw);
        let raw = vec![0xffu8; 96];
        assert_eq!(
            ecdsa_der_to_raw(&ecdsa_raw_to_der(&raw).unwrap(), 48).unwrap(),
            raw
        );
    }

    #[test]
    fn odd_raw_length_is_rejected() {
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_err());
    }
}
