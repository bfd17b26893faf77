//! `keyward up`: a working agent with no configuration. A software CA in the state
//! directory (created on first run, reused after), the Workload API on
//! STATE/agent.sock, and one workload entry for the current user; prints the
//! `keyward fetch` command that gets the user's certificate, naming this very binary
//! (someone who ran `cargo run` has no `keyward` on their PATH).

use std::os::unix::fs::MetadataExt;

use keyward_core::store::StateDir;
use keyward_core::{Algorithm, Error, KeyUri};

use crate::backends::Backends;
use crate::daemon::Agent;
use crate::daemon::config::Config;

/// The trust domain of the embedded configuration.
const TRUST_DOMAIN: &str = "keyward.local";

/// Starts the agent with the embedded default configuration and serves until
/// SIGTERM/SIGINT.
pub async fn up(state: &StateDir, backends: &Backends) -> Result<(), Error> {
    let root = std::path::absolute(state.path())
        .map_err(|e| Error::io(format!("bad state directory {}", state.path().display()), e))?;
    let state = StateDir::new(&root);
    let key = match state.ca()? {
        Some(ca) if state.exists() => {
            println!("using the CA in {}", root.display());
            ca.issuing()?.key
        }
        _ => {
            let key = KeyUri::file(root.join("keys/ca.pem"))?;
            let backend = backends.for_uri(&key).await?;
            match backend.generate(&key, Algorithm::EcdsaP256Sha256).await {
                Ok(signer) => {
                    let fingerprint = keyward_core::store::sha256_hex(signer.public_key_spki_der());
                    super::audit::record(
                        &state,
                        keyward_core::audit::Event::key_generated(
                            &key,
                            Algorithm::EcdsaP256Sha256,
                            &fingerprint,
                        ),
                    )?;
                }
                Err(Error::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
            println!("creating a software CA in {} (key {key})", root.display());
            key
        }
    };
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|e| Error::io("cannot read /proc/self", e))?;
    let config = Config::parse(
        &embedded_config(&root, &key, uid),
        "<keyward up configuration>",
        &root,
    )?;
    let socket = config.agent.socket.clone();
    let spiffe_id = config.workloads[0].spiffe_id.clone();
    let agent = Agent::start(config).await?;
    let out = root.join("svid");
    println!(
        "agent serving the SPIFFE Workload API on {}",
        socket.display()
    );
    println!("  workload entry: {spiffe_id} for uid {uid}");
    let mut endpoint = std::ffi::OsString::from("unix://");
    endpoint.push(&socket);
    println!(
        "  SPIFFE clients: export SPIFFE_ENDPOINT_SOCKET={}",
        shell_word(&endpoint)?
    );
    println!();
    println!("get your certificate, key and trust bundle:");
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("cannot find the path of the running keyward binary", e))?;
    println!(
        "  {} fetch --socket {} --out {}",
        shell_word(&exe)?,
        shell_word(&socket)?,
        shell_word(&out)?
    );
    println!("check them with openssl:");
    println!(
        "  openssl verify -x509_strict -CAfile {} -untrusted {cert} {cert}",
        shell_word(out.join("bundle.pem"))?,
        cert = shell_word(out.join("cert.pem"))?,
    );
    println!("stop the agent with Ctrl-C");
    agent.serve(None).await
}

/// `word` (a path, say) as one shell word, quoted where it needs to be.
fn shell_word(word: impl AsRef<std::ffi::OsStr>) -> Result<String, Error> {
    let word = word.as_ref();
    let shown = word.to_string_lossy();
    let text = word
        .to_str()
        .ok_or_else(|| Error::InvalidInput(format!("{shown} is not UTF-8")))?;
    shlex::try_quote(text)
        .map(|quoted| quoted.into_owned())
        .map_err(|e| Error::InvalidInput(format!("{shown}: {e}")))
}

/// The embedded configuration: the same keys a configuration file has.
fn embedded_config(root: &std::path::Path, key: &KeyUri, uid: u32) -> String {
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    format!(
        r#"
[agent]
socket = {socket}
socket_mode = "0600"
state_dir = {state}
trust_domain = "{TRUST_DOMAIN}"

[ca]
key = {key}
subject = "CN=keyward local CA"

[[workload]]
spiffe_id = "spiffe://{TRUST_DOMAIN}/uid/{uid}"
dns = ["localhost"]
ip = ["127.0.0.1", "::1"]
ttl = "1h"
selectors = {{ uid = {uid} }}
"#,
        socket = quote(&root.join("agent.sock").display().to_string()),
        state = quote(&root.display().to_string()),
        key = quote(&key.to_string()),
    )
}
