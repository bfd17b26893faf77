//! `[ca.intermediate]`: intermediates the agent issues under its root and rotates.
//!
//! Each generation `n` has its key at the configured URI template with `{n}` replaced
//! (a fresh key per generation; without `{n}` one key is re-certified). The next
//! generation takes over `rotate_before` ahead of the current one's expiry; SVIDs
//! issued under the old one keep verifying (same root) until they are renewed.
//! Generations are recorded in STATE/agent/intermediates.json (certificates and
//! generation numbers only: key URIs are recomputed from the template, so no PIN or
//! token from the URI is ever written).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keyward_core::audit::Event;
use keyward_core::check::{ders_to_pem, pem_to_ders, summarize};
use keyward_core::fsutil::{self, Replace};
use keyward_core::issuance::CaIssuer;
use keyward_core::store::StateDir;
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
            active: None,
            audit,
        };
        let now = OffsetDateTime::now_utc();
        for rec in me.read()? {
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
        me.pick_active();
        if me.active.is_none() || me.rotation_due(now) {
            me.rotate().await?;
        }
        Ok(me)
    }

    /// The view SVIDs are issued from.
    pub fn view(&self) -> CaView {
        self.active
            .clone()
            .expect("an intermediate is active after load")
    }

    /// When the active intermediate should be replaced.
    pub fn next_rotation(&self) -> OffsetDateTime {
        let rotate_before =
            time::Duration::try_from(self.settings.rotate_before).unwrap_or(time::Duration::ZERO);
        self.generations
            .last()
            .map_or(OffsetDateTime::now_utc(), |g| g.not_after - rotate_before)
    }

    fn rotation_due(&self, now: OffsetDateTime) -> bool {
        self.next_rotation() <= now
    }

    /// Issues the next generation under the root, records it and makes it active.
    pub async fn rotate(&mut self) -> Result<(), Error> {
        let n = self.generations.last().map_or(1, |g| g.n + 1);
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
                Err(Error::AlreadyExists(_)) => backend.open(&uri).await?,
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
        let now = OffsetDateTime::now_utc();
        self.generations.retain(|g| g.not_after > now);
        self.write()?;
        self.pick_active();
        self.audit.record(
            Event::issued("intermediate_rotated", &cert.der, self.root.signer().uri())
                .key("key", &uri)
                .with("generation", n),
        );
        tracing::info!(generation = n, serial = %cert.serial_hex, not_after = %cert.not_after, "activated a new intermediate CA");
        Ok(())
    }

    fn pick_active(&mut self) {
        self.active = self
            .generations
            .last()
            .map(|g| CaView::new(g.issuer.clone(), &self.roots));
    }

    fn key_uri(&self, n: u64) -> Result<KeyUri, Error> {
        KeyUri::parse(&self.settings.key_template.replace("{n}", &n.to_string()))
    }

    async fn open_generation(&self, n: u64, der: Vec<u8>) -> Result<CaIssuer, Error> {
        let signer = self.backends.open(&self.key_uri(n)?).await?;
        CaIssuer::new(der, vec![self.root.certificate_der().to_vec()], signer)
    }

    fn path(&self) -> PathBuf {
        self.state.path().join("agent/intermediates.json")
    }

    fn read(&self) -> Result<Vec<GenRecord>, Error> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice::<Record>(&data)
                .map(|r| r.generations)
                .map_err(|e| Error::State(format!("{} is corrupt: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
        }
    }

    fn write(&self) -> Result<(), Error> {
        let rec = Record {
            version: 1,
            generations: self
                .generations
                .iter()
                .map(|g| GenRecord {
                    n: g.n,
                    cert: ders_to_pem(std::slice::from_ref(&g.cert_der)),
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&rec)
            .map_err(|e| Error::State(format!("cannot encode intermediates: {e}")))?;
        let path = self.path();
        let _lock = self.state.lock()?;
        fsutil::create_private_dir(path.parent().unwrap_or(self.state.path()))?;
        fsutil::write_atomic(&path, &json, fsutil::PUBLIC_FILE_MODE, Replace::Allow)
    }
}

/// How long from now until `at` (zero when past).
pub fn until(at: OffsetDateTime) -> Duration {
    Duration::try_from(at - OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO)
}
