//! The agent's log output: text or JSON lines on stderr (`[agent] log_format`), at
//! `info` unless `KEYWARD_LOG` says otherwise.

use tracing_subscriber::EnvFilter;

use super::config::LogFormat;

/// The log filter: `KEYWARD_LOG` if set, else `default_level`. cryptoki logs an error for
/// every mechanism of a token it has no name for; those are noise, so they are off by
/// default.
pub fn env_filter(default_level: &str) -> EnvFilter {
    EnvFilter::try_from_env("KEYWARD_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},cryptoki::mechanism=off")))
}

/// Installs the agent's log subscriber. Does nothing when the process already has one
/// (the CLI installs its own before the configuration is read).
pub fn init(format: LogFormat) {
    let filter = env_filter("info");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init().is_ok(),
        LogFormat::Json => builder.json().try_init().is_ok(),
    };
    if !installed {
        tracing::debug!(
            ?format,
            "a log subscriber was already installed; keeping it"
        );
    }
}
