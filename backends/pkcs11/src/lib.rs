//! keyward-pkcs11: keys in hardware security modules, reached through PKCS#11 (cryptoki)
//! and named by RFC 7512 `pkcs11:` URIs. Tested against SoftHSM2 and against a TPM
//! (tpm2-pkcs11 on swtpm).
//!
//! - One loaded, initialized module per module path in the process; tokens chosen by
//!   label or serial (never slot number, which modules renumber); one login per token.
//! - A session pool per token (one session per core by default, at most `max-sessions`
//!   and never more than the token's `ulMaxSessionCount`);
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
//!
//! Files by role (every backend crate uses the same names for the same roles):
//! - `lib.rs`: [`Pkcs11Backend`], the `KeyBackend` of `pkcs11:` URIs;
//! - `keys.rs`: creating key pairs and opening keys (finding them by label and id);
//! - `templates.rs`: key pair templates, and naming the attribute a module refused;
//! - `signer.rs`: [`Pkcs11Signer`], the `KeySigner` of one key on a token;
//! - `wrapper.rs`: [`Pkcs11Kek`], the `KeyWrapper` of an AES key-encryption key on a
//!   token, used with AES-GCM; `wrapper/versions.rs`: its versions, one AES object each;
//! - `errors.rs`: cryptoki errors in keyward's `Error`, and which of them call for
//!   recovery;
//! - `token/`: one token in use (`mod.rs`), the URI's token selector (`selector.rs`), its
//!   session pool (`sessions.rs`) and recovery, the PKCS#11 form of retrying
//!   (`recover.rs`);
//! - `module.rs`: loaded modules, one per path in the process, and their resets;
//! - `dispatch.rs`: getting blocking work onto threads, at most `cap` at once per token;
//! - `inspect.rs`, `tables.rs`: slot and key listings (`keyward hsm`), token set-up;
//! - `spki.rs`: EC parameters and points as `SubjectPublicKeyInfo`s.
//!
//! Settings come from the key URI (module path, PIN source, `max-sessions`), so there
//! is no `settings.rs`. Locks are `parking_lot`'s, which do not poison: every critical
//! section leaves its data consistent at each step, so a panic elsewhere does not make
//! a token or module unusable.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod dispatch;
mod errors;
mod inspect;
mod keys;
mod module;
mod signer;
mod spki;
mod tables;
mod templates;
mod token;
mod wrapper;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use keyward_core::uri::Pkcs11Uri;
use keyward_core::{Algorithm, Error, KeyBackend, KeySigner, KeyUri, KeyWrapper};

pub use errors::{Ckr, ckr_name};
pub use inspect::{KeyObjectInfo, SlotInfo, init_token, list_slots};
pub use signer::Pkcs11Signer;
pub use tables::{KeyTable, SlotTable};
pub use wrapper::{Pkcs11Kek, RELIST_AFTER};

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

#[async_trait]
impl KeyBackend for Pkcs11Backend {
    fn scheme(&self) -> &'static str {
        "pkcs11"
    }

    async fn generate(&self, uri: &KeyUri, alg: Algorithm) -> Result<Arc<dyn KeySigner>, Error> {
        self.generate_key(pkcs11_uri(uri)?, alg).await
    }

    async fn open(&self, uri: &KeyUri) -> Result<Arc<dyn KeySigner>, Error> {
        self.open_key(pkcs11_uri(uri)?).await
    }

    async fn generate_wrapper(&self, uri: &KeyUri) -> Result<Arc<dyn KeyWrapper>, Error> {
        Ok(Arc::new(self.generate_kek(pkcs11_uri(uri)?).await?))
    }

    async fn open_wrapper(&self, uri: &KeyUri) -> Result<Arc<dyn KeyWrapper>, Error> {
        Ok(Arc::new(self.open_kek(pkcs11_uri(uri)?).await?))
    }
}

#[cfg(test)]
mod tests;
