//! Text forms of names, keys and signature algorithms found in certificates, and the
//! mapping from a certificate's signature algorithm to keyward's [`Algorithm`].

use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_HASH_SHA256,
    OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS, OID_PKCS1_SHA256WITHRSA, OID_PKCS9_EMAIL_ADDRESS,
    OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519, OID_X509_COMMON_NAME,
    OID_X509_COUNTRY_NAME, OID_X509_LOCALITY_NAME, OID_X509_ORGANIZATION_NAME,
    OID_X509_ORGANIZATIONAL_UNIT, OID_X509_SERIALNUMBER, OID_X509_STATE_OR_PROVINCE_NAME, Oid,
};
use x509_parser::public_key::PublicKey;
use x509_parser::signature_algorithm::RsaSsaPssParams;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo, X509Name};

use crate::{Algorithm, KeyType, RsaBits};

/// The short label of a name attribute (`CN`, `O`, ...) or its dotted OID.
fn attribute_label(oid: &Oid<'_>) -> String {
    let known = [
        (OID_X509_COMMON_NAME, "CN"),
        (OID_X509_ORGANIZATION_NAME, "O"),
        (OID_X509_ORGANIZATIONAL_UNIT, "OU"),
        (OID_X509_COUNTRY_NAME, "C"),
        (OID_X509_LOCALITY_NAME, "L"),
        (OID_X509_STATE_OR_PROVINCE_NAME, "ST"),
        (OID_X509_SERIALNUMBER, "serialNumber"),
        (OID_PKCS9_EMAIL_ADDRESS, "emailAddress"),
    ];
    known
        .iter()
        .find(|(o, _)| o == oid)
        .map(|(_, l)| (*l).to_string())
        .unwrap_or_else(|| oid.to_id_string())
}

/// Escapes an attribute value the way RFC 4514 does (`,`, `+`, `\`, ... and edge spaces),
/// so that [`crate::issuance::parse_subject`] reads it back.
fn escape_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let edge_space = c == ' ' && (i == 0 || i == last);
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || edge_space
            || (i == 0 && c == '#')
        {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A distinguished name as `CN=x, O=y` in certificate order; multi-valued RDNs are
/// joined with `+`, values that are not strings are shown as `#` and hex.
pub(crate) fn name_to_string(name: &X509Name<'_>) -> String {
    name.iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let value = match attr.as_str() {
                        Ok(s) => escape_value(s),
                        Err(_) => format!("#{}", hex::encode(attr.attr_value().data)),
                    };
                    format!("{}={value}", attribute_label(attr.attr_type()))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A subject alternative name as `DNS:x`, `IP:x`, `URI:x`, `email:x` (openssl's labels).
pub(crate) fn general_name_to_string(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(s) => format!("DNS:{s}"),
        GeneralName::URI(s) => format!("URI:{s}"),
        GeneralName::RFC822Name(s) => format!("email:{s}"),
        GeneralName::IPAddress(b) => match b.len() {
            4 => format!(
                "IP:{}",
                std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())
            ),
            16 => format!(
                "IP:{}",
                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())
            ),
            _ => format!("IP:#{}", hex::encode(b)),
        },
        GeneralName::DirectoryName(n) => format!("DirName:{}", name_to_string(n)),
        GeneralName::OtherName(oid, _) => format!("othername:{}", oid.to_id_string()),
        GeneralName::RegisteredID(oid) => format!("RID:{}", oid.to_id_string()),
        other => format!("{other:?}"),
    }
}

/// The size in bits of an RSA key's modulus, if `spki` holds one.
fn rsa_bits(spki: &SubjectPublicKeyInfo<'_>) -> Option<u32> {
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => Some(rsa.key_size() as u32),
        _ => None,
    }
}

/// The curve OID of an EC key.
fn ec_curve<'a>(spki: &'a SubjectPublicKeyInfo<'_>) -> Option<Oid<'a>> {
    spki.algorithm.parameters.as_ref()?.as_oid().ok()
}

/// The modulus size in bits of an `rsaEncryption` key (not an RSA-PSS-only key); 0 when
/// the key cannot be read. `None` for any other kind of key.
pub(crate) fn rsa_encryption_bits(spki: &SubjectPublicKeyInfo<'_>) -> Option<u32> {
    (spki.algorithm.algorithm == OID_PKCS1_RSAENCRYPTION).then(|| rsa_bits(spki).unwrap_or(0))
}

/// The [`KeyType`] of a subject key, or `None` for a key keyward does not make: other
/// curves and algorithms, RSA-PSS-only keys, RSA sizes other than 2048, 3072 and 4096.
pub(crate) fn key_type(spki: &SubjectPublicKeyInfo<'_>) -> Option<KeyType> {
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        match ec_curve(spki)? {
            c if c == OID_EC_P256 => Some(KeyType::EcP256),
            c if c == OID_NIST_EC_P384 => Some(KeyType::EcP384),
            _ => None,
        }
    } else if *oid == OID_SIG_ED25519 {
        Some(KeyType::Ed25519)
    } else {
        RsaBits::from_bits(rsa_encryption_bits(spki)?).map(KeyType::Rsa)
    }
}

/// keyward's name for a subject key: `ecdsa-p256`, `ecdsa-p384`, `ed25519`, `rsa-2048`,
/// `rsa-pss-2048`, or the algorithm OID for anything else.
pub(crate) fn key_algorithm_name(spki: &SubjectPublicKeyInfo<'_>) -> String {
    if let Some(kt) = key_type(spki) {
        return Algorithm::default_for(kt).name().into();
    }
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        match ec_curve(spki) {
            Some(c) => format!("ec-{}", c.to_id_string()),
            None => "ec-unknown-curve".into(),
        }
    } else if let Some(bits) = rsa_encryption_bits(spki) {
        format!("rsa-{bits}")
    } else if *oid == OID_PKCS1_RSASSAPSS {
        format!("rsa-pss-{}", rsa_bits(spki).unwrap_or(0))
    } else {
        oid.to_id_string()
    }
}

/// The RSA size label to use for verification (any modulus aws-lc accepts verifies
/// the same way; the label only matters for messages).
fn rsa_label(spki: &SubjectPublicKeyInfo<'_>) -> Result<RsaBits, String> {
    let bits = rsa_bits(spki).ok_or("the issuer key is not an RSA key")?;
    match RsaBits::from_bits(bits) {
        Some(b) => Ok(b),
        None if (2048..=8192).contains(&bits) => Ok(RsaBits::B2048),
        None => Err(format!(
            "RSA key of {bits} bits is not accepted (2048 to 8192)"
        )),
    }
}

/// Maps a certificate's (or CSR's) signature algorithm, together with the key that
/// made the signature, to keyward's [`Algorithm`], which [`crate::verify_signature`] takes.
pub(crate) fn signature_algorithm(
    sig: &AlgorithmIdentifier<'_>,
    signer_key: &SubjectPublicKeyInfo<'_>,
) -> Result<Algorithm, String> {
    let oid = &sig.algorithm;
    // The algorithm whose key type the signer key must have.
    let needs = |alg: Algorithm| {
        if key_type(signer_key) == Some(alg.key_type()) {
            Ok(alg)
        } else {
            Err(format!(
                "signature algorithm {} does not match the {} issuer key",
                oid.to_id_string(),
                key_algorithm_name(signer_key)
            ))
        }
    };
    if *oid == OID_SIG_ECDSA_WITH_SHA256 {
        needs(Algorithm::EcdsaP256Sha256)
    } else if *oid == OID_SIG_ECDSA_WITH_SHA384 {
        needs(Algorithm::EcdsaP384Sha384)
    } else if *oid == OID_SIG_ED25519 {
        needs(Algorithm::Ed25519)
    } else if *oid == OID_PKCS1_SHA256WITHRSA {
        Ok(Algorithm::RsaPkcs1Sha256(rsa_label(signer_key)?))
    } else if *oid == OID_PKCS1_RSASSAPSS {
        let sha256 = sig
            .parameters
            .as_ref()
            .and_then(|p| RsaSsaPssParams::try_from(p).ok())
            .is_some_and(|p| *p.hash_algorithm_oid() == OID_NIST_HASH_SHA256);
        if !sha256 {
            return Err("RSA-PSS signatures are accepted with SHA-256 only".into());
        }
        Ok(Algorithm::RsaPssSha256(rsa_label(signer_key)?))
    } else {
        Err(format!(
            "signature algorithm {} is not supported (expected ECDSA P-256/SHA-256, \
             ECDSA P-384/SHA-384, Ed25519, RSA PKCS#1 or PSS with SHA-256)",
            oid.to_id_string()
        ))
    }
}
