//! The background task that keeps a client's token fresh: looks up its lease, renews it
//! at two thirds of its life, and obtains a new token when renewal fails or is capped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Weak;
use std::sync::atomic::Ordering;

use keyward_core::Error;

use super::auth::{Lease, RETRY_PAUSE};
use super::{Inner, VaultClient};

/// Starts [`maintain`]. A plain function, so that the `Send` check of the task (which
/// obtains tokens) is not part of obtaining a token.
pub(crate) fn spawn_maintainer(weak: Weak<Inner>) {
    let task: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(maintain(weak));
    tokio::spawn(task);
}

/// The background task of one client: looks up the token's lease, renews it at two
/// thirds of its life, and obtains a new token when renewal fails or is capped. Ends
/// when the client is dropped, or when the token never expires.
async fn maintain(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let client = VaultClient { inner };
        let auth = &client.inner.auth;
        let Some(generation) = auth.generation() else {
            return;
        };
        let lease = match auth.lease(generation) {
            Some(Some(lease)) => lease,
            Some(None) => {
                match client.lookup_self().await {
                    Ok(lease) => auth.set_lease(generation, lease),
                    Err(e @ Error::Backend { .. }) => {
                        auth.failed("lookup (so it will not be renewed)", &e);
                        return;
                    }
                    Err(e) => {
                        auth.failed("lookup", &e);
                        drop(client);
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
                continue;
            }
            None => continue,
        };
        if lease.ttl.is_zero() {
            return; // never expires (a root token, say): nothing to keep fresh
        }
        let wake = lease.since + lease.ttl * 2 / 3;
        drop(client);
        tokio::time::sleep_until(wake.into()).await;

        let Some(inner) = weak.upgrade() else { return };
        let client = VaultClient { inner };
        let auth = &client.inner.auth;
        if auth.generation() != Some(generation) {
            continue; // replaced meanwhile (login after a denial)
        }
        if lease.renewable && !lease.capped {
            match client.renew_self(lease.increment).await {
                Ok(new) => {
                    auth.renewals.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(ttl = ?new.ttl, capped = new.capped, "Vault token renewed");
                    auth.set_lease(generation, new);
                    continue;
                }
                Err(e) => auth.failed("renewal", &e),
            }
        }
        if !auth.can_obtain_again() {
            let left = lease.ttl.saturating_sub(lease.since.elapsed());
            tracing::warn!(
                expires_in = ?left,
                "the fixed Vault token cannot be renewed further; keyward cannot log in \
                 again with it: configure AppRole or a token file"
            );
            if left.is_zero() {
                return;
            }
            auth.set_lease(
                generation,
                Lease {
                    capped: true,
                    ..lease
                },
            );
            drop(client);
            tokio::time::sleep(left.min(RETRY_PAUSE * 12)).await;
            continue;
        }
        if let Err(e) = client.obtain(Some(generation)).await {
            auth.failed("login", &e);
            drop(client);
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}
