//! RFC 7512 PKCS#11 URIs: which module, which token, which object, and where the PIN is.

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use super::{
    PATH_SAFE, VALUE_SAFE, decode_bytes, decode_utf8, encode, encode_bytes, file_path, split_attrs,
};
use crate::Error;

/// The `type=` path attribute: which kind of object the URI names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectClass {
    /// `type=private`.
    PrivateKey,
    /// `type=public`.
    PublicKey,
    /// `type=cert`.
    Certificate,
    /// `type=secret-key`.
    SecretKey,
    /// `type=data`.
    Data,
}

impl ObjectClass {
    fn name(self) -> &'static str {
        match self {
            ObjectClass::PrivateKey => "private",
            ObjectClass::PublicKey => "public",
            ObjectClass::Certificate => "cert",
            ObjectClass::SecretKey => "secret-key",
            ObjectClass::Data => "data",
        }
    }
}

/// Where a token's user PIN comes from (`pin-source=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// `file:/path`: the first line of a file.
    File(PathBuf),
    /// `env:NAME`: an environment variable.
    Env(String),
}

/// A parsed `pkcs11:` URI. Tokens are chosen by label or serial, never by slot number.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token=`: the token label.
    pub token: Option<String>,
    /// `manufacturer=`: the token manufacturer.
    pub manufacturer: Option<String>,
    /// `model=`: the token model.
    pub model: Option<String>,
    /// `serial=`: the token serial number.
    pub serial: Option<String>,
    /// `object=`: the object label (`CKA_LABEL`).
    pub object: Option<String>,
    /// `id=`: the object id (`CKA_ID`), as bytes.
    pub id: Option<Vec<u8>>,
    /// `type=`: the object class.
    pub class: Option<ObjectClass>,
    /// `module-path=`: the PKCS#11 module to load.
    pub module_path: Option<PathBuf>,
    /// `module-name=`: a module name to look up in the system's module directory.
    pub module_name: Option<String>,
    /// `pin-source=`: where to read the user PIN.
    pub pin_source: Option<PinSource>,
    /// `pin-value=`: the user PIN itself (never printed by `Display` or `Debug`).
    pub pin_value: Option<Zeroizing<String>>,
    /// `max-sessions=`: an upper bound on the backend's session pool for this token.
    pub max_sessions: Option<usize>,
}

impl Pkcs11Uri {
    pub(super) fn parse(rest: &str) -> Result<Self, Error> {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Pkcs11Uri::default();
        for (k, v) in split_attrs(path, ';', "pkcs11 path")? {
            match k {
                "token" => set(&mut uri.token, decode_utf8(v, k)?, k)?,
                "manufacturer" => set(&mut uri.manufacturer, decode_utf8(v, k)?, k)?,
                "model" => set(&mut uri.model, decode_utf8(v, k)?, k)?,
                "serial" => set(&mut uri.serial, decode_utf8(v, k)?, k)?,
                "object" => set(&mut uri.object, decode_utf8(v, k)?, k)?,
                "id" => set(&mut uri.id, decode_bytes(v, k)?, k)?,
                "type" => {
                    let class = match v {
                        "private" => ObjectClass::PrivateKey,
                        "public" => ObjectClass::PublicKey,
                        "cert" => ObjectClass::Certificate,
                        "secret-key" => ObjectClass::SecretKey,
                        "data" => ObjectClass::Data,
                        _ => {
                            return Err(Error::InvalidUri(format!(
                                "pkcs11 type '{v}' is not private, public, cert, secret-key or data"
                            )));
                        }
                    };
                    set(&mut uri.class, class, k)?;
                }
                "slot-id" | "slot-description" | "slot-manufacturer" => {
                    return Err(Error::InvalidUri(format!(
                        "pkcs11 attribute '{k}' is not supported: slots are renumbered by modules such as SoftHSM; select the token with token= or serial="
                    )));
                }
                k if k.starts_with("x-") => {}
                _ => {
                    return Err(Error::InvalidUri(format!(
                        "unknown pkcs11 path attribute '{k}' (expected token, manufacturer, model, serial, object, id or type)"
                    )));
                }
            }
        }
        for (k, v) in split_attrs(query, '&', "pkcs11 query")? {
            match k {
                "module-path" => set(&mut uri.module_path, PathBuf::from(decode_utf8(v, k)?), k)?,
                "module-name" => set(&mut uri.module_name, decode_utf8(v, k)?, k)?,
                "pin-source" => {
                    let src = decode_utf8(v, k)?;
                    let parsed = if let Some(p) = src.strip_prefix("file:") {
                        let p = p.strip_prefix("//").unwrap_or(p);
                        PinSource::File(PathBuf::from(p))
                    } else if let Some(name) = src.strip_prefix("env:") {
                        PinSource::Env(name.to_string())
                    } else if src.starts_with('/') {
                        PinSource::File(PathBuf::from(src))
                    } else {
                        return Err(Error::InvalidUri(format!(
                            "pkcs11 pin-source '{src}' must be file:/path or env:NAME"
                        )));
                    };
                    set(&mut uri.pin_source, parsed, k)?;
                }
                "pin-value" => {
                    let pin =
                        Zeroizing::new(decode_utf8(v, k).map_err(|_| {
                            Error::InvalidUri("pkcs11 pin-value is malformed".into())
                        })?);
                    set(&mut uri.pin_value, pin, k)?;
                }
                "max-sessions" => {
                    let n: usize = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=1024).contains(n))
                        .ok_or_else(|| {
                            Error::InvalidUri(format!(
                                "pkcs11 max-sessions '{v}' is not a number from 1 to 1024"
                            ))
                        })?;
                    set(&mut uri.max_sessions, n, k)?;
                }
                k if k.starts_with("x-") => {}
                _ => {
                    return Err(Error::InvalidUri(format!(
                        "unknown pkcs11 query attribute '{k}' (expected module-path, module-name, pin-source, pin-value or max-sessions)"
                    )));
                }
            }
        }
        if uri.pin_value.is_some() && uri.pin_source.is_some() {
            return Err(Error::InvalidUri(
                "pkcs11 URI has both pin-value and pin-source; give one".into(),
            ));
        }
        if let Some(PinSource::Env(name)) = &uri.pin_source
            && name.is_empty()
        {
            return Err(Error::InvalidUri(
                "pkcs11 pin-source env: names no variable".into(),
            ));
        }
        Ok(uri)
    }

    /// Reads the user PIN from `pin-value`, or the first line of the `pin-source` file,
    /// or its environment variable; `None` when the URI gives no PIN.
    /// Errors name the source, never the PIN.
    pub fn pin(&self) -> Result<Option<Zeroizing<String>>, Error> {
        if let Some(pin) = &self.pin_value {
            return Ok(Some(pin.clone()));
        }
        match &self.pin_source {
            None => Ok(None),
            Some(PinSource::File(path)) => {
                let data = Zeroizing::new(std::fs::read(path).map_err(|e| {
                    Error::io(format!("cannot read PIN file {}", path.display()), e)
                })?);
                let text = std::str::from_utf8(&data).map_err(|_| {
                    Error::InvalidInput(format!("PIN file {} is not UTF-8 text", path.display()))
                })?;
                let line = text.lines().next().unwrap_or("");
                Ok(Some(Zeroizing::new(line.to_string())))
            }
            Some(PinSource::Env(name)) => match std::env::var(name) {
                Ok(v) => Ok(Some(Zeroizing::new(v))),
                Err(_) => Err(Error::InvalidInput(format!(
                    "PIN environment variable {name} is not set"
                ))),
            },
        }
    }

    /// A short description of the token for messages: `token 'ca-token'` or `token with serial 1234`.
    pub fn token_description(&self) -> String {
        match (&self.token, &self.serial) {
            (Some(label), _) => format!("token '{label}'"),
            (None, Some(serial)) => format!("token with serial {serial}"),
            (None, None) => "the token".to_string(),
        }
    }
}

fn set<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), Error> {
    if slot.replace(value).is_some() {
        return Err(Error::InvalidUri(format!(
            "pkcs11 attribute '{name}' is repeated"
        )));
    }
    Ok(())
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path: Vec<String> = Vec::new();
        let strs = [
            ("token", &self.token),
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("serial", &self.serial),
            ("object", &self.object),
        ];
        for (k, v) in strs {
            if let Some(v) = v {
                path.push(format!("{k}={}", encode(v, VALUE_SAFE)));
            }
        }
        if let Some(id) = &self.id {
            path.push(format!("id={}", encode_bytes(id)));
        }
        if let Some(c) = self.class {
            path.push(format!("type={}", c.name()));
        }
        let mut query: Vec<String> = Vec::new();
        if let Some(p) = &self.module_path {
            query.push(format!(
                "module-path={}",
                encode(&p.to_string_lossy(), PATH_SAFE)
            ));
        }
        if let Some(n) = &self.module_name {
            query.push(format!("module-name={}", encode(n, VALUE_SAFE)));
        }
        match &self.pin_source {
            Some(PinSource::File(p)) => query.push(format!("pin-source=file:{}", file_path(p))),
            Some(PinSource::Env(n)) => {
                query.push(format!("pin-source=env:{}", encode(n, VALUE_SAFE)))
            }
            None => {}
        }
        if let Some(n) = self.max_sessions {
            query.push(format!("max-sessions={n}"));
        }
        write!(f, "pkcs11:{}", path.join(";"))?;
        if !query.is_empty() {
            write!(f, "?{}", query.join("&"))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pkcs11Uri({self}")?;
        if self.pin_value.is_some() {
            f.write_str(" [pin-value set]")?;
        }
        f.write_str(")")
    }
}
