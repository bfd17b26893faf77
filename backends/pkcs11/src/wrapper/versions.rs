//! The versions of a key-encryption key on a token: listing them (class and label,
//! the version in `CKA_ID`), caching them with their handles, and generating the next
//! one. See the parent module for the naming and when the cache is refreshed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyward_core::Error;
use keyward_core::wrap::DATA_KEY_LEN;

use super::Inner;
use crate::keys::check_protected;
use crate::templates::looks_like_refused_template;
use crate::token::OpError;

/// The versions as last listed, with their handles.
pub(super) struct Versions {
    /// The pool generation the handles belong to (0: never listed).
    generation: u64,
    handles: BTreeMap<u32, ObjectHandle>,
    listed: Instant,
}

impl Versions {
    /// An empty cache that the first use fills.
    pub(super) fn unlisted() -> Self {
        Versions {
            generation: 0,
            handles: BTreeMap::new(),
            listed: Instant::now(),
        }
    }
}

/// The `CKA_ID` of version `version`.
fn version_id(version: u32) -> Vec<u8> {
    version.to_be_bytes().to_vec()
}

impl Inner {
    /// Every version on the token, by one search on class and label.
    pub(super) fn list(&self, s: &Session) -> Result<BTreeMap<u32, ObjectHandle>, OpError> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(self.label.as_bytes().to_vec()),
        ];
        let shown = || {
            format!(
                "key-encryption key '{}' on {}",
                self.label,
                self.token.describe()
            )
        };
        let mut versions = BTreeMap::new();
        for handle in s.find_objects(&template)? {
            let (mut key_type, mut id) = (None, Vec::new());
            for a in s.get_attributes(handle, &[AttributeType::KeyType, AttributeType::Id])? {
                match a {
                    Attribute::KeyType(t) => key_type = Some(t),
                    Attribute::Id(i) => id = i,
                    _ => {}
                }
            }
            if key_type != Some(CkKeyType::AES) {
                return Err(Error::Unsupported(format!(
                    "{}: a secret key with that label is not an AES key",
                    shown()
                ))
                .into());
            }
            let version = <[u8; 4]>::try_from(id.as_slice())
                .map(u32::from_be_bytes)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| {
                    Error::backend(format!(
                        "{}: an AES key with that label has CKA_ID {}, not a 4-byte version number",
                        shown(),
                        hex::encode(&id)
                    ))
                })?;
            if versions.insert(version, handle).is_some() {
                return Err(Error::backend(format!(
                    "{}: two objects are version {version} (rotated by two processes at once?); destroy one",
                    shown()
                ))
                .into());
            }
        }
        Ok(versions)
    }

    /// Lists the versions into the cache, for pool generation `generation`.
    pub(super) fn refresh(&self, s: &Session, generation: u64) -> Result<(), OpError> {
        let handles = self.list(s)?;
        *self.versions.lock() = Versions {
            generation,
            handles,
            listed: Instant::now(),
        };
        Ok(())
    }

    /// The highest version and its handle, listing first when the cache is from another
    /// generation or older than `max_age`.
    pub(super) fn current(
        &self,
        s: &Session,
        generation: u64,
        max_age: Duration,
    ) -> Result<(u32, ObjectHandle), OpError> {
        let fresh = {
            let v = self.versions.lock();
            v.generation == generation && v.listed.elapsed() < max_age
        };
        if !fresh {
            self.refresh(s, generation)?;
        }
        let v = self.versions.lock();
        v.handles
            .last_key_value()
            .map(|(&version, &handle)| (version, handle))
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no key-encryption key '{}' on {}",
                    self.label,
                    self.token.describe()
                ))
                .into()
            })
    }

    /// The handle of `version`, listing first when it is not in the cache or the cache
    /// is from another generation.
    pub(super) fn version(
        &self,
        s: &Session,
        generation: u64,
        version: u32,
    ) -> Result<ObjectHandle, OpError> {
        let cached = {
            let v = self.versions.lock();
            (v.generation == generation)
                .then(|| v.handles.get(&version).copied())
                .flatten()
        };
        if let Some(handle) = cached {
            return Ok(handle);
        }
        self.refresh(s, generation)?;
        self.versions
            .lock()
            .handles
            .get(&version)
            .copied()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "version {version} of key-encryption key '{}' is not on {}",
                    self.label,
                    self.token.describe()
                ))
                .into()
            })
    }

    /// Generates `version` as a sensitive, non-extractable AES-256 token object and
    /// checks what the token made of it.
    pub(super) fn create_version(
        &self,
        s: &Session,
        version: u32,
    ) -> Result<ObjectHandle, OpError> {
        let needs = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(CkKeyType::AES),
            Attribute::ValueLen((DATA_KEY_LEN as u64).into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(self.label.as_bytes().to_vec()),
            Attribute::Id(version_id(version)),
        ];
        let mut limited = needs.clone();
        limited.extend([
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
        ]);
        let handle = match s.generate_key(&Mechanism::AesKeyGen, &limited) {
            Ok(h) => h,
            Err(e) if looks_like_refused_template(&e) => {
                tracing::info!(token = %self.token.label, "the token refused usage limits on an AES key; generating it with the needs only");
                s.generate_key(&Mechanism::AesKeyGen, &needs)?
            }
            Err(e) => return Err(e.into()),
        };
        let shown = format!(
            "version {version} of key-encryption key '{}' on {}",
            self.label,
            self.token.describe()
        );
        if let Err(e) = check_protected(s, handle, &shown) {
            let _ = s.destroy_object(handle);
            return Err(e);
        }
        Ok(handle)
    }
}
