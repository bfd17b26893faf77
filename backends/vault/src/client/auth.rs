//! The token: obtained (fixed, read from a file, or by AppRole login), renewed by a
//! background task before its lease ends, and obtained again when renewal fails or
//! can no longer extend it. The token is `Zeroizing` and never logged.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use keyward_core::Error;
use reqwest::Method;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::renewal::spawn_maintainer;
use super::{TokenUse, VaultClient};
use crate::settings::VaultAuth;

/// A token refused with "permission denied" is replaced by a new login at most once per
/// this interval, so a missing policy does not turn every request into a login.
const REFRESH_ON_DENIAL_MIN_AGE: Duration = Duration::from_secs(10);
/// Pause before trying again after a failed renewal, login or lookup.
pub(super) const RETRY_PAUSE: Duration = Duration::from_secs(5);

/// The token and lease part of a login or renewal answer.
#[derive(Deserialize)]
pub(crate) struct AuthBlock {
    client_token: Zeroizing<String>,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

/// What keyward knows of its token, for status pages and tests (never the token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthStatus {
    /// The auth method: `token`, `token-file` or `approle`.
    pub method: &'static str,
    /// Tokens obtained by AppRole login or by reading the token file.
    pub logins: u64,
    /// Successful lease renewals.
    pub renewals: u64,
    /// Failed renewals, logins and lookups of the token (each one logged).
    pub failures: u64,
    /// Time left on the current token's lease; `None` when unknown or never expiring.
    pub expires_in: Option<Duration>,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Lease {
    /// Lease length as of `since`; zero means the token never expires.
    pub(super) ttl: Duration,
    pub(super) since: Instant,
    pub(super) renewable: bool,
    /// What to ask for at renewal: the token's original TTL.
    pub(super) increment: Duration,
    /// The last renewal got less than asked: the max TTL is near, log in again next.
    pub(super) capped: bool,
}

/// A new token and, when the auth method tells it, its lease.
type Acquired = Result<(Zeroizing<String>, Option<Lease>), Error>;

struct Current {
    token: Arc<Zeroizing<String>>,
    generation: u64,
    obtained: Instant,
    /// `None` until looked up (fixed tokens and token files).
    lease: Option<Lease>,
}

/// The token state shared by all clones of one `VaultClient`.
pub(crate) struct AuthState {
    method: VaultAuth,
    current: RwLock<Option<Current>>,
    refresh: tokio::sync::Mutex<()>,
    generations: AtomicU64,
    logins: AtomicU64,
    pub(super) renewals: AtomicU64,
    failures: AtomicU64,
    maintainer: AtomicBool,
}

impl AuthState {
    pub(crate) fn new(method: VaultAuth) -> Self {
        AuthState {
            method,
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
            generations: AtomicU64::new(0),
            logins: AtomicU64::new(0),
            renewals: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            maintainer: AtomicBool::new(false),
        }
    }

    pub(crate) fn method_name(&self) -> &'static str {
        self.method.method_name()
    }

    pub(super) fn can_obtain_again(&self) -> bool {
        !matches!(self.method, VaultAuth::Token(_))
    }

    pub(super) fn generation(&self) -> Option<u64> {
        self.current.read().ok()?.as_ref().map(|c| c.generation)
    }

    pub(super) fn lease(&self, generation: u64) -> Option<Option<Lease>> {
        let cur = self.current.read().ok()?;
        cur.as_ref()
            .filter(|c| c.generation == generation)
            .map(|c| c.lease)
    }

    pub(super) fn set_lease(&self, generation: u64, lease: Lease) {
        if let Ok(mut cur) = self.current.write()
            && let Some(c) = cur.as_mut().filter(|c| c.generation == generation)
        {
            c.lease = Some(lease);
        }
    }

    pub(super) fn failed(&self, what: &str, e: &Error) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %keyward_core::chain_line(e), "Vault token {what} failed");
    }
}

impl VaultClient {
    /// What keyward knows of its token right now.
    pub fn auth_status(&self) -> AuthStatus {
        let a = &self.inner.auth;
        let expires_in = a.current.read().ok().and_then(|c| {
            let lease = c.as_ref()?.lease?;
            (!lease.ttl.is_zero()).then(|| lease.ttl.saturating_sub(lease.since.elapsed()))
        });
        AuthStatus {
            method: a.method_name(),
            logins: a.logins.load(Ordering::Relaxed),
            renewals: a.renewals.load(Ordering::Relaxed),
            failures: a.failures.load(Ordering::Relaxed),
            expires_in,
        }
    }

    /// The current token and its generation, obtaining one first if there is none.
    pub(crate) async fn token(&self) -> Result<(Arc<Zeroizing<String>>, u64), Error> {
        if let Ok(cur) = self.inner.auth.current.read()
            && let Some(c) = cur.as_ref()
        {
            return Ok((Arc::clone(&c.token), c.generation));
        }
        self.obtain(None).await
    }

    /// Obtains a new token, unless one newer than generation `stale` (or any token,
    /// when `stale` is `None`) is already there.
    pub(super) async fn obtain(
        &self,
        stale: Option<u64>,
    ) -> Result<(Arc<Zeroizing<String>>, u64), Error> {
        let auth = &self.inner.auth;
        let _one_at_a_time = auth.refresh.lock().await;
        if let Ok(cur) = auth.current.read()
            && let Some(c) = cur.as_ref()
            && stale != Some(c.generation)
        {
            return Ok((Arc::clone(&c.token), c.generation));
        }
        let (token, lease) = self.acquire().await?;
        if reqwest::header::HeaderValue::from_str(&token).is_err() {
            return Err(Error::InvalidInput(format!(
                "the Vault token ({}) contains characters not allowed in an HTTP header",
                auth.method_name()
            )));
        }
        let token = Arc::new(token);
        let generation = auth.generations.fetch_add(1, Ordering::Relaxed) + 1;
        if auth.can_obtain_again() {
            auth.logins.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut cur) = auth.current.write() {
            *cur = Some(Current {
                token: Arc::clone(&token),
                generation,
                obtained: Instant::now(),
                lease,
            });
        }
        tracing::debug!(vault = %self.address(), method = auth.method_name(), generation, "Vault token obtained");
        if !auth.maintainer.swap(true, Ordering::AcqRel) {
            spawn_maintainer(Arc::downgrade(&self.inner));
        }
        Ok((token, generation))
    }

    /// A token from the configured method, with its lease when the method tells it.
    async fn acquire(&self) -> Acquired {
        match &self.inner.auth.method {
            VaultAuth::Token(t) => Ok((t.clone(), None)),
            VaultAuth::TokenFile(path) => Ok((read_secret(path, "token file")?, None)),
            VaultAuth::AppRole(a) => {
                #[derive(serde::Serialize)]
                struct Login<'a> {
                    role_id: &'a str,
                    secret_id: &'a str,
                }
                let role_id = read_secret(&a.role_id_file, "AppRole role_id file")?;
                let secret_id = read_secret(&a.secret_id_file, "AppRole secret_id file")?;
                let body = Zeroizing::new(
                    serde_json::to_vec(&Login {
                        role_id: &role_id,
                        secret_id: &secret_id,
                    })
                    .map_err(|e| Error::backend_with("cannot encode the AppRole login", e))?,
                );
                let path = format!("auth/{}/login", a.mount.trim_matches('/'));
                let env = self
                    .call_anonymous::<serde_json::Value>(Method::POST, &path, Some(&body))
                    .await
                    .map_err(|e| match e {
                        Error::NotFound(_) => Error::backend(format!(
                            "AppRole login at {path} on {} refused: role or secret_id not found",
                            self.address()
                        )),
                        e => e,
                    })?;
                let auth = env.auth.ok_or_else(|| {
                    Error::backend(format!("AppRole login at {path} returned no token"))
                })?;
                let lease = lease_of(&auth);
                Ok((auth.client_token, Some(lease)))
            }
        }
    }

    /// After a "permission denied": obtains a new token if the method allows it and the
    /// current one (generation `generation`) is old enough. True if a new one is in place.
    pub(crate) async fn refresh_after_denial(&self, generation: u64) -> bool {
        let auth = &self.inner.auth;
        if !auth.can_obtain_again() {
            return false;
        }
        let (old, old_enough) = match auth.current.read() {
            Ok(cur) => match cur.as_ref().filter(|c| c.generation == generation) {
                Some(c) => (
                    Arc::clone(&c.token),
                    c.obtained.elapsed() >= REFRESH_ON_DENIAL_MIN_AGE,
                ),
                None => return true, // someone already replaced it: retry with the new one
            },
            Err(_) => return false,
        };
        if !old_enough {
            return false;
        }
        match self.obtain(Some(generation)).await {
            Ok((new, _)) => new.as_str() != old.as_str(),
            Err(e) => {
                auth.failed("login after a denial", &e);
                false
            }
        }
    }

    pub(super) async fn renew_self(&self, increment: Duration) -> Result<Lease, Error> {
        let body = format!("{{\"increment\":\"{}s\"}}", increment.as_secs());
        let env = self
            .call::<serde_json::Value>(
                Method::POST,
                "auth/token/renew-self",
                Some(body.as_bytes()),
                TokenUse::NoRefresh,
            )
            .await?;
        let auth = env
            .auth
            .ok_or_else(|| Error::backend("token renewal returned no lease"))?;
        let mut lease = lease_of(&auth);
        lease.increment = increment;
        lease.capped = lease.ttl + Duration::from_secs(1) < increment;
        Ok(lease)
    }

    pub(super) async fn lookup_self(&self) -> Result<Lease, Error> {
        #[derive(Deserialize)]
        struct Lookup {
            #[serde(default)]
            ttl: u64,
            #[serde(default)]
            creation_ttl: u64,
            #[serde(default)]
            renewable: bool,
        }
        let env = self
            .call::<Lookup>(
                Method::GET,
                "auth/token/lookup-self",
                None,
                TokenUse::NoRefresh,
            )
            .await?;
        let l = env
            .data
            .ok_or_else(|| Error::backend("token lookup returned no data"))?;
        let ttl = Duration::from_secs(l.ttl);
        Ok(Lease {
            ttl,
            since: Instant::now(),
            renewable: l.renewable,
            increment: Duration::from_secs(l.creation_ttl).max(ttl),
            capped: false,
        })
    }
}

fn lease_of(auth: &AuthBlock) -> Lease {
    let ttl = Duration::from_secs(auth.lease_duration);
    Lease {
        ttl,
        since: Instant::now(),
        renewable: auth.renewable,
        increment: ttl,
        capped: false,
    }
}

/// Reads a one-line secret (token, role_id, secret_id) from `path`, trimmed.
fn read_secret(path: &Path, what: &str) -> Result<Zeroizing<String>, Error> {
    let raw = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read Vault {what} {}", path.display()), e))?,
    );
    let trimmed = Zeroizing::new(raw.trim().to_string());
    if trimmed.is_empty() {
        return Err(Error::InvalidInput(format!(
            "Vault {what} {} is empty",
            path.display()
        )));
    }
    Ok(trimmed)
}
