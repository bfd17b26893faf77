//! The `transit:` backend: Vault/OpenBao Transit keys as keyward keys: signing keys
//! (`keys.rs`, `signer.rs`) and key-encryption keys (`wrapper.rs`).

mod keys;
mod signer;
mod wrapper;

use std::sync::Arc;

use async_trait::async_trait;
use keyward_core::uri::TransitUri;
use keyward_core::{Algorithm, Error, KeyBackend, KeySigner, KeyUri, KeyWrapper};

pub use signer::TransitSigner;
pub use wrapper::TransitKek;

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

    /// The connection this backend uses (address, token status, health check).
    pub fn client(&self) -> &VaultClient {
        &self.client
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

    async fn generate_wrapper(&self, uri: &KeyUri) -> Result<Arc<dyn KeyWrapper>, Error> {
        let t = transit_uri(uri)?;
        Ok(Arc::new(TransitKek::generate(&self.client, t).await?))
    }

    async fn open_wrapper(&self, uri: &KeyUri) -> Result<Arc<dyn KeyWrapper>, Error> {
        let t = transit_uri(uri)?;
        Ok(Arc::new(TransitKek::open(&self.client, t).await?))
    }
}
