//! The two traits every backend implements: a key that signs, and a place that holds keys
//! (which may also hold key-encryption keys, [`KeyWrapper`]s).

use std::sync::Arc;

use async_trait::async_trait;

use crate::{Algorithm, Error, KeyUri, KeyWrapper};

/// A private key that can sign, wherever it lives (memory, HSM, KMS, Vault).
///
/// Object-safe so the agent can hold `Arc<dyn KeySigner>` chosen at run time by URI scheme.
#[async_trait]
pub trait KeySigner: Send + Sync + std::fmt::Debug {
    /// The canonical URI of this key (never carries a PIN).
    fn uri(&self) -> &KeyUri;

    /// The algorithm this key signs with.
    fn algorithm(&self) -> Algorithm;

    /// The public key as DER `SubjectPublicKeyInfo`, cached when the key was opened.
    fn public_key_spki_der(&self) -> &[u8];

    /// Signs the whole `message` (the backend hashes as the algorithm requires) and
    /// returns the signature in X.509 encoding: ECDSA as a DER `Ecdsa-Sig-Value`,
    /// RSA and Ed25519 as raw bytes.
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error>;
}

/// A store of keys addressed by one URI scheme.
#[async_trait]
pub trait KeyBackend: Send + Sync {
    /// The URI scheme this backend serves: `file`, `pkcs11`, `awskms` or `transit`.
    fn scheme(&self) -> &'static str;

    /// Creates a new key at `uri`. Never overwrites: an existing key is `AlreadyExists`.
    async fn generate(&self, uri: &KeyUri, alg: Algorithm) -> Result<Arc<dyn KeySigner>, Error>;

    /// Opens the existing key at `uri`; a missing one is `NotFound`. RSA keys open
    /// with PKCS#1 v1.5 signing.
    async fn open(&self, uri: &KeyUri) -> Result<Arc<dyn KeySigner>, Error>;

    /// Creates a new AES-256 key-encryption key at `uri`, at version 1. Never
    /// overwrites: an existing key is `AlreadyExists`. Backends without KEKs answer
    /// `Unsupported`.
    async fn generate_wrapper(&self, uri: &KeyUri) -> Result<Arc<dyn KeyWrapper>, Error> {
        Err(no_wrapping(self.scheme(), uri))
    }

    /// Opens the existing key-encryption key at `uri`; a missing one is `NotFound`.
    async fn open_wrapper(&self, uri: &KeyUri) -> Result<Arc<dyn KeyWrapper>, Error> {
        Err(no_wrapping(self.scheme(), uri))
    }
}

/// The answer of a backend that has no key-encryption keys (yet).
fn no_wrapping(scheme: &str, uri: &KeyUri) -> Error {
    Error::Unsupported(format!(
        "{uri}: the {scheme} backend has no key-encryption keys (file:, pkcs11:, transit: and awskms: do)"
    ))
}
