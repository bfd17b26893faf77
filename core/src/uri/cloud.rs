//! URIs of the cloud backends: AWS KMS keys and Vault/OpenBao Transit keys.

use std::fmt;

use super::{PATH_SAFE, VALUE_SAFE, decode_utf8, encode, split_attrs};

/// Characters left unencoded in a printed ARN: ordinary ARNs print unchanged, while a
/// `?`, `%` or `&` that came percent-encoded stays encoded and reads back the same.
const ARN_SAFE: &percent_encoding::AsciiSet = &PATH_SAFE.remove(b':');
use crate::Error;

/// How an AWS KMS key is named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KmsKeyRef {
    /// `alias/NAME` (the `alias/` prefix is kept, as KMS expects it).
    Alias(String),
    /// A key id (usually a UUID).
    KeyId(String),
    /// A full key or alias ARN.
    Arn(String),
}

/// A key in AWS KMS, with optional per-key overrides of the AWS configuration chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsKmsUri {
    /// The key reference.
    pub key: KmsKeyRef,
    /// Region override (`?region=`); otherwise `AWS_REGION` and the shared config.
    pub region: Option<String>,
    /// Endpoint override (`?endpoint=`); otherwise `AWS_ENDPOINT_URL[_KMS]`.
    pub endpoint: Option<String>,
    /// Shared-config profile override (`?profile=`).
    pub profile: Option<String>,
}

impl AwsKmsUri {
    pub(super) fn parse(rest: &str) -> Result<Self, Error> {
        let (key_part, query) = rest.split_once('?').unwrap_or((rest, ""));
        let key_part = decode_utf8(key_part, "awskms key")?;
        let key = if let Some(name) = key_part.strip_prefix("alias/") {
            check_name(name, "awskms alias", |c| {
                c.is_ascii_alphanumeric() || "/_-".contains(c)
            })?;
            if name.starts_with("aws/") {
                return Err(Error::InvalidUri(format!(
                    "awskms alias 'alias/{name}' is reserved for AWS managed keys"
                )));
            }
            KmsKeyRef::Alias(key_part.clone())
        } else if let Some(id) = key_part.strip_prefix("key-id=") {
            check_name(id, "awskms key-id", |c| {
                c.is_ascii_alphanumeric() || c == '-'
            })?;
            KmsKeyRef::KeyId(id.to_string())
        } else if key_part.starts_with("arn:") {
            let parts: Vec<_> = key_part.splitn(6, ':').collect();
            let ok = parts.len() == 6
                && parts[2] == "kms"
                && (parts[5].starts_with("key/") || parts[5].starts_with("alias/"))
                && parts[5].len() > 4;
            if !ok {
                return Err(Error::InvalidUri(format!(
                    "awskms ARN '{key_part}' is not arn:PARTITION:kms:REGION:ACCOUNT:key/ID or .../alias/NAME"
                )));
            }
            KmsKeyRef::Arn(key_part.clone())
        } else {
            return Err(Error::InvalidUri(format!(
                "awskms key '{key_part}' must be alias/NAME, key-id=ID or a KMS ARN"
            )));
        };
        let mut uri = AwsKmsUri {
            key,
            region: None,
            endpoint: None,
            profile: None,
        };
        for (k, v) in split_attrs(query, '&', "awskms")? {
            let v = decode_utf8(v, k)?;
            let slot = match k {
                "region" => &mut uri.region,
                "endpoint" => &mut uri.endpoint,
                "profile" => &mut uri.profile,
                _ => {
                    return Err(Error::InvalidUri(format!(
                        "unknown awskms attribute '{k}' (expected region, endpoint or profile)"
                    )));
                }
            };
            if v.is_empty() || slot.replace(v).is_some() {
                return Err(Error::InvalidUri(format!(
                    "awskms attribute '{k}' is empty or repeated"
                )));
            }
        }
        Ok(uri)
    }

    /// The identifier KMS API calls take (`KeyId` accepts aliases and ARNs too).
    pub fn key_id(&self) -> &str {
        match &self.key {
            KmsKeyRef::Alias(s) | KmsKeyRef::KeyId(s) | KmsKeyRef::Arn(s) => s,
        }
    }
}

impl fmt::Display for AwsKmsUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            KmsKeyRef::Alias(a) => write!(f, "awskms:{a}")?,
            KmsKeyRef::KeyId(id) => write!(f, "awskms:key-id={id}")?,
            KmsKeyRef::Arn(arn) => write!(f, "awskms:{}", encode(arn, ARN_SAFE))?,
        }
        let attrs = [
            ("region", &self.region),
            ("endpoint", &self.endpoint),
            ("profile", &self.profile),
        ];
        write_query(
            f,
            attrs
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (*k, v.clone()))),
        )
    }
}

/// A key in a Vault/OpenBao Transit secrets engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransitUri {
    /// The Transit key name.
    pub name: String,
    /// The mount path of the Transit engine (default `transit`).
    pub mount: String,
    /// A pinned key version; `None` means the latest, re-read when the key rotates.
    pub version: Option<u32>,
}

impl TransitUri {
    /// The default mount of the Transit engine.
    pub const DEFAULT_MOUNT: &'static str = "transit";

    pub(super) fn parse(rest: &str) -> Result<Self, Error> {
        let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
        let name = decode_utf8(name, "transit key name")?;
        check_name(&name, "transit key name", |c| {
            c.is_ascii_alphanumeric() || "_-.".contains(c)
        })?;
        let mut uri = TransitUri {
            name,
            mount: Self::DEFAULT_MOUNT.into(),
            version: None,
        };
        let mut seen_mount = false;
        for (k, v) in split_attrs(query, '&', "transit")? {
            let v = decode_utf8(v, k)?;
            match k {
                "mount" if !seen_mount => {
                    let m = v.trim_matches('/');
                    check_name(m, "transit mount", |c| {
                        c.is_ascii_alphanumeric() || "_-./".contains(c)
                    })?;
                    uri.mount = m.to_string();
                    seen_mount = true;
                }
                "version" if uri.version.is_none() => {
                    let n: u32 = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        Error::InvalidUri(format!(
                            "transit version '{v}' is not a positive integer"
                        ))
                    })?;
                    uri.version = Some(n);
                }
                "mount" | "version" => {
                    return Err(Error::InvalidUri(format!(
                        "transit attribute '{k}' repeated"
                    )));
                }
                _ => {
                    return Err(Error::InvalidUri(format!(
                        "unknown transit attribute '{k}' (expected mount or version)"
                    )));
                }
            }
        }
        Ok(uri)
    }
}

impl fmt::Display for TransitUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "transit:{}", self.name)?;
        let mount = (self.mount != Self::DEFAULT_MOUNT).then(|| ("mount", self.mount.clone()));
        let version = self.version.map(|v| ("version", v.to_string()));
        write_query(f, mount.into_iter().chain(version))
    }
}

fn write_query(
    f: &mut fmt::Formatter<'_>,
    attrs: impl Iterator<Item = (&'static str, String)>,
) -> fmt::Result {
    for (i, (k, v)) in attrs.enumerate() {
        let sep = if i == 0 { '?' } else { '&' };
        write!(f, "{sep}{k}={}", encode(&v, VALUE_SAFE))?;
    }
    Ok(())
}

fn check_name(name: &str, what: &str, allowed: impl Fn(char) -> bool) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::InvalidUri(format!("{what} is empty")));
    }
    if name.len() > 256 {
        return Err(Error::InvalidUri(format!(
            "{what} is longer than 256 characters"
        )));
    }
    if let Some(c) = name.chars().find(|c| !allowed(*c)) {
        return Err(Error::InvalidUri(format!("{what} '{name}' contains '{c}'")));
    }
    Ok(())
}
