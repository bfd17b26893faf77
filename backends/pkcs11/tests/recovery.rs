//! Signing keeps working when the pool's sessions are closed or logged out underneath it.
//!
//! SoftHSM keeps one state per process: a second `Pkcs11` handle on the same library
//! (its `C_Initialize` answers "already initialized") acts on the very sessions keyward
//! pooled. cryptoki 0.12 has no `C_CloseAllSessions`, and it cannot wrap another
//! handle's session numbers, so the tests use what it does offer:
//! - `C_Logout` from a session of the second handle: the whole process is logged out of
//!   the token, and SoftHSM invalidates the handles of private objects;
//! - `C_Finalize` then `C_Initialize` from the second handle: every session of the
//!   process is closed (`CKR_SESSION_HANDLE_INVALID` from then on), SoftHSM reloads
//!   its tokens and gives them new slot numbers, and hands out session and object
//!   handle numbers from 1 again;
//! - `C_Finalize` alone: the module answers `CKR_CRYPTOKI_NOT_INITIALIZED` until keyward
//!   initializes it again (when it next looks for a token, or when a sign fails so).
//!
//! These tests reset the module of the whole process, so they live in their own test
//! binary and run one at a time; the resets happen between signs (PKCS#11 leaves a
//! `C_Finalize` during another thread's call undefined).
#![forbid(unsafe_code)]

mod common;

use std::sync::Arc;

use common::{TestToken, second_handle};
use cryptoki::context::Pkcs11;
use keyward_core::{Algorithm, KeyBackend, KeySigner, RsaBits, verify_signature};
use keyward_pkcs11::Pkcs11Backend;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn slot_of(ctx: &Pkcs11, token: &TestToken) -> cryptoki::slot::Slot {
    ctx.get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == token.label)
        .expect("test token present")
}

async fn sign_many(signer: &Arc<dyn KeySigner>, n: usize, round: &str) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let signer = Arc::clone(signer);
            tokio::spawn(async move {
                let msg = format!("message {i}").into_bytes();
                let sig = signer.sign(&msg).await?;
                verify_signature(signer.algorithm(), signer.public_key_spki_der(), &msg, &sig)
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        t.await
            .unwrap()
            .unwrap_or_else(|e| panic!("{round}: sign {i}: {}", keyward_core::chain_line(&e)));
    }
}

async fn signers(token: &TestToken) -> Vec<Arc<dyn KeySigner>> {
    let backend = Pkcs11Backend::new(None);
    let mut out = Vec::new();
    for (label, alg) in [
        ("ec", Algorithm::EcdsaP256Sha256),
        ("rsa", Algorithm::RsaPkcs1Sha256(RsaBits::B2048)),
    ] {
        let s = backend.generate(&token.key_uri(label), alg).await.unwrap();
        sign_many(&s, 8, "before").await;
        out.push(s);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_survives_logout_underneath() {
    let _one = ONE_AT_A_TIME.lock().await;
    let token = TestToken::new("rec-logout");
    let signers = signers(&token).await;
    let ctx = second_handle(&token);
    let s = ctx.open_ro_session(slot_of(&ctx, &token)).unwrap();
    s.logout()
        .expect("the process was logged in, so logout succeeds");
    for signer in &signers {
        sign_many(signer, 64, "after logout").await;
    }
    // Logged in again: a second logout through the same session succeeds once more.
    s.logout().expect("keyward logged in again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_survives_sessions_closed_underneath() {
    let _one = ONE_AT_A_TIME.lock().await;
    let token = TestToken::new("rec-closed");
    let signers = signers(&token).await;
    let before = second_handle(&token);
    let old_slot = slot_of(&before, &token);
    before.finalize().unwrap(); // closes every session of the process
    let after = second_handle(&token); // initializes the module again
    assert_ne!(slot_of(&after, &token), old_slot, "SoftHSM renumbers slots");
    for signer in &signers {
        sign_many(signer, 64, "after sessions closed").await;
    }
    // New keys and opens keep working on the recovered token.
    let backend = Pkcs11Backend::new(None);
    let fresh = backend
        .generate(&token.key_uri("fresh"), Algorithm::Ed25519)
        .await
        .unwrap();
    sign_many(&fresh, 8, "fresh key").await;
    let reopened = backend.open(&token.key_uri("ec")).await.unwrap();
    sign_many(&reopened, 8, "reopened key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_survives_module_finalized_underneath() {
    let _one = ONE_AT_A_TIME.lock().await;
    let token = TestToken::new("rec-final");
    let signers = signers(&token).await;
    second_handle(&token).finalize().unwrap();
    for signer in &signers {
        sign_many(signer, 64, "after finalize").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_key_after_module_finalized_initializes_it_again() {
    let _one = ONE_AT_A_TIME.lock().await;
    let token = TestToken::new("rec-open");
    let signers = signers(&token).await;
    second_handle(&token).finalize().unwrap();
    // Finding the token initializes the module again...
    let reopened = Pkcs11Backend::new(None)
        .open(&token.key_uri("rsa"))
        .await
        .unwrap_or_else(|e| panic!("open after finalize: {}", keyward_core::chain_line(&e)));
    sign_many(&reopened, 8, "opened after finalize").await;
    // ...and the signers opened before find their sessions gone, and recover.
    for signer in &signers {
        sign_many(signer, 64, "after finalize and open").await;
    }
}
