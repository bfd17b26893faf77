//! Creating a key: CreateKey for signing, then CreateAlias; a key whose alias could not
//! be created is scheduled for deletion so that no orphan is left behind.

use std::sync::Arc;

use aws_sdk_kms::types::KeyUsageType;
use keyward_core::uri::{AwsKmsUri, KmsKeyRef};
use keyward_core::{Algorithm, Error, KeySigner, KeyUri, chain_line};

use crate::AwsKmsBackend;
use crate::client::KmsClient;
use crate::open::key_arn;
use crate::retry::Idempotency;
use crate::signer::{AwsKmsSigner, SignerParts, key_spec_for, signing_spec_for};

/// The shortest waiting period KMS allows before deleting a key.
const ORPHAN_DELETION_DAYS: i32 = 7;

impl AwsKmsBackend {
    /// Creates a key for `alg` under the alias in `uri`; never touches an existing alias.
    pub(crate) async fn generate_key(
        &self,
        kms: &AwsKmsUri,
        uri: &KeyUri,
        alg: Algorithm,
    ) -> Result<Arc<dyn KeySigner>, Error> {
        let KmsKeyRef::Alias(alias) = &kms.key else {
            return Err(Error::Unsupported(format!(
                "generating {uri}: AWS KMS picks key ids itself, so generate needs an alias URI (awskms:alias/NAME)"
            )));
        };
        let key_spec = key_spec_for(alg)?;
        signing_spec_for(alg)?;
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
                    .key_usage(KeyUsageType::SignVerify)
                    .key_spec(key_spec.clone())
                    .description(format!("keyward {alg} key, {alias}"))
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

        let spki = self.public_key(&client_key, &client, &key_arn, uri).await?;
        tracing::info!(key = %uri, %key_arn, algorithm = %alg, "generated AWS KMS key");
        let signer = AwsKmsSigner::new(SignerParts {
            uri: uri.clone(),
            algorithm: alg,
            key_arn,
            spki,
            raw_limit: self.settings.raw_message_limit,
            client,
            limits: Arc::clone(&self.limits),
        })?;
        Ok(Arc::new(signer))
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
