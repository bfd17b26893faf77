//! What the two intermediate kinds share: the journal detail (certificates as PEM), the
//! schedule and the key of each generation.
//!
//! An intermediate's life has three marks, all derived from the previous generation's
//! notAfter, so a restart finds them again from the journal:
//! - prepared `rotate_before` ahead of the previous one's expiry (the overlap starts);
//! - activated half-way through that lead: new SVIDs are issued under it, and SVIDs
//!   still chained to the previous one (capped at its notAfter) renew under it;
//! - the previous generation leaves the bundle when it expires (the overlap ends).
//!
//! Generation `n`'s key is at the configured template with `{n}` replaced (a fresh key
//! per generation); a template without `{n}` names one key that is certified again.

use std::sync::Arc;

use keyward_core::audit::Event;
use keyward_core::check::{ders_to_pem, pem_to_ders, summarize};
use keyward_core::issuance::CaIssuer;
use keyward_core::{Error, KeySigner, KeyUri};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Entry, Next, new_key};
use crate::backends::Backends;
use crate::daemon::audit::Audit;
use crate::daemon::config::IntermediateSettings;

/// What the journal keeps of one intermediate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertDetail {
    /// The intermediate certificate, PEM.
    pub cert: String,
    /// The certificates above it up to the upstream root, PEM (empty for a local
    /// intermediate, whose root is the state directory's).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chain: String,
}

impl CertDetail {
    /// The detail of `cert_der` with the certificates `above` it.
    pub fn new(cert_der: &[u8], above: &[Vec<u8>]) -> Self {
        CertDetail {
            cert: ders_to_pem(std::slice::from_ref(&cert_der.to_vec())),
            chain: if above.is_empty() {
                String::new()
            } else {
                ders_to_pem(above)
            },
        }
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> Result<Vec<u8>, Error> {
        pem_to_ders(self.cert.as_bytes())?
            .into_iter()
            .next()
            .ok_or_else(|| Error::State("a recorded intermediate has no certificate".into()))
    }

    /// The certificates above it, DER.
    #[cfg(feature = "vault")]
    pub fn chain_der(&self) -> Result<Vec<Vec<u8>>, Error> {
        pem_to_ders(self.chain.as_bytes())
    }

    /// The certificate's notAfter (the Unix epoch when it does not parse: it leaves at
    /// once).
    pub fn not_after(&self) -> OffsetDateTime {
        self.cert_der()
            .and_then(|d| summarize(&d))
            .map_or(OffsetDateTime::UNIX_EPOCH, |s| s.not_after)
    }
}

/// When the intermediate after `active` is prepared and takes over.
pub fn next(settings: &IntermediateSettings, active: &Entry<CertDetail>) -> Next {
    let end = active.detail.not_after();
    let lead = time::Duration::try_from(settings.rotate_before).unwrap_or(time::Duration::ZERO);
    Next {
        prepare_at: end - lead,
        activates: end - lead / 2,
    }
}

/// When an intermediate leaves the bundle: when it expires.
pub fn leaves_at(entry: &Entry<CertDetail>) -> Option<OffsetDateTime> {
    Some(entry.detail.not_after())
}

/// The key URI of generation `n`.
pub fn key_uri(settings: &IntermediateSettings, n: u64) -> Result<KeyUri, Error> {
    KeyUri::parse(&settings.key_template.replace("{n}", &n.to_string()))
}

/// The key of a new generation `n`: made now when the template has `{n}`, else the
/// one key the template names.
pub async fn new_generation_key(
    settings: &IntermediateSettings,
    n: u64,
    backends: &Backends,
    audit: &Audit,
) -> Result<Arc<dyn KeySigner>, Error> {
    let uri = key_uri(settings, n)?;
    if settings.key_template.contains("{n}") {
        new_key(backends, &uri, settings.algorithm, audit).await
    } else {
        backends.open(&uri).await
    }
}

/// Opens recorded generation `entry` whose chain above it is `above`.
pub async fn open(
    settings: &IntermediateSettings,
    backends: &Backends,
    entry: &Entry<CertDetail>,
    above: Vec<Vec<u8>>,
) -> Result<CaIssuer, Error> {
    let signer = backends.open(&key_uri(settings, entry.n)?).await?;
    CaIssuer::new(entry.detail.cert_der()?, above, signer)
}

/// The audit event `name` about intermediate `issuer`, signed by `signing_key`.
pub fn event(name: &str, issuer: &CaIssuer, signing_key: &str) -> Event {
    Event::issued(name, issuer.certificate_der(), issuer.signer().uri())
        .with("signing_key", signing_key)
        .key("key", issuer.signer().uri())
}
