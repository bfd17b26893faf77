//! One module per group of commands; [`main`] starts the process, `run` dispatches.

mod arenas;
mod audit;
mod backup;
mod ca;
mod crypto;
mod est;
mod export;
mod fetch;
#[cfg(feature = "pkcs11")]
mod hsm;
mod inspect;
mod issue;
mod key;
mod pending;
pub(crate) mod revoke;
mod sign_csr;
mod up;
mod upstream;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use keyward_core::store::StateDir;
use keyward_core::{Error, KeyUri};

use crate::backends::Backends;
use crate::cli::{AuditCommand, CaCommand, Cli, Command, EstCommand, KeyCommand, PendingCommand};

/// The `keyward` process: parses the command line, installs logging (the agent installs
/// its own once its config names the format), runs the command and prints its error
/// as one line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Agent { .. } | Command::Up) {
        arenas::limit_for_daemon();
    }
    if !matches!(cli.command, Command::Agent { .. }) {
        tracing_subscriber::fmt()
            .with_env_filter(crate::daemon::logging::env_filter("warn"))
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", keyward_core::chain_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Runs one command to completion.
async fn run(cli: Cli) -> Result<(), Error> {
    let state = StateDir::new(&cli.state_dir);
    let backends = Backends::default();
    if !matches!(
        cli.command,
        Command::Hsm(_)
            | Command::Key(_)
            | Command::Fetch(_)
            | Command::Crypto(_)
            | Command::Restore(_)
            | Command::Audit(_)
            | Command::Pending { .. }
    ) {
        report_problems(&state);
    }
    match cli.command {
        Command::Key(KeyCommand::Generate { key, algorithm }) => {
            key::generate(&state, &backends, &key, &algorithm).await
        }
        Command::Key(KeyCommand::Rotate { key }) => key::rotate(&state, &backends, &key).await,
        Command::Key(KeyCommand::Show { key, json }) => key::show(&backends, &key, json).await,
        Command::Ca(CaCommand::Init {
            key,
            subject,
            validity,
        }) => ca::init(&state, &backends, &key, &subject, &validity).await,
        Command::Ca(CaCommand::Intermediate {
            key,
            subject,
            validity,
            upstream,
        }) => {
            ca::intermediate(
                &state,
                &backends,
                &key,
                &subject,
                &validity,
                upstream.as_deref(),
            )
            .await
        }
        Command::Issue(args) => issue::issue(&state, &backends, &args).await,
        Command::SignCsr(args) => sign_csr::run(&state, &backends, &args).await,
        Command::Verify(args) => inspect::verify(&state, &args),
        Command::Status(args) => inspect::status(&state, &args),
        Command::Revoke(args) => revoke::revoke(&state, &backends, &args).await,
        Command::Crl(args) => revoke::crl(&state, &backends, &args).await,
        Command::Hsm(cmd) => hsm(cmd).await,
        Command::Up => up::up(&state, &backends).await,
        Command::Agent { config } => crate::daemon::run(&config).await,
        Command::Fetch(args) => fetch::run(&args).await,
        Command::Crypto(cmd) => crypto::run(&cmd).await,
        Command::Backup(args) => backup::backup(&state, &args),
        Command::Restore(args) => backup::restore(&state, &args),
        Command::Audit(AuditCommand::Verify { files }) => audit::verify(&files),
        Command::Audit(AuditCommand::Recover { log }) => audit::recover(&state, log.as_deref()),
        Command::Export(args) => export::export(&state, &args),
        Command::Est(EstCommand::Bootstrap(cmd)) => est::bootstrap(&state, cmd),
        Command::Pending { command: None } => pending::list(&state),
        Command::Pending {
            command: Some(PendingCommand::Resolve { next_update }),
        } => pending::resolve(&state, &backends, &next_update).await,
    }
}

#[cfg(feature = "pkcs11")]
async fn hsm(cmd: crate::cli::HsmCommand) -> Result<(), Error> {
    hsm::run(cmd).await
}

#[cfg(not(feature = "pkcs11"))]
async fn hsm(_cmd: crate::cli::HsmCommand) -> Result<(), Error> {
    Err(Error::NotCompiled("pkcs11".into()))
}

/// Prints, as warnings on stderr, anything wrong with the state directory.
fn report_problems(state: &StateDir) {
    match state.problems() {
        Ok(problems) => {
            for p in problems {
                eprintln!("warning: {p}");
            }
        }
        Err(e) => eprintln!("warning: cannot check {}: {e}", state.path().display()),
    }
}

/// Parses a key URI given on the command line.
fn parse_uri(s: &str) -> Result<KeyUri, Error> {
    KeyUri::parse(s)
}

/// Reads a file named on the command line, with the path in the error.
fn read_input(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))
}

/// Days from now until `t` (negative when past), rounded down.
fn days_left(t: time::OffsetDateTime) -> i64 {
    (t - time::OffsetDateTime::now_utc()).whole_days()
}

/// RFC 3339 text of a time.
fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
