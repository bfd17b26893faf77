//! The `transit:` backend: Vault/OpenBao Transit keys as keyward keys.

mod keys;
mod signer;

use std::sync::Arc;

use async_trait::async_trait;
use keyward_core::uri::TransitUri;
use keyward_core::{Algorithm, Error, KeyBackend, KeySigner, KeyUri};

pub use signer::TransitSigner;

use crate::client::VaultClient;
use crate::settings::VaultSettings;

/// Keys in a Vault/OpenBao Transit engine (`transit:NAME[?mount=M&version=N]`).
///
/// Keys are created non-exportable; signing happens in Vault. The connection, token
/// renewal and retries live in the shared [`VaultClient`].
#[derive(Clone, Debug)]
pub struct TransitBackend {
    client: VaultClient,
}

fn transit_uri(uri: &KeyUri) -> Result<&TransitUri, Error> {
    match uri {
        KeyUri::Transit(t) => {
            keys::check_mount(t)?;
            Ok(t)
        }
        other => Err(Error::InvalidUri(format!(
            "the Transit backend takes transit: URIs, not {}:",
            other.scheme()
        ))),
    }
}

impl TransitBackend {
    /// A backend for the server in `settings`; no network traffic until first use.
    pub fn new(settings: &VaultSettings) -> Result<Self, Error> {
        Ok(TransitBackend {
            client: VaultClient::new(settings)?,
        })
    }

    /// A backend configured from `VAULT_*`/`BAO_*` variables ([`VaultSettings::from_env`]).
    pub fn from_env() -> Result<Self, Error> {
        Self::new(&VaultSettings::from_env()?)
    }

    /// A backend sharing an existing client (and so its token).
    pub fn with_client(client: VaultClient) -> Self {
        TransitBackend { client }
    }

    /// The connection this backend uses (address, token status, health check).
    pub fn client(&self) -> &VaultClient {
        &self.client
    }

    /// Opens the key version `uri` names (latest unless pinned), signing with `alg`
    /// (`None`: the key type's default, PKCS#1 v1.5 for RSA; `Some(RsaPssSha256)` for PSS).
    pub async fn open_transit(
        &self,
        uri: &TransitUri,
        alg: Option<Algorithm>,
    ) -> Result<Arc<TransitSigner>, Error> {
        keys::check_mount(uri)?;
        let info = keys::read_key(&self.client, uri).await?;
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
        keys::check_mount(uri)?;
        if uri.version.is_some() {
            return Err(Error::InvalidUri(format!(
                "{uri}: a new Transit key starts at version 1; drop 'version=' to generate it"
            )));
        }
        if keys::try_read_key(&self.client, uri).await?.is_some() {
            return Err(Error::AlreadyExists(uri.to_string()));
        }
        let kt = alg.key_type();
        keys::create_key(&self.client, uri, kt).await?;
        let info = keys::read_key(&self.client, uri).await?;
        if info.kind != keys::transit_type(kt) || info.latest_version != 1 {
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

#[async_trait]
impl KeyBackend for TransitBackend {
    fn scheme(&self) -> &'static str {
        "transit"
    }

    async fn generate(&self, uri: &KeyUri, alg: Algorithm) -> Result<Arc<dyn KeySigner>, Error> {
        let t = transit_uri(uri)?;
        Ok(self.generate_transit(t, alg).await?)
    }

    async fn open(&self, uri: &KeyUri) -> Result<Arc<dyn KeySigner>, Error> {
        let t = transit_uri(uri)?;
        Ok(self.open_transit(t, None).await?)
    }
}
