//! Transit keys: creating and opening them ([`TransitBackend::generate_transit`],
//! [`TransitBackend::open_transit`]), keyward's key types as Transit types, and each
//! version's public key as a DER `SubjectPublicKeyInfo`.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use keyward_core::uri::TransitUri;
use keyward_core::{Algorithm, Error, KeySigner, KeyType, RsaBits};
use reqwest::Method;
use serde::Deserialize;

use super::{TransitBackend, TransitSigner};
use crate::client::{TokenUse, VaultClient};

/// The key types keyward can sign with, by their Transit names.
pub(crate) const SUPPORTED: &str = "ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072, rsa-4096";

/// The Transit `type` for a key type.
pub(crate) fn transit_type(kt: KeyType) -> &'static str {
    match kt {
        KeyType::EcP256 => "ecdsa-p256",
        KeyType::EcP384 => "ecdsa-p384",
        KeyType::Ed25519 => "ed25519",
        KeyType::Rsa(RsaBits::B2048) => "rsa-2048",
        KeyType::Rsa(RsaBits::B3072) => "rsa-3072",
        KeyType::Rsa(RsaBits::B4096) => "rsa-4096",
    }
}

/// The key type of a Transit `type`, if keyward signs with it.
pub(crate) fn key_type_of(transit: &str) -> Option<KeyType> {
    Some(match transit {
        "ecdsa-p256" => KeyType::EcP256,
        "ecdsa-p384" => KeyType::EcP384,
        "ed25519" => KeyType::Ed25519,
        "rsa-2048" => KeyType::Rsa(RsaBits::B2048),
        "rsa-3072" => KeyType::Rsa(RsaBits::B3072),
        "rsa-4096" => KeyType::Rsa(RsaBits::B4096),
        _ => return None,
    })
}

/// What `GET MOUNT/keys/NAME` tells about a key.
#[derive(Deserialize)]
pub(crate) struct KeyInfo {
    #[serde(rename = "type")]
    pub kind: String,
    pub latest_version: u32,
    #[serde(default)]
    pub min_available_version: u32,
    #[serde(default)]
    pub supports_signing: bool,
    #[serde(default)]
    pub derived: bool,
    /// Version number to details; asymmetric keys carry `public_key` there.
    #[serde(default)]
    pub keys: BTreeMap<String, serde_json::Value>,
}

impl KeyInfo {
    /// The key type, or `Unsupported` naming the Transit type.
    pub(crate) fn key_type(&self, uri: &TransitUri) -> Result<KeyType, Error> {
        let kt = key_type_of(&self.kind).ok_or_else(|| {
            Error::Unsupported(format!(
                "{uri} is a Transit key of type '{}'; keyward signs with {SUPPORTED}",
                self.kind
            ))
        })?;
        if !self.supports_signing || self.derived {
            return Err(Error::Unsupported(format!(
                "{uri} is a derived (context-bound) Transit key; keyward signs with plain keys"
            )));
        }
        Ok(kt)
    }

    /// The version to use: the URI's pinned one (checked to exist) or the latest.
    pub(crate) fn choose_version(&self, uri: &TransitUri) -> Result<u32, Error> {
        let Some(v) = uri.version else {
            return Ok(self.latest_version);
        };
        if v > self.latest_version {
            return Err(Error::NotFound(format!(
                "{uri} (version {v} does not exist; the latest is {})",
                self.latest_version
            )));
        }
        if v < self.min_available_version || !self.keys.contains_key(&v.to_string()) {
            return Err(Error::NotFound(format!(
                "{uri} (version {v} was trimmed from the key; the oldest kept is {})",
                self.min_available_version.max(1)
            )));
        }
        Ok(v)
    }

    /// The public key of `version` as DER SPKI: ECDSA/RSA come as PEM, Ed25519 as raw
    /// base64.
    pub(crate) fn public_key_spki(
        &self,
        version: u32,
        kt: KeyType,
        uri: &TransitUri,
    ) -> Result<Vec<u8>, Error> {
        let bad =
            |why: &str| Error::backend(format!("public key of {uri} version {version}: {why}"));
        let text = self
            .keys
            .get(&version.to_string())
            .and_then(|k| k.get("public_key"))
            .and_then(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| bad("missing from Vault's answer"))?;
        if kt == KeyType::Ed25519 {
            let raw = B64.decode(text.trim()).map_err(|_| bad("not base64"))?;
            if raw.len() != 32 {
                return Err(bad("not 32 bytes"));
            }
            return Ok(keyward_core::der::ed25519_spki(&raw));
        }
        let pem = pem::parse(text).map_err(|_| bad("not PEM"))?;
        if pem.tag() != "PUBLIC KEY" {
            return Err(bad(&format!(
                "a '{}' PEM block, not 'PUBLIC KEY'",
                pem.tag()
            )));
        }
        Ok(pem.into_contents())
    }
}

/// The API path of a Transit operation on the key: `MOUNT/OP/NAME`.
pub(crate) fn path(uri: &TransitUri, op: &str) -> String {
    format!("{}/{op}/{}", uri.mount, uri.name)
}

/// Checks a mount path has no `.` or `..` segment (the URI parser allows dots).
pub(crate) fn check_mount(uri: &TransitUri) -> Result<(), Error> {
    if uri
        .mount
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(Error::InvalidUri(format!(
            "transit mount '{}' has an empty, '.' or '..' segment",
            uri.mount
        )));
    }
    Ok(())
}

/// Reads the key; a missing key is `NotFound` naming the URI.
pub(crate) async fn read_key(client: &VaultClient, uri: &TransitUri) -> Result<KeyInfo, Error> {
    let env = client
        .call::<KeyInfo>(Method::GET, &path(uri, "keys"), None, TokenUse::Current)
        .await
        .map_err(|e| not_found_as(e, uri))?;
    env.data.ok_or_else(|| Error::NotFound(uri.to_string()))
}

/// Reads the key, `None` if it does not exist.
pub(crate) async fn try_read_key(
    client: &VaultClient,
    uri: &TransitUri,
) -> Result<Option<KeyInfo>, Error> {
    match read_key(client, uri).await {
        Ok(k) => Ok(Some(k)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates a non-exportable key of type `kt`. Vault answers a create of an existing
/// name by returning that key unchanged, so this never overwrites.
pub(crate) async fn create_key(
    client: &VaultClient,
    uri: &TransitUri,
    kt: KeyType,
) -> Result<(), Error> {
    let body = serde_json::json!({
        "type": transit_type(kt),
        "exportable": false,
        "allow_plaintext_backup": false,
    });
    let body = serde_json::to_vec(&body).map_err(|e| Error::backend_with("encode", e))?;
    client
        .call::<serde_json::Value>(
            Method::POST,
            &path(uri, "keys"),
            Some(&body),
            TokenUse::Current,
        )
        .await
        .map(|_| ())
}

/// Replaces `NotFound(path)` from the HTTP layer with `NotFound(uri)`.
pub(crate) fn not_found_as(e: Error, uri: &TransitUri) -> Error {
    match e {
        Error::NotFound(_) => Error::NotFound(uri.to_string()),
        e => e,
    }
}

impl TransitBackend {
    /// Opens the key version `uri` names (latest unless pinned), signing with `alg`
    /// (`None`: the key type's default, PKCS#1 v1.5 for RSA; `Some(RsaPssSha256)` for PSS).
    pub async fn open_transit(
        &self,
        uri: &TransitUri,
        alg: Option<Algorithm>,
    ) -> Result<Arc<TransitSigner>, Error> {
        check_mount(uri)?;
        let info = read_key(&self.client, uri).await?;
        let signer = TransitSigner::from_key(self.client.clone(), uri, &info, alg)?;
        Ok(Arc::new(signer))
    }

    /// Creates a non-exportable Transit key for `alg` at `uri` and opens it; a name
    /// that exists is `AlreadyExists` and stays as it was.
    ///
    /// Vault's create call returns an existing key unchanged, so two keyward processes
    /// racing on one name can both believe they created it; neither overwrites. The
    /// type and version of the created key are checked to catch a racer of another type.
    pub async fn generate_transit(
        &self,
        uri: &TransitUri,
        alg: Algorithm,
    ) -> Result<Arc<TransitSigner>, Error> {
        check_mount(uri)?;
        if uri.version.is_some() {
            return Err(Error::InvalidUri(format!(
                "{uri}: a new Transit key starts at version 1; drop 'version=' to generate it"
            )));
        }
        if try_read_key(&self.client, uri).await?.is_some() {
            return Err(Error::AlreadyExists(uri.to_string()));
        }
        let kt = alg.key_type();
        create_key(&self.client, uri, kt).await?;
        let info = read_key(&self.client, uri).await?;
        if info.kind != transit_type(kt) || info.latest_version != 1 {
            return Err(Error::AlreadyExists(format!(
                "{uri} (created meanwhile by someone else as a {} key at version {})",
                info.kind, info.latest_version
            )));
        }
        let signer = TransitSigner::from_key(self.client.clone(), uri, &info, Some(alg))?;
        tracing::info!(key = %signer.uri(), algorithm = %alg, vault = %self.client.address(), "generated Transit key");
        Ok(Arc::new(signer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> TransitUri {
        match keyward_core::KeyUri::parse(s).unwrap() {
            keyward_core::KeyUri::Transit(t) => t,
            _ => unreachable!(),
        }
    }

    fn info(json: serde_json::Value) -> KeyInfo {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn types_round_trip() {
        for a in keyward_core::Algorithm::ALL {
            assert_eq!(key_type_of(transit_type(a.key_type())), Some(a.key_type()));
        }
        assert_eq!(key_type_of("aes256-gcm96"), None);
    }

    #[test]
    fn ed25519_raw_key_becomes_spki() {
        let k = info(serde_json::json!({
            "type": "ed25519", "latest_version": 1, "supports_signing": true,
            "keys": {"1": {"public_key": B64.encode([7u8; 32])}}
        }));
        let u = uri("transit:e");
        let spki = k.public_key_spki(1, KeyType::Ed25519, &u).unwrap();
        assert_eq!(spki.len(), 44);
        assert_eq!(
            keyward_core::subject_public_key(&spki).unwrap(),
            vec![7u8; 32]
        );
    }

    #[test]
    fn versions_are_checked() {
        let k = info(serde_json::json!({
            "type": "ecdsa-p256", "latest_version": 3, "min_available_version": 2,
            "supports_signing": true, "keys": {"2": {}, "3": {}}
        }));
        assert_eq!(k.choose_version(&uri("transit:k")).unwrap(), 3);
        assert_eq!(k.choose_version(&uri("transit:k?version=2")).unwrap(), 2);
        let e = k.choose_version(&uri("transit:k?version=4")).unwrap_err();
        assert!(
            matches!(e, Error::NotFound(ref s) if s.contains("latest is 3")),
            "{e}"
        );
        let e = k.choose_version(&uri("transit:k?version=1")).unwrap_err();
        assert!(e.to_string().contains("trimmed"), "{e}");
    }

    #[test]
    fn unsupported_types_are_named() {
        let k = info(serde_json::json!({"type": "aes256-gcm96", "latest_version": 1}));
        let e = k.key_type(&uri("transit:x")).unwrap_err().to_string();
        assert!(
            e.contains("aes256-gcm96") && e.contains("ecdsa-p256"),
            "{e}"
        );
    }

    #[test]
    fn dot_segments_in_mounts_are_refused() {
        assert!(check_mount(&uri("transit:k?mount=a/../sys")).is_err());
        assert!(check_mount(&uri("transit:k?mount=team/transit")).is_ok());
    }
}
