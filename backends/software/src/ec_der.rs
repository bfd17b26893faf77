//! DER encodings of a freshly generated EC key (SubjectPublicKeyInfo and PKCS#8 v1),
//! written from the key's public point and private scalar.
//!
//! aws-lc's own encoders convert the public point from projective coordinates again on
//! every call (a field inversion each), and a new leaf key needs both encodings: for
//! every service certificate that is two inversions more than needed. The layouts are
//! fixed for a curve, so they are written here directly; the tests check them byte for
//! byte against aws-lc's encoders.

use zeroize::Zeroizing;

/// DER of the OID id-ecPublicKey (1.2.840.10045.2.1), tag and length included.
const ID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// DER of the OID prime256v1 (1.2.840.10045.3.1.7).
pub(crate) const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the OID secp384r1 (1.3.132.0.34).
pub(crate) const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const BIT_STRING: u8 = 0x03;
/// ECPrivateKey's `[1] publicKey` field (context-specific, constructed).
const PUBLIC_KEY_FIELD: u8 = 0xa1;

/// Length of a DER element whose contents are `len` bytes long.
fn tlv_len(len: usize) -> usize {
    1 + match len {
        0..=0x7f => 1,
        0x80..=0xff => 2,
        _ => 3,
    } + len
}

/// Writes a tag and a DER length (contents up to 65535 bytes: keys are far smaller).
fn header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    match len {
        0..=0x7f => out.push(len as u8),
        0x80..=0xff => out.extend_from_slice(&[0x81, len as u8]),
        _ => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
    }
}

/// `AlgorithmIdentifier { id-ecPublicKey, curve }` contents length.
fn alg_id_len(curve_oid: &[u8]) -> usize {
    ID_EC_PUBLIC_KEY.len() + curve_oid.len()
}

/// The SubjectPublicKeyInfo of an EC key: `point` is the uncompressed SEC1 point.
pub(crate) fn spki(curve_oid: &[u8], point: &[u8]) -> Vec<u8> {
    let bits = 1 + point.len();
    let body = tlv_len(alg_id_len(curve_oid)) + tlv_len(bits);
    let mut out = Vec::with_capacity(tlv_len(body));
    header(&mut out, SEQUENCE, body);
    header(&mut out, SEQUENCE, alg_id_len(curve_oid));
    out.extend_from_slice(ID_EC_PUBLIC_KEY);
    out.extend_from_slice(curve_oid);
    header(&mut out, BIT_STRING, bits);
    out.push(0);
    out.extend_from_slice(point);
    out
}

/// The PKCS#8 v1 PrivateKeyInfo of an EC key as aws-lc writes it: the curve in the
/// AlgorithmIdentifier, and an ECPrivateKey (RFC 5915) without parameters, with the
/// public key. The buffer is sized exactly up front, so the scalar is copied once,
/// into memory that is zeroized when dropped.
pub(crate) fn pkcs8(curve_oid: &[u8], scalar: &[u8], point: &[u8]) -> Zeroizing<Vec<u8>> {
    let bits = 1 + point.len();
    let ec_private_key = 3 + tlv_len(scalar.len()) + tlv_len(tlv_len(bits));
    let body = 3 + tlv_len(alg_id_len(curve_oid)) + tlv_len(tlv_len(ec_private_key));
    let mut out = Zeroizing::new(Vec::with_capacity(tlv_len(body)));
    header(&mut out, SEQUENCE, body);
    out.extend_from_slice(&[INTEGER, 1, 0]);
    header(&mut out, SEQUENCE, alg_id_len(curve_oid));
    out.extend_from_slice(ID_EC_PUBLIC_KEY);
    out.extend_from_slice(curve_oid);
    header(&mut out, OCTET_STRING, tlv_len(ec_private_key));
    header(&mut out, SEQUENCE, ec_private_key);
    out.extend_from_slice(&[INTEGER, 1, 1]);
    header(&mut out, OCTET_STRING, scalar.len());
    out.extend_from_slice(scalar);
    header(&mut out, PUBLIC_KEY_FIELD, tlv_len(bits));
    header(&mut out, BIT_STRING, bits);
    out.push(0);
    out.extend_from_slice(point);
    debug_assert_eq!(out.len(), out.capacity());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::{AsBigEndian, AsDer, EcPrivateKeyBin};
    use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};

    #[test]
    fn encodings_match_aws_lc_byte_for_byte() {
        for (alg, oid) in [
            (&signature::ECDSA_P256_SHA256_ASN1_SIGNING, P256_OID),
            (&signature::ECDSA_P384_SHA384_ASN1_SIGNING, P384_OID),
        ] {
            for _ in 0..20 {
                let k = EcdsaKeyPair::generate(alg).unwrap();
                let point = k.public_key().as_ref();
                let scalar: EcPrivateKeyBin<'_> = k.private_key().as_be_bytes().unwrap();
                assert_eq!(
                    spki(oid, point),
                    k.public_key().as_der().unwrap().as_ref(),
                    "SubjectPublicKeyInfo"
                );
                let ours = pkcs8(oid, scalar.as_ref(), point);
                assert_eq!(ours.as_slice(), k.to_pkcs8v1().unwrap().as_ref(), "PKCS#8");
                let back = EcdsaKeyPair::from_pkcs8(alg, &ours).unwrap();
                assert_eq!(back.public_key().as_ref(), point);
            }
        }
    }
}
