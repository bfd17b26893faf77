//! The configuration file exactly as written: serde structs that refuse unknown keys and
//! keep the position of every value that is checked after parsing.

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) agent: Spanned<RawAgent>,
    pub(super) ca: Spanned<RawCa>,
    #[serde(default)]
    pub(super) metrics: Option<RawMetrics>,
    #[serde(default)]
    pub(super) audit: Option<RawAudit>,
    #[serde(default)]
    pub(super) jwt: Option<Spanned<RawJwt>>,
    #[serde(default)]
    pub(super) sds: Option<Spanned<RawSds>>,
    #[serde(default)]
    pub(super) vault: Option<Spanned<RawVault>>,
    pub(super) alerts: Option<RawAlerts>,
    /// `[acme]`: the enrollment listener (`listen`, `names`) and the ACME server.
    #[serde(default)]
    pub(super) acme: Option<Spanned<RawAcme>>,
    /// `[est]`: the EST server on the enrollment listener.
    #[serde(default)]
    pub(super) est: Option<Spanned<RawEst>>,
    #[serde(default)]
    pub(super) workload: Vec<Spanned<RawWorkload>>,
    /// `[[kek]]`: key-encryption keys the agent rotates on a schedule.
    #[serde(default)]
    pub(super) kek: Vec<Spanned<super::kek::RawKek>>,
}

/// `[agent]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    pub(super) socket: Spanned<String>,
    #[serde(default)]
    pub(super) socket_mode: Option<Spanned<ModeValue>>,
    #[serde(default)]
    pub(super) socket_group: Option<Spanned<GroupValue>>,
    pub(super) state_dir: Spanned<String>,
    pub(super) trust_domain: Spanned<String>,
    #[serde(default)]
    pub(super) log_format: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) renew_fraction: Option<Spanned<f64>>,
    #[serde(default)]
    pub(super) idle_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) max_connections: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) max_connections_per_uid: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) request_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) rate_limit: Option<Spanned<RawRateLimit>>,
    #[serde(default)]
    pub(super) max_hash_bytes: Option<Spanned<i64>>,
}

/// `[agent] rate_limit = { per_second = 500, burst = 1000 }`: Workload API calls per uid.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    #[serde(default)]
    pub(super) per_second: Option<Spanned<f64>>,
    #[serde(default)]
    pub(super) burst: Option<Spanned<i64>>,
}

/// A file mode: `"0660"` (octal text) or a TOML octal integer `0o660`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum ModeValue {
    Text(String),
    Number(i64),
}

/// A group: a name the system resolves (/etc/group or another NSS source) or a numeric gid.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum GroupValue {
    Name(String),
    Id(i64),
}

/// `[ca]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCa {
    #[serde(default)]
    pub(super) key: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) subject: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) validity: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) intermediate: Option<Spanned<RawRotating>>,
    #[serde(default)]
    pub(super) upstream: Option<Spanned<RawRotating>>,
}

/// `[ca.intermediate]` and `[ca.upstream]`: an intermediate the agent rotates, issued
/// under its own root or signed by an upstream authority. `authority` and
/// `crl_refresh` belong to `[ca.upstream]` alone (checked after parsing).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRotating {
    #[serde(default)]
    pub(super) authority: Option<Spanned<String>>,
    /// How often the upstream CRL is fetched (fleet revocation).
    #[serde(default)]
    pub(super) crl_refresh: Option<Spanned<String>>,
    pub(super) key: Spanned<String>,
    #[serde(default)]
    pub(super) algorithm: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) subject: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) ttl: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) rotate_before: Option<Spanned<String>>,
}

/// `[vault]`: the Vault/OpenBao client of `[ca.upstream]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVault {
    /// The nodes of the cluster, in the order to try them (in place of `VAULT_ADDR`).
    #[serde(default)]
    pub(super) addresses: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[metrics]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Spanned<String>,
}

/// `[acme]`: `listen` and `names` configure the enrollment listener (shared by ACME and
/// EST); the other keys configure the ACME server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcme {
    #[serde(default)]
    pub(super) listen: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) names: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) allowed: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(super) validity: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) challenges: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(super) rate_limit: Option<Spanned<RawRateLimit>>,
    #[serde(default)]
    pub(super) testing: Option<Spanned<RawAcmeTesting>>,
}

/// `[acme.testing]`: where challenge validations connect, for tests (as pebble's
/// `-dnsserver` and `httpPort`/`tlsPort`); never on unless written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcmeTesting {
    #[serde(default)]
    pub(super) http_port: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) tls_port: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) resolve: Option<std::collections::BTreeMap<String, Spanned<String>>>,
}

/// `[est]`: enrollment over EST (RFC 7030) on the `[acme] listen` listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEst {
    #[serde(default)]
    pub(super) validity: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) manufacturer_ca: Option<Spanned<String>>,
}

/// `[alerts]`: expiry thresholds (durations in whole days).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    #[serde(default)]
    pub(super) warning: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) error: Option<Spanned<String>>,
}

/// `[audit]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    #[serde(default)]
    pub(super) path: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) max_bytes: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) keep: Option<Spanned<i64>>,
}

/// `[jwt]`: JWT-SVID signing; every key is optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJwt {
    #[serde(default)]
    pub(super) key: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) algorithm: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) ttl: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) key_ttl: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) key_overlap: Option<Spanned<String>>,
}

/// `[sds]`: Envoy SDS resource names; every key is optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSds {
    #[serde(default)]
    pub(super) default_svid_name: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) default_bundle_name: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) default_all_bundles_name: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) disable_spiffe_cert_validation: Option<bool>,
}

/// One `[[workload]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkload {
    pub(super) spiffe_id: Spanned<String>,
    #[serde(default)]
    pub(super) dns: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) ip: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) ttl: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) algorithm: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) hint: Option<String>,
    pub(super) selectors: Spanned<RawSelectors>,
    #[serde(default)]
    pub(super) keys: Vec<Spanned<super::grants::RawGrant>>,
}

/// A workload entry's selectors: all that are present must match the caller.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSelectors {
    #[serde(default)]
    pub(super) uid: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) gid: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) path: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) sha256: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) allow_any_user: Option<Spanned<bool>>,
}
