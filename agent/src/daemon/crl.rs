//! The CRL the agent serves in the Workload API's `crl` fields: STATE/crl.der, as
//! `keyward revoke` and `keyward crl` write it, re-read when it changes (polled every
//! [`CRL_POLL`] and on SIGHUP). A CRL that does not verify under the state
//! directory's issuing CA is not served (the previous one stays); one past its
//! nextUpdate is still served, with a warning, until a fresh one is signed.

use std::time::{Duration, SystemTime};

use keyward_core::check;
use keyward_core::store::StateDir;
use prost::bytes::Bytes;
use time::OffsetDateTime;

/// How often the CRL file is checked for a change.
pub const CRL_POLL: Duration = Duration::from_secs(2);

/// Watches the state directory's CRL file.
#[derive(Debug)]
pub struct CrlWatch {
    state: StateDir,
    /// The file's modification time and length when last read.
    seen: Option<(SystemTime, u64)>,
    /// The CRL being served (DER).
    current: Option<Bytes>,
}

impl CrlWatch {
    /// A watch on `state`'s CRL; nothing is read until [`CrlWatch::poll`].
    pub fn new(state: StateDir) -> Self {
        CrlWatch {
            state,
            seen: None,
            current: None,
        }
    }

    /// The CRL to serve, if there is one.
    pub fn current(&self) -> Option<Bytes> {
        self.current.clone()
    }

    /// Re-reads the CRL file if its modification time or length changed; returns
    /// whether the CRL to serve changed.
    pub fn poll(&mut self) -> bool {
        let path = self.state.crl_der_path();
        let stamp = std::fs::metadata(&path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp == self.seen {
            return false;
        }
        self.seen = stamp;
        let der = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the CRL; serving the previous one");
                return false;
            }
        };
        if self.current.as_deref() == Some(der.as_slice()) {
            return false;
        }
        if let Err(e) = self.check(&der) {
            tracing::warn!(path = %path.display(), error = %keyward_core::chain_line(&e), "the CRL is not served");
            return false;
        }
        tracing::info!(path = %path.display(), "serving a new CRL");
        self.current = Some(Bytes::from(der));
        true
    }

    /// Checks `der` under the issuing CA; a stale CRL passes with a warning.
    fn check(&self, der: &[u8]) -> Result<(), keyward_core::Error> {
        let issuing = self.state.require_ca()?.issuing()?;
        let label = self.state.crl_der_path().display().to_string();
        check::read_crl(der, &issuing.cert_der, &label)?;
        if let Err(e) = check::check_crl(der, &issuing.cert_der, &label, OffsetDateTime::now_utc())
        {
            tracing::warn!(error = %e, "serving the CRL anyway");
        }
        Ok(())
    }
}
