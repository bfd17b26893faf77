//! A private key on a token that signs through the token's session pool.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use keyward_core::uri::Pkcs11Uri;
use keyward_core::{Algorithm, Error, KeySigner, KeyUri, ecdsa_raw_to_der};
use parking_lot::Mutex;

use crate::keys::{FoundKey, KeyDesc, KeyLocator};
use crate::token::{OpError, Token};

/// The PKCS#11 mechanism that produces `alg`'s signatures. ECDSA signs a digest keyward
/// computes (CKM_ECDSA); RSA hashes on the token; Ed25519 is pure EdDSA.
pub(crate) fn sign_mechanism_type(alg: Algorithm) -> MechanismType {
    match alg {
        Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 => MechanismType::ECDSA,
        Algorithm::Ed25519 => MechanismType::EDDSA,
        Algorithm::RsaPkcs1Sha256(_) => MechanismType::SHA256_RSA_PKCS,
        Algorithm::RsaPssSha256(_) => MechanismType::SHA256_RSA_PKCS_PSS,
    }
}

fn sign_mechanism(alg: Algorithm) -> Mechanism<'static> {
    match alg {
        Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 => Mechanism::Ecdsa,
        Algorithm::Ed25519 => Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Ed25519)),
        Algorithm::RsaPkcs1Sha256(_) => Mechanism::Sha256RsaPkcs,
        Algorithm::RsaPssSha256(_) => Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
            hash_alg: MechanismType::SHA256,
            mgf: PkcsMgfType::MGF1_SHA256,
            s_len: 32u64.into(),
        }),
    }
}

/// A key on a PKCS#11 token. Cheap to clone; clones share the cached key handle.
#[derive(Clone)]
pub struct Pkcs11Signer {
    inner: Arc<Inner>,
}

struct Inner {
    token: Arc<Token>,
    uri: KeyUri,
    alg: Algorithm,
    spki: Vec<u8>,
    /// How to find the key again after a recovery invalidated its handle.
    locator: KeyLocator,
    /// The key's object handle and the pool generation it was found in.
    handle: Mutex<(u64, ObjectHandle)>,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("uri", &self.inner.uri)
            .field("algorithm", &self.inner.alg)
            .finish()
    }
}

impl Pkcs11Signer {
    /// A signer for a key found (or just generated) on `token` through `uri` and the
    /// module at `module`, signing with `alg`.
    pub(crate) fn new(
        token: Arc<Token>,
        uri: &Pkcs11Uri,
        module: &Path,
        found: FoundKey,
        alg: Algorithm,
    ) -> Result<Self, Error> {
        token.require(sign_mechanism_type(alg), &format!("{alg} signatures"))?;
        let FoundKey {
            handle,
            generation,
            key,
        } = found;
        Ok(Pkcs11Signer {
            inner: Arc::new(Inner {
                uri: canonical(uri, &token, module, &key),
                locator: key.locator(),
                token,
                alg,
                spki: key.spki,
                handle: Mutex::new((generation, handle)),
            }),
        })
    }
}

/// The canonical URI of a key: token label, object label, id, module path and PIN
/// source (never a PIN value), plus `max-sessions` when it was given.
fn canonical(uri: &Pkcs11Uri, token: &Token, module: &Path, key: &KeyDesc) -> KeyUri {
    KeyUri::Pkcs11(Pkcs11Uri {
        token: Some(token.label.clone()),
        object: (!key.label.is_empty()).then(|| key.label.clone()),
        id: (!key.id.is_empty()).then(|| key.id.clone()),
        module_path: Some(module.to_path_buf()),
        pin_source: uri.pin_source.clone(),
        max_sessions: uri.max_sessions,
        ..Pkcs11Uri::default()
    })
}

impl Inner {
    /// The key handle valid in pool generation `generation`, looking the key up again
    /// if a recovery made the cached one stale.
    fn handle(&self, s: &Session, generation: u64) -> Result<ObjectHandle, OpError> {
        let mut cached = self.handle.lock();
        if cached.0 != generation {
            let found = self.locator.require_private(s, &self.token.describe())?;
            *cached = (generation, found);
        }
        Ok(cached.1)
    }

    fn sign_blocking(&self, data: &[u8]) -> Result<Vec<u8>, Error> {
        let what = || {
            format!(
                "signing with {} on {}",
                self.locator.describe(),
                self.token.describe()
            )
        };
        self.token.run(&what, |s, generation| {
            let key = self.handle(s, generation)?;
            Ok(s.sign(&sign_mechanism(self.alg), key, data)?)
        })
    }
}

#[async_trait]
impl KeySigner for Pkcs11Signer {
    fn uri(&self) -> &KeyUri {
        &self.inner.uri
    }

    fn algorithm(&self) -> Algorithm {
        self.inner.alg
    }

    fn public_key_spki_der(&self) -> &[u8] {
        &self.inner.spki
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let alg = self.inner.alg;
        // ECDSA: the digest is computed here and only it crosses to the token.
        let data = match alg {
            Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 => alg
                .hash()
                .map_or_else(|| message.to_vec(), |h| h.digest(message)),
            _ => message.to_vec(),
        };
        let inner = Arc::clone(&self.inner);
        let raw = self
            .inner
            .token
            .pool
            .dispatch_quick(move || inner.sign_blocking(&data))
            .await?;
        match alg {
            Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 => ecdsa_raw_to_der(&raw),
            _ => Ok(raw),
        }
    }
}
