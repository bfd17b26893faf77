//! Creating and opening software keys: key pairs generated in memory, PKCS#8 encoding
//! and decoding, and the backend's PEM key files (written 0600 in a 0700 directory,
//! refused when others can read them).

use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::encoding::{AsBigEndian, AsDer, EcPrivateKeyBin};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use keyward_core::fsutil::{self, Replace};
use keyward_core::{Algorithm, Error, KeySigner, KeyType, KeyUri, RsaBits, der};
use zeroize::Zeroizing;

use crate::signer::{Inner, SoftwareKey, crypto_err};
use crate::{SoftwareBackend, ec_der, file_uri};

impl SoftwareBackend {
    /// Generates a key for `alg` and writes it to the file `uri` names; an existing
    /// file is `AlreadyExists` and stays as it was.
    pub(crate) async fn generate_key(
        &self,
        uri: &KeyUri,
        alg: Algorithm,
    ) -> Result<Arc<dyn KeySigner>, Error> {
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

    /// Opens the key file `uri` names.
    pub(crate) fn open_key(&self, uri: &KeyUri) -> Result<Arc<dyn KeySigner>, Error> {
        let path = file_uri(uri)?.path.clone();
        let key = read_key_file(&path, uri.clone())?;
        Ok(Arc::new(key))
    }
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
}

/// Reads a PKCS#8 PEM key file, refusing one that others can read.
pub fn read_key_file(path: &Path, uri: KeyUri) -> Result<SoftwareKey, Error> {
    let text = crate::wrap::read_secret(path).map_err(|e| match e {
        Error::NotFound(_) => Error::NotFound(uri.to_string()),
        e => e,
    })?;
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
