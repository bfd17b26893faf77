//! Checks of `[metrics]` and `[alerts]`: the metrics endpoint listens on loopback only
//! (it has no authentication), and alert thresholds are whole days.

use std::net::SocketAddr;
use std::time::Duration;

use keyward_core::Error;
use keyward_core::check::AlertThresholds;

/// Parses `[metrics] listen`; the reason, in one line, when it is not a loopback
/// `IP:port`.
pub(super) fn check_metrics_listen(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("'{text}' is not an IP:port address such as 127.0.0.1:9464"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "metrics listen address {addr} is not a loopback address: the endpoint has no authentication, so it only listens on 127.0.0.1 or [::1]"
        ));
    }
    Ok(addr)
}

/// The `[alerts]` thresholds, with the defaults (30 and 7 days) for those not set.
pub(super) fn thresholds(
    warning: Option<Duration>,
    error: Option<Duration>,
) -> Result<AlertThresholds, Error> {
    let day = Duration::from_secs(86_400);
    AlertThresholds::from_durations(warning.unwrap_or(day * 30), error.unwrap_or(day * 7))
}
