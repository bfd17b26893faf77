//! A software key pair that signs: the `KeySigner` the backend hands out, signing in
//! process memory.

use async_trait::async_trait;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair};
use keyward_core::{Algorithm, Error, KeySigner, KeyUri};

/// The aws-lc key object behind a [`SoftwareKey`].
pub(crate) enum Inner {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(aws_lc_rs::rsa::KeyPair),
}

/// A private key in process memory that implements [`KeySigner`]. Made by
/// [`SoftwareKey::generate`] or [`SoftwareKey::from_pkcs8`].
pub struct SoftwareKey {
    pub(crate) uri: KeyUri,
    pub(crate) algorithm: Algorithm,
    pub(crate) spki: Vec<u8>,
    pub(crate) inner: Inner,
}

impl std::fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareKey")
            .field("uri", &self.uri)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The error for a failed aws-lc operation (aws-lc says no more than that it failed).
pub(crate) fn crypto_err(what: &str) -> Error {
    Error::backend(format!("software key: {what} failed"))
}

impl SoftwareKey {
    /// The same key signing with another algorithm of its key type (RSA: PKCS#1 or PSS).
    pub fn with_algorithm(mut self, alg: Algorithm) -> Result<Self, Error> {
        if alg.key_type() != self.algorithm.key_type() {
            return Err(Error::Unsupported(format!(
                "{} is a {} key; it cannot sign {alg}",
                self.uri, self.algorithm
            )));
        }
        self.algorithm = alg;
        Ok(self)
    }

    /// Signs synchronously (the async trait method calls this; the key is in memory).
    pub fn sign_now(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        match &self.inner {
            Inner::Ecdsa(k) => k
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| crypto_err("ECDSA signing")),
            Inner::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
            Inner::Rsa(k) => {
                let padding: &dyn signature::RsaEncoding = match self.algorithm {
                    Algorithm::RsaPssSha256(_) => &signature::RSA_PSS_SHA256,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(padding, &SystemRandom::new(), message, &mut sig)
                    .map_err(|_| crypto_err("RSA signing"))?;
                Ok(sig)
            }
        }
    }
}

#[async_trait]
impl KeySigner for SoftwareKey {
    fn uri(&self) -> &KeyUri {
        &self.uri
    }

    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn public_key_spki_der(&self) -> &[u8] {
        &self.spki
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        self.sign_now(message)
    }
}
