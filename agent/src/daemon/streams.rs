//! Response streams that follow the agent's state for one caller: the first message at
//! once, then a new one whenever what the caller would receive changes. One mechanism
//! for every streaming call (X.509 SVIDs and bundles here, the JWKS in `jwt::service`):
//! on each new snapshot the caller is attested again through the gate, and before any
//! message goes out the process that connected must still be running.
//!
//! Each stream is driven by tonic polling it, so a stream the client drops costs
//! nothing more (no task per stream); it holds the caller (and so the call's place on
//! its connection) until then.

use std::future::Future;
use std::sync::Arc;

use futures_util::stream;
use prost::bytes::Bytes;
use tokio::sync::watch;
use tonic::Status;
use tonic::codegen::BoxStream;

use super::caller::{Caller, CallerGate};
use super::config::WorkloadEntry;
use super::metrics::StreamGuard;
use super::snapshot::{Entitlement, Snapshot, same_svids};
use super::svid::Svid;
use super::workload_api::{X509BundlesResponse, X509svidResponse};

/// What a followed stream sends, asked again on every change of the agent's snapshot
/// (once the caller is re-attested) or of the source's own input.
pub trait Source: Send + 'static {
    /// The stream's message type.
    type Msg: Send + 'static;

    /// Resolves when an input other than the snapshot changes, `None` once it ends;
    /// by default there is none.
    fn changed(&mut self) -> impl Future<Output = Option<()>> + Send {
        std::future::pending()
    }

    /// The next message for `caller` from `snap`; `None` when it would repeat the last
    /// one sent; an error ends the stream.
    fn next(
        &mut self,
        gate: &CallerGate,
        snap: &Snapshot,
        caller: &Caller,
    ) -> Result<Option<Self::Msg>, Status>;
}

/// One caller's subscription.
struct Follow<S> {
    gate: CallerGate,
    caller: Caller,
    snaps: watch::Receiver<Arc<Snapshot>>,
    snap: Arc<Snapshot>,
    source: S,
    /// Counts this stream as open until it is dropped.
    _open: StreamGuard,
}

impl<S: Source> Follow<S> {
    /// The next message; `None` when the agent stops.
    async fn next(&mut self) -> Option<Result<S::Msg, Status>> {
        loop {
            tokio::select! {
                r = self.snaps.changed() => {
                    r.ok()?;
                    self.snap = self.snaps.borrow_and_update().clone();
                    if let Err(s) = self.gate.recheck(&mut self.caller, &self.snap).await {
                        return Some(Err(s));
                    }
                }
                r = self.source.changed() => r?,
            }
            match self.source.next(&self.gate, &self.snap, &self.caller) {
                Ok(None) => {}
                Ok(Some(m)) => return Some(self.gate.still_there(&self.caller).map(|()| m)),
                Err(s) => return Some(Err(s)),
            }
        }
    }
}

/// A stream of `first`, then of what `source` makes of every later change, for the
/// attested `caller` who was sent `first` from `snap`.
pub fn follow<S: Source>(
    gate: CallerGate,
    caller: Caller,
    snaps: watch::Receiver<Arc<Snapshot>>,
    snap: Arc<Snapshot>,
    first: S::Msg,
    source: S,
) -> BoxStream<S::Msg> {
    let _open = gate.metrics().stream_opened();
    let follow = Follow {
        gate,
        caller,
        snaps,
        snap,
        source,
        _open,
    };
    Box::pin(stream::unfold(
        (Some(first), Some(follow)),
        |(first, follow)| async move {
            let mut f = follow?;
            if let Some(m) = first {
                return Some((Ok(m), (None, Some(f))));
            }
            match f.next().await? {
                Ok(m) => Some((Ok(m), (None, Some(f)))),
                Err(s) => Some((Err(s), (None, None))),
            }
        },
    ))
}

/// The SVIDs a caller was last sent.
pub type Sent = Vec<(Arc<WorkloadEntry>, Arc<Svid>)>;

/// FetchX509SVID: every change of the caller's SVIDs or of the CRLs.
pub struct X509 {
    /// The SVIDs last sent.
    pub sent: Sent,
    /// The CRLs last sent.
    pub crl: Vec<Bytes>,
}

impl Source for X509 {
    type Msg = X509svidResponse;

    fn next(
        &mut self,
        gate: &CallerGate,
        snap: &Snapshot,
        caller: &Caller,
    ) -> Result<Option<X509svidResponse>, Status> {
        let set = match snap.entitlement(&caller.facts) {
            Entitlement::Ready(set) => set,
            Entitlement::Pending => return Ok(None),
            Entitlement::None => return Err(gate.no_entry(caller)),
        };
        if same_svids(&set, &self.sent) && snap.crl == self.crl {
            return Ok(None);
        }
        let msg = snap.x509_response(&set);
        self.sent = set;
        self.crl.clone_from(&snap.crl);
        Ok(Some(msg))
    }
}

/// FetchX509Bundles: every change of the bundle or of the CRLs.
pub struct Bundles {
    /// The bundle last sent.
    pub bundle: Bytes,
    /// The CRLs last sent.
    pub crl: Vec<Bytes>,
}

impl Source for Bundles {
    type Msg = X509BundlesResponse;

    fn next(
        &mut self,
        gate: &CallerGate,
        snap: &Snapshot,
        caller: &Caller,
    ) -> Result<Option<X509BundlesResponse>, Status> {
        if !snap.any_match(&caller.facts) {
            return Err(gate.no_entry(caller));
        }
        if snap.bundle == self.bundle && snap.crl == self.crl {
            return Ok(None);
        }
        self.bundle = snap.bundle.clone();
        self.crl.clone_from(&snap.crl);
        Ok(Some(snap.bundles_response()))
    }
}
