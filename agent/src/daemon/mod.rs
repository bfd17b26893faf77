//! The agent daemon: loads the CA, keeps workload SVIDs fresh, and serves the SPIFFE
//! Workload API on a Unix socket until SIGTERM/SIGINT; SIGHUP reloads the config.

mod audit;
mod ca;
pub mod fetch;
mod intermediate;
pub mod logging;
mod rotation;
mod server;
mod snapshot;
mod socket;
mod streams;
mod svid;

// Configuration, attestation and the Workload API messages live in the library part.
pub use keyward::daemon::{attest, config, selectors, workload_api};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyward_core::Error;
use keyward_core::store::StateDir;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::UnixListenerStream;

use self::audit::Audit;
use self::config::Config;
use self::rotation::{Command, Rotation};
use self::snapshot::Snapshot;
use self::socket::BoundSocket;
use self::workload_api::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use crate::backends::Backends;

/// How long shutdown waits for open calls to finish before the socket is removed anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the agent with the configuration file at `config` until SIGTERM or SIGINT.
pub async fn run(config: &Path) -> Result<(), Error> {
    let cfg = Config::load(config)?;
    logging::init(cfg.agent.log_format);
    let agent = Agent::start(cfg).await?;
    agent.serve(Some(config.to_path_buf())).await
}

/// A started agent: CA loaded, SVIDs issued, socket bound; [`Agent::serve`] answers.
pub struct Agent {
    config: Config,
    socket: BoundSocket,
    state: watch::Receiver<Arc<Snapshot>>,
    commands: mpsc::Sender<Command>,
    rotation: tokio::task::JoinHandle<()>,
    audit: Audit,
    signals: Signals,
}

struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> Result<Self, Error> {
        let sig = |k: SignalKind| {
            signal(k).map_err(|e| Error::io("cannot install the signal handlers", e))
        };
        Ok(Signals {
            term: sig(SignalKind::terminate())?,
            int: sig(SignalKind::interrupt())?,
            hup: sig(SignalKind::hangup())?,
        })
    }
}

impl Agent {
    /// Loads (or creates) the CA, issues every workload SVID once and binds the socket.
    pub async fn start(config: Config) -> Result<Agent, Error> {
        let signals = Signals::install()?;
        if let Some(listen) = &config.metrics_listen {
            tracing::warn!(listen = %listen, "[metrics] is accepted but the metrics endpoint is not served yet");
        }
        let backends = Arc::new(Backends::default());
        let state = StateDir::new(&config.agent.state_dir);
        let ca = ca::load(&config.ca, &state, &backends).await?;
        let audit = Audit::open(config.audit.as_deref())?;
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let mut rotation = Rotation::new(
            ca,
            config.workloads.clone(),
            config.agent.renew_fraction,
            &config.agent.trust_domain,
            tx,
            audit.clone(),
        );
        rotation.initial().await;
        let socket = socket::bind(
            &config.agent.socket,
            config.agent.socket_mode,
            config.agent.socket_group,
        )?;
        let (commands, cmd_rx) = mpsc::channel(4);
        let rotation = tokio::spawn(rotation.run(cmd_rx));
        tracing::info!(
            socket = %config.agent.socket.display(),
            entries = config.workloads.len(),
            trust_domain = %config.agent.trust_domain,
            config = %config.source,
            "agent serving the SPIFFE Workload API"
        );
        Ok(Agent {
            config,
            socket,
            state: rx,
            commands,
            rotation,
            audit,
            signals,
        })
    }

    /// Serves until SIGTERM or SIGINT, then stops cleanly and removes the socket.
    /// SIGHUP reloads the configuration from `reload_from` (when there is a file).
    pub async fn serve(self, reload_from: Option<PathBuf>) -> Result<(), Error> {
        let Agent {
            mut config,
            socket,
            state,
            commands,
            rotation,
            audit,
            mut signals,
        } = self;
        let path = socket.path.clone();
        let ident = socket.ident();
        let api = server::WorkloadApi::new(state, audit);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let mut server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SpiffeWorkloadApiServer::new(api))
                .serve_with_incoming_shutdown(UnixListenerStream::new(socket.listener), async {
                    let _ = stop_rx.await;
                }),
        );
        let result = loop {
            tokio::select! {
                _ = signals.term.recv() => { tracing::info!("SIGTERM: shutting down"); break Ok(()) }
                _ = signals.int.recv() => { tracing::info!("SIGINT: shutting down"); break Ok(()) }
                _ = signals.hup.recv() => reload(reload_from.as_deref(), &mut config, &commands).await,
                r = &mut server => {
                    break match r {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(Error::backend_with("the Workload API server stopped", e)),
                        Err(e) => Err(Error::backend_with("the Workload API server task failed", e)),
                    };
                }
            }
        };
        // Ending the rotation task drops the snapshot sender, which ends every open stream.
        drop(commands);
        let _ = rotation.await;
        let _ = stop_tx.send(());
        if !server.is_finished()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
                .await
                .is_err()
        {
            tracing::warn!("open calls did not finish in time; closing them");
            server.abort();
        }
        BoundSocket::remove(&path, ident);
        tracing::info!(socket = %path.display(), "agent stopped");
        result
    }
}

/// Reloads the configuration; an invalid file (or one changing what only a restart can
/// change) keeps the running configuration and logs why.
async fn reload(from: Option<&Path>, config: &mut Config, commands: &mpsc::Sender<Command>) {
    let Some(path) = from else {
        tracing::warn!("SIGHUP: the agent runs with an embedded configuration; nothing to reload");
        return;
    };
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %keyward_core::chain_line(&e), "SIGHUP: the new configuration is invalid; keeping the running one");
            return;
        }
    };
    let restart = config.restart_only_changes(&new);
    if !restart.is_empty() {
        tracing::error!(changed = ?restart, "SIGHUP: these settings only change with a restart; keeping the running configuration");
        return;
    }
    let (old, fresh) = (&config.agent, &new.agent);
    if (old.socket_mode, old.socket_group) != (fresh.socket_mode, fresh.socket_group)
        && let Err(e) =
            socket::apply_permissions(&fresh.socket, fresh.socket_mode, fresh.socket_group)
    {
        tracing::error!(error = %keyward_core::chain_line(&e), "SIGHUP: cannot apply the new socket permissions; keeping the running configuration");
        return;
    }
    let cmd = Command::Reload {
        entries: new.workloads.clone(),
        renew_fraction: new.agent.renew_fraction,
    };
    if commands.send(cmd).await.is_err() {
        return;
    }
    tracing::info!(config = %path.display(), "SIGHUP: configuration reloaded");
    *config = new;
}
