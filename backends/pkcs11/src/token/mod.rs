//! Tokens: found by label or serial (never by slot number), logged in once, with their
//! mechanism list read once and checked before a mechanism is first used.
//!
//! Everything keyward does with one token is a method of [`Token`], by role:
//! - `mod.rs`: opening a token (find, log in, cache it in its module) and its PIN;
//! - `selector.rs`: [`Selector`], the token part of a URI, and finding it in the slots;
//! - `sessions.rs`: the session pool and running operations on pooled sessions;
//! - `recover.rs`: bringing the token back when sessions, handles or the token went away.

mod recover;
mod selector;
mod sessions;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Limit, Slot};
use cryptoki::types::AuthPin;
use keyward_core::uri::Pkcs11Uri;
use keyward_core::{Algorithm, Error, KeyType};
use parking_lot::{Mutex, RwLock};
use zeroize::Zeroizing;

pub(crate) use selector::Selector;
pub(crate) use sessions::OpError;

use crate::errors;
use crate::module::Module;
use sessions::Pool;

/// One token in use: where it is, how to log in again, what it can do, its sessions.
pub(crate) struct Token {
    /// The module the token is reached through, shared with its other tokens.
    pub(crate) module: Arc<Module>,
    pub(crate) selector: Selector,
    /// The token's label and serial as the token reports them.
    pub(crate) label: String,
    pub(crate) serial: String,
    /// The slot the token is in now (read with [`Token::slot`]; recovery moves it).
    slot: RwLock<Slot>,
    pub(crate) mechanisms: Vec<MechanismType>,
    login_required: bool,
    /// The PIN is entered on the device itself (a PIN pad): log in without one.
    protected_path: bool,
    /// The user PIN that logged in successfully, kept to log in again after a reset.
    pin: Mutex<Option<Zeroizing<String>>>,
    pub(crate) pool: Pool,
    /// Serializes "does a key with this label exist? no: generate it".
    pub(crate) generate_lock: Mutex<()>,
    /// The token refused a sign-only key pair template once: it decides key usage
    /// itself (a TPM), so later key pairs are asked only for what keyward needs.
    pub(crate) decides_usage: AtomicBool,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Token('{}', serial {}, module {})",
            self.label,
            self.serial,
            self.module.path.display()
        )
    }
}

impl Token {
    /// The token a URI names, logged in with `pin`; created (and cached in the module)
    /// on first use. `cap` bounds its session pool. Blocking.
    pub(crate) fn open(
        module: &Arc<Module>,
        uri: &Pkcs11Uri,
        pin: Option<Zeroizing<String>>,
        cap: usize,
    ) -> Result<Arc<Token>, Error> {
        let selector = Selector::from_uri(uri)?;
        let _setup = module.setup_lock();
        let listed = module.listing(|| selector.find(module)).map_err(|e| {
            errors::map(
                e,
                &format!("listing the tokens of {}", module.path.display()),
                "the module",
            )
        });
        let (slot, info) = match listed.and_then(|found| found) {
            Ok(found) => found,
            // A token this process used and cannot find now is having an outage: look
            // for it as recovery does (resetting the module if need be).
            Err(e) => match module.known_token(&selector) {
                Some(token) => {
                    token.check_pin(pin.as_ref())?;
                    token.refind()?;
                    token.pool.limit(cap);
                    return Ok(token);
                }
                None => return Err(e),
            },
        };
        if let Some(token) = module.cached_token(info.serial_number(), info.label()) {
            token.check_pin(pin.as_ref())?;
            *token.slot.write() = slot;
            token.pool.limit(cap);
            return Ok(token);
        }
        let described = format!("token '{}'", info.label());
        let mechanisms = module.ctx.get_mechanism_list(slot).map_err(|e| {
            errors::map(
                e,
                &format!("reading the mechanisms of {described}"),
                &described,
            )
        })?;
        let cap = session_cap(cap, info.max_session_count(), info.max_rw_session_count());
        let login_required = info.login_required();
        let protected_path = info.protected_authentication_path();
        if login_required && !protected_path && pin.is_none() {
            return Err(Error::backend(format!(
                "{described} requires a user PIN: add pin-source=file:/path or pin-source=env:NAME to the URI"
            )));
        }
        let token = Arc::new(Token {
            module: Arc::clone(module),
            selector,
            label: info.label().to_string(),
            serial: info.serial_number().to_string(),
            slot: RwLock::new(slot),
            mechanisms,
            login_required,
            protected_path,
            pin: Mutex::new(pin),
            pool: Pool::new(cap, module.epoch()),
            generate_lock: Mutex::new(()),
            decides_usage: AtomicBool::new(false),
        });
        // The first session logs in; a wrong PIN fails here and nothing is cached.
        token.warm_up()?;
        tracing::info!(token = %token.label, serial = %token.serial, module = %module.path.display(), "PKCS#11 token logged in");
        module.cache_token(Arc::clone(&token));
        Ok(token)
    }

    /// The slot the token is in now.
    pub(crate) fn slot(&self) -> Slot {
        *self.slot.read()
    }

    /// `token 'ca-token'`, for messages.
    pub(crate) fn describe(&self) -> String {
        format!("token '{}'", self.label)
    }

    /// Refuses a URI whose PIN differs from the one this process logged in with: the
    /// module would answer "already logged in" and never check it.
    fn check_pin(&self, pin: Option<&Zeroizing<String>>) -> Result<(), Error> {
        let mut stored = self.pin.lock();
        match (pin, stored.as_ref()) {
            (Some(given), Some(known)) if !same_secret(given.as_bytes(), known.as_bytes()) => Err(
                Error::backend(format!("PIN incorrect for {}", self.describe())),
            ),
            (Some(given), None) if self.login_required => {
                *stored = Some(given.clone());
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Checks that the token lists `mech` before keyward first uses it.
    pub(crate) fn require(&self, mech: MechanismType, purpose: &str) -> Result<(), Error> {
        if self.mechanisms.contains(&mech) {
            Ok(())
        } else {
            Err(Error::Unsupported(format!(
                "{} does not offer {mech}, needed for {purpose}",
                self.describe()
            )))
        }
    }

    /// Checks that the token generates keys of `alg`'s size: a TPM's RSA key pair
    /// mechanism stops at 2048 or 3072 bits, and says so in its mechanism info.
    pub(crate) fn require_key_size(&self, alg: Algorithm) -> Result<(), Error> {
        let KeyType::Rsa(size) = alg.key_type() else {
            return Ok(());
        };
        let mech = MechanismType::RSA_PKCS_KEY_PAIR_GEN;
        let what = format!("reading {mech} of {}", self.describe());
        let info = {
            let _shared = self.module.shared();
            self.module.ctx.get_mechanism_info(self.slot(), mech)
        }
        .map_err(|e| errors::map(e, &what, &self.describe()))?;
        let (min, max) = (info.min_key_size(), info.max_key_size());
        let bits = usize::try_from(size.bits()).unwrap_or(usize::MAX);
        if max != 0 && !(min..=max).contains(&bits) {
            return Err(Error::Unsupported(format!(
                "{} generates RSA keys of {min} to {max} bits, not {bits} ({alg})",
                self.describe()
            )));
        }
        Ok(())
    }

    /// Logs the user in through `session`; "already logged in" counts as success.
    pub(crate) fn login(&self, session: &Session) -> Result<(), CkError> {
        if !self.login_required {
            return Ok(());
        }
        let stored = self.pin.lock();
        let secret = stored.as_ref().map(|pin| AuthPin::from(pin.as_str()));
        if secret.is_none() && !self.protected_path {
            return Ok(());
        }
        match session.login(UserType::User, secret.as_ref()) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The most sessions keyward keeps on a token: `wanted`, lowered to what the token says
/// one application may open (`ulMaxSessionCount`, and `ulMaxRwSessionCount` since
/// keyward's sessions are read/write; tpm2-pkcs11 reports its own table size there).
pub(crate) fn session_cap(wanted: usize, max: Limit, max_rw: Limit) -> usize {
    [max, max_rw]
        .into_iter()
        .fold(wanted, |cap, limit| match limit {
            Limit::Max(n) if n > 0 => cap.min(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => cap,
        })
        .max(1)
}

/// Compares two secrets without stopping at the first difference.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
