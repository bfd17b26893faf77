//! `[ca.intermediate]`: intermediates the agent issues under its root and rotates.
//!
//! Each generation `n` has its key at the configured URI template with `{n}` replaced
//! (a fresh key per generation; without `{n}` one key is re-certified). A generation's
//! life has three marks, all derived from the previous generation's notAfter, so a
//! restart recomputes them from the record alone:
//! - prepared `rotate_before` ahead of the previous one's expiry: issued, recorded, and
//!   published in the bundle beside the previous one (the overlap starts);
//! - activated half-way through that lead: new SVIDs are issued under it, and SVIDs
//!   still chained to the previous one (capped at its notAfter) renew under it;
//! - the previous generation leaves the bundle when it expires (the overlap ends).
//!
//! Generations are recorded in STATE/agent/intermediates.json (certificates and
//! generation numbers only: key URIs are recomputed from the template, so no PIN or
//! token from the URI is ever written).

use std::sync::Arc;
use std::time::Duration;

use keyward_core::audit::Event;
use keyward_core::check::{ders_to_pem, pem_to_ders, summarize};
use keyward_core::issuance::CaIssuer;
use keyward_core::store::{AgentRecord, StateDir};
use keyward_core::{Error, KeyUri};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::audit::Audit;
use super::ca::CaView;
use super::config::IntermediateSettings;
use crate::backends::Backends;

/// The agent's intermediates and the active one.
pub struct Intermediates {
    settings: IntermediateSettings,
    state: StateDir,
    backends: Arc<Backends>,
    root: CaIssuer,
    roots: Vec<Vec<u8>>,
    generations: Vec<Generation>,
    /// The highest generation number issued so far.
    last: u64,
    active: Option<CaView>,
    audit: Audit,
}

impl std::fmt::Debug for Intermediates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intermediates")
            .field("key_template", &self.settings.key_template)
            .field(
                "generations",
                &self.generations.iter().map(|g| g.n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// What [`Intermediates::tick`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Generation `n` was issued and joined the bundle.
    Prepared(u64),
    /// Generation `n` took over issuing.
    Activated(u64),
    /// Expired generations left the bundle.
    Retired,
}

#[derive(Debug, Clone)]
struct Generation {
    n: u64,
    cert_der: Vec<u8>,
    not_after: OffsetDateTime,
    issuer: CaIssuer,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    version: u32,
    /// The highest generation number ever issued, kept when every generation has
    /// expired, so numbers (and the keys they name) are never reused.
    #[serde(default)]
    last: u64,
    generations: Vec<GenRecord>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenRecord {
    n: u64,
    cert: String,
}

impl Intermediates {
    /// Loads the recorded generations that are still usable and makes sure one is
    /// active (issuing a new one if needed).
    pub async fn load(
        settings: IntermediateSettings,
        state: StateDir,
        root: CaIssuer,
        roots: Vec<Vec<u8>>,
        backends: Arc<Backends>,
        audit: Audit,
    ) -> Result<Self, Error> {
        let mut me = Intermediates {
            settings,
            state,
            backends,
            root,
            roots,
            generations: Vec::new(),
            last: 0,
            active: None,
            audit,
        };
        let now = OffsetDateTime::now_utc();
        let record = me.read()?;
        me.last = record
            .generations
            .iter()
            .map(|g| g.n)
            .fold(record.last, u64::max);
        for rec in record.generations {
            let Some(der) = pem_to_ders(rec.cert.as_bytes())?.into_iter().next() else {
                continue;
            };
            let not_after = summarize(&der)?.not_after;
            if not_after <= now {
                continue;
            }
            match me.open_generation(rec.n, der.clone()).await {
                Ok(issuer) => me.generations.push(Generation {
                    n: rec.n,
                    cert_der: der,
                    not_after,
                    issuer,
                }),
                Err(e) => {
                    tracing::warn!(generation = rec.n, error = %keyward_core::chain_line(&e), "recorded intermediate cannot be used (its key does not open); it is not served, and a new one is issued if no other is active")
                }
            }
        }
        me.generations.sort_by_key(|g| g.n);
        me.tick(now).await?;
        Ok(me)
    }

    /// The view SVIDs are issued from.
    pub fn view(&self) -> CaView {
        self.active
            .clone()
            .expect("an intermediate is active after load")
    }

    /// The next moment something changes: a generation to prepare, one to activate, or
    /// one leaving the bundle.
    pub fn next_event(&self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc();
        let mut marks: Vec<OffsetDateTime> = self.prepare_at().into_iter().collect();
        for (k, g) in self.generations.iter().enumerate() {
            marks.push(self.activation_at(k));
            if k + 1 < self.generations.len() {
                marks.push(g.not_after);
            }
        }
        marks.into_iter().filter(|m| *m > now).min().unwrap_or(now)
    }

    /// Does whatever is due at `now`: drops expired generations, prepares the next one,
    /// activates a prepared one. Returns what happened, for the log and the audit.
    pub async fn tick(&mut self, now: OffsetDateTime) -> Result<Vec<Change>, Error> {
        let mut changes = Vec::new();
        let before = self.generations.len();
        self.generations.retain(|g| g.not_after > now);
        if self.generations.len() != before {
            changes.push(Change::Retired);
            self.write()?;
        }
        if self.prepare_at().is_none_or(|at| at <= now) {
            let n = self.prepare().await?;
            changes.push(Change::Prepared(n));
        }
        let was = self
            .active
            .as_ref()
            .map(|v| v.issuer.certificate_der().to_vec());
        self.pick_active(now);
        let is = self
            .active
            .as_ref()
            .map(|v| v.issuer.certificate_der().to_vec());
        if was != is {
            changes.push(Change::Activated(self.active_generation(now)));
        }
        Ok(changes)
    }

    /// When the next generation is due to be prepared (`None`: no generation yet).
    fn prepare_at(&self) -> Option<OffsetDateTime> {
        self.generations.last().map(|g| g.not_after - self.lead())
    }

    /// When generation `k` (an index into the live generations) takes over issuing.
    fn activation_at(&self, k: usize) -> OffsetDateTime {
        match k.checked_sub(1).and_then(|p| self.generations.get(p)) {
            Some(prev) => prev.not_after - self.lead() / 2,
            None => OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn lead(&self) -> time::Duration {
        time::Duration::try_from(self.settings.rotate_before).unwrap_or(time::Duration::ZERO)
    }

    fn active_generation(&self, now: OffsetDateTime) -> u64 {
        (0..self.generations.len())
            .rev()
            .find(|&k| self.activation_at(k) <= now)
            .map_or(0, |k| self.generations[k].n)
    }

    /// Issues the next generation under the root and records it; it joins the bundle at
    /// once and takes over issuing at its activation time.
    async fn prepare(&mut self) -> Result<u64, Error> {
        let n = self.last + 1;
        let uri = self.key_uri(n)?;
        let backend = self.backends.for_uri(&uri).await?;
        let signer = if self.settings.key_template.contains("{n}") {
            match backend.generate(&uri, self.settings.algorithm).await {
                Ok(s) => {
                    let fingerprint = keyward_core::store::sha256_hex(s.public_key_spki_der());
                    self.audit.record(Event::key_generated(
                        s.uri(),
                        self.settings.algorithm,
                        &fingerprint,
                    ));
                    s
                }
                Err(Error::AlreadyExists(_)) => {
                    tracing::warn!(generation = n, key = %uri, "the key for this generation exists without a certificate (an earlier rotation was interrupted); certifying it now");
                    backend.open(&uri).await?
                }
                Err(e) => return Err(e),
            }
        } else {
            backend.open(&uri).await?
        };
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
        self.generations.push(Generation {
            n,
            cert_der: cert.der.clone(),
            not_after: cert.not_after,
            issuer,
        });
        self.last = n;
        self.write()?;
        self.audit.record(
            Event::issued("intermediate_prepared", &cert.der, self.root.signer().uri())
                .key("key", &uri)
                .with("generation", n),
        );
        tracing::info!(generation = n, serial = %cert.serial_hex, not_after = %cert.not_after, activates = %self.activation_at(self.generations.len() - 1), "prepared a new intermediate CA; the bundle carries it from now");
        Ok(n)
    }

    /// Makes the generation whose activation time has come the issuing one; the bundle
    /// is the roots plus, during an overlap, every live intermediate.
    fn pick_active(&mut self, now: OffsetDateTime) {
        let Some(k) = (0..self.generations.len())
            .rev()
            .find(|&k| self.activation_at(k) <= now)
        else {
            self.active = None;
            return;
        };
        let mut view = CaView::new(self.generations[k].issuer.clone(), &self.roots);
        if self.generations.len() > 1 {
            let mut bundle = self.roots.concat();
            for g in &self.generations {
                bundle.extend_from_slice(&g.cert_der);
            }
            view.bundle = bundle.into();
        }
        self.active = Some(view);
    }

    fn key_uri(&self, n: u64) -> Result<KeyUri, Error> {
        KeyUri::parse(&self.settings.key_template.replace("{n}", &n.to_string()))
    }

    async fn open_generation(&self, n: u64, der: Vec<u8>) -> Result<CaIssuer, Error> {
        let signer = self.backends.open(&self.key_uri(n)?).await?;
        CaIssuer::new(der, vec![self.root.certificate_der().to_vec()], signer)
    }

    fn read(&self) -> Result<Record, Error> {
        Ok(self
            .state
            .read_agent_record(AgentRecord::Intermediates)?
            .unwrap_or(Record {
                version: 1,
                last: 0,
                generations: Vec::new(),
            }))
    }

    fn write(&self) -> Result<(), Error> {
        let rec = Record {
            version: 1,
            last: self.last,
            generations: self
                .generations
                .iter()
                .map(|g| GenRecord {
                    n: g.n,
                    cert: ders_to_pem(std::slice::from_ref(&g.cert_der)),
                })
                .collect(),
        };
        self.state
            .write_agent_record(AgentRecord::Intermediates, &rec)
    }
}

/// How long from now until `at` (zero when past).
pub fn until(at: OffsetDateTime) -> Duration {
    Duration::try_from(at - OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO)
}
