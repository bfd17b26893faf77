//! Revocation: the list of revoked certificates (the record of truth) and the CRL made
//! from it, signed by the issuing CA.
//!
//! The list is written before the CRL, so a crash between the two leaves a CRL older
//! than the list, which [`StateDir::problems`] reports and `keyward crl` repairs; it
//! never leaves a CRL listing a revocation the list forgot.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{StateDir, StateLock};
use crate::Error;
use crate::fsutil::{self, Replace};
use crate::issuance::{RevokedCert, SignedCrl};

const REVOCATIONS: &str = "revocations.json";
const CRL_DER: &str = "crl.der";
const CRL_PEM: &str = "crl.pem";

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

    /// The revocation list (empty, CRL number 0, when nothing was ever revoked).
    pub fn revocations(&self) -> Result<RevocationList, Error> {
        let path = self.root.join(REVOCATIONS);
        match fs::read(&path) {
            Ok(d) => serde_json::from_slice(&d)
                .map_err(|e| Error::State(format!("{} is corrupt: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RevocationList {
                version: 1,
                ..RevocationList::default()
            }),
            Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
        }
    }

    /// Records `list` and then the CRL signed from it (DER and PEM), each atomically.
    /// The caller signed `crl` with `list.crl_number` while holding `_lock`.
    pub fn save_revocations(
        &self,
        _lock: &StateLock,
        list: &RevocationList,
        crl: &SignedCrl,
    ) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(list).expect("revocation list serializes");
        fsutil::write_atomic(
            &self.root.join(REVOCATIONS),
            &json,
            fsutil::PUBLIC_FILE_MODE,
            Replace::Allow,
        )?;
        fsutil::write_atomic(
            &self.crl_der_path(),
            &crl.der,
            fsutil::PUBLIC_FILE_MODE,
            Replace::Allow,
        )?;
        fsutil::write_atomic(
            &self.crl_pem_path(),
            crl.pem().as_bytes(),
            fsutil::PUBLIC_FILE_MODE,
            Replace::Allow,
        )
    }

    /// A CRL older than the revocation list (an interrupted `revoke` or `crl`).
    pub(super) fn revocation_problems(&self) -> Vec<String> {
        let list = match self.revocations() {
            Ok(l) => l,
            Err(e) => return vec![e.to_string()],
        };
        if list.crl_number == 0 {
            return Vec::new();
        }
        let number = fs::read(self.crl_der_path()).ok().and_then(|der| {
            crate::check::parse_crl(&der)
                .ok()
                .and_then(|c| c.crl_number().and_then(|n| u64::try_from(n).ok()))
        });
        if number == Some(list.crl_number) {
            return Vec::new();
        }
        vec![format!(
            "{} does not match {} (CRL number {} expected); run `keyward crl` to re-sign it",
            self.crl_der_path().display(),
            self.root.join(REVOCATIONS).display(),
            list.crl_number
        )]
    }
}
