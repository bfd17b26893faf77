//! AWS KMS key-encryption keys: [`AwsKmsKek`], a `SYMMETRIC_DEFAULT` `ENCRYPT_DECRYPT`
//! key. Data keys come from GenerateDataKey (AES_256) and are unwrapped by Decrypt;
//! payloads go through Encrypt/Decrypt with the associated data as the encryption
//! context (`keyward-aad` = its base64), so another AAD fails in KMS.
//!
//! Versions, mapped honestly: KMS rotates key material itself (RotateKeyOnDemand, or
//! automatic rotation) and every CiphertextBlob names the material that made it, so
//! Decrypt never needs the version. keyward's version of a KMS key is 1 + the number of
//! rotations ListKeyRotations reports; the blob header carries it for the operator
//! (which material generation made it), KMS does not check it. For the blobs it makes,
//! a KEK reads it at most once every [`LABEL_FRESH_FOR`] (a rotation made elsewhere shows
//! in new headers within that time; its own rotations, and any `current_version` call,
//! at once), not before every blob: that doubled the KMS calls per data key.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeySpec, KeyUsageType};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use keyward_core::uri::AwsKmsUri;
use keyward_core::wrap::{DATA_KEY_LEN, Sealed, data_key_from};
use keyward_core::{Error, KeyUri, KeyWrapper};
use zeroize::Zeroizing;

use crate::AwsKmsBackend;
use crate::client::KmsClient;
use crate::keys::{check_enabled, key_arn};
use crate::retry::{Idempotency, Limits};

/// The encryption-context entry that carries a payload's associated data.
const AAD_CONTEXT_KEY: &str = "keyward-aad";

/// How long the version read for new blobs' headers is used before it is read again.
pub const LABEL_FRESH_FOR: Duration = Duration::from_secs(1);

/// A symmetric KMS key used as a key-encryption key.
pub struct AwsKmsKek {
    uri: KeyUri,
    key_arn: String,
    client: Arc<KmsClient>,
    limits: Arc<Limits>,
    /// The version last read for new blobs, and when.
    label: Mutex<Option<(Instant, u32)>>,
}

impl std::fmt::Debug for AwsKmsKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The SDK client (and the credentials it holds) stays out of Debug output.
        f.debug_struct("AwsKmsKek")
            .field("uri", &self.uri)
            .field("key_arn", &self.key_arn)
            .finish_non_exhaustive()
    }
}

impl AwsKmsBackend {
    /// Creates a symmetric encryption key under the alias `uri` names.
    pub(crate) async fn generate_kek(
        &self,
        kms: &AwsKmsUri,
        uri: &KeyUri,
    ) -> Result<AwsKmsKek, Error> {
        let (_, client, key_arn) = self
            .create_aliased(
                kms,
                uri,
                KeyUsageType::EncryptDecrypt,
                KeySpec::SymmetricDefault,
                "key-encryption",
            )
            .await?;
        tracing::info!(key = %uri, %key_arn, "generated AWS KMS key-encryption key");
        Ok(self.kek(uri, key_arn, client))
    }

    /// Opens the enabled symmetric encryption key `uri` names.
    pub(crate) async fn open_kek(&self, kms: &AwsKmsUri, uri: &KeyUri) -> Result<AwsKmsKek, Error> {
        let (_, client) = self.client(kms).await?;
        let meta = self
            .describe(&client, kms, uri)
            .await?
            .ok_or_else(|| Error::NotFound(uri.to_string()))?;
        check_enabled(&meta, uri)?;
        if meta.key_usage() != Some(&KeyUsageType::EncryptDecrypt)
            || meta.key_spec() != Some(&KeySpec::SymmetricDefault)
        {
            return Err(Error::Unsupported(format!(
                "key {uri} is a {} {} key; keyward's key-encryption keys are SYMMETRIC_DEFAULT ENCRYPT_DECRYPT keys",
                meta.key_spec().map_or("unknown", |s| s.as_str()),
                meta.key_usage().map_or("unknown", |u| u.as_str()),
            )));
        }
        Ok(self.kek(uri, key_arn(&meta), client))
    }

    fn kek(&self, uri: &KeyUri, key_arn: String, client: Arc<KmsClient>) -> AwsKmsKek {
        AwsKmsKek {
            uri: uri.clone(),
            key_arn,
            client,
            limits: Arc::clone(&self.limits),
            label: Mutex::new(None),
        }
    }
}

impl AwsKmsKek {
    /// The version new blobs name: read again once the last read is older than
    /// [`LABEL_FRESH_FOR`].
    async fn label_version(&self) -> Result<u32, Error> {
        let kept = *self.label.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, version)) = kept
            && at.elapsed() < LABEL_FRESH_FOR
        {
            return Ok(version);
        }
        self.current_version().await
    }

    /// Keeps `version`, just read, for new blobs' headers.
    fn remember_label(&self, version: u32) {
        *self.label.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), version));
    }

    /// The CiphertextBlob of a KMS answer to `op`; a missing or empty one is an error.
    fn ciphertext(&self, blob: Option<Blob>, op: &str) -> Result<Vec<u8>, Error> {
        blob.map(Blob::into_inner)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                Error::backend(format!(
                    "AWS KMS {op} returned no ciphertext for {}",
                    self.uri
                ))
            })
    }

    /// Decrypt, naming this key (a blob of another key is refused by KMS) and the
    /// encryption context for `aad` (none for data keys).
    async fn decrypt_raw(
        &self,
        sealed: &Sealed,
        aad: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let context = aad.map(|a| B64.encode(a));
        let out = self
            .limits
            .call(
                &self.client,
                "Decrypt",
                &self.uri,
                Idempotency::Safe,
                || {
                    let mut req = self
                        .client
                        .sdk
                        .decrypt()
                        .key_id(&self.key_arn)
                        .ciphertext_blob(Blob::new(sealed.ciphertext.clone()));
                    if let Some(c) = &context {
                        req = req.encryption_context(AAD_CONTEXT_KEY, c);
                    }
                    req.send()
                },
            )
            .await
            .map_err(|f| f.into_error("Decrypt", &self.uri))?;
        let plain = out.plaintext.map(Blob::into_inner).unwrap_or_default();
        Ok(Zeroizing::new(plain))
    }
}

#[async_trait::async_trait]
impl KeyWrapper for AwsKmsKek {
    fn uri(&self) -> &KeyUri {
        &self.uri
    }

    async fn current_version(&self) -> Result<u32, Error> {
        let mut rotations = 0usize;
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .limits
                .call(
                    &self.client,
                    "ListKeyRotations",
                    &self.uri,
                    Idempotency::Safe,
                    || {
                        self.client
                            .sdk
                            .list_key_rotations()
                            .key_id(&self.key_arn)
                            .set_marker(marker.clone())
                            .send()
                    },
                )
                .await
                .map_err(|f| f.into_error("ListKeyRotations", &self.uri))?;
            rotations += out.rotations().len();
            match out.next_marker() {
                Some(m) if out.truncated() => marker = Some(m.to_string()),
                _ => break,
            }
        }
        let version =
            u32::try_from(rotations + 1).map_err(|_| Error::backend("too many KMS rotations"))?;
        self.remember_label(version);
        Ok(version)
    }

    /// RotateKeyOnDemand is sent again only when KMS surely did not act (throttled,
    /// connection refused). After a failure that leaves it open (a lost answer), the
    /// rotation count decides: above the count read before, the key did rotate.
    async fn rotate(&self) -> Result<u32, Error> {
        let before = self.current_version().await?;
        let sent = self
            .limits
            .call(
                &self.client,
                "RotateKeyOnDemand",
                &self.uri,
                Idempotency::Unsafe,
                || {
                    self.client
                        .sdk
                        .rotate_key_on_demand()
                        .key_id(&self.key_arn)
                        .send()
                },
            )
            .await
            .map_err(|f| f.into_error("RotateKeyOnDemand", &self.uri));
        if let Err(e) = sent {
            if !matches!(e, Error::Unavailable { .. }) || self.current_version().await? <= before {
                return Err(e);
            }
            tracing::info!(key = %self.uri, error = %keyward_core::chain_line(&e), "the answer to RotateKeyOnDemand was lost, but the key has rotated");
        }
        let version = self.current_version().await?;
        tracing::info!(key = %self.uri, version, "rotated AWS KMS key-encryption key");
        Ok(version)
    }

    async fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, Error> {
        let version = self.label_version().await?;
        let context = B64.encode(aad);
        let out = self
            .limits
            .call(
                &self.client,
                "Encrypt",
                &self.uri,
                Idempotency::Safe,
                || {
                    self.client
                        .sdk
                        .encrypt()
                        .key_id(&self.key_arn)
                        .plaintext(Blob::new(plaintext))
                        .encryption_context(AAD_CONTEXT_KEY, &context)
                        .send()
                },
            )
            .await
            .map_err(|f| f.into_error("Encrypt", &self.uri))?;
        let ciphertext = self.ciphertext(out.ciphertext_blob, "Encrypt")?;
        Ok(Sealed {
            version,
            ciphertext,
        })
    }

    async fn unseal(&self, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.decrypt_raw(sealed, Some(aad)).await
    }

    async fn new_data_key(&self) -> Result<(Zeroizing<[u8; DATA_KEY_LEN]>, Sealed), Error> {
        let version = self.label_version().await?;
        let out = self
            .limits
            .call(
                &self.client,
                "GenerateDataKey",
                &self.uri,
                Idempotency::Safe,
                || {
                    self.client
                        .sdk
                        .generate_data_key()
                        .key_id(&self.key_arn)
                        .key_spec(DataKeySpec::Aes256)
                        .send()
                },
            )
            .await
            .map_err(|f| f.into_error("GenerateDataKey", &self.uri))?;
        let plain = Zeroizing::new(out.plaintext.map(Blob::into_inner).unwrap_or_default());
        let ciphertext = self.ciphertext(out.ciphertext_blob, "GenerateDataKey")?;
        Ok((
            data_key_from(&plain, &self.uri)?,
            Sealed {
                version,
                ciphertext,
            },
        ))
    }

    async fn open_data_key(&self, sealed: &Sealed) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, Error> {
        let plain = self.decrypt_raw(sealed, None).await?;
        data_key_from(&plain, &self.uri)
    }
}
