//! DER `SubjectPublicKeyInfo` built from PKCS#11 public key attributes, and the curve
//! parameters (`CKA_EC_PARAMS`) keyward writes and recognizes.

use keyward_core::Error;

/// DER OID of NIST P-256 (1.2.840.10045.3.1.7), as `CKA_EC_PARAMS`.
pub(crate) const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER OID of NIST P-384 (1.3.132.0.34), as `CKA_EC_PARAMS`.
pub(crate) const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// DER OID of Ed25519 (1.3.101.112), as `CKA_EC_PARAMS` (PKCS#11 3.0).
pub(crate) const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// `PrintableString "edwards25519"`: the older way modules name the curve.
const ED25519_PRINTABLE: &[u8] = b"\x13\x0cedwards25519";
/// The OID some older modules use for Ed25519 (1.3.6.1.4.1.11591.15.1).
const ED25519_GNU: &[u8] = &[
    0x06, 0x09, 0x2b, 0x06, 0x01, 0x04, 0x01, 0xda, 0x47, 0x0f, 0x01,
];

const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
const DER_NULL: &[u8] = &[0x05, 0x00];

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
        match der_take(ec_point, 0x04) {
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
    let algorithm = match curve {
        Curve::P256 => tlv(0x30, &[OID_EC_PUBLIC_KEY, P256_PARAMS].concat()),
        Curve::P384 => tlv(0x30, &[OID_EC_PUBLIC_KEY, P384_PARAMS].concat()),
        Curve::Ed25519 => tlv(0x30, ED25519_PARAMS),
    };
    Ok(tlv(0x30, &[algorithm, bit_string(point)].concat()))
}

/// The SPKI of an RSA public key from `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT`.
pub(crate) fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let algorithm = tlv(0x30, &[OID_RSA_ENCRYPTION, DER_NULL].concat());
    let key = tlv(0x30, &[der_uint(modulus), der_uint(exponent)].concat());
    tlv(0x30, &[algorithm, bit_string(&key)].concat())
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

fn der_uint(n: &[u8]) -> Vec<u8> {
    let n = strip_zeros(n);
    let mut content = Vec::with_capacity(n.len() + 1);
    if n.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(n);
    tlv(0x02, &content)
}

fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(bytes.len() + 1);
    content.push(0); // no unused bits
    content.extend_from_slice(bytes);
    tlv(0x03, &content)
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 4);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
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
