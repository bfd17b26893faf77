//! What a restore accepts as a CA key: a PKCS#8 private key (PEM, as the software
//! backend writes it) whose public key is that of the archived CA certificate the
//! archived CA manifest (`ca/ca.json`) names it for. Anything else in an archive's key
//! entries (other bytes, a key of another CA, a key nothing names) is refused, so a
//! restore never writes bytes that are not the CA's key.

use serde_json::Value;

use super::payload::{ArchivedKey, Payload};
use crate::Error;
use crate::store::sha256_hex;

/// The archived CA manifest's path in the state directory.
const CA_MANIFEST: &str = "ca/ca.json";

/// Checks `key_bytes`, the private key of the archive's key entry `key`, against the
/// CA certificate that the archived CA manifest names it for: the entry of the key's role (`root` or
/// `intermediate`) must name the key's URI, its certificate file must be in the archive
/// with the manifest's SHA-256, and the key must be PKCS#8 with that certificate's
/// public key (the first certificate of the file, the one that signs).
pub(super) fn check_key(
    payload: &Payload,
    key: &ArchivedKey,
    key_bytes: &[u8],
) -> Result<(), Error> {
    let refuse = |why: String| {
        Error::InvalidInput(format!(
            "the archive's {} key {} {why}; restore writes only the CA's own key",
            key.role, key.uri
        ))
    };
    let m = payload.manifest();
    let manifest = m
        .files
        .iter()
        .position(|f| f.path == CA_MANIFEST)
        .ok_or_else(|| {
            refuse(format!(
                "is named by no CA: the archive holds no {CA_MANIFEST}"
            ))
        })?;
    let ca: Value = serde_json::from_slice(payload.file_contents(manifest)).map_err(|e| {
        refuse(format!(
            "cannot be checked: the archived {CA_MANIFEST} is not JSON ({e})"
        ))
    })?;
    let entry = match key.role.as_str() {
        "root" | "intermediate" => ca.get(&key.role),
        _ => None,
    }
    .filter(|e| e.get("key").and_then(Value::as_str) == Some(key.uri.as_str()))
    .ok_or_else(|| {
        refuse(format!(
            "is not named by {CA_MANIFEST} as the {} CA key",
            key.role
        ))
    })?;
    let cert_file = entry
        .get("file")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let cert_pem = m
        .files
        .iter()
        .position(|f| f.path == cert_file)
        .map(|i| payload.file_contents(i))
        .filter(|pem| Some(sha256_hex(pem).as_str()) == entry.get("sha256").and_then(Value::as_str))
        .ok_or_else(|| {
            refuse(format!(
                "has no certificate: the archive holds no {cert_file:?} matching {CA_MANIFEST}"
            ))
        })?;
    let cert_der = crate::check::pem_to_ders(cert_pem)
        .ok()
        .and_then(|ders| ders.into_iter().next())
        .ok_or_else(|| refuse(format!("has no certificate: {cert_file} holds none")))?;
    let cert = crate::check::parse_cert(&cert_der)
        .map_err(|e| refuse(format!("has an unreadable certificate ({e})")))?;
    let key_public = pkcs8_public_key(key_bytes).map_err(|why| refuse(format!("is {why}")))?;
    if key_public
        != cert
            .tbs_certificate
            .subject_pki
            .subject_public_key
            .data
            .as_ref()
    {
        return Err(refuse(format!(
            "does not match the public key of the {} certificate {cert_file}",
            key.role
        )));
    }
    Ok(())
}

/// The raw public key (the `subjectPublicKey` bits) of a PKCS#8 PEM private key, or
/// what the bytes are instead.
fn pkcs8_public_key(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let pem = pem::parse(bytes).map_err(|_| "not a PEM private key".to_string())?;
    if pem.tag() != "PRIVATE KEY" {
        return Err(format!(
            "a PEM '{}' block, not a PKCS#8 private key",
            pem.tag()
        ));
    }
    let der = zeroize::Zeroizing::new(pem.into_contents());
    // rcgen reads every key type the CA can have (it signs with them), so this check
    // accepts exactly the keys issuance could use.
    let key = rcgen::KeyPair::try_from(der.as_slice())
        .map_err(|_| "not a P-256, P-384, Ed25519 or RSA PKCS#8 private key".to_string())?;
    Ok(key.public_key_raw().to_vec())
}
