//! `keyward hsm slots` and `keyward hsm keys`: what a security team looks at before it
//! points keyward at a token.

use keyward_core::{Error, KeyUri};
use keyward_pkcs11::{KeyTable, Pkcs11Backend, SlotTable};

use super::parse_uri;
use crate::cli::HsmCommand;

/// Runs one `hsm` subcommand.
pub async fn run(cmd: HsmCommand) -> Result<(), Error> {
    match cmd {
        HsmCommand::Slots {
            module,
            mechanisms,
            json,
        } => {
            let slots = tokio::task::spawn_blocking(move || {
                keyward_pkcs11::list_slots(&module, mechanisms)
            })
            .await
            .map_err(|e| Error::backend_with("slot listing task failed", e))??;
            if json {
                println!("{}", serde_json::to_string_pretty(&slots).expect("json"));
            } else {
                print!("{}", SlotTable(&slots));
            }
        }
        HsmCommand::Keys { key, json } => {
            let KeyUri::Pkcs11(uri) = parse_uri(&key)? else {
                return Err(Error::InvalidUri(format!(
                    "hsm keys takes a pkcs11: URI naming a token, not '{key}'"
                )));
            };
            let keys = Pkcs11Backend::new(None).list_keys(&uri).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys).expect("json"));
            } else {
                print!("{}", KeyTable(&keys));
            }
        }
    }
    Ok(())
}
