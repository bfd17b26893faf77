//! [`HeldKeySource`]: credentials for a private key the workload keeps (generated in
//! process, or the application's own, e.g. in its HSM), certified by the keyward agent
//! through `keyward.v1.KeyService/SignX509SVID`. The agent never sees the key: the
//! source sends a CSR (`csr`), checks what comes back (`issued`), and renews on its own
//! schedule (`renewal`), publishing into the same [`CredentialCell`] the other sources
//! fill, so [`crate::server_config`] and [`crate::client_config`] work unchanged.

mod csr;
mod issued;
mod key_service;
mod renewal;

use std::sync::Arc;
use std::time::Duration;

use keyward_core::{Algorithm, Error, workload_socket};
use rustls::sign::SigningKey;
use spiffe::SpiffeId;
use spiffe::transport::Endpoint;
use tokio::task::JoinHandle;

use crate::agent_crls::follow_crls;
use crate::credentials::CredentialCell;
use renewal::Renewer;

/// How long [`HeldKeySource::connect`] keeps trying an unreachable agent.
const INITIAL_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the private key of each SVID comes from.
#[derive(Clone)]
pub enum HeldKey {
    /// A key generated in process (aws-lc-rs) for every SVID, so that every renewal
    /// rotates the key as well as the certificate. The default, with ECDSA P-256.
    NewEachRenewal(Algorithm),
    /// One key generated in process at start and kept for every renewal.
    GeneratedOnce(Algorithm),
    /// The application's own key, kept for every renewal: any rustls signing key that
    /// reports its public key (`SigningKey::public_key`), such as one behind the
    /// application's HSM, or an rcgen `KeyPair` loaded with
    /// `provider().key_provider.load_private_key`. It must be ECDSA P-256/P-384,
    /// Ed25519 or RSA (PKCS#1 v1.5 signs the CSR).
    Kept(Arc<dyn SigningKey>),
}

impl Default for HeldKey {
    fn default() -> Self {
        HeldKey::NewEachRenewal(Algorithm::EcdsaP256Sha256)
    }
}

impl std::fmt::Debug for HeldKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeldKey::NewEachRenewal(alg) => write!(f, "NewEachRenewal({alg})"),
            HeldKey::GeneratedOnce(alg) => write!(f, "GeneratedOnce({alg})"),
            HeldKey::Kept(key) => write!(f, "Kept({:?})", key.algorithm()),
        }
    }
}

/// What a [`HeldKeySource`] asks the agent for, and when it renews.
#[derive(Clone, Debug)]
pub struct HeldKeyOptions {
    /// The SPIFFE ID of the SVID: that of a `[[workload]]` entry matching this process.
    pub spiffe_id: SpiffeId,
    /// DNS names to ask for besides the SPIFFE ID; each must be among the entry's
    /// (the SVID carries all of the entry's names whatever the CSR asks).
    pub dns_names: Vec<String>,
    /// The private key of each SVID.
    pub key: HeldKey,
    /// The fraction of each SVID's lifetime after which it is renewed (more than 0,
    /// less than 1; default 0.5, as the agent's own `renew_fraction`).
    pub renew_fraction: f64,
}

impl HeldKeyOptions {
    /// SVIDs for `spiffe_id` with no DNS names, a new ECDSA P-256 key for every SVID,
    /// renewed at half their lifetime.
    pub fn new(spiffe_id: SpiffeId) -> Self {
        HeldKeyOptions {
            spiffe_id,
            dns_names: Vec::new(),
            key: HeldKey::default(),
            renew_fraction: 0.5,
        }
    }
}

/// Credentials for a key this process holds, certified by the agent over
/// `SignX509SVID` and renewed by this process: at `renew_fraction` of each SVID's
/// lifetime a new CSR (with a new key under [`HeldKey::NewEachRenewal`]) is sent; a
/// failure is retried with backoff (never waiting past the current SVID's expiry)
/// while the current credentials keep serving, and new ones are served only once
/// checked (the held key's public key, the SPIFFE ID, the chain to the bundle). The
/// CRLs come from the Workload API bundles stream, as for [`crate::AgentSource`].
pub struct HeldKeySource {
    cell: CredentialCell,
    task: JoinHandle<()>,
    crl_task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HeldKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldKeySource")
            .field("cell", &self.cell)
            .finish_non_exhaustive()
    }
}

impl HeldKeySource {
    /// Connects to the agent at `socket` (`unix:///path`, `unix:/path` or `/path`), or
    /// at `SPIFFE_ENDPOINT_SOCKET` when `None`, obtains the first SVID for `options`
    /// (trying an unreachable agent again for up to 30 s) and the first CRLs, and
    /// starts renewing. A refusal by the agent (a SPIFFE ID or DNS name the caller's
    /// entry does not grant) fails at once with the agent's reason.
    /// Must run inside a tokio runtime, which then carries the renewal task.
    pub async fn connect(socket: Option<&str>, options: HeldKeyOptions) -> Result<Self, Error> {
        if !(options.renew_fraction > 0.0 && options.renew_fraction < 1.0) {
            return Err(Error::InvalidInput(format!(
                "renew_fraction {} is not between 0 and 1",
                options.renew_fraction
            )));
        }
        let path = workload_socket::socket_path_or_env(socket, "the socket argument")?;
        let shown = path.display().to_string();
        let endpoint = Endpoint::Unix(path);
        let renewer = Renewer::new(endpoint.clone(), shown.clone(), options).await?;
        let first = renewer.first(INITIAL_SYNC_TIMEOUT).await?;
        let cell = CredentialCell::new(first.credentials);
        let crl_task = follow_crls(endpoint, shown, INITIAL_SYNC_TIMEOUT, &cell).await?;
        let task = tokio::spawn(renewer.run(cell.clone(), first.not_after));
        Ok(HeldKeySource {
            cell,
            task,
            crl_task,
        })
    }

    /// The cell this source keeps current. Dropping the source stops renewing; clones
    /// of the cell keep its last credentials and CRLs.
    pub fn cell(&self) -> &CredentialCell {
        &self.cell
    }
}

impl AsRef<CredentialCell> for HeldKeySource {
    fn as_ref(&self) -> &CredentialCell {
        &self.cell
    }
}

impl Drop for HeldKeySource {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(t) = self.crl_task.take() {
            t.abort();
        }
    }
}
