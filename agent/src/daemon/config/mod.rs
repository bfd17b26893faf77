//! The agent's TOML configuration (the keys README.md's "The agent" section lists):
//! parsed with serde (unknown keys refused), then validated; every error names
//! `file:line:column`.
//!
//! Relative paths in the file are taken relative to the file's own directory.

mod enroll;
pub mod grants;
pub mod kek;
mod names;
mod observe;
mod raw;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod upstream_tests;
mod validate;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyward_core::{Algorithm, Error, KeyUri};

use super::selectors::Selectors;

pub use enroll::{DEFAULT_EST_VALIDITY, EstSettings, ListenerSettings};

/// The default lifetime of a workload SVID.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// By default an SVID is renewed when half its lifetime has passed.
pub const DEFAULT_RENEW_FRACTION: f64 = 0.5;

/// A validated agent configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from (a path, or `<embedded>` for `keyward up`).
    pub source: String,
    /// `[agent]`
    pub agent: AgentSettings,
    /// `[ca]`
    pub ca: CaSettings,
    /// `[audit]`: the hash-chained audit log (by default `STATE/audit.jsonl`).
    pub audit: AuditSettings,
    /// `[jwt]`: how JWT-SVIDs are signed (defaults when the section is absent).
    pub jwt: JwtSettings,
    /// `[sds]`: the resource names of Envoy's SDS (SPIRE's defaults when absent).
    pub sds: SdsSettings,
    /// `[metrics] listen`: the loopback address of the metrics and status endpoint.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `[alerts]`: the expiry thresholds for WARNING and ERROR.
    pub alerts: keyward_core::check::AlertThresholds,
    /// `[[workload]]` entries, in file order.
    pub workloads: Vec<Arc<WorkloadEntry>>,
    /// `[acme] listen` and `names`: the HTTPS enrollment listener (ACME and EST).
    pub enroll_listener: Option<ListenerSettings>,
    /// `[acme] allowed`, `validity`, `challenges`, `rate_limit`, `[acme.testing]`: the
    /// ACME server on that listener.
    pub acme: Option<crate::daemon::enroll::acme::AcmeSettings>,
    /// `[est]`: enrollment over EST on that listener.
    pub est: Option<EstSettings>,
    /// `[[kek]]`: key-encryption keys the agent rotates on a schedule, in file order.
    pub keks: Vec<kek::KekSchedule>,
}

/// `[agent]`: the socket, the state directory and the trust domain.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    /// The Unix socket the Workload API is served on.
    pub socket: PathBuf,
    /// The socket file's permission bits (default 0666: every caller is attested anyway).
    pub socket_mode: u32,
    /// The socket file's group, when set.
    pub socket_group: Option<u32>,
    /// The keyward state directory that holds the CA.
    pub state_dir: PathBuf,
    /// The trust domain every SPIFFE ID belongs to, e.g. `example.org`.
    pub trust_domain: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// The fraction of an SVID's lifetime after which it is renewed (0.1 to 0.9).
    pub renew_fraction: f64,
    /// What one socket caller may hold and ask for (idle timeout, connections, rate).
    pub limits: CallerLimits,
    /// `max_hash_bytes`: the largest caller executable hashed for a `sha256` selector
    /// (a bigger one is refused unread).
    pub max_hash_bytes: u64,
}

/// `[agent] idle_timeout`, `max_connections`, `max_connections_per_uid`,
/// `request_timeout` and `rate_limit`: bounds that keep a hostile or broken caller of
/// the socket from exhausting the agent or keeping other callers out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallerLimits {
    /// A connection with no call in progress for this long is closed.
    pub idle_timeout: Duration,
    /// Connections beyond this many are closed as soon as they are accepted.
    pub max_connections: usize,
    /// A uid's connections beyond this many are closed as soon as they are accepted
    /// (default a quarter of `max_connections`, at least 1).
    pub max_connections_per_uid: usize,
    /// A call whose request has not fully arrived this long after its headers fails.
    pub request_timeout: Duration,
    /// Calls each uid may start per second, on average.
    pub rate_per_second: f64,
    /// Calls each uid may start at once before the rate applies.
    pub rate_burst: u32,
}

impl Default for CallerLimits {
    fn default() -> Self {
        CallerLimits {
            idle_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_connections_per_uid: 10_000 / 4,
            request_timeout: Duration::from_secs(2),
            // Generous: one uid often runs many busy workers (32 clients of one uid fetch
            // about 20,000 times a second here); set it lower to fence a noisy caller.
            rate_per_second: 50_000.0,
            rate_burst: 100_000,
        }
    }
}

/// How the agent writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[audit]`: where the agent appends its audit records and when the file rotates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// `path`: the log file (default `audit.jsonl` in the state directory, which the
    /// CLI commands append to as well).
    pub path: PathBuf,
    /// `max_bytes`: the size past which the file is rotated to `PATH.1`.
    pub max_bytes: u64,
    /// `keep`: how many rotated files are kept.
    pub keep: u32,
}

/// `[ca]`: the issuing key, and what to create when the state directory has no CA.
#[derive(Debug, Clone, PartialEq)]
pub struct CaSettings {
    /// The issuing key (root or intermediate; with `[ca.intermediate]`, the root's key);
    /// `None` with `[ca.upstream]`, whose intermediates have keys of their own.
    pub key: Option<KeyUri>,
    /// The root's subject when the agent creates the root.
    pub subject: String,
    /// The root's validity when the agent creates the root.
    pub validity: Duration,
    /// Agent-managed, rotating intermediate CA, when configured.
    pub intermediate: Option<IntermediateSettings>,
    /// Agent-managed intermediates signed by an upstream authority, when configured
    /// (exclusive with `intermediate`).
    pub upstream: Option<UpstreamSettings>,
}

impl CaSettings {
    /// The backend of the keys SVIDs are signed with (the one readiness watches):
    /// `[ca] key`'s, or `[ca.upstream] key`'s.
    pub fn signing_backend(&self) -> &str {
        match (&self.key, &self.upstream) {
            (Some(k), _) => k.scheme(),
            (None, Some(u)) => u.generation.key_template.split(':').next().unwrap_or(""),
            (None, None) => "",
        }
    }
}

/// `[ca.upstream]` (and `[vault]`): intermediates an upstream authority signs, which the
/// agent rotates.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    /// `authority`: `vault-pki:MOUNT[?role=ROLE]`, the Vault/OpenBao PKI mount whose
    /// root signs each intermediate (`MOUNT/root/sign-intermediate`).
    pub authority: String,
    /// `key`, `algorithm`, `subject`, `ttl`, `rotate_before`: each generation's key
    /// (a template with `{n}`), subject and lifetimes, as for `[ca.intermediate]`.
    pub generation: IntermediateSettings,
    /// `[vault] addresses`: the nodes to try, in order, in place of `VAULT_ADDR`.
    pub vault_addresses: Option<Vec<String>>,
    /// `crl_refresh`: how often the upstream authority's CRL is fetched (also on
    /// SIGHUP); 1 minute unless configured.
    pub crl_refresh: std::time::Duration,
}

/// `[ca.intermediate]`: an intermediate the agent issues under its root and rotates.
#[derive(Debug, Clone, PartialEq)]
pub struct IntermediateSettings {
    /// The key URI template; `{n}` is replaced by the intermediate's generation number
    /// (a fresh key per generation). Without `{n}` the same key is re-certified.
    pub key_template: String,
    /// The algorithm of keys the agent generates for new generations.
    pub algorithm: Algorithm,
    /// The intermediate's subject.
    pub subject: String,
    /// Each intermediate's lifetime.
    pub ttl: Duration,
    /// The next intermediate takes over this long before the current one expires; the
    /// old one stays valid (and in SVID chains not yet renewed) during that overlap.
    pub rotate_before: Duration,
}

/// `[sds]`: the names under which Envoy's SDS serves the caller's default SVID and the
/// bundles, as SPIRE's agent names them (its `sds` block, same keys and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsSettings {
    /// `default_svid_name`: the `tls_certificate` of the caller's first SVID.
    pub default_svid_name: String,
    /// `default_bundle_name`: the `validation_context` of the trust domain's bundle.
    pub default_bundle_name: String,
    /// `default_all_bundles_name`: the `validation_context` of every bundle, as an
    /// `envoy.tls.cert_validator.spiffe` configuration.
    pub default_all_bundles_name: String,
    /// `disable_spiffe_cert_validation`: serve the all-bundles resource as plain
    /// `trusted_ca` instead (for an Envoy without the SPIFFE validator).
    pub disable_spiffe_cert_validation: bool,
}

impl Default for SdsSettings {
    fn default() -> Self {
        SdsSettings {
            default_svid_name: "default".into(),
            default_bundle_name: "ROOTCA".into(),
            default_all_bundles_name: "ALL".into(),
            disable_spiffe_cert_validation: false,
        }
    }
}

/// `[jwt]`: the JWT-SVID signing key and its rotation.
///
/// Generation rule for a key in a backend: the configured URI names the first key; each
/// later generation appends `-<unix time it starts signing>` to the key's name (file
/// stem, PKCS#11 `object=` label, KMS alias, Transit key name).
#[derive(Debug, Clone, PartialEq)]
pub struct JwtSettings {
    /// The first signing key, in any backend; `None` keeps keys in memory only.
    pub key: Option<KeyUri>,
    /// The algorithm of keys the agent generates (ES256, ES384, RS256 or EdDSA).
    pub algorithm: Algorithm,
    /// The lifetime of each JWT-SVID.
    pub ttl: Duration,
    /// How long each signing key signs before the next one takes over.
    pub key_ttl: Duration,
    /// How long before it signs the next key is already published in the JWKS.
    pub key_overlap: Duration,
}

/// One `[[workload]]` entry: an identity and who may receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadEntry {
    /// The SPIFFE ID, the SVID's only URI SAN.
    pub spiffe_id: String,
    /// Extra DNS SANs.
    pub dns: Vec<String>,
    /// Extra IP SANs.
    pub ips: Vec<IpAddr>,
    /// The SVID's lifetime.
    pub ttl: Duration,
    /// The workload key's algorithm.
    pub algorithm: Algorithm,
    /// The hint sent with the SVID (may be empty).
    pub hint: String,
    /// Who the entry is for: all selectors must match the caller.
    pub selectors: Selectors,
    /// The keys the entry's callers may use through `keyward.v1.KeyService`.
    pub keys: Vec<grants::KeyGrant>,
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::io(
                format!("cannot read the agent configuration {}", path.display()),
                e,
            )
        })?;
        let abs = std::path::absolute(path)
            .map_err(|e| Error::io(format!("bad configuration path {}", path.display()), e))?;
        let base = abs
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        Self::parse(&text, &path.display().to_string(), &base)
    }

    /// Parses and validates configuration text; `source` names it in errors and
    /// relative paths are resolved against `base`.
    pub fn parse(text: &str, source: &str, base: &Path) -> Result<Config, Error> {
        validate::parse(text, source, base)
    }

    /// A one-line description of what changed between `self` and `new` that a reload
    /// cannot apply (the running agent keeps the old values for these).
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut out = Vec::new();
        let (a, b) = (&self.agent, &new.agent);
        if a.socket != b.socket {
            out.push("[agent] socket");
        }
        if a.state_dir != b.state_dir {
            out.push("[agent] state_dir");
        }
        if a.trust_domain != b.trust_domain {
            out.push("[agent] trust_domain");
        }
        if a.log_format != b.log_format {
            out.push("[agent] log_format");
        }
        if a.limits != b.limits {
            out.push(
                "[agent] idle_timeout, max_connections, max_connections_per_uid, request_timeout, rate_limit",
            );
        }
        if a.max_hash_bytes != b.max_hash_bytes {
            out.push("[agent] max_hash_bytes");
        }
        if self.ca != new.ca {
            out.push("[ca]");
        }
        if self.audit != new.audit {
            out.push("[audit]");
        }
        if self.sds != new.sds {
            out.push("[sds]");
        }
        if self.jwt != new.jwt {
            out.push("[jwt]");
        }
        if self.metrics_listen != new.metrics_listen {
            out.push("[metrics]");
        }
        if self.enroll_listener != new.enroll_listener {
            out.push("[acme] listen, names");
        }
        if self.est != new.est {
            out.push("[est]");
        }
        if self.keks != new.keks {
            out.push("[[kek]]");
        }
        out
    }
}
