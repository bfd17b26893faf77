//! The response streams of `FetchX509SVID` and `FetchX509Bundles`: the first message
//! at once, then a full new message whenever the caller's SVIDs (or the bundle)
//! change. Each stream is driven by tonic polling it, so a stream the client drops
//! costs nothing more (no task per stream).

use std::sync::Arc;

use futures_util::stream;
use prost::bytes::Bytes;
use tokio::sync::watch;
use tonic::Status;
use tonic::codegen::BoxStream;

use super::attest::{self, DigestCache, Facts};
use super::config::WorkloadEntry;
use super::metrics::StreamGuard;
use super::server::WorkloadApi;
use super::snapshot::{Entitlement, Snapshot, same_svids};
use super::svid::Svid;
use super::workload_api::{X509BundlesResponse, X509svidResponse};

/// The SVIDs a caller was last sent.
type Set = Vec<(Arc<WorkloadEntry>, Arc<Svid>)>;

/// The CRL a caller was last sent.
type Crl = Option<Bytes>;

/// One caller's subscription to the agent's snapshots.
struct Follow {
    api: WorkloadApi,
    rx: watch::Receiver<Arc<Snapshot>>,
    facts: Facts,
    /// Counts this stream as open until it is dropped.
    _open: StreamGuard,
}

impl Follow {
    /// A stream following `rx` for the caller `facts`, counted as open until dropped.
    fn open(api: WorkloadApi, rx: watch::Receiver<Arc<Snapshot>>, facts: Facts) -> Self {
        let _open = api.metrics().stream_opened();
        Follow {
            api,
            rx,
            facts,
            _open,
        }
    }
}

enum Step<M> {
    First(M, Follow),
    Next(Follow),
    Done,
}

/// Re-attests when the entries now need facts the caller was not inspected for.
pub async fn refresh(
    facts: &mut Facts,
    snap: &Snapshot,
    digests: &DigestCache,
) -> Result<(), Status> {
    let missing =
        (snap.needs.path && facts.path.is_none()) || (snap.needs.sha256 && facts.sha256.is_none());
    if missing {
        let new = attest::attest(facts.uid, facts.gid, Some(facts.pid), snap.needs, digests)
            .await
            .map_err(|e| Status::permission_denied(format!("caller not attested: {e}")))?;
        if facts.start_time.is_some() && new.start_time != facts.start_time {
            return Err(Status::permission_denied("the calling process is gone"));
        }
        *facts = new;
    }
    Ok(())
}

/// Attests the caller again when any entry looks at its executable: a process that
/// exec'd another program keeps its pid and start time but not its path or digest, so
/// what it receives from now on follows the new program's entitlement (often none).
async fn reattest(facts: &mut Facts, snap: &Snapshot, digests: &DigestCache) -> Result<(), Status> {
    if !(snap.needs.path || snap.needs.sha256) {
        return refresh(facts, snap, digests).await;
    }
    let new = attest::attest(facts.uid, facts.gid, Some(facts.pid), snap.needs, digests)
        .await
        .map_err(|e| Status::permission_denied(format!("caller not attested: {e}")))?;
    if facts.start_time.is_some() && new.start_time != facts.start_time {
        return Err(Status::permission_denied("the calling process is gone"));
    }
    if (&new.path, &new.sha256) != (&facts.path, &facts.sha256) {
        tracing::info!(
            pid = facts.pid,
            "the caller now runs another executable; re-attested"
        );
    }
    *facts = new;
    Ok(())
}

impl Follow {
    /// The next snapshot, with the caller attested again; `None` when the agent stops.
    async fn next_snapshot(&mut self) -> Option<Result<Arc<Snapshot>, Status>> {
        self.rx.changed().await.ok()?;
        let snap = self.rx.borrow_and_update().clone();
        Some(
            reattest(&mut self.facts, &snap, self.api.digests())
                .await
                .map(|()| snap),
        )
    }

    /// The next X509SVIDResponse that differs from `last`.
    async fn next_x509(
        &mut self,
        last: &mut Set,
        last_crl: &mut Crl,
    ) -> Option<Result<X509svidResponse, Status>> {
        loop {
            let snap = match self.next_snapshot().await? {
                Ok(s) => s,
                Err(e) => return Some(Err(e)),
            };
            let set = match snap.entitlement(&self.facts) {
                Entitlement::Ready(set) => set,
                Entitlement::Pending => continue,
                Entitlement::None => return Some(Err(self.api.denied(&self.facts))),
            };
            if same_svids(&set, last) && snap.crl == *last_crl {
                continue;
            }
            if !self.facts.still_same_process() {
                return Some(Err(Status::permission_denied(
                    "the calling process is gone",
                )));
            }
            let msg = snap.x509_response(&set);
            *last = set;
            last_crl.clone_from(&snap.crl);
            return Some(Ok(msg));
        }
    }

    /// The next X509BundlesResponse with a bundle (or CRL) other than `last`.
    async fn next_bundles(
        &mut self,
        last: &mut Bytes,
        last_crl: &mut Crl,
    ) -> Option<Result<X509BundlesResponse, Status>> {
        loop {
            let snap = match self.next_snapshot().await? {
                Ok(s) => s,
                Err(e) => return Some(Err(e)),
            };
            if !snap.any_match(&self.facts) {
                return Some(Err(self.api.denied(&self.facts)));
            }
            if snap.bundle == *last && snap.crl == *last_crl {
                continue;
            }
            *last = snap.bundle.clone();
            last_crl.clone_from(&snap.crl);
            return Some(Ok(snap.bundles_response()));
        }
    }
}

/// The FetchX509SVID stream: `first`, then every change of the caller's SVIDs or the CRL.
pub fn x509(
    api: WorkloadApi,
    rx: watch::Receiver<Arc<Snapshot>>,
    facts: Facts,
    first: X509svidResponse,
    sent: Set,
) -> BoxStream<X509svidResponse> {
    let crl = first.crl.first().cloned();
    let start = (
        Step::First(first, Follow::open(api, rx, facts)),
        (sent, crl),
    );
    Box::pin(stream::unfold(start, |(step, mut last)| async move {
        match step {
            Step::First(m, f) => Some((Ok(m), (Step::Next(f), last))),
            Step::Next(mut f) => match f.next_x509(&mut last.0, &mut last.1).await? {
                Ok(m) => Some((Ok(m), (Step::Next(f), last))),
                Err(s) => Some((Err(s), (Step::Done, last))),
            },
            Step::Done => None,
        }
    }))
}

/// The FetchX509Bundles stream: `first`, then every change of the bundle or the CRL.
pub fn bundles(
    api: WorkloadApi,
    rx: watch::Receiver<Arc<Snapshot>>,
    facts: Facts,
    first: X509BundlesResponse,
    sent: Bytes,
) -> BoxStream<X509BundlesResponse> {
    let crl = first.crl.first().cloned();
    let start = (
        Step::First(first, Follow::open(api, rx, facts)),
        (sent, crl),
    );
    Box::pin(stream::unfold(start, |(step, mut last)| async move {
        match step {
            Step::First(m, f) => Some((Ok(m), (Step::Next(f), last))),
            Step::Next(mut f) => match f.next_bundles(&mut last.0, &mut last.1).await? {
                Ok(m) => Some((Ok(m), (Step::Next(f), last))),
                Err(s) => Some((Err(s), (Step::Done, last))),
            },
            Step::Done => None,
        }
    }))
}
