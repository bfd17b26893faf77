//! `FetchJWTSVID`, `FetchJWTBundles` and `ValidateJWTSVID`: the caller passes the same
//! gate as for the X.509 calls (security header, attestation, a matching entry), then
//! tokens are signed, the JWKS streamed, or a token checked against the published keys.

use std::sync::Arc;

use prost::bytes::Bytes;
use serde_json::Value;
use tokio::sync::watch;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::keys::{KeySet, now_ms};
use super::token;
use crate::daemon::caller::{Caller, CallerGate, audit_caller};
use crate::daemon::server::WorkloadApi;
use crate::daemon::snapshot::Snapshot;
use crate::daemon::streams::{self, Source};
use crate::daemon::workload_api::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse,
};
use keyward_core::audit::Event;

/// FetchJWTSVID: one JWT-SVID per entry of the caller (or only `spiffe_id`'s).
pub async fn fetch_jwt_svid(
    api: &WorkloadApi,
    req: Request<JwtsvidRequest>,
) -> Result<Response<JwtsvidResponse>, Status> {
    let snap = api.snapshots().borrow().clone();
    let caller = api.gate().admit(&req, &snap).await?;
    let keys = api.jwt_keys()?.borrow().clone();
    let r = req.get_ref();
    if r.audience.is_empty() || r.audience.iter().any(String::is_empty) {
        return Err(Status::invalid_argument(
            "audience must name at least one audience (and no empty one)",
        ));
    }
    let mine: Vec<_> = snap.matching(&caller.facts).collect();
    if mine.is_empty() {
        return Err(api.gate().no_entry(&caller));
    }
    let chosen: Vec<_> = mine
        .into_iter()
        .filter(|e| r.spiffe_id.is_empty() || e.spiffe_id == r.spiffe_id)
        .collect();
    if chosen.is_empty() {
        return Err(Status::permission_denied(format!(
            "{} is not an identity of this caller",
            r.spiffe_id
        )));
    }
    let now = now_ms() / 1000;
    let mut svids = Vec::with_capacity(chosen.len());
    for e in &chosen {
        let svid = token::sign(
            &keys.active,
            &e.spiffe_id,
            &r.audience,
            now,
            keys.ttl.as_secs(),
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %keyward_core::chain_line(&e), "cannot sign a JWT-SVID");
            Status::unavailable(format!(
                "cannot sign the JWT-SVID: {}",
                keyward_core::chain_line(&e)
            ))
        })?;
        svids.push(Jwtsvid {
            spiffe_id: e.spiffe_id.clone(),
            svid,
            hint: e.hint.clone(),
        });
    }
    api.gate().still_there(&caller)?;
    api.gate().audit().note(
        Event::new("jwt_svid_served")
            .with("kid", &keys.active.kid)
            .with("audience", &r.audience)
            .with(
                "spiffe_ids",
                chosen
                    .iter()
                    .map(|e| e.spiffe_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .caller(&audit_caller(&caller.facts)),
    );
    Ok(Response::new(JwtsvidResponse { svids }))
}

/// ValidateJWTSVID: the token's SPIFFE ID and claims, or `InvalidArgument` saying why not.
pub async fn validate_jwt_svid(
    api: &WorkloadApi,
    req: Request<ValidateJwtsvidRequest>,
) -> Result<Response<ValidateJwtsvidResponse>, Status> {
    let snap = api.snapshots().borrow().clone();
    let caller = api.gate().admit(&req, &snap).await?;
    if !snap.any_match(&caller.facts) {
        return Err(api.gate().no_entry(&caller));
    }
    let r = req.get_ref();
    if r.audience.is_empty() {
        return Err(Status::invalid_argument("audience must be set"));
    }
    if r.svid.is_empty() {
        return Err(Status::invalid_argument("svid must be set"));
    }
    let keys = api.jwt_keys()?.borrow().clone();
    let valid = token::validate(
        &r.svid,
        &r.audience,
        &keys,
        &snap.trust_domain_id,
        now_ms() / 1000,
    )
    .map_err(|why| Status::invalid_argument(format!("invalid JWT-SVID: {why}")))?;
    Ok(Response::new(ValidateJwtsvidResponse {
        spiffe_id: valid.spiffe_id,
        claims: Some(to_struct(valid.claims)),
    }))
}

/// FetchJWTBundles: `{trust domain: JWKS}` at once, then again on every key change.
pub async fn fetch_jwt_bundles(
    api: &WorkloadApi,
    req: Request<JwtBundlesRequest>,
) -> Result<Response<BoxStream<JwtBundlesResponse>>, Status> {
    let mut snaps = api.snapshots();
    let snap = snaps.borrow_and_update().clone();
    let caller = api.gate().admit(&req, &snap).await?;
    if !snap.any_match(&caller.facts) {
        return Err(api.gate().no_entry(&caller));
    }
    let mut keys = api.jwt_keys()?;
    let jwks = keys.borrow_and_update().jwks.clone();
    let domain = snap.trust_domain_id.clone();
    let first = bundles(&domain, jwks.clone());
    let source = JwtBundles {
        keys,
        domain,
        last: jwks,
    };
    Ok(Response::new(streams::follow(
        api.gate().clone(),
        caller,
        snaps,
        snap,
        first,
        source,
    )))
}

/// FetchJWTBundles: every change of the JWKS, while an entry still matches the caller.
struct JwtBundles {
    keys: watch::Receiver<Arc<KeySet>>,
    domain: String,
    last: Bytes,
}

impl Source for JwtBundles {
    type Msg = JwtBundlesResponse;

    async fn changed(&mut self) -> Option<()> {
        self.keys.changed().await.ok()
    }

    fn next(
        &mut self,
        gate: &CallerGate,
        snap: &Snapshot,
        caller: &Caller,
    ) -> Result<Option<JwtBundlesResponse>, Status> {
        if !snap.any_match(&caller.facts) {
            return Err(gate.no_entry(caller));
        }
        let jwks = self.keys.borrow_and_update().jwks.clone();
        if jwks == self.last {
            return Ok(None);
        }
        self.last = jwks.clone();
        Ok(Some(bundles(&self.domain, jwks)))
    }
}

fn bundles(domain: &str, jwks: Bytes) -> JwtBundlesResponse {
    JwtBundlesResponse {
        bundles: [(domain.to_string(), jwks)].into_iter().collect(),
    }
}

/// JSON claims as a `google.protobuf.Struct`.
fn to_struct(claims: serde_json::Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: claims.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    }
}

fn to_value(v: Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(to_value).collect(),
        }),
        Value::Object(m) => Kind::StructValue(to_struct(m)),
    };
    prost_types::Value { kind: Some(kind) }
}
