//! Bringing a token back after its sessions, its key handles or the token itself went
//! away underneath keyward (see `sessions` for the cases and `crate::module` for resets).

use std::sync::atomic::Ordering;
use std::time::Instant;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::slot::Slot;
use keyward_core::Error;
use parking_lot::RwLockWriteGuard;

use super::Token;
use super::sessions::{Outage, Pooled, RETRY_GAP};
use crate::errors::{self, Recovery};
use crate::module::Restart;

/// Why the token was not found where it should be.
enum Lost {
    /// Not listed, not readable, or the module is down: it may come back.
    Away(String),
    /// The module is not initialized (someone finalized it, or initializing it failed).
    Uninitialized,
    /// Another token answers to the selector: a configuration matter, not an outage.
    Replaced(Error),
}

impl Token {
    /// Before an operation: fails at once during an outage (until `RETRY_GAP` passed
    /// since the last try), and recovers first when the token is away or the module
    /// was reset since the pool last looked.
    pub(crate) fn catch_up(&self) -> Result<(), Error> {
        self.look_again(false)
    }

    /// Looks for the token again (it could not be found by label or serial), as
    /// recovery does; fails at once within `RETRY_GAP` of the last failed look.
    pub(crate) fn refind(&self) -> Result<(), Error> {
        self.look_again(true)
    }

    fn look_again(&self, always: bool) -> Result<(), Error> {
        if !always
            && !self.pool.away.load(Ordering::Acquire)
            && self.pool.epoch.load(Ordering::Acquire) == self.module.epoch()
        {
            return Ok(());
        }
        let generation = self.pool.generation();
        let needed = match &*self.pool.outage.lock() {
            Some(o) if o.tried.elapsed() < RETRY_GAP => {
                return Err(Error::unavailable(o.message.clone(), None));
            }
            Some(_) => true,
            None => always || self.pool.epoch.load(Ordering::Acquire) != self.module.epoch(),
        };
        if needed {
            self.recover(generation, Recovery::Reset)?;
        }
        Ok(())
    }

    /// Whether the token still answers as itself in its slot (a token whose store
    /// vanished answers `CKR_GENERAL_ERROR` in SoftHSM, a removed one "not present").
    pub(crate) fn healthy(&self) -> bool {
        let slot = self.slot();
        let _shared = self.module.shared();
        self.module
            .ctx
            .get_token_info(slot)
            .is_ok_and(|info| info.serial_number() == self.serial)
    }

    /// Brings the token back after an error of kind `kind` seen in generation `seen`.
    /// Several threads may see the same failure; the first one recovers, the others
    /// find the generation already moved on and just retry (or get the outage's error).
    pub(crate) fn recover(&self, seen: u64, kind: Recovery) -> Result<(), Error> {
        let _one_at_a_time = self.pool.recover_lock.lock();
        if self.pool.generation() != seen {
            return self.pool.outage_error();
        }
        let next = seen + 1;
        match kind {
            Recovery::Relogin => {
                // Sessions stay; they move to the new generation, which forces a login
                // and a fresh look-up of key handles.
                let mut idle = self.pool.idle.lock();
                for p in idle.iter_mut() {
                    p.generation = next;
                }
            }
            Recovery::Reopen => {
                // Closed only while their handles are still theirs: not after a reset
                // of the module, which hands the same numbers to new sessions.
                let _shared = self.module.shared();
                let idle: Vec<Pooled> = std::mem::take(&mut *self.pool.idle.lock());
                if self.pool.epoch.load(Ordering::Acquire) == self.module.epoch() {
                    for p in idle {
                        let _ = p.session.close();
                    }
                }
            }
            Recovery::Reset | Recovery::Reinitialize | Recovery::Reload => {
                // Waits until no thread of any token of the module is inside an
                // operation on an old handle, and keeps them out until the new
                // generation is in place.
                let exclusive = self.module.exclusive();
                self.pool.dead_below.store(next, Ordering::Release);
                // Forgotten, not closed: the handles are dead or belong to others.
                drop(std::mem::take(&mut *self.pool.idle.lock()));
                let found = self.relocate(kind, &exclusive);
                self.pool
                    .epoch
                    .store(self.module.epoch(), Ordering::Release);
                self.pool.generation.store(next, Ordering::Release);
                return self.settle(found);
            }
        }
        self.pool.generation.store(next, Ordering::Release);
        Ok(())
    }

    /// Records the outcome of finding the token again: its slot, or the outage.
    fn settle(&self, found: Result<Slot, Lost>) -> Result<(), Error> {
        let mut outage = self.pool.outage.lock();
        match found {
            Ok(slot) => {
                *self.slot.write() = slot;
                self.pool.away.store(false, Ordering::Release);
                if let Some(o) = outage.take() {
                    tracing::info!(token = %self.label, was = %o.message, "PKCS#11 token is back");
                }
                Ok(())
            }
            Err(Lost::Replaced(e)) => Err(e),
            Err(Lost::Uninitialized) => unreachable!("relocate reports it as Away"),
            Err(Lost::Away(why)) => {
                let e = errors::token_gone(&self.describe(), &self.module.path, &why);
                if outage.is_none() {
                    tracing::warn!(token = %self.label, error = %why, "PKCS#11 token is unavailable");
                }
                *outage = Some(Outage {
                    tried: Instant::now(),
                    message: e.to_string(),
                });
                self.pool.away.store(true, Ordering::Release);
                Err(e)
            }
        }
    }

    /// Finds the token again after its sessions died, initializing the module first
    /// for `Reinitialize` (finalizing it before for `Reload`), and finalizing and initializing it when the token cannot be
    /// found or read (SoftHSM notices a token that came back only then). The caller
    /// holds the module exclusively.
    fn relocate(&self, kind: Recovery, exclusive: &RwLockWriteGuard<'_, ()>) -> Result<Slot, Lost> {
        let seen = self.pool.epoch.load(Ordering::Acquire);
        // The module's path is in the outage's message already.
        let down = |e: CkError| {
            Lost::Away(format!(
                "it cannot be initialized ({})",
                errors::describe(&e)
            ))
        };
        match kind {
            Recovery::Reinitialize => self
                .module
                .reset(seen, Restart::Initialize, exclusive)
                .map_err(down)?,
            Recovery::Reload => self
                .module
                .reset(seen, Restart::Reload, exclusive)
                .map_err(down)?,
            _ => {}
        }
        match self.find_same() {
            // Nothing is open in an uninitialized module: initialize it, whoever reset
            // it last.
            Err(Lost::Uninitialized) => {
                self.module
                    .reset(self.module.epoch(), Restart::Initialize, exclusive)
                    .map_err(down)?;
            }
            Err(Lost::Away(why)) => {
                tracing::warn!(token = %self.label, error = %why, "PKCS#11 token not found; resetting the module");
                // Skipped when the module was reset since the pool's sessions were
                // opened: the token was looked for afresh then.
                self.module
                    .reset(seen, Restart::Reload, exclusive)
                    .map_err(down)?;
            }
            other => return other,
        }
        match self.find_same() {
            Err(Lost::Uninitialized) => Err(Lost::Away(
                "the module is not initialized (CKR_CRYPTOKI_NOT_INITIALIZED)".into(),
            )),
            other => other,
        }
    }

    /// The slot of this very token (same serial) as the module lists it now.
    fn find_same(&self) -> Result<Slot, Lost> {
        match self.selector.find(&self.module) {
            Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, _)) => Err(Lost::Uninitialized),
            Err(e) => Err(Lost::Away(format!(
                "listing its tokens failed ({})",
                errors::describe(&e)
            ))),
            Ok(Err(e)) => Err(Lost::Away(e.to_string())),
            Ok(Ok((_, info))) if info.serial_number() != self.serial => {
                Err(Lost::Replaced(Error::backend(format!(
                    "{} was replaced by another token (serial {} instead of {})",
                    self.describe(),
                    info.serial_number(),
                    self.serial
                ))))
            }
            Ok(Ok((slot, _))) => Ok(slot),
        }
    }
}
