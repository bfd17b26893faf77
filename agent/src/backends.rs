//! The backend registry: a key URI's scheme picks the backend. Backends compiled out
//! (cargo features `pkcs11`, `awskms`, `vault`) answer with `NotCompiled`.

use std::sync::Arc;

use keyward_core::{Error, KeyBackend, KeySigner, KeyUri};
use tokio::sync::OnceCell;

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
    /// When set (the agent), every signer reports its latency and outcome here.
    timing: Option<crate::daemon::metrics::Metrics>,
}

impl Backends {
    /// A registry whose signers report each signature to `metrics`.
    pub fn timed(metrics: crate::daemon::metrics::Metrics) -> Self {
        Backends {
            timing: Some(metrics),
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
        Ok(match &self.timing {
            Some(m) => Arc::new(crate::daemon::metrics::TimedBackend::new(
                backend,
                m.clone(),
            )),
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
