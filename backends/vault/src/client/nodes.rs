//! The nodes of a cluster as the client sees them: their addresses in the configured
//! order, the node that answered last (where the next request starts: round robin from
//! the last one that worked), which node, if any, a standby's redirect names, and the
//! order of one round of attempts over the nodes.

use std::sync::atomic::{AtomicUsize, Ordering};

use keyward_core::Error;
use reqwest::Url;

use crate::addresses;

/// The configured nodes (one for a single server) and the one that answered last.
pub(crate) struct Nodes {
    addrs: Vec<String>,
    urls: Vec<Url>,
    last_answered: AtomicUsize,
}

impl Nodes {
    /// The nodes at `list`, checked again (the settings' fields are public).
    pub(crate) fn new(list: &[&str]) -> Result<Self, Error> {
        let addrs = addresses::normalize_list(list)?;
        let urls = addrs
            .iter()
            .map(|a| Url::parse(a))
            .collect::<Result<_, _>>()
            .map_err(|e| Error::InvalidInput(format!("Vault address: {e}")))?;
        Ok(Nodes {
            addrs,
            urls,
            last_answered: AtomicUsize::new(0),
        })
    }

    /// How many nodes there are.
    pub(crate) fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Every node's address, in the configured order.
    pub(crate) fn all(&self) -> &[String] {
        &self.addrs
    }

    /// The address of node `i`.
    pub(crate) fn addr(&self, i: usize) -> &str {
        &self.addrs[i]
    }

    /// The node a request starts at: the one that answered last (the first configured
    /// one until any has).
    pub(crate) fn first_to_try(&self) -> usize {
        self.last_answered.load(Ordering::Relaxed)
    }

    /// Remembers that node `i` answered, so the next request starts there.
    pub(crate) fn answered(&self, i: usize) {
        self.last_answered.store(i, Ordering::Relaxed);
    }

    /// The node after `i`, wrapping around.
    pub(crate) fn after(&self, i: usize) -> usize {
        (i + 1) % self.len()
    }

    /// The configured node a redirect `location` (`<api_addr>/v1/<path>`) points at;
    /// `None` for any other host, which is never sent the token.
    pub(crate) fn redirect_target(&self, location: &str) -> Option<usize> {
        let to = Url::parse(location).ok()?;
        self.urls.iter().position(|base| {
            let api = format!("{}/v1/", base.path().trim_end_matches('/'));
            base.scheme() == to.scheme()
                && base.host_str() == to.host_str()
                && base.port_or_known_default() == to.port_or_known_default()
                && to.path().starts_with(&api)
        })
    }
}

/// One round of attempts of a request over the nodes: each node at most once, a
/// redirect's target first, then in the configured order.
pub(crate) struct Round {
    tried: Vec<bool>,
    sealed: usize,
}

impl Round {
    /// A round over `nodes` with none tried yet.
    pub(crate) fn new(nodes: &Nodes) -> Self {
        Round {
            tried: vec![false; nodes.len()],
            sealed: 0,
        }
    }

    /// Notes that `node` failed (`sealed`: by answering that it is sealed) and returns
    /// the node to try next in this round: `redirect` when it names a node not tried
    /// yet, else the first untried node after `node`; `None` once every node was tried.
    pub(crate) fn next(
        &mut self,
        node: usize,
        sealed: bool,
        redirect: Option<usize>,
    ) -> Option<usize> {
        self.tried[node] = true;
        self.sealed += usize::from(sealed);
        let n = self.tried.len();
        redirect
            .filter(|&r| !self.tried[r])
            .or_else(|| (1..n).map(|k| (node + k) % n).find(|&i| !self.tried[i]))
    }

    /// Whether every node answered that it is sealed.
    pub(crate) fn all_sealed(&self) -> bool {
        self.sealed == self.tried.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_lead_only_to_configured_nodes() {
        let nodes = Nodes::new(&[
            "http://127.0.0.1:8200",
            "https://Vault-2.example",
            "https://lb.example/vault",
        ])
        .unwrap();
        let target = |l: &str| nodes.redirect_target(l);
        assert_eq!(
            target("http://127.0.0.1:8200/v1/pki/root/sign-intermediate"),
            Some(0)
        );
        assert_eq!(
            target("https://vault-2.example:443/v1/transit/sign/k"),
            Some(1)
        );
        assert_eq!(
            target("https://lb.example/vault/v1/auth/approle/login"),
            Some(2)
        );
        for elsewhere in [
            "http://127.0.0.1:8201/v1/pki/root/sign-intermediate", // another port
            "https://127.0.0.1:8200/v1/pki/crl",                   // another scheme
            "http://evil.example/v1/pki/crl",                      // another host
            "https://vault-2.example/other/v1/x",                  // outside the API
            "https://lb.example/v1/x",                             // outside the prefix
            "/v1/pki/crl",                                         // relative
            "",
        ] {
            assert_eq!(target(elsewhere), None, "{elsewhere}");
        }
    }

    #[test]
    fn a_round_tries_each_node_once_redirect_target_first() {
        let nodes = Nodes::new(&["http://a", "http://b", "http://c"]).unwrap();
        // Node 1 redirects to node 0 (a dead leader): 0 next, then 2, not 1 again.
        let mut round = Round::new(&nodes);
        assert_eq!(round.next(1, false, Some(0)), Some(0));
        assert_eq!(round.next(0, false, None), Some(2));
        assert_eq!(round.next(2, false, Some(0)), None, "0 was tried");
        assert!(!round.all_sealed());
        // Sealed all round.
        let mut round = Round::new(&nodes);
        assert_eq!(round.next(2, true, None), Some(0));
        assert_eq!(round.next(0, true, None), Some(1));
        assert_eq!(round.next(1, true, None), None);
        assert!(round.all_sealed());
        // A single server: every attempt ends a round.
        let one = Nodes::new(&["http://a"]).unwrap();
        let mut round = Round::new(&one);
        assert_eq!(round.next(0, true, Some(0)), None);
        assert!(round.all_sealed());
    }

    #[test]
    fn requests_start_where_the_last_answer_came_from() {
        let nodes = Nodes::new(&["http://a", "http://b", "http://c"]).unwrap();
        assert_eq!(nodes.first_to_try(), 0);
        nodes.answered(2);
        assert_eq!(nodes.first_to_try(), 2);
        assert_eq!(nodes.after(2), 0);
        assert_eq!(nodes.after(0), 1);
    }
}
