//! keyward-software: keys held in process memory, stored as PKCS#8 PEM files (`file:`
//! URIs). Also the source of in-memory workload and leaf keys, which are never written
//! by the backend itself.
//!
//! Key bytes live inside aws-lc key objects, which cleanse their memory when freed;
//! every PKCS#8 buffer keyward handles is wrapped in `Zeroizing`.
//!
//! Files by role (every backend crate uses the same names for the same roles):
//! - `lib.rs`: [`SoftwareBackend`], the `KeyBackend` of `file:` URIs;
//! - `keys.rs`: creating keys (in memory, then as PEM files) and opening them
//!   ([`read_key_file`], PKCS#8 import);
//! - `signer.rs`: [`SoftwareKey`], the `KeySigner` of one in-memory key;
//! - `ec_der.rs`: the PKCS#8 encoding of a new EC key, written directly;
//! - `wrap.rs`: [`SoftwareKek`], key-encryption keys as a directory of AES-256 key
//!   files, one per version.
//!
//! The backend has no settings, and nothing to retry: errors are keyward's `Error` as is.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod ec_der;
mod keys;
mod signer;
mod wrap;

use std::sync::Arc;

use async_trait::async_trait;
use keyward_core::uri::FileUri;
use keyward_core::{Algorithm, Error, KeyBackend, KeySigner, KeyUri, KeyWrapper};

pub use keys::read_key_file;
pub use signer::SoftwareKey;
pub use wrap::SoftwareKek;

/// The `file:` backend: one PKCS#8 PEM file per key, 0600, in a 0700 directory.
#[derive(Debug, Default, Clone)]
pub struct SoftwareBackend;

impl SoftwareBackend {
    /// A software backend; it has no configuration.
    pub fn new() -> Self {
        SoftwareBackend
    }
}

fn file_uri(uri: &KeyUri) -> Result<&FileUri, Error> {
    match uri {
        KeyUri::File(f) => Ok(f),
        other => Err(Error::InvalidUri(format!(
            "the software backend takes file: URIs, not {}:",
            other.scheme()
        ))),
    }
}

#[async_trait]
impl KeyBackend for SoftwareBackend {
    fn scheme(&self) -> &'static str {
        "file"
    }

    async fn generate(&self, uri: &KeyUri, alg: Algorithm) -> Result<Arc<dyn KeySigner>, Error> {
        self.generate_key(uri, alg).await
    }

    async fn open(&self, uri: &KeyUri) -> Result<Arc<dyn KeySigner>, Error> {
        self.open_key(uri)
    }

    async fn generate_wrapper(&self, uri: &KeyUri) -> Result<Arc<dyn KeyWrapper>, Error> {
        let uri = uri.clone();
        wrap::blocking(move || SoftwareKek::generate(&uri)).await
    }

    async fn open_wrapper(&self, uri: &KeyUri) -> Result<Arc<dyn KeyWrapper>, Error> {
        let uri = uri.clone();
        wrap::blocking(move || SoftwareKek::open(&uri)).await
    }
}

#[cfg(test)]
mod tests;
