//! JWT-SVIDs: signing keys that rotate with an overlap (`keys`, `record`), their JWKS
//! (`jwk`), tokens signed and checked through `KeySigner` (`token`) and the three
//! Workload API calls (`service`).

mod jwk;
mod keys;
pub mod naming;
mod record;
pub mod service;
mod token;

use keyward_core::{Algorithm, Error, RsaBits};

pub use keys::{JwtKeys, KeySet};

/// The JOSE `alg` of the JWT-SVIDs a key of `alg` signs, or `None` when JWT-SVIDs cannot
/// be signed with it (RSA-PSS: backends differ in salt length, JOSE requires 32 bytes).
pub fn jose_name(alg: Algorithm) -> Option<&'static str> {
    match alg {
        Algorithm::EcdsaP256Sha256 => Some("ES256"),
        Algorithm::EcdsaP384Sha384 => Some("ES384"),
        Algorithm::RsaPkcs1Sha256(_) => Some("RS256"),
        Algorithm::Ed25519 => Some("EdDSA"),
        Algorithm::RsaPssSha256(_) => None,
    }
}

/// Parses `[jwt] algorithm`: a JOSE name (`ES256`, `ES384`, `RS256` = rsa-2048, `EdDSA`)
/// or a keyward key algorithm that signs one of them (`rsa-3072`, `rsa-4096`, ...).
pub fn parse_algorithm(s: &str) -> Result<Algorithm, Error> {
    let alg = match s {
        "ES256" => Algorithm::EcdsaP256Sha256,
        "ES384" => Algorithm::EcdsaP384Sha384,
        "RS256" => Algorithm::RsaPkcs1Sha256(RsaBits::B2048),
        "EdDSA" => Algorithm::Ed25519,
        other => other.parse::<Algorithm>().map_err(|_| unknown(s))?,
    };
    jose_name(alg).map(|_| alg).ok_or_else(|| unknown(s))
}

fn unknown(s: &str) -> Error {
    Error::InvalidInput(format!(
        "unknown JWT algorithm '{s}' (expected ES256, ES384, RS256, EdDSA, or a key algorithm: ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072, rsa-4096)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jose_and_keyward_names_are_accepted_and_pss_is_not() {
        assert_eq!(
            parse_algorithm("ES256").unwrap(),
            Algorithm::EcdsaP256Sha256
        );
        assert_eq!(parse_algorithm("EdDSA").unwrap(), Algorithm::Ed25519);
        assert_eq!(
            parse_algorithm("rsa-4096").unwrap(),
            Algorithm::RsaPkcs1Sha256(RsaBits::B4096)
        );
        let e = parse_algorithm("rsa-pss-2048").unwrap_err().to_string();
        assert!(e.contains("'rsa-pss-2048'") && e.contains("RS256"), "{e}");
        assert!(parse_algorithm("HS256").is_err());
    }
}
