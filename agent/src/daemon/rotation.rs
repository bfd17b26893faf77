//! Keeps every entry's SVID fresh: issues at start, renews after a fraction of the
//! lifetime (with jitter, so renewals spread out), retries failures with exponential
//! backoff while the current SVID keeps being served, issues from whichever
//! intermediate the generation engine made active, and publishes a new [`Snapshot`]
//! after every change.

use std::sync::Arc;
use std::time::Duration;

use keyward_core::Error;
use keyward_core::audit::Event;
use keyward_core::backoff::Backoff;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::audit::Audit;
use super::ca::{AgentCa, CaView};
use super::config::WorkloadEntry;
use super::crl::{CRL_POLL, CrlWatch};
use super::generations::until;
use super::metrics::Metrics;
use super::snapshot::{Snapshot, UidIndex};
use super::svid::{self, Svid};

/// How many SVIDs are issued at once.
const PARALLEL_ISSUANCE: usize = 16;
/// The delay before each retry after a failure: 0.5 s doubling up to a minute.
const BACKOFF: Backoff = Backoff::doubling(Duration::from_millis(500), Duration::from_secs(60));
/// Renewal times are moved earlier by up to this fraction of the renewal delay.
const JITTER: f64 = 0.1;

/// Requests to the rotation task.
#[derive(Debug)]
pub enum Command {
    /// Replace the entries and renewal fraction (a config reload).
    Reload {
        /// The new entries.
        entries: Vec<Arc<WorkloadEntry>>,
        /// The new renewal fraction.
        renew_fraction: f64,
    },
    /// Re-read the CRL file now (SIGHUP).
    CheckCrl,
}

#[derive(Debug)]
struct Slot {
    entry: Arc<WorkloadEntry>,
    svid: Option<Arc<Svid>>,
    due: Instant,
    failures: u32,
}

/// The rotation task's state.
pub struct Rotation {
    ca: AgentCa,
    view: CaView,
    slots: Vec<Slot>,
    renew_fraction: f64,
    trust_domain_id: String,
    tx: watch::Sender<Arc<Snapshot>>,
    audit: Audit,
    degraded: bool,
    crl: Option<CrlWatch>,
    metrics: Metrics,
}

impl Rotation {
    /// A rotation task for `entries`, publishing into `tx`.
    pub fn new(
        ca: AgentCa,
        entries: Vec<Arc<WorkloadEntry>>,
        renew_fraction: f64,
        trust_domain: &str,
        tx: watch::Sender<Arc<Snapshot>>,
        audit: Audit,
    ) -> Self {
        let view = ca.view();
        let now = Instant::now();
        let slots = entries
            .into_iter()
            .map(|entry| Slot {
                entry,
                svid: None,
                due: now,
                failures: 0,
            })
            .collect();
        Rotation {
            ca,
            view,
            slots,
            renew_fraction,
            trust_domain_id: format!("spiffe://{trust_domain}"),
            tx,
            audit,
            degraded: false,
            crl: None,
            metrics: Metrics::default(),
        }
    }

    /// Serves the CRL `watch` sees, re-reading it every [`CRL_POLL`].
    pub fn with_crl(mut self, watch: CrlWatch) -> Self {
        self.crl = Some(watch);
        self
    }

    /// Counts issuances in `metrics` from now on.
    pub fn set_metrics(&mut self, metrics: Metrics) {
        self.metrics = metrics;
    }

    /// Issues every SVID once (failures are retried later) and publishes the result.
    pub async fn initial(&mut self) {
        self.poll_crl();
        self.issue_due().await;
        self.publish();
    }

    /// Runs until the command channel closes (agent shutdown).
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            let next = self.next_due();
            let command = tokio::select! {
                _ = tokio::time::sleep_until(next) => None,
                () = self.ca.changed() => None,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => Some(cmd),
                    None => return,
                },
            };
            match command {
                Some(Command::Reload {
                    entries,
                    renew_fraction,
                }) => self.reload(entries, renew_fraction),
                Some(Command::CheckCrl) | None => {}
            }
            // A new intermediate took over, or the bundle changed: issue from it now.
            self.view = self.ca.view();
            self.poll_crl();
            self.issue_due().await;
            self.publish();
        }
    }

    fn next_due(&self) -> Instant {
        let far = Instant::now()
            + if self.crl.is_some() {
                CRL_POLL
            } else {
                Duration::from_secs(3600)
            };
        self.slots
            .iter()
            .map(|s| s.due)
            .min()
            .unwrap_or(far)
            .min(far)
    }

    fn poll_crl(&mut self) {
        if let Some(w) = &mut self.crl {
            w.poll();
        }
    }

    fn reload(&mut self, entries: Vec<Arc<WorkloadEntry>>, renew_fraction: f64) {
        let mut old: Vec<Option<Slot>> = std::mem::take(&mut self.slots)
            .into_iter()
            .map(Some)
            .collect();
        let now = Instant::now();
        for entry in entries {
            let kept = old
                .iter_mut()
                .find(|s| s.as_ref().is_some_and(|s| *s.entry == *entry))
                .and_then(Option::take);
            self.slots.push(kept.unwrap_or(Slot {
                entry,
                svid: None,
                due: now,
                failures: 0,
            }));
        }
        self.renew_fraction = renew_fraction;
        tracing::info!(entries = self.slots.len(), "configuration reloaded");
    }

    /// Issues (concurrently) every SVID whose time has come.
    async fn issue_due(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].due <= now)
            .collect();
        let mut set: JoinSet<(usize, Result<Arc<Svid>, Error>)> = JoinSet::new();
        let mut queue = due.into_iter();
        let mut last_record = None;
        loop {
            while set.len() < PARALLEL_ISSUANCE {
                let Some(i) = queue.next() else { break };
                let (view, entry) = (self.view.clone(), self.slots[i].entry.clone());
                set.spawn(async move { (i, svid::issue(&view, &entry).await) });
            }
            let Some(done) = set.join_next().await else {
                break;
            };
            match done {
                Ok((i, result)) => {
                    if let Some(record) = self.settle(i, result) {
                        last_record = self.audit.record_later(record).or(last_record);
                    }
                }
                Err(e) => tracing::error!(error = %e, "SVID issuance task failed"),
            }
        }
        // On disk before the snapshot that serves these SVIDs is published, written by
        // the audit thread as they come, in group commits (waiting for each in turn,
        // an fsync each, made 1,000 SVIDs take 0.7 s).
        self.audit.wait_for(last_record);
        self.update_health();
    }

    /// Records the outcome of slot `i`'s issuance; the audit record of a new SVID is
    /// returned for the caller to write.
    fn settle(&mut self, i: usize, result: Result<Arc<Svid>, Error>) -> Option<Event> {
        let fraction = self.renew_fraction;
        let signing_key = self.view.issuer.signer().uri().clone();
        self.metrics.issued(signing_key.scheme(), result.is_ok());
        let slot = &mut self.slots[i];
        match result {
            Ok(svid) => {
                let lifetime = until(svid.not_after);
                let jitter = rand::rng().random_range(0.0..JITTER);
                slot.due = Instant::now() + lifetime.mul_f64(fraction * (1.0 - jitter));
                slot.failures = 0;
                tracing::info!(spiffe_id = %slot.entry.spiffe_id, serial = %svid.serial_hex, not_after = %svid.not_after, "issued workload SVID");
                let event = if slot.svid.is_some() {
                    "svid_renewed"
                } else {
                    "svid_issued"
                };
                let record = Event::issued(event, &svid.leaf, &signing_key)
                    .with("spiffe_id", &slot.entry.spiffe_id);
                slot.svid = Some(svid);
                Some(record)
            }
            Err(e) => {
                slot.failures += 1;
                let mut wait = BACKOFF.delay(slot.failures);
                let left = slot
                    .svid
                    .as_ref()
                    .map_or(Duration::ZERO, |s| until(s.not_after));
                if !left.is_zero() {
                    // Never wait past the current SVID's expiry to try again; once it
                    // has expired, keep doubling (no retry every `BACKOFF.first`).
                    wait = wait.min(left.max(BACKOFF.first));
                }
                slot.due = Instant::now() + wait;
                tracing::warn!(
                    spiffe_id = %slot.entry.spiffe_id,
                    attempt = slot.failures,
                    retry_in = ?wait,
                    serving_current = slot.svid.is_some(),
                    error = %keyward_core::chain_line(&e),
                    "cannot issue workload SVID"
                );
                None
            }
        }
    }

    fn update_health(&mut self) {
        let failing = self.slots.iter().filter(|s| s.failures > 0).count();
        let degraded = failing > 0;
        if degraded && !self.degraded {
            tracing::warn!(
                failing_svids = failing,
                "agent health: degraded (serving current credentials, retrying)"
            );
        } else if !degraded && self.degraded {
            tracing::info!("agent health: ok (all credentials renewed)");
        }
        self.degraded = degraded;
    }

    /// Publishes the current state for the server.
    fn publish(&self) {
        let entries: Vec<_> = self.slots.iter().map(|s| s.entry.clone()).collect();
        let snap = Snapshot {
            by_uid: UidIndex::new(&entries),
            entries,
            svids: self.slots.iter().map(|s| s.svid.clone()).collect(),
            bundle: self.view.bundle.clone(),
            trust_domain_id: self.trust_domain_id.clone(),
            crl: self.crl.as_ref().map(CrlWatch::current).unwrap_or_default(),
        };
        self.tx.send_if_modified(|cur| {
            let changed = cur.bundle != snap.bundle
                || cur.crl != snap.crl
                || cur.entries.len() != snap.entries.len()
                || cur
                    .entries
                    .iter()
                    .zip(&snap.entries)
                    .any(|(a, b)| !Arc::ptr_eq(a, b))
                || cur
                    .svids
                    .iter()
                    .zip(&snap.svids)
                    .any(|(a, b)| match (a, b) {
                        (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
                        (None, None) => false,
                        _ => true,
                    });
            if changed {
                *cur = Arc::new(snap);
            }
            changed
        });
    }
}

#[cfg(test)]
#[path = "rotation_tests.rs"]
mod tests;
