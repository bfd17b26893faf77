//! Opening a key: DescribeKey (it must be enabled and for signing), then its public key.

use std::sync::Arc;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyMetadata, KeyState, KeyUsageType};
use keyward_core::uri::AwsKmsUri;
use keyward_core::{Algorithm, Error, KeySigner, KeyType, KeyUri};

use crate::AwsKmsBackend;
use crate::client::{ClientKey, KmsClient};
use crate::retry::Idempotency;
use crate::signer::{AwsKmsSigner, SignerParts, key_type_of, signing_spec_for};

impl AwsKmsBackend {
    /// Opens the key at `uri`; RSA keys sign PKCS#1 v1.5.
    pub(crate) async fn open_key(
        &self,
        kms: &AwsKmsUri,
        uri: &KeyUri,
    ) -> Result<Arc<dyn KeySigner>, Error> {
        let (client_key, client) = self.client(kms).await?;
        let meta = self
            .describe(&client, kms, uri)
            .await?
            .ok_or_else(|| Error::NotFound(uri.to_string()))?;
        let key_type = usable_key_type(&meta, uri)?;
        let algorithm = Algorithm::default_for(key_type);
        let spec = signing_spec_for(algorithm)?;
        if !meta.signing_algorithms().is_empty() && !meta.signing_algorithms().contains(&spec) {
            return Err(Error::backend(format!(
                "key {uri} does not allow signing with {}",
                spec.as_str()
            )));
        }
        let key_arn = key_arn(&meta);
        let spki = self.public_key(&client_key, &client, &key_arn, uri).await?;
        let signer = AwsKmsSigner::new(SignerParts {
            uri: uri.clone(),
            algorithm,
            key_arn,
            spki,
            raw_limit: self.settings.raw_message_limit,
            client,
            limits: Arc::clone(&self.limits),
        })?;
        Ok(Arc::new(signer))
    }

    /// DescribeKey; `None` when KMS does not know the key or alias.
    pub(crate) async fn describe(
        &self,
        client: &KmsClient,
        kms: &AwsKmsUri,
        uri: &KeyUri,
    ) -> Result<Option<KeyMetadata>, Error> {
        let result = self
            .limits
            .call(client, "DescribeKey", uri, Idempotency::Safe, || {
                client.sdk.describe_key().key_id(kms.key_id()).send()
            })
            .await;
        match result {
            Ok(out) => out.key_metadata.map(Some).ok_or_else(|| {
                Error::backend(format!(
                    "AWS KMS DescribeKey returned no metadata for {uri}"
                ))
            }),
            Err(f) if f.code() == Some("NotFoundException") => Ok(None),
            Err(f) => Err(f.into_error("DescribeKey", uri)),
        }
    }

    /// The key's DER SubjectPublicKeyInfo, from the cache or GetPublicKey.
    pub(crate) async fn public_key(
        &self,
        client_key: &ClientKey,
        client: &KmsClient,
        key_arn: &str,
        uri: &KeyUri,
    ) -> Result<Arc<[u8]>, Error> {
        let cache_key = (client_key.clone(), key_arn.to_string());
        if let Some(spki) = self.cached_public_key(&cache_key) {
            return Ok(spki);
        }
        let out = self
            .limits
            .call(client, "GetPublicKey", uri, Idempotency::Safe, || {
                client.sdk.get_public_key().key_id(key_arn).send()
            })
            .await
            .map_err(|f| f.into_error("GetPublicKey", uri))?;
        let der = out.public_key.map(Blob::into_inner).unwrap_or_default();
        keyward_core::subject_public_key(&der).map_err(|e| {
            Error::backend_with(
                format!("AWS KMS returned an unreadable public key for {uri}"),
                e,
            )
        })?;
        let spki: Arc<[u8]> = der.into();
        self.public_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cache_key, Arc::clone(&spki));
        Ok(spki)
    }

    fn cached_public_key(&self, cache_key: &(ClientKey, String)) -> Option<Arc<[u8]>> {
        let cache = self.public_keys.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(cache_key).cloned()
    }
}

/// The key's ARN (its id if KMS gave no ARN).
pub(crate) fn key_arn(meta: &KeyMetadata) -> String {
    meta.arn().unwrap_or(meta.key_id()).to_string()
}

/// The key type of an enabled SIGN_VERIFY key; otherwise an error saying what is wrong.
fn usable_key_type(meta: &KeyMetadata, uri: &KeyUri) -> Result<KeyType, Error> {
    match meta.key_state() {
        Some(KeyState::Enabled) => {}
        Some(KeyState::Disabled) => return Err(Error::backend(format!("key {uri} is disabled"))),
        Some(KeyState::PendingDeletion | KeyState::PendingReplicaDeletion) => {
            return Err(Error::backend(format!("key {uri} is pending deletion")));
        }
        Some(state) => {
            return Err(Error::backend(format!(
                "key {uri} is in state {}, not Enabled",
                state.as_str()
            )));
        }
        None if !meta.enabled() => {
            return Err(Error::backend(format!("key {uri} is disabled")));
        }
        None => {}
    }
    match meta.key_usage() {
        Some(KeyUsageType::SignVerify) => {}
        other => {
            return Err(Error::backend(format!(
                "key {uri} has usage {}, not SIGN_VERIFY",
                other.map_or("unknown", |u| u.as_str())
            )));
        }
    }
    let spec = meta.key_spec();
    spec.and_then(key_type_of).ok_or_else(|| {
        Error::Unsupported(format!(
            "key {uri} has key spec {}; keyward signs with ECC_NIST_P256, ECC_NIST_P384 and RSA_2048/3072/4096 keys",
            spec.map_or("unknown", |s| s.as_str())
        ))
    })
}
