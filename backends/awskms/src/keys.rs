//! Creating and opening keys. Opening: DescribeKey (the key must be enabled and for
//! signing), then its public key. Creating: CreateKey for signing, then CreateAlias; a
//! key whose alias could not be created is scheduled for deletion so that no orphan is
//! left behind.

use std::sync::Arc;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyMetadata, KeySpec, KeyState, KeyUsageType};
use keyward_core::uri::{AwsKmsUri, KmsKeyRef};
use keyward_core::{Algorithm, Error, KeySigner, KeyType, KeyUri, RsaBits, chain_line};

use crate::AwsKmsBackend;
use crate::client::{ClientKey, KmsClient};
use crate::retry::Idempotency;
use crate::signer::{AwsKmsSigner, SignerParts, signing_spec_for, unsupported};

/// The shortest waiting period KMS allows before deleting a key.
const ORPHAN_DELETION_DAYS: i32 = 7;

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
        self.signer(uri, algorithm, key_arn(&meta), &client_key, client)
            .await
    }

    /// The signer of the key `key_arn` (which `uri` names), with its public key.
    async fn signer(
        &self,
        uri: &KeyUri,
        algorithm: Algorithm,
        key_arn: String,
        client_key: &ClientKey,
        client: Arc<KmsClient>,
    ) -> Result<Arc<dyn KeySigner>, Error> {
        let spki = self.public_key(client_key, &client, &key_arn, uri).await?;
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

    /// Creates a key for `alg` under the alias in `uri`; never touches an existing alias.
    pub(crate) async fn generate_key(
        &self,
        kms: &AwsKmsUri,
        uri: &KeyUri,
        alg: Algorithm,
    ) -> Result<Arc<dyn KeySigner>, Error> {
        let key_spec = key_spec_for(alg)?;
        signing_spec_for(alg)?;
        let (client_key, client, key_arn) = self
            .create_aliased(
                kms,
                uri,
                KeyUsageType::SignVerify,
                key_spec,
                &alg.to_string(),
            )
            .await?;
        tracing::info!(key = %uri, %key_arn, algorithm = %alg, "generated AWS KMS key");
        self.signer(uri, alg, key_arn, &client_key, client).await
    }

    /// CreateKey of `usage` and `spec`, then CreateAlias for the alias `uri` names;
    /// returns the client and the new key's ARN. An existing alias is `AlreadyExists`
    /// and is never touched; a key left without its alias is scheduled for deletion.
    pub(crate) async fn create_aliased(
        &self,
        kms: &AwsKmsUri,
        uri: &KeyUri,
        usage: KeyUsageType,
        spec: KeySpec,
        what: &str,
    ) -> Result<(ClientKey, Arc<KmsClient>, String), Error> {
        let KmsKeyRef::Alias(alias) = &kms.key else {
            return Err(Error::Unsupported(format!(
                "generating {uri}: AWS KMS picks key ids itself, so generate needs an alias URI (awskms:alias/NAME)"
            )));
        };
        let (client_key, client) = self.client(kms).await?;
        if self.describe(&client, kms, uri).await?.is_some() {
            return Err(Error::AlreadyExists(uri.to_string()));
        }

        let created = self
            .limits
            .call(&client, "CreateKey", uri, Idempotency::Unsafe, || {
                client
                    .sdk
                    .create_key()
                    .key_usage(usage.clone())
                    .key_spec(spec.clone())
                    .description(format!("keyward {what} key, {alias}"))
                    .send()
            })
            .await
            .map_err(|f| f.into_error("CreateKey", uri))?;
        let meta = created.key_metadata.ok_or_else(|| {
            Error::backend(format!("AWS KMS CreateKey returned no metadata for {uri}"))
        })?;
        let key_id = meta.key_id().to_string();
        let key_arn = key_arn(&meta);

        let aliased = self
            .limits
            .call(&client, "CreateAlias", uri, Idempotency::Safe, || {
                client
                    .sdk
                    .create_alias()
                    .alias_name(alias)
                    .target_key_id(&key_id)
                    .send()
            })
            .await;
        if let Err(f) = aliased {
            // The alias may name our key after all (a retried CreateAlias whose first
            // answer was lost): look before deleting anything.
            match self.describe(&client, kms, uri).await {
                Ok(Some(m)) if m.key_id() == key_id => {}
                Ok(_) => {
                    self.discard_orphan(&client, &key_id, uri).await;
                    return Err(if f.code() == Some("AlreadyExistsException") {
                        Error::AlreadyExists(uri.to_string())
                    } else {
                        f.into_error("CreateAlias", uri)
                    });
                }
                Err(e) => {
                    tracing::error!(
                        key = %uri, key_id, error = %chain_line(&e),
                        "cannot tell whether the alias was created; the new KMS key may be left without one"
                    );
                    return Err(f.into_error("CreateAlias", uri));
                }
            }
        }
        Ok((client_key, client, key_arn))
    }

    /// Schedules deletion of a key created for `uri` whose alias could not be made.
    async fn discard_orphan(&self, client: &KmsClient, key_id: &str, uri: &KeyUri) {
        let result = self
            .limits
            .call(
                client,
                "ScheduleKeyDeletion",
                uri,
                Idempotency::Safe,
                || {
                    client
                        .sdk
                        .schedule_key_deletion()
                        .key_id(key_id)
                        .pending_window_in_days(ORPHAN_DELETION_DAYS)
                        .send()
                },
            )
            .await;
        match result {
            Ok(_) => tracing::warn!(
                key = %uri, key_id,
                "alias not created; scheduled the new KMS key for deletion"
            ),
            Err(f) => tracing::error!(
                key = %uri, key_id,
                error = %chain_line(&f.into_error("ScheduleKeyDeletion", uri)),
                "alias not created and the new KMS key could not be scheduled for deletion; delete it by hand"
            ),
        }
    }
}

/// The key's ARN (its id if KMS gave no ARN).
pub(crate) fn key_arn(meta: &KeyMetadata) -> String {
    meta.arn().unwrap_or(meta.key_id()).to_string()
}

/// The key type of an enabled SIGN_VERIFY key; otherwise an error saying what is wrong.
fn usable_key_type(meta: &KeyMetadata, uri: &KeyUri) -> Result<KeyType, Error> {
    check_enabled(meta, uri)?;
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

/// `Ok` if the key is enabled; otherwise an error naming its state.
pub(crate) fn check_enabled(meta: &KeyMetadata, uri: &KeyUri) -> Result<(), Error> {
    match meta.key_state() {
        Some(KeyState::Enabled) => Ok(()),
        Some(KeyState::Disabled) => Err(Error::backend(format!("key {uri} is disabled"))),
        Some(KeyState::PendingDeletion | KeyState::PendingReplicaDeletion) => {
            Err(Error::backend(format!("key {uri} is pending deletion")))
        }
        Some(state) => Err(Error::backend(format!(
            "key {uri} is in state {}, not Enabled",
            state.as_str()
        ))),
        None if !meta.enabled() => Err(Error::backend(format!("key {uri} is disabled"))),
        None => Ok(()),
    }
}

/// The key spec KMS creates for `alg`'s key type; Ed25519 is refused by name.
fn key_spec_for(alg: Algorithm) -> Result<KeySpec, Error> {
    Ok(match alg.key_type() {
        KeyType::EcP256 => KeySpec::EccNistP256,
        KeyType::EcP384 => KeySpec::EccNistP384,
        KeyType::Rsa(RsaBits::B2048) => KeySpec::Rsa2048,
        KeyType::Rsa(RsaBits::B3072) => KeySpec::Rsa3072,
        KeyType::Rsa(RsaBits::B4096) => KeySpec::Rsa4096,
        KeyType::Ed25519 => return Err(unsupported(alg)),
    })
}

/// The key type of a KMS key spec, if keyward signs with such keys.
fn key_type_of(spec: &KeySpec) -> Option<KeyType> {
    Some(match spec {
        KeySpec::EccNistP256 => KeyType::EcP256,
        KeySpec::EccNistP384 => KeyType::EcP384,
        KeySpec::Rsa2048 => KeyType::Rsa(RsaBits::B2048),
        KeySpec::Rsa3072 => KeyType::Rsa(RsaBits::B3072),
        KeySpec::Rsa4096 => KeyType::Rsa(RsaBits::B4096),
        _ => return None,
    })
}
