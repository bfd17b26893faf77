//! [`Authorizer`]: which peer SPIFFE IDs a verifier accepts once the chain checks out.

use std::collections::HashSet;
use std::sync::Arc;

use spiffe::SpiffeId;

/// Which peers to accept, by SPIFFE ID. Every peer must already be in the current
/// trust domain (the verifier checks that first); the authorizer narrows it further.
#[derive(Clone)]
pub enum Authorizer {
    /// Any SPIFFE ID in the trust domain.
    AnyInTrustDomain,
    /// Exactly this ID.
    Exact(SpiffeId),
    /// Any ID of this set.
    OneOf(HashSet<SpiffeId>),
    /// Whatever the predicate accepts.
    Predicate(Arc<dyn Fn(&SpiffeId) -> bool + Send + Sync>),
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authorizer::AnyInTrustDomain => f.write_str("AnyInTrustDomain"),
            Authorizer::Exact(id) => write!(f, "Exact({id})"),
            Authorizer::OneOf(ids) => write!(f, "OneOf({} IDs)", ids.len()),
            Authorizer::Predicate(_) => f.write_str("Predicate(..)"),
        }
    }
}

impl Authorizer {
    /// Accepts any ID in the trust domain.
    pub fn any() -> Self {
        Authorizer::AnyInTrustDomain
    }

    /// Accepts exactly `id`.
    pub fn exact(id: SpiffeId) -> Self {
        Authorizer::Exact(id)
    }

    /// Accepts any of `ids`.
    pub fn one_of(ids: impl IntoIterator<Item = SpiffeId>) -> Self {
        Authorizer::OneOf(ids.into_iter().collect())
    }

    /// Accepts the IDs `f` returns true for.
    pub fn predicate(f: impl Fn(&SpiffeId) -> bool + Send + Sync + 'static) -> Self {
        Authorizer::Predicate(Arc::new(f))
    }

    /// Whether `id` (already known to be in the trust domain) is accepted.
    pub fn allows(&self, id: &SpiffeId) -> bool {
        match self {
            Authorizer::AnyInTrustDomain => true,
            Authorizer::Exact(want) => want == id,
            Authorizer::OneOf(set) => set.contains(id),
            Authorizer::Predicate(f) => f(id),
        }
    }
}
