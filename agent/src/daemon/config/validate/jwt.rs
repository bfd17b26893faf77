//! `[jwt]`: the JWT-SVID signing key, its algorithm and the lifetimes of tokens and keys.

use std::time::Duration;

use keyward_core::{Error, KeyUri};
use toml::Spanned;

use super::super::JwtSettings;
use super::super::raw::RawJwt;
use super::Src;
use crate::daemon::jwt::names::{self as naming, parse_algorithm};

/// A JWT-SVID lives 5 minutes unless configured otherwise.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);
/// A signing key signs for a day unless configured otherwise.
const DEFAULT_KEY_TTL: Duration = Duration::from_secs(86_400);

/// The `[jwt]` settings; an absent section gives the defaults (in-memory ES256 keys).
pub(super) fn settings(src: &Src, raw: Option<&Spanned<RawJwt>>) -> Result<JwtSettings, Error> {
    let Some(section) = raw else {
        return Ok(JwtSettings {
            key: None,
            algorithm: keyward_core::Algorithm::EcdsaP256Sha256,
            ttl: DEFAULT_TOKEN_TTL,
            key_ttl: DEFAULT_KEY_TTL,
            key_overlap: DEFAULT_KEY_TTL / 4,
        });
    };
    let r = section.get_ref();
    let key = match &r.key {
        None => None,
        Some(k) => {
            let uri = KeyUri::parse(&src.key_text(k)).map_err(|e| src.wrap(&k.span(), e))?;
            naming::check_base(&uri).map_err(|why| src.err(&k.span(), why))?;
            Some(uri)
        }
    };
    let algorithm = match &r.algorithm {
        None => keyward_core::Algorithm::EcdsaP256Sha256,
        Some(a) => parse_algorithm(a.get_ref()).map_err(|e| src.wrap(&a.span(), e))?,
    };
    let duration = |v: &Option<Spanned<String>>, default: Duration| {
        v.as_ref()
            .map(|d| src.duration(d))
            .transpose()
            .map(|d| d.unwrap_or(default))
    };
    let ttl = duration(&r.ttl, DEFAULT_TOKEN_TTL)?;
    let key_ttl = duration(&r.key_ttl, DEFAULT_KEY_TTL)?;
    let key_overlap = duration(&r.key_overlap, key_ttl / 4)?;
    if key_overlap >= key_ttl {
        let span = r.key_overlap.as_ref().map_or(section.span(), |v| v.span());
        return Err(src.err(
            &span,
            "key_overlap must be shorter than key_ttl (the next key is published that long before it signs)",
        ));
    }
    Ok(JwtSettings {
        key,
        algorithm,
        ttl,
        key_ttl,
        key_overlap,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use keyward_core::{Algorithm, RsaBits};

    use super::*;
    use crate::daemon::config::Config;

    const BASE: &str = "[agent]\nsocket = \"/run/a.sock\"\nstate_dir = \"/var/lib/k\"\ntrust_domain = \"example.org\"\n[ca]\nkey = \"file:/k/ca.pem\"\n";

    fn parse(jwt: &str) -> Result<JwtSettings, String> {
        Config::parse(&format!("{BASE}{jwt}"), "agent.toml", Path::new("/etc"))
            .map(|c| c.jwt)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_without_the_section() {
        let j = parse("").unwrap();
        assert_eq!(j.key, None);
        assert_eq!(j.algorithm, Algorithm::EcdsaP256Sha256);
        assert_eq!(j.ttl, Duration::from_secs(300));
        assert_eq!(j.key_ttl, Duration::from_secs(86_400));
        assert_eq!(j.key_overlap, Duration::from_secs(6 * 3600));
    }

    #[test]
    fn every_key_is_read() {
        let j = parse("[jwt]\nkey = \"awskms:alias/jwt\"\nalgorithm = \"rsa-3072\"\nttl = \"1m\"\nkey_ttl = \"1h\"\nkey_overlap = \"10m\"\n").unwrap();
        assert_eq!(j.key.unwrap().to_string(), "awskms:alias/jwt");
        assert_eq!(j.algorithm, Algorithm::RsaPkcs1Sha256(RsaBits::B3072));
        assert_eq!(
            (j.ttl, j.key_ttl, j.key_overlap),
            (
                Duration::from_secs(60),
                Duration::from_secs(3600),
                Duration::from_secs(600)
            )
        );
    }

    #[test]
    fn bad_values_name_their_position_and_cause() {
        for (jwt, needle) in [
            (
                "[jwt]\nalgorithm = \"HS256\"\n",
                "agent.toml:8:13: unknown JWT algorithm 'HS256'",
            ),
            (
                "[jwt]\nkey = \"awskms:key-id=1234abcd-12ab-34cd-56ef-1234567890ab\"\n",
                "agent.toml:8:7: the JWT key in AWS KMS must be an alias",
            ),
            (
                "[jwt]\nkey_ttl = \"1h\"\nkey_overlap = \"1h\"\n",
                "agent.toml:9:15: key_overlap must be shorter than key_ttl",
            ),
            ("[jwt]\nttl = \"0s\"\n", "agent.toml:8:7: invalid duration"),
            ("[jwt]\nlifetime = \"1h\"\n", "unknown field `lifetime`"),
        ] {
            let e = parse(jwt).unwrap_err();
            assert!(e.contains(needle), "{jwt}: {e}");
        }
    }
}
