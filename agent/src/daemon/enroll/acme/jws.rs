//! The signed requests of ACME (RFC 8555 section 6.2-6.5): a flattened JWS whose protected
//! header names the algorithm, the nonce, the URL and the signer (a new key as `jwk`, or
//! an account as `kid`). Signatures and thumbprints are jsonwebtoken's (aws-lc-rs); this
//! module only decides what must be present and what it must equal.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;

use super::nonce::Nonces;
use super::problem::Problem;
use super::store::{Account, Store};

/// The media type of every ACME POST body.
pub const JOSE_CONTENT_TYPE: &str = "application/jose+json";

/// The JWS algorithms accepted for account keys.
const ACCEPTED: [(&str, Algorithm); 3] = [
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("RS256", Algorithm::RS256),
];

/// Who signed a request.
#[derive(Debug)]
pub enum Signer {
    /// A key given inline (`jwk`): newAccount, or revocation by the certificate's key.
    Key {
        /// The JWK as sent.
        jwk: Value,
        /// Its RFC 7638 thumbprint (base64url SHA-256).
        thumbprint: String,
    },
    /// An existing, valid account (`kid`).
    Account(Account),
}

/// A request whose signature, nonce and URL checked out.
#[derive(Debug)]
pub struct Signed {
    /// Who signed it.
    pub signer: Signer,
    /// The payload; empty for POST-as-GET.
    pub payload: Vec<u8>,
}

impl Signed {
    /// The account that signed, or `unauthorized` for a request signed with a bare key.
    pub fn account(self) -> Result<(Account, Vec<u8>), Problem> {
        match self.signer {
            Signer::Account(a) => Ok((a, self.payload)),
            Signer::Key { .. } => Err(Problem::malformed(
                "this request must be signed by an account (`kid`), not a `jwk`",
            )),
        }
    }

    /// The payload as JSON of type `T`.
    pub fn json<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Problem> {
        serde_json::from_slice(payload)
            .map_err(|e| Problem::malformed(format!("the request payload does not parse: {e}")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Flattened {
    protected: String,
    payload: String,
    signature: String,
}

#[derive(Deserialize)]
struct Protected {
    alg: String,
    #[serde(default)]
    nonce: Option<String>,
    url: String,
    #[serde(default)]
    jwk: Option<Value>,
    #[serde(default)]
    kid: Option<String>,
}

/// What the request is checked against.
pub struct Expect<'a> {
    /// The URL the request arrived at (`url` must equal it).
    pub url: &'a str,
    /// The prefix of account URLs (`kid` must start with it).
    pub account_prefix: &'a str,
    /// The server's nonces (the request's is used up).
    pub nonces: &'a Nonces,
    /// Where accounts are.
    pub store: &'a Store,
}

/// Checks a POST body: media type, JWS shape, algorithm, exactly one of `jwk`/`kid`,
/// the signature, the nonce (used up) and the URL.
pub fn verify(
    content_type: Option<&str>,
    body: &[u8],
    expect: &Expect<'_>,
) -> Result<Signed, Problem> {
    let media = content_type.map(|c| c.split(';').next().unwrap_or("").trim());
    if media != Some(JOSE_CONTENT_TYPE) {
        return Err(Problem {
            status: axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ..Problem::malformed(format!("ACME requests are {JOSE_CONTENT_TYPE}"))
        });
    }
    let jws: Flattened = serde_json::from_slice(body)
        .map_err(|e| Problem::malformed(format!("the body is not a flattened JWS: {e}")))?;
    let header: Protected = B64
        .decode(&jws.protected)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or_else(|| Problem::malformed("the JWS protected header does not parse"))?;
    let Some((_, alg)) = ACCEPTED.iter().find(|(name, _)| *name == header.alg) else {
        return Err(Problem::bad_signature_algorithm(format!(
            "JWS algorithm '{}' is not accepted (ES256, ES384, RS256)",
            header.alg
        )));
    };
    let signer = match (header.jwk, header.kid) {
        (Some(jwk), None) => {
            let thumbprint = thumbprint(&jwk)?;
            Signer::Key { jwk, thumbprint }
        }
        (None, Some(kid)) => {
            let id = kid.strip_prefix(expect.account_prefix).ok_or_else(|| {
                Problem::account_does_not_exist(format!("'{kid}' is not an account of this server"))
            })?;
            let account: Account = expect
                .store
                .get(id)?
                .ok_or_else(|| Problem::account_does_not_exist(format!("no account {kid}")))?;
            if account.status != "valid" {
                return Err(Problem::unauthorized(format!(
                    "account {kid} is {}",
                    account.status
                )));
            }
            Signer::Account(account)
        }
        _ => {
            return Err(Problem::malformed(
                "the JWS protected header must carry exactly one of `jwk` and `kid`",
            ));
        }
    };
    let jwk_value = match &signer {
        Signer::Key { jwk, .. } => jwk,
        Signer::Account(a) => &a.jwk,
    };
    let key = decoding_key(jwk_value)?;
    let message = format!("{}.{}", jws.protected, jws.payload);
    let good = jsonwebtoken::crypto::verify(&jws.signature, message.as_bytes(), &key, *alg)
        .unwrap_or(false);
    if !good {
        return Err(Problem::malformed(format!(
            "the JWS signature does not verify with the signer's key ({})",
            header.alg
        )));
    }
    let nonce = header
        .nonce
        .ok_or_else(|| Problem::bad_nonce("the JWS protected header has no nonce"))?;
    if !expect.nonces.consume(&nonce) {
        return Err(Problem::bad_nonce(
            "the nonce is unknown or was used before; retry with the Replay-Nonce of this response",
        ));
    }
    if header.url != expect.url {
        return Err(Problem::unauthorized(format!(
            "the JWS `url` {} is not the URL requested ({})",
            header.url, expect.url
        )));
    }
    let payload = B64
        .decode(&jws.payload)
        .map_err(|_| Problem::malformed("the JWS payload is not base64url"))?;
    Ok(Signed { signer, payload })
}

/// The RFC 7638 thumbprint (SHA-256, base64url) of a JWK, as key authorizations and
/// account ids use it.
pub fn thumbprint(jwk: &Value) -> Result<String, Problem> {
    parse_jwk(jwk)?
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| Problem::malformed(format!("cannot compute the JWK thumbprint: {e}")))
}

fn parse_jwk(jwk: &Value) -> Result<Jwk, Problem> {
    if jwk.get("d").is_some() {
        return Err(Problem::malformed(
            "the JWK holds a private key; send the public key only",
        ));
    }
    serde_json::from_value(jwk.clone())
        .map_err(|e| Problem::malformed(format!("the JWK does not parse: {e}")))
}

fn decoding_key(jwk: &Value) -> Result<DecodingKey, Problem> {
    DecodingKey::from_jwk(&parse_jwk(jwk)?)
        .map_err(|e| Problem::malformed(format!("the JWK is not a usable public key: {e}")))
}
