//! `[ca.intermediate]`: intermediates the agent issues under its own root and rotates
//! (schedule and keys in [`super::x509`]). During an overlap the bundle carries the
//! root and every live intermediate, so a peer that learned the bundle before the
//! next intermediate took over still accepts what it issues.
//!
//! Agents before the journal kept these generations in STATE/agent/intermediates.json
//! (`{version, last, generations: [{n, cert}]}`); it is read once and migrated.

use std::sync::Arc;

use async_trait::async_trait;
use keyward_core::Error;
use keyward_core::audit::Event;
use keyward_core::check::{pem_to_ders, summarize};
use keyward_core::issuance::CaIssuer;
use keyward_core::store::{AgentRecord, StateDir};
use serde::Deserialize;
use time::OffsetDateTime;

use super::x509::{self, CertDetail};
use super::{Entry, Kind, Next, Section, Slot};
use crate::backends::Backends;
use crate::daemon::audit::Audit;
use crate::daemon::ca::CaView;
use crate::daemon::config::IntermediateSettings;

/// The agent's own intermediates under its root.
pub struct LocalIntermediate {
    settings: IntermediateSettings,
    backends: Arc<Backends>,
    root: CaIssuer,
    roots: Vec<Vec<u8>>,
    audit: Audit,
}

impl LocalIntermediate {
    /// Intermediates issued by `root` (whose key the agent holds); `roots` is the
    /// trust bundle.
    pub fn new(
        settings: IntermediateSettings,
        backends: Arc<Backends>,
        root: CaIssuer,
        roots: Vec<Vec<u8>>,
        audit: Audit,
    ) -> Self {
        LocalIntermediate {
            settings,
            backends,
            root,
            roots,
            audit,
        }
    }
}

/// STATE/agent/intermediates.json as agents before the journal wrote it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyRecord {
    #[serde(rename = "version")]
    _version: u32,
    #[serde(default)]
    last: u64,
    generations: Vec<LegacyGeneration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyGeneration {
    n: u64,
    cert: String,
}

#[async_trait]
impl Kind for LocalIntermediate {
    type Detail = CertDetail;
    type Open = CaIssuer;
    type Published = CaView;

    const NAME: &'static str = "local_intermediate";
    const WHAT: &'static str = "intermediate CA";
    const GATES_READINESS: bool = true;
    const LEGACY: Option<AgentRecord> = Some(AgentRecord::Intermediates);

    /// The old record's generations, each activated where the schedule put it: the
    /// oldest from its notBefore, each later one half-way through the lead before the
    /// previous one's expiry.
    fn migrate(&self, state: &StateDir) -> Result<Option<Section<CertDetail>>, Error> {
        let Some(old) = state.read_agent_record::<LegacyRecord>(AgentRecord::Intermediates)? else {
            return Ok(None);
        };
        let mut old_gens = old.generations;
        old_gens.sort_by_key(|g| g.n);
        let mut section = Section::empty(None);
        section.last = old_gens.iter().map(|g| g.n).fold(old.last, u64::max);
        let mut previous: Option<Entry<CertDetail>> = None;
        for g in old_gens {
            let Some(der) = pem_to_ders(g.cert.as_bytes())?.into_iter().next() else {
                continue;
            };
            let activates = match &previous {
                Some(p) => x509::next(&self.settings, p).activates,
                None => summarize(&der)?.not_before,
            };
            let entry = Entry {
                n: g.n,
                activates,
                retired: None,
                detail: CertDetail::new(&der, &[]),
            };
            section.generations.push(entry.clone());
            previous = Some(entry);
        }
        tracing::info!(
            generations = section.generations.len(),
            "migrated the intermediates from STATE/agent/intermediates.json into STATE/agent/generations.json"
        );
        Ok(Some(section))
    }

    fn next(&self, active: &Entry<CertDetail>) -> Next {
        x509::next(&self.settings, active)
    }

    fn leaves_at(&self, entry: &Entry<CertDetail>) -> Option<OffsetDateTime> {
        x509::leaves_at(entry)
    }

    async fn prepare(
        &mut self,
        n: u64,
        _activates: OffsetDateTime,
        _slots: &[Slot<Self>],
    ) -> Result<(CertDetail, CaIssuer), Error> {
        let signer =
            x509::new_generation_key(&self.settings, n, &self.backends, &self.audit).await?;
        let cert = self
            .root
            .issue_intermediate(
                signer.public_key_spki_der(),
                &self.settings.subject,
                self.settings.ttl,
            )
            .await?;
        let issuer = CaIssuer::new(
            cert.der.clone(),
            vec![self.root.certificate_der().to_vec()],
            signer,
        )?;
        Ok((CertDetail::new(&cert.der, &[]), issuer))
    }

    async fn open(&self, entry: &Entry<CertDetail>) -> Result<CaIssuer, Error> {
        let above = vec![self.root.certificate_der().to_vec()];
        x509::open(&self.settings, &self.backends, entry, above).await
    }

    fn publish(&self, active: usize, slots: &[Slot<Self>]) -> CaView {
        let mut view = CaView::new(slots[active].open.clone(), &self.roots);
        if slots.len() > 1 {
            let mut bundle = self.roots.concat();
            for s in slots {
                bundle.extend_from_slice(s.open.certificate_der());
            }
            view.bundle = bundle.into();
        }
        view
    }

    fn event(&self, name: &str, slot: &Slot<Self>) -> Event {
        x509::event(name, &slot.open, &self.root.signer().uri().to_string())
    }
}
