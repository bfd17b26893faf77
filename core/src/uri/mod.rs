//! Key URIs: one string names a key in any backend (`file:`, `pkcs11:`, `awskms:`,
//! `transit:`). Parsing happens here, once, so backends only consume parsed values.
//!
//! `Display` gives the canonical form, which never contains a PIN: it is what keyward
//! stores in its state directory and writes to logs.

mod cloud;
mod pkcs11;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use cloud::{AwsKmsUri, KmsKeyRef, TransitUri};
pub use pkcs11::{ObjectClass, PinSource, Pkcs11Uri};

use crate::Error;

/// A parsed key URI of any scheme.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyUri {
    /// `file:/path/key.pem`: a PKCS#8 PEM file (software backend).
    File(FileUri),
    /// `pkcs11:token=...;object=...?module-path=...`: a key in a PKCS#11 token (RFC 7512).
    Pkcs11(Pkcs11Uri),
    /// `awskms:alias/NAME`, `awskms:key-id=UUID` or `awskms:arn:aws:kms:...`.
    AwsKms(AwsKmsUri),
    /// `transit:NAME[?mount=M&version=N]`: a Vault/OpenBao Transit key.
    Transit(TransitUri),
}

/// The location of a software key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileUri {
    /// Absolute path of the PKCS#8 PEM file.
    pub path: PathBuf,
}

impl KeyUri {
    /// Parses a key URI; the error names the part that is wrong.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        let (scheme, rest) = s.split_once(':').ok_or_else(|| {
            Error::InvalidUri(format!(
                "'{}' has no scheme (expected file:, pkcs11:, awskms: or transit:)",
                redact(s)
            ))
        })?;
        match scheme {
            "file" => FileUri::parse(rest).map(KeyUri::File),
            "pkcs11" => Pkcs11Uri::parse(rest).map(KeyUri::Pkcs11),
            "awskms" => AwsKmsUri::parse(rest).map(KeyUri::AwsKms),
            "transit" => TransitUri::parse(rest).map(KeyUri::Transit),
            other => Err(Error::InvalidUri(format!(
                "unknown scheme '{other}' (expected file, pkcs11, awskms or transit)"
            ))),
        }
    }

    /// The scheme, which selects the backend: `file`, `pkcs11`, `awskms` or `transit`.
    pub fn scheme(&self) -> &'static str {
        match self {
            KeyUri::File(_) => "file",
            KeyUri::Pkcs11(_) => "pkcs11",
            KeyUri::AwsKms(_) => "awskms",
            KeyUri::Transit(_) => "transit",
        }
    }

    /// A `file:` URI for `path`, made absolute against the current directory.
    pub fn file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = std::path::absolute(path.as_ref())
            .map_err(|e| Error::InvalidUri(format!("file path: {e}")))?;
        Ok(KeyUri::File(FileUri { path }))
    }

    /// Refuses a URI that cannot be opened again from its recorded form: a `pkcs11:` URI
    /// whose PIN is a `pin-value` (a PIN is never written to the state directory, so
    /// every later command that opens the recorded key would find no PIN). `role` names
    /// the key in the error ("the CA key").
    pub fn check_recordable(&self, role: &str) -> Result<(), Error> {
        match self {
            KeyUri::Pkcs11(p) if p.pin_value.is_some() => Err(Error::InvalidUri(format!(
                "{role} gives its PIN as pin-value, which keyward never stores, so later \
                 commands could not open it: use pin-source=file:PATH or pin-source=env:NAME"
            ))),
            _ => Ok(()),
        }
    }
}

impl FileUri {
    fn parse(rest: &str) -> Result<Self, Error> {
        // Accept file:/abs, file:///abs, file://localhost/abs and file:relative.
        let path = rest
            .strip_prefix("//localhost")
            .or_else(|| rest.strip_prefix("//"))
            .unwrap_or(rest);
        if path.is_empty() {
            return Err(Error::InvalidUri("file: URI has an empty path".into()));
        }
        if path.contains('?') || path.contains('#') {
            return Err(Error::InvalidUri(format!(
                "file: URI path '{path}' contains '?' or '#'; percent-encode them"
            )));
        }
        let decoded = decode_utf8(path, "file path")?;
        let path = std::path::absolute(Path::new(&decoded))
            .map_err(|e| Error::InvalidUri(format!("file path '{decoded}': {e}")))?;
        Ok(FileUri { path })
    }
}

impl FromStr for KeyUri {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        KeyUri::parse(s)
    }
}

impl fmt::Display for KeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyUri::File(u) => write!(f, "file:{}", file_path(&u.path)),
            KeyUri::Pkcs11(u) => u.fmt(f),
            KeyUri::AwsKms(u) => u.fmt(f),
            KeyUri::Transit(u) => u.fmt(f),
        }
    }
}

impl fmt::Debug for KeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyUri({self})")
    }
}

impl serde::Serialize for KeyUri {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KeyUri {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KeyUri::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Characters left unencoded in path-like values (RFC 3986 unreserved plus `/`).
const PATH_SAFE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Characters left unencoded in attribute values (unreserved only).
const VALUE_SAFE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A path as written after `file:`, percent-encoded. `file://x` would read back as an
/// authority and the relative path `x`, so a path starting with `//` gets an empty
/// authority in front (`file:////x`).
fn file_path(path: &Path) -> String {
    let p = encode(&path.to_string_lossy(), PATH_SAFE);
    if p.starts_with("//") {
        format!("//{p}")
    } else {
        p
    }
}

fn encode(s: &str, set: &'static percent_encoding::AsciiSet) -> String {
    percent_encoding::utf8_percent_encode(s, set).to_string()
}

fn encode_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("%{x:02x}")).collect()
}

/// Percent-decodes `s`, rejecting malformed escapes; `what` names the part for errors.
fn decode_bytes(s: &str, what: &str) -> Result<Vec<u8>, Error> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = bytes.len() >= i + 3
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit();
            if !ok {
                // Three characters, not bytes: a multi-byte character may follow '%'.
                let at: String = s[i..].chars().take(3).collect();
                return Err(Error::InvalidUri(format!(
                    "{what}: malformed percent-encoding at '{at}'"
                )));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(percent_encoding::percent_decode_str(s).collect())
}

fn decode_utf8(s: &str, what: &str) -> Result<String, Error> {
    String::from_utf8(decode_bytes(s, what)?)
        .map_err(|_| Error::InvalidUri(format!("{what}: not valid UTF-8 after decoding")))
}

/// Splits `a=b&c=d` (or `;`-separated) attributes, rejecting empty names and values.
fn split_attrs<'a>(s: &'a str, sep: char, what: &str) -> Result<Vec<(&'a str, &'a str)>, Error> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(sep)
        .map(|kv| {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                Error::InvalidUri(format!("{what} attribute '{}' has no '='", redact(kv)))
            })?;
            if k.is_empty() {
                return Err(Error::InvalidUri(format!(
                    "{what} attribute with an empty name"
                )));
            }
            Ok((k, v))
        })
        .collect()
}

/// Removes any `pin-value=...` from a string before it goes into an error message.
fn redact(s: &str) -> String {
    match s.find("pin-value=") {
        None => s.to_string(),
        Some(i) => {
            let end = s[i..].find(['&', ';']).map_or(s.len(), |j| i + j);
            format!("{}pin-value=***{}", &s[..i], &s[end..])
        }
    }
}

#[cfg(test)]
mod tests;
