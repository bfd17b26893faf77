//! The caller gate: the one place that turns a call on the socket into what the agent
//! knows about its caller, for every service there (X.509, JWT and any later one).
//!
//! It checks the `workload.spiffe.io: true` header (else `InvalidArgument`), attests
//! the peer the connection bound at accept (see `attest`), reading `/proc` only for
//! what the entries of the caller's uid need, and counts and audits every refusal. A
//! call counts as in progress on its connection (which keeps the connection from
//! closing as idle) only once its caller is attested, for as long as the returned
//! [`Caller`] lives: a streaming call's response stream holds it.

use std::sync::Arc;

use keyward_core::audit::{Caller as AuditCaller, Event};
use tonic::{Request, Status};

use super::attest::{self, AttestError, DigestCache, Facts, FileKey, Peer, ProcEvents};
use super::audit::Audit;
use super::config::Config;
use super::limits::{CallInProgress, ConnInfo};
use super::metrics::Metrics;
use super::snapshot::Snapshot;

/// Attests the callers of every service on the socket.
#[derive(Clone)]
pub struct CallerGate {
    audit: Audit,
    metrics: Metrics,
    digests: DigestCache,
    /// The kernel's process events, when an entry at start named a program and the
    /// kernel sends them to the agent.
    events: Option<ProcEvents>,
}

/// The attested caller of one call.
pub struct Caller {
    /// What attestation established.
    pub facts: Facts,
    /// The connection's peer, bound at accept.
    peer: Arc<Peer>,
    /// Counts the call as in progress on its connection while the caller is held.
    _call: CallInProgress,
}

impl CallerGate {
    /// The gate for an agent running `config`; warns about entries that let any user
    /// running a program have their identity.
    pub fn new(config: &Config, audit: Audit, metrics: Metrics) -> Self {
        for w in &config.workloads {
            let s = &w.selectors;
            if s.allow_any_user {
                tracing::warn!(
                    spiffe_id = %w.spiffe_id,
                    "allow_any_user = true: any local user who runs this program (or connects and then execs it) receives this identity"
                );
            }
            if let Some(path) = &s.path
                && FileKey::at(path).is_none()
            {
                tracing::warn!(spiffe_id = %w.spiffe_id, path = %path.display(), "the path selector names no file; no caller matches until it exists");
            }
        }
        // Only entries that name a program read `/proc` and keep what they read; an
        // agent without them does not take every exec on the machine.
        let names_a_program = config
            .workloads
            .iter()
            .any(|w| w.selectors.names_a_program());
        let events = match names_a_program.then(ProcEvents::open) {
            None => None,
            Some(Ok(events)) => {
                tracing::info!(
                    "a connection's remembered attestation is checked against the kernel's process events"
                );
                Some(events)
            }
            Some(Err(why)) => {
                tracing::info!(
                    "{why}; a connection's remembered attestation is checked by two stat calls per call instead"
                );
                None
            }
        };
        CallerGate {
            audit,
            metrics,
            digests: DigestCache::new(config.agent.max_hash_bytes),
            events,
        }
    }

    /// The audit log.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// The metrics handle.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Checks the security header and attests the caller of `req` for the entries of
    /// `snap`; the call counts as in progress from here on.
    pub async fn admit<T>(&self, req: &Request<T>, snap: &Snapshot) -> Result<Caller, Status> {
        let header = req
            .metadata()
            .get("workload.spiffe.io")
            .and_then(|v| v.to_str().ok());
        if header != Some("true") {
            self.metrics.denied("missing_security_header");
            return Err(Status::invalid_argument(
                "security header missing from request (workload.spiffe.io: true)",
            ));
        }
        self.admit_without_header(req, snap).await
    }

    /// Attests the caller of `req` for the entries of `snap` without the security
    /// header, for protocols that have none (Envoy's SDS, as SPIRE serves it); the
    /// call counts as in progress from here on.
    pub async fn admit_without_header<T>(
        &self,
        req: &Request<T>,
        snap: &Snapshot,
    ) -> Result<Caller, Status> {
        let Some(conn) = req.extensions().get::<ConnInfo>() else {
            self.metrics.denied("not_attested");
            return Err(Status::permission_denied(
                "the caller's credentials are unknown",
            ));
        };
        let facts = self.attest(&conn.peer, snap).await?;
        Ok(Caller {
            facts,
            peer: conn.peer.clone(),
            _call: conn.activity.start(),
        })
    }

    /// Attests `caller` again for the entries of a new snapshot (a stream does so on
    /// every change): its process must still run, and an executable it exec'd since is
    /// what its entitlement follows from now on.
    pub async fn recheck(&self, caller: &mut Caller, snap: &Snapshot) -> Result<(), Status> {
        let facts = self.attest(&caller.peer, snap).await?;
        let file = |f: &Facts| f.exe.as_ref().map(|e| e.file);
        if let (Some(old), Some(new)) = (file(&caller.facts), file(&facts))
            && old != new
        {
            tracing::info!(
                pid = facts.pid,
                "the caller now runs another executable; re-attested"
            );
        }
        caller.facts = facts;
        Ok(())
    }

    /// Checks, right before key material is sent, that the process that connected
    /// still runs (a connection whose process exited is served nothing). Needed where
    /// something waited since the caller's last attestation (a signature, a stream's
    /// next change); an attestation already checks, after its reads.
    pub fn still_there(&self, caller: &Caller) -> Result<(), Status> {
        caller
            .peer
            .check_alive()
            .map_err(|e| self.refuse(&caller.peer, &e))
    }

    /// The refusal for a caller no entry matches (counted, logged and audited).
    pub fn no_entry(&self, caller: &Caller) -> Status {
        let facts = &caller.facts;
        self.metrics.denied("no_matching_entry");
        tracing::info!(
            uid = facts.uid,
            gid = facts.gid,
            pid = facts.pid,
            "no workload entry matches the caller"
        );
        let mut who = audit_caller(facts);
        if who.exe.is_none() {
            // Named for the record only, and only if the process that connected still
            // runs after the name was read (so the name is its own).
            let name = std::fs::read_link(format!("/proc/{}/exe", facts.pid)).ok();
            if caller.peer.check_alive().is_ok() {
                who.exe = name.map(|p| p.display().to_string());
            }
        }
        self.audit
            .note(Event::denied("no workload entry matches the caller", &who));
        Status::permission_denied("no identity issued: no workload entry matches this caller")
    }

    /// Attests `peer` for the entries its uid can match in `snap`.
    async fn attest(&self, peer: &Peer, snap: &Snapshot) -> Result<Facts, Status> {
        let needs = snap.by_uid.needs(peer.uid);
        attest::attest(peer, needs, &self.digests, self.events.as_ref())
            .await
            .map_err(|e| self.refuse(peer, &e))
    }

    /// The refusal for a caller that could not be attested (counted, logged, audited).
    fn refuse(&self, peer: &Peer, e: &AttestError) -> Status {
        self.metrics.denied(match e {
            AttestError::Gone(_) => "caller_gone",
            AttestError::TooLarge(_) => "executable_too_large",
            AttestError::Mismatch(_) => "not_attested",
        });
        tracing::info!(uid = peer.uid, pid = ?peer.pid, error = %e, "caller not attested");
        let who = AuditCaller {
            uid: peer.uid,
            gid: Some(peer.gid),
            pid: peer.pid.map(i64::from),
            exe: None,
        };
        self.audit
            .note(Event::denied(&format!("caller not attested: {e}"), &who));
        Status::permission_denied(format!("caller not attested: {e}"))
    }
}

/// The audit record's view of an attested caller: the executable's name only when
/// attestation read it (never looked up again by PID).
pub fn audit_caller(facts: &Facts) -> AuditCaller {
    AuditCaller {
        uid: facts.uid,
        gid: Some(facts.gid),
        pid: Some(i64::from(facts.pid)),
        exe: facts
            .exe
            .as_ref()
            .and_then(|e| e.shown_as.as_ref())
            .map(|p| p.display().to_string()),
    }
}
