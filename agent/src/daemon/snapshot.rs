//! What the server answers from: the entries, their current SVIDs and the bundle,
//! published as one immutable snapshot (a `watch` channel) on every change.

use std::sync::Arc;

use prost::bytes::Bytes;

use super::attest::Facts;
use super::config::WorkloadEntry;
use super::selectors::Needs;
use super::svid::Svid;
use super::workload_api::{X509BundlesResponse, X509svidResponse};

/// One published state of the agent.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The configured entries.
    pub entries: Vec<Arc<WorkloadEntry>>,
    /// Each entry's current SVID (`None` until its first issuance succeeds).
    pub svids: Vec<Option<Arc<Svid>>>,
    /// What attestation must establish for these entries.
    pub needs: Needs,
    /// The trust bundle, DER certificates concatenated.
    pub bundle: Bytes,
    /// The trust domain's SPIFFE ID, `spiffe://example.org` (the bundles map key).
    pub trust_domain_id: String,
    /// The issuing CA's CRL (DER), when one has been signed.
    pub crl: Option<Bytes>,
}

/// What a caller is entitled to in one snapshot.
pub enum Entitlement {
    /// No entry matches the caller.
    None,
    /// Entries match but some of their SVIDs are not issued yet.
    Pending,
    /// The matching entries and their SVIDs, in configuration order.
    Ready(Vec<(Arc<WorkloadEntry>, Arc<Svid>)>),
}

impl Snapshot {
    /// Whether any entry matches the caller.
    pub fn any_match(&self, facts: &Facts) -> bool {
        self.entries.iter().any(|e| e.selectors.matches(facts))
    }

    /// The caller's entries and SVIDs.
    pub fn entitlement(&self, facts: &Facts) -> Entitlement {
        let mut out = Vec::new();
        let mut pending = false;
        for (entry, svid) in self.entries.iter().zip(&self.svids) {
            if entry.selectors.matches(facts) {
                match svid {
                    Some(s) => out.push((entry.clone(), s.clone())),
                    None => pending = true,
                }
            }
        }
        match (out.is_empty(), pending) {
            (_, true) => Entitlement::Pending,
            (true, false) => Entitlement::None,
            (false, false) => Entitlement::Ready(out),
        }
    }

    /// The X509SVIDResponse for a set of entries.
    pub fn x509_response(&self, set: &[(Arc<WorkloadEntry>, Arc<Svid>)]) -> X509svidResponse {
        X509svidResponse {
            svids: set
                .iter()
                .map(|(e, s)| s.message(e, &self.bundle))
                .collect(),
            crl: self.crl.iter().cloned().collect(),
            federated_bundles: Default::default(),
        }
    }

    /// The X509BundlesResponse: this trust domain's bundle.
    pub fn bundles_response(&self) -> X509BundlesResponse {
        X509BundlesResponse {
            crl: self.crl.iter().cloned().collect(),
            bundles: [(self.trust_domain_id.clone(), self.bundle.clone())]
                .into_iter()
                .collect(),
        }
    }
}

/// Whether two entitlements hold the same SVIDs (same issued objects, same order).
pub fn same_svids(
    a: &[(Arc<WorkloadEntry>, Arc<Svid>)],
    b: &[(Arc<WorkloadEntry>, Arc<Svid>)],
) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ea, sa), (eb, sb))| Arc::ptr_eq(sa, sb) && ea == eb)
}
