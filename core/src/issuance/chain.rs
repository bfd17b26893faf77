//! [`CaChain`]: what goes with a certificate a CA issued (the CA certificates sent after
//! it, and the trust anchors), assembled one way for the CLI's files and the agent's
//! SVIDs.

use super::CaIssuer;
use crate::check::ders_to_pem;

/// The certificates that go with a leaf issued by one CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaChain {
    /// The CA certificates sent after the leaf, nearest first: the issuing CA and those
    /// above it, without the root (empty when the root issued the leaf).
    pub intermediates: Vec<Vec<u8>>,
    /// The trust anchor the chain ends at.
    pub roots: Vec<Vec<u8>>,
}

impl CaChain {
    /// The chain of the CA certificate `issuer_der` with `above`: the certificates above
    /// it, issuer first, up to and including the root (empty when it is a root).
    pub fn of(issuer_der: &[u8], above: &[Vec<u8>]) -> CaChain {
        match above.split_last() {
            None => CaChain {
                intermediates: Vec::new(),
                roots: vec![issuer_der.to_vec()],
            },
            Some((root, between)) => CaChain {
                intermediates: std::iter::once(issuer_der.to_vec())
                    .chain(between.iter().cloned())
                    .collect(),
                roots: vec![root.clone()],
            },
        }
    }

    /// `chain.pem` for `leaf_der`: the leaf, then the intermediates.
    pub fn leaf_chain_pem(&self, leaf_der: &[u8]) -> String {
        let mut chain = vec![leaf_der.to_vec()];
        chain.extend(self.intermediates.iter().cloned());
        ders_to_pem(&chain)
    }

    /// `ca.pem`: the trust anchor(s).
    pub fn bundle_pem(&self) -> String {
        ders_to_pem(&self.roots)
    }
}

impl CaIssuer {
    /// What goes with the certificates this CA issues.
    pub fn ca_chain(&self) -> CaChain {
        CaChain::of(self.certificate_der(), self.chain_der())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_sends_nothing_and_an_intermediate_sends_all_but_the_root() {
        let root = CaChain::of(b"root", &[]);
        assert!(root.intermediates.is_empty());
        assert_eq!(root.roots, [b"root".to_vec()]);
        let deep = CaChain::of(b"issuing", &[b"upper".to_vec(), b"root".to_vec()]);
        assert_eq!(deep.intermediates, [b"issuing".to_vec(), b"upper".to_vec()]);
        assert_eq!(deep.roots, [b"root".to_vec()]);
    }
}
