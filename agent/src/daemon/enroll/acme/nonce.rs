//! Replay nonces (RFC 8555 section 6.5): each one the server hands out is accepted once;
//! the store is bounded, so a client that collects nonces and never uses them only
//! pushes out the oldest ones (whose owners then get `badNonce` and retry).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// How many unused nonces are remembered at most.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// The nonces handed out and not yet used.
#[derive(Debug)]
pub struct Nonces {
    capacity: usize,
    inner: Mutex<Live>,
}

#[derive(Debug, Default)]
struct Live {
    unused: HashSet<String>,
    /// Every nonce issued, oldest first, bounded by the capacity (used ones included).
    order: VecDeque<String>,
}

impl Nonces {
    /// A store that remembers at most `capacity` nonces.
    pub fn new(capacity: usize) -> Nonces {
        Nonces {
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }

    /// A fresh nonce (128 random bits, base64url).
    pub fn issue(&self) -> String {
        let nonce = B64.encode(rand::random::<[u8; 16]>());
        let mut live = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while live.order.len() >= self.capacity {
            if let Some(old) = live.order.pop_front() {
                live.unused.remove(&old);
            }
        }
        live.order.push_back(nonce.clone());
        live.unused.insert(nonce.clone());
        nonce
    }

    /// Uses `nonce`: true the first time for a nonce this store issued, false after.
    pub fn consume(&self, nonce: &str) -> bool {
        let mut live = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        live.unused.remove(nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_accepted_once() {
        let nonces = Nonces::new(10);
        let n = nonces.issue();
        assert!(nonces.consume(&n));
        assert!(!nonces.consume(&n), "a replayed nonce must be refused");
        assert!(!nonces.consume("never-issued"));
    }

    #[test]
    fn the_store_is_bounded_and_forgets_the_oldest() {
        let nonces = Nonces::new(3);
        let first = nonces.issue();
        let rest: Vec<String> = (0..3).map(|_| nonces.issue()).collect();
        assert!(!nonces.consume(&first), "the oldest nonce was pushed out");
        assert!(rest.iter().all(|n| nonces.consume(n)));
        let live = nonces.inner.lock().unwrap();
        assert!(live.order.len() <= 3 && live.unused.is_empty());
    }
}
