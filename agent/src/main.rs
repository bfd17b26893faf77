//! The `keyward` binary: the security team's CLI and (later) the agent daemon.
#![forbid(unsafe_code)]

mod backends;
mod cli;
mod commands;
mod daemon;

use keyward::duration;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // The agent installs its own subscriber once its config (log format) is read.
    if !matches!(cli.command, cli::Command::Agent { .. }) {
        tracing_subscriber::fmt()
            .with_env_filter(daemon::logging::env_filter("warn"))
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
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", keyward_core::chain_line(&e));
            ExitCode::FAILURE
        }
    }
}
