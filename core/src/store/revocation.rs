//! Revocation: the list of revoked certificates (the record of truth) and the CRL made
//! from it, signed by the issuing CA.
//!
//! The list is written before the CRL, so a crash between the two leaves a CRL older
//! than the list, which [`StateDir::problems`] reports and `keyward pending resolve` (or
//! `keyward crl`) repairs; it never leaves a CRL listing a revocation the list forgot.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{StateDir, Transaction};
use crate::Error;
use crate::fsutil::{self, Replace};
use crate::issuance::{RevokedCert, SignedCrl};

const REVOCATIONS: &str = "revocations.json";
const CRL_DER: &str = "crl.der";
const CRL_PEM: &str = "crl.pem";
/// The upstream authority's CRL, as the agent last fetched and verified it.
const UPSTREAM_CRL_DER: &str = "agent/upstream-crl.der";

/// The revoked certificates and the number of the last CRL signed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationList {
    /// Format version (1).
    #[serde(default = "version_one")]
    pub version: u32,
    /// The cRLNumber of the last CRL signed (0 before the first); every new CRL takes
    /// the next number.
    pub crl_number: u64,
    /// Every revoked certificate, oldest revocation first.
    pub revoked: Vec<RevokedCert>,
}

fn version_one() -> u32 {
    1
}

impl RevocationList {
    /// The entry for `serial_hex` (any case), if that certificate is revoked.
    pub fn find(&self, serial_hex: &str) -> Option<&RevokedCert> {
        self.revoked
            .iter()
            .find(|r| r.serial_hex.eq_ignore_ascii_case(serial_hex))
    }
}

impl StateDir {
    /// Where the DER CRL is (served by the agent).
    pub fn crl_der_path(&self) -> PathBuf {
        self.root.join(CRL_DER)
    }

    /// Where the PEM CRL is (for openssl and web servers).
    pub fn crl_pem_path(&self) -> PathBuf {
        self.root.join(CRL_PEM)
    }

    /// Where the agent keeps the upstream authority's CRL (DER), the last one it
    /// fetched and verified: served at once after a restart, read by `keyward verify`.
    pub fn upstream_crl_der_path(&self) -> PathBuf {
        self.root.join(UPSTREAM_CRL_DER)
    }

    /// Replaces the stored upstream CRL atomically, under the state directory's lock.
    /// The caller verified `der`; it is public data (0644), like `crl.der`.
    pub fn write_upstream_crl(&self, der: &[u8]) -> Result<(), Error> {
        let path = self.upstream_crl_der_path();
        let _lock = self.lock()?;
        fsutil::create_private_dir(fsutil::parent_dir(&path))?;
        fsutil::write_atomic(&path, der, fsutil::PUBLIC_FILE_MODE, Replace::Allow)
    }

    /// The revocation list (empty, CRL number 0, when nothing was ever revoked).
    pub fn revocations(&self) -> Result<RevocationList, Error> {
        Ok(
            fsutil::read_json(&self.root.join(REVOCATIONS))?.unwrap_or(RevocationList {
                version: 1,
                ..RevocationList::default()
            }),
        )
    }

    /// Whether the CRL files are the ones signed from the revocation list: `crl.der`
    /// carries the list's CRL number and `crl.pem` is its PEM form (true before the
    /// first CRL).
    pub fn crl_is_current(&self) -> Result<bool, Error> {
        let list = self.revocations()?;
        if list.crl_number == 0 {
            return Ok(true);
        }
        let Ok(der) = fs::read(self.crl_der_path()) else {
            return Ok(false);
        };
        let number = crate::check::parse_crl(&der)
            .ok()
            .and_then(|c| c.crl_number().and_then(|n| u64::try_from(n).ok()));
        let pem = SignedCrl { der }.pem();
        Ok(number == Some(list.crl_number)
            && fs::read(self.crl_pem_path()).is_ok_and(|p| p == pem.as_bytes()))
    }

    /// A CRL older than the revocation list (an interrupted `revoke` or `crl`).
    pub(super) fn revocation_problems(&self) -> Vec<String> {
        match self.crl_is_current() {
            Ok(true) => Vec::new(),
            Ok(false) => vec![format!(
                "{} does not match {} (CRL number {} expected); run `keyward crl` to re-sign it",
                self.crl_der_path().display(),
                self.root.join(REVOCATIONS).display(),
                self.revocations().map_or(0, |l| l.crl_number)
            )],
            Err(e) => vec![e.to_string()],
        }
    }
}

impl Transaction<'_> {
    /// Records `list` and then the CRL signed from it (DER and PEM), each atomically.
    /// The caller signed `crl` with `list.crl_number` in this transaction.
    pub fn save_revocations(
        &mut self,
        list: &RevocationList,
        crl: &SignedCrl,
    ) -> Result<(), Error> {
        let state = self.state();
        self.write_json(&state.root.join(REVOCATIONS), list)?;
        self.write(
            &state.crl_der_path(),
            &crl.der,
            fsutil::PUBLIC_FILE_MODE,
            Replace::Allow,
        )?;
        self.write(
            &state.crl_pem_path(),
            crl.pem().as_bytes(),
            fsutil::PUBLIC_FILE_MODE,
            Replace::Allow,
        )
    }
}
