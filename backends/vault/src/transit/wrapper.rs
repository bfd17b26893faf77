//! Transit key-encryption keys: [`TransitKek`], an `aes256-gcm96` Transit key that wraps
//! data keys (`datakey/plaintext`, `decrypt`) and encrypts payloads (`encrypt`/`decrypt`
//! with `associated_data`); rotation is Transit's own (`keys/NAME/rotate`).
//!
//! A blob's version is Transit's `vault:vN:` prefix: the backend ciphertext in the blob
//! is the base64-decoded rest, and decryption rebuilds `vault:v{version}:...` from the
//! blob header, so a header naming another version fails authentication in Transit.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use keyward_core::backoff::Backoff;
use keyward_core::uri::TransitUri;
use keyward_core::wrap::{DATA_KEY_LEN, Sealed, data_key_from};
use keyward_core::{Error, KeyUri, KeyWrapper};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::keys::{self, KeyInfo};
use crate::client::{SentOnce, TokenUse, VaultClient};

/// The pause before resending a rotation Transit did not make: 100 ms doubling up to
/// 2 s, ±25 %.
const ROTATE_BACKOFF: Backoff =
    Backoff::doubling(Duration::from_millis(100), Duration::from_secs(2)).jittered(0.75, 1.25);

/// The Transit key type of keyward's KEKs.
pub(crate) const KEK_TYPE: &str = "aes256-gcm96";

/// A Transit `aes256-gcm96` key used as a key-encryption key.
pub struct TransitKek {
    client: VaultClient,
    uri: KeyUri,
    transit: TransitUri,
}

impl std::fmt::Debug for TransitKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransitKek")
            .field("uri", &self.uri)
            .field("vault", &self.client.address())
            .finish_non_exhaustive()
    }
}

/// Transit's answer to `encrypt` and `datakey`.
#[derive(Deserialize)]
struct CiphertextOut {
    ciphertext: String,
    #[serde(default)]
    plaintext: Option<Zeroizing<String>>,
}

/// Transit's answer to `decrypt`.
#[derive(Deserialize)]
struct PlaintextOut {
    plaintext: Zeroizing<String>,
}

impl TransitKek {
    /// Creates a non-exportable `aes256-gcm96` key at `uri`; an existing name is
    /// `AlreadyExists` and stays as it was.
    pub(crate) async fn generate(client: &VaultClient, uri: &TransitUri) -> Result<Self, Error> {
        refuse_pinned(uri)?;
        if keys::try_read_key(client, uri).await?.is_some() {
            return Err(Error::AlreadyExists(uri.to_string()));
        }
        let body = json!({"type": KEK_TYPE, "exportable": false, "allow_plaintext_backup": false});
        post::<serde_json::Value>(client, &keys::path(uri, "keys"), &body).await?;
        let info = keys::read_key(client, uri).await?;
        if info.kind != KEK_TYPE || info.latest_version != 1 {
            return Err(Error::AlreadyExists(format!(
                "{uri} (created meanwhile by someone else as a {} key at version {})",
                info.kind, info.latest_version
            )));
        }
        tracing::info!(key = %uri, vault = %client.address(), "generated Transit key-encryption key");
        Ok(Self::new(client, uri))
    }

    /// Opens the `aes256-gcm96` key at `uri`; a missing one is `NotFound`, another
    /// type `Unsupported`.
    pub(crate) async fn open(client: &VaultClient, uri: &TransitUri) -> Result<Self, Error> {
        refuse_pinned(uri)?;
        let info = keys::read_key(client, uri).await?;
        check_kek(&info, uri)?;
        Ok(Self::new(client, uri))
    }

    fn new(client: &VaultClient, uri: &TransitUri) -> Self {
        TransitKek {
            client: client.clone(),
            uri: KeyUri::Transit(uri.clone()),
            transit: uri.clone(),
        }
    }

    /// Decrypts Transit ciphertext of `version`, with `aad` unless it is `None`.
    async fn decrypt_raw(
        &self,
        sealed: &Sealed,
        aad: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let ciphertext = format!(
            "vault:v{}:{}",
            sealed.version,
            B64.encode(&sealed.ciphertext)
        );
        let mut body = json!({ "ciphertext": ciphertext });
        if let Some(aad) = aad {
            body["associated_data"] = B64.encode(aad).into();
        }
        let out: PlaintextOut = post(&self.client, &keys::path(&self.transit, "decrypt"), &body)
            .await
            .map_err(|e| keys::not_found_as(e, &self.transit))?;
        B64.decode(out.plaintext.as_bytes())
            .map(Zeroizing::new)
            .map_err(|_| {
                Error::backend(format!(
                    "{}: Transit returned a plaintext that is not base64",
                    self.uri
                ))
            })
    }
}

fn refuse_pinned(uri: &TransitUri) -> Result<(), Error> {
    keys::check_mount(uri)?;
    if uri.version.is_some() {
        return Err(Error::InvalidUri(format!(
            "{uri}: a key-encryption key is used at all its versions; drop 'version='"
        )));
    }
    Ok(())
}

fn check_kek(info: &KeyInfo, uri: &TransitUri) -> Result<(), Error> {
    if info.kind != KEK_TYPE || info.derived {
        return Err(Error::Unsupported(format!(
            "{uri} is a {}Transit key of type '{}'; keyward's key-encryption keys are plain {KEK_TYPE} keys",
            if info.derived { "derived " } else { "" },
            info.kind
        )));
    }
    Ok(())
}

/// POSTs a JSON body and returns the answer's `data`.
async fn post<T: serde::de::DeserializeOwned>(
    client: &VaultClient,
    path: &str,
    body: &serde_json::Value,
) -> Result<T, Error> {
    let body = serde_json::to_vec(body).map_err(|e| Error::backend_with("encode", e))?;
    client
        .call::<T>(Method::POST, path, Some(&body), TokenUse::Current)
        .await?
        .data
        .ok_or_else(|| Error::backend(format!("Vault answered {path} without data")))
}

/// Splits `vault:vN:BASE64` into the version and the decoded bytes.
fn parse_ciphertext(text: &str, uri: &KeyUri) -> Result<Sealed, Error> {
    let bad = || {
        Error::backend(format!(
            "{uri}: Transit returned ciphertext not of the form vault:vN:..."
        ))
    };
    let rest = text.strip_prefix("vault:v").ok_or_else(bad)?;
    let (version, b64) = rest.split_once(':').ok_or_else(bad)?;
    let version: u32 = version.parse().map_err(|_| bad())?;
    let ciphertext = B64.decode(b64).map_err(|_| bad())?;
    if version == 0 || ciphertext.is_empty() {
        return Err(bad());
    }
    Ok(Sealed {
        version,
        ciphertext,
    })
}

#[async_trait::async_trait]
impl KeyWrapper for TransitKek {
    fn uri(&self) -> &KeyUri {
        &self.uri
    }

    async fn current_version(&self) -> Result<u32, Error> {
        let info = keys::read_key(&self.client, &self.transit).await?;
        check_kek(&info, &self.transit)?;
        Ok(info.latest_version)
    }

    /// Transit's `rotate` adds a version each time it is received, so it is never
    /// resent blindly: after a failure that leaves open whether Transit acted (a lost
    /// answer, a 5xx), the key's latest version decides. Above the version read before
    /// the first attempt, the rotation happened (or another rotated it meanwhile, which
    /// serves the caller as well); otherwise it is sent again after a pause, within
    /// the client's deadline.
    async fn rotate(&self) -> Result<u32, Error> {
        let path = keys::path(&self.transit, "keys") + "/rotate";
        let body = serde_json::to_vec(&json!({})).expect("json");
        let before = self.current_version().await?;
        let deadline = Instant::now() + self.client.deadline();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let why = match self
                .client
                .send_once(&Method::POST, &path, Some(&body))
                .await
            {
                SentOnce::Done => break,
                SentOnce::Refused(e) => return Err(keys::not_found_as(e, &self.transit)),
                SentOnce::Unknown(e) => e,
            };
            if self.current_version().await? > before {
                tracing::info!(key = %self.uri, error = %keyward_core::chain_line(&why), "Transit's answer to rotate was lost, but the key has a new version");
                break;
            }
            let delay = ROTATE_BACKOFF.delay(attempts);
            if Instant::now() + delay >= deadline {
                return Err(why);
            }
            tracing::debug!(key = %self.uri, attempts, ?delay, "Transit did not rotate; sending rotate again");
            tokio::time::sleep(delay).await;
        }
        // Older Vaults answer rotate with no body: read the key for the new version.
        let version = self.current_version().await?;
        tracing::info!(key = %self.uri, version, "rotated Transit key-encryption key");
        Ok(version)
    }

    async fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, Error> {
        let body = json!({
            "plaintext": B64.encode(plaintext),
            "associated_data": B64.encode(aad),
        });
        let out: CiphertextOut = post(&self.client, &keys::path(&self.transit, "encrypt"), &body)
            .await
            .map_err(|e| keys::not_found_as(e, &self.transit))?;
        parse_ciphertext(&out.ciphertext, &self.uri)
    }

    async fn unseal(&self, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.decrypt_raw(sealed, Some(aad)).await
    }

    async fn new_data_key(&self) -> Result<(Zeroizing<[u8; DATA_KEY_LEN]>, Sealed), Error> {
        let path = format!(
            "{}/datakey/plaintext/{}",
            self.transit.mount, self.transit.name
        );
        let body = json!({ "bits": DATA_KEY_LEN * 8 });
        let out: CiphertextOut = post(&self.client, &path, &body)
            .await
            .map_err(|e| keys::not_found_as(e, &self.transit))?;
        let sealed = parse_ciphertext(&out.ciphertext, &self.uri)?;
        let plain = out.plaintext.ok_or_else(|| {
            Error::backend(format!(
                "{}: Transit's data key came without plaintext",
                self.uri
            ))
        })?;
        let plain = Zeroizing::new(B64.decode(plain.as_bytes()).map_err(|_| {
            Error::backend(format!("{}: Transit's data key is not base64", self.uri))
        })?);
        Ok((data_key_from(&plain, &self.uri)?, sealed))
    }

    async fn open_data_key(&self, sealed: &Sealed) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, Error> {
        let plain = self.decrypt_raw(sealed, None).await?;
        data_key_from(&plain, &self.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transit_ciphertext_names_its_version() {
        let uri = KeyUri::parse("transit:k").unwrap();
        let s = parse_ciphertext("vault:v12:AQID", &uri).unwrap();
        assert_eq!((s.version, s.ciphertext), (12, vec![1, 2, 3]));
        for bad in [
            "vault:v0:AQID",
            "vault:vx:AQID",
            "v1:AQID",
            "vault:v1:",
            "vault:v1:!!",
        ] {
            assert!(parse_ciphertext(bad, &uri).is_err(), "{bad}");
        }
    }
}
