//! Loaded PKCS#11 modules: one `Pkcs11` context per module path for the whole process.
//!
//! `C_Initialize` may be called once per process and module (a second call fails with
//! `CKR_CRYPTOKI_ALREADY_INITIALIZED`), and a module's login state is process-wide, so
//! modules and the tokens opened through them live in a process-wide registry.
//!
//! Every token of a module shares its context, so resetting it (`C_Finalize` and
//! `C_Initialize`, the only way SoftHSM notices a token that came back) closes the
//! sessions of all of them, and the module then hands out session and object handle
//! numbers from 1 again. Hence the module-wide `in_use` lock (held shared while any
//! session or handle is used, exclusively while resetting) and the `epoch` that tells
//! each token's pool its sessions died with an older context.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use keyward_core::Error;
use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::errors;
use crate::token::{Selector, Token};

/// One loaded and initialized PKCS#11 module.
pub(crate) struct Module {
    /// The path the module was loaded from (as given, for messages).
    pub(crate) path: PathBuf,
    /// The cryptoki context; cheap to clone (an `Arc` inside).
    pub(crate) ctx: Pkcs11,
    /// Tokens in use, by serial number and label (tpm2-pkcs11 gives every token of a
    /// store the same serial): one login and one session pool each.
    tokens: Mutex<HashMap<(String, String), Arc<Token>>>,
    /// Serializes finding, logging in to and initializing tokens, so two callers never
    /// race to create the same token's pool or to `C_InitToken` the same free slot.
    setup: Mutex<()>,
    /// Held shared while a session or object handle of this module is in use (or its
    /// slots are listed), exclusively while the module is finalized and initialized.
    in_use: RwLock<()>,
    /// Bumped every time keyward initializes the module again: sessions and handles
    /// from an older epoch are dead, and their numbers may belong to new ones.
    epoch: AtomicU64,
}

/// How far [`Module::reset`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restart {
    /// `C_Initialize` only: someone finalized the module.
    Initialize,
    /// `C_Finalize` then `C_Initialize`: makes the module read its tokens afresh.
    Reload,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Module({})", self.path.display())
    }
}

static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();

/// The module at `path`, loaded and initialized on first use.
pub(crate) fn load(path: &Path) -> Result<Arc<Module>, Error> {
    // Key by the resolved file so two spellings of one library share one context.
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut modules = MODULES.get_or_init(Default::default).lock();
    if let Some(m) = modules.get(&key) {
        return Ok(Arc::clone(m));
    }
    let ctx = Pkcs11::new(path).map_err(|e| errors::module_load(path, e))?;
    initialize(&ctx, path)?;
    tracing::debug!(module = %path.display(), "loaded PKCS#11 module");
    let module = Arc::new(Module {
        path: path.to_path_buf(),
        ctx,
        tokens: Mutex::new(HashMap::new()),
        setup: Mutex::new(()),
        in_use: RwLock::new(()),
        epoch: AtomicU64::new(1),
    });
    modules.insert(key, Arc::clone(&module));
    Ok(module)
}

/// `C_Initialize` with OS locking, in keyward's words.
pub(crate) fn initialize(ctx: &Pkcs11, path: &Path) -> Result<(), Error> {
    c_initialize(ctx).map_err(|e| {
        errors::map(
            e,
            &format!("initializing PKCS#11 module {}", path.display()),
            "the module",
        )
    })
}

/// `C_Initialize` with OS locking; "already initialized" (by another handle on the same
/// library in this process) is fine.
fn c_initialize(ctx: &Pkcs11) -> Result<(), CkError> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Module {
    /// Holds the setup lock: see the field's documentation.
    pub(crate) fn setup_lock(&self) -> MutexGuard<'_, ()> {
        self.setup.lock()
    }

    /// The token with this serial number and label, if it is already in use.
    pub(crate) fn cached_token(&self, serial: &str, label: &str) -> Option<Arc<Token>> {
        self.tokens
            .lock()
            .get(&(serial.to_string(), label.to_string()))
            .cloned()
    }

    /// The token in use that `selector` picks, if any (for a token that went away).
    pub(crate) fn known_token(&self, selector: &Selector) -> Option<Arc<Token>> {
        self.tokens
            .lock()
            .values()
            .find(|t| t.selector == *selector)
            .cloned()
    }

    /// Remembers a token after its first successful login.
    pub(crate) fn cache_token(&self, token: Arc<Token>) {
        let key = (token.serial.clone(), token.label.clone());
        self.tokens.lock().insert(key, token);
    }

    /// The current epoch (see the field).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Shared use of the module's sessions and handles: no reset happens meanwhile.
    pub(crate) fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.in_use.read()
    }

    /// Exclusive use, for a reset: waits until no session or handle is in use.
    pub(crate) fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.in_use.write()
    }

    /// Initializes the module again (after `C_Finalize` for [`Restart::Reload`]), unless
    /// it was already reset since `seen` (the epoch the caller's sessions belong to).
    /// The caller proves it holds [`Module::exclusive`]. The epoch moves on even when
    /// `C_Initialize` fails: every session is gone either way.
    pub(crate) fn reset(
        &self,
        seen: u64,
        how: Restart,
        _exclusive: &RwLockWriteGuard<'_, ()>,
    ) -> Result<(), CkError> {
        if self.epoch() != seen {
            return Ok(());
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if how == Restart::Reload {
            tracing::warn!(module = %self.path.display(), "finalizing and initializing the PKCS#11 module to find its tokens again");
            match self.ctx.clone().finalize() {
                Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, _)) => {}
                Err(e) => {
                    tracing::warn!(module = %self.path.display(), error = %errors::describe(&e), "C_Finalize failed")
                }
            }
        } else {
            tracing::warn!(module = %self.path.display(), "PKCS#11 module was finalized; initializing it again");
        }
        c_initialize(&self.ctx)
    }

    /// Runs `f` (a look at the module's slots) under [`Module::shared`], and once more
    /// after `C_Initialize` if the module answered that it is not initialized (someone
    /// in this process called `C_Finalize` on it).
    pub(crate) fn listing<T>(&self, f: impl Fn() -> Result<T, CkError>) -> Result<T, CkError> {
        let (seen, first) = {
            let _shared = self.shared();
            (self.epoch(), f())
        };
        match first {
            Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, _)) => {
                let exclusive = self.exclusive();
                if let Err(e) = self.reset(seen, Restart::Initialize, &exclusive) {
                    tracing::warn!(module = %self.path.display(), error = %errors::describe(&e), "cannot initialize the PKCS#11 module");
                }
                f()
            }
            other => other,
        }
    }
}
