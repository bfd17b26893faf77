//! The CA the agent issues from: the one in the state directory, or a new root made
//! with `[ca] key` when the directory has none (the CA is never replaced).

use std::sync::Arc;

use keyward_core::Error;
use keyward_core::issuance::CaIssuer;
use keyward_core::store::StateDir;
use prost::bytes::Bytes;

use super::audit::Audit;
use super::config::CaSettings;
use super::intermediate::Intermediates;
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

/// The CA as the agent runs it: fixed, or with a rotating agent intermediate.
#[derive(Debug)]
pub enum AgentCa {
    /// The state directory's issuing CA (root or intermediate), used as it is.
    Fixed(CaView),
    /// Intermediates the agent issues under its root and rotates.
    Rotating(Box<Intermediates>),
}

impl AgentCa {
    /// The view SVIDs are issued from now.
    pub fn view(&self) -> CaView {
        match self {
            AgentCa::Fixed(v) => v.clone(),
            AgentCa::Rotating(i) => i.view(),
        }
    }
}

/// Loads the CA from the state directory, creating a root with `[ca] key` when there is
/// none, and checks that the configured key is the one the CA issues with.
pub async fn load(
    settings: &CaSettings,
    state: &StateDir,
    backends: &Arc<Backends>,
    audit: &Audit,
) -> Result<AgentCa, Error> {
    let signer = backends.open(&settings.key).await.map_err(|e| match e {
        Error::NotFound(what) => Error::NotFound(format!(
            "{what} (the agent's [ca] key must exist: keyward key generate --key '{}' --algorithm ecdsa-p256)",
            settings.key
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
                    "[ca.intermediate] needs the root's key, but this CA's root is held upstream"
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
            let i = Intermediates::load(
                inter.clone(),
                state.clone(),
                root,
                ca.roots.clone(),
                backends.clone(),
                audit.clone(),
            )
            .await?;
            Ok(AgentCa::Rotating(Box::new(i)))
        }
    }
}
