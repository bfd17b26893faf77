//! EST bootstrap secrets: one per device, for its first enrollment (HTTP Basic, the
//! device's name as the user). Each lives in `STATE/est/bootstrap/NAME.json` as an
//! Argon2id hash with the names the device may ask for; the secret itself is shown
//! once, by `keyward est bootstrap add`, and never stored. A secret enrolls once: its
//! use is written to the same file inside the issuance's transaction, before the
//! certificate is returned.

use std::path::{Path, PathBuf};

use argon2::Argon2;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use keyward_core::Error;
use keyward_core::fsutil::{self, Replace};
use keyward_core::store::{StateDir, Transaction};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// Random bytes in a new secret (printed as unpadded base64url).
const SECRET_BYTES: usize = 24;

/// One bootstrap secret as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BootstrapRecord {
    /// The device's name: the Basic user, and the common name its CSR must carry.
    pub name: String,
    /// The secret's Argon2id hash (PHC string).
    pub hash: String,
    /// The DNS names and IP addresses the device's CSR may ask for besides its name.
    #[serde(default)]
    pub sans: Vec<String>,
    /// When the secret was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The enrollment that used it, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<BootstrapUse>,
}

/// The one enrollment a secret allowed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BootstrapUse {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The serial of the certificate issued.
    pub serial_hex: String,
}

/// Where `name`'s record lives in `state`.
fn record_path(state: &Path, name: &str) -> PathBuf {
    state
        .join("est")
        .join("bootstrap")
        .join(format!("{name}.json"))
}

/// Checks a device name: letters, digits, `.`, `_`, `-`, 1 to 64 characters, not
/// starting with a dot (it names a file).
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "bad device name '{name}': use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
        )))
    }
}

/// Makes a new secret for `name` (refusing a name that has one), stores its hash with
/// `sans`, and returns the secret to show once.
pub fn add(state: &StateDir, name: &str, sans: Vec<String>) -> Result<Zeroizing<String>, Error> {
    check_name(name)?;
    let mut raw = Zeroizing::new([0u8; SECRET_BYTES]);
    OsRng.fill_bytes(raw.as_mut());
    let secret =
        Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.as_ref()));
    let salt = SaltString::generate(&mut OsRng);
    let hash = Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map_err(|e| Error::backend(format!("cannot hash the bootstrap secret: {e}")))?
        .to_string();
    let record = BootstrapRecord {
        name: name.to_string(),
        hash,
        sans,
        created_at: OffsetDateTime::now_utc(),
        used: None,
    };
    let path = record_path(state.path(), name);
    let _lock = state.lock()?;
    fsutil::create_private_dir(fsutil::parent_dir(&path))?;
    let json = serde_json::to_vec_pretty(&record)
        .map_err(|e| Error::State(format!("cannot encode {}: {e}", path.display())))?;
    fsutil::write_atomic(&path, &json, fsutil::SECRET_FILE_MODE, Replace::Refuse).map_err(|e| {
        match e {
            Error::AlreadyExists(_) => Error::AlreadyExists(format!(
                "device '{name}' already has a bootstrap secret ({})",
                path.display()
            )),
            e => e,
        }
    })?;
    Ok(secret)
}

/// Why a bootstrap secret was not accepted (told to the client as 401, to the log as is).
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No secret for that name, or the secret does not match.
    Wrong,
    /// The secret matched but has enrolled already.
    Used,
}

/// The record of `name` if `secret` is its unused secret. Hashes even for an unknown
/// name, so the answer takes as long either way.
pub fn check(state: &StateDir, name: &str, secret: &str) -> Result<BootstrapRecord, Refused> {
    let record = check_name(name)
        .ok()
        .and_then(|()| read(state, name).ok().flatten());
    let hash = record
        .as_ref()
        .map(|r| r.hash.as_str())
        .unwrap_or(DECOY_HASH.as_str());
    let matches = PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok()
    });
    match record {
        Some(r) if matches && r.used.is_none() => Ok(r),
        Some(_) if matches => Err(Refused::Used),
        _ => Err(Refused::Wrong),
    }
}

/// A hash of a random secret nobody knows, checked when the name is unknown.
static DECOY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let mut raw = [0u8; SECRET_BYTES];
    OsRng.fill_bytes(&mut raw);
    Argon2::default()
        .hash_password(&raw, &SaltString::generate(&mut OsRng))
        .map(|h| h.to_string())
        .unwrap_or_default()
});

/// The record of `name`, if it has one.
fn read(state: &StateDir, name: &str) -> Result<Option<BootstrapRecord>, Error> {
    let path = record_path(state.path(), name);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::State(format!("{} does not parse: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}

/// Whether `name` has a secret that has not enrolled yet.
pub fn unused(state: &StateDir, name: &str) -> bool {
    matches!(read(state, name), Ok(Some(r)) if r.used.is_none())
}

/// Records, inside `tx` (which holds the state lock), that `name`'s secret enrolled
/// the certificate `serial_hex`; fails if it was used meanwhile.
pub fn mark_used(tx: &mut Transaction<'_>, name: &str, serial_hex: &str) -> Result<(), Error> {
    let mut record = read(tx.state(), name)?
        .ok_or_else(|| Error::State(format!("the bootstrap secret of '{name}' is gone")))?;
    if record.used.is_some() {
        return Err(Error::AlreadyExists(format!(
            "the bootstrap secret of '{name}' has been used"
        )));
    }
    record.used = Some(BootstrapUse {
        at: OffsetDateTime::now_utc(),
        serial_hex: serial_hex.to_string(),
    });
    tx.write_json(&record_path(tx.state().path(), name), &record)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_secret_is_stored_hashed_and_checks_only_for_its_name() {
        let dir = tempfile::TempDir::new().unwrap();
        let state = StateDir::new(dir.path());
        let secret = add(&state, "dev-1", vec!["dev-1.internal".into()]).unwrap();
        let path = record_path(dir.path(), "dev-1");
        let stored = std::fs::read_to_string(&path).unwrap();
        assert!(!stored.contains(secret.as_str()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let record = check(&state, "dev-1", &secret).unwrap();
        assert_eq!(record.sans, ["dev-1.internal"]);
        assert_eq!(check(&state, "dev-1", "guess").unwrap_err(), Refused::Wrong);
        assert_eq!(check(&state, "dev-2", &secret).unwrap_err(), Refused::Wrong);
        assert_eq!(
            check(&state, "../dev-1", &secret).unwrap_err(),
            Refused::Wrong
        );
        assert!(matches!(
            add(&state, "dev-1", Vec::new()),
            Err(Error::AlreadyExists(_))
        ));
        for bad in ["", ".hidden", "a/b", "x y", &"n".repeat(65)] {
            assert!(add(&state, bad, Vec::new()).is_err(), "{bad:?}");
        }
    }
}
