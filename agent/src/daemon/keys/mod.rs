//! `keyward.v1.KeyService` (proto/keyward/v1/keys.proto): signing and envelope
//! encryption with keys a workload uses but never holds, on the Workload API's socket.
//!
//! Every call passes the same caller gate as the Workload API (the
//! `workload.spiffe.io: true` header, attestation, the per-uid limits of the socket),
//! then the grant check: the request names a grant of an entry matching the caller,
//! and the grant lists the operation; otherwise `PermissionDenied` and no data. Every
//! operation past the gate is audited (caller, entry, grant, op, outcome; never data)
//! and counted.

mod csr;
mod issue;
pub mod keyring;
#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
pub mod proto;

use std::sync::Arc;

use keyward_core::audit::Event;
use keyward_core::{Algorithm, Error};
use prost::bytes::Bytes;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use self::keyring::Keyring;
use self::proto::key_service_server::KeyService;
use self::proto::{
    DecryptDataKeyRequest, DecryptDataKeyResponse, DecryptRequest, DecryptResponse, EncryptRequest,
    EncryptResponse, GenerateDataKeyRequest, GenerateDataKeyResponse, PublicKeyRequest,
    PublicKeyResponse, SignRequest, SignResponse, SignX509svidRequest, SignX509svidResponse,
};
use super::ca::AgentCa;
use super::caller::{Caller, CallerGate, audit_caller};
use super::config::grants::{KeyGrant, KeyOp};
use super::snapshot::Snapshot;

/// The service behind the socket.
#[derive(Clone)]
pub struct KeyApi {
    state: watch::Receiver<Arc<Snapshot>>,
    gate: CallerGate,
    keys: Keyring,
    ca: AgentCa,
}

/// A caller let through for one op on one grant.
struct Granted {
    caller: Caller,
    spiffe_id: String,
    grant: KeyGrant,
    op: KeyOp,
}

impl KeyApi {
    /// A service for the entries published on `state`, to the callers `gate` lets in,
    /// with the keys of `keys` (which it opens as entries are published), issuing
    /// SVIDs for callers' own keys from `ca`.
    pub fn new(
        state: watch::Receiver<Arc<Snapshot>>,
        gate: CallerGate,
        keys: Keyring,
        ca: AgentCa,
    ) -> Self {
        keys.clone().open_published(state.clone());
        KeyApi {
            state,
            gate,
            keys,
            ca,
        }
    }

    /// Admits the caller of `req` and finds the grant `name` allowing `op` among the
    /// entries matching it.
    async fn authorize<T>(
        &self,
        req: &Request<T>,
        name: &str,
        op: KeyOp,
    ) -> Result<Granted, Status> {
        let snap = self.state.borrow().clone();
        let caller = self.gate.admit(req, &snap).await?;
        if !snap.any_match(&caller.facts) {
            return Err(self.gate.no_entry(&caller));
        }
        let found = snap.matching(&caller.facts).find_map(|e| {
            e.keys
                .iter()
                .find(|g| g.name == name)
                .map(|g| (e.spiffe_id.clone(), g.clone()))
        });
        let Some((spiffe_id, grant)) = found else {
            return Err(self.refuse(
                &caller,
                op.name(),
                Some(name),
                "no_key_grant",
                format!("no key grant named '{name}' for this caller"),
            ));
        };
        if !grant.allows(op) {
            return Err(self.refuse(
                &caller,
                op.name(),
                Some(name),
                "key_op_not_granted",
                format!("grant '{name}' does not allow {}", op.name()),
            ));
        }
        Ok(Granted {
            caller,
            spiffe_id,
            grant,
            op,
        })
    }

    /// A refusal after the gate of `op` (on `grant`, for the ops that name one):
    /// counted, logged and audited.
    fn refuse(
        &self,
        caller: &Caller,
        op: &str,
        grant: Option<&str>,
        reason: &'static str,
        why: String,
    ) -> Status {
        self.gate.metrics().denied(reason);
        let facts = &caller.facts;
        tracing::info!(uid = facts.uid, pid = facts.pid, grant, op, "{why}");
        let mut event = Event::denied(&why, &audit_caller(facts)).with("op", op);
        if let Some(grant) = grant {
            event = event.with("grant", grant);
        }
        self.gate.audit().note(event);
        Status::permission_denied(why)
    }

    /// Audits and counts the outcome of `g`'s operation; a success is sent only if the
    /// caller's process still runs.
    fn finish<T>(&self, g: &Granted, result: Result<T, Error>) -> Result<Response<T>, Status> {
        let outcome = result
            .map_err(|e| status(g.op, &e))
            .and_then(|r| self.gate.still_there(&g.caller).map(|()| r));
        self.gate.metrics().key_op(g.op.name(), outcome.is_ok());
        let mut event = Event::new("key_operation")
            .caller(&audit_caller(&g.caller.facts))
            .with("spiffe_id", &g.spiffe_id)
            .with("grant", &g.grant.name)
            .with("op", g.op.name());
        event = match &outcome {
            Ok(_) => event.with("outcome", "ok"),
            Err(s) => event.with("outcome", s.message()),
        };
        self.gate.audit().note(event);
        outcome.map(Response::new)
    }
}

/// The status of a failed operation: one line naming the cause. A decryption the key
/// refuses (an altered blob, another key's, other associated data) is the caller's
/// input, so `InvalidArgument`.
fn status(op: KeyOp, e: &Error) -> Status {
    let why = keyward_core::chain_line(e);
    match e {
        Error::InvalidInput(_) | Error::Verification(_) => Status::invalid_argument(why),
        Error::Backend { .. } if op == KeyOp::Decrypt => Status::invalid_argument(why),
        Error::Unavailable { .. } => Status::unavailable(why),
        Error::NotFound(_) => Status::failed_precondition(why),
        Error::Unsupported(_) | Error::NotCompiled(_) => Status::failed_precondition(why),
        _ => Status::internal(why),
    }
}

#[tonic::async_trait]
impl KeyService for KeyApi {
    async fn sign(&self, req: Request<SignRequest>) -> Result<Response<SignResponse>, Status> {
        let g = self
            .authorize(&req, &req.get_ref().key, KeyOp::Sign)
            .await?;
        let r = req.get_ref();
        let result = async {
            let signer = self.keys.signer(&g.grant.key).await?;
            let alg = signer.algorithm();
            if !r.algorithm.is_empty() && r.algorithm.parse::<Algorithm>()? != alg {
                return Err(Error::InvalidInput(format!(
                    "the key's algorithm is {alg}, not {}",
                    r.algorithm
                )));
            }
            let signature = signer.sign(&r.message).await?;
            Ok(SignResponse {
                signature: signature.into(),
                algorithm: alg.to_string(),
            })
        }
        .await;
        self.finish(&g, result)
    }

    async fn public_key(
        &self,
        req: Request<PublicKeyRequest>,
    ) -> Result<Response<PublicKeyResponse>, Status> {
        let g = self
            .authorize(&req, &req.get_ref().key, KeyOp::PublicKey)
            .await?;
        let result = self
            .keys
            .signer(&g.grant.key)
            .await
            .map(|s| PublicKeyResponse {
                spki_der: Bytes::copy_from_slice(s.public_key_spki_der()),
                algorithm: s.algorithm().to_string(),
            });
        self.finish(&g, result)
    }

    async fn generate_data_key(
        &self,
        req: Request<GenerateDataKeyRequest>,
    ) -> Result<Response<GenerateDataKeyResponse>, Status> {
        let g = self
            .authorize(&req, &req.get_ref().key, KeyOp::GenerateDataKey)
            .await?;
        let result = async {
            let key = self.keys.wrapper(&g.grant.key).await?;
            let dk = key.generate_data_key().await?;
            Ok(GenerateDataKeyResponse {
                plaintext: Bytes::copy_from_slice(&dk.plaintext[..]),
                wrapped: dk.wrapped.into(),
            })
        }
        .await;
        self.finish(&g, result)
    }

    async fn decrypt_data_key(
        &self,
        req: Request<DecryptDataKeyRequest>,
    ) -> Result<Response<DecryptDataKeyResponse>, Status> {
        let g = self
            .authorize(&req, &req.get_ref().key, KeyOp::Decrypt)
            .await?;
        let result = async {
            let key = self.keys.wrapper(&g.grant.key).await?;
            let plain = key.unwrap_data_key(&req.get_ref().wrapped).await?;
            Ok(DecryptDataKeyResponse {
                plaintext: Bytes::copy_from_slice(&plain[..]),
            })
        }
        .await;
        self.finish(&g, result)
    }

    async fn encrypt(
        &self,
        req: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        let g = self
            .authorize(&req, &req.get_ref().key, KeyOp::Encrypt)
            .await?;
        let r = req.get_ref();
        let result = async {
            let key = self.keys.wrapper(&g.grant.key).await?;
            let ciphertext = key.encrypt(&r.plaintext, &r.associated_data).await?;
            Ok(EncryptResponse {
                ciphertext: ciphertext.into(),
            })
        }
        .await;
        self.finish(&g, result)
    }

    async fn decrypt(
        &self,
        req: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        let g = self
            .authorize(&req, &req.get_ref().key, KeyOp::Decrypt)
            .await?;
        let r = req.get_ref();
        let result = async {
            let key = self.keys.wrapper(&g.grant.key).await?;
            let plain = key.decrypt(&r.ciphertext, &r.associated_data).await?;
            Ok(DecryptResponse {
                plaintext: Bytes::copy_from_slice(&plain),
            })
        }
        .await;
        self.finish(&g, result)
    }

    async fn sign_x509svid(
        &self,
        req: Request<SignX509svidRequest>,
    ) -> Result<Response<SignX509svidResponse>, Status> {
        self.sign_x509_svid(req).await.map(Response::new)
    }
}
