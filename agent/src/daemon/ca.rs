//! The CA the agent issues from: the one in the state directory (a new root made with
//! `[ca] key` when the directory has none; the CA is never replaced), with its own
//! rotating intermediate under that root (`[ca.intermediate]`), or intermediates an
//! upstream authority signs and the agent rotates (`[ca.upstream]`).

use std::sync::Arc;

use keyward_core::Error;
use keyward_core::issuance::CaIssuer;
use keyward_core::store::StateDir;
use prost::bytes::Bytes;
use tokio::sync::watch;

use super::audit::Audit;
use super::config::CaSettings;
use super::generations::{self, Journal, LocalIntermediate};
use super::metrics::Metrics;
use crate::backends::Backends;

/// The issuing CA and what goes with every SVID it signs.
#[derive(Clone, Debug)]
pub struct CaView {
    /// The CA that signs workload SVIDs.
    pub issuer: CaIssuer,
    /// The certificates sent after the leaf: the issuing CA and any others below the root.
    pub intermediates: Vec<Vec<u8>>,
    /// The trust bundle (the roots), DER certificates concatenated.
    pub bundle: Bytes,
}

impl CaView {
    /// The view for `issuer`, given the roots: the issuer's chain minus the root goes
    /// after each leaf; the roots are the bundle.
    pub fn new(issuer: CaIssuer, roots: &[Vec<u8>]) -> Self {
        CaView {
            intermediates: issuer.ca_chain().intermediates,
            issuer,
            bundle: Bytes::from(roots.concat()),
        }
    }
}

/// The CA as the agent runs it: fixed, or rotated by the generation engine.
#[derive(Clone, Debug)]
pub enum AgentCa {
    /// The state directory's issuing CA (root or intermediate), used as it is.
    Fixed(CaView),
    /// Intermediates the generation engine rotates; a new view after every change.
    Rotating(watch::Receiver<Arc<CaView>>),
}

impl AgentCa {
    /// The view SVIDs are issued from now.
    pub fn view(&self) -> CaView {
        match self {
            AgentCa::Fixed(v) => v.clone(),
            AgentCa::Rotating(rx) => CaView::clone(&rx.borrow()),
        }
    }

    /// Waits until the view changes (never, for a fixed CA).
    pub async fn changed(&mut self) {
        if let AgentCa::Rotating(rx) = self
            && rx.changed().await.is_ok()
        {
            return;
        }
        std::future::pending().await
    }
}

/// The client for `[ca.upstream]`'s Vault. It is made once, so that the intermediates
/// and the upstream CRL share one login and one token renewal.
#[cfg(feature = "vault")]
pub type UpstreamClient = keyward_vault::VaultClient;
/// Without the vault backend there is no upstream, so never a client.
#[cfg(not(feature = "vault"))]
pub type UpstreamClient = std::convert::Infallible;

/// The Vault client `[ca.upstream]` needs, if it is set: from `[vault] addresses` (else
/// `VAULT_ADDR`) and the `VAULT_*` credentials.
pub fn upstream_client(settings: &CaSettings) -> Result<Option<UpstreamClient>, Error> {
    #[cfg(feature = "vault")]
    if let Some(up) = &settings.upstream {
        let vault =
            keyward_vault::VaultSettings::from_env_with_addresses(up.vault_addresses.as_deref())?;
        return Ok(Some(keyward_vault::VaultClient::new(&vault)?));
    }
    let _ = settings;
    Ok(None)
}

/// Loads the CA: from the state directory, creating a root with `[ca] key` when there
/// is none, and checking that the configured key is the one the CA issues with; or
/// the rotating intermediates (whose generations `journal` records), signed through
/// `upstream_client` (from [`upstream_client`]).
pub async fn load(
    settings: &CaSettings,
    upstream_client: Option<UpstreamClient>,
    state: &StateDir,
    backends: &Arc<Backends>,
    audit: &Audit,
    metrics: &Metrics,
    journal: &Journal,
) -> Result<AgentCa, Error> {
    let Some(key) = &settings.key else {
        return upstream(settings, upstream_client, backends, audit, metrics, journal).await;
    };
    let signer = backends.open(key).await.map_err(|e| match e {
        Error::NotFound(what) => Error::NotFound(format!(
            "{what} (the agent's [ca] key must exist: keyward key generate --key '{key}' --algorithm ecdsa-p256)"
        )),
        e => e,
    })?;
    let ca = match state.ca()? {
        Some(ca) => ca,
        None => {
            // `None` from create_root: another keyward process created it meanwhile.
            let created = state
                .create_root(
                    signer.clone(),
                    &settings.subject,
                    settings.validity,
                    "agent",
                    &|e| {
                        audit.record(e);
                        Ok(())
                    },
                )
                .await?;
            if let Some(root) = created {
                tracing::info!(subject = %root.subject, key = %signer.uri(), serial = %root.serial_hex, "created the root CA");
            }
            state.require_ca()?
        }
    };
    match &settings.intermediate {
        None => {
            let issuing = ca.issuing()?;
            if issuing.key.to_string() != signer.uri().to_string() {
                return Err(Error::State(format!(
                    "the CA in {} issues with {}, but [ca] key names {}",
                    state.path().display(),
                    issuing.key,
                    signer.uri()
                )));
            }
            let issuer = CaIssuer::new(issuing.cert_der, issuing.chain_der, signer)?;
            Ok(AgentCa::Fixed(CaView::new(issuer, &ca.roots)))
        }
        Some(inter) => {
            let root_key = ca.root_key.clone().ok_or_else(|| {
                Error::State(
                    "[ca.intermediate] needs the root's key, but this CA's root is held upstream: use [ca.upstream]"
                        .into(),
                )
            })?;
            if root_key.to_string() != signer.uri().to_string() {
                return Err(Error::State(format!(
                    "with [ca.intermediate], [ca] key must be the root's key ({root_key}), not {}",
                    signer.uri()
                )));
            }
            let root = CaIssuer::new(ca.roots[0].clone(), Vec::new(), signer)?;
            let kind = LocalIntermediate::new(
                inter.clone(),
                backends.clone(),
                root,
                ca.roots.clone(),
                audit.clone(),
            );
            let rx = generations::start(kind, journal, audit.clone(), metrics.clone()).await?;
            Ok(AgentCa::Rotating(rx))
        }
    }
}

/// `[ca.upstream]`: the intermediates an upstream authority signs.
#[cfg(feature = "vault")]
async fn upstream(
    settings: &CaSettings,
    client: Option<UpstreamClient>,
    backends: &Arc<Backends>,
    audit: &Audit,
    metrics: &Metrics,
    journal: &Journal,
) -> Result<AgentCa, Error> {
    let up = settings
        .upstream
        .clone()
        .ok_or_else(|| Error::InvalidInput("[ca] key is missing".into()))?;
    // The journal needs the state directory even when it holds no CA.
    drop(journal.state().create_and_lock()?);
    let client = client.ok_or_else(|| {
        Error::InvalidInput("[ca.upstream] has no Vault client (see ca::upstream_client)".into())
    })?;
    let kind = generations::UpstreamIntermediate::new(up, client, backends.clone(), audit.clone())?;
    let rx = generations::start(kind, journal, audit.clone(), metrics.clone()).await?;
    Ok(AgentCa::Rotating(rx))
}

#[cfg(not(feature = "vault"))]
async fn upstream(
    _settings: &CaSettings,
    _client: Option<UpstreamClient>,
    _backends: &Arc<Backends>,
    _audit: &Audit,
    _metrics: &Metrics,
    _journal: &Journal,
) -> Result<AgentCa, Error> {
    Err(Error::NotCompiled("vault".into()))
}
