//! How a URI picks its token (label and/or serial, never the slot number, which
//! modules renumber), and finding that token among a module's slots.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::slot::{Slot, TokenInfo};
use keyward_core::Error;
use keyward_core::uri::Pkcs11Uri;

use crate::errors;
use crate::module::Module;

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
