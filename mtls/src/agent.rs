//! [`AgentSource`]: credentials from the keyward agent (or any SPIFFE Workload API
//! server), kept current from the X.509 SVID stream, and the CRLs from the bundles
//! stream (`agent_crls`). The socket address is read by
//! [`keyward_core::workload_socket`], the parser `keyward fetch` uses too.

use std::sync::Arc;
use std::time::Duration;

use keyward_core::{Error, workload_socket};
use spiffe::transport::Endpoint;
use spiffe::{WorkloadApiClient, X509Source, X509SourceError};
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::agent_crls::follow_crls;
use crate::credentials::{CredentialCell, Credentials};

/// How long [`AgentSource::connect`] waits for the first SVID.
const INITIAL_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Reconnect backoff bounds when the agent goes away.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Credentials fed by the Workload API: the `spiffe` crate's `X509Source` keeps the
/// latest X.509 SVID and bundle (reconnecting with backoff when the agent restarts)
/// and a task copies every update into the cell; another task keeps the cell's CRLs
/// current from the bundles stream. While the agent is away the last credentials and
/// CRLs keep serving.
pub struct AgentSource {
    cell: CredentialCell,
    source: X509Source,
    task: JoinHandle<()>,
    crl_task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AgentSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSource")
            .field("cell", &self.cell)
            .finish_non_exhaustive()
    }
}

fn source_error(what: &str, e: X509SourceError) -> Error {
    Error::unavailable(format!("{what}: {e}"), Some(Box::new(e)))
}

/// Copies the source's current SVID and the bundle of its trust domain.
fn snapshot(source: &X509Source) -> Result<Credentials, Error> {
    let state = source.state();
    let ctx = state
        .context()
        .map_err(|e| source_error("no X.509 context from the agent", e))?;
    let svid = state
        .svid()
        .map_err(|e| source_error("no X.509 SVID from the agent", e))?;
    let td = svid.spiffe_id().trust_domain();
    let bundle = ctx.bundle_set().get(td).ok_or_else(|| {
        Error::backend(format!(
            "the agent sent no trust bundle for trust domain {td}"
        ))
    })?;
    let chain: Vec<&[u8]> = svid.cert_chain().iter().map(|c| c.as_bytes()).collect();
    let roots: Vec<&[u8]> = bundle.authorities().iter().map(|c| c.as_bytes()).collect();
    let key = Zeroizing::new(svid.private_key().as_bytes().to_vec());
    Credentials::from_der(&chain, &key, &roots)
}

impl AgentSource {
    /// Connects to the Workload API at `socket` (`unix:///path`, `unix:/path` or
    /// `/path`), or at `SPIFFE_ENDPOINT_SOCKET` (same forms) when `None`, and waits (up
    /// to 30 s) for the first SVID and the first CRLs (a server without the bundles
    /// call gives none). A malformed address fails at once, naming it.
    /// Must run inside a tokio runtime, which then carries the update tasks.
    pub async fn connect(socket: Option<&str>) -> Result<Self, Error> {
        let path = workload_socket::socket_path_or_env(socket, "the socket argument")?;
        let shown = path.display().to_string();
        // The parsed path goes to the client as it is (no second parse of a URI).
        let endpoint = Endpoint::Unix(path);
        let crl_endpoint = endpoint.clone();
        let source = X509Source::builder()
            .client_factory(Arc::new(move || {
                let endpoint = endpoint.clone();
                Box::pin(WorkloadApiClient::connect(endpoint))
            }))
            .reconnect_backoff(MIN_BACKOFF, MAX_BACKOFF)
            .initial_sync_timeout(INITIAL_SYNC_TIMEOUT)
            .build()
            .await
            .map_err(|e| {
                source_error(&format!("agent at {shown} unreachable or gave no SVID"), e)
            })?;
        let cell = CredentialCell::new(snapshot(&source)?);
        let crl_task = follow_crls(crl_endpoint, shown, INITIAL_SYNC_TIMEOUT, &cell).await?;
        let mut updates = source.updated();
        let (task_cell, task_source) = (cell.clone(), source.clone());
        let task = tokio::spawn(async move {
            while updates.changed().await.is_ok() {
                match snapshot(&task_source) {
                    Ok(creds) => {
                        tracing::info!(spiffe_id = %creds.spiffe_id(), "new X.509 SVID from the agent");
                        task_cell.store(creds);
                    }
                    Err(e) => tracing::warn!(
                        error = %keyward_core::chain_line(&e),
                        "agent update not usable; keeping the current credentials"
                    ),
                }
            }
        });
        Ok(AgentSource {
            cell,
            source,
            task,
            crl_task,
        })
    }

    /// The cell this source keeps current.
    pub fn cell(&self) -> &CredentialCell {
        &self.cell
    }

    /// Stops watching the agent; the cell keeps its last credentials and CRLs.
    pub async fn shutdown(mut self) {
        self.stop_tasks();
        self.source.shutdown().await;
    }

    fn stop_tasks(&mut self) {
        self.task.abort();
        if let Some(t) = self.crl_task.take() {
            t.abort();
        }
    }
}

impl AsRef<CredentialCell> for AgentSource {
    fn as_ref(&self) -> &CredentialCell {
        &self.cell
    }
}

impl Drop for AgentSource {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_malformed_address_fails_at_once_naming_it() {
        for addr in [
            "tcp://127.0.0.1:8081",
            "run/agent.sock",
            "unix://host/a.sock",
            "",
        ] {
            let e = AgentSource::connect(Some(addr)).await.unwrap_err();
            assert!(matches!(e, Error::InvalidInput(_)), "{addr}: {e:?}");
            let line = e.to_string();
            assert!(line.contains(&format!("'{addr}'")), "{line}");
            assert!(line.contains(workload_socket::EXPECTED_FORMS), "{line}");
        }
    }
}
