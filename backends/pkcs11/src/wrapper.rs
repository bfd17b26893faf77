//! Key-encryption keys on a token: [`Pkcs11Kek`], AES-256 secret keys that never leave
//! the token, used with `CKM_AES_GCM` (128-bit tag, the associated data as GCM's AAD)
//! on the token's session pool, with its recovery (see `token`).
//!
//! **Versions.** Each version is its own AES key object: version N of the KEK
//! `object=db-kek` is the secret key with `CKA_LABEL` "db-kek" and `CKA_ID` = N as four
//! big-endian bytes (`keyward hsm keys` shows id `00000002` for version 2). The highest
//! version encrypts; a KEK URI names the label only (`id=` is refused: the ids are the
//! versions). The versions are listed (one `C_FindObjects` on class and label) when the
//! KEK is opened and cached with their handles; they are listed again by `rotate` and
//! `current_version`, by a seal when the last listing is older than [`RELIST_AFTER`]
//! (so new blobs use a version another process added within that time), by an unseal
//! of a version not in the cache, and after a pool recovery made the handles stale.
//! Rotations in one process are serialized by the token's generate lock; PKCS#11 has no
//! "create if absent", so two processes rotating at the same instant could both make
//! version N+1, and the next listing then refuses the KEK, naming the duplicate.
//!
//! **Objects.** Generated with `CKM_AES_KEY_GEN` as `CKA_TOKEN`, `CKA_PRIVATE`,
//! `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`, for `CKA_ENCRYPT`/`CKA_DECRYPT` only (a token
//! that refuses the usage limits `CKA_WRAP`, `CKA_UNWRAP`, `CKA_SIGN`, `CKA_VERIFY`,
//! `CKA_DERIVE` = false gets the needs alone), then read back: a key that came out
//! extractable or not sensitive is destroyed and refused.
//!
//! **Tokens without AES-GCM** are refused when a KEK is generated or opened, naming
//! `CKM_AES_GCM`: unauthenticated encryption would let a tampered blob through.
//! tpm2-pkcs11 on a TPM is one: it offers AES in ECB, CBC, CBC_PAD, CTR and CFB128 modes
//! only (TPM2_EncryptDecrypt has no GCM), and no `CKM_AES_KEY_WRAP_PAD` either.
//!
//! Backend ciphertext (see `keyward_core::wrap::blob`): 12-byte IV (from the token's
//! random generator) || AES-256-GCM ciphertext || 16-byte tag.

mod versions;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::session::Session;
use keyward_core::uri::{ObjectClass as UriClass, Pkcs11Uri};
use keyward_core::wrap::Sealed;
use keyward_core::{Error, KeyUri, KeyWrapper};
use parking_lot::Mutex;
use zeroize::Zeroizing;

use crate::Pkcs11Backend;
use crate::errors::Ckr;
use crate::token::{OpError, Token};
use versions::Versions;

/// A seal lists the versions again when the last listing is older than this: how long
/// a rotation by another process may take to be used for new blobs here.
pub const RELIST_AFTER: Duration = Duration::from_secs(1);

/// The GCM IV length: 96 bits, drawn afresh for every blob.
const IV_LEN: usize = 12;

/// The GCM tag length in bits.
const TAG_BITS: u64 = 128;

/// The mechanism everything is encrypted with.
const CIPHER: MechanismType = MechanismType::AES_GCM;

/// An AES-256 key-encryption key on a PKCS#11 token, in versions. Cheap to clone; clones
/// share the cached version list.
#[derive(Clone)]
pub struct Pkcs11Kek {
    inner: Arc<Inner>,
}

struct Inner {
    token: Arc<Token>,
    uri: KeyUri,
    /// The `CKA_LABEL` every version carries.
    label: String,
    versions: Mutex<Versions>,
}

impl std::fmt::Debug for Pkcs11Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Kek")
            .field("uri", &self.inner.uri)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Backend {
    /// Generates version 1 of the KEK `p11` names; a KEK with that label already on the
    /// token is `AlreadyExists`.
    pub(crate) async fn generate_kek(&self, p11: &Pkcs11Uri) -> Result<Pkcs11Kek, Error> {
        let label = kek_label(p11)?;
        let (token, module) = self.token(p11).await?;
        token.require(
            MechanismType::AES_KEY_GEN,
            "generating AES key-encryption keys",
        )?;
        token.require(CIPHER, "encrypting with key-encryption keys")?;
        let kek = Pkcs11Kek::new(token, p11, &module, label);
        let inner = Arc::clone(&kek.inner);
        kek.inner
            .token
            .blocking(kek.inner.what("generating"), move |s, generation| {
                let _one_at_a_time = inner.token.generate_lock.lock();
                if !inner.list(s)?.is_empty() {
                    return Err(Error::AlreadyExists(format!(
                        "a key-encryption key labelled '{}' is already on {}",
                        inner.label,
                        inner.token.describe()
                    ))
                    .into());
                }
                inner.create_version(s, 1)?;
                inner.refresh(s, generation)
            })
            .await?;
        tracing::info!(token = %kek.inner.token.label, key = %kek.inner.label, "generated PKCS#11 key-encryption key");
        Ok(kek)
    }

    /// Opens the KEK `p11` names; one with no version on the token is `NotFound`.
    pub(crate) async fn open_kek(&self, p11: &Pkcs11Uri) -> Result<Pkcs11Kek, Error> {
        let label = kek_label(p11)?;
        let (token, module) = self.token(p11).await?;
        token.require(CIPHER, "decrypting with key-encryption keys")?;
        let kek = Pkcs11Kek::new(token, p11, &module, label);
        kek.current_version().await?;
        Ok(kek)
    }
}

/// The label a KEK URI names; `id=` and a `type=` other than `secret-key` are refused.
fn kek_label(p11: &Pkcs11Uri) -> Result<String, Error> {
    if p11.id.is_some() {
        return Err(Error::InvalidUri(
            "a PKCS#11 key-encryption key is named by object=LABEL alone: its CKA_IDs are its version numbers".into(),
        ));
    }
    if p11.class.is_some_and(|c| c != UriClass::SecretKey) {
        return Err(Error::InvalidUri(
            "a key-encryption key URI names a secret key (type=secret-key or no type=)".into(),
        ));
    }
    p11.object.clone().ok_or_else(|| {
        Error::InvalidUri("a PKCS#11 key-encryption key needs object=LABEL in the URI".into())
    })
}

impl Pkcs11Kek {
    fn new(token: Arc<Token>, p11: &Pkcs11Uri, module: &Path, label: String) -> Self {
        let uri = KeyUri::Pkcs11(Pkcs11Uri {
            token: Some(token.label.clone()),
            object: Some(label.clone()),
            module_path: Some(module.to_path_buf()),
            pin_source: p11.pin_source.clone(),
            max_sessions: p11.max_sessions,
            ..Pkcs11Uri::default()
        });
        Pkcs11Kek {
            inner: Arc::new(Inner {
                token,
                uri,
                label,
                versions: Mutex::new(Versions::unlisted()),
            }),
        }
    }

    /// Runs a quick operation (one seal or unseal) through the token's dispatcher.
    async fn quick<T, F>(&self, what: &'static str, mut op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnMut(&Inner, &Session, u64) -> Result<T, OpError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        self.inner
            .token
            .pool
            .dispatch_quick(move || {
                let what = inner.what(what);
                inner
                    .token
                    .run(&what, |s, generation| op(&inner, s, generation))
            })
            .await
    }
}

impl Inner {
    /// `encrypting with key-encryption key 'db-kek' on token 'apps'`, for errors (put in
    /// words only when one happens).
    fn what(self: &Arc<Self>, doing: &'static str) -> impl Fn() -> String + Send + 'static {
        let inner = Arc::clone(self);
        move || {
            format!(
                "{doing} with key-encryption key '{}' on {}",
                inner.label,
                inner.token.describe()
            )
        }
    }
}

/// The return code of a failed `C_Decrypt` that is GCM's tag check refusing the
/// ciphertext, `None` for any other failure. SoftHSM 2.6 answers `CKR_GENERAL_ERROR`
/// (so `C_Decrypt` never triggers a module reload, see `errors`); the specification
/// names `CKR_ENCRYPTED_DATA_INVALID`, and some modules `CKR_FUNCTION_FAILED`.
fn authentication_failure(e: &CkError) -> Option<Ckr> {
    match e {
        CkError::Pkcs11(
            rv @ (RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::FunctionFailed
            | RvError::GeneralError),
            function @ Function::Decrypt,
        ) => Some(Ckr {
            rv: *rv,
            function: *function,
        }),
        _ => None,
    }
}

#[async_trait]
impl KeyWrapper for Pkcs11Kek {
    fn uri(&self) -> &KeyUri {
        &self.inner.uri
    }

    async fn current_version(&self) -> Result<u32, Error> {
        let inner = Arc::clone(&self.inner);
        self.inner
            .token
            .blocking(self.inner.what("listing versions"), move |s, generation| {
                Ok(inner.current(s, generation, Duration::ZERO)?.0)
            })
            .await
    }

    async fn rotate(&self) -> Result<u32, Error> {
        let inner = Arc::clone(&self.inner);
        let version = self
            .inner
            .token
            .blocking(self.inner.what("rotating"), move |s, generation| {
                let _one_at_a_time = inner.token.generate_lock.lock();
                let (latest, _) = inner.current(s, generation, Duration::ZERO)?;
                let next = latest + 1;
                inner.create_version(s, next)?;
                inner.refresh(s, generation)?;
                Ok(next)
            })
            .await?;
        tracing::info!(key = %self.inner.uri, version, "rotated PKCS#11 key-encryption key");
        Ok(version)
    }

    async fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, Error> {
        let (plaintext, aad) = (Zeroizing::new(plaintext.to_vec()), aad.to_vec());
        self.quick("encrypting", move |inner, s, generation| {
            let (version, key) = inner.current(s, generation, RELIST_AFTER)?;
            let mut ciphertext = s.generate_random_vec(IV_LEN as u32)?;
            let mut iv = ciphertext.clone();
            let params = GcmParams::new(&mut iv, &aad, TAG_BITS.into())?;
            ciphertext.extend(s.encrypt(&Mechanism::AesGcm(params), key, &plaintext)?);
            Ok(Sealed {
                version,
                ciphertext,
            })
        })
        .await
    }

    async fn unseal(&self, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        if sealed.ciphertext.len() < IV_LEN + (TAG_BITS as usize) / 8 {
            return Err(Error::backend("ciphertext shorter than its IV and tag"));
        }
        let (version, aad) = (sealed.version, aad.to_vec());
        let (iv, body) = sealed.ciphertext.split_at(IV_LEN);
        let (iv, body) = (iv.to_vec(), body.to_vec());
        self.quick("decrypting", move |inner, s, generation| {
            let key = inner.version(s, generation, version)?;
            let mut iv = iv.clone();
            let params = GcmParams::new(&mut iv, &aad, TAG_BITS.into())?;
            match s.decrypt(&Mechanism::AesGcm(params), key, &body) {
                Ok(plain) => Ok(Zeroizing::new(plain)),
                Err(e) => Err(match authentication_failure(&e) {
                    Some(ckr) => Error::backend_with(
                        "AES-256-GCM authentication failed (tampered, or other associated data)",
                        ckr,
                    )
                    .into(),
                    None => e.into(),
                }),
            }
        })
        .await
    }
}
