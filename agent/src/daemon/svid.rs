//! One workload SVID: a new in-memory software key and a certificate whose only URI
//! SAN is the entry's SPIFFE ID. The key exists only in this process (PKCS#8 bytes
//! that are zeroized when the last response holding them is dropped).

use std::sync::Arc;

use keyward_core::issuance::{IssuedCertificate, ServiceProfile};
use keyward_core::{Algorithm, Error, KeySigner, KeyUri};
use keyward_software::SoftwareKey;
use prost::bytes::Bytes;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::ca::CaView;
use super::config::WorkloadEntry;
use super::workload_api::X509svid;

/// An issued SVID, ready to be put in responses. Its `Debug` leaves the key out.
pub struct Svid {
    /// The certificate chain, leaf first, DER concatenated.
    pub chain: Bytes,
    /// The leaf certificate alone (DER; a view into `chain`), for the audit log.
    pub leaf: Bytes,
    /// The private key, PKCS#8 DER (zeroized on drop).
    pub key: Bytes,
    /// The leaf's serial number.
    pub serial_hex: String,
    /// The leaf's notAfter.
    pub not_after: OffsetDateTime,
}

impl std::fmt::Debug for Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Svid")
            .field("serial_hex", &self.serial_hex)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Svid {
    /// The Workload API message for this SVID of `entry`, with `bundle`.
    pub fn message(&self, entry: &WorkloadEntry, bundle: &Bytes) -> X509svid {
        X509svid {
            spiffe_id: entry.spiffe_id.clone(),
            x509_svid: self.chain.clone(),
            x509_svid_key: self.key.clone(),
            bundle: bundle.clone(),
            hint: entry.hint.clone(),
        }
    }
}

/// The common name of an SVID: the SPIFFE ID when it fits in 64 characters (it is
/// never a DNS name, so it adds no SAN), else its first 61 characters and "...".
fn common_name(id: &str) -> String {
    if id.chars().count() <= 64 {
        id.to_string()
    } else {
        format!("{}...", id.chars().take(61).collect::<String>())
    }
}

/// A new in-memory key: its SubjectPublicKeyInfo and PKCS#8 (DER).
fn generate_key(alg: Algorithm) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), Error> {
    let uri = KeyUri::file("/keyward-agent/in-memory-workload-key")?;
    let (key, pkcs8) = SoftwareKey::generate(alg, uri)?;
    Ok((key.public_key_spki_der().to_vec(), pkcs8))
}

/// Issues a new SVID for `entry` from `ca`.
pub async fn issue(ca: &CaView, entry: &WorkloadEntry) -> Result<Arc<Svid>, Error> {
    let alg = entry.algorithm;
    let (spki, pkcs8) = match alg {
        // Tens of microseconds: generated on the task, as the CA signature is, rather
        // than handed to a blocking thread (whose hand-off costs as much, and whose
        // extra threads and malloc arenas cost resident memory).
        Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 | Algorithm::Ed25519 => {
            generate_key(alg)?
        }
        // RSA key generation takes tens to hundreds of milliseconds.
        Algorithm::RsaPkcs1Sha256(_) | Algorithm::RsaPssSha256(_) => {
            tokio::task::spawn_blocking(move || generate_key(alg))
                .await
                .map_err(|e| Error::backend_with("workload key generation task failed", e))??
        }
    };
    let (cert, chain) = certify(ca, entry, &spki).await?;
    Ok(Arc::new(Svid {
        leaf: chain.slice(..cert.der.len()),
        chain,
        key: Bytes::from_owner(pkcs8),
        serial_hex: cert.serial_hex,
        not_after: cert.not_after,
    }))
}

/// Issues `entry`'s SVID certificate for the public key `spki` (DER
/// SubjectPublicKeyInfo) from `ca`: the certificate, and the chain to send (leaf first,
/// then the intermediates, DER concatenated). The KeyService issues this way for keys
/// that workloads keep.
pub async fn certify(
    ca: &CaView,
    entry: &WorkloadEntry,
    spki: &[u8],
) -> Result<(IssuedCertificate, Bytes), Error> {
    let profile = ServiceProfile {
        common_name: common_name(&entry.spiffe_id),
        dns: entry.dns.clone(),
        ips: entry.ips.clone(),
        uris: vec![entry.spiffe_id.clone()],
        validity: entry.ttl,
    };
    let cert = ca.issuer.issue_service(spki, &profile).await?;
    let mut chain = cert.der.clone();
    for c in &ca.intermediates {
        chain.extend_from_slice(c);
    }
    Ok((cert, Bytes::from(chain)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::snapshot::Snapshot;
    use base64::Engine;

    /// Whether `text` shows any 8 bytes of `key` running, in hex, as escaped bytes (the
    /// `Debug` of `Bytes`), as a decimal list (of `Vec<u8>`) or in base64.
    fn shows_key_bytes(text: &str, key: &[u8]) -> bool {
        let b64 = base64::engine::general_purpose::STANDARD;
        let base64_runs = (0..3).flat_map(|k| {
            let enc = b64.encode(&key[k..]);
            (0..enc.len().saturating_sub(12))
                .step_by(4)
                .map(move |i| enc[i..i + 12].to_string())
        });
        key.windows(8)
            .flat_map(|w| {
                let escaped = format!("{:?}", Bytes::copy_from_slice(w));
                let list = format!("{w:?}");
                [
                    hex::encode(w),
                    hex::encode_upper(w),
                    escaped[2..escaped.len() - 1].to_string(),
                    list[1..list.len() - 1].to_string(),
                ]
            })
            .chain(base64_runs)
            .any(|form| text.contains(&form))
    }

    #[test]
    fn debug_of_an_svid_its_snapshot_and_its_message_shows_no_key_bytes() {
        let uri = KeyUri::file("/keyward-agent/test-key").unwrap();
        let (_, pkcs8) = SoftwareKey::generate(Algorithm::EcdsaP256Sha256, uri).unwrap();
        let key = Bytes::from(pkcs8.to_vec());
        let chain = Bytes::from_static(b"certificate chain");
        let svid = Arc::new(Svid {
            leaf: chain.slice(..11),
            chain: chain.clone(),
            key: key.clone(),
            serial_hex: "0A1B".into(),
            not_after: OffsetDateTime::UNIX_EPOCH,
        });
        let snapshot = Snapshot {
            svids: vec![Some(svid.clone())],
            ..Snapshot::default()
        };
        let message = X509svid {
            spiffe_id: "spiffe://example.org/api".into(),
            x509_svid: chain,
            x509_svid_key: key.clone(),
            bundle: Bytes::from_static(b"bundle"),
            hint: String::new(),
        };
        // The check itself finds a key printed the way derived Debug printed it.
        assert!(shows_key_bytes(&format!("{key:?}"), &key));
        assert!(shows_key_bytes(&format!("{:?}", key.to_vec()), &key));
        assert!(shows_key_bytes(&hex::encode(&key), &key));
        for text in [
            format!("{svid:?}"),
            format!("{snapshot:?}"),
            format!("{snapshot:#?}"),
            format!("{message:?}"),
        ] {
            assert!(!shows_key_bytes(&text, &key), "{text}");
            assert!(text.contains("redacted"), "{text}");
        }
        assert!(format!("{svid:?}").contains("0A1B"));
    }

    #[test]
    fn long_ids_are_shortened_for_the_common_name() {
        assert_eq!(
            common_name("spiffe://example.org/api"),
            "spiffe://example.org/api"
        );
        let long = format!("spiffe://example.org/{}", "a".repeat(80));
        let cn = common_name(&long);
        assert_eq!(cn.chars().count(), 64);
        assert!(cn.ends_with("..."));
    }
}
