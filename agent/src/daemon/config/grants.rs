//! Key grants of a `[[workload]]` entry (`keys = [{ name, key, ops }]`): which keys the
//! entry's callers may use through `keyward.v1.KeyService`, by a name of the entry's
//! choosing (never the key's URI), and for which operations.

use keyward_core::KeyUri;
use serde::Deserialize;
use toml::Spanned;

/// One grant as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGrant {
    pub(super) name: Spanned<String>,
    pub(super) key: Spanned<String>,
    pub(super) ops: Spanned<Vec<Spanned<String>>>,
}

/// An operation a grant may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOp {
    /// `Sign` with a signing key.
    Sign,
    /// `PublicKey` of a signing key.
    PublicKey,
    /// `GenerateDataKey` under a key-encryption key.
    GenerateDataKey,
    /// `Encrypt` a payload under a key-encryption key.
    Encrypt,
    /// `DecryptDataKey` and `Decrypt` under a key-encryption key.
    Decrypt,
}

impl KeyOp {
    /// Every op, with the name the file and the audit log use.
    pub const ALL: [(KeyOp, &'static str); 5] = [
        (KeyOp::Sign, "sign"),
        (KeyOp::PublicKey, "public-key"),
        (KeyOp::GenerateDataKey, "generate-data-key"),
        (KeyOp::Encrypt, "encrypt"),
        (KeyOp::Decrypt, "decrypt"),
    ];

    /// The op's name in the file.
    pub fn name(self) -> &'static str {
        KeyOp::ALL
            .iter()
            .find(|(op, _)| *op == self)
            .map_or("?", |(_, n)| n)
    }

    /// The op named `name` in the file.
    pub fn parse(name: &str) -> Option<KeyOp> {
        KeyOp::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(op, _)| *op)
    }

    /// Whether the op uses a signing key (else a key-encryption key).
    pub fn signs(self) -> bool {
        matches!(self, KeyOp::Sign | KeyOp::PublicKey)
    }
}

/// One validated grant.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyGrant {
    /// The name callers use for the key.
    pub name: String,
    /// The key.
    pub key: KeyUri,
    /// The operations allowed.
    pub ops: Vec<KeyOp>,
}

impl KeyGrant {
    /// Whether the grant allows `op`.
    pub fn allows(&self, op: KeyOp) -> bool {
        self.ops.contains(&op)
    }
}
