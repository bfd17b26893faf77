//! The settings of the enrollment listener (`[acme] listen`, `names`) and of EST
//! (`[est]`), as validated from the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The default lifetime of a certificate issued over EST.
pub const DEFAULT_EST_VALIDITY: Duration = Duration::from_secs(90 * 86_400);

/// `[acme] listen` and `names`: the HTTPS listener ACME and EST are served on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSettings {
    /// The TCP address the listener binds.
    pub listen: SocketAddr,
    /// The names in the listener's own certificate (DNS names or IP addresses; by
    /// default the listen address's IP).
    pub names: Vec<String>,
}

/// `[est]`: enrollment over EST (RFC 7030) under `/.well-known/est/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EstSettings {
    /// `validity`: how long certificates issued over EST are valid.
    pub validity: Duration,
    /// `manufacturer_ca`: a PEM file of CA certificates whose device certificates may
    /// enroll for the first time (TLS client authentication), when set.
    pub manufacturer_ca: Option<PathBuf>,
}
