//! One software key pair: generation, PKCS#8 import/export, signing.

use async_trait::async_trait;
use aws_lc_rs::encoding::{AsBigEndian, AsDer, EcPrivateKeyBin};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use keyward_core::{Algorithm, Error, KeySigner, KeyType, KeyUri, RsaBits, der};
use zeroize::Zeroizing;

use crate::ec_der;

/// The aws-lc key object behind a [`SoftwareKey`].
enum Inner {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(aws_lc_rs::rsa::KeyPair),
}

/// A private key in process memory that implements [`KeySigner`].
pub struct SoftwareKey {
    uri: KeyUri,
    algorithm: Algorithm,
    spki: Vec<u8>,
    inner: Inner,
}

impl std::fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareKey")
            .field("uri", &self.uri)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

fn crypto_err(what: &str) -> Error {
    Error::backend(format!("software key: {what} failed"))
}

fn ecdsa_signing(kt: KeyType) -> &'static signature::EcdsaSigningAlgorithm {
    if kt == KeyType::EcP384 {
        &signature::ECDSA_P384_SHA384_ASN1_SIGNING
    } else {
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING
    }
}

impl SoftwareKey {
    /// Generates a key pair in memory; returns it with its PKCS#8 DER encoding (which
    /// the caller may store, and which is zeroized when dropped).
    pub fn generate(alg: Algorithm, uri: KeyUri) -> Result<(Self, Zeroizing<Vec<u8>>), Error> {
        let (inner, pkcs8) = match alg.key_type() {
            kt @ (KeyType::EcP256 | KeyType::EcP384) => {
                // Leaf keys are made per certificate: encode from the point aws-lc already
                // holds in affine form rather than through its encoders (see ec_der).
                let k = EcdsaKeyPair::generate(ecdsa_signing(kt))
                    .map_err(|_| crypto_err("ECDSA key generation"))?;
                let oid = if kt == KeyType::EcP384 {
                    der::P384_OID
                } else {
                    der::P256_OID
                };
                let point = k.public_key().as_ref();
                let scalar: EcPrivateKeyBin<'_> = k
                    .private_key()
                    .as_be_bytes()
                    .map_err(|_| crypto_err("PKCS#8 encoding"))?;
                let pkcs8 = ec_der::pkcs8(oid, scalar.as_ref(), point);
                let spki = der::ec_spki(oid, point);
                let key = SoftwareKey {
                    uri,
                    algorithm: alg,
                    spki,
                    inner: Inner::Ecdsa(k),
                };
                return Ok((key, pkcs8));
            }
            KeyType::Ed25519 => {
                let k =
                    Ed25519KeyPair::generate().map_err(|_| crypto_err("Ed25519 key generation"))?;
                let der = k.to_pkcs8v1().map_err(|_| crypto_err("PKCS#8 encoding"))?;
                (Inner::Ed25519(k), Zeroizing::new(der.as_ref().to_vec()))
            }
            KeyType::Rsa(bits) => {
                let size = match bits {
                    RsaBits::B2048 => KeySize::Rsa2048,
                    RsaBits::B3072 => KeySize::Rsa3072,
                    RsaBits::B4096 => KeySize::Rsa4096,
                };
                let k = aws_lc_rs::rsa::KeyPair::generate(size)
                    .map_err(|_| crypto_err("RSA key generation"))?;
                let der = k.as_der().map_err(|_| crypto_err("PKCS#8 encoding"))?;
                (Inner::Rsa(k), Zeroizing::new(der.as_ref().to_vec()))
            }
        };
        let key = Self::assemble(inner, alg, uri)?;
        Ok((key, pkcs8))
    }

    /// Loads a PKCS#8 DER private key (P-256, P-384, Ed25519 or RSA 2048/3072/4096).
    /// RSA keys sign PKCS#1 v1.5; use [`SoftwareKey::with_algorithm`] for PSS.
    pub fn from_pkcs8(der: &[u8], uri: KeyUri) -> Result<Self, Error> {
        let unsupported = || {
            Error::Unsupported(format!(
                "{uri}: not a P-256, P-384, Ed25519 or RSA 2048/3072/4096 PKCS#8 key"
            ))
        };
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, der) {
            return Self::assemble(Inner::Ecdsa(k), Algorithm::EcdsaP256Sha256, uri);
        }
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, der) {
            return Self::assemble(Inner::Ecdsa(k), Algorithm::EcdsaP384Sha384, uri);
        }
        if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            return Self::assemble(Inner::Ed25519(k), Algorithm::Ed25519, uri);
        }
        if let Ok(k) = aws_lc_rs::rsa::KeyPair::from_pkcs8(der) {
            let bits =
                RsaBits::from_bits((k.public_modulus_len() * 8) as u32).ok_or_else(unsupported)?;
            return Self::assemble(Inner::Rsa(k), Algorithm::RsaPkcs1Sha256(bits), uri);
        }
        Err(unsupported())
    }

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

    fn assemble(inner: Inner, algorithm: Algorithm, uri: KeyUri) -> Result<Self, Error> {
        let spki = match &inner {
            Inner::Ecdsa(k) => k.public_key().as_der().map(|d| d.as_ref().to_vec()),
            Inner::Ed25519(k) => k.public_key().as_der().map(|d| d.as_ref().to_vec()),
            Inner::Rsa(k) => k.public_key().as_der().map(|d| d.as_ref().to_vec()),
        }
        .map_err(|_| crypto_err("public key encoding"))?;
        Ok(SoftwareKey {
            uri,
            algorithm,
            spki,
            inner,
        })
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
