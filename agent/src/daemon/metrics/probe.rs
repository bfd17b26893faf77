//! The readiness probe: every [`PROBE_INTERVAL`] it signs a fixed message with the CA
//! key (through the timed signer, so it also feeds the latency histogram) and verifies
//! the signature; a failure, a bad signature or no answer within [`PROBE_TIMEOUT`]
//! marks the backend down until a later probe or signing operation succeeds. The key
//! is asked for at every probe, so a rotating CA key (an upstream intermediate's) is
//! probed as it is now.

use std::sync::Arc;
use std::time::Duration;

use keyward_core::KeySigner;
use tokio::task::JoinHandle;

use super::Metrics;

/// How often the CA key is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How long one probe may take before the backend counts as not answering.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The message the probe signs (never a certificate: it has no ASN.1 structure).
const PROBE_MESSAGE: &[u8] = b"keyward agent readiness probe";

/// Starts probing the CA key `key()` gives into `metrics` until the task is aborted.
pub fn spawn_probe(
    key: impl Fn() -> Arc<dyn KeySigner> + Send + 'static,
    metrics: Metrics,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let signer = key();
            let backend = signer.uri().scheme();
            let outcome =
                match tokio::time::timeout(PROBE_TIMEOUT, signer.sign(PROBE_MESSAGE)).await {
                    Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
                    Ok(Err(e)) => Err(keyward_core::chain_line(&e)),
                    Ok(Ok(sig)) => keyward_core::verify_signature(
                        signer.algorithm(),
                        signer.public_key_spki_der(),
                        PROBE_MESSAGE,
                        &sig,
                    )
                    .map_err(|e| format!("the probe signature does not verify: {e}")),
                };
            metrics.backend_health(backend, outcome);
        }
    })
}
