//! Key-encryption keys (KEKs): the [`KeyWrapper`] trait every backend implements beside
//! [`KeySigner`](crate::KeySigner), for envelope encryption. A KEK never leaves its
//! backend; it wraps 256-bit data keys and encrypts small payloads, in versions:
//! [`KeyWrapper::rotate`] adds a version that encrypts from then on, and every blob
//! names the version that made it (see [`blob`] for the format), so old blobs still
//! decrypt after any number of rotations.
//!
//! Backends implement the narrow primitives (seal, unseal, versions); the framing,
//! the payload limit and the separation of data keys from payloads live here, once,
//! in the methods on `dyn KeyWrapper`.

pub mod blob;
#[cfg(feature = "conformance")]
mod conformance;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::{Error, KeyUri};
pub use blob::{BlobKind, Sealed};

/// The largest payload `encrypt` (on `dyn KeyWrapper`) takes; larger data is encrypted
/// locally under a data key.
pub const MAX_PAYLOAD: usize = 4096;

/// The length of a data key in bytes (AES-256).
pub const DATA_KEY_LEN: usize = 32;

/// The associated data every data key is sealed under, so that a data-key blob can
/// never be opened as a payload or the other way round.
pub const DATA_KEY_AAD: &[u8] = b"keyward data key v1";

/// The label in front of a caller's associated data for payloads.
const PAYLOAD_AAD_LABEL: &[u8] = b"keyward payload v1\0";

/// A fresh data key: the plaintext (wiped when dropped) and the same key wrapped under
/// the KEK. Its `Debug` shows the wrapped form only.
pub struct DataKey {
    /// The 256-bit key, for local AES-256-GCM.
    pub plaintext: Zeroizing<[u8; DATA_KEY_LEN]>,
    /// The key as a wrapped blob, to store beside the data it encrypts.
    pub wrapped: Vec<u8>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("wrapped_len", &self.wrapped.len())
            .finish_non_exhaustive()
    }
}

/// A symmetric key-encryption key, wherever it lives (file, Transit, KMS).
///
/// Object-safe, like `KeySigner`: callers hold `Arc<dyn KeyWrapper>` chosen by URI
/// scheme through [`KeyBackend::open_wrapper`](crate::KeyBackend::open_wrapper), and
/// use the blob-level methods on `dyn KeyWrapper` (`generate_data_key`,
/// `unwrap_data_key`, `encrypt`, `decrypt`).
#[async_trait]
pub trait KeyWrapper: Send + Sync + std::fmt::Debug {
    /// The canonical URI of this key (never carries a secret).
    fn uri(&self) -> &KeyUri;

    /// The version new blobs are made with.
    async fn current_version(&self) -> Result<u32, Error>;

    /// Adds a new version that encrypts from now on and returns its number; every
    /// earlier version still decrypts.
    async fn rotate(&self) -> Result<u32, Error>;

    /// Encrypts `plaintext` under the current version, bound to `aad`.
    async fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, Error>;

    /// Decrypts what [`seal`](KeyWrapper::seal) made with the same `aad`; a tampered
    /// ciphertext or another `aad` is an error that carries no plaintext.
    async fn unseal(&self, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error>;

    /// A fresh random data key and its sealed form. The default draws the key from
    /// aws-lc's generator and seals it under [`DATA_KEY_AAD`]; backends with a
    /// data-key call of their own (KMS, Transit) override this and
    /// [`open_data_key`](KeyWrapper::open_data_key) together.
    async fn new_data_key(&self) -> Result<(Zeroizing<[u8; DATA_KEY_LEN]>, Sealed), Error> {
        let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        aws_lc_rs::rand::fill(&mut key[..])
            .map_err(|_| Error::backend("the random generator failed"))?;
        let sealed = self.seal(&key[..], DATA_KEY_AAD).await?;
        Ok((key, sealed))
    }

    /// Recovers a data key sealed by [`new_data_key`](KeyWrapper::new_data_key).
    async fn open_data_key(&self, sealed: &Sealed) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, Error> {
        let plain = self.unseal(sealed, DATA_KEY_AAD).await?;
        data_key_from(&plain, self.uri())
    }
}

/// Copies an unwrapped data key into a fixed array; any other length is a backend error.
pub fn data_key_from(plain: &[u8], uri: &KeyUri) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, Error> {
    let key: [u8; DATA_KEY_LEN] = plain.try_into().map_err(|_| {
        Error::backend(format!(
            "{uri} unwrapped a data key of {} bytes, not {DATA_KEY_LEN}",
            plain.len()
        ))
    })?;
    Ok(Zeroizing::new(key))
}

impl dyn KeyWrapper {
    /// A fresh 256-bit data key, in plaintext and wrapped under the current version.
    pub async fn generate_data_key(&self) -> Result<DataKey, Error> {
        let (plaintext, sealed) = self.new_data_key().await?;
        let wrapped = blob::encode(self.uri().scheme(), BlobKind::DataKey, &sealed);
        Ok(DataKey { plaintext, wrapped })
    }

    /// The plaintext of a data key wrapped by this KEK (any of its versions).
    pub async fn unwrap_data_key(
        &self,
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, Error> {
        let sealed = blob::decode(wrapped, self.uri().scheme(), BlobKind::DataKey)?;
        self.open_data_key(&sealed)
            .await
            .map_err(|e| refused(e, "data key", sealed.version))
    }

    /// Encrypts a payload of at most [`MAX_PAYLOAD`] bytes, bound to `aad` (which must
    /// be given again to decrypt), under the current version.
    pub async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, Error> {
        if plaintext.len() > MAX_PAYLOAD {
            return Err(Error::InvalidInput(format!(
                "payload of {} bytes is over the {MAX_PAYLOAD}-byte limit; encrypt it locally under a data key",
                plaintext.len()
            )));
        }
        let sealed = self.seal(plaintext, &payload_aad(aad)).await?;
        Ok(blob::encode(
            self.uri().scheme(),
            BlobKind::Payload,
            &sealed,
        ))
    }

    /// Decrypts a payload blob made by `encrypt` with the same `aad`.
    pub async fn decrypt(&self, blob: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        let sealed = blob::decode(blob, self.uri().scheme(), BlobKind::Payload)?;
        self.unseal(&sealed, &payload_aad(aad))
            .await
            .map_err(|e| refused(e, "payload", sealed.version))
    }
}

/// Names what failed to decrypt, keeping the backend's reason as the source. A backend
/// that could not be reached stays `Unavailable` (a retry may help), a deleted key
/// stays `NotFound`.
fn refused(e: Error, what: &str, version: u32) -> Error {
    match e {
        e @ (Error::Unavailable { .. } | Error::NotFound(_)) => e,
        e => Error::backend_with(format!("cannot decrypt {what} (key version {version})"), e),
    }
}

/// The associated data a payload is sealed under: a fixed label, then the caller's.
fn payload_aad(aad: &[u8]) -> Vec<u8> {
    [PAYLOAD_AAD_LABEL, aad].concat()
}
