//! Where each generation of the JWT signing key lives in its backend.
//!
//! The configured URI names the first key. Every later generation appends
//! `-<unix time it starts signing>` to the key's name: the file stem
//! (`jwt.pem` → `jwt-1767225600.pem`), the PKCS#11 `object=` label, the KMS alias
//! (`alias/jwt` → `alias/jwt-1767225600`) or the Transit key name. Everything else in
//! the URI (token, module, PIN source, region, mount) stays as configured, so the URI
//! of a generation is recomputed from the configuration and never written to disk.
//!
//! Also the JOSE algorithm names: which key algorithms sign JWT-SVIDs and how
//! `[jwt] algorithm` is written, which the configuration check uses as well.

use keyward_core::uri::KmsKeyRef;
use keyward_core::{Algorithm, Error, KeyUri, RsaBits};

/// Checks that later generations can be named from `base`; the error says what to change.
pub fn check_base(base: &KeyUri) -> Result<(), String> {
    match base {
        KeyUri::File(f) => {
            if f.path.file_stem().is_none_or(|s| s.is_empty()) {
                return Err(format!(
                    "the JWT key file {} has no file name",
                    f.path.display()
                ));
            }
        }
        KeyUri::Pkcs11(p) => {
            if p.object.is_none() {
                return Err(
                    "the JWT key needs object= (later keys are named object=<label>-<unix time>)"
                        .into(),
                );
            }
            if p.id.is_some() {
                return Err("the JWT key is named by object= alone: drop id= (each generation is a new object)".into());
            }
        }
        KeyUri::AwsKms(k) => {
            if !matches!(k.key, KmsKeyRef::Alias(_)) {
                return Err("the JWT key in AWS KMS must be an alias (awskms:alias/NAME): later keys get the alias NAME-<unix time>".into());
            }
        }
        KeyUri::Transit(t) => {
            if t.version.is_some() {
                return Err("the JWT key in Transit must not pin version= (each generation is a new Transit key)".into());
            }
        }
        other => {
            return Err(format!(
                "{}: keys cannot be generated there",
                other.scheme()
            ));
        }
    }
    Ok(())
}

/// The URI of the generation that starts signing at `unix_secs`.
pub fn generation_uri(base: &KeyUri, unix_secs: u64) -> KeyUri {
    let suffix = format!("-{unix_secs}");
    let mut uri = base.clone();
    match &mut uri {
        KeyUri::File(f) => {
            let stem = f.path.file_stem().unwrap_or_default().to_string_lossy();
            let name = match f.path.extension() {
                Some(ext) => format!("{stem}{suffix}.{}", ext.to_string_lossy()),
                None => format!("{stem}{suffix}"),
            };
            f.path.set_file_name(name);
        }
        KeyUri::Pkcs11(p) => {
            if let Some(o) = &mut p.object {
                o.push_str(&suffix);
            }
        }
        KeyUri::AwsKms(k) => {
            if let KmsKeyRef::Alias(a) = &mut k.key {
                a.push_str(&suffix);
            }
        }
        KeyUri::Transit(t) => t.name.push_str(&suffix),
        _ => {}
    }
    uri
}

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

    fn named(base: &str) -> String {
        let base = KeyUri::parse(base).unwrap();
        check_base(&base).unwrap();
        generation_uri(&base, 1_767_225_600).to_string()
    }

    #[test]
    fn each_backend_appends_the_time_to_the_name() {
        assert_eq!(named("file:/k/jwt.pem"), "file:/k/jwt-1767225600.pem");
        assert_eq!(named("file:/k/jwt"), "file:/k/jwt-1767225600");
        assert!(named("pkcs11:token=t;object=jwt?pin-value=1").contains("object=jwt-1767225600"));
        assert_eq!(named("awskms:alias/jwt"), "awskms:alias/jwt-1767225600");
        assert!(named("transit:jwt?mount=t2").starts_with("transit:jwt-1767225600"));
    }

    #[test]
    fn names_that_cannot_grow_are_refused() {
        for bad in [
            "pkcs11:token=t;id=%01",
            "pkcs11:token=t;object=jwt;id=%01",
            "awskms:key-id=1234abcd-12ab-34cd-56ef-1234567890ab",
            "transit:jwt?version=2",
        ] {
            assert!(check_base(&KeyUri::parse(bad).unwrap()).is_err(), "{bad}");
        }
    }

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
