//! The backend registry: a key URI's scheme picks the backend. Backends compiled out
//! (cargo features `pkcs11`, `awskms`, `vault`) answer with `NotCompiled`. A caller may
//! wrap every backend it hands out in a decorator (the agent's signing metrics).

use std::sync::Arc;

use keyward_core::{Error, KeyBackend, KeySigner, KeyUri};
use tokio::sync::OnceCell;

/// Wraps a backend in another that adds behaviour around its signers (timing, say).
pub type BackendDecorator = Arc<dyn Fn(Arc<dyn KeyBackend>) -> Arc<dyn KeyBackend> + Send + Sync>;

/// Every backend this binary was built with, each created on first use.
#[derive(Default)]
pub struct Backends {
    file: OnceCell<Arc<dyn KeyBackend>>,
    #[cfg(feature = "pkcs11")]
    pkcs11: OnceCell<Arc<dyn KeyBackend>>,
    #[cfg(feature = "awskms")]
    awskms: OnceCell<Arc<dyn KeyBackend>>,
    #[cfg(feature = "vault")]
    transit: OnceCell<Arc<dyn KeyBackend>>,
    /// When set (the agent), every backend handed out is wrapped in it.
    decorate: Option<BackendDecorator>,
}

impl Backends {
    /// A registry that hands out every backend wrapped in `decorate`.
    pub fn decorated(decorate: BackendDecorator) -> Self {
        Backends {
            decorate: Some(decorate),
            ..Backends::default()
        }
    }

    /// The backend that serves `uri`'s scheme.
    pub async fn for_uri(&self, uri: &KeyUri) -> Result<Arc<dyn KeyBackend>, Error> {
        let cell = match uri.scheme() {
            "file" => &self.file,
            #[cfg(feature = "pkcs11")]
            "pkcs11" => &self.pkcs11,
            #[cfg(feature = "awskms")]
            "awskms" => &self.awskms,
            #[cfg(feature = "vault")]
            "transit" => &self.transit,
            other => return Err(Error::NotCompiled(other.to_string())),
        };
        let backend = cell
            .get_or_try_init(|| create(uri.scheme()))
            .await
            .cloned()?;
        Ok(match &self.decorate {
            Some(decorate) => decorate(backend),
            None => backend,
        })
    }

    /// Opens the existing key at `uri`.
    pub async fn open(&self, uri: &KeyUri) -> Result<Arc<dyn KeySigner>, Error> {
        self.for_uri(uri).await?.open(uri).await
    }
}

async fn create(scheme: &str) -> Result<Arc<dyn KeyBackend>, Error> {
    Ok(match scheme {
        "file" => Arc::new(keyward_software::SoftwareBackend::new()),
        #[cfg(feature = "pkcs11")]
        "pkcs11" => Arc::new(keyward_pkcs11::Pkcs11Backend::new(None)),
        #[cfg(feature = "awskms")]
        "awskms" => Arc::new(keyward_awskms::AwsKmsBackend::new(
            keyward_awskms::KmsSettings::default(),
        )),
        #[cfg(feature = "vault")]
        "transit" => Arc::new(keyward_vault::TransitBackend::from_env()?),
        other => return Err(Error::NotCompiled(other.to_string())),
    })
}
