//! The agent daemon: loads the CA, keeps workload SVIDs fresh, and serves the SPIFFE
//! Workload API on a Unix socket until SIGTERM/SIGINT; SIGHUP reloads the config.

pub mod attest;
mod audit;
mod ca;
mod caller;
pub mod config;
mod crl;
pub(crate) mod enroll;
pub(crate) mod generations;
mod grpc_codec;
mod h2_authority;
pub mod jwt;
mod kek_rotation;
pub mod keys;
mod limits;
pub mod logging;
pub mod metrics;
mod rotation;
pub mod sds;
pub mod selectors;
mod server;
mod services;
mod snapshot;
mod socket;
mod streams;
mod svid;
mod upstream_crl;
#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
pub mod workload_api;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyward_core::Error;
use keyward_core::audit::Event;
use keyward_core::store::StateDir;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};

use self::audit::Audit;
use self::config::Config;
use self::keys::proto::key_service_server::KeyServiceServer;
use self::rotation::{Command, Rotation};
use self::sds::proto::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer;
use self::snapshot::Snapshot;
use self::socket::BoundSocket;
use self::workload_api::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use crate::backends::Backends;

/// How long shutdown waits for open calls to finish before the socket is removed anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// HTTP/2 pings on quiet connections, so a peer that died with a stream open is dropped.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keepalive ping may go unanswered before the connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request message accepted: Workload API requests are a few bytes (a JWT
/// to validate is the largest) and Envoy's SDS requests a few KiB (its node metadata),
/// so anything bigger is refused before it is buffered.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Concurrent calls on one connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 100;
/// The largest request header block.
const MAX_HEADER_BYTES: u32 = 16 * 1024;

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
    jwt: watch::Receiver<Arc<jwt::KeySet>>,
    metrics: metrics::Metrics,
    /// The metrics endpoint, the readiness probe and the alert evaluator.
    observers: Vec<tokio::task::JoinHandle<()>>,
    /// The keys `[[workload]] keys` grants, for the KeyService.
    keyring: keys::keyring::Keyring,
    /// The CA the KeyService issues SVIDs for callers' own keys from.
    svid_ca: ca::AgentCa,
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
        let metrics = metrics::Metrics::new(metrics::Policy {
            thresholds: config.alerts,
            renew_fraction: config.agent.renew_fraction,
        });
        let mut observers = Vec::new();
        if let Some(listen) = config.metrics_listen {
            observers.push(metrics::serve(listen, metrics.clone()).await?);
        }
        let timing = metrics.clone();
        let backends = Arc::new(Backends::decorated(Arc::new(move |backend| {
            Arc::new(metrics::TimedBackend::new(backend, timing.clone()))
        })));
        let state = StateDir::new(&config.agent.state_dir);
        let audit = Audit::open(&config.audit)?;
        let journal = generations::Journal::open(&state)?;
        // One Vault client for everything [ca.upstream] asks of Vault: one login.
        let upstream_client = ca::upstream_client(&config.ca)?;
        let ca = ca::load(
            &config.ca,
            upstream_client.clone(),
            &state,
            &backends,
            &audit,
            &metrics,
            &journal,
        )
        .await?;
        metrics.ca_loaded(config.ca.signing_backend());
        let probed_ca = ca.clone();
        let svid_ca = ca.clone();
        let enroll_ca = ca.clone();
        // The CRLs served: the local one and, with [ca.upstream], the upstream one,
        // which its own task fetches (on a schedule and on SIGHUP).
        let (crls, upstream_crl_task) =
            upstream_crl::start(&config.ca, upstream_client, &ca, &state, &audit, &metrics)?;
        observers.extend(upstream_crl_task);
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let mut rotation = Rotation::new(
            ca,
            config.workloads.clone(),
            config.agent.renew_fraction,
            &config.agent.trust_domain,
            tx,
            audit.clone(),
        )
        .with_crl(crls);
        rotation.set_metrics(metrics.clone());
        rotation.initial().await;
        let jwt_keys =
            generations::JwtKey::new(config.jwt.clone(), backends.clone(), audit.clone());
        let jwt = generations::start(jwt_keys, &journal, audit.clone(), metrics.clone()).await?;
        if config.metrics_listen.is_some() {
            // Readiness follows the CA key's backend: probe it while /readyz is served
            // (`[ca] key`, or the upstream intermediate issuing now).
            let probe = match &config.ca.key {
                Some(key) => {
                    let signer = backends.open(key).await?;
                    metrics::spawn_probe(move || signer.clone(), metrics.clone())
                }
                None => metrics::spawn_probe(
                    move || probed_ca.view().issuer.signer().clone(),
                    metrics.clone(),
                ),
            };
            observers.push(probe);
        }
        observers.push(metrics::spawn_evaluator(
            state.clone(),
            rx.clone(),
            metrics.clone(),
        ));
        observers.extend(enroll::start(&config, &enroll_ca, &audit).await?);
        let keyring = keys::keyring::Keyring::new(backends.clone());
        // [[kek]]: rotated through the KeyService's keyring, so it encrypts under the
        // new version at once.
        observers.extend(kek_rotation::start(
            &config.keks,
            keyring.clone(),
            &state,
            audit.clone(),
            metrics.clone(),
        )?);
        limits::raise_fd_limit();
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
            jwt,
            metrics,
            observers,
            keyring,
            svid_ca,
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
            jwt,
            metrics,
            observers,
            keyring,
            svid_ca,
        } = self;
        let path = socket.path.clone();
        let ident = socket.ident();
        let gate = caller::CallerGate::new(&config, audit.clone(), metrics.clone());
        // Envoy's SDS on the same socket, behind the same gate and limits.
        let sds = sds::SecretDiscovery::new(state.clone(), gate.clone(), config.sds.clone());
        // keyward.v1.KeyService on the same socket, behind the same gate and limits.
        let keys = keys::KeyApi::new(state.clone(), gate.clone(), keyring, svid_ca);
        let api = server::WorkloadApi::new(state, gate).with_jwt(jwt);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let caller_limits = config.agent.limits;
        let incoming = limits::incoming(socket.listener, caller_limits, metrics.clone());
        let mut server = tokio::spawn(
            tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
                .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
                .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
                .http2_max_header_list_size(MAX_HEADER_BYTES)
                .layer(limits::CallerGuardLayer::new(
                    &caller_limits,
                    metrics.clone(),
                ))
                .serve_with_incoming_shutdown(
                    services::SocketServices::new(
                        SpiffeWorkloadApiServer::new(api)
                            .max_decoding_message_size(MAX_REQUEST_BYTES),
                        KeyServiceServer::new(keys).max_decoding_message_size(MAX_REQUEST_BYTES),
                        SecretDiscoveryServiceServer::new(sds)
                            .max_decoding_message_size(MAX_REQUEST_BYTES),
                    ),
                    incoming,
                    async {
                        let _ = stop_rx.await;
                    },
                ),
        );
        let result = loop {
            tokio::select! {
                _ = signals.term.recv() => { tracing::info!("SIGTERM: shutting down"); break Ok(()) }
                _ = signals.int.recv() => { tracing::info!("SIGINT: shutting down"); break Ok(()) }
                _ = signals.hup.recv() => {
                    let _ = commands.send(Command::CheckCrl).await;
                    reload(reload_from.as_deref(), &mut config, &commands, &audit).await;
                    metrics.set_policy(metrics::Policy { thresholds: config.alerts, renew_fraction: config.agent.renew_fraction });
                }
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
        for task in observers {
            task.abort();
        }
        audit.flush();
        BoundSocket::remove(&path, ident);
        tracing::info!(socket = %path.display(), "agent stopped");
        result
    }
}

/// Reloads the configuration; an invalid file (or one changing what only a restart can
/// change) keeps the running configuration and logs why. Audited either way.
async fn reload(
    from: Option<&Path>,
    config: &mut Config,
    commands: &mpsc::Sender<Command>,
    audit: &Audit,
) {
    let Some(path) = from else {
        tracing::warn!("SIGHUP: the agent runs with an embedded configuration; nothing to reload");
        return;
    };
    let source = path.display().to_string();
    match apply_reload(path, config, commands).await {
        Ok(()) => audit.record(Event::config_reloaded(&source, true, None)),
        Err(why) => audit.record(Event::config_reloaded(&source, false, Some(&why))),
    }
}

/// The reload itself; the error is why the running configuration was kept.
async fn apply_reload(
    path: &Path,
    config: &mut Config,
    commands: &mpsc::Sender<Command>,
) -> Result<(), String> {
    let new = Config::load(path).map_err(|e| {
        let why = keyward_core::chain_line(&e);
        tracing::error!(error = %why, "SIGHUP: the new configuration is invalid; keeping the running one");
        format!("invalid: {why}")
    })?;
    let restart = config.restart_only_changes(&new);
    if !restart.is_empty() {
        tracing::error!(changed = ?restart, "SIGHUP: these settings only change with a restart; keeping the running configuration");
        return Err(format!("needs a restart: {}", restart.join(", ")));
    }
    let (old, fresh) = (&config.agent, &new.agent);
    if (old.socket_mode, old.socket_group) != (fresh.socket_mode, fresh.socket_group)
        && let Err(e) =
            socket::apply_permissions(&fresh.socket, fresh.socket_mode, fresh.socket_group)
    {
        let why = keyward_core::chain_line(&e);
        tracing::error!(error = %why, "SIGHUP: cannot apply the new socket permissions; keeping the running configuration");
        return Err(format!("socket permissions: {why}"));
    }
    let cmd = Command::Reload {
        entries: new.workloads.clone(),
        renew_fraction: new.agent.renew_fraction,
    };
    commands
        .send(cmd)
        .await
        .map_err(|_| "the agent is stopping".to_string())?;
    tracing::info!(config = %path.display(), "SIGHUP: configuration reloaded");
    *config = new;
    Ok(())
}
