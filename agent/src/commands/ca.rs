//! `keyward ca init` and `keyward ca intermediate`.

use keyward_core::Error;
use keyward_core::audit::Event;
use keyward_core::issuance::{self, CaIssuer};
use keyward_core::store::StateDir;

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
    let validity = parse_duration(validity)?;
    issuance::parse_subject(subject)?;
    if state.exists() && state.ca()?.is_some() {
        return Err(existing_ca(state));
    }
    audit::check(state)?;
    let signer = backends.open(&uri).await.map_err(|e| key_hint(e, key))?;
    let root = issuance::self_signed_root(signer.clone(), subject, validity).await?;

    let lock = state.create_and_lock()?;
    if state.ca()?.is_some() {
        return Err(existing_ca(state));
    }
    let pending = state.begin(&lock, "ca init", &format!("root with key {}", signer.uri()))?;
    state.install_root(&lock, std::slice::from_ref(&root.der), Some(signer.uri()))?;
    pending.done()?;
    audit::record(
        state,
        Event::issued("ca_root_created", &root.der, signer.uri()),
    )?;
    println!(
        "root CA '{}' created in {}",
        root.subject,
        state.path().display()
    );
    println!("key:        {}", signer.uri());
    println!("serial:     {}", root.serial_hex);
    println!("valid until {}", rfc3339(root.not_after));
    Ok(())
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

    let lock = state.lock()?;
    let pending = state.begin(
        &lock,
        "ca intermediate",
        &format!("intermediate with key {}", signer.uri()),
    )?;
    state.install_intermediate(&lock, &cert.der, signer.uri())?;
    pending.done()?;
    audit::record(
        state,
        Event::issued("ca_intermediate_created", &cert.der, &root_key).key("key", signer.uri()),
    )?;
    println!(
        "intermediate CA '{}' created in {}",
        cert.subject,
        state.path().display()
    );
    println!("key:        {}", signer.uri());
    println!("serial:     {}", cert.serial_hex);
    println!("valid until {}", rfc3339(cert.not_after));
    Ok(())
}

fn existing_ca(state: &StateDir) -> Error {
    Error::State(format!(
        "a CA already exists in {}; keyward never replaces a CA",
        state.path().display()
    ))
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
