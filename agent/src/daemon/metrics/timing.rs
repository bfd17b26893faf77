//! A [`KeyBackend`] decorator whose signers time every `sign` call: the agent's
//! registry wraps the CA backends in it, so every CA signing operation (SVIDs,
//! intermediates, probes) is measured without touching any call site.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use keyward_core::{Algorithm, Error, KeyBackend, KeySigner, KeyUri, KeyWrapper};

use super::{Metrics, SigningLabels};

/// A backend whose signers report to `metrics`.
pub struct TimedBackend {
    inner: Arc<dyn KeyBackend>,
    metrics: Metrics,
}

impl TimedBackend {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn KeyBackend>, metrics: Metrics) -> Self {
        TimedBackend { inner, metrics }
    }

    fn wrap(&self, signer: Arc<dyn KeySigner>) -> Arc<dyn KeySigner> {
        Arc::new(TimedSigner {
            labels: SigningLabels::new(signer.uri().scheme()),
            inner: signer,
            metrics: self.metrics.clone(),
        })
    }
}

#[async_trait]
impl KeyBackend for TimedBackend {
    fn scheme(&self) -> &'static str {
        self.inner.scheme()
    }

    async fn generate(&self, uri: &KeyUri, alg: Algorithm) -> Result<Arc<dyn KeySigner>, Error> {
        Ok(self.wrap(self.inner.generate(uri, alg).await?))
    }

    async fn open(&self, uri: &KeyUri) -> Result<Arc<dyn KeySigner>, Error> {
        Ok(self.wrap(self.inner.open(uri).await?))
    }

    async fn generate_wrapper(&self, uri: &KeyUri) -> Result<Arc<dyn KeyWrapper>, Error> {
        self.inner.generate_wrapper(uri).await
    }

    async fn open_wrapper(&self, uri: &KeyUri) -> Result<Arc<dyn KeyWrapper>, Error> {
        self.inner.open_wrapper(uri).await
    }
}

/// A signer that records each signature's latency and outcome under its backend.
#[derive(Debug)]
struct TimedSigner {
    inner: Arc<dyn KeySigner>,
    metrics: Metrics,
    /// The backend's label sets, built once.
    labels: SigningLabels,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

#[async_trait]
impl KeySigner for TimedSigner {
    fn uri(&self) -> &KeyUri {
        self.inner.uri()
    }

    fn algorithm(&self) -> Algorithm {
        self.inner.algorithm()
    }

    fn public_key_spki_der(&self) -> &[u8] {
        self.inner.public_key_spki_der()
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let start = Instant::now();
        let result = self.inner.sign(message).await;
        let outcome = match &result {
            Ok(_) => Ok(()),
            Err(e) => Err(keyward_core::chain_line(e)),
        };
        self.metrics.signed(&self.labels, start.elapsed(), outcome);
        result
    }
}
