//! How to reach and authenticate to Vault/OpenBao: address, TLS, namespace, auth method
//! and the per-request deadline, from code or from the standard environment variables.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use keyward_core::Error;
use zeroize::Zeroizing;

/// The default deadline for one operation (all its retries included).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// The default mount path of the AppRole auth method.
pub const DEFAULT_APPROLE_MOUNT: &str = "approle";

/// Connection settings for one Vault/OpenBao server (or HA cluster address).
#[derive(Clone, Debug)]
pub struct VaultSettings {
    /// Base URL, e.g. `https://vault.internal:8200` (no trailing slash, no `/v1`).
    pub address: String,
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
    /// Settings for `address` with `auth`, no TLS extras, no namespace, the default deadline.
    pub fn new(address: &str, auth: VaultAuth) -> Result<Self, Error> {
        Ok(VaultSettings {
            address: normalize_address(address)?,
            ca_file: None,
            client_cert: None,
            namespace: None,
            auth,
            request_deadline: DEFAULT_DEADLINE,
        })
    }

    /// Settings from the process environment; see [`VaultSettings::from_vars`].
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Settings from variables looked up by `var` (empty values count as unset):
    ///
    /// - address: `VAULT_ADDR`, else `BAO_ADDR` (required);
    /// - auth, first found wins: `VAULT_TOKEN`/`BAO_TOKEN`; `VAULT_TOKEN_FILE`/
    ///   `BAO_TOKEN_FILE`; `VAULT_ROLE_ID_FILE` + `VAULT_SECRET_ID_FILE` (or `BAO_...`)
    ///   with `VAULT_APPROLE_MOUNT` (default `approle`);
    /// - TLS: `VAULT_CACERT`, `VAULT_CLIENT_CERT` + `VAULT_CLIENT_KEY` (or `BAO_...`);
    /// - `VAULT_NAMESPACE`/`BAO_NAMESPACE`;
    /// - deadline: `VAULT_CLIENT_TIMEOUT`/`BAO_CLIENT_TIMEOUT` (`30`, `30s`, `500ms`, `1m`).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |suffix: &str| {
            ["VAULT_", "BAO_"].iter().find_map(|p| {
                var(&format!("{p}{suffix}"))
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
            })
        };
        let address = get("ADDR").ok_or_else(|| {
            Error::InvalidInput(
                "no Vault/OpenBao address: set VAULT_ADDR (or BAO_ADDR), e.g. https://vault:8200"
                    .into(),
            )
        })?;
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
        let mut s = VaultSettings::new(&address, auth)?;
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

    /// The HTTP client keyward uses for this server: rustls with the configured CA and
    /// client certificate, HTTP/1.1 keep-alive, `TCP_NODELAY`, redirects followed only
    /// within the same scheme. Public so benchmarks and tools use the very same settings.
    pub fn http_client(&self) -> Result<reqwest::Client, Error> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(self.request_deadline.min(Duration::from_secs(5)))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("keyward-vault/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                // Standby nodes redirect to the active one; never downgrade to http,
                // which would send the token in clear.
                let first = attempt.previous().first().map(|u| u.scheme().to_string());
                if attempt.previous().len() > 3 {
                    attempt.stop()
                } else if first.as_deref() == Some(attempt.url().scheme()) {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }));
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

/// Checks an address is an http(s) URL and strips any trailing `/`.
fn normalize_address(address: &str) -> Result<String, Error> {
    let trimmed = address.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(trimmed)
        .map_err(|e| Error::InvalidInput(format!("Vault address '{trimmed}' is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Error::InvalidInput(format!(
            "Vault address '{trimmed}' must be http://HOST[:PORT] or https://HOST[:PORT]"
        )));
    }
    if url.query().is_some() || !url.username().is_empty() {
        return Err(Error::InvalidInput(format!(
            "Vault address '{trimmed}' must not carry a query or credentials"
        )));
    }
    Ok(trimmed.to_string())
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
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<VaultSettings, Error> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        VaultSettings::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn vault_vars_win_over_bao_vars() {
        let s = from(&[
            ("VAULT_ADDR", "http://a:8200/"),
            ("BAO_ADDR", "http://b:8200"),
            ("BAO_TOKEN", "t"),
        ])
        .unwrap();
        assert_eq!(s.address, "http://a:8200");
        assert!(matches!(s.auth, VaultAuth::Token(ref t) if t.as_str() == "t"));
        assert_eq!(s.request_deadline, DEFAULT_DEADLINE);
    }

    #[test]
    fn approle_tls_namespace_and_timeout() {
        let s = from(&[
            ("BAO_ADDR", "https://vault.internal:8200"),
            ("VAULT_ROLE_ID_FILE", "/r"),
            ("VAULT_SECRET_ID_FILE", "/s"),
            ("VAULT_CACERT", "/ca.pem"),
            ("VAULT_CLIENT_CERT", "/c.pem"),
            ("VAULT_CLIENT_KEY", "/k.pem"),
            ("VAULT_NAMESPACE", "team"),
            ("VAULT_CLIENT_TIMEOUT", "1500ms"),
        ])
        .unwrap();
        let VaultAuth::AppRole(a) = &s.auth else {
            panic!("expected AppRole, got {:?}", s.auth)
        };
        assert_eq!(a.mount, "approle");
        assert_eq!(a.role_id_file, PathBuf::from("/r"));
        assert_eq!(s.ca_file, Some(PathBuf::from("/ca.pem")));
        assert_eq!(s.client_cert.unwrap().key_file, PathBuf::from("/k.pem"));
        assert_eq!(s.namespace.as_deref(), Some("team"));
        assert_eq!(s.request_deadline, Duration::from_millis(1500));
    }

    #[test]
    fn missing_pieces_are_named() {
        let e = from(&[("VAULT_TOKEN", "t")]).unwrap_err().to_string();
        assert!(e.contains("VAULT_ADDR"), "{e}");
        let e = from(&[("VAULT_ADDR", "http://a")]).unwrap_err().to_string();
        assert!(e.contains("VAULT_TOKEN"), "{e}");
        let e = from(&[("VAULT_ADDR", "http://a"), ("VAULT_ROLE_ID_FILE", "/r")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("VAULT_SECRET_ID_FILE"), "{e}");
        let e = from(&[("VAULT_ADDR", "ftp://a"), ("VAULT_TOKEN", "t")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be http"), "{e}");
        let e = from(&[
            ("VAULT_ADDR", "http://a"),
            ("VAULT_TOKEN", "t"),
            ("VAULT_CLIENT_TIMEOUT", "5h"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown unit"), "{e}");
    }

    #[test]
    fn debug_never_shows_the_token() {
        let s = from(&[("VAULT_ADDR", "http://a"), ("VAULT_TOKEN", "s.supersecret")]).unwrap();
        let d = format!("{s:?}");
        assert!(!d.contains("supersecret") && d.contains("redacted"), "{d}");
    }

    #[test]
    fn timeouts_parse() {
        assert_eq!(parse_timeout("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_timeout("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("s").is_err());
    }
}
