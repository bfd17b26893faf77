//! A token's session pool, and running operations on pooled sessions: recovery when
//! the token or its sessions go away is started here.
//!
//! A cryptoki `Session` is `Send` but not `Sync`: each one is used by one thread at a
//! time, checked out of the pool for one operation and put back. Operations reach the
//! pool through the token's dispatcher (see `dispatch`), which runs at most `cap` of
//! them at once on tokio's blocking threads, so at most `cap` sessions are in use.
//!
//! Sessions are opened "no close on drop" so keyward decides when `C_CloseSession` is
//! called: after a module reset, session handles are handed out again from 1, and
//! closing a stale handle would close someone else's new session.
//!
//! Recovery (see `recover`): stale key handles are looked up again, logged-out sessions
//! reopened, dead sessions forgotten and the token found again by label and serial. A
//! token that cannot be found or read any more (SoftHSM: its directory went away; it
//! answers `CKR_OBJECT_HANDLE_INVALID` for keys and `CKR_GENERAL_ERROR` for the token's
//! info, and keeps doing so after the directory is back) is seen again only after
//! `C_Finalize` and `C_Initialize` of the module, so recovery resets the module (see
//! `crate::module`). While the token stays away every call fails with `Unavailable`,
//! and the pool looks for it again at most once per `RETRY_GAP`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptoki::error::Error as CkError;
use cryptoki::session::Session;
use keyward_core::Error;
use parking_lot::Mutex;

use super::Token;
use crate::dispatch::Dispatcher;
use crate::errors::{self, Recovery};

/// A session and the pool generation it was opened (or last vouched for) in. Owned by
/// one thread at a time (a `Session` is `Send`, not `Sync`): out of `Pool::idle` for
/// one operation, then back in.
pub(crate) struct Pooled {
    pub(crate) session: Session,
    pub(crate) generation: u64,
}

/// What an operation on a session can fail with: a PKCS#11 error (which may call for
/// recovery) or an error keyward already put in words (e.g. a key that is gone).
#[derive(Debug)]
pub(crate) enum OpError {
    Ck(CkError),
    Keyward(Error),
}

impl From<CkError> for OpError {
    fn from(e: CkError) -> Self {
        OpError::Ck(e)
    }
}

impl From<Error> for OpError {
    fn from(e: Error) -> Self {
        OpError::Keyward(e)
    }
}

/// The sessions of one token.
pub(crate) struct Pool {
    /// Sessions no thread is using.
    pub(crate) idle: Mutex<Vec<Pooled>>,
    dispatch: Arc<Dispatcher>,
    /// Bumped by every recovery; key handles and sessions from older generations are stale.
    pub(crate) generation: AtomicU64,
    /// Sessions from generations below this one died with the module or token: they are
    /// forgotten, never closed.
    pub(crate) dead_below: AtomicU64,
    /// The generation in which the user last logged in.
    logged_in: AtomicU64,
    /// Held by the one thread recovering the token; the others wait, then find the
    /// generation moved on.
    pub(crate) recover_lock: Mutex<()>,
    /// The module epoch the sessions and slot belong to; the module moving on means
    /// they died with its old context.
    pub(crate) epoch: AtomicU64,
    /// Set while the token is away: when recovery last failed, and why.
    pub(crate) outage: Mutex<Option<Outage>>,
    /// Whether `outage` is set, for a lock-free look on every operation.
    pub(crate) away: AtomicBool,
}

/// A failed recovery: the token is away.
pub(crate) struct Outage {
    pub(crate) tried: Instant,
    pub(crate) message: String,
}

/// During an outage, the pool looks for the token again at most this often; calls in
/// between fail at once (callers such as the agent back off on their own).
pub(crate) const RETRY_GAP: Duration = Duration::from_millis(250);

/// What went wrong in one try of an operation.
enum Failed {
    /// The module was reset since the pool last looked: the sessions are dead.
    Stale,
    Op(OpError),
}

impl Pool {
    /// A pool of at most `cap` sessions in use at once, for a module in `epoch`.
    pub(crate) fn new(cap: usize, epoch: u64) -> Self {
        let cap = cap.max(1);
        Pool {
            idle: Mutex::new(Vec::with_capacity(cap)),
            dispatch: Dispatcher::new(cap),
            generation: AtomicU64::new(1),
            dead_below: AtomicU64::new(0),
            logged_in: AtomicU64::new(0),
            recover_lock: Mutex::new(()),
            epoch: AtomicU64::new(epoch),
            outage: Mutex::new(None),
            away: AtomicBool::new(false),
        }
    }

    /// Lowers the bound to `cap` (a later URI asked for fewer sessions); never raises it.
    pub(crate) fn limit(&self, cap: usize) {
        self.dispatch.limit(cap);
    }

    /// Runs `f`, which may take long, on a blocking thread, at most `cap` at once (see
    /// `dispatch`).
    pub(crate) async fn dispatch<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, Error> + Send + 'static,
    {
        self.dispatch.run(f).await
    }

    /// Runs `f`, a quick operation such as a signature, on the caller's thread when a
    /// slot is at hand, on a blocking thread otherwise (see `dispatch`).
    pub(crate) async fn dispatch_quick<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, Error> + Send + 'static,
    {
        self.dispatch.run_quick(f).await
    }

    /// The current generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The outage's error, or `Ok` when the token is not away.
    pub(crate) fn outage_error(&self) -> Result<(), Error> {
        match &*self.outage.lock() {
            Some(o) => Err(Error::unavailable(o.message.clone(), None)),
            None => Ok(()),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let dead_below = *self.dead_below.get_mut();
        for p in self.idle.get_mut().drain(..) {
            if p.generation >= dead_below {
                let _ = p.session.close();
            }
        }
    }
}

impl Token {
    /// Opens the first session and logs in, so a wrong PIN shows up at once.
    pub(crate) fn warm_up(&self) -> Result<(), Error> {
        let what = || format!("logging in to {}", self.describe());
        let _shared = self.module.shared();
        let p = self
            .checkout()
            .map_err(|e| errors::map(e, &what(), &self.describe()))?;
        self.checkin(p);
        Ok(())
    }

    /// Runs `op` on a pooled session (the caller is on a blocking thread, inside the
    /// dispatcher's bound). On an error that a fresh session, login or module reset can
    /// cure, the pool recovers and `op` runs once more. `op` gets the pool generation,
    /// so it can tell when its cached object handles went stale. `what` describes the
    /// operation for error messages.
    pub(crate) fn run<T>(
        &self,
        what: &dyn Fn() -> String,
        mut op: impl FnMut(&Session, u64) -> Result<T, OpError>,
    ) -> Result<T, Error> {
        self.catch_up()?;
        let mut retried = false;
        loop {
            let generation = self.pool.generation();
            let shared = self.module.shared();
            let result = if self.pool.epoch.load(Ordering::Acquire) != self.module.epoch() {
                Err(Failed::Stale)
            } else {
                self.checkout()
                    .map_err(OpError::Ck)
                    .and_then(|p| {
                        let out = op(&p.session, p.generation);
                        match &out {
                            Err(OpError::Ck(e)) if errors::recovery_for(e).is_some() => {
                                self.discard(p, errors::recovery_for(e))
                            }
                            _ => self.checkin(p),
                        }
                        out
                    })
                    .map_err(Failed::Op)
            };
            drop(shared);
            let kind = match result {
                Ok(v) => return Ok(v),
                Err(Failed::Stale) => Recovery::Reset,
                Err(Failed::Op(OpError::Keyward(e))) => {
                    // A key that vanished with its token is an outage, not a missing key.
                    if !matches!(e, Error::NotFound(_)) || self.healthy() {
                        return Err(e);
                    }
                    if retried {
                        return Err(errors::token_gone(
                            &self.describe(),
                            &self.module.path,
                            &format!("{e}, and the token cannot be read"),
                        ));
                    }
                    Recovery::Reset
                }
                Err(Failed::Op(OpError::Ck(e))) => match errors::recovery_for(&e) {
                    None => return Err(errors::map(e, &what(), &self.describe())),
                    Some(_) if retried => {
                        return Err(errors::still_failing(e, &what(), &self.describe()));
                    }
                    Some(kind) => {
                        tracing::warn!(
                            token = %self.label,
                            error = %errors::describe(&e),
                            recovery = ?kind,
                            "PKCS#11 token needs recovery; retrying once"
                        );
                        // Stale handles on a token that cannot be read: it went away.
                        if kind < Recovery::Reset && !self.healthy() {
                            Recovery::Reset
                        } else {
                            kind
                        }
                    }
                },
            };
            self.recover(generation, kind)?;
            retried = true;
        }
    }

    /// A session of the current generation, logged in: an idle one, or a new one. The
    /// caller holds the module shared.
    fn checkout(&self) -> Result<Pooled, CkError> {
        let generation = self.pool.generation();
        let reused = loop {
            let Some(p) = self.pool.idle.lock().pop() else {
                break None;
            };
            if p.generation == generation {
                break Some(p);
            }
            self.discard(p, None);
        };
        let p = match reused {
            Some(p) => p,
            None => {
                let slot = self.slot();
                Pooled {
                    session: self.module.ctx.open_rw_session_no_drop(slot)?,
                    generation,
                }
            }
        };
        if self.pool.logged_in.load(Ordering::Acquire) != generation {
            if let Err(e) = self.login(&p.session) {
                self.discard(p, errors::recovery_for(&e).or(Some(Recovery::Reopen)));
                return Err(e);
            }
            self.pool.logged_in.store(generation, Ordering::Release);
        }
        Ok(p)
    }

    /// Puts a session back, or disposes of it if the pool moved on meanwhile.
    pub(crate) fn checkin(&self, p: Pooled) {
        if p.generation == self.pool.generation() {
            self.pool.idle.lock().push(p);
        } else {
            self.discard(p, None);
        }
    }

    /// Gets rid of a session: closes it if it may still be alive, forgets it if its
    /// handle is dead (and may already belong to a new session).
    pub(crate) fn discard(&self, p: Pooled, why: Option<Recovery>) {
        let dead = why.is_some_and(|k| k >= Recovery::Reset)
            || p.generation < self.pool.dead_below.load(Ordering::Acquire);
        if why == Some(Recovery::Relogin) {
            // The session itself is fine; only the key handle or login went stale.
            self.pool.idle.lock().push(Pooled {
                session: p.session,
                generation: p.generation,
            });
        } else if !dead {
            let _ = p.session.close();
        }
    }
}

impl Token {
    /// Runs `op` on a pooled session from async code, on a blocking thread (see
    /// [`Token::run`]).
    pub(crate) async fn blocking<T, F>(
        self: &Arc<Self>,
        what: impl Fn() -> String + Send + 'static,
        op: F,
    ) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnMut(&Session, u64) -> Result<T, OpError> + Send + 'static,
    {
        let token = Arc::clone(self);
        self.pool.dispatch(move || token.run(&what, op)).await
    }
}
