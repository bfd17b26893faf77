//! DER `SubjectPublicKeyInfo` built from PKCS#11 public key attributes, and the curve
//! parameters (`CKA_EC_PARAMS`) keyward writes and recognizes.

use keyward_core::{Error, der};

/// DER OID of NIST P-256, as `CKA_EC_PARAMS`.
pub(crate) const P256_PARAMS: &[u8] = der::P256_OID;
/// DER OID of NIST P-384, as `CKA_EC_PARAMS`.
pub(crate) const P384_PARAMS: &[u8] = der::P384_OID;
/// DER OID of Ed25519, as `CKA_EC_PARAMS` (PKCS#11 3.0).
pub(crate) const ED25519_PARAMS: &[u8] = der::ED25519_OID;
/// `PrintableString "edwards25519"`: the older way modules name the curve.
const ED25519_PRINTABLE: &[u8] = b"\x13\x0cedwards25519";
/// The OID some older modules use for Ed25519 (1.3.6.1.4.1.11591.15.1).
const ED25519_GNU: &[u8] = &[
    0x06, 0x09, 0x2b, 0x06, 0x01, 0x04, 0x01, 0xda, 0x47, 0x0f, 0x01,
];

/// An elliptic curve keyward can use, recognized from `CKA_EC_PARAMS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
    Ed25519,
}

impl Curve {
    /// The curve named by `CKA_EC_PARAMS`, if keyward knows it.
    pub(crate) fn from_params(params: &[u8]) -> Option<Curve> {
        match params {
            P256_PARAMS => Some(Curve::P256),
            P384_PARAMS => Some(Curve::P384),
            ED25519_PARAMS | ED25519_PRINTABLE | ED25519_GNU => Some(Curve::Ed25519),
            _ => None,
        }
    }

    /// The name shown to people: `P-256`, `P-384`, `Ed25519`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::Ed25519 => "Ed25519",
        }
    }

    /// The length of the public point as it goes into the SPKI bit string.
    fn point_len(self) -> usize {
        match self {
            Curve::P256 => 65,
            Curve::P384 => 97,
            Curve::Ed25519 => 32,
        }
    }
}

/// The SPKI of an EC or Ed25519 public key from its `CKA_EC_POINT`, which modules
/// return either raw or wrapped in a DER OCTET STRING.
pub(crate) fn ec_spki(curve: Curve, ec_point: &[u8]) -> Result<Vec<u8>, Error> {
    let want = curve.point_len();
    let point = if ec_point.len() == want {
        ec_point
    } else {
        match der_take(ec_point, der::OCTET_STRING) {
            Some((inner, [])) if inner.len() == want => inner,
            _ => {
                return Err(Error::backend(format!(
                    "the token returned a {}-byte CKA_EC_POINT for a {} key; expected {want} bytes, raw or as a DER OCTET STRING",
                    ec_point.len(),
                    curve.name()
                )));
            }
        }
    };
    if curve != Curve::Ed25519 && point[0] != 0x04 {
        return Err(Error::backend(format!(
            "the token returned a compressed or malformed {} public point",
            curve.name()
        )));
    }
    Ok(match curve {
        Curve::P256 => der::ec_spki(P256_PARAMS, point),
        Curve::P384 => der::ec_spki(P384_PARAMS, point),
        Curve::Ed25519 => der::ed25519_spki(point),
    })
}

/// The size in bits of a big-endian unsigned integer.
pub(crate) fn bit_len(n: &[u8]) -> u32 {
    let n = strip_zeros(n);
    match n.first() {
        None => 0,
        Some(&top) => (n.len() as u32 - 1) * 8 + (8 - top.leading_zeros()),
    }
}

fn strip_zeros(mut n: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = n {
        n = rest;
    }
    n
}

/// Splits one DER element with `tag` off the front of `input`: (content, rest).
fn der_take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&l0, rest) = rest.split_first()?;
    let (len, rest) = match l0 {
        l if l < 0x80 => (usize::from(l), rest),
        0x81 => {
            let (&l, rest) = rest.split_first()?;
            (usize::from(l), rest)
        }
        0x82 => {
            let (l, rest) = rest.split_at_checked(2)?;
            (usize::from(l[0]) << 8 | usize::from(l[1]), rest)
        }
        _ => return None,
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}
