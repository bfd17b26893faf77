//! The granted keys, opened once each: every grant's key URI is opened when an entry
//! naming it is published (at start and after every reload) and its signer or wrapper
//! kept for the agent's life, so an operation never pays for opening its key. A key
//! that fails to open is logged and tried again on its next use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use keyward_core::{Error, KeySigner, KeyUri, KeyWrapper};
use tokio::sync::{OnceCell, watch};

use super::super::config::grants::KeyGrant;
use super::super::snapshot::Snapshot;
use crate::backends::Backends;

/// One opened key: a signer or a key-encryption key, by what its grants use it for.
type Cell<T> = Arc<OnceCell<Arc<T>>>;

/// The opened keys, by URI.
#[derive(Clone)]
pub struct Keyring {
    backends: Arc<Backends>,
    signers: Arc<Mutex<HashMap<String, Cell<dyn KeySigner>>>>,
    wrappers: Arc<Mutex<HashMap<String, Cell<dyn KeyWrapper>>>>,
}

/// The cell for `uri` in `map`, made empty if new.
fn cell<T: ?Sized>(map: &Mutex<HashMap<String, Cell<T>>>, uri: &KeyUri) -> Cell<T> {
    map.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(uri.to_string())
        .or_default()
        .clone()
}

impl Keyring {
    /// An empty keyring opening keys through `backends`.
    pub fn new(backends: Arc<Backends>) -> Self {
        Keyring {
            backends,
            signers: Arc::default(),
            wrappers: Arc::default(),
        }
    }

    /// The signer of `uri`, opened on first use.
    pub async fn signer(&self, uri: &KeyUri) -> Result<Arc<dyn KeySigner>, Error> {
        cell(&self.signers, uri)
            .get_or_try_init(|| async { self.backends.open(uri).await })
            .await
            .cloned()
    }

    /// The key-encryption key of `uri`, opened on first use.
    pub async fn wrapper(&self, uri: &KeyUri) -> Result<Arc<dyn KeyWrapper>, Error> {
        cell(&self.wrappers, uri)
            .get_or_try_init(|| async { self.backends.for_uri(uri).await?.open_wrapper(uri).await })
            .await
            .cloned()
    }

    /// Opens the key of `grant` as its ops need it.
    async fn open(&self, grant: &KeyGrant) -> Result<(), Error> {
        if grant.ops.iter().any(|op| op.signs()) {
            self.signer(&grant.key).await.map(drop)
        } else {
            self.wrapper(&grant.key).await.map(drop)
        }
    }

    /// Opens every granted key of every snapshot published on `state`, now and after
    /// each change, until the agent stops publishing.
    pub fn open_published(self, mut state: watch::Receiver<Arc<Snapshot>>) {
        tokio::spawn(async move {
            loop {
                let snap = state.borrow_and_update().clone();
                for grant in snap.entries.iter().flat_map(|e| e.keys.iter()) {
                    if let Err(e) = self.open(grant).await {
                        let why = keyward_core::chain_line(&e);
                        tracing::warn!(grant = %grant.name, key = %grant.key, error = %why, "cannot open a granted key; trying again on its next use");
                    }
                }
                if state.changed().await.is_err() {
                    return;
                }
            }
        });
    }
}
