//! A token's session pool, and recovery when the token or its sessions go away.
//!
//! A cryptoki `Session` is `Send` but not `Sync`: each one is used by one thread at a
//! time, checked out of the pool for one operation and put back. Operations reach the
//! pool through the token's dispatcher (see `dispatch`), which runs at most `cap` of
//! them at once on tokio's blocking threads, so at most `cap` sessions are in use.
//!
//! Sessions are opened "no close on drop" so keyward decides when `C_CloseSession` is
//! called: after a module reset, session handles are handed out again from 1, and
//! closing a stale handle would close someone else's new session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use cryptoki::error::Error as CkError;
use cryptoki::session::Session;
use keyward_core::Error;

use crate::dispatch::Dispatcher;
use crate::errors::{self, Recovery};
use crate::module::{initialize, lock};
use crate::token::Token;

/// A session and the pool generation it was opened (or last vouched for) in.
pub(crate) struct Pooled {
    session: Session,
    generation: u64,
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
    idle: Mutex<Vec<Pooled>>,
    dispatch: Arc<Dispatcher>,
    /// Bumped by every recovery; key handles and sessions from older generations are stale.
    generation: AtomicU64,
    /// Sessions from generations below this one died with the module or token: they are
    /// forgotten, never closed.
    dead_below: AtomicU64,
    /// The generation in which the user last logged in.
    logged_in: AtomicU64,
    recover_lock: Mutex<()>,
    /// Held shared while a session is in use, and exclusively while a reset replaces
    /// the sessions: after a module reset the module hands out the same session and
    /// object handle numbers again, so no stale handle may be in use while new ones
    /// are created.
    in_use: RwLock<()>,
}

impl Pool {
    /// A pool of at most `cap` sessions in use at once.
    pub(crate) fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Pool {
            idle: Mutex::new(Vec::with_capacity(cap)),
            dispatch: Dispatcher::new(cap),
            generation: AtomicU64::new(1),
            dead_below: AtomicU64::new(0),
            logged_in: AtomicU64::new(0),
            recover_lock: Mutex::new(()),
            in_use: RwLock::new(()),
        }
    }

    /// Lowers the bound to `cap` (a later URI asked for fewer sessions); never raises it.
    pub(crate) fn limit(&self, cap: usize) {
        self.dispatch.limit(cap);
    }

    /// Runs `f` on a blocking thread, at most `cap` at once (see `dispatch`).
    pub(crate) async fn dispatch<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, Error> + Send + 'static,
    {
        self.dispatch.run(f).await
    }

    /// The current generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let dead_below = *self.dead_below.get_mut();
        for p in self
            .idle
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
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
        let p = self
            .checkout()
            .map_err(|e| errors::map(e, &what(), &self.describe()))?;
        self.checkin(p);
        Ok(())
    }

    /// Runs `op` on a pooled session (the caller is on a blocking thread, inside the
    /// dispatcher's bound). On an error that a fresh session or login can cure, the pool
    /// recovers and `op` runs once more. `op` gets the pool generation, so it can tell
    /// when its cached object handles went stale. `what` describes the operation for
    /// error messages.
    pub(crate) fn run<T>(
        &self,
        what: &dyn Fn() -> String,
        mut op: impl FnMut(&Session, u64) -> Result<T, OpError>,
    ) -> Result<T, Error> {
        let mut retried = false;
        loop {
            let generation = self.pool.generation();
            let in_use = self.pool.in_use.read().unwrap_or_else(|p| p.into_inner());
            let result = self.checkout().map_err(OpError::Ck).and_then(|p| {
                let out = op(&p.session, p.generation);
                match &out {
                    Err(OpError::Ck(e)) if errors::recovery_for(e).is_some() => {
                        self.discard(p, errors::recovery_for(e))
                    }
                    _ => self.checkin(p),
                }
                out
            });
            drop(in_use);
            match result {
                Ok(v) => return Ok(v),
                Err(OpError::Keyward(e)) => return Err(e),
                Err(OpError::Ck(e)) => match errors::recovery_for(&e) {
                    Some(kind) if !retried => {
                        tracing::warn!(
                            token = %self.label,
                            error = %errors::describe(&e),
                            recovery = ?kind,
                            "PKCS#11 token needs recovery; retrying once"
                        );
                        self.recover(generation, kind)?;
                        retried = true;
                    }
                    _ => return Err(errors::map(e, &what(), &self.describe())),
                },
            }
        }
    }

    /// A session of the current generation, logged in: an idle one, or a new one.
    fn checkout(&self) -> Result<Pooled, CkError> {
        let generation = self.pool.generation();
        let reused = loop {
            let Some(p) = lock(&self.pool.idle).pop() else {
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
                let slot = *self.slot.read().unwrap_or_else(|p| p.into_inner());
                Pooled {
                    session: self.ctx.open_rw_session_no_drop(slot)?,
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
    fn checkin(&self, p: Pooled) {
        if p.generation == self.pool.generation() {
            lock(&self.pool.idle).push(p);
        } else {
            self.discard(p, None);
        }
    }

    /// Gets rid of a session: closes it if it may still be alive, forgets it if its
    /// handle is dead (and may already belong to a new session).
    fn discard(&self, p: Pooled, why: Option<Recovery>) {
        let dead = why.is_some_and(|k| k >= Recovery::Reset)
            || p.generation < self.pool.dead_below.load(Ordering::Acquire);
        if why == Some(Recovery::Relogin) {
            // The session itself is fine; only the key handle or login went stale.
            lock(&self.pool.idle).push(Pooled {
                session: p.session,
                generation: p.generation,
            });
        } else if !dead {
            let _ = p.session.close();
        }
    }

    /// Brings the token back after an error of kind `kind` seen in generation `seen`.
    /// Several threads may see the same failure; the first one recovers, the others
    /// find the generation already moved on and just retry.
    fn recover(&self, seen: u64, kind: Recovery) -> Result<(), Error> {
        let _one_at_a_time = lock(&self.pool.recover_lock);
        if self.pool.generation() != seen {
            return Ok(());
        }
        let next = seen + 1;
        // A reset waits until no thread is inside an operation on an old handle, and
        // keeps them out until the new generation is in place.
        let _exclusive = (kind >= Recovery::Reset)
            .then(|| self.pool.in_use.write().unwrap_or_else(|p| p.into_inner()));
        let idle: Vec<Pooled> = std::mem::take(&mut *lock(&self.pool.idle));
        match kind {
            Recovery::Relogin => {
                // Sessions stay; they move to the new generation, which forces a login
                // and a fresh look-up of key handles.
                let mut pool = lock(&self.pool.idle);
                pool.extend(idle.into_iter().map(|p| Pooled {
                    session: p.session,
                    generation: next,
                }));
            }
            Recovery::Reopen => {
                for p in idle {
                    let _ = p.session.close();
                }
            }
            Recovery::Reset | Recovery::Reinitialize => {
                self.pool.dead_below.store(next, Ordering::Release);
                drop(idle); // forgotten: the handles are dead
                if kind == Recovery::Reinitialize {
                    initialize(&self.ctx, &self.module_path)?;
                }
                let (slot, info) = self.selector.find(&self.ctx, &self.module_path)?;
                if info.serial_number() != self.serial {
                    return Err(Error::backend(format!(
                        "{} was replaced by another token (serial {} instead of {})",
                        self.describe(),
                        info.serial_number(),
                        self.serial
                    )));
                }
                *self.slot.write().unwrap_or_else(|p| p.into_inner()) = slot;
            }
        }
        self.pool.generation.store(next, Ordering::Release);
        Ok(())
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
