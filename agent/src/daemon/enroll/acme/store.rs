//! The ACME server's records (accounts, orders, authorizations, certificates), one JSON
//! file each under STATE/acme/, written with the state directory's atomic writes, so a
//! restarted agent continues every order where it was.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use keyward_core::Error;
use keyward_core::fsutil;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::identifiers::Identifier;

/// An account: its id is the RFC 7638 thumbprint of its key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    /// The key's thumbprint (base64url SHA-256), also the last part of its URL.
    pub id: String,
    /// `valid` or `deactivated`.
    pub status: String,
    /// `mailto:` contacts, as given.
    #[serde(default)]
    pub contact: Vec<String>,
    /// The account's public key as the client sent it.
    pub jwk: Value,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A challenge of an authorization.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Challenge {
    /// `http-01` or `tls-alpn-01`.
    pub kind: String,
    /// The random token (base64url, 128 bits).
    pub token: String,
    /// `pending`, `processing`, `valid` or `invalid`.
    pub status: String,
    /// When it was validated.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub validated: Option<OffsetDateTime>,
    /// Why validation failed (a problem document).
    #[serde(default)]
    pub error: Option<Value>,
}

/// An authorization: one identifier of one order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Authorization {
    /// Random id.
    pub id: String,
    /// The account it belongs to.
    pub account: String,
    /// What is to be proven.
    pub identifier: Identifier,
    /// `pending`, `valid`, `invalid` (`expired` when read after `expires`).
    pub status: String,
    /// Until when it may be used.
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// The ways to prove it.
    pub challenges: Vec<Challenge>,
}

impl Authorization {
    /// The status as the client sees it now.
    pub fn current_status(&self, now: OffsetDateTime) -> &str {
        if self.status == "pending" && now >= self.expires {
            "expired"
        } else {
            &self.status
        }
    }
}

/// An order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    /// Random id.
    pub id: String,
    /// The account it belongs to.
    pub account: String,
    /// The identifiers, canonical.
    pub identifiers: Vec<Identifier>,
    /// Authorization ids, one per identifier, same order.
    pub authorizations: Vec<String>,
    /// Until when it may be finalized.
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// Set while the CSR is being signed.
    #[serde(default)]
    pub processing: bool,
    /// The certificate's id once issued.
    #[serde(default)]
    pub certificate: Option<String>,
    /// Why the order failed (a problem document).
    #[serde(default)]
    pub error: Option<Value>,
}

/// A certificate issued through ACME, with what goes out at its URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedChain {
    /// The serial, upper-case hex (also its id).
    pub serial_hex: String,
    /// The account that ordered it.
    pub account: String,
    /// The certificate followed by the intermediates, PEM.
    pub chain_pem: String,
}

/// The four kinds of record and the directory each lives in.
pub trait Record: Serialize + DeserializeOwned {
    /// The directory under STATE/acme/.
    const DIR: &'static str;
    /// What a client calls it (in "no such ..." problems).
    const WHAT: &'static str;
}

impl Record for Account {
    const DIR: &'static str = "accounts";
    const WHAT: &'static str = "account";
}
impl Record for Order {
    const DIR: &'static str = "orders";
    const WHAT: &'static str = "order";
}
impl Record for Authorization {
    const DIR: &'static str = "authz";
    const WHAT: &'static str = "authorization";
}
impl Record for IssuedChain {
    const DIR: &'static str = "certs";
    const WHAT: &'static str = "certificate";
}

/// STATE/acme/.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store under `state_dir`, its directories created (0700).
    pub fn open(state_dir: &Path) -> Result<Store, Error> {
        let root = state_dir.join("acme");
        fsutil::create_private_dir(&root)?;
        for dir in [
            Account::DIR,
            Order::DIR,
            Authorization::DIR,
            IssuedChain::DIR,
        ] {
            fsutil::create_private_dir(&root.join(dir))?;
        }
        Ok(Store { root })
    }

    /// The record `id` of kind `R`, `None` when there is none (or `id` could not name a
    /// file this store wrote).
    pub fn get<R: Record>(&self, id: &str) -> Result<Option<R>, Error> {
        match self.path::<R>(id) {
            Some(path) => fsutil::read_json(&path),
            None => Ok(None),
        }
    }

    /// Writes `record` as `id` atomically.
    pub fn put<R: Record>(&self, id: &str, record: &R) -> Result<(), Error> {
        let path = self
            .path::<R>(id)
            .ok_or_else(|| Error::InvalidInput(format!("bad {} id", R::WHAT)))?;
        fsutil::write_json(&path, record)
    }

    /// Every record of kind `R` (for an account's order list).
    pub fn all<R: Record>(&self) -> Result<Vec<R>, Error> {
        let dir = self.root.join(R::DIR);
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if let Some(r) = self.get::<R>(id)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The file of `id`: ids are base64url or hex, nothing that could leave the directory.
    fn path<R: Record>(&self, id: &str) -> Option<PathBuf> {
        let ok = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| self.root.join(R::DIR).join(format!("{id}.json")))
    }
}

/// A new random id or token (128 bits, base64url).
pub fn random_id() -> String {
    B64.encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_ids_cannot_escape_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chain = IssuedChain {
            serial_hex: "0A".into(),
            account: "acct".into(),
            chain_pem: "pem".into(),
        };
        store.put("0A", &chain).unwrap();
        assert_eq!(
            store.get::<IssuedChain>("0A").unwrap().unwrap().chain_pem,
            "pem"
        );
        assert!(store.get::<IssuedChain>("0B").unwrap().is_none());
        assert!(store.get::<IssuedChain>("../orders/x").unwrap().is_none());
        assert!(store.put("../x", &chain).is_err());
        assert_eq!(store.all::<IssuedChain>().unwrap().len(), 1);
    }
}
