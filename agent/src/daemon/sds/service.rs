//! The `envoy.service.secret.v3.SecretDiscoveryService` calls. Every call passes the
//! caller gate the Workload API uses (attestation, `PermissionDenied` for a caller no
//! entry matches, the socket's limits); Envoy sends no `workload.spiffe.io` header, and
//! none is asked of it (SPIRE's agent asks it of Workload API calls only).

use std::sync::Arc;

use keyward_core::audit::Event;
use tokio::sync::watch;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use super::proto::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService;
use super::resources::{self, SECRET_TYPE_URL};
use super::subscription;
use crate::daemon::caller::{Caller, CallerGate, audit_caller};
use crate::daemon::config::SdsSettings;
use crate::daemon::snapshot::{Entitlement, Snapshot};
use crate::daemon::streams::Sent;

/// The SDS service behind the socket.
#[derive(Clone)]
pub struct SecretDiscovery {
    state: watch::Receiver<Arc<Snapshot>>,
    gate: CallerGate,
    settings: Arc<SdsSettings>,
}

impl SecretDiscovery {
    /// A service answering from the snapshots published on `state`, to the callers
    /// `gate` lets in, naming resources as `settings` says.
    pub fn new(
        state: watch::Receiver<Arc<Snapshot>>,
        gate: CallerGate,
        settings: SdsSettings,
    ) -> Self {
        SecretDiscovery {
            state,
            gate,
            settings: Arc::new(settings),
        }
    }

    /// The snapshot now and the attested caller of `req`, refused if no entry matches.
    async fn admit<T>(
        &self,
        req: &Request<T>,
    ) -> Result<(watch::Receiver<Arc<Snapshot>>, Arc<Snapshot>, Caller), Status> {
        let mut rx = self.state.clone();
        let snap = rx.borrow_and_update().clone();
        let caller = self.gate.admit_without_header(req, &snap).await?;
        if !snap.any_match(&caller.facts) {
            return Err(self.gate.no_entry(&caller));
        }
        Ok((rx, snap, caller))
    }
}

/// The SVIDs `caller` may be sent from `snap`: all of its entries' once issued, those
/// issued so far while some are not (they are sent when they are).
pub fn entitled(gate: &CallerGate, snap: &Snapshot, caller: &Caller) -> Result<Sent, Status> {
    match snap.entitlement(&caller.facts) {
        Entitlement::Ready(set) => Ok(set),
        Entitlement::None => Err(gate.no_entry(caller)),
        Entitlement::Pending => Ok(snap
            .entries
            .iter()
            .zip(&snap.svids)
            .filter(|(e, _)| e.selectors.matches(&caller.facts))
            .filter_map(|(e, s)| Some((e.clone(), s.clone()?)))
            .collect()),
    }
}

/// Records in the audit log that `svids` (SPIFFE ID, serial) went to `caller` over SDS.
pub fn audit_served(gate: &CallerGate, caller: &Caller, svids: &[(String, String)]) {
    if svids.is_empty() {
        return;
    }
    gate.audit().note(
        Event::new("svid_served")
            .with("protocol", "sds")
            .with(
                "spiffe_ids",
                svids.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            )
            .with(
                "serials",
                svids.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
            )
            .caller(&audit_caller(&caller.facts)),
    );
}

#[tonic::async_trait]
impl SecretDiscoveryService for SecretDiscovery {
    async fn stream_secrets(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<BoxStream<DiscoveryResponse>>, Status> {
        let (rx, snap, caller) = self.admit(&req).await?;
        Ok(Response::new(subscription::serve(
            self.gate.clone(),
            caller,
            rx,
            snap,
            self.settings.clone(),
            req.into_inner(),
        )))
    }

    async fn fetch_secrets(
        &self,
        req: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let (_, snap, caller) = self.admit(&req).await?;
        let svids = entitled(&self.gate, &snap, &caller)?;
        let names = &req.get_ref().resource_names;
        let secrets = resources::resolve(&self.settings, &snap, &svids, names)?;
        // No second liveness check: admission saw the caller's process running after
        // the request arrived, and nothing since has waited.
        audit_served(&self.gate, &caller, &secrets.svids);
        Ok(Response::new(DiscoveryResponse {
            version_info: secrets.version,
            resources: secrets.resources,
            type_url: SECRET_TYPE_URL.to_string(),
            ..Default::default()
        }))
    }

    async fn delta_secrets(
        &self,
        _req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<BoxStream<DeltaDiscoveryResponse>>, Status> {
        Err(Status::unimplemented(
            "DeltaSecrets is not served; use StreamSecrets (state of the world)",
        ))
    }
}
