//! A Transit key version that signs: [`TransitSigner`].
//!
//! A signer is bound to one key version for its whole life. Its public key never
//! changes under a caller (a CA certificate holds it), and every signature it returns
//! verifies under that public key. Its canonical URI pins that version
//! (`transit:NAME?version=N`), so a caller that stores `uri()` opens the same key again.
//!
//! Opened without a pinned version, a signer takes the latest version at open time and
//! signs without naming a version, so Vault answers with its latest; the `vault:vN:`
//! prefix tells whether the key was rotated in Vault since. If so, the signer signs that
//! message again with its own version (one extra round trip, once: from then on it names
//! its version on every request), records the new version ([`TransitSigner::rotated_to`])
//! and logs it. The owner adopts the new version by opening the unpinned URI again (the
//! backend re-reads the key) once it is ready to certify the new public key.

use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use keyward_core::uri::TransitUri;
use keyward_core::{Algorithm, Error, HashAlg, KeySigner, KeyUri};
use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::keys::{self, KeyInfo};
use crate::client::{TokenUse, VaultClient};

/// One version of a Transit key, signing through Vault/OpenBao.
pub struct TransitSigner {
    client: VaultClient,
    /// Canonical URI: pinned to `version`.
    uri: KeyUri,
    /// The URI as opened (its version may be `None`).
    opened: TransitUri,
    algorithm: Algorithm,
    version: u32,
    spki: Vec<u8>,
    sign_path: String,
    /// The newest version seen in a sign answer, if newer than `version`; 0 if none.
    rotated_to: AtomicU32,
}

impl std::fmt::Debug for TransitSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransitSigner")
            .field("uri", &self.uri)
            .field("algorithm", &self.algorithm)
            .field("vault", &self.client.address())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct SignRequest<'a> {
    input: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    prehashed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash_algorithm: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    marshaling_algorithm: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature_algorithm: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    salt_length: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_version: Option<u32>,
}

#[derive(Deserialize)]
struct SignData {
    signature: String,
    #[serde(default)]
    key_version: Option<u32>,
}

impl TransitSigner {
    /// A signer for the version `uri` chooses of the key Vault described as `info`,
    /// signing with `alg` (default: the key type's default, PKCS#1 v1.5 for RSA).
    pub(crate) fn from_key(
        client: VaultClient,
        uri: &TransitUri,
        info: &KeyInfo,
        alg: Option<Algorithm>,
    ) -> Result<Self, Error> {
        let kt = info.key_type(uri)?;
        let algorithm = match alg {
            None => Algorithm::default_for(kt),
            Some(a) if a.key_type() == kt => a,
            Some(a) => {
                return Err(Error::Unsupported(format!(
                    "{uri} is a Transit {} key; it cannot sign {a}",
                    info.kind
                )));
            }
        };
        let version = info.choose_version(uri)?;
        let spki = info.public_key_spki(version, kt, uri)?;
        let canonical = TransitUri {
            version: Some(version),
            ..uri.clone()
        };
        Ok(TransitSigner {
            client,
            uri: KeyUri::Transit(canonical),
            opened: uri.clone(),
            algorithm,
            version,
            spki,
            sign_path: keys::path(uri, "sign"),
            rotated_to: AtomicU32::new(0),
        })
    }

    /// The Transit key version this signer signs with.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The newer version Vault signed with when asked for its latest, if the key was
    /// rotated since this signer was opened (only for signers opened without a pinned
    /// version). Open the unpinned URI again to sign with it.
    pub fn rotated_to(&self) -> Option<u32> {
        Some(self.rotated_to.load(Ordering::Relaxed)).filter(|v| *v != 0)
    }

    /// One sign request; returns the version Vault used and the signature bytes.
    async fn sign_once(
        &self,
        input: &str,
        key_version: Option<u32>,
    ) -> Result<(u32, Vec<u8>), Error> {
        let hash = self.algorithm.hash();
        let req = SignRequest {
            input,
            prehashed: hash.is_some(),
            hash_algorithm: hash.map(|h| match h {
                HashAlg::Sha256 => "sha2-256",
                HashAlg::Sha384 => "sha2-384",
            }),
            marshaling_algorithm: matches!(
                self.algorithm,
                Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384
            )
            .then_some("asn1"),
            signature_algorithm: match self.algorithm {
                Algorithm::RsaPkcs1Sha256(_) => Some("pkcs1v15"),
                Algorithm::RsaPssSha256(_) => Some("pss"),
                _ => None,
            },
            // Salt as long as the hash: what X.509 verifiers (webpki) require; OpenBao's
            // default would be the maximum.
            salt_length: matches!(self.algorithm, Algorithm::RsaPssSha256(_)).then_some("hash"),
            key_version,
        };
        let body = serde_json::to_vec(&req).map_err(|e| Error::backend_with("encode", e))?;
        let env = self
            .client
            .call::<SignData>(
                Method::POST,
                &self.sign_path,
                Some(&body),
                TokenUse::Current,
            )
            .await
            .map_err(|e| keys::not_found_as(e, &self.opened))?;
        let data = env.data.ok_or_else(|| {
            Error::backend(format!(
                "Vault/OpenBao returned no signature for {}",
                self.uri
            ))
        })?;
        let (version, sig) = parse_signature(&data.signature).ok_or_else(|| {
            Error::backend(format!(
                "Vault/OpenBao returned a signature for {} without a valid 'vault:vN:' prefix",
                self.uri
            ))
        })?;
        if data.key_version.is_some_and(|v| v != version) {
            return Err(Error::backend(format!(
                "Vault/OpenBao signature for {} is marked version {version} but key_version says {}",
                self.uri,
                data.key_version.unwrap_or_default()
            )));
        }
        Ok((version, sig))
    }

    fn version_error(&self, got: u32) -> Error {
        Error::backend(format!(
            "Vault/OpenBao signed {} with version {got} instead of version {}",
            self.opened, self.version
        ))
    }
}

/// Splits `vault:vN:BASE64` into N and the decoded bytes.
fn parse_signature(s: &str) -> Option<(u32, Vec<u8>)> {
    let rest = s.strip_prefix("vault:v")?;
    let (n, b64) = rest.split_once(':')?;
    let version = n.parse().ok().filter(|v| *v > 0)?;
    let bytes = B64.decode(b64).ok().filter(|b| !b.is_empty())?;
    Some((version, bytes))
}

#[async_trait]
impl KeySigner for TransitSigner {
    fn uri(&self) -> &KeyUri {
        &self.uri
    }

    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn public_key_spki_der(&self) -> &[u8] {
        &self.spki
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let input = match self.algorithm.hash() {
            Some(h) => B64.encode(h.digest(message)),
            None => B64.encode(message), // Ed25519 signs the whole message
        };
        let name_version = self.opened.version.is_some() || self.rotated_to().is_some();
        let (got, sig) = self
            .sign_once(&input, name_version.then_some(self.version))
            .await?;
        if got == self.version {
            return Ok(sig);
        }
        if name_version || got < self.version {
            return Err(self.version_error(got));
        }
        // Rotated in Vault since this signer was opened: keep the promise that the
        // signature verifies under `public_key_spki_der`.
        if self.rotated_to.fetch_max(got, Ordering::Relaxed) < got {
            tracing::info!(
                key = %self.opened, signs_with = self.version, latest = got,
                "Transit key rotated in Vault; this signer keeps its version: open the key again to adopt the new one"
            );
        }
        let (again, sig) = self.sign_once(&input, Some(self.version)).await?;
        if again != self.version {
            return Err(self.version_error(again));
        }
        Ok(sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_prefix_is_parsed_and_checked() {
        assert_eq!(parse_signature("vault:v12:AQID"), Some((12, vec![1, 2, 3])));
        assert_eq!(parse_signature("vault:v0:AQID"), None);
        assert_eq!(parse_signature("vault:12:AQID"), None);
        assert_eq!(parse_signature("vault:v1:"), None);
        assert_eq!(parse_signature("vault:v1:!!"), None);
        assert_eq!(parse_signature("AQID"), None);
    }
}
