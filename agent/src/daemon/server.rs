//! The Workload API service: `FetchX509SVID` and `FetchX509Bundles` server streams,
//! and the JWT-SVID calls (answered in `jwt::service`).
//!
//! Every call must carry `workload.spiffe.io: true` (else `InvalidArgument`); the caller
//! is attested from the connection's SO_PEERCRED and /proc; a caller no entry matches
//! gets `PermissionDenied` and nothing else. The first message goes out at once and a
//! full new one follows every change of the caller's SVIDs or of the bundle.

use std::sync::Arc;
use std::time::Duration;

use keyward_core::audit::{Caller, Event};
use tokio::sync::watch;
use tonic::codegen::BoxStream;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use super::attest::{self, DigestCache, Facts};
use super::audit::Audit;
use super::jwt::{self, KeySet};
use super::metrics::Metrics;
use super::snapshot::{Entitlement, Snapshot};
use super::streams::{self, refresh};
use super::workload_api::spiffe_workload_api_server::SpiffeWorkloadApi;
use super::workload_api::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svidRequest,
    X509svidResponse,
};

/// How long a call waits for a matching entry's first SVID before `Unavailable`.
const FIRST_SVID_WAIT: Duration = Duration::from_secs(15);

/// The service behind the socket.
#[derive(Clone)]
pub struct WorkloadApi {
    state: watch::Receiver<Arc<Snapshot>>,
    digests: DigestCache,
    audit: Audit,
    jwt: Option<watch::Receiver<Arc<KeySet>>>,
    metrics: Metrics,
}

impl WorkloadApi {
    /// A service answering from the snapshots published on `state`.
    pub fn new(state: watch::Receiver<Arc<Snapshot>>, audit: Audit) -> Self {
        WorkloadApi {
            state,
            digests: DigestCache::default(),
            audit,
            jwt: None,
            metrics: Metrics::default(),
        }
    }

    /// The same service signing JWT-SVIDs with the keys published on `keys`.
    pub fn with_jwt(mut self, keys: watch::Receiver<Arc<KeySet>>) -> Self {
        self.jwt = Some(keys);
        self
    }

    /// The JWT signing keys (`Unavailable` when the service has none).
    pub fn jwt_keys(&self) -> Result<watch::Receiver<Arc<KeySet>>, Status> {
        self.jwt
            .clone()
            .ok_or_else(|| Status::unavailable("JWT-SVIDs are not served by this agent"))
    }

    /// The agent's published snapshots.
    pub fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.state.clone()
    }

    /// The audit log.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// The same service, counting refusals and open streams in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The metrics handle (streams hold an open-stream guard from it).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The executable digest cache shared by every call.
    pub fn digests(&self) -> &DigestCache {
        &self.digests
    }

    /// Checks the security header and attests the caller.
    pub async fn caller<T>(&self, req: &Request<T>, snap: &Snapshot) -> Result<Facts, Status> {
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
        let cred = req
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|i| i.peer_cred)
            .ok_or_else(|| Status::permission_denied("the caller's credentials are unknown"))?;
        attest::attest(
            cred.uid(),
            cred.gid(),
            cred.pid(),
            snap.needs,
            &self.digests,
        )
        .await
        .map_err(|e| {
            self.metrics.denied("not_attested");
            let caller = Caller::peer(
                cred.uid(),
                cred.gid(),
                cred.pid().map_or(-1, i64::from),
                None,
            );
            self.audit
                .note(Event::denied(&format!("caller not attested: {e}"), &caller));
            Status::permission_denied(format!("caller not attested: {e}"))
        })
    }

    /// The refusal for a caller no entry matches (logged and audited).
    pub fn denied(&self, facts: &Facts) -> Status {
        self.metrics.denied("no_matching_entry");
        tracing::info!(
            uid = facts.uid,
            gid = facts.gid,
            pid = facts.pid,
            "no workload entry matches the caller"
        );
        self.audit.note(Event::denied(
            "no workload entry matches the caller",
            &caller_of(facts),
        ));
        Status::permission_denied("no identity issued: no workload entry matches this caller")
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    async fn fetch_jwtsvid(
        &self,
        req: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        jwt::service::fetch_jwt_svid(self, req).await
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<BoxStream<JwtBundlesResponse>>, Status> {
        jwt::service::fetch_jwt_bundles(self, req).await
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        jwt::service::validate_jwt_svid(self, req).await
    }

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<BoxStream<X509svidResponse>>, Status> {
        let mut rx = self.state.clone();
        let snap = rx.borrow_and_update().clone();
        let mut facts = self.caller(&req, &snap).await?;
        let (snap, set) = wait_ready(&mut rx, snap, &mut facts, &self.digests)
            .await
            .map_err(|e| match e {
                Wait::Denied => self.denied(&facts),
                Wait::Status(s) => s,
            })?;
        let first = snap.x509_response(&set);
        if !facts.still_same_process() {
            return Err(Status::permission_denied("the calling process is gone"));
        }
        self.audit.note(
            Event::new("svid_served")
                .with(
                    "spiffe_ids",
                    set.iter()
                        .map(|(e, _)| e.spiffe_id.as_str())
                        .collect::<Vec<_>>(),
                )
                .with(
                    "serials",
                    set.iter()
                        .map(|(_, s)| s.serial_hex.as_str())
                        .collect::<Vec<_>>(),
                )
                .caller(&caller_of(&facts)),
        );
        Ok(Response::new(streams::x509(
            self.clone(),
            rx,
            facts,
            first,
            set,
        )))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<BoxStream<X509BundlesResponse>>, Status> {
        let mut rx = self.state.clone();
        let snap = rx.borrow_and_update().clone();
        let facts = self.caller(&req, &snap).await?;
        if !snap.any_match(&facts) {
            return Err(self.denied(&facts));
        }
        let first = snap.bundles_response();
        Ok(Response::new(streams::bundles(
            self.clone(),
            rx,
            facts,
            first,
            snap.bundle.clone(),
        )))
    }
}

/// The audit record's view of an attested caller.
pub(crate) fn caller_of(facts: &Facts) -> Caller {
    Caller::peer(
        facts.uid,
        facts.gid,
        i64::from(facts.pid),
        facts.path.as_deref(),
    )
}

enum Wait {
    Denied,
    Status(Status),
}

type Ready = (
    Arc<Snapshot>,
    Vec<(Arc<super::config::WorkloadEntry>, Arc<super::svid::Svid>)>,
);

/// Waits (a bounded time) until every entry matching the caller has an SVID.
async fn wait_ready(
    rx: &mut watch::Receiver<Arc<Snapshot>>,
    mut snap: Arc<Snapshot>,
    facts: &mut Facts,
    digests: &DigestCache,
) -> Result<Ready, Wait> {
    let deadline = tokio::time::Instant::now() + FIRST_SVID_WAIT;
    loop {
        match snap.entitlement(facts) {
            Entitlement::Ready(set) => return Ok((snap, set)),
            Entitlement::None => return Err(Wait::Denied),
            Entitlement::Pending => {}
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(Wait::Status(Status::unavailable(
                    "the agent is shutting down",
                )));
            }
            Err(_) => {
                return Err(Wait::Status(Status::unavailable(
                    "the caller's SVID is not issued yet; try again",
                )));
            }
        }
        snap = rx.borrow_and_update().clone();
        refresh(facts, &snap, digests).await.map_err(Wait::Status)?;
    }
}
