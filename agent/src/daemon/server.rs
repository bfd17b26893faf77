//! The Workload API service: `FetchX509SVID` and `FetchX509Bundles` server streams,
//! and the JWT-SVID calls (answered in `jwt::service`). Every call passes the caller
//! gate first (`caller`); a caller no entry matches gets `PermissionDenied` and nothing
//! else. The first message goes out at once and a full new one follows every change
//! of the caller's SVIDs or of the bundle (`streams`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::caller::{Caller, CallerGate};
use super::jwt::{self, KeySet};
use super::snapshot::{Entitlement, Snapshot};
use super::streams::{self, Sent};
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
    gate: CallerGate,
    jwt: Option<watch::Receiver<Arc<KeySet>>>,
}

impl WorkloadApi {
    /// A service answering from the snapshots published on `state`, to the callers
    /// `gate` lets in.
    pub fn new(state: watch::Receiver<Arc<Snapshot>>, gate: CallerGate) -> Self {
        WorkloadApi {
            state,
            gate,
            jwt: None,
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

    /// The caller gate.
    pub fn gate(&self) -> &CallerGate {
        &self.gate
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
        let mut caller = self.gate.admit(&req, &snap).await?;
        let (snap, set) = self.wait_ready(&mut rx, snap, &mut caller).await?;
        let first = snap.x509_response(&set);
        // No second liveness check here: the caller's last attestation (at admission,
        // or on the last snapshot waited for) saw its process running, after the
        // request arrived, and nothing since has waited.
        self.gate.audit().served(&caller.facts, &set);
        let crl = snap.crl.clone();
        let source = streams::X509 { sent: set, crl };
        Ok(Response::new(streams::follow(
            self.gate.clone(),
            caller,
            rx,
            snap,
            first,
            source,
        )))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<BoxStream<X509BundlesResponse>>, Status> {
        let mut rx = self.state.clone();
        let snap = rx.borrow_and_update().clone();
        let caller = self.gate.admit(&req, &snap).await?;
        if !snap.any_match(&caller.facts) {
            return Err(self.gate.no_entry(&caller));
        }
        let first = snap.bundles_response();
        let source = streams::Bundles {
            bundle: snap.bundle.clone(),
            crl: snap.crl.clone(),
        };
        Ok(Response::new(streams::follow(
            self.gate.clone(),
            caller,
            rx,
            snap,
            first,
            source,
        )))
    }
}

impl WorkloadApi {
    /// Waits (a bounded time) until every entry matching the caller has an SVID,
    /// attesting the caller again on every new snapshot.
    async fn wait_ready(
        &self,
        rx: &mut watch::Receiver<Arc<Snapshot>>,
        mut snap: Arc<Snapshot>,
        caller: &mut Caller,
    ) -> Result<(Arc<Snapshot>, Sent), Status> {
        let deadline = tokio::time::Instant::now() + FIRST_SVID_WAIT;
        loop {
            match snap.entitlement(&caller.facts) {
                Entitlement::Ready(set) => return Ok((snap, set)),
                Entitlement::None => return Err(self.gate.no_entry(caller)),
                Entitlement::Pending => {}
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Status::unavailable("the agent is shutting down")),
                Err(_) => {
                    return Err(Status::unavailable(
                        "the caller's SVID is not issued yet; try again",
                    ));
                }
            }
            snap = rx.borrow_and_update().clone();
            self.gate.recheck(caller, &snap).await?;
        }
    }
}
