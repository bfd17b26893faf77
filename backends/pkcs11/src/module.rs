//! Loaded PKCS#11 modules: one `Pkcs11` context per module path for the whole process.
//!
//! `C_Initialize` may be called once per process and module (a second call fails with
//! `CKR_CRYPTOKI_ALREADY_INITIALIZED`), and a module's login state is process-wide, so
//! modules and the tokens opened through them live in a process-wide registry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use keyward_core::Error;

use crate::errors;
use crate::token::Token;

/// One loaded and initialized PKCS#11 module.
pub(crate) struct Module {
    /// The path the module was loaded from (as given, for messages).
    pub(crate) path: PathBuf,
    /// The cryptoki context; cheap to clone (an `Arc` inside).
    pub(crate) ctx: Pkcs11,
    /// Tokens in use, by serial number: one login and one session pool each.
    tokens: Mutex<HashMap<String, Arc<Token>>>,
    /// Serializes finding, logging in to and initializing tokens, so two callers never
    /// race to create the same token's pool or to `C_InitToken` the same free slot.
    setup: Mutex<()>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Module({})", self.path.display())
    }
}

static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();

/// Locks a mutex, ignoring poisoning: every critical section here leaves its data
/// consistent at each step, so a panic elsewhere does not make it unusable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The module at `path`, loaded and initialized on first use.
pub(crate) fn load(path: &Path) -> Result<Arc<Module>, Error> {
    // Key by the resolved file so two spellings of one library share one context.
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut modules = lock(MODULES.get_or_init(Default::default));
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
    });
    modules.insert(key, Arc::clone(&module));
    Ok(module)
}

/// `C_Initialize` with OS locking; "already initialized" (by another handle on the same
/// library in this process) is fine.
pub(crate) fn initialize(ctx: &Pkcs11, path: &Path) -> Result<(), Error> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(errors::map(
            e,
            &format!("initializing PKCS#11 module {}", path.display()),
            "the module",
        )),
    }
}

/// Runs `f`, and once more after `C_Initialize` if the module answered that it is not
/// initialized (someone in this process called `C_Finalize` on it).
pub(crate) fn reinitializing<T>(
    ctx: &Pkcs11,
    path: &Path,
    f: impl Fn() -> Result<T, CkError>,
) -> Result<T, CkError> {
    match f() {
        Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, _)) => {
            tracing::warn!(module = %path.display(), "PKCS#11 module was finalized; initializing it again");
            match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => f(),
                Err(e) => Err(e),
            }
        }
        other => other,
    }
}

impl Module {
    /// Holds the setup lock: see the field's documentation.
    pub(crate) fn setup_lock(&self) -> MutexGuard<'_, ()> {
        lock(&self.setup)
    }

    /// The token with this serial number, if it is already in use.
    pub(crate) fn cached_token(&self, serial: &str) -> Option<Arc<Token>> {
        lock(&self.tokens).get(serial).cloned()
    }

    /// Remembers a token after its first successful login.
    pub(crate) fn cache_token(&self, serial: String, token: Arc<Token>) {
        lock(&self.tokens).insert(serial, token);
    }
}
