//! The rcgen adapter: rcgen's synchronous `SigningKey` + `PublicKeyData` over an
//! `Arc<dyn KeySigner>`, and `PublicKeyData` for the subject keys certificates carry.
//!
//! rcgen signs synchronously. The adapter answers it in one of two ways, chosen per
//! rcgen call on the calling thread:
//!
//! - **On the blocking pool** (`spawn_blocking`): it polls the signer's future once with
//!   a no-op waker and otherwise drives it to completion with `Handle::block_on`, which
//!   is allowed on blocking-pool threads and never used on a runtime worker thread.
//! - **On the async task itself** ([`sign_on_task`]): a signer that answers at the first
//!   poll (software keys; a PKCS#11 token with a free session, which signs in place)
//!   signs inline, with no hand-off to another thread. Otherwise (HTTP backends) the
//!   started signature is kept, rcgen is stopped, the task awaits the signature, and
//!   rcgen encodes the certificate again, deterministically, with it.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::runtime::Handle;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::check::{key_algorithm_name, key_type, rsa_encryption_bits};
use crate::{Algorithm, Error, KeySigner, KeyType, subject_public_key};

thread_local! {
    /// The keyward error behind the last `rcgen::Error::RemoteKeyError` raised by the
    /// adapter on this thread: rcgen's error type cannot carry it, so it waits here
    /// until [`map_rcgen_error`] picks it up on the same thread.
    static SIGN_ERROR: RefCell<Option<Error>> = const { RefCell::new(None) };

    /// How the adapter answers the rcgen call running on this thread.
    static PLAN: RefCell<Plan> = const { RefCell::new(Plan::Block) };
}

/// A signature in flight: the message and the signer's future, owned.
struct Pending {
    message: Arc<[u8]>,
    signature: Pin<Box<dyn Future<Output = Result<Vec<u8>, Error>> + Send>>,
}

/// How [`RcgenKey`] answers rcgen on this thread.
enum Plan {
    /// Wait for the signer (a blocking-pool thread; the default).
    Block,
    /// On an async task: sign if the signer answers at the first poll, else leave
    /// the started signature here (`Some`) and stop rcgen.
    Now(Option<Pending>),
    /// The second pass: rcgen gets this signature over this message.
    Signed {
        message: Arc<[u8]>,
        signature: Vec<u8>,
    },
}

/// Sets this thread's plan for one rcgen call, and puts back the default when
/// dropped, also if rcgen panics.
struct PlanGuard;

impl PlanGuard {
    fn set(plan: Plan) -> Self {
        PLAN.with(|slot| *slot.borrow_mut() = plan);
        PlanGuard
    }

    /// Ends the call: the plan as the adapter left it.
    fn finish(self) -> Plan {
        PLAN.with(|slot| slot.replace(Plan::Block))
    }
}

impl Drop for PlanGuard {
    fn drop(&mut self) {
        PLAN.with(|slot| *slot.borrow_mut() = Plan::Block);
    }
}

/// Runs `encode`, an rcgen call that signs once with an [`RcgenKey`], on the async task
/// that calls it without blocking its thread on the signer: a signer that answers at
/// the first poll signs inline, and the task then yields once; otherwise its signature
/// is awaited and `encode` runs a second time with it (rcgen encodes the same
/// parameters to the same bytes). `what` names the object for errors.
pub(crate) async fn sign_on_task<T>(
    encode: impl Fn() -> Result<T, rcgen::Error>,
    what: &str,
) -> Result<T, Error> {
    clear_sign_error();
    let guard = PlanGuard::set(Plan::Now(None));
    let first = encode();
    let plan = guard.finish();
    let pending = match (first, plan) {
        (Ok(done), _) => {
            // Signed inline: this task has not waited, so it yields once, letting a
            // loop of issuances leave the runtime's other tasks and timers their turn.
            // A signer that answered later needs no yield: awaiting it was one, and
            // another would only wake an idle worker for nothing.
            tokio::task::yield_now().await;
            return Ok(done);
        }
        (Err(rcgen::Error::RemoteKeyError), Plan::Now(Some(pending))) => pending,
        (Err(e), _) => return Err(map_rcgen_error(e, what)),
    };
    let signature = pending.signature.await?;
    let guard = PlanGuard::set(Plan::Signed {
        message: pending.message,
        signature,
    });
    let second = encode();
    drop(guard);
    second.map_err(|e| map_rcgen_error(e, what))
}

/// rcgen's view of a keyward [`KeySigner`]: the key an issuer signs with.
pub(crate) struct RcgenKey {
    signer: Arc<dyn KeySigner>,
    raw_public_key: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
    /// The runtime current when the adapter was made, used only if the signing
    /// thread has no runtime context of its own.
    handle: Option<Handle>,
}

impl RcgenKey {
    /// Wraps `signer`; RSA-PSS keys are refused because rcgen signs RSA certificates
    /// with PKCS#1 v1.5 only.
    pub(crate) fn new(signer: Arc<dyn KeySigner>) -> Result<Self, Error> {
        let alg = signer.algorithm();
        let rcgen_alg = alg.rcgen().ok_or_else(|| {
            Error::Unsupported(format!(
                "{} signs {alg}: certificates cannot be signed with RSA-PSS (rcgen signs RSA \
                 with PKCS#1 v1.5); use the key as an {} key",
                signer.uri(),
                Algorithm::default_for(alg.key_type())
            ))
        })?;
        let raw_public_key = subject_public_key(signer.public_key_spki_der())?;
        Ok(RcgenKey {
            signer,
            raw_public_key,
            alg: rcgen_alg,
            handle: Handle::try_current().ok(),
        })
    }

    /// The raw `subjectPublicKey` bits of the signer.
    pub(crate) fn raw_public_key(&self) -> &[u8] {
        &self.raw_public_key
    }

    /// Starts signing `msg` and polls once: the signature, or the signature in flight.
    fn sign_now(&self, msg: &[u8]) -> Result<Result<Vec<u8>, Error>, Pending> {
        let message: Arc<[u8]> = Arc::from(msg);
        let (signer, owned) = (Arc::clone(&self.signer), Arc::clone(&message));
        let mut signature: Pin<Box<dyn Future<Output = Result<Vec<u8>, Error>> + Send>> =
            Box::pin(async move { signer.sign(&owned).await });
        match signature
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(result) => Ok(result),
            Poll::Pending => Err(Pending { message, signature }),
        }
    }

    /// Signs `msg` synchronously. Must run on a blocking-pool thread (or outside any
    /// runtime), never on a runtime worker thread.
    fn sign_blocking(&self, msg: &[u8]) -> Result<Vec<u8>, Error> {
        let mut fut = self.signer.sign(msg);
        // Fast path: a signer that completes without waiting (software keys) needs no
        // executor at all.
        if let Poll::Ready(result) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            return result;
        }
        let handle = Handle::try_current()
            .ok()
            .or_else(|| self.handle.clone())
            .ok_or_else(|| {
                Error::backend(format!(
                    "signing with {} needs a tokio runtime, and none is running",
                    self.signer.uri()
                ))
            })?;
        handle.block_on(fut)
    }
}

impl rcgen::PublicKeyData for RcgenKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw_public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

impl rcgen::SigningKey for RcgenKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let result = match PLAN.with(|slot| slot.replace(Plan::Block)) {
            Plan::Block => self.sign_blocking(msg),
            Plan::Now(_) => match self.sign_now(msg) {
                Ok(result) => result,
                Err(pending) => {
                    PLAN.with(|slot| *slot.borrow_mut() = Plan::Now(Some(pending)));
                    return Err(rcgen::Error::RemoteKeyError);
                }
            },
            Plan::Signed { message, signature } if *message == *msg => Ok(signature),
            Plan::Signed { .. } => Err(Error::backend(format!(
                "signing with {}: rcgen encoded the certificate differently the second time",
                self.signer.uri()
            ))),
        };
        result.map_err(|e| {
            SIGN_ERROR.with(|slot| *slot.borrow_mut() = Some(e));
            rcgen::Error::RemoteKeyError
        })
    }
}

/// Forgets any signer error left on this thread (call before an rcgen operation).
pub(crate) fn clear_sign_error() {
    SIGN_ERROR.with(|slot| slot.borrow_mut().take());
}

/// Turns an rcgen error into keyward's: a signer failure comes back as the signer's
/// own error (so `Unavailable` stays retryable), anything else is named with `what`.
pub(crate) fn map_rcgen_error(e: rcgen::Error, what: &str) -> Error {
    if e == rcgen::Error::RemoteKeyError
        && let Some(err) = SIGN_ERROR.with(|slot| slot.borrow_mut().take())
    {
        return err;
    }
    Error::backend_with(format!("{what}: rcgen could not build it"), e)
}

/// A subject's public key as rcgen writes it into a certificate.
pub(crate) struct SubjectKey {
    raw: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
    rsa: bool,
}

impl SubjectKey {
    /// Reads a DER `SubjectPublicKeyInfo`: P-256, P-384, Ed25519 or RSA of 2048 to
    /// 8192 bits; anything else is `Unsupported` naming what it is.
    pub(crate) fn from_spki(spki_der: &[u8]) -> Result<Self, Error> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| {
            Error::InvalidInput(format!(
                "malformed subject public key (SubjectPublicKeyInfo): {e}"
            ))
        })?;
        if !rest.is_empty() {
            return Err(Error::InvalidInput(
                "malformed subject public key: trailing bytes after SubjectPublicKeyInfo".into(),
            ));
        }
        let raw = spki.subject_public_key.data.to_vec();
        // RSA subject keys of any size in the range, not only the sizes keyward makes.
        if let Some(bits) = rsa_encryption_bits(&spki) {
            if !(2048..=8192).contains(&bits) {
                return Err(Error::Unsupported(format!(
                    "subject key is RSA of {bits} bits; keyward accepts 2048 to 8192"
                )));
            }
            return Ok(SubjectKey {
                raw,
                alg: &rcgen::PKCS_RSA_SHA256,
                rsa: true,
            });
        }
        let (alg, key_len) = match key_type(&spki) {
            Some(KeyType::EcP256) => (&rcgen::PKCS_ECDSA_P256_SHA256, 65),
            Some(KeyType::EcP384) => (&rcgen::PKCS_ECDSA_P384_SHA384, 97),
            Some(KeyType::Ed25519) => (&rcgen::PKCS_ED25519, 32),
            _ => {
                return Err(Error::Unsupported(format!(
                    "subject key type {} is not supported (expected ecdsa-p256, \
                     ecdsa-p384, ed25519 or rsa)",
                    key_algorithm_name(&spki)
                )));
            }
        };
        if raw.len() != key_len {
            return Err(Error::InvalidInput(format!(
                "malformed {} subject public key ({} bytes; compressed EC points are not accepted)",
                key_algorithm_name(&spki),
                raw.len()
            )));
        }
        Ok(SubjectKey {
            raw,
            alg,
            rsa: false,
        })
    }

    /// Whether this is an RSA key (service certificates then also get keyEncipherment).
    pub(crate) fn is_rsa(&self) -> bool {
        self.rsa
    }

    /// The raw `subjectPublicKey` bits.
    pub(crate) fn raw(&self) -> &[u8] {
        &self.raw
    }
}

impl rcgen::PublicKeyData for SubjectKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}
