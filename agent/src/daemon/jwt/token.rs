//! JWT-SVIDs (compact JWS): signed through `KeySigner`, so the private key never leaves
//! its backend, and checked against the published keys.
//!
//! Header `{alg, kid, typ: "JWT"}`, claims `{sub, aud: [..], exp, iat}`, base64url
//! without padding; ECDSA signatures in the JOSE `r || s` form.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use keyward_core::{Algorithm, Error, ecdsa_der_to_raw, ecdsa_raw_to_der, verify_signature};
use serde_json::{Map, Value, json};

use super::keys::{Generation, KeySet};

/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The width of each of `r` and `s` in a JOSE ECDSA signature.
fn ecdsa_field_len(alg: Algorithm) -> Option<usize> {
    match alg {
        Algorithm::EcdsaP256Sha256 => Some(32),
        Algorithm::EcdsaP384Sha384 => Some(48),
        _ => None,
    }
}

/// Signs a JWT-SVID for `spiffe_id` and `audience`, valid from `now` (unix seconds)
/// for `ttl_secs`.
pub async fn sign(
    key: &Generation,
    spiffe_id: &str,
    audience: &[String],
    now: u64,
    ttl_secs: u64,
) -> Result<String, Error> {
    let header = json!({"alg": key.jose_alg, "kid": key.kid, "typ": "JWT"});
    let claims = json!({"sub": spiffe_id, "aud": audience, "exp": now + ttl_secs, "iat": now});
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let signature = key.signer.sign(input.as_bytes()).await?;
    let alg = key.signer.algorithm();
    let signature = match ecdsa_field_len(alg) {
        Some(width) => ecdsa_der_to_raw(&signature, width)?,
        None => signature,
    };
    Ok(format!("{input}.{}", B64.encode(signature)))
}

/// A token that passed [`validate`].
#[derive(Debug)]
pub struct Valid {
    /// The `sub` claim.
    pub spiffe_id: String,
    /// Every claim.
    pub claims: Map<String, Value>,
}

/// Checks `token`: a published key by `kid`, its signature, `exp` after `now` (unix
/// seconds), `audience` among `aud`, and `sub` a SPIFFE ID of `trust_domain_id`. The
/// error is one line saying what is wrong.
pub fn validate(
    token: &str,
    audience: &str,
    keys: &KeySet,
    trust_domain_id: &str,
    now: u64,
) -> Result<Valid, String> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(format!("the token is longer than {MAX_TOKEN_LEN} bytes"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS (header.claims.signature)".into());
    };
    let header = json_part(h, "header")?;
    let claims = json_part(c, "claims")?;
    let signature = B64
        .decode(s)
        .map_err(|_| "the signature is not base64url".to_string())?;
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or("the header has no kid")?;
    let key = keys
        .find(kid)
        .ok_or_else(|| format!("no published key has kid '{kid}'"))?;
    if header.get("alg").and_then(Value::as_str) != Some(key.jose_alg) {
        return Err(format!(
            "the header's alg is not {}, the key's algorithm",
            key.jose_alg
        ));
    }
    if header
        .get("typ")
        .is_some_and(|t| !matches!(t.as_str(), Some("JWT" | "JOSE")))
    {
        return Err("the header's typ is neither JWT nor JOSE".into());
    }
    check_signature(key, &format!("{h}.{c}"), &signature)?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or("the claims have no exp")?;
    if exp <= now {
        return Err(format!("the token expired at {exp} (unix time)"));
    }
    let listed = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
        _ => return Err("the claims have no aud".into()),
    };
    if !listed {
        return Err(format!(
            "the audience '{audience}' is not in the token's aud"
        ));
    }
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or("the claims have no sub")?;
    let in_domain = sub
        .strip_prefix(trust_domain_id)
        .is_some_and(|rest| rest.starts_with('/'));
    if !in_domain {
        return Err(format!(
            "sub '{sub}' is not a SPIFFE ID of {trust_domain_id}"
        ));
    }
    Ok(Valid {
        spiffe_id: sub.to_string(),
        claims,
    })
}

fn json_part(part: &str, what: &str) -> Result<Map<String, Value>, String> {
    let bytes = B64
        .decode(part)
        .map_err(|_| format!("the {what} is not base64url"))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(format!("the {what} is not a JSON object")),
    }
}

fn check_signature(key: &Generation, input: &str, signature: &[u8]) -> Result<(), String> {
    let alg = key.signer.algorithm();
    let bad = || "the signature does not verify".to_string();
    let signature = match ecdsa_field_len(alg) {
        Some(width) if signature.len() == 2 * width => {
            ecdsa_raw_to_der(signature).map_err(|_| bad())?
        }
        Some(_) => return Err(bad()),
        None => signature.to_vec(),
    };
    verify_signature(
        alg,
        key.signer.public_key_spki_der(),
        input.as_bytes(),
        &signature,
    )
    .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use keyward_core::{KeySigner, RsaBits};
    use keyward_software::SoftwareKey;
    use prost::bytes::Bytes;

    use super::*;
    use crate::daemon::jwt::{jose_name, jwk};

    const TD: &str = "spiffe://example.org";

    fn keys(alg: Algorithm) -> KeySet {
        let uri = keyward_core::KeyUri::parse("file:/nonexistent/jwt.pem").unwrap();
        let signer: Arc<dyn KeySigner> = Arc::new(SoftwareKey::generate(alg, uri).unwrap().0);
        let jose_alg = jose_name(alg).unwrap();
        let jwk = jwk::from_spki(alg, jose_alg, signer.public_key_spki_der()).unwrap();
        let g = Arc::new(Generation {
            kid: jwk["kid"].as_str().unwrap().to_string(),
            signer,
            jose_alg,
            jwk,
        });
        KeySet {
            active: g.clone(),
            published: vec![g],
            jwks: Bytes::new(),
            ttl: Duration::from_secs(300),
        }
    }

    fn signed(k: &KeySet) -> String {
        let aud = vec!["db".to_string(), "web".to_string()];
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(sign(&k.active, &format!("{TD}/api"), &aud, 1000, 300))
            .unwrap()
    }

    #[test]
    fn every_algorithm_signs_tokens_that_validate() {
        for alg in [
            Algorithm::EcdsaP256Sha256,
            Algorithm::EcdsaP384Sha384,
            Algorithm::Ed25519,
            Algorithm::RsaPkcs1Sha256(RsaBits::B2048),
        ] {
            let k = keys(alg);
            let t = signed(&k);
            let v = validate(&t, "web", &k, TD, 1200).unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(v.spiffe_id, format!("{TD}/api"));
            assert_eq!(v.claims["exp"], 1300);
            let sig = B64.decode(t.rsplit('.').next().unwrap()).unwrap();
            if let Some(w) = ecdsa_field_len(alg) {
                assert_eq!(sig.len(), 2 * w, "{alg}: JOSE r||s");
            }
        }
    }

    #[test]
    fn tampered_expired_foreign_and_misaddressed_tokens_are_refused() {
        let k = keys(Algorithm::EcdsaP256Sha256);
        let t = signed(&k);
        let parts: Vec<&str> = t.split('.').collect();
        let mut claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        claims["sub"] = json!(format!("{TD}/admin"));
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(claims.to_string()),
            parts[2]
        );
        let e = validate(&forged, "web", &k, TD, 1200).unwrap_err();
        assert!(e.contains("signature"), "{e}");
        let e = validate(&t, "web", &k, TD, 1300).unwrap_err();
        assert!(e.contains("expired"), "{e}");
        let e = validate(&t, "mail", &k, TD, 1200).unwrap_err();
        assert!(e.contains("'mail'"), "{e}");
        let other = keys(Algorithm::EcdsaP256Sha256);
        let e = validate(&t, "web", &other, TD, 1200).unwrap_err();
        assert!(e.contains("kid"), "{e}");
        let e = validate(&t, "web", &k, "spiffe://other.org", 1200).unwrap_err();
        assert!(e.contains("other.org"), "{e}");
        assert!(validate("a.b", "web", &k, TD, 1200).is_err());
    }
}
