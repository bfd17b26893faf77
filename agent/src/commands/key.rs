//! `keyward key generate`, `keyward key rotate` and `keyward key show`.

use keyward_core::audit::Event;
use keyward_core::store::StateDir;
use keyward_core::{Algorithm, Error, KeyUri};

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
    if algorithm == KEK_ALGORITHM {
        return generate_kek(state, backends, &uri).await;
    }
    let alg: Algorithm = algorithm.parse()?;
    audit::check(state)?;
    let signer = backends.for_uri(&uri).await?.generate(&uri, alg).await?;
    let fingerprint = keyward_core::store::sha256_hex(signer.public_key_spki_der());
    audit::record(state, Event::key_generated(signer.uri(), alg, &fingerprint))?;
    println!("generated {alg} key {}", signer.uri());
    println!("public key sha256: {fingerprint}");
    Ok(())
}

/// The `--algorithm` of key-encryption keys (AES-256-GCM, in versions).
pub const KEK_ALGORITHM: &str = "aes-256";

/// Creates a key-encryption key at version 1 and records it in the audit log.
async fn generate_kek(state: &StateDir, backends: &Backends, uri: &KeyUri) -> Result<(), Error> {
    audit::check(state)?;
    let kek = backends.for_uri(uri).await?.generate_wrapper(uri).await?;
    let event = Event::new("key_generated")
        .key("key", kek.uri())
        .with("algorithm", KEK_ALGORITHM)
        .with("version", 1);
    audit::record(state, event)?;
    println!(
        "generated {KEK_ALGORITHM} key-encryption key {} (version 1)",
        kek.uri()
    );
    Ok(())
}

/// Adds a version to a key-encryption key: new data is encrypted under it, data under
/// earlier versions still decrypts.
pub async fn rotate(state: &StateDir, backends: &Backends, key: &str) -> Result<(), Error> {
    let uri = parse_uri(key)?;
    audit::check(state)?;
    let kek = backends.for_uri(&uri).await?.open_wrapper(&uri).await?;
    let version = kek.rotate().await?;
    audit::record(
        state,
        Event::new("key_rotated")
            .key("key", kek.uri())
            .with("version", version),
    )?;
    println!("rotated {} to version {version}", kek.uri());
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
