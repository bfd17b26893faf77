//! Orders, authorizations and challenges (RFC 8555 sections 7.4, 7.5): a new order
//! checks its identifiers against `[acme] allowed` and gets one authorization per
//! identifier; a client answers a challenge, and the server validates it in the
//! background while the client polls.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::identifiers::{self, Identifier};
use super::jws::Signed;
use super::problem::Problem;
use super::store::{Account, Authorization, Challenge, Order, random_id};
use super::{AcmeState, MAX_IDENTIFIERS_PER_ORDER, ORDER_LIFETIME, Post, json_response};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewOrder {
    identifiers: Vec<Identifier>,
    #[serde(default)]
    not_before: Option<String>,
    #[serde(default)]
    not_after: Option<String>,
}

/// POST /acme/new-order.
pub async fn new_order(State(st): State<Arc<AcmeState>>, post: Post) -> Result<Response, Problem> {
    let (account, payload) = post.signed.account()?;
    let request: NewOrder = Signed::json(&payload)?;
    if request.not_before.is_some() || request.not_after.is_some() {
        return Err(Problem::malformed(
            "notBefore/notAfter are not accepted: this server sets the validity ([acme] validity)",
        ));
    }
    let ids = identifiers::check_order(
        &request.identifiers,
        &st.settings.allowed,
        MAX_IDENTIFIERS_PER_ORDER,
    )?;
    let expires = OffsetDateTime::now_utc() + ORDER_LIFETIME;
    let mut authorizations = Vec::new();
    for id in &ids {
        let kinds = st
            .settings
            .challenges
            .iter()
            .filter(|k| id.kind == "dns" || *k == "http-01");
        let authz = Authorization {
            id: random_id(),
            account: account.id.clone(),
            identifier: id.clone(),
            status: "pending".into(),
            expires,
            challenges: kinds
                .map(|k| Challenge {
                    kind: k.clone(),
                    token: random_id(),
                    status: "pending".into(),
                    validated: None,
                    error: None,
                })
                .collect(),
        };
        if authz.challenges.is_empty() {
            return Err(Problem::rejected_identifier(format!(
                "no configured challenge ([acme] challenges) can prove {} '{}'",
                id.kind, id.value
            )));
        }
        st.store.put(&authz.id, &authz)?;
        authorizations.push(authz.id);
    }
    let order = Order {
        id: random_id(),
        account: account.id,
        identifiers: ids,
        authorizations,
        expires,
        processing: false,
        certificate: None,
        error: None,
    };
    st.store.put(&order.id, &order)?;
    let url = format!("{}/acme/order/{}", post.base, order.id);
    let body = order_json(&st, &order, &post.base)?;
    Ok(json_response(StatusCode::CREATED, &body, Some(&url)))
}

/// POST /acme/order/{id} (POST-as-GET).
pub async fn order(
    State(st): State<Arc<AcmeState>>,
    Path(id): Path<String>,
    post: Post,
) -> Result<Response, Problem> {
    let (account, _) = post.signed.account()?;
    let order = owned_order(&st, &id, &account)?;
    Ok(json_response(
        StatusCode::OK,
        &order_json(&st, &order, &post.base)?,
        None,
    ))
}

/// POST /acme/authz/{id}: POST-as-GET reads it; `status: deactivated` deactivates it.
pub async fn authorization(
    State(st): State<Arc<AcmeState>>,
    Path(id): Path<String>,
    post: Post,
) -> Result<Response, Problem> {
    let (account, payload) = post.signed.account()?;
    let _guard = st.records.lock().await;
    let mut authz = owned_authz(&st, &id, &account)?;
    if !payload.is_empty() {
        let change: Value = Signed::json(&payload)?;
        if change.get("status").and_then(Value::as_str) != Some("deactivated") {
            return Err(Problem::malformed(
                "an authorization can only be deactivated",
            ));
        }
        authz.status = "deactivated".into();
        st.store.put(&authz.id, &authz)?;
    }
    Ok(json_response(
        StatusCode::OK,
        &authz_json(&authz, &post.base),
        None,
    ))
}

/// POST /acme/chall/{authz}/{type}: `{}` asks for validation (answered at once with
/// the challenge `processing`); POST-as-GET reads it.
pub async fn challenge(
    State(st): State<Arc<AcmeState>>,
    Path((id, kind)): Path<(String, String)>,
    post: Post,
) -> Result<Response, Problem> {
    let (account, payload) = post.signed.account()?;
    let guard = st.records.lock().await;
    let mut authz = owned_authz(&st, &id, &account)?;
    let now = OffsetDateTime::now_utc();
    let index = authz
        .challenges
        .iter()
        .position(|c| c.kind == kind)
        .ok_or_else(|| Problem::not_found("challenge"))?;
    let start = !payload.is_empty()
        && authz.current_status(now) == "pending"
        && authz.challenges[index].status == "pending";
    if start {
        authz.challenges[index].status = "processing".into();
        st.store.put(&authz.id, &authz)?;
        let key_authorization = format!("{}.{}", authz.challenges[index].token, account.id);
        tokio::spawn(run_validation(
            st.clone(),
            authz.id.clone(),
            index,
            key_authorization,
        ));
    }
    drop(guard);
    let mut response = json_response(
        StatusCode::OK,
        &challenge_json(&authz, &authz.challenges[index], &post.base),
        None,
    );
    let up = format!("<{}/acme/authz/{}>;rel=\"up\"", post.base, authz.id);
    if let Ok(v) = HeaderValue::from_str(&up) {
        response.headers_mut().append(header::LINK, v);
    }
    Ok(response)
}

/// Validates one challenge and records the outcome on it and its authorization.
async fn run_validation(
    st: Arc<AcmeState>,
    authz_id: String,
    index: usize,
    key_authorization: String,
) {
    let Ok(Some(authz)) = st.store.get::<Authorization>(&authz_id) else {
        return;
    };
    let challenge = &authz.challenges[index];
    let outcome = st
        .validator
        .validate(
            &challenge.kind,
            &authz.identifier,
            &challenge.token,
            &key_authorization,
        )
        .await;
    let _guard = st.records.lock().await;
    let Ok(Some(mut authz)) = st.store.get::<Authorization>(&authz_id) else {
        return;
    };
    let challenge = &mut authz.challenges[index];
    match &outcome {
        Ok(()) => {
            challenge.status = "valid".into();
            challenge.validated = Some(OffsetDateTime::now_utc());
            authz.status = "valid".into();
        }
        Err(problem) => {
            challenge.status = "invalid".into();
            challenge.error = Some(problem.to_json());
            authz.status = "invalid".into();
        }
    }
    let kind = &authz.challenges[index].kind;
    match &outcome {
        Ok(()) => {
            tracing::info!(identifier = %authz.identifier.value, challenge = %kind, "ACME challenge valid")
        }
        Err(p) => {
            tracing::info!(identifier = %authz.identifier.value, challenge = %kind, why = %p.detail, "ACME challenge invalid")
        }
    }
    if let Err(e) = st.store.put(&authz.id, &authz) {
        tracing::error!(error = %keyward_core::chain_line(&e), "cannot record an ACME validation");
    }
}

/// The order `id` if `account` owns it.
pub fn owned_order(st: &AcmeState, id: &str, account: &Account) -> Result<Order, Problem> {
    let order: Order = st
        .store
        .get(id)?
        .ok_or_else(|| Problem::not_found("order"))?;
    if order.account != account.id {
        return Err(Problem::unauthorized(
            "the order belongs to another account",
        ));
    }
    Ok(order)
}

fn owned_authz(st: &AcmeState, id: &str, account: &Account) -> Result<Authorization, Problem> {
    let authz: Authorization = st
        .store
        .get(id)?
        .ok_or_else(|| Problem::not_found("authorization"))?;
    if authz.account != account.id {
        return Err(Problem::unauthorized(
            "the authorization belongs to another account",
        ));
    }
    Ok(authz)
}

/// The order's status now (RFC 8555 section 7.1.6), from its authorizations.
pub fn order_status(st: &AcmeState, order: &Order) -> Result<&'static str, Problem> {
    if order.certificate.is_some() {
        return Ok("valid");
    }
    if order.error.is_some() {
        return Ok("invalid");
    }
    if order.processing {
        return Ok("processing");
    }
    let now = OffsetDateTime::now_utc();
    if now >= order.expires {
        return Ok("invalid");
    }
    let mut all_valid = true;
    for id in &order.authorizations {
        let authz: Authorization = st
            .store
            .get(id)?
            .ok_or_else(|| Problem::not_found("authorization"))?;
        match authz.current_status(now) {
            "valid" => {}
            "pending" => all_valid = false,
            _ => return Ok("invalid"),
        }
    }
    Ok(if all_valid { "ready" } else { "pending" })
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// The order object (RFC 8555 section 7.1.3).
pub fn order_json(st: &AcmeState, order: &Order, base: &str) -> Result<Value, Problem> {
    let mut v = json!({
        "status": order_status(st, order)?,
        "expires": rfc3339(order.expires),
        "identifiers": order.identifiers,
        "authorizations": order.authorizations.iter().map(|a| format!("{base}/acme/authz/{a}")).collect::<Vec<_>>(),
        "finalize": format!("{base}/acme/order/{}/finalize", order.id),
    });
    if let Some(cert) = &order.certificate {
        v["certificate"] = Value::String(format!("{base}/acme/cert/{cert}"));
    }
    if let Some(e) = &order.error {
        v["error"] = e.clone();
    }
    Ok(v)
}

fn authz_json(authz: &Authorization, base: &str) -> Value {
    let now = OffsetDateTime::now_utc();
    json!({
        "identifier": authz.identifier,
        "status": authz.current_status(now),
        "expires": rfc3339(authz.expires),
        "challenges": authz.challenges.iter().map(|c| challenge_json(authz, c, base)).collect::<Vec<_>>(),
    })
}

fn challenge_json(authz: &Authorization, c: &Challenge, base: &str) -> Value {
    let mut v = json!({
        "type": c.kind,
        "url": format!("{base}/acme/chall/{}/{}", authz.id, c.kind),
        "token": c.token,
        "status": c.status,
    });
    if let Some(t) = c.validated {
        v["validated"] = Value::String(rfc3339(t));
    }
    if let Some(e) = &c.error {
        v["error"] = e.clone();
    }
    v
}
