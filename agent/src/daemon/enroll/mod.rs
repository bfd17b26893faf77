//! Enrollment for machines and devices that are not on the agent's node: one HTTPS
//! listener at `[acme] listen` serving ACME (RFC 8555, under `/acme/`) and EST
//! (RFC 7030, under `/.well-known/est/`) in front of the agent's CA.
//!
//! The listener's certificate is issued by this CA for `[acme] names` and renewed like
//! an SVID ([`server_cert`]); clients may present a certificate from this CA or from
//! `[est] manufacturer_ca` ([`client_auth`]). Each service is an `axum::Router` built by
//! its module (`est::router`, `acme::router`); [`routes`] merges those that are
//! configured, and handlers read the connection's verified client chain from the
//! `axum::extract::ConnectInfo<Peer>` extension. A new service plugs in with one merge
//! line in [`routes`]; its router must carry its own state (`Router::with_state`).

pub mod acme;
mod client_auth;
pub mod est;
mod listener;
mod server_cert;

use std::path::Path;

use axum::Router;
use keyward_core::Error;
use keyward_core::store::StateDir;
use tokio::task::JoinHandle;

pub use client_auth::ClientRoots;
pub use listener::{Listener, Peer};
pub use server_cert::ServerCert;

use super::audit::Audit;
use super::ca::AgentCa;
use super::config::Config;

/// Starts the enrollment listener when `[acme] listen` is configured: issues its
/// certificate, binds the address and serves ACME and EST. Returns the tasks to stop
/// at shutdown (none when enrollment is not configured).
pub async fn start(
    config: &Config,
    ca: &AgentCa,
    audit: &Audit,
) -> Result<Vec<JoinHandle<()>>, Error> {
    let Some(settings) = &config.enroll_listener else {
        return Ok(Vec::new());
    };
    let manufacturer = config
        .est
        .as_ref()
        .and_then(|e| e.manufacturer_ca.as_deref())
        .map(read_ca_file)
        .transpose()?;
    let clients = ClientRoots::new(ca.clone(), manufacturer.as_deref())?;
    let state = StateDir::new(&config.agent.state_dir);
    let app = routes(config, ca, &state, audit, &clients)?;
    let (cert, renewal) = ServerCert::start(
        settings.names.clone(),
        ca.clone(),
        config.agent.renew_fraction,
        audit.clone(),
    )
    .await?;
    let listener = Listener::bind(settings.listen, cert, &clients).await?;
    tracing::info!(
        listen = %listener.local_addr()?,
        names = ?settings.names,
        est = config.est.is_some(),
        "enrollment listener serving"
    );
    Ok(vec![renewal, listener.serve(app)])
}

/// The routes of every configured enrollment service, merged.
pub fn routes(
    config: &Config,
    ca: &AgentCa,
    state: &StateDir,
    audit: &Audit,
    clients: &ClientRoots,
) -> Result<Router, Error> {
    let mut app = Router::new();
    if let Some(settings) = &config.est {
        let est = est::EstState::new(
            settings.clone(),
            ca.clone(),
            state.clone(),
            audit.clone(),
            clients.clone(),
        );
        app = app.merge(est::router(est));
    }
    if let Some(settings) = &config.acme {
        let acme =
            acme::AcmeState::new(settings.clone(), ca.clone(), state.clone(), audit.clone())?;
        app = app.merge(acme::router(acme));
    }
    Ok(app)
}

/// The CA certificates (DER) in the PEM file at `path`.
fn read_ca_file(path: &Path) -> Result<Vec<Vec<u8>>, Error> {
    let text =
        std::fs::read(path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    let certs = keyward_core::check::pem_to_ders(&text)?;
    if certs.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{} holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}
