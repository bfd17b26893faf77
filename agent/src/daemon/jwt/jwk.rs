//! Public keys as JWKs (RFC 7517/7518/8037) and the JWKS a trust domain publishes.
//!
//! Each key's `kid` is its RFC 7638 thumbprint (SHA-256 over the required members in
//! lexicographic order), so the same public key always gets the same `kid`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use keyward_core::{Algorithm, Error, KeyType, subject_public_key};
use serde_json::{Value, json};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The JWK of a public key (with `kid`, `alg` and `use: jwt-svid`).
pub fn from_spki(alg: Algorithm, jose_alg: &str, spki_der: &[u8]) -> Result<Value, Error> {
    let b64 = |b: &[u8]| B64.encode(b);
    let (required, mut jwk) = match alg.key_type() {
        KeyType::EcP256 | KeyType::EcP384 => {
            let crv = if alg.key_type() == KeyType::EcP256 {
                "P-256"
            } else {
                "P-384"
            };
            let point = subject_public_key(spki_der)?;
            let width = if crv == "P-256" { 32 } else { 48 };
            if point.len() != 1 + 2 * width || point[0] != 4 {
                return Err(Error::backend(format!(
                    "the {crv} public key is not an uncompressed point"
                )));
            }
            let (x, y) = (b64(&point[1..=width]), b64(&point[1 + width..]));
            (
                format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#),
                json!({"kty": "EC", "crv": crv, "x": x, "y": y}),
            )
        }
        KeyType::Ed25519 => {
            let x = b64(&subject_public_key(spki_der)?);
            (
                format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
                json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
            )
        }
        KeyType::Rsa(_) => {
            let (n, e) = rsa_parts(spki_der)?;
            (
                format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
                json!({"kty": "RSA", "n": n, "e": e}),
            )
        }
    };
    let kid = b64(&keyward_core::HashAlg::Sha256.digest(required.as_bytes()));
    jwk["kid"] = Value::String(kid);
    jwk["alg"] = Value::String(jose_alg.to_string());
    jwk["use"] = Value::String("jwt-svid".to_string());
    Ok(jwk)
}

/// The RSA modulus and exponent, base64url without leading zero octets.
fn rsa_parts(spki_der: &[u8]) -> Result<(String, String), Error> {
    let bad = || Error::backend("malformed RSA public key");
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der).map_err(|_| bad())?;
    let PublicKey::RSA(rsa) = spki.parsed().map_err(|_| bad())? else {
        return Err(bad());
    };
    let strip = |mut b: &[u8]| {
        while b.len() > 1 && b[0] == 0 {
            b = &b[1..];
        }
        B64.encode(b)
    };
    Ok((strip(rsa.modulus), strip(rsa.exponent)))
}

/// The JWKS document `{"keys": [...]}` of `keys`.
pub fn set<'a>(keys: impl IntoIterator<Item = &'a Value>) -> Vec<u8> {
    let keys: Vec<&Value> = keys.into_iter().collect();
    serde_json::to_vec(&json!({ "keys": keys })).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_core::RsaBits;
    use keyward_software::SoftwareKey;

    fn key(alg: Algorithm) -> SoftwareKey {
        let uri = keyward_core::KeyUri::parse("file:/nonexistent/k.pem").unwrap();
        SoftwareKey::generate(alg, uri).unwrap().0
    }

    #[test]
    fn every_key_type_gives_its_members_and_a_stable_kid() {
        use keyward_core::KeySigner;
        for (alg, kty, members) in [
            (Algorithm::EcdsaP256Sha256, "EC", &["crv", "x", "y"][..]),
            (Algorithm::EcdsaP384Sha384, "EC", &["crv", "x", "y"][..]),
            (Algorithm::Ed25519, "OKP", &["crv", "x"][..]),
            (
                Algorithm::RsaPkcs1Sha256(RsaBits::B2048),
                "RSA",
                &["n", "e"][..],
            ),
        ] {
            let k = key(alg);
            let jwk = from_spki(alg, "X", k.public_key_spki_der()).unwrap();
            assert_eq!(jwk["kty"], kty);
            assert_eq!(jwk["use"], "jwt-svid");
            for m in members {
                assert!(jwk[m].is_string(), "{alg}: {m} in {jwk}");
            }
            let again = from_spki(alg, "X", k.public_key_spki_der()).unwrap();
            assert_eq!(jwk["kid"], again["kid"]);
            assert_eq!(jwk["kid"].as_str().unwrap().len(), 43);
        }
        let rsa = from_spki(
            Algorithm::RsaPkcs1Sha256(RsaBits::B2048),
            "RS256",
            key(Algorithm::RsaPkcs1Sha256(RsaBits::B2048)).public_key_spki_der(),
        )
        .unwrap();
        assert_eq!(rsa["e"], "AQAB");
        assert_eq!(B64.decode(rsa["n"].as_str().unwrap()).unwrap().len(), 256);
    }
}
