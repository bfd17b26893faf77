//! What the security team sees and prepares from the command line: the slots and tokens
//! of a module (`keyward hsm slots`), the key objects on a token (`keyward hsm keys`),
//! and initializing a fresh token.

use std::path::Path;
use std::sync::Arc;

use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keyward_core::uri::Pkcs11Uri;
use keyward_core::{Error, KeyUri};
use serde::Serialize;

use crate::module::{self, Module};
use crate::spki::{self, Curve};
use crate::{Pkcs11Backend, errors};

/// One slot of a module and the token in it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SlotInfo {
    /// The slot number (for display only: keyward selects tokens by label or serial).
    pub slot_id: u64,
    /// The slot description.
    pub description: String,
    /// Whether a token is in the slot.
    pub token_present: bool,
    /// The token label (`token=` in URIs); `None` without a token or before initialization.
    pub label: Option<String>,
    /// The token serial number (`serial=` in URIs).
    pub serial: Option<String>,
    /// The token model.
    pub model: Option<String>,
    /// The token manufacturer.
    pub manufacturer: Option<String>,
    /// Slot and token flags in words: `initialized`, `login-required`, `pin-locked`,
    /// `user-pin-initialized`, `pin-count-low`, `pin-final-try`, `so-pin-locked`,
    /// `write-protected`, `protected-auth-path`, `removable`, `hardware`.
    pub flags: Vec<String>,
    /// The token's mechanisms (`CKM_*`), when asked for.
    pub mechanisms: Option<Vec<String>>,
}

/// Lists the slots of the module at `module` with their tokens, and optionally each
/// token's mechanisms. Blocking (call it off the async runtime).
pub fn list_slots(module: &Path, with_mechanisms: bool) -> Result<Vec<SlotInfo>, Error> {
    let m = module::load(module)?;
    let what = format!("listing the slots of {}", module.display());
    let slots = m
        .listing(|| m.ctx.get_all_slots())
        .map_err(|e| errors::map(e, &what, "the module"))?;
    slots
        .into_iter()
        .map(|slot| slot_info(&m, slot, with_mechanisms))
        .collect()
}

fn slot_info(m: &Module, slot: Slot, with_mechanisms: bool) -> Result<SlotInfo, Error> {
    let what = format!("reading slot {} of {}", slot.id(), m.path.display());
    let map = |e| errors::map(e, &what, "the token");
    let s = m.ctx.get_slot_info(slot).map_err(map)?;
    let mut flags = Vec::new();
    let mut info = SlotInfo {
        slot_id: slot.id(),
        description: s.slot_description().to_string(),
        token_present: s.token_present(),
        label: None,
        serial: None,
        model: None,
        manufacturer: None,
        flags: Vec::new(),
        mechanisms: None,
    };
    if s.token_present() {
        let t = m.ctx.get_token_info(slot).map_err(map)?;
        for (on, name) in [
            (t.token_initialized(), "initialized"),
            (t.login_required(), "login-required"),
            (t.user_pin_initialized(), "user-pin-initialized"),
            (t.user_pin_locked(), "pin-locked"),
            (t.user_pin_count_low(), "pin-count-low"),
            (t.user_pin_final_try(), "pin-final-try"),
            (t.so_pin_locked(), "so-pin-locked"),
            (t.write_protected(), "write-protected"),
            (t.protected_authentication_path(), "protected-auth-path"),
        ] {
            if on {
                flags.push(name.to_string());
            }
        }
        if t.token_initialized() {
            info.label = Some(t.label().to_string());
        }
        info.serial = Some(t.serial_number().to_string()).filter(|s| !s.is_empty());
        info.model = Some(t.model().to_string());
        info.manufacturer = Some(t.manufacturer_id().to_string());
        if with_mechanisms {
            let mechs = m.ctx.get_mechanism_list(slot).map_err(map)?;
            info.mechanisms = Some(mechs.iter().map(|m| m.to_string()).collect());
        }
    }
    if s.removable_device() {
        flags.push("removable".into());
    }
    if s.hardware_slot() {
        flags.push("hardware".into());
    }
    info.flags = flags;
    Ok(info)
}

/// Initializes a fresh token labelled `label` in a free slot of `module` (SoftHSM
/// always offers one) and sets its user PIN. Refuses a label already in use. Blocking.
pub fn init_token(
    module: &Path,
    label: &str,
    so_pin: &str,
    user_pin: &str,
) -> Result<SlotInfo, Error> {
    let m = module::load(module)?;
    let _setup = m.setup_lock();
    let described = format!("token '{label}'");
    let map = |what: &str| {
        let what = what.to_string();
        let described = described.clone();
        move |e| errors::map(e, &what, &described)
    };
    let what = format!("initializing {described}");
    let mut free = None;
    let slots = m.listing(|| m.ctx.get_slots_with_token());
    for slot in slots.map_err(map(&what))? {
        let t = m.ctx.get_token_info(slot).map_err(map(&what))?;
        if t.token_initialized() && t.label() == label {
            return Err(Error::AlreadyExists(format!(
                "a token labelled '{label}' is already in {}",
                m.path.display()
            )));
        }
        if !t.token_initialized() && free.is_none() {
            free = Some(slot);
        }
    }
    let slot = free.ok_or_else(|| {
        Error::backend(format!(
            "no free slot with an uninitialized token in {}",
            m.path.display()
        ))
    })?;
    let so = AuthPin::from(so_pin);
    // No module reset while this session's handle is in use.
    let shared = m.shared();
    m.ctx.init_token(slot, &so, label).map_err(map(&what))?;
    let session = m.ctx.open_rw_session(slot).map_err(map(&what))?;
    session.login(UserType::So, Some(&so)).map_err(map(&what))?;
    session
        .init_pin(&AuthPin::from(user_pin))
        .map_err(map(&what))?;
    session.logout().map_err(map(&what))?;
    session.close().map_err(map(&what))?;
    drop(shared);
    tracing::info!(token = %label, module = %m.path.display(), "initialized PKCS#11 token");
    slot_info(&m, slot, false)
}

/// One key object on a token.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct KeyObjectInfo {
    /// `CKA_LABEL` (`object=` in URIs).
    pub label: String,
    /// `CKA_ID` in hex (`id=` in URIs, percent-encoded there).
    pub id: String,
    /// `private`, `public` or `secret`.
    pub class: String,
    /// `RSA`, `EC`, `EC_EDWARDS`, `AES`, ...
    pub key_type: String,
    /// `P-256`, `P-384`, `Ed25519`, or the size in bits (`2048`).
    pub size: Option<String>,
    /// `CKA_SENSITIVE` (private and secret keys).
    pub sensitive: Option<bool>,
    /// `CKA_EXTRACTABLE` (private and secret keys).
    pub extractable: Option<bool>,
    /// The URI that opens this key in keyward (private keys only).
    pub uri: Option<String>,
}

impl Pkcs11Backend {
    /// Lists the key objects on the token `token_uri` names (logging in to see private
    /// ones), sorted by label.
    pub async fn list_keys(&self, token_uri: &Pkcs11Uri) -> Result<Vec<KeyObjectInfo>, Error> {
        let (token, module) = self.token(token_uri).await?;
        let base = Pkcs11Uri {
            token: Some(token.label.clone()),
            module_path: Some(module),
            pin_source: token_uri.pin_source.clone(),
            ..Pkcs11Uri::default()
        };
        let what = format!("listing the keys on {}", token.describe());
        let t = Arc::clone(&token);
        let mut keys = t
            .blocking(
                move || what.clone(),
                move |s, _| {
                    let mut out = Vec::new();
                    for handle in s.find_objects(&[])? {
                        let attrs = s.get_attributes(handle, &KEY_ATTRIBUTES)?;
                        if let Some(k) = key_object(attrs, &base) {
                            out.push(k);
                        }
                    }
                    Ok(out)
                },
            )
            .await?;
        keys.sort_by(|a, b| (&a.label, &a.id, &a.class).cmp(&(&b.label, &b.id, &b.class)));
        Ok(keys)
    }
}

const KEY_ATTRIBUTES: [AttributeType; 10] = [
    AttributeType::Class,
    AttributeType::KeyType,
    AttributeType::Label,
    AttributeType::Id,
    AttributeType::EcParams,
    AttributeType::Modulus,
    AttributeType::ModulusBits,
    AttributeType::ValueLen,
    AttributeType::Sensitive,
    AttributeType::Extractable,
];

fn key_object(attrs: Vec<Attribute>, base: &Pkcs11Uri) -> Option<KeyObjectInfo> {
    let mut k = KeyObjectInfo {
        label: String::new(),
        id: String::new(),
        class: String::new(),
        key_type: String::new(),
        size: None,
        sensitive: None,
        extractable: None,
        uri: None,
    };
    let (mut class, mut raw_id) = (None, Vec::new());
    for a in attrs {
        match a {
            Attribute::Class(c) => class = Some(c),
            Attribute::KeyType(t) => k.key_type = key_type_name(t),
            Attribute::Label(l) => k.label = String::from_utf8_lossy(&l).into_owned(),
            Attribute::Id(id) => raw_id = id,
            Attribute::EcParams(p) => {
                k.size = Some(Curve::from_params(&p).map_or_else(
                    || format!("curve {}", hex::encode(&p)),
                    |c| c.name().to_string(),
                ));
            }
            Attribute::Modulus(n) => k.size = Some(spki::bit_len(&n).to_string()),
            Attribute::ModulusBits(b) if k.size.is_none() => k.size = Some(b.to_string()),
            Attribute::ValueLen(n) => k.size = Some((u64::from(n) * 8).to_string()),
            Attribute::Sensitive(b) => k.sensitive = Some(b),
            Attribute::Extractable(b) => k.extractable = Some(b),
            _ => {}
        }
    }
    k.class = match class? {
        ObjectClass::PRIVATE_KEY => "private",
        ObjectClass::PUBLIC_KEY => "public",
        ObjectClass::SECRET_KEY => "secret",
        _ => return None,
    }
    .to_string();
    k.id = hex::encode(&raw_id);
    if k.class == "private" {
        let uri = Pkcs11Uri {
            object: Some(k.label.clone()).filter(|l| !l.is_empty()),
            id: Some(raw_id).filter(|i| !i.is_empty()),
            ..base.clone()
        };
        k.uri = Some(KeyUri::Pkcs11(uri).to_string());
    }
    Some(k)
}

fn key_type_name(t: CkKeyType) -> String {
    let s = t.to_string();
    s.strip_prefix("CKK_").unwrap_or(&s).to_string()
}
