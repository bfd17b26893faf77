//! keyward-software: keys held in process memory, stored as PKCS#8 PEM files (`file:`
//! URIs). Also the source of in-memory workload and leaf keys, which are never written
//! by the backend itself.
//!
//! Key bytes live inside aws-lc key objects, which cleanse their memory when freed;
//! every PKCS#8 buffer keyward handles is wrapped in `Zeroizing`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod ec_der;
mod key;

use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use keyward_core::fsutil::{self, Replace};
use keyward_core::uri::FileUri;
use keyward_core::{Algorithm, Error, KeyBackend, KeySigner, KeyUri};
use zeroize::Zeroizing;

pub use key::SoftwareKey;

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
        let path = file_uri(uri)?.path.clone();
        if path.exists() {
            return Err(Error::AlreadyExists(uri.to_string()));
        }
        let uri = uri.clone();
        tokio::task::spawn_blocking(move || {
            let (key, pkcs8) = SoftwareKey::generate(alg, uri)?;
            if let Some(dir) = path.parent() {
                fsutil::create_private_dir(dir)?;
            }
            let pem = Zeroizing::new(pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.to_vec())));
            fsutil::write_atomic(
                &path,
                pem.as_bytes(),
                fsutil::SECRET_FILE_MODE,
                Replace::Refuse,
            )
            .map_err(|e| match e {
                Error::AlreadyExists(_) => Error::AlreadyExists(key.uri().to_string()),
                e => e,
            })?;
            tracing::info!(key = %key.uri(), algorithm = %alg, "generated software key");
            Ok(Arc::new(key) as Arc<dyn KeySigner>)
        })
        .await
        .map_err(|e| Error::backend_with("key generation task failed", e))?
    }

    async fn open(&self, uri: &KeyUri) -> Result<Arc<dyn KeySigner>, Error> {
        let path = file_uri(uri)?.path.clone();
        let key = read_key_file(&path, uri.clone())?;
        Ok(Arc::new(key))
    }
}

/// Reads a PKCS#8 PEM key file, refusing one that others can read.
pub fn read_key_file(path: &Path, uri: KeyUri) -> Result<SoftwareKey, Error> {
    let text = match std::fs::read(path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(Error::NotFound(uri.to_string())),
        Err(e) => {
            return Err(Error::io(
                format!("cannot read key file {}", path.display()),
                e,
            ));
        }
    };
    let mode = fsutil::mode_of(path)?;
    if mode & 0o077 != 0 {
        return Err(Error::Backend {
            message: format!(
                "key file {} is accessible to other users (mode {mode:04o}); run chmod 600 on it",
                path.display()
            ),
            source: None,
        });
    }
    let parsed = pem::parse(&*text)
        .map_err(|_| Error::InvalidInput(format!("key file {} is not PEM", path.display())))?;
    if parsed.tag() != "PRIVATE KEY" {
        return Err(Error::Unsupported(format!(
            "key file {} holds a '{}' block; keyward reads unencrypted PKCS#8 ('PRIVATE KEY')",
            path.display(),
            parsed.tag()
        )));
    }
    let der = Zeroizing::new(parsed.into_contents());
    SoftwareKey::from_pkcs8(&der, uri)
}

#[cfg(test)]
mod tests;
