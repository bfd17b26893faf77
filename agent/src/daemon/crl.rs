//! The CRLs the agent serves in the Workload API's `crl` fields: the local CRL,
//! STATE/crl.der, as `keyward revoke` and `keyward crl` write it, and (with
//! `[ca.upstream]`) the upstream authority's CRL, STATE/agent/upstream-crl.der, as the
//! upstream CRL task ([`super::upstream_crl`]) stores it. Each file is re-read when it
//! changes (polled every [`CRL_POLL`] and on SIGHUP) and checked again: the local CRL
//! under the state directory's issuing CA, the upstream one under the upstream CAs. A CRL that does not
//! verify is not served (the previous one stays); one past its nextUpdate is still
//! served, with a warning, until a fresh one arrives.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use keyward_core::check;
use keyward_core::store::StateDir;
use prost::bytes::Bytes;
use time::OffsetDateTime;

use super::ca::AgentCa;
use super::upstream_crl;

/// How often the CRL files are checked for a change.
pub const CRL_POLL: Duration = Duration::from_secs(2);

/// Which CRL a file holds, and so which CA must have signed it.
#[derive(Debug, Clone, Copy)]
enum Signer {
    /// The state directory's issuing CA.
    IssuingCa,
    /// The upstream authority's CA (`[ca.upstream]`, with the `vault` feature).
    #[cfg_attr(
        not(feature = "vault"),
        expect(dead_code, reason = "an upstream authority needs the vault feature")
    )]
    Upstream,
}

/// One watched CRL file and the CRL served from it.
#[derive(Debug)]
struct Watched {
    path: PathBuf,
    signer: Signer,
    /// The file's modification time and length when last read.
    seen: Option<(SystemTime, u64)>,
    /// The CRL being served (DER).
    current: Option<Bytes>,
}

/// Watches the state directory's CRL files.
#[derive(Debug)]
pub struct CrlWatch {
    state: StateDir,
    files: Vec<Watched>,
    /// The agent's CA, whose upstream CAs sign the upstream CRL.
    upstream: Option<AgentCa>,
}

impl CrlWatch {
    /// A watch on `state`'s local CRL; nothing is read until [`CrlWatch::poll`].
    pub fn new(state: StateDir) -> Self {
        CrlWatch {
            files: vec![Watched::new(state.crl_der_path(), Signer::IssuingCa)],
            state,
            upstream: None,
        }
    }

    /// Watches the upstream CRL too, checking it under the upstream CAs of `ca`.
    #[cfg(feature = "vault")]
    pub fn with_upstream(mut self, ca: AgentCa) -> Self {
        let path = self.state.upstream_crl_der_path();
        self.files.push(Watched::new(path, Signer::Upstream));
        self.upstream = Some(ca);
        self
    }

    /// The CRLs to serve: the local one first, then the upstream one.
    pub fn current(&self) -> Vec<Bytes> {
        self.files
            .iter()
            .filter_map(|w| w.current.clone())
            .collect()
    }

    /// Re-reads every CRL file whose modification time or length changed; returns
    /// whether the CRLs to serve changed.
    pub fn poll(&mut self) -> bool {
        let mut changed = false;
        for i in 0..self.files.len() {
            changed |= self.poll_file(i);
        }
        changed
    }

    fn poll_file(&mut self, i: usize) -> bool {
        let w = &mut self.files[i];
        let stamp = std::fs::metadata(&w.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp == w.seen {
            return false;
        }
        w.seen = stamp;
        let der = match std::fs::read(&w.path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
            Err(e) => {
                tracing::warn!(path = %w.path.display(), error = %e, "cannot read the CRL; serving the previous one");
                return false;
            }
        };
        if w.current.as_deref() == Some(der.as_slice()) {
            return false;
        }
        let label = w.path.display().to_string();
        let upstream = self.upstream.as_ref();
        if let Err(e) = check_signed(&self.state, upstream, w.signer, &der, &label) {
            tracing::warn!(path = %label, error = %keyward_core::chain_line(&e), "the CRL is not served");
            return false;
        }
        tracing::info!(path = %label, "serving a new CRL");
        w.current = Some(Bytes::from(der));
        true
    }
}

impl Watched {
    fn new(path: PathBuf, signer: Signer) -> Self {
        Watched {
            path,
            signer,
            seen: None,
            current: None,
        }
    }
}

/// Checks `der` under the CA `signer` names (the upstream ones of `upstream`); a stale
/// CRL passes with a warning.
fn check_signed(
    state: &StateDir,
    upstream: Option<&AgentCa>,
    signer: Signer,
    der: &[u8],
    label: &str,
) -> Result<(), keyward_core::Error> {
    match signer {
        Signer::Upstream => {
            let cas = upstream.map(upstream_crl::upstream_cas).unwrap_or_default();
            upstream_crl::verify(&cas, der, label).map(|_| ())
        }
        Signer::IssuingCa => {
            let issuing = state.require_ca()?.issuing()?;
            check::read_crl(der, &issuing.cert_der, label)?;
            if let Err(e) =
                check::check_crl(der, &issuing.cert_der, label, OffsetDateTime::now_utc())
            {
                tracing::warn!(error = %e, "serving the CRL anyway");
            }
            Ok(())
        }
    }
}
