//! keyward-pkcs11: keys in hardware security modules, reached through PKCS#11 (cryptoki)
//! and named by RFC 7512 `pkcs11:` URIs. Tested against SoftHSM2.
//!
//! - One loaded, initialized module per module path in the process; tokens chosen by
//!   label or serial (never slot number, which modules renumber); one login per token.
//! - A session pool per token (one session per core by default, at most `max-sessions`);
//!   a signature runs on its caller's thread when a session is at hand
//!   (`block_in_place`), otherwise from a per-token queue run by the callers already
//!   signing or by `spawn_blocking` tasks (see `dispatch`).
//! - When sessions die underneath (session closed or invalid, token removed, user logged
//!   out, module finalized), the pool reopens sessions, logs in again and retries once.
//!   A token that cannot be found or read any more is looked for again after finalizing
//!   and initializing its module (safely for the module's other tokens, see `module`);
//!   while it stays away, calls fail with `Unavailable` and it is looked for again at
//!   most every 250 ms.
//! - PINs are held in `Zeroizing` memory and never appear in errors, logs or `Debug`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod dispatch;
mod errors;
mod inspect;
mod keys;
mod module;
mod pool;
mod recover;
mod signer;
mod spki;
mod tables;
mod token;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use keyward_core::uri::Pkcs11Uri;
use keyward_core::{Algorithm, Error, KeyBackend, KeySigner, KeyUri};

pub use errors::{Ckr, ckr_name};
pub use inspect::{KeyObjectInfo, SlotInfo, init_token, list_slots};
pub use signer::Pkcs11Signer;
pub use tables::{KeyTable, SlotTable};

use keys::{KeyDesc, KeyLocator};
use module::lock;
use token::Token;

/// The environment variable naming the PKCS#11 module when neither the URI
/// (`module-path=`) nor the backend's configuration gives one.
pub const MODULE_ENV: &str = "KEYWARD_PKCS11_MODULE";

/// The `pkcs11:` backend.
#[derive(Debug, Clone, Default)]
pub struct Pkcs11Backend {
    default_module: Option<PathBuf>,
}

impl Pkcs11Backend {
    /// A backend using `default_module` for URIs without `module-path=` (and, failing
    /// that, the module named by `KEYWARD_PKCS11_MODULE`).
    pub fn new(default_module: Option<PathBuf>) -> Self {
        Pkcs11Backend { default_module }
    }

    /// The module a URI uses: its `module-path`, else the configured default, else
    /// `KEYWARD_PKCS11_MODULE`.
    pub fn module_for(&self, uri: &Pkcs11Uri) -> Result<PathBuf, Error> {
        if let Some(p) = &uri.module_path {
            return Ok(p.clone());
        }
        if let Some(name) = &uri.module_name {
            return Err(Error::Unsupported(format!(
                "pkcs11 module-name={name} is not supported; give the module file with module-path=/path/to/module.so"
            )));
        }
        if let Some(p) = &self.default_module {
            return Ok(p.clone());
        }
        match std::env::var_os(MODULE_ENV) {
            Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
            _ => Err(Error::InvalidUri(format!(
                "no PKCS#11 module for {}: add module-path=/path/to/module.so to the URI, configure a default module, or set {MODULE_ENV}",
                uri.token_description()
            ))),
        }
    }

    /// The token a URI names, loaded, found and logged in (blocking work off the runtime).
    async fn token(&self, uri: &Pkcs11Uri) -> Result<(Arc<Token>, PathBuf), Error> {
        let path = self.module_for(uri)?;
        let pin = uri.pin()?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cap = uri.max_sessions.map_or(cores, |m| m.min(cores));
        let uri = uri.clone();
        let p = path.clone();
        let token = tokio::task::spawn_blocking(move || {
            let module = module::load(&p)?;
            Token::open(&module, &uri, pin, cap)
        })
        .await
        .map_err(|e| Error::backend_with("PKCS#11 task failed", e))??;
        Ok((token, path))
    }
}

fn pkcs11_uri(uri: &KeyUri) -> Result<&Pkcs11Uri, Error> {
    match uri {
        KeyUri::Pkcs11(u) => Ok(u),
        other => Err(Error::InvalidUri(format!(
            "the PKCS#11 backend takes pkcs11: URIs, not {}:",
            other.scheme()
        ))),
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

/// Builds the signer for a key found (or just generated) on `token`.
fn signer_for(
    uri: &Pkcs11Uri,
    token: Arc<Token>,
    module: &Path,
    found: (cryptoki::object::ObjectHandle, u64, KeyDesc),
    alg: Algorithm,
) -> Result<Arc<dyn KeySigner>, Error> {
    let (handle, generation, key) = found;
    let locator = KeyLocator {
        label: (!key.label.is_empty()).then(|| key.label.clone()),
        id: (!key.id.is_empty()).then(|| key.id.clone()),
    };
    let canonical = canonical(uri, &token, module, &key);
    let signer = Pkcs11Signer::new(
        token,
        canonical,
        alg,
        key.spki,
        locator,
        (generation, handle),
    )?;
    Ok(Arc::new(signer))
}

#[async_trait]
impl KeyBackend for Pkcs11Backend {
    fn scheme(&self) -> &'static str {
        "pkcs11"
    }

    async fn generate(&self, uri: &KeyUri, alg: Algorithm) -> Result<Arc<dyn KeySigner>, Error> {
        let p11 = pkcs11_uri(uri)?;
        let label = p11.object.clone().ok_or_else(|| {
            Error::InvalidUri("generating a PKCS#11 key needs object=LABEL in the URI".into())
        })?;
        let locator = KeyLocator::from_uri(p11)?;
        let (token, module) = self.token(p11).await?;
        token.require(
            keys::keygen_mechanism_type(alg.key_type()),
            &format!("generating {alg} keys"),
        )?;
        token.require(
            signer::sign_mechanism_type(alg),
            &format!("{alg} signatures"),
        )?;
        let desc = token.describe();
        let what_desc = format!("generating {alg} {} on {desc}", locator.describe());
        let t = Arc::clone(&token);
        let found = token
            .blocking(
                move || what_desc.clone(),
                move |s, generation| {
                    let _one_at_a_time = lock(&t.generate_lock);
                    let by_label = KeyLocator {
                        label: Some(label.clone()),
                        id: None,
                    };
                    if by_label.find_private(s, &desc)?.is_some() {
                        return Err(Error::AlreadyExists(format!(
                            "a private key labelled '{label}' is already on {desc}"
                        ))
                        .into());
                    }
                    let id = match &locator.id {
                        Some(id) => {
                            let by_id = KeyLocator {
                                label: None,
                                id: Some(id.clone()),
                            };
                            if by_id.find_private(s, &desc)?.is_some() {
                                return Err(Error::AlreadyExists(format!(
                                    "a private key with id {} is already on {desc}",
                                    hex::encode(id)
                                ))
                                .into());
                            }
                            id.clone()
                        }
                        None => s.generate_random_vec(16)?,
                    };
                    let handle = keys::generate(s, alg.key_type(), &label, &id)?;
                    let key = keys::describe_private(s, handle, &desc)?;
                    Ok((handle, generation, key))
                },
            )
            .await?;
        tracing::info!(token = %token.label, key = %found.2.label, id = %hex::encode(&found.2.id), algorithm = %alg, "generated PKCS#11 key pair");
        signer_for(p11, token, &module, found, alg)
    }

    async fn open(&self, uri: &KeyUri) -> Result<Arc<dyn KeySigner>, Error> {
        let p11 = pkcs11_uri(uri)?;
        let locator = KeyLocator::from_uri(p11)?;
        let (token, module) = self.token(p11).await?;
        let desc = token.describe();
        let what_desc = format!("opening {} on {desc}", locator.describe());
        let found = token
            .blocking(
                move || what_desc.clone(),
                move |s, generation| {
                    let handle = locator.require_private(s, &desc)?;
                    let key = keys::describe_private(s, handle, &desc)?;
                    Ok((handle, generation, key))
                },
            )
            .await?;
        let alg = Algorithm::default_for(found.2.key_type);
        signer_for(p11, token, &module, found, alg)
    }
}

#[cfg(test)]
mod tests;
