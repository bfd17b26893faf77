//! `keyward est bootstrap add`: a device's one-use EST bootstrap secret, shown once.

use keyward_core::Error;
use keyward_core::audit::Event;
use keyward_core::store::StateDir;

use super::audit;
use crate::cli::EstBootstrapCommand;
use crate::daemon::enroll::est;

/// Runs `keyward est bootstrap ...`.
pub fn bootstrap(state: &StateDir, cmd: EstBootstrapCommand) -> Result<(), Error> {
    match cmd {
        EstBootstrapCommand::Add { name, dns, ip } => {
            let mut sans = dns;
            sans.extend(ip.iter().map(ToString::to_string));
            audit::check(state)?;
            let secret = est::add_bootstrap_secret(state, &name, sans.clone())?;
            audit::record(
                state,
                Event::new("est_bootstrap_secret_added")
                    .with("name", &name)
                    .with("sans", &sans),
            )?;
            println!("{}", secret.as_str());
            eprintln!(
                "bootstrap secret for '{name}' (shown once; enrolls once): \
                 curl --user '{name}:SECRET' ... /.well-known/est/simpleenroll"
            );
            Ok(())
        }
    }
}
