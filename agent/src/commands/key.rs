//! `keyward key generate` and `keyward key show`.

use keyward_core::audit::Event;
use keyward_core::store::StateDir;
use keyward_core::{Algorithm, Error};

use super::{audit, parse_uri};
use crate::backends::Backends;

/// Creates a key in the backend the URI names, and records it in the state
/// directory's audit log (creating the directory for the log if needed).
pub async fn generate(
    state: &StateDir,
    backends: &Backends,
    key: &str,
    algorithm: &str,
) -> Result<(), Error> {
    let uri = parse_uri(key)?;
    let alg: Algorithm = algorithm.parse()?;
    audit::check(state)?;
    let signer = backends.for_uri(&uri).await?.generate(&uri, alg).await?;
    let fingerprint = keyward_core::store::sha256_hex(signer.public_key_spki_der());
    audit::record(state, Event::key_generated(signer.uri(), alg, &fingerprint))?;
    println!("generated {alg} key {}", signer.uri());
    println!("public key sha256: {fingerprint}");
    Ok(())
}

/// Prints a key's URI, algorithm and public key.
pub async fn show(backends: &Backends, key: &str, json: bool) -> Result<(), Error> {
    let uri = parse_uri(key)?;
    let signer = backends.open(&uri).await?;
    let spki = signer.public_key_spki_der();
    let pem = pem::encode(&pem::Pem::new("PUBLIC KEY", spki.to_vec()));
    let fingerprint = keyward_core::store::sha256_hex(spki);
    if json {
        let v = serde_json::json!({
            "uri": signer.uri().to_string(),
            "algorithm": signer.algorithm().name(),
            "public_key_sha256": fingerprint,
            "public_key_pem": pem,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        println!("uri:               {}", signer.uri());
        println!("algorithm:         {}", signer.algorithm());
        println!("public key sha256: {fingerprint}");
        print!("{pem}");
    }
    Ok(())
}
