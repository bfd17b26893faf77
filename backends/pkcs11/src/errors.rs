//! Turning cryptoki errors into keyward errors in plain words, always keeping the raw
//! `CKR_*` code (as the source) and never a PIN.

use std::fmt;

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};
use keyward_core::Error;

/// A raw PKCS#11 return code and the function that returned it, e.g.
/// `CKR_PIN_INCORRECT from C_Login`: the source of every error keyward reports for a
/// failed PKCS#11 call.
#[derive(Debug, Clone, Copy)]
pub struct Ckr {
    /// The return value.
    pub rv: RvError,
    /// The PKCS#11 function that returned it.
    pub function: Function,
}

impl fmt::Display for Ckr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} from C_{:?}", ckr_name(self.rv), self.function)
    }
}

impl std::error::Error for Ckr {}

/// The `CKR_*` name of a return value, e.g. `CKR_SESSION_HANDLE_INVALID`.
///
/// cryptoki's `Display` for return values is a paragraph of the specification; logs and
/// error lines want the constant's name, which is derived from the variant name.
pub fn ckr_name(rv: RvError) -> String {
    match rv {
        RvError::VendorDefined(code) => format!("CKR_VENDOR_DEFINED({code:#x})"),
        RvError::UnknownErrorCode(code) => format!("CKR_{code:#x}"),
        other => {
            let camel = format!("{other:?}");
            let mut out = String::from("CKR");
            for c in camel.chars() {
                if c.is_ascii_uppercase() {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out
        }
    }
}

/// The return value of a failed call, when the failure came from the module.
pub(crate) fn rv_of(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// A failed call in a few words for logs: `CKR_SESSION_HANDLE_INVALID from C_Sign`.
pub(crate) fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => Ckr {
            rv: *rv,
            function: *function,
        }
        .to_string(),
        other => other.to_string(),
    }
}

/// What happened to a token, as far as recovery is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Recovery {
    /// Key handles went stale (e.g. someone logged the token out, which invalidates
    /// private object handles): log in again and look the key up again.
    Relogin,
    /// The sessions are alive but not logged in: close them, open new ones, log in.
    Reopen,
    /// The sessions are gone (closed, token removed, module finalized): forget them
    /// without closing (their handles may be reused), find the token again, reopen.
    Reset,
    /// Like `Reset`, and the module must be initialized again first.
    Reinitialize,
    /// Like `Reset`, after finalizing and initializing the module: its own connection
    /// to the device broke (tpm2-pkcs11 after the TPM or its resource manager
    /// restarted answers `CKR_GENERAL_ERROR` until it connects again).
    Reload,
}

/// The recovery a failed call asks for, or `None` when retrying cannot help.
pub(crate) fn recovery_for(e: &CkError) -> Option<Recovery> {
    match rv_of(e)? {
        RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid => Some(Recovery::Relogin),
        RvError::UserNotLoggedIn => Some(Recovery::Reopen),
        RvError::SessionHandleInvalid
        | RvError::SessionClosed
        | RvError::DeviceRemoved
        | RvError::DeviceError
        | RvError::TokenNotPresent
        | RvError::TokenNotRecognized
        | RvError::SlotIdInvalid => Some(Recovery::Reset),
        RvError::CryptokiNotInitialized => Some(Recovery::Reinitialize),
        // Only for calls that reach the device: a refused template also answers
        // CKR_GENERAL_ERROR (see `templates`) and reloading would not cure it.
        RvError::GeneralError if reaches_device(e) => Some(Recovery::Reload),
        _ => None,
    }
}

/// Whether a failed call is one that talks to the device for every use of a key
/// (logging in, opening a session, signing, encrypting). Not `C_Decrypt`: modules
/// answer a failed GCM tag check with generic codes too.
fn reaches_device(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            _,
            Function::Login
                | Function::OpenSession
                | Function::SignInit
                | Function::Sign
                | Function::EncryptInit
                | Function::Encrypt
                | Function::DecryptInit
        )
    )
}

/// Maps a failed PKCS#11 call to a keyward error. `what` says what was being done, in
/// words (e.g. `"signing with key 'root-ca' on token 'ca-token'"`); `token` names the
/// token for the PIN messages (e.g. `"token 'ca-token'"`).
pub(crate) fn map(e: CkError, what: &str, token: &str) -> Error {
    let CkError::Pkcs11(rv, function) = e else {
        return Error::backend_with(format!("{what}: {e}"), e);
    };
    let ckr = Ckr { rv, function };
    let backend = |message: String| Error::backend_with(message, ckr);
    match rv {
        RvError::PinIncorrect => backend(format!("PIN incorrect for {token}")),
        RvError::PinLocked => backend(format!(
            "PIN locked for {token} after too many wrong attempts; the security officer must unlock or reset it"
        )),
        RvError::PinExpired => backend(format!(
            "PIN expired for {token}; set a new one before using the token"
        )),
        RvError::PinLenRange | RvError::PinInvalid => backend(format!(
            "PIN rejected by {token}: wrong length or characters ({})",
            ckr_name(rv)
        )),
        RvError::UserPinNotInitialized => backend(format!(
            "{token} has no user PIN yet; initialize it (softhsm2-util --init-pin or the vendor tool)"
        )),
        RvError::MechanismInvalid | RvError::MechanismParamInvalid => {
            Error::Unsupported(format!("{what}: the token refused the mechanism ({ckr})"))
        }
        RvError::DeviceRemoved
        | RvError::TokenNotPresent
        | RvError::DeviceError
        | RvError::DeviceMemory
        | RvError::SessionCount
        | RvError::FunctionCanceled
        | RvError::CryptokiNotInitialized => Error::unavailable(
            format!("{what}: {token} is not available ({ckr})"),
            Some(Box::new(ckr)),
        ),
        _ => backend(format!("{what}: {ckr}")),
    }
}

/// The error for an operation that still fails the same way after the token was
/// recovered once: the token is having an outage, so it is retryable.
pub(crate) fn still_failing(e: CkError, what: &str, token: &str) -> Error {
    let message = format!(
        "{what}: {token} is not available ({}, also after reopening its sessions)",
        describe(&e)
    );
    match e {
        CkError::Pkcs11(rv, function) => {
            Error::unavailable(message, Some(Box::new(Ckr { rv, function })))
        }
        other => Error::unavailable(message, Some(Box::new(other))),
    }
}

/// The error for a token that was in use and cannot be found any more (removed, or its
/// module cannot read it): retryable, since it may come back.
pub(crate) fn token_gone(token: &str, module: &std::path::Path, why: &str) -> Error {
    Error::unavailable(
        format!(
            "{token} is not available in PKCS#11 module {}: {why}",
            module.display()
        ),
        None,
    )
}

/// The error for a module that cannot be loaded: the path and the loader's reason.
pub(crate) fn module_load(path: &std::path::Path, e: CkError) -> Error {
    match e {
        CkError::LibraryLoading(le) => {
            let reason = le.to_string();
            let shown = path.display().to_string();
            let message = if reason.contains(&shown) {
                format!("cannot load PKCS#11 module: {reason}")
            } else {
                format!("cannot load PKCS#11 module {shown}: {reason}")
            };
            Error::backend_with(message, le)
        }
        other => Error::backend_with(
            format!(
                "cannot load PKCS#11 module {}: not a PKCS#11 module ({other})",
                path.display()
            ),
            other,
        ),
    }
}
