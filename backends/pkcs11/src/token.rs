//! Tokens: found by label or serial (never by slot number), logged in once, with their
//! mechanism list read once and checked before a mechanism is first used.

use std::sync::{Arc, Mutex, RwLock};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Slot, TokenInfo};
use cryptoki::types::AuthPin;
use keyward_core::Error;
use keyward_core::uri::Pkcs11Uri;
use zeroize::Zeroizing;

use crate::errors;
use crate::module::{Module, lock};
use crate::pool::Pool;

/// How a URI picks its token: label and/or serial (plus manufacturer and model when given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Selector {
    label: Option<String>,
    serial: Option<String>,
    manufacturer: Option<String>,
    model: Option<String>,
}

impl Selector {
    /// The token part of a URI; a URI naming neither label nor serial is refused.
    pub(crate) fn from_uri(uri: &Pkcs11Uri) -> Result<Self, Error> {
        if uri.token.is_none() && uri.serial.is_none() {
            return Err(Error::InvalidUri(
                "pkcs11 URI names no token: add token=LABEL or serial=SERIAL".into(),
            ));
        }
        Ok(Selector {
            label: uri.token.clone(),
            serial: uri.serial.clone(),
            manufacturer: uri.manufacturer.clone(),
            model: uri.model.clone(),
        })
    }

    fn matches(&self, info: &TokenInfo) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.label, info.label())
            && eq(&self.serial, info.serial_number())
            && eq(&self.manufacturer, info.manufacturer_id())
            && eq(&self.model, info.model())
    }

    /// `token 'ca-token'` or `token with serial 1234`, for messages.
    pub(crate) fn describe(&self) -> String {
        match (&self.label, &self.serial) {
            (Some(l), _) => format!("token '{l}'"),
            (None, Some(s)) => format!("token with serial {s}"),
            (None, None) => "the token".into(),
        }
    }

    /// The slot holding the selected token now (slots get renumbered, so this is asked
    /// again after a reset), without locking or initializing the module: the outer
    /// error is a failed listing (e.g. the module is not initialized), the inner one
    /// says no single token matches, listing the tokens that are present. A slot whose
    /// token cannot be read (SoftHSM answers `CKR_GENERAL_ERROR` for a token whose
    /// directory vanished) holds no usable token.
    pub(crate) fn find(
        &self,
        module: &Module,
    ) -> Result<Result<(Slot, TokenInfo), Error>, CkError> {
        let ctx = &module.ctx;
        let slots = ctx.get_slots_with_token()?;
        let mut present = Vec::new();
        let mut unreadable = Vec::new();
        let mut found = Vec::new();
        for slot in slots {
            let info = match ctx.get_token_info(slot) {
                Ok(i) => i,
                Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, f)) => {
                    return Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, f));
                }
                // A token pulled out between the two calls is simply not present.
                Err(CkError::Pkcs11(RvError::TokenNotPresent, _)) => continue,
                Err(e) => {
                    unreadable.push(format!("slot {}: {}", slot.id(), errors::describe(&e)));
                    continue;
                }
            };
            if !info.token_initialized() {
                continue;
            }
            present.push(if self.serial.is_some() {
                format!("'{}' (serial {})", info.label(), info.serial_number())
            } else {
                format!("'{}'", info.label())
            });
            if self.matches(&info) {
                found.push((slot, info));
            }
        }
        let module = module.path.display();
        Ok(match found.len() {
            1 => Ok(found.remove(0)),
            0 => {
                let mut listed = if present.is_empty() {
                    "none".to_string()
                } else {
                    present.join(", ")
                };
                if !unreadable.is_empty() {
                    listed.push_str(&format!("; unreadable: {}", unreadable.join(", ")));
                }
                let wanted = match (&self.label, &self.serial) {
                    (Some(l), None) => format!("no token labelled '{l}'"),
                    (None, Some(s)) => format!("no token with serial '{s}'"),
                    (Some(l), Some(s)) => format!("no token labelled '{l}' with serial '{s}'"),
                    (None, None) => "no matching token".into(),
                };
                Err(Error::backend(format!(
                    "{wanted} in PKCS#11 module {module} (tokens present: {listed})"
                )))
            }
            n => Err(Error::backend(format!(
                "{n} tokens match {} in PKCS#11 module {module}; add serial= to the URI to choose one",
                self.describe()
            ))),
        })
    }
}

/// One token in use: where it is, how to log in again, what it can do, its sessions.
pub(crate) struct Token {
    /// The module the token is reached through, shared with its other tokens.
    pub(crate) module: Arc<Module>,
    pub(crate) selector: Selector,
    /// The token's label and serial as the token reports them.
    pub(crate) label: String,
    pub(crate) serial: String,
    pub(crate) slot: RwLock<Slot>,
    pub(crate) mechanisms: Vec<MechanismType>,
    login_required: bool,
    /// The PIN is entered on the device itself (a PIN pad): log in without one.
    protected_path: bool,
    /// The user PIN that logged in successfully, kept to log in again after a reset.
    pin: Mutex<Option<Zeroizing<String>>>,
    pub(crate) pool: Pool,
    /// Serializes "does a key with this label exist? no: generate it".
    pub(crate) generate_lock: Mutex<()>,
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
        if let Some(token) = module.cached_token(info.serial_number()) {
            token.check_pin(pin.as_ref())?;
            *token.slot.write().unwrap_or_else(|p| p.into_inner()) = slot;
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
        });
        // The first session logs in; a wrong PIN fails here and nothing is cached.
        token.warm_up()?;
        tracing::info!(token = %token.label, serial = %token.serial, module = %module.path.display(), "PKCS#11 token logged in");
        module.cache_token(token.serial.clone(), Arc::clone(&token));
        Ok(token)
    }

    /// `token 'ca-token'`, for messages.
    pub(crate) fn describe(&self) -> String {
        format!("token '{}'", self.label)
    }

    /// Refuses a URI whose PIN differs from the one this process logged in with: the
    /// module would answer "already logged in" and never check it.
    fn check_pin(&self, pin: Option<&Zeroizing<String>>) -> Result<(), Error> {
        let mut stored = lock(&self.pin);
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

    /// Logs the user in through `session`; "already logged in" counts as success.
    pub(crate) fn login(&self, session: &Session) -> Result<(), CkError> {
        if !self.login_required {
            return Ok(());
        }
        let stored = lock(&self.pin);
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

/// Compares two secrets without stopping at the first difference.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
