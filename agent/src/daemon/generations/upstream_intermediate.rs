//! `[ca.upstream]`: intermediates signed by an upstream authority (Vault/OpenBao PKI,
//! `MOUNT/root/sign-intermediate`), so the root never sits on this node. The schedule
//! and keys are those of every intermediate ([`super::x509`]); what differs is how a
//! generation is made and what is published:
//! - a generation is a CSR from its new key, signed upstream, and checked before
//!   anything is recorded: a CA, carrying the CSR's key, chaining to a root the mount
//!   publishes. An unknown mount or role is caught before the key is made;
//! - the bundle is the upstream root(s): every root the mount publishes (a next root
//!   an operator added appears at the next refresh, every [`ROOTS_REFRESH`]) and the
//!   root above every live generation.
//!
//! A state directory whose CA is an intermediate made by hand with `keyward ca
//! intermediate --upstream` is adopted as generation 1 when its key is the template's
//! first key (`{n}` = 1); otherwise generation 1 is a new intermediate and the state
//! directory's CA stays as it is (unused by the agent).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keyward_core::audit::Event;
use keyward_core::check::summarize;
use keyward_core::issuance::{self, CaIssuer};
use keyward_core::store::StateDir;
use keyward_core::{Error, KeySigner};
use keyward_vault::{VaultClient, VaultPkiUpstream};
use time::OffsetDateTime;

use super::x509::{self, CertDetail};
use super::{Entry, Kind, Next, Section, Slot};
use crate::backends::Backends;
use crate::daemon::audit::Audit;
use crate::daemon::ca::CaView;
use crate::daemon::config::UpstreamSettings;

/// How often the roots the mount publishes are read again.
pub const ROOTS_REFRESH: Duration = Duration::from_secs(600);

/// The agent's intermediates signed upstream.
pub struct UpstreamIntermediate {
    settings: UpstreamSettings,
    target: VaultPkiUpstream,
    client: VaultClient,
    backends: Arc<Backends>,
    audit: Audit,
    /// The roots the mount published when last read.
    published: Vec<Vec<u8>>,
}

impl UpstreamIntermediate {
    /// The intermediates `settings` describe, signed through `client` (see
    /// `ca::upstream_client`).
    pub fn new(
        settings: UpstreamSettings,
        client: VaultClient,
        backends: Arc<Backends>,
        audit: Audit,
    ) -> Result<Self, Error> {
        let target = VaultPkiUpstream::parse(&settings.authority)?;
        Ok(UpstreamIntermediate {
            client,
            settings,
            target,
            backends,
            audit,
            published: Vec::new(),
        })
    }

    /// Reads the roots the mount publishes; returns whether they changed.
    async fn read_roots(&mut self) -> Result<bool, Error> {
        let roots = keyward_vault::published_roots(&self.client, &self.target.mount).await?;
        let changed = roots != self.published;
        self.published = roots;
        Ok(changed)
    }

    /// The bundle: the root above each live generation, then the published ones.
    fn roots(&self, slots: &[Slot<Self>]) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let above = slots.iter().filter_map(|s| s.open.chain_der().last());
        for root in above.chain(&self.published) {
            if !out.contains(root) {
                out.push(root.clone());
            }
        }
        out
    }
}

/// Has `authority` sign an intermediate for `signer` (a CSR with `subject`, valid for
/// `ttl`), and checks the answer into an issuer: a CA carrying `signer`'s key whose
/// chain verifies up to a self-signed root. Used by the agent and by `keyward ca
/// intermediate --upstream`.
pub async fn sign_at_upstream(
    client: &VaultClient,
    authority: &VaultPkiUpstream,
    signer: Arc<dyn KeySigner>,
    subject: &str,
    ttl: Duration,
) -> Result<CaIssuer, Error> {
    let csr = issuance::csr_pem(signer.clone(), subject).await?;
    let signed =
        keyward_vault::sign_intermediate_with(client, &authority.mount, &csr, "", ttl).await?;
    let der = keyward_core::check::pem_to_ders(signed.certificate_pem.as_bytes())?
        .into_iter()
        .next()
        .ok_or_else(|| Error::backend("the upstream answered without a certificate"))?;
    CaIssuer::new(der, signed.chain_der, signer)
}

#[async_trait]
impl Kind for UpstreamIntermediate {
    type Detail = CertDetail;
    type Open = CaIssuer;
    type Published = CaView;

    const NAME: &'static str = "upstream_intermediate";
    const WHAT: &'static str = "upstream intermediate CA";
    const GATES_READINESS: bool = true;

    /// Adopts an intermediate made by hand with the template's first key.
    fn migrate(&self, state: &StateDir) -> Result<Option<Section<CertDetail>>, Error> {
        let Some(ca) = state.ca()? else {
            return Ok(None);
        };
        let issuing = ca.issuing()?;
        let first = x509::key_uri(&self.settings.generation, 1)?;
        if ca.root_key.is_some() || issuing.chain_der.is_empty() {
            tracing::warn!(state = %state.path().display(), "the state directory's CA is not an upstream intermediate; the agent gets its own from the upstream and leaves it as it is");
            return Ok(None);
        }
        if issuing.key.to_string() != first.to_string() {
            tracing::warn!(key = %issuing.key, first = %first, "the state directory's upstream intermediate has another key than [ca.upstream] key's first generation; the agent starts a new generation");
            return Ok(None);
        }
        let mut section = Section::empty(None);
        section.last = 1;
        section.generations.push(Entry {
            n: 1,
            activates: summarize(&issuing.cert_der)?.not_before,
            retired: None,
            detail: CertDetail::new(&issuing.cert_der, &issuing.chain_der),
        });
        tracing::info!(key = %first, "adopted the state directory's upstream intermediate as generation 1");
        Ok(Some(section))
    }

    fn next(&self, active: &Entry<CertDetail>) -> Next {
        x509::next(&self.settings.generation, active)
    }

    fn leaves_at(&self, entry: &Entry<CertDetail>) -> Option<OffsetDateTime> {
        x509::leaves_at(entry)
    }

    async fn prepare(
        &mut self,
        n: u64,
        _activates: OffsetDateTime,
        slots: &[Slot<Self>],
    ) -> Result<(CertDetail, CaIssuer), Error> {
        // Before any key is made: an unknown mount or role fails here.
        self.read_roots().await?;
        if let Some(role) = &self.target.role {
            keyward_vault::check_role(&self.client, &self.target.mount, role).await?;
        }
        let g = &self.settings.generation;
        let signer = x509::new_generation_key(g, n, &self.backends, &self.audit).await?;
        let issuer =
            sign_at_upstream(&self.client, &self.target, signer, &g.subject, g.ttl).await?;
        let root = issuer.chain_der().last().cloned().unwrap_or_default();
        if !self.roots(slots).contains(&root) {
            return Err(Error::Verification(format!(
                "{} signed an intermediate chaining to '{}', which is not a root the mount publishes",
                self.target,
                summarize(&root).map(|s| s.subject).unwrap_or_default()
            )));
        }
        Ok((
            CertDetail::new(issuer.certificate_der(), issuer.chain_der()),
            issuer,
        ))
    }

    async fn open(&self, entry: &Entry<CertDetail>) -> Result<CaIssuer, Error> {
        let above = entry.detail.chain_der()?;
        x509::open(&self.settings.generation, &self.backends, entry, above).await
    }

    fn publish(&self, active: usize, slots: &[Slot<Self>]) -> CaView {
        CaView::new(slots[active].open.clone(), &self.roots(slots))
    }

    fn event(&self, name: &str, slot: &Slot<Self>) -> Event {
        x509::event(name, &slot.open, &self.target.to_string())
    }

    fn refresh_every(&self) -> Option<Duration> {
        Some(ROOTS_REFRESH)
    }

    async fn refresh(&mut self) -> Result<bool, Error> {
        self.read_roots().await
    }
}
