//! `[ca]` with its two exclusive ways of rotating an intermediate: `[ca.intermediate]`
//! (issued under the agent's own root) and `[ca.upstream]` (signed by an upstream
//! authority, Vault/OpenBao PKI, whose nodes `[vault] addresses` may list).

use std::time::Duration;

use keyward_core::{Algorithm, Error, KeyUri};
use toml::Spanned;

use super::super::raw::{RawCa, RawRotating, RawVault};
use super::super::{CaSettings, IntermediateSettings, UpstreamSettings};
use super::Src;

/// The root's validity when the agent creates it.
const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 86_400);
/// An intermediate's lifetime unless configured otherwise.
const DEFAULT_INTERMEDIATE_TTL: Duration = Duration::from_secs(30 * 86_400);
/// How often the upstream CRL is fetched unless configured otherwise.
const DEFAULT_CRL_REFRESH: Duration = Duration::from_secs(60);

/// `[ca]`, `[ca.intermediate]`, `[ca.upstream]` and `[vault]`.
pub(super) fn settings(
    src: &Src,
    ca: &Spanned<RawCa>,
    vault: Option<&Spanned<RawVault>>,
) -> Result<CaSettings, Error> {
    let c = ca.get_ref();
    if let (Some(_), Some(u)) = (&c.intermediate, &c.upstream) {
        return Err(src.err(
            &u.span(),
            "[ca.upstream] and [ca.intermediate] are exclusive: the agent's intermediate is \
             signed either by its own root or by the upstream authority; keep one",
        ));
    }
    let upstream = c
        .upstream
        .as_ref()
        .map(|u| upstream(src, u, vault))
        .transpose()?;
    if upstream.is_none()
        && let Some(v) = vault
    {
        return Err(src.err(
            &v.span(),
            "[vault] configures the upstream authority's client: it needs [ca.upstream]",
        ));
    }
    let key = match (&c.key, &upstream) {
        (Some(k), None) => {
            let key = KeyUri::parse(&src.key_text(k)).map_err(|e| src.wrap(&k.span(), e))?;
            key.check_recordable("[ca] key")
                .map_err(|e| src.wrap(&k.span(), e))?;
            Some(key)
        }
        (None, None) => {
            return Err(src.err(
                &ca.span(),
                "[ca] key is missing: the key of the CA the agent issues from (or add \
                 [ca.upstream] to have an upstream authority sign its intermediates)",
            ));
        }
        (Some(k), Some(_)) => {
            return Err(src.err(
                &k.span(),
                "[ca] key is not used with [ca.upstream] (each intermediate's key comes from \
                 [ca.upstream] key): remove it",
            ));
        }
        (None, Some(_)) => None,
    };
    let subject = match &c.subject {
        None => "CN=keyward root CA".to_string(),
        Some(s) => subject(src, s)?,
    };
    let validity = c
        .validity
        .as_ref()
        .map(|v| src.duration(v))
        .transpose()?
        .unwrap_or(TEN_YEARS);
    let intermediate = c.intermediate.as_ref().map(|i| local(src, i)).transpose()?;
    Ok(CaSettings {
        key,
        subject,
        validity,
        intermediate,
        upstream,
    })
}

fn subject(src: &Src, s: &Spanned<String>) -> Result<String, Error> {
    keyward_core::issuance::parse_subject(s.get_ref()).map_err(|e| src.wrap(&s.span(), e))?;
    Ok(s.get_ref().clone())
}

/// `[ca.intermediate]`: the keys and lifetimes of intermediates under the agent's root.
fn local(src: &Src, i: &Spanned<RawRotating>) -> Result<IntermediateSettings, Error> {
    let r = i.get_ref();
    if let Some(v) = r.authority.as_ref().or(r.crl_refresh.as_ref()) {
        return Err(src.err(
            &v.span(),
            "authority and crl_refresh belong in [ca.upstream], not [ca.intermediate]",
        ));
    }
    generation(src, r, &i.span(), "[ca.intermediate] key")
}

/// `[ca.upstream]`: the authority string, the intermediates' keys and lifetimes, and
/// the nodes from `[vault] addresses`.
fn upstream(
    src: &Src,
    u: &Spanned<RawRotating>,
    vault: Option<&Spanned<RawVault>>,
) -> Result<UpstreamSettings, Error> {
    let r = u.get_ref();
    let given = r.authority.as_ref().ok_or_else(|| {
        src.err(
            &u.span(),
            "[ca.upstream] authority is missing: the PKI mount that signs, e.g. \"vault-pki:pki\"",
        )
    })?;
    let authority = given.get_ref().trim().to_string();
    check_authority(&authority).map_err(|e| src.wrap(&given.span(), e))?;
    let vault_addresses = match vault.map(|v| &v.get_ref().addresses) {
        None | Some(None) => None,
        Some(Some(list)) => {
            let texts: Vec<String> = list.get_ref().iter().map(|a| a.get_ref().clone()).collect();
            check_addresses(&texts).map_err(|e| src.wrap(&list.span(), e))?;
            Some(texts)
        }
    };
    let crl_refresh = r
        .crl_refresh
        .as_ref()
        .map(|v| src.duration(v))
        .transpose()?
        .unwrap_or(DEFAULT_CRL_REFRESH);
    Ok(UpstreamSettings {
        authority,
        generation: generation(src, r, &u.span(), "[ca.upstream] key")?,
        vault_addresses,
        crl_refresh,
    })
}

#[cfg(feature = "vault")]
fn check_authority(authority: &str) -> Result<(), Error> {
    keyward_vault::VaultPkiUpstream::parse(authority).map(|_| ())
}

#[cfg(not(feature = "vault"))]
fn check_authority(_authority: &str) -> Result<(), Error> {
    Err(Error::NotCompiled("vault".into()))
}

/// Checks the nodes' addresses as the Vault client will read them.
#[cfg(feature = "vault")]
fn check_addresses(list: &[String]) -> Result<(), Error> {
    let auth = keyward_vault::VaultAuth::TokenFile("/".into());
    let mut settings = keyward_vault::VaultSettings::new("http://127.0.0.1", auth)?;
    settings.set_addresses(list)
}

#[cfg(not(feature = "vault"))]
fn check_addresses(_list: &[String]) -> Result<(), Error> {
    Err(Error::NotCompiled("vault".into()))
}

/// The keys and lifetimes of a kind of intermediate (`what` names its key in errors).
fn generation(
    src: &Src,
    r: &RawRotating,
    section: &std::ops::Range<usize>,
    what: &str,
) -> Result<IntermediateSettings, Error> {
    let template = src.key_text(&r.key);
    KeyUri::parse(&template.replace("{n}", "1"))
        .and_then(|key| key.check_recordable(what))
        .map_err(|e| src.wrap(&r.key.span(), e))?;
    let algorithm = match &r.algorithm {
        None => Algorithm::EcdsaP256Sha256,
        Some(a) => a.get_ref().parse().map_err(|e| src.wrap(&a.span(), e))?,
    };
    let subject = match &r.subject {
        None => "CN=keyward agent intermediate CA".to_string(),
        Some(s) => subject(src, s)?,
    };
    let ttl = r
        .ttl
        .as_ref()
        .map(|v| src.duration(v))
        .transpose()?
        .unwrap_or(DEFAULT_INTERMEDIATE_TTL);
    let rotate_before = r
        .rotate_before
        .as_ref()
        .map(|v| src.duration(v))
        .transpose()?
        .unwrap_or(ttl / 3);
    // The next generation is prepared rotate_before ahead of expiry and takes over
    // half-way through that lead; past half the ttl, it would be prepared before the
    // current one had taken over, and three generations would overlap.
    if rotate_before > ttl / 2 {
        let span = r
            .rotate_before
            .as_ref()
            .map_or(section.clone(), |v| v.span());
        return Err(src.err(
            &span,
            "rotate_before must be at most half the intermediate's ttl",
        ));
    }
    Ok(IntermediateSettings {
        key_template: template,
        algorithm,
        subject,
        ttl,
        rotate_before,
    })
}
