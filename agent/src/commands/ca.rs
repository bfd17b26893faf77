//! `keyward ca init` and `keyward ca intermediate`.

use keyward_core::audit::Event;
use keyward_core::issuance::{self, CaIssuer};
use keyward_core::store::{Operation, Plan, StateDir};
use keyward_core::{Error, KeyUri};
use time::OffsetDateTime;

use super::{audit, parse_uri, rfc3339};
use crate::backends::Backends;
use crate::duration::parse_duration;

/// Creates a self-signed root with an existing key. Validates everything and signs in
/// memory before the state directory is created or changed.
pub async fn init(
    state: &StateDir,
    backends: &Backends,
    key: &str,
    subject: &str,
    validity: &str,
) -> Result<(), Error> {
    let uri = parse_uri(key)?;
    uri.check_recordable("the CA key")?;
    let validity = parse_duration(validity)?;
    issuance::parse_subject(subject)?;
    if state.exists() && state.ca()?.is_some() {
        return Err(state.existing_ca());
    }
    audit::check(state)?;
    let signer = backends.open(&uri).await.map_err(|e| key_hint(e, key))?;
    let root = state
        .create_root(signer.clone(), subject, validity, "ca init", &|e| {
            audit::record(state, e)
        })
        .await?
        .ok_or_else(|| state.existing_ca())?;
    print_created(
        &format!(
            "root CA '{}' created in {}",
            root.subject,
            state.path().display()
        ),
        signer.uri(),
        &root.serial_hex,
        root.not_after,
    );
    Ok(())
}

/// Prints what a CA command created: `headline`, then the key, serial and end of
/// validity.
pub fn print_created(headline: &str, key: &KeyUri, serial_hex: &str, not_after: OffsetDateTime) {
    println!("{headline}");
    println!("key:        {key}");
    println!("serial:     {serial_hex}");
    println!("valid until {}", rfc3339(not_after));
}

/// Creates the issuing intermediate under the local root (or an upstream authority).
pub async fn intermediate(
    state: &StateDir,
    backends: &Backends,
    key: &str,
    subject: &str,
    validity: &str,
    upstream: Option<&str>,
) -> Result<(), Error> {
    let uri = parse_uri(key)?;
    uri.check_recordable("the intermediate CA key")?;
    let validity = parse_duration(validity)?;
    issuance::parse_subject(subject)?;
    if let Some(up) = upstream {
        return super::upstream::intermediate(state, backends, &uri, subject, validity, up).await;
    }
    let ca = state.require_ca()?;
    if ca.intermediate.is_some() {
        return Err(Error::State(format!(
            "an intermediate CA already exists in {}; keyward never replaces it from the CLI",
            state.path().display()
        )));
    }
    let root_key = ca.root_key.clone().ok_or_else(|| {
        Error::State("the root is held upstream; use --upstream to sign a new intermediate".into())
    })?;
    audit::check(state)?;
    let root_signer = backends.open(&root_key).await?;
    let root = CaIssuer::new(ca.roots[0].clone(), Vec::new(), root_signer)?;
    let signer = backends.open(&uri).await.map_err(|e| key_hint(e, key))?;
    let cert = root
        .issue_intermediate(signer.public_key_spki_der(), subject, validity)
        .await?;

    let op = Operation {
        name: "ca intermediate".into(),
        detail: format!("intermediate with key {}", signer.uri()),
        plan: Plan::Ca,
    };
    state
        .transaction(&op, &|e| audit::record(state, e), async |tx| {
            tx.install_intermediate(&cert.der, signer.uri())?;
            tx.audit(
                Event::issued("ca_intermediate_created", &cert.der, &root_key)
                    .key("key", signer.uri()),
            );
            Ok(())
        })
        .await?;
    print_created(
        &format!(
            "intermediate CA '{}' created in {}",
            cert.subject,
            state.path().display()
        ),
        signer.uri(),
        &cert.serial_hex,
        cert.not_after,
    );
    Ok(())
}

/// Adds the command that creates a missing key to a `NotFound` error.
fn key_hint(e: Error, key: &str) -> Error {
    match e {
        Error::NotFound(what) => Error::NotFound(format!(
            "{what} (create it first: keyward key generate --key '{key}' --algorithm ecdsa-p256)"
        )),
        e => e,
    }
}
