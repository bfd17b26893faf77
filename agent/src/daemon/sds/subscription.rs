//! One `StreamSecrets` stream: the xDS state-of-the-world protocol for one Envoy.
//!
//! Envoy's first request names the secrets it wants; each response carries all of
//! them, a `version_info` naming their content and a fresh `nonce`. Envoy answers every
//! response with a request quoting that nonce: an ACK (no `error_detail`), or a NACK
//! whose `error_detail` says why it rejected the secrets. A NACK is logged and not
//! answered, so a secret Envoy cannot use is not sent again and again; the next change
//! of its content is. A request quoting an older nonce is stale (a response crossed it)
//! and ignored. A request naming other secrets is answered at once. Whenever the agent
//! publishes a new snapshot the caller is attested again, and a response is pushed if
//! the version of what it asked for changed (a rotated SVID, a new bundle, a name that
//! now exists).
//!
//! Like the Workload API's streams, the stream is driven by tonic polling it: no task
//! per stream, and a stream Envoy drops costs nothing more.

use std::sync::Arc;

use futures_util::stream;
use tokio::sync::watch;
use tonic::codegen::BoxStream;
use tonic::{Status, Streaming};

use super::proto::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use super::resources::{self, SECRET_TYPE_URL};
use super::service::{audit_served, entitled};
use crate::daemon::caller::{Caller, CallerGate};
use crate::daemon::config::SdsSettings;
use crate::daemon::metrics::StreamGuard;
use crate::daemon::snapshot::Snapshot;

/// One Envoy's subscription.
struct Subscription {
    gate: CallerGate,
    caller: Caller,
    snaps: watch::Receiver<Arc<Snapshot>>,
    snap: Arc<Snapshot>,
    settings: Arc<SdsSettings>,
    requests: Streaming<DiscoveryRequest>,
    /// The names Envoy subscribed to; `None` until its first request.
    names: Option<Vec<String>>,
    /// The version and nonce of the last response sent.
    last: Option<(String, String)>,
    /// Responses sent so far (the nonce of the next one is this plus one).
    sent: u64,
    /// Whether a response with an SVID was sent (the first one is audited).
    audited: bool,
    /// Counts this stream as open until it is dropped.
    _open: StreamGuard,
}

/// The responses to `requests` from the attested `caller`, who was admitted with `snap`.
pub fn serve(
    gate: CallerGate,
    caller: Caller,
    snaps: watch::Receiver<Arc<Snapshot>>,
    snap: Arc<Snapshot>,
    settings: Arc<SdsSettings>,
    requests: Streaming<DiscoveryRequest>,
) -> BoxStream<DiscoveryResponse> {
    let _open = gate.metrics().stream_opened();
    let subscription = Subscription {
        gate,
        caller,
        snaps,
        snap,
        settings,
        requests,
        names: None,
        last: None,
        sent: 0,
        audited: false,
        _open,
    };
    Box::pin(stream::unfold(Some(subscription), |s| async move {
        let mut s = s?;
        match s.next().await? {
            Ok(m) => Some((Ok(m), Some(s))),
            Err(status) => Some((Err(status), None)),
        }
    }))
}

impl Subscription {
    /// The next response; `None` when Envoy or the agent ends the stream.
    async fn next(&mut self) -> Option<Result<DiscoveryResponse, Status>> {
        loop {
            let always = tokio::select! {
                r = self.requests.message() => match r {
                    Ok(Some(req)) => match self.on_request(req) {
                        Ok(true) => true,
                        Ok(false) => continue,
                        Err(status) => return Some(Err(status)),
                    },
                    Ok(None) => return None,
                    // A request that breaks the protocol, or misses its deadline.
                    Err(status) => return Some(Err(status)),
                },
                r = self.snaps.changed() => {
                    r.ok()?;
                    self.snap = self.snaps.borrow_and_update().clone();
                    if let Err(status) = self.gate.recheck(&mut self.caller, &self.snap).await {
                        return Some(Err(status));
                    }
                    if self.names.is_none() {
                        continue;
                    }
                    false
                }
            };
            match self.response(always) {
                Ok(Some(m)) => return Some(Ok(m)),
                Ok(None) => {}
                Err(status) => return Some(Err(status)),
            }
        }
    }

    /// Takes in one request; true when it must be answered (the first request, or
    /// other names), false for an ACK, a NACK or a stale request.
    fn on_request(&mut self, req: DiscoveryRequest) -> Result<bool, Status> {
        if !req.type_url.is_empty() && req.type_url != SECRET_TYPE_URL {
            return Err(Status::invalid_argument(format!(
                "this stream serves {SECRET_TYPE_URL}, not {}",
                req.type_url
            )));
        }
        let facts = &self.caller.facts;
        if let Some((_, nonce)) = &self.last
            && req.response_nonce != *nonce
        {
            tracing::debug!(uid = facts.uid, nonce = %req.response_nonce, "stale SDS request ignored");
            return Ok(false);
        }
        let other_names = self
            .names
            .as_ref()
            .is_none_or(|names| !same_names(names, &req.resource_names));
        if let Some(error) = &req.error_detail {
            let rejected = self.last.as_ref().map_or("", |(v, _)| v.as_str());
            tracing::warn!(
                uid = facts.uid,
                pid = facts.pid,
                version = rejected,
                error = %error.message,
                "Envoy rejected the secrets it was sent (NACK); the next change is sent"
            );
        }
        if other_names {
            self.names = Some(req.resource_names);
        }
        Ok(other_names)
    }

    /// The response for the names subscribed to, if `always` or if its version differs
    /// from the last one sent.
    fn response(&mut self, always: bool) -> Result<Option<DiscoveryResponse>, Status> {
        let svids = entitled(&self.gate, &self.snap, &self.caller)?;
        let names = self.names.as_deref().unwrap_or_default();
        let secrets = resources::resolve(&self.settings, &self.snap, &svids, names)?;
        if !always
            && self
                .last
                .as_ref()
                .is_some_and(|(v, _)| *v == secrets.version)
        {
            return Ok(None);
        }
        self.gate.still_there(&self.caller)?;
        if !self.audited && !secrets.svids.is_empty() {
            audit_served(&self.gate, &self.caller, &secrets.svids);
            self.audited = true;
        }
        self.sent += 1;
        let nonce = self.sent.to_string();
        self.last = Some((secrets.version.clone(), nonce.clone()));
        Ok(Some(DiscoveryResponse {
            version_info: secrets.version,
            resources: secrets.resources,
            type_url: SECRET_TYPE_URL.to_string(),
            nonce,
            ..Default::default()
        }))
    }
}

/// Whether two requests name the same secrets (order and repeats aside).
fn same_names(a: &[String], b: &[String]) -> bool {
    a.iter().all(|n| b.contains(n)) && b.iter().all(|n| a.contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_as_sets() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(same_names(&s(&["a", "b"]), &s(&["b", "a", "a"])));
        assert!(!same_names(&s(&["a"]), &s(&["a", "b"])));
        assert!(same_names(&s(&[]), &s(&[])));
    }
}
