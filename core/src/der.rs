//! DER `SubjectPublicKeyInfo` encodings written from raw key material (an EC point, an
//! Ed25519 key, an RSA modulus and exponent), and the few DER pieces they are made of.
//! Backends whose keys come as raw numbers (PKCS#11 attributes, a Transit Ed25519 key,
//! a freshly generated software key) build their SPKI here, one way for all of them.
//! Reading goes the other way one element at a time ([`element`]), for the structures
//! issuance walks without a full parse (the certificate it just signed, a CSR's
//! outline).

use x509_parser::asn1_rs::{Any, Class, FromDer, Tag};

/// DER of the OID id-ecPublicKey (1.2.840.10045.2.1), tag and length included.
pub const ID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// DER of the OID prime256v1 / NIST P-256 (1.2.840.10045.3.1.7).
pub const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the OID secp384r1 / NIST P-384 (1.3.132.0.34).
pub const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// DER of the OID id-Ed25519 (1.3.101.112).
pub const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER of the OID rsaEncryption (1.2.840.113549.1.1.1).
const RSA_ENCRYPTION_OID: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];

/// The SEQUENCE tag.
pub const SEQUENCE: u8 = 0x30;
/// The INTEGER tag.
pub const INTEGER: u8 = 0x02;
/// The OCTET STRING tag.
pub const OCTET_STRING: u8 = 0x04;
/// The BIT STRING tag.
pub const BIT_STRING: u8 = 0x03;

/// One DER element of `input` (of the universal tag `tag` when one is given): the
/// element and the bytes after it; `None` when `input` does not start with one.
pub(crate) fn element(input: &[u8], tag: Option<Tag>) -> Option<(Any<'_>, &[u8])> {
    let (rest, any) = Any::from_der(input).ok()?;
    (tag.is_none_or(|t| any.class() == Class::Universal && any.tag() == t)).then_some((any, rest))
}

/// The length of a DER element whose contents are `len` bytes long (up to 65535).
pub fn tlv_len(len: usize) -> usize {
    1 + match len {
        0..=0x7f => 1,
        0x80..=0xff => 2,
        _ => 3,
    } + len
}

/// Writes a tag and the DER length of `len` content bytes (up to 65535: keys are far
/// smaller).
pub fn header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    match len {
        0..=0x7f => out.push(len as u8),
        0x80..=0xff => out.extend_from_slice(&[0x81, len as u8]),
        _ => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
    }
}

/// The SPKI of an EC key on the curve `curve_oid` ([`P256_OID`] or [`P384_OID`]);
/// `point` is the uncompressed SEC1 point.
pub fn ec_spki(curve_oid: &[u8], point: &[u8]) -> Vec<u8> {
    spki(&[ID_EC_PUBLIC_KEY, curve_oid], point)
}

/// The SPKI of a raw 32-byte Ed25519 public key.
pub fn ed25519_spki(key: &[u8]) -> Vec<u8> {
    spki(&[ED25519_OID], key)
}

/// The SPKI of an RSA key from its big-endian modulus and public exponent (leading
/// zero bytes allowed).
pub fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let (n, e) = (strip_zeros(modulus), strip_zeros(exponent));
    let body = uint_len(n) + uint_len(e);
    let mut key = Vec::with_capacity(tlv_len(body));
    header(&mut key, SEQUENCE, body);
    push_uint(&mut key, n);
    push_uint(&mut key, e);
    spki(&[RSA_ENCRYPTION_OID, &[0x05, 0x00]], &key)
}

/// `SEQUENCE { SEQUENCE { algorithm... }, BIT STRING key }`.
fn spki(algorithm: &[&[u8]], key: &[u8]) -> Vec<u8> {
    let alg_len: usize = algorithm.iter().map(|p| p.len()).sum();
    let bits = 1 + key.len();
    let body = tlv_len(alg_len) + tlv_len(bits);
    let mut out = Vec::with_capacity(tlv_len(body));
    header(&mut out, SEQUENCE, body);
    header(&mut out, SEQUENCE, alg_len);
    for part in algorithm {
        out.extend_from_slice(part);
    }
    header(&mut out, BIT_STRING, bits);
    out.push(0); // no unused bits
    out.extend_from_slice(key);
    out
}

fn strip_zeros(mut n: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = n {
        n = rest;
    }
    n
}

/// Whether an unsigned big-endian number (zeros stripped) needs a leading 0 byte to
/// stay positive as a DER INTEGER (zero itself is one 0 byte).
fn needs_pad(n: &[u8]) -> bool {
    n.first().is_none_or(|b| b & 0x80 != 0)
}

fn uint_len(n: &[u8]) -> usize {
    tlv_len(n.len() + usize::from(needs_pad(n)))
}

fn push_uint(out: &mut Vec<u8>, n: &[u8]) {
    header(out, INTEGER, n.len() + usize::from(needs_pad(n)));
    if needs_pad(n) {
        out.push(0);
    }
    out.extend_from_slice(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_take_one_two_or_three_bytes() {
        for (len, want) in [
            (0, 2),
            (0x7f, 0x81),
            (0x80, 0x83),
            (0xff, 0x102),
            (0x100, 0x104),
        ] {
            let mut out = Vec::new();
            header(&mut out, SEQUENCE, len);
            assert_eq!(out.len() + len, want);
            assert_eq!(tlv_len(len), want);
        }
    }

    #[test]
    fn ed25519_spki_is_the_fixed_prefix_and_the_key() {
        let spki = ed25519_spki(&[7; 32]);
        assert_eq!(
            &spki[..12],
            &[
                0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00
            ]
        );
        assert_eq!(&spki[12..], &[7; 32]);
    }

    #[test]
    fn rsa_integers_are_padded_to_stay_positive() {
        let spki = rsa_spki(&[0x00, 0x00, 0xc1, 0x02], &[0x01, 0x00, 0x01]);
        // ... BIT STRING { SEQUENCE { INTEGER 00 c1 02, INTEGER 01 00 01 } }
        assert!(spki.ends_with(&[
            0x03, 0x0d, 0x00, 0x30, 0x0a, 0x02, 0x03, 0x00, 0xc1, 0x02, 0x02, 0x03, 0x01, 0x00,
            0x01
        ]));
    }
}
