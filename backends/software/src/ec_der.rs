//! The PKCS#8 v1 encoding of a freshly generated EC key, written from the key's public
//! point and private scalar (its SPKI comes from `keyward_core::der::ec_spki`).
//!
//! aws-lc's own encoders convert the public point from projective coordinates again on
//! every call (a field inversion each), and a new leaf key needs both encodings: for
//! every service certificate that is two inversions more than needed. The layouts are
//! fixed for a curve, so they are written directly; the tests check them byte for byte
//! against aws-lc's encoders.

use keyward_core::der::{
    BIT_STRING, ID_EC_PUBLIC_KEY, INTEGER, OCTET_STRING, SEQUENCE, header, tlv_len,
};
use zeroize::Zeroizing;

/// ECPrivateKey's `[1] publicKey` field (context-specific, constructed).
const PUBLIC_KEY_FIELD: u8 = 0xa1;

/// The PKCS#8 v1 PrivateKeyInfo of an EC key as aws-lc writes it: the curve in the
/// AlgorithmIdentifier, and an ECPrivateKey (RFC 5915) without parameters, with the
/// public key. The buffer is sized exactly up front, so the scalar is copied once,
/// into memory that is zeroized when dropped.
pub(crate) fn pkcs8(curve_oid: &[u8], scalar: &[u8], point: &[u8]) -> Zeroizing<Vec<u8>> {
    let bits = 1 + point.len();
    let ec_private_key = 3 + tlv_len(scalar.len()) + tlv_len(tlv_len(bits));
    let alg_id_len = ID_EC_PUBLIC_KEY.len() + curve_oid.len();
    let body = 3 + tlv_len(alg_id_len) + tlv_len(tlv_len(ec_private_key));
    let mut out = Zeroizing::new(Vec::with_capacity(tlv_len(body)));
    header(&mut out, SEQUENCE, body);
    out.extend_from_slice(&[INTEGER, 1, 0]);
    header(&mut out, SEQUENCE, alg_id_len);
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
    use keyward_core::der::{P256_OID, P384_OID, ec_spki};

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
                    ec_spki(oid, point),
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
