//! Software key-encryption keys: a `file:` URI names a directory (0700) holding one
//! AES-256-GCM key file per version, `v1.key`, `v2.key`, ... (32 raw bytes, 0600,
//! written atomically and never replaced). The highest version encrypts; rotation adds
//! the next file. Every operation reads the directory again, so a rotation by another
//! process is seen at once.
//!
//! Backend ciphertext (see `keyward_core::wrap::blob`): 12-byte nonce || ciphertext || tag.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use keyward_core::fsutil::{self, Replace};
use keyward_core::wrap::{DATA_KEY_LEN, Sealed};
use keyward_core::{Error, KeyUri, KeyWrapper};
use zeroize::Zeroizing;

use crate::file_uri;

/// How often `rotate` retries when another process added the same version first.
const ROTATE_ATTEMPTS: usize = 5;

/// One software KEK: the directory of its versions.
#[derive(Debug)]
pub struct SoftwareKek {
    uri: KeyUri,
    dir: PathBuf,
}

impl SoftwareKek {
    /// Creates the KEK directory `uri` names with version 1; an existing path is
    /// `AlreadyExists` and stays as it was.
    pub fn generate(uri: &KeyUri) -> Result<Self, Error> {
        let dir = file_uri(uri)?.path.clone();
        fsutil::create_private_dir(fsutil::parent_dir(&dir))?;
        if !fsutil::create_new_private_dir(&dir)? {
            return Err(Error::AlreadyExists(uri.to_string()));
        }
        let kek = SoftwareKek {
            uri: uri.clone(),
            dir,
        };
        kek.write_version(1)?;
        tracing::info!(key = %kek.uri, "generated software key-encryption key");
        Ok(kek)
    }

    /// Opens the KEK directory `uri` names; a missing one is `NotFound`.
    pub fn open(uri: &KeyUri) -> Result<Self, Error> {
        let dir = file_uri(uri)?.path.clone();
        if !dir.exists() {
            return Err(Error::NotFound(uri.to_string()));
        }
        let kek = SoftwareKek {
            uri: uri.clone(),
            dir,
        };
        kek.latest()?;
        Ok(kek)
    }

    fn version_path(&self, version: u32) -> PathBuf {
        self.dir.join(format!("v{version}.key"))
    }

    /// Writes a fresh random key as `version`; `AlreadyExists` if that version is there.
    fn write_version(&self, version: u32) -> Result<(), Error> {
        let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        aws_lc_rs::rand::fill(&mut key[..])
            .map_err(|_| Error::backend("the random generator failed"))?;
        fsutil::write_atomic(
            &self.version_path(version),
            &key[..],
            fsutil::SECRET_FILE_MODE,
            Replace::Refuse,
        )
    }

    /// The highest version in the directory.
    fn latest(&self) -> Result<u32, Error> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::NotFound(self.uri.to_string()),
            ErrorKind::NotADirectory => Error::InvalidInput(format!(
                "{} is a file; a software key-encryption key is a directory",
                self.dir.display()
            )),
            _ => Error::io(format!("cannot read {}", self.dir.display()), e),
        })?;
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|name| name.strip_prefix('v')?.strip_suffix(".key")?.parse().ok())
            .filter(|&v: &u32| v > 0)
            .max()
            .ok_or_else(|| {
                Error::State(format!(
                    "{} holds no key versions (v1.key, ...)",
                    self.dir.display()
                ))
            })
    }

    /// The AEAD key of `version`, refusing a file others can read.
    fn key(&self, version: u32) -> Result<RandomizedNonceKey, Error> {
        let path = self.version_path(version);
        let bytes = read_secret(&path).map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound(format!("{} (version {version})", self.uri)),
            e => e,
        })?;
        RandomizedNonceKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| Error::backend(format!("{} is not a 32-byte AES-256 key", path.display())))
    }
}

/// Reads a secret file, refusing one that others can read; `NotFound` (naming the
/// path) if missing.
pub(crate) fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Error::NotFound(path.display().to_string()));
        }
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
    };
    let mode = fsutil::mode_of(path)?;
    if mode & 0o077 != 0 {
        return Err(Error::backend(format!(
            "key file {} is accessible to other users (mode {mode:04o}); run chmod 600 on it",
            path.display()
        )));
    }
    Ok(bytes)
}

#[async_trait]
impl KeyWrapper for SoftwareKek {
    fn uri(&self) -> &KeyUri {
        &self.uri
    }

    async fn current_version(&self) -> Result<u32, Error> {
        self.latest()
    }

    async fn rotate(&self) -> Result<u32, Error> {
        for _ in 0..ROTATE_ATTEMPTS {
            let next = self.latest()? + 1;
            match self.write_version(next) {
                Ok(()) => {
                    tracing::info!(key = %self.uri, version = next, "rotated software key-encryption key");
                    return Ok(next);
                }
                Err(Error::AlreadyExists(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::State(format!(
            "{}: other processes kept rotating it; try again",
            self.uri
        )))
    }

    async fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, Error> {
        let version = self.latest()?;
        let key = self.key(version)?;
        let mut in_out = plaintext.to_vec();
        let nonce = key
            .seal_in_place_append_tag(Aad::from(aad), &mut in_out)
            .map_err(|_| Error::backend("AES-256-GCM encryption failed"))?;
        let mut ciphertext = nonce.as_ref().to_vec();
        ciphertext.extend_from_slice(&in_out);
        Ok(Sealed {
            version,
            ciphertext,
        })
    }

    async fn unseal(&self, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        let key = self.key(sealed.version)?;
        let Some((nonce, body)) = sealed.ciphertext.split_at_checked(NONCE_LEN) else {
            return Err(Error::backend("ciphertext shorter than its nonce"));
        };
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("12 bytes");
        let mut in_out = Zeroizing::new(body.to_vec());
        let len = key
            .open_in_place(nonce, Aad::from(aad), &mut in_out)
            .map_err(|_| {
                Error::backend(
                    "AES-256-GCM authentication failed (tampered, or other associated data)",
                )
            })?
            .len();
        in_out.truncate(len);
        Ok(in_out)
    }
}

/// The `Arc<dyn KeyWrapper>` the backend hands out, made off the async runtime.
pub(crate) async fn blocking<F>(f: F) -> Result<Arc<dyn KeyWrapper>, Error>
where
    F: FnOnce() -> Result<SoftwareKek, Error> + Send + 'static,
{
    tokio::task::spawn_blocking(move || f().map(|k| Arc::new(k) as Arc<dyn KeyWrapper>))
        .await
        .map_err(|e| Error::backend_with("key-encryption key task failed", e))?
}
