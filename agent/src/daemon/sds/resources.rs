//! The secrets SDS serves, named as SPIRE's agent names them, so Envoy and Istio
//! configurations written for SPIRE work unchanged:
//!
//! - a `tls_certificate` under each SPIFFE ID the caller is entitled to, and the
//!   caller's first SVID again under `default_svid_name` (`default`);
//! - a `validation_context` with the trust domain's bundle (`trusted_ca`) under the
//!   trust domain's SPIFFE ID (`spiffe://example.org`) and under `default_bundle_name`
//!   (`ROOTCA`);
//! - every bundle under `default_all_bundles_name` (`ALL`), as an
//!   `envoy.tls.cert_validator.spiffe` configuration (plain `trusted_ca` with
//!   `disable_spiffe_cert_validation`).
//!
//! A request with no names asks for every SVID and the bundle under their own names (the
//! xDS wildcard). A name the caller has no resource for is left out of the response,
//! not refused: it is sent once it exists. Certificates and keys are PEM, as Envoy
//! reads them; the key's PEM and every encoded secret live in buffers zeroized on drop.

use std::sync::Arc;

use aws_lc_rs::digest;
use base64::Engine;
use prost::Message;
use prost::bytes::Bytes;
use tonic::Status;
use zeroize::Zeroizing;

use super::proto::envoy::config::core::v3::{DataSource, TypedExtensionConfig, data_source};
use super::proto::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, SpiffeCertValidatorConfig, TlsCertificate, secret,
    spiffe_cert_validator_config::TrustDomain,
};
use super::proto::google::protobuf::Any;
use crate::daemon::config::{SdsSettings, WorkloadEntry};
use crate::daemon::snapshot::Snapshot;
use crate::daemon::svid::Svid;

/// The type of every resource SDS serves.
pub const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// Envoy's SPIFFE certificate validator extension and its configuration type.
const SPIFFE_VALIDATOR: &str = "envoy.tls.cert_validator.spiffe";
const SPIFFE_VALIDATOR_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig";

/// The SVIDs a caller may be sent (entry and SVID, in configuration order).
pub type Entitled = [(Arc<WorkloadEntry>, Arc<Svid>)];

/// The secrets answering one request, and the version naming their content.
pub struct Secrets {
    /// The resources, in the order their names were requested.
    pub resources: Vec<Any>,
    /// Changes exactly when a served name or the content under it changes.
    pub version: String,
    /// The SPIFFE IDs and serials of the SVIDs among them, for the audit log.
    pub svids: Vec<(String, String)>,
}

/// The secrets of `names` (every SVID and the bundle when empty) for a caller entitled
/// to `svids`, from `snap`.
pub fn resolve(
    settings: &SdsSettings,
    snap: &Snapshot,
    svids: &Entitled,
    names: &[String],
) -> Result<Secrets, Status> {
    let wildcard: Vec<String>;
    let names = if names.is_empty() {
        wildcard = svids
            .iter()
            .map(|(e, _)| e.spiffe_id.clone())
            .chain([snap.trust_domain_id.clone()])
            .collect();
        &wildcard
    } else {
        names
    };
    let mut version = digest::Context::new(&digest::SHA256);
    let mut resources = Vec::with_capacity(names.len());
    let mut served = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            continue;
        }
        let Some((secret, content, svid)) = secret_for(settings, snap, svids, name)? else {
            continue;
        };
        served.extend(svid.map(|(e, s)| (e.spiffe_id.clone(), s.serial_hex.clone())));
        for part in [name.as_bytes(), &content] {
            version.update(&(part.len() as u64).to_be_bytes());
            version.update(part);
        }
        resources.push(encode(SECRET_TYPE_URL, &secret));
    }
    Ok(Secrets {
        resources,
        version: hex::encode(&version.finish().as_ref()[..8]),
        svids: served,
    })
}

/// The secret named `name`, what identifies its content (an SVID's serial, or the
/// bundle) and the SVID in it, or `None` when the caller has no such resource.
fn secret_for<'a>(
    settings: &SdsSettings,
    snap: &Snapshot,
    svids: &'a Entitled,
    name: &str,
) -> Result<Option<Found<'a>>, Status> {
    let bundle_content = || [b"bundle:", &snap.bundle[..]].concat();
    if name == snap.trust_domain_id || name == settings.default_bundle_name {
        let context = CertificateValidationContext {
            trusted_ca: Some(inline(Bytes::from(certificates_pem(&snap.bundle)?))),
            ..Default::default()
        };
        return Ok(Some((validation(name, context), bundle_content(), None)));
    }
    if name == settings.default_all_bundles_name {
        let trusted = inline(Bytes::from(certificates_pem(&snap.bundle)?));
        let context = if settings.disable_spiffe_cert_validation {
            CertificateValidationContext {
                trusted_ca: Some(trusted),
                ..Default::default()
            }
        } else {
            let domains = SpiffeCertValidatorConfig {
                trust_domains: vec![TrustDomain {
                    name: trust_domain_name(&snap.trust_domain_id).to_string(),
                    trust_bundle: Some(trusted),
                    // Empty: the trust domain matches connections without a
                    // per-connection workload trust domain, as SPIRE's does.
                    workload_trust_domain: String::new(),
                }],
                trust_bundles: None,
            };
            CertificateValidationContext {
                custom_validator_config: Some(TypedExtensionConfig {
                    name: SPIFFE_VALIDATOR.to_string(),
                    typed_config: Some(encode(SPIFFE_VALIDATOR_TYPE_URL, &domains)),
                }),
                ..Default::default()
            }
        };
        return Ok(Some((validation(name, context), bundle_content(), None)));
    }
    let found = if name == settings.default_svid_name {
        svids.first()
    } else {
        svids.iter().find(|(e, _)| e.spiffe_id == name)
    };
    let Some((entry, svid)) = found else {
        return Ok(None);
    };
    let certificate = TlsCertificate {
        certificate_chain: Some(inline(Bytes::from(certificates_pem(&svid.chain)?))),
        private_key: Some(inline(Bytes::from_owner(private_key_pem(&svid.key)))),
        ..Default::default()
    };
    let secret = Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::TlsCertificate(certificate)),
    };
    let content = svid.serial_hex.as_bytes().to_vec();
    Ok(Some((secret, content, Some((&**entry, &**svid)))))
}

/// A secret, what identifies its content, and the SVID in it.
type Found<'a> = (Secret, Vec<u8>, Option<(&'a WorkloadEntry, &'a Svid)>);

/// A `validation_context` secret.
fn validation(name: &str, context: CertificateValidationContext) -> Secret {
    Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::ValidationContext(context)),
    }
}

/// `spiffe://example.org` → `example.org`, the name Envoy's SPIFFE validator matches.
fn trust_domain_name(id: &str) -> &str {
    id.strip_prefix("spiffe://").unwrap_or(id)
}

/// Inline bytes.
fn inline(bytes: Bytes) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes)),
        ..Default::default()
    }
}

/// `message` as an `Any` of `type_url`, encoded into a buffer zeroized on drop.
fn encode(type_url: &str, message: &impl Message) -> Any {
    let mut buf = Zeroizing::new(Vec::with_capacity(message.encoded_len()));
    message
        .encode(&mut *buf)
        .expect("a Vec sized for the message has room for it");
    Any {
        type_url: type_url.to_string(),
        value: Bytes::from_owner(buf),
    }
}

/// Concatenated DER certificates as PEM.
fn certificates_pem(mut ders: &[u8]) -> Result<String, Status> {
    let mut certs = Vec::new();
    while !ders.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(ders)
            .map_err(|e| Status::internal(format!("a served certificate does not parse: {e}")))?;
        certs.push(ders[..ders.len() - rest.len()].to_vec());
        ders = rest;
    }
    Ok(keyward_core::check::ders_to_pem(&certs))
}

/// A PKCS#8 key as PEM (`PRIVATE KEY`), built in place in a buffer zeroized on drop.
fn private_key_pem(pkcs8: &[u8]) -> Zeroizing<String> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----\n";
    const END: &str = "-----END PRIVATE KEY-----\n";
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut body = Zeroizing::new(String::with_capacity(pkcs8.len() * 4 / 3 + 4));
    b64.encode_string(pkcs8, &mut body);
    let lines = body.len().div_ceil(64);
    let mut pem = Zeroizing::new(String::with_capacity(
        BEGIN.len() + END.len() + body.len() + lines,
    ));
    pem.push_str(BEGIN);
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str(END);
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_key_pem_reads_back_as_the_same_pkcs8() {
        let key: Vec<u8> = (0..=255u8).cycle().take(138).collect();
        let pem_text = private_key_pem(&key);
        let block = pem::parse(pem_text.as_bytes()).expect("PEM");
        assert_eq!(block.tag(), "PRIVATE KEY");
        assert_eq!(block.contents(), &key[..]);
        assert!(pem_text.lines().all(|l| l.len() <= 64));
    }

    #[test]
    fn trust_domain_names_lose_the_scheme() {
        assert_eq!(trust_domain_name("spiffe://example.org"), "example.org");
    }
}
