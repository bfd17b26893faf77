//! A KMS key that signs: the `KeySigner` the backend hands out.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use keyward_core::{Algorithm, Error, HashAlg, KeySigner, KeyUri};

use crate::client::KmsClient;
use crate::retry::{Idempotency, Limits};

/// The KMS signing algorithm producing `alg`'s signatures.
pub(crate) fn signing_spec_for(alg: Algorithm) -> Result<SigningAlgorithmSpec, Error> {
    Ok(match alg {
        Algorithm::EcdsaP256Sha256 => SigningAlgorithmSpec::EcdsaSha256,
        Algorithm::EcdsaP384Sha384 => SigningAlgorithmSpec::EcdsaSha384,
        Algorithm::RsaPkcs1Sha256(_) => SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
        Algorithm::RsaPssSha256(_) => SigningAlgorithmSpec::RsassaPssSha256,
        _ => return Err(unsupported(alg)),
    })
}

/// The error for an algorithm the awskms backend cannot sign with.
pub(crate) fn unsupported(alg: Algorithm) -> Error {
    Error::Unsupported(format!(
        "{alg} keys in AWS KMS (the awskms backend does ecdsa-p256, ecdsa-p384, rsa-2048/3072/4096 and rsa-pss-2048/3072/4096)"
    ))
}

/// A KMS asymmetric key opened for signing; the public key was fetched once.
pub(crate) struct AwsKmsSigner {
    uri: KeyUri,
    algorithm: Algorithm,
    /// The key's ARN, resolved when opened: signing never follows a moved alias to
    /// a key whose public key was not checked.
    key_arn: String,
    spki: Arc<[u8]>,
    signing_spec: SigningAlgorithmSpec,
    hash: HashAlg,
    raw_limit: usize,
    client: Arc<KmsClient>,
    limits: Arc<Limits>,
}

/// What an [`AwsKmsSigner`] is made of, gathered by `open` or `generate`.
pub(crate) struct SignerParts {
    pub(crate) uri: KeyUri,
    pub(crate) algorithm: Algorithm,
    pub(crate) key_arn: String,
    pub(crate) spki: Arc<[u8]>,
    pub(crate) raw_limit: usize,
    pub(crate) client: Arc<KmsClient>,
    pub(crate) limits: Arc<Limits>,
}

impl AwsKmsSigner {
    /// A signer from its parts; fails for algorithms KMS cannot sign with.
    pub(crate) fn new(p: SignerParts) -> Result<Self, Error> {
        let signing_spec = signing_spec_for(p.algorithm)?;
        let hash = p.algorithm.hash().ok_or_else(|| unsupported(p.algorithm))?;
        Ok(AwsKmsSigner {
            uri: p.uri,
            algorithm: p.algorithm,
            key_arn: p.key_arn,
            spki: p.spki,
            signing_spec,
            hash,
            raw_limit: p.raw_limit,
            client: p.client,
            limits: p.limits,
        })
    }
}

impl std::fmt::Debug for AwsKmsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKmsSigner")
            .field("uri", &self.uri)
            .field("algorithm", &self.algorithm)
            .field("key_arn", &self.key_arn)
            .field("endpoint", &self.client.endpoint())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl KeySigner for AwsKmsSigner {
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
        // KMS hashes RAW messages itself (up to 4096 bytes, and not empty); anything
        // else is hashed here and sent as the digest.
        let (message, message_type) = if !message.is_empty() && message.len() <= self.raw_limit {
            (Blob::new(message), MessageType::Raw)
        } else {
            (Blob::new(self.hash.digest(message)), MessageType::Digest)
        };
        let out = self
            .limits
            .call(&self.client, "Sign", &self.uri, Idempotency::Safe, || {
                self.client
                    .sdk
                    .sign()
                    .key_id(&self.key_arn)
                    .message(message.clone())
                    .message_type(message_type.clone())
                    .signing_algorithm(self.signing_spec.clone())
                    .send()
            })
            .await
            .map_err(|f| f.into_error("Sign", &self.uri))?;
        // ECDSA signatures come DER-encoded and RSA ones raw: X.509's encodings already.
        out.signature
            .map(Blob::into_inner)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Error::backend(format!("AWS KMS returned no signature for {}", self.uri))
            })
    }
}
