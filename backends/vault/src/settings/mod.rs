//! How to reach and authenticate to Vault/OpenBao: the address of each node of a
//! cluster, TLS, namespace, auth method and the per-request deadline, from code or from
//! the standard environment variables.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use keyward_core::Error;
use zeroize::Zeroizing;

use crate::addresses;

/// The default deadline for one operation (all its retries included). A raft leader
/// election takes longer (10-30 s with OpenBao's defaults): for a cluster, set about
/// 60 s (`VAULT_CLIENT_TIMEOUT=60s`) so that requests ride it out.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// The default mount path of the AppRole auth method.
pub const DEFAULT_APPROLE_MOUNT: &str = "approle";

/// Connection settings for one Vault/OpenBao server or the nodes of one HA cluster.
///
/// A single server has `address` alone. A cluster lists every node: `address` is the
/// first, `other_addresses` the rest in order ([`VaultSettings::set_addresses`] sets
/// them all, checked). Requests go to the node that answered last and move on to the
/// next one when a node is down, sealed or has no leader.
#[derive(Clone, Debug)]
pub struct VaultSettings {
    /// Base URL of the first (or only) node, e.g. `https://vault.internal:8200`
    /// (no trailing slash, no `/v1`).
    pub address: String,
    /// The other nodes of the same cluster, in the order they are tried after
    /// `address`; empty for a single server.
    pub other_addresses: Vec<String>,
    /// PEM file of CA certificates to trust instead of the built-in roots (`VAULT_CACERT`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS (`VAULT_CLIENT_CERT` / `VAULT_CLIENT_KEY`).
    pub client_cert: Option<ClientCertificate>,
    /// Vault Enterprise / OpenBao namespace sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// How keyward gets its token.
    pub auth: VaultAuth,
    /// The longest one operation may take, retries included; past it the operation
    /// fails with `Error::Unavailable` naming the address.
    pub request_deadline: Duration,
}

/// A client certificate and its private key, both PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The certificate (chain) PEM file.
    pub cert_file: PathBuf,
    /// The private key PEM file (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// How keyward authenticates. The token is never logged nor shown by `Debug`.
#[derive(Clone)]
pub enum VaultAuth {
    /// A fixed token (`VAULT_TOKEN`); renewed while renewable, never replaced.
    Token(Zeroizing<String>),
    /// A file holding the token (written by a Vault agent, say); read again when the
    /// token cannot be renewed any more or is refused.
    TokenFile(PathBuf),
    /// AppRole login with role_id and secret_id read from files at each login.
    AppRole(AppRoleAuth),
}

/// AppRole credentials, as files so they never sit in the environment or a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppRoleAuth {
    /// The mount path of the AppRole auth method (default `approle`).
    pub mount: String,
    /// File holding the role_id.
    pub role_id_file: PathBuf,
    /// File holding the secret_id.
    pub secret_id_file: PathBuf,
}

impl fmt::Debug for VaultAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VaultAuth::Token(_) => f.write_str("Token(<redacted>)"),
            VaultAuth::TokenFile(p) => f.debug_tuple("TokenFile").field(p).finish(),
            VaultAuth::AppRole(a) => f.debug_tuple("AppRole").field(a).finish(),
        }
    }
}

impl VaultAuth {
    /// A short name of the method for logs and status: `token`, `token-file`, `approle`.
    pub fn method_name(&self) -> &'static str {
        match self {
            VaultAuth::Token(_) => "token",
            VaultAuth::TokenFile(_) => "token-file",
            VaultAuth::AppRole(_) => "approle",
        }
    }
}

impl VaultSettings {
    /// Settings for the one server at `address` with `auth`, no TLS extras, no
    /// namespace, the default deadline.
    pub fn new(address: &str, auth: VaultAuth) -> Result<Self, Error> {
        Ok(VaultSettings {
            address: addresses::normalize(address)?,
            other_addresses: Vec::new(),
            ca_file: None,
            client_cert: None,
            namespace: None,
            auth,
            request_deadline: DEFAULT_DEADLINE,
        })
    }

    /// Every node's address in the order they are first tried: `address`, then
    /// `other_addresses`.
    pub fn addresses(&self) -> Vec<&str> {
        std::iter::once(self.address.as_str())
            .chain(self.other_addresses.iter().map(String::as_str))
            .collect()
    }

    /// Sets the nodes' addresses (`list[0]` becomes `address`), each normalised; an
    /// empty list, an empty entry or a node listed twice is refused with one line.
    pub fn set_addresses<S: AsRef<str>>(&mut self, list: &[S]) -> Result<(), Error> {
        let mut list = addresses::normalize_list(list)?;
        self.other_addresses = list.split_off(1);
        self.address = list.remove(0);
        Ok(())
    }

    /// Settings from the process environment; see [`VaultSettings::from_vars`].
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(None, |name| std::env::var(name).ok())
    }

    /// Settings from the process environment with the nodes' `addresses` (say, the
    /// agent's `[vault] addresses`) in place of `VAULT_ADDR` when given; see
    /// [`VaultSettings::from_vars`].
    pub fn from_env_with_addresses(addresses: Option<&[String]>) -> Result<Self, Error> {
        Self::from_vars(addresses, |name| std::env::var(name).ok())
    }

    /// Settings from `addresses` and variables looked up by `var` (empty values count as
    /// unset):
    ///
    /// - addresses: `addresses` when given (then `VAULT_ADDR` and `BAO_ADDR` are not
    ///   read), else `VAULT_ADDR`, else `BAO_ADDR` (one of them required), each a
    ///   comma-separated list of the nodes of one cluster in the order to try them;
    /// - auth, first found wins: `VAULT_TOKEN`/`BAO_TOKEN`; `VAULT_TOKEN_FILE`/
    ///   `BAO_TOKEN_FILE`; `VAULT_ROLE_ID_FILE` + `VAULT_SECRET_ID_FILE` (or `BAO_...`)
    ///   with `VAULT_APPROLE_MOUNT` (default `approle`);
    /// - TLS: `VAULT_CACERT`, `VAULT_CLIENT_CERT` + `VAULT_CLIENT_KEY` (or `BAO_...`);
    /// - `VAULT_NAMESPACE`/`BAO_NAMESPACE`;
    /// - deadline: `VAULT_CLIENT_TIMEOUT`/`BAO_CLIENT_TIMEOUT` (`30`, `30s`, `500ms`, `1m`).
    pub fn from_vars(
        addresses: Option<&[String]>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let get = |suffix: &str| {
            ["VAULT_", "BAO_"].iter().find_map(|p| {
                var(&format!("{p}{suffix}"))
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
            })
        };
        let addresses = match addresses {
            Some(list) => addresses::normalize_list(list)?,
            None => {
                let value = get("ADDR").ok_or_else(|| {
                    Error::InvalidInput(
                        "no Vault/OpenBao address: set VAULT_ADDR (or BAO_ADDR), e.g. \
                         https://vault:8200 or a comma-separated list of a cluster's nodes"
                            .into(),
                    )
                })?;
                addresses::normalize_list(&addresses::split_list(&value))?
            }
        };
        let auth = if let Some(token) = get("TOKEN") {
            VaultAuth::Token(Zeroizing::new(token))
        } else if let Some(file) = get("TOKEN_FILE") {
            VaultAuth::TokenFile(file.into())
        } else {
            match (get("ROLE_ID_FILE"), get("SECRET_ID_FILE")) {
                (Some(role), Some(secret)) => VaultAuth::AppRole(AppRoleAuth {
                    mount: get("APPROLE_MOUNT").unwrap_or_else(|| DEFAULT_APPROLE_MOUNT.into()),
                    role_id_file: role.into(),
                    secret_id_file: secret.into(),
                }),
                (None, None) => {
                    return Err(Error::InvalidInput(
                        "no Vault/OpenBao credentials: set VAULT_TOKEN, VAULT_TOKEN_FILE, or \
                         VAULT_ROLE_ID_FILE and VAULT_SECRET_ID_FILE"
                            .into(),
                    ));
                }
                _ => {
                    return Err(Error::InvalidInput(
                        "AppRole needs both VAULT_ROLE_ID_FILE and VAULT_SECRET_ID_FILE".into(),
                    ));
                }
            }
        };
        let mut s = VaultSettings::new(&addresses[0], auth)?;
        s.other_addresses = addresses[1..].to_vec();
        s.ca_file = get("CACERT").map(PathBuf::from);
        s.client_cert = match (get("CLIENT_CERT"), get("CLIENT_KEY")) {
            (Some(c), Some(k)) => Some(ClientCertificate {
                cert_file: c.into(),
                key_file: k.into(),
            }),
            (None, None) => None,
            _ => {
                return Err(Error::InvalidInput(
                    "mutual TLS needs both VAULT_CLIENT_CERT and VAULT_CLIENT_KEY".into(),
                ));
            }
        };
        s.namespace = get("NAMESPACE");
        if let Some(t) = get("CLIENT_TIMEOUT") {
            s.request_deadline = parse_timeout(&t)?;
        }
        Ok(s)
    }

    /// The HTTP client keyward uses for these servers: rustls with the configured CA
    /// and client certificate, HTTP/1.1 keep-alive, `TCP_NODELAY`, and no redirect
    /// followed (keyward's client follows a standby's redirect itself, and only to a
    /// configured address: the token goes nowhere else). Public so benchmarks and tools
    /// use the very same settings.
    pub fn http_client(&self) -> Result<reqwest::Client, Error> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(self.request_deadline.min(Duration::from_secs(5)))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("keyward-vault/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &self.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| Error::io(format!("cannot read Vault CA file {}", ca.display()), e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "Vault CA file {} holds no PEM certificate",
                        ca.display()
                    ))
                })?;
            b = b.tls_built_in_root_certs(false);
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if let Some(cc) = &self.client_cert {
            let read = |p: &PathBuf, what: &str| {
                std::fs::read(p).map(Zeroizing::new).map_err(|e| {
                    Error::io(
                        format!("cannot read Vault client {what} {}", p.display()),
                        e,
                    )
                })
            };
            let mut both = read(&cc.key_file, "key")?;
            both.push(b'\n');
            both.extend_from_slice(&read(&cc.cert_file, "certificate")?);
            let id = reqwest::Identity::from_pem(&both).map_err(|_| {
                Error::InvalidInput(format!(
                    "client certificate {} with key {} could not be loaded (expected PEM)",
                    cc.cert_file.display(),
                    cc.key_file.display()
                ))
            })?;
            b = b.identity(id);
        }
        b.build()
            .map_err(|e| Error::backend_with("cannot build the HTTP client for Vault", e))
    }
}

/// Parses `30`, `30s`, `500ms`, `2m` into a non-zero duration.
fn parse_timeout(s: &str) -> Result<Duration, Error> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
        Error::InvalidInput(format!(
            "Vault client timeout '{s}' is not a positive duration"
        ))
    })?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(Error::InvalidInput(format!(
            "Vault client timeout '{s}' has an unknown unit (use ms, s or m)"
        ))),
    }
}

#[cfg(test)]
mod tests;
