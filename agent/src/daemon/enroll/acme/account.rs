//! Accounts (RFC 8555 section 7.3): newAccount (created, or found with
//! `onlyReturnExisting`), reading and updating an account, and its order list.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::jws::{Signed, Signer};
use super::problem::Problem;
use super::store::{Account, Order};
use super::{AcmeState, Post, json_response};

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct NewAccount {
    #[serde(default)]
    contact: Option<Vec<String>>,
    #[serde(default)]
    only_return_existing: bool,
    #[serde(default)]
    external_account_binding: Option<Value>,
}

#[derive(Deserialize, Default)]
struct AccountUpdate {
    #[serde(default)]
    contact: Option<Vec<String>>,
    #[serde(default)]
    status: Option<String>,
}

/// POST /acme/new-account (signed with `jwk`).
pub async fn new_account(
    State(st): State<Arc<AcmeState>>,
    post: Post,
) -> Result<Response, Problem> {
    let Signer::Key { jwk, thumbprint } = post.signed.signer else {
        return Err(Problem::malformed(
            "newAccount is signed with the account's key (`jwk`), not a `kid`",
        ));
    };
    let request: NewAccount = Signed::json(&post.signed.payload)?;
    let url = format!("{}/acme/acct/{thumbprint}", post.base);
    if let Some(existing) = st.store.get::<Account>(&thumbprint)? {
        if existing.status != "valid" {
            return Err(Problem::unauthorized(format!(
                "account {url} is {}",
                existing.status
            )));
        }
        return Ok(json_response(
            StatusCode::OK,
            &account_json(&existing, &post.base),
            Some(&url),
        ));
    }
    if request.only_return_existing {
        return Err(Problem::account_does_not_exist(
            "no account has this key (onlyReturnExisting)",
        ));
    }
    if request.external_account_binding.is_some() {
        return Err(Problem::malformed(
            "this server does not use external account binding",
        ));
    }
    let account = Account {
        id: thumbprint.clone(),
        status: "valid".into(),
        contact: checked_contacts(request.contact.unwrap_or_default())?,
        jwk,
        created_at: OffsetDateTime::now_utc(),
    };
    st.store.put(&thumbprint, &account)?;
    st.audit
        .note(keyward_core::audit::Event::new("acme_account_created").with("account", &thumbprint));
    Ok(json_response(
        StatusCode::CREATED,
        &account_json(&account, &post.base),
        Some(&url),
    ))
}

/// POST /acme/acct/{id}: POST-as-GET reads the account; `contact` updates it;
/// `status: deactivated` deactivates it for good.
pub async fn account(
    State(st): State<Arc<AcmeState>>,
    Path(id): Path<String>,
    post: Post,
) -> Result<Response, Problem> {
    let base = post.base;
    let (mut account, payload) = post.signed.account()?;
    if account.id != id {
        return Err(Problem::unauthorized(
            "an account may only read and change itself",
        ));
    }
    if !payload.is_empty() {
        let update: AccountUpdate = Signed::json(&payload)?;
        if let Some(contact) = update.contact {
            account.contact = checked_contacts(contact)?;
        }
        match update.status.as_deref() {
            None => {}
            Some("deactivated") => account.status = "deactivated".into(),
            Some(other) => {
                return Err(Problem::malformed(format!(
                    "an account cannot be set to '{other}'"
                )));
            }
        }
        st.store.put(&account.id, &account)?;
    }
    Ok(json_response(
        StatusCode::OK,
        &account_json(&account, &base),
        None,
    ))
}

/// POST /acme/acct/{id}/orders: the account's orders.
pub async fn orders(
    State(st): State<Arc<AcmeState>>,
    Path(id): Path<String>,
    post: Post,
) -> Result<Response, Problem> {
    let (account, _) = post.signed.account()?;
    if account.id != id {
        return Err(Problem::unauthorized(
            "an account may only list its own orders",
        ));
    }
    let urls: Vec<String> = st
        .store
        .all::<Order>()?
        .into_iter()
        .filter(|o| o.account == account.id)
        .map(|o| format!("{}/acme/order/{}", post.base, o.id))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "orders": urls }),
        None,
    ))
}

fn account_json(account: &Account, base: &str) -> Value {
    json!({
        "status": account.status,
        "contact": account.contact,
        "orders": format!("{base}/acme/acct/{}/orders", account.id),
    })
}

/// Contacts must be `mailto:` URLs (RFC 8555 section 7.3), a few at most.
fn checked_contacts(contact: Vec<String>) -> Result<Vec<String>, Problem> {
    if contact.len() > 10 {
        return Err(Problem::malformed("at most 10 contacts"));
    }
    for c in &contact {
        let ok = c.strip_prefix("mailto:").is_some_and(|addr| {
            addr.contains('@') && addr.len() < 256 && !addr.contains(['?', ',', ' '])
        });
        if !ok {
            return Err(Problem {
                kind: "unsupportedContact",
                ..Problem::malformed(format!("contact '{c}' is not a mailto: address"))
            });
        }
    }
    Ok(contact)
}
