//! What the server answers from: the entries, their current SVIDs and the bundle,
//! published as one immutable snapshot (a `watch` channel) on every change.

use std::collections::HashMap;
use std::sync::Arc;

use prost::bytes::Bytes;

use super::attest::Facts;
use super::attest::Needs;
use super::config::WorkloadEntry;
use super::svid::Svid;
use super::workload_api::{X509BundlesResponse, X509svidResponse};

/// One published state of the agent.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The configured entries.
    pub entries: Vec<Arc<WorkloadEntry>>,
    /// Which entries can match a caller, by uid (see [`UidIndex::new`]).
    pub by_uid: UidIndex,
    /// Each entry's current SVID (`None` until its first issuance succeeds).
    pub svids: Vec<Option<Arc<Svid>>>,
    /// The trust bundle, DER certificates concatenated.
    pub bundle: Bytes,
    /// The trust domain's SPIFFE ID, `spiffe://example.org` (the bundles map key).
    pub trust_domain_id: String,
    /// The CRLs (DER) to serve: the issuing CA's, when one has been signed, and the
    /// upstream authority's, when the agent has one.
    pub crl: Vec<Bytes>,
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
    /// The entries that match the caller, in configuration order.
    pub fn matching<'a>(
        &'a self,
        facts: &'a Facts,
    ) -> impl Iterator<Item = &'a Arc<WorkloadEntry>> {
        self.by_uid
            .candidates(facts.uid)
            .map(|i| &self.entries[i])
            .filter(|e| e.selectors.matches(facts))
    }

    /// Whether any entry matches the caller.
    pub fn any_match(&self, facts: &Facts) -> bool {
        self.matching(facts).next().is_some()
    }

    /// The caller's entries and SVIDs.
    pub fn entitlement(&self, facts: &Facts) -> Entitlement {
        let mut out = Vec::new();
        let mut pending = false;
        for i in self.by_uid.candidates(facts.uid) {
            let entry = &self.entries[i];
            if entry.selectors.matches(facts) {
                match &self.svids[i] {
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
            crl: self.crl.clone(),
            federated_bundles: Default::default(),
        }
    }

    /// The X509BundlesResponse: this trust domain's bundle.
    pub fn bundles_response(&self) -> X509BundlesResponse {
        X509BundlesResponse {
            crl: self.crl.clone(),
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

/// The entries a caller's uid can match, and what attestation must read for them, so
/// a call looks at its own entries rather than at every entry of a large
/// configuration, and reads `/proc` only when one of those entries needs it.
#[derive(Debug, Default)]
pub struct UidIndex {
    /// Entries with a `uid` selector, by that uid, in configuration order.
    by_uid: HashMap<u32, Vec<usize>>,
    /// Entries without a `uid` selector, in configuration order.
    any_uid: Vec<usize>,
    /// What the candidates of each uid in `by_uid` need.
    needs_by_uid: HashMap<u32, Needs>,
    /// What the entries without a `uid` selector need.
    needs_any_uid: Needs,
}

impl UidIndex {
    /// The index of `entries` (positions in that slice).
    pub fn new(entries: &[Arc<WorkloadEntry>]) -> UidIndex {
        let mut index = UidIndex::default();
        for (i, e) in entries.iter().enumerate() {
            match e.selectors.uid {
                Some(uid) => index.by_uid.entry(uid).or_default().push(i),
                None => {
                    index.any_uid.push(i);
                    e.selectors.add_needs(&mut index.needs_any_uid);
                }
            }
        }
        for (uid, own) in &index.by_uid {
            let mut needs = index.needs_any_uid;
            for &i in own {
                entries[i].selectors.add_needs(&mut needs);
            }
            index.needs_by_uid.insert(*uid, needs);
        }
        index
    }

    /// What attestation must read about a caller with `uid` for the entries it can match.
    pub fn needs(&self, uid: u32) -> Needs {
        self.needs_by_uid
            .get(&uid)
            .copied()
            .unwrap_or(self.needs_any_uid)
    }

    /// Positions of the entries a caller with `uid` can match, in configuration order.
    fn candidates(&self, uid: u32) -> impl Iterator<Item = usize> + '_ {
        let own = self.by_uid.get(&uid).map_or(&[][..], Vec::as_slice);
        let (mut a, mut b) = (
            own.iter().copied().peekable(),
            self.any_uid.iter().copied().peekable(),
        );
        std::iter::from_fn(move || match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x < y => a.next(),
            (Some(_), Some(_)) | (None, _) => b.next(),
            (Some(_), None) => a.next(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::selectors::Selectors;
    use keyward_core::Algorithm;

    fn entry(uid: Option<u32>) -> Arc<WorkloadEntry> {
        Arc::new(WorkloadEntry {
            spiffe_id: format!("spiffe://example.org/{uid:?}"),
            dns: Vec::new(),
            ips: Vec::new(),
            ttl: std::time::Duration::from_secs(3600),
            algorithm: Algorithm::EcdsaP256Sha256,
            hint: String::new(),
            selectors: Selectors {
                uid,
                ..Default::default()
            },
            keys: Vec::new(),
        })
    }

    #[test]
    fn candidates_are_the_uids_own_entries_and_the_uid_free_ones_in_order() {
        let entries: Vec<_> = [Some(5), None, Some(7), Some(5), None, Some(5)]
            .into_iter()
            .map(entry)
            .collect();
        let index = UidIndex::new(&entries);
        assert_eq!(index.candidates(5).collect::<Vec<_>>(), [0, 1, 3, 4, 5]);
        assert_eq!(index.candidates(7).collect::<Vec<_>>(), [1, 2, 4]);
        assert_eq!(index.candidates(9).collect::<Vec<_>>(), [1, 4]);
        assert_eq!(UidIndex::default().candidates(5).count(), 0);
    }

    #[test]
    fn needs_are_those_of_the_uids_own_candidates() {
        let mut hashed = entry(Some(5));
        Arc::make_mut(&mut hashed).selectors.sha256 = Some("00".repeat(32));
        let mut by_path = entry(None);
        Arc::make_mut(&mut by_path).selectors.path = Some("/usr/bin/api".into());
        let index = UidIndex::new(&[hashed, entry(Some(7))]);
        let sha = Needs {
            path: false,
            sha256: true,
        };
        assert_eq!(index.needs(5), sha);
        assert_eq!(
            index.needs(7),
            Needs::default(),
            "another uid's sha256 is not read"
        );
        assert_eq!(index.needs(9), Needs::default());
        let index = UidIndex::new(&[entry(Some(5)), by_path]);
        let path = Needs {
            path: true,
            sha256: false,
        };
        assert_eq!((index.needs(5), index.needs(9)), (path, path));
    }
}
