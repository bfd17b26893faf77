//! keyward-awskms: keys in AWS KMS (or a KMS-compatible server such as moto), chosen
//! by `awskms:` URIs: `awskms:alias/NAME`, `awskms:key-id=ID`, `awskms:arn:aws:kms:...`.
//!
//! Region, endpoint and credentials come from the standard AWS chain (`AWS_REGION`,
//! `AWS_ENDPOINT_URL_KMS`/`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`..., profiles);
//! [`KmsSettings`] and then the key URI's `?region=`/`?endpoint=`/`?profile=` override it.
//! Every KMS call is bounded by a deadline, retried with jittered back-off on throttling
//! and transient failures, and limited in concurrency; SDK clients are shared per
//! (region, endpoint, profile) so their connections are reused.
//!
//! Files by role (every backend crate uses the same names for the same roles):
//! - `lib.rs`: [`AwsKmsBackend`], the `KeyBackend` of `awskms:` URIs;
//! - `keys.rs`: creating keys (CreateKey, CreateAlias) and opening them (DescribeKey,
//!   GetPublicKey);
//! - `signer.rs`: the `KeySigner` of one KMS key (Sign);
//! - `wrapper.rs`: [`AwsKmsKek`], the `KeyWrapper` of a symmetric KMS key
//!   (GenerateDataKey, Encrypt, Decrypt, RotateKeyOnDemand);
//! - `settings.rs`: [`KmsSettings`];
//! - `retry.rs`: the concurrency limit, deadline and back-off around every KMS call;
//! - `errors.rs`: failed KMS calls in keyward's `Error`;
//! - `client.rs`: SDK clients, shared per region, endpoint and profile.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod errors;
mod keys;
mod retry;
mod settings;
mod signer;
mod wrapper;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use keyward_core::uri::AwsKmsUri;
use keyward_core::{Algorithm, Error, KeyBackend, KeySigner, KeyUri, KeyWrapper};

use crate::client::{ClientKey, ClientPool, KmsClient};
use crate::retry::Limits;

pub use settings::KmsSettings;
pub use wrapper::AwsKmsKek;

/// DER public keys by client and key ARN.
type PublicKeys = HashMap<(ClientKey, String), Arc<[u8]>>;

/// The `awskms:` backend: generates, opens and signs with asymmetric KMS keys, and
/// wraps and encrypts with symmetric ones.
pub struct AwsKmsBackend {
    settings: KmsSettings,
    clients: ClientPool,
    limits: Arc<Limits>,
    /// Public keys already fetched, by client and key ARN (a KMS key's public key
    /// never changes).
    public_keys: Mutex<PublicKeys>,
}

impl AwsKmsBackend {
    /// A backend with these settings; SDK clients are built on first use.
    pub fn new(settings: KmsSettings) -> Self {
        let limits = Arc::new(Limits::new(settings.max_concurrency, settings.deadline));
        AwsKmsBackend {
            settings,
            clients: ClientPool::default(),
            limits,
            public_keys: Mutex::new(HashMap::new()),
        }
    }

    /// The settings this backend was made with.
    pub fn settings(&self) -> &KmsSettings {
        &self.settings
    }

    /// The SDK client this backend uses for `uri` (same chain, overrides, timeouts and
    /// connection pool), for callers that need a KMS call keyward does not make.
    pub async fn sdk_client(&self, uri: &AwsKmsUri) -> Result<aws_sdk_kms::Client, Error> {
        Ok(self.client(uri).await?.1.sdk.clone())
    }

    async fn client(&self, uri: &AwsKmsUri) -> Result<(ClientKey, Arc<KmsClient>), Error> {
        let key = ClientKey::for_uri(uri, &self.settings);
        let client = self.clients.get(&key, &self.settings).await?;
        Ok((key, client))
    }
}

impl std::fmt::Debug for AwsKmsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The SDK clients (and the credentials they hold) stay out of Debug output.
        f.debug_struct("AwsKmsBackend")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn kms_uri(uri: &KeyUri) -> Result<&AwsKmsUri, Error> {
    match uri {
        KeyUri::AwsKms(u) => Ok(u),
        other => Err(Error::InvalidUri(format!(
            "the awskms backend takes awskms: URIs, not {}:",
            other.scheme()
        ))),
    }
}

#[async_trait]
impl KeyBackend for AwsKmsBackend {
    fn scheme(&self) -> &'static str {
        "awskms"
    }

    async fn generate(&self, uri: &KeyUri, alg: Algorithm) -> Result<Arc<dyn KeySigner>, Error> {
        self.generate_key(kms_uri(uri)?, uri, alg).await
    }

    async fn open(&self, uri: &KeyUri) -> Result<Arc<dyn KeySigner>, Error> {
        self.open_key(kms_uri(uri)?, uri).await
    }

    async fn generate_wrapper(&self, uri: &KeyUri) -> Result<Arc<dyn KeyWrapper>, Error> {
        Ok(Arc::new(self.generate_kek(kms_uri(uri)?, uri).await?))
    }

    async fn open_wrapper(&self, uri: &KeyUri) -> Result<Arc<dyn KeyWrapper>, Error> {
        Ok(Arc::new(self.open_kek(kms_uri(uri)?, uri).await?))
    }
}
