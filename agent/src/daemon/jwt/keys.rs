//! The JWT signing keys as the Workload API uses them: one signs at a time; the next is
//! published `key_overlap` before it takes over (after `key_ttl`), and a retired key
//! stays published until every token it signed has expired. The generation engine
//! (`daemon::generations`, kind `jwt_key`) rotates them and publishes a new [`KeySet`]
//! on a `watch` channel after every change.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyward_core::{Error, KeySigner, KeyUri};
use keyward_software::SoftwareKey;
use prost::bytes::Bytes;
use serde_json::Value;

use super::{jose_name, jwk};

/// One signing key and its public JWK.
#[derive(Debug)]
pub struct Generation {
    /// The key; it signs through its backend.
    pub signer: Arc<dyn KeySigner>,
    /// The JOSE `alg` it signs.
    pub jose_alg: &'static str,
    /// The JWK `kid` (RFC 7638 thumbprint).
    pub kid: String,
    /// The public JWK as published.
    pub jwk: Value,
}

/// What the Workload API answers from: the signing key and every published key.
#[derive(Debug)]
pub struct KeySet {
    /// The key new JWT-SVIDs are signed with.
    pub active: Arc<Generation>,
    /// Every key a token may be validated with (the active one, the next one, and
    /// retired ones whose tokens have not all expired).
    pub published: Vec<Arc<Generation>>,
    /// The JWKS document of `published`.
    pub jwks: Bytes,
    /// The lifetime of each JWT-SVID.
    pub ttl: Duration,
}

impl KeySet {
    /// The set signed by `published[active]`.
    pub fn new(active: usize, published: Vec<Arc<Generation>>, ttl: Duration) -> Self {
        KeySet {
            active: published[active].clone(),
            jwks: Bytes::from(jwk::set(published.iter().map(|g| &g.jwk))),
            published,
            ttl,
        }
    }

    /// The published key with `kid`.
    pub fn find(&self, kid: &str) -> Option<&Arc<Generation>> {
        self.published.iter().find(|g| g.kid == kid)
    }
}

/// The current time in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A software key of `alg` that exists only in this process, labelled with the unix
/// time `starts_secs` it starts signing.
pub fn in_memory(
    alg: keyward_core::Algorithm,
    starts_secs: i64,
) -> Result<Arc<dyn KeySigner>, Error> {
    let label = KeyUri::file(format!("/in-memory/keyward-jwt-{starts_secs}"))?;
    Ok(Arc::new(SoftwareKey::generate(alg, label)?.0))
}

/// The generation of `signer`: its JOSE algorithm, JWK and `kid`.
pub fn describe(signer: Arc<dyn KeySigner>) -> Result<Arc<Generation>, Error> {
    let alg = signer.algorithm();
    let jose_alg = jose_name(alg).ok_or_else(|| {
        Error::Unsupported(format!(
            "{}: {alg} keys cannot sign JWT-SVIDs (use ES256, ES384, RS256 or EdDSA)",
            signer.uri()
        ))
    })?;
    let jwk = jwk::from_spki(alg, jose_alg, signer.public_key_spki_der())?;
    let kid = jwk["kid"].as_str().unwrap_or_default().to_string();
    Ok(Arc::new(Generation {
        signer,
        jose_alg,
        kid,
        jwk,
    }))
}
