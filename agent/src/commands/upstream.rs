//! `keyward ca intermediate --upstream vault-pki:MOUNT`: an intermediate signed by an
//! upstream authority (Vault/OpenBao PKI), so the root never sits on this machine.

use std::time::Duration;

use keyward_core::store::StateDir;
use keyward_core::{Error, KeyUri};

use crate::backends::Backends;

/// Creates the intermediate with the upstream authority named by `upstream`.
pub async fn intermediate(
    state: &StateDir,
    backends: &Backends,
    key: &KeyUri,
    subject: &str,
    validity: Duration,
    upstream: &str,
) -> Result<(), Error> {
    if !upstream.starts_with("vault-pki:") {
        return Err(Error::InvalidInput(format!(
            "unknown upstream '{upstream}' (expected vault-pki:MOUNT)"
        )));
    }
    vault_pki(state, backends, key, subject, validity, upstream).await
}

#[cfg(feature = "vault")]
async fn vault_pki(
    state: &StateDir,
    backends: &Backends,
    key: &KeyUri,
    subject: &str,
    validity: Duration,
    upstream: &str,
) -> Result<(), Error> {
    use keyward_core::store::{Operation, Plan};
    let target: keyward_vault::VaultPkiUpstream = keyward_vault::VaultPkiUpstream::parse(upstream)?;
    if target.role.is_some() {
        tracing::warn!("vault-pki role is ignored: PKI root/sign-intermediate takes no role");
    }
    if state.exists() && state.ca()?.is_some() {
        return Err(state.existing_ca());
    }
    let client = keyward_vault::VaultClient::new(&keyward_vault::VaultSettings::from_env()?)?;
    let signer = backends.open(key).await?;
    // The agent's way ([ca.upstream]): the answer is checked (a CA, carrying this key,
    // chaining to a root) before anything is stored.
    let issuer = crate::daemon::generations::sign_at_upstream(
        &client,
        &target,
        signer.clone(),
        subject,
        validity,
    )
    .await?;
    let inter_der = issuer.certificate_der();
    let summary = keyward_core::check::summarize(inter_der)?;

    let op = Operation {
        name: "ca intermediate".into(),
        detail: format!("upstream {upstream} with key {}", signer.uri()),
        plan: Plan::Ca,
    };
    state
        .transaction(&op, &|e| super::audit::record(state, e), async |tx| {
            tx.install_upstream(inter_der, issuer.chain_der(), signer.uri())?;
            tx.audit(
                keyward_core::audit::Event::issued(
                    "ca_intermediate_created",
                    inter_der,
                    signer.uri(),
                )
                .key("key", signer.uri())
                .with("upstream", upstream),
            );
            Ok(())
        })
        .await?;
    super::ca::print_created(
        &format!(
            "intermediate CA '{}' signed by {upstream}, stored in {}",
            summary.subject,
            state.path().display()
        ),
        signer.uri(),
        &summary.serial_hex,
        summary.not_after,
    );
    Ok(())
}

#[cfg(not(feature = "vault"))]
async fn vault_pki(
    _state: &StateDir,
    _backends: &Backends,
    _key: &KeyUri,
    _subject: &str,
    _validity: Duration,
    _upstream: &str,
) -> Result<(), Error> {
    Err(Error::NotCompiled("vault".into()))
}
