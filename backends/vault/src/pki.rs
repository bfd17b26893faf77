//! Vault PKI as the upstream authority: one root held by Vault's PKI engine signs each
//! keyward agent's intermediate (`MOUNT/root/sign-intermediate`), so the root never
//! sits on a node.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use keyward_core::Error;
use reqwest::Method;
use serde::Deserialize;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::client::{TokenUse, VaultClient};
use crate::settings::VaultSettings;

/// An upstream authority string `vault-pki:MOUNT[?role=ROLE]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultPkiUpstream {
    /// The PKI engine's mount path, e.g. `pki` or `pki_root`.
    pub mount: String,
    /// A PKI role name. Vault's `root/sign-intermediate` takes no role; keyward keeps
    /// it for the caller (and shows it) but sends it nowhere.
    pub role: Option<String>,
}

impl VaultPkiUpstream {
    /// The scheme of the upstream string.
    pub const SCHEME: &'static str = "vault-pki";

    /// Parses `vault-pki:MOUNT[?role=ROLE]`; the error names the part that is wrong.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        let rest = s
            .strip_prefix("vault-pki:")
            .ok_or_else(|| bad(format!("'{s}' does not start with 'vault-pki:'")))?;
        let (mount, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mount = mount.trim_matches('/');
        check_path(mount, "mount")?;
        let mut role = None;
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            match kv.split_once('=') {
                Some(("role", v)) if role.is_none() => {
                    check_path(v, "role")?;
                    if v.contains('/') {
                        return Err(bad(format!("role '{v}' contains '/'")));
                    }
                    role = Some(v.to_string());
                }
                Some(("role", _)) => return Err(bad("'role' repeated".into())),
                _ => {
                    return Err(bad(format!(
                        "unknown attribute '{kv}' (expected role=ROLE)"
                    )));
                }
            }
        }
        Ok(VaultPkiUpstream {
            mount: mount.to_string(),
            role,
        })
    }
}

fn bad(why: String) -> Error {
    Error::InvalidInput(format!(
        "upstream authority: {why} (expected vault-pki:MOUNT[?role=ROLE])"
    ))
}

fn check_path(p: &str, what: &str) -> Result<(), Error> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "_-./".contains(c);
    if p.is_empty() {
        return Err(bad(format!("{what} is empty")));
    }
    if let Some(c) = p.chars().find(|c| !ok_char(*c)) {
        return Err(bad(format!("{what} '{p}' contains '{c}'")));
    }
    if p.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(bad(format!(
            "{what} '{p}' has an empty, '.' or '..' segment"
        )));
    }
    Ok(())
}

impl fmt::Display for VaultPkiUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vault-pki:{}", self.mount)?;
        if let Some(r) = &self.role {
            write!(f, "?role={r}")?;
        }
        Ok(())
    }
}

impl FromStr for VaultPkiUpstream {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// An intermediate certificate signed by Vault PKI, with the chain above it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamChain {
    /// The signed intermediate certificate, PEM.
    pub certificate_pem: String,
    /// The certificates above it, nearest first (Vault's issuing CA ... its root), DER;
    /// each one checked to sign the one below it.
    pub chain_der: Vec<Vec<u8>>,
    /// The self-signed root at the top of `chain_der`, DER: the trust bundle to serve.
    pub root_der: Vec<u8>,
}

#[derive(Deserialize)]
struct Signed {
    certificate: String,
    #[serde(default)]
    issuing_ca: Option<String>,
    #[serde(default)]
    ca_chain: Option<Vec<String>>,
}

/// Has the PKI engine at `mount` sign `csr_pem` as an intermediate CA valid for `ttl`.
///
/// With a non-empty `common_name`, the certificate's subject is that name alone;
/// with an empty one, Vault takes the subject, SANs and extensions from the CSR
/// (`use_csr_values`). The answer is checked: the certificate holds the CSR's public
/// key, is a CA, and chains to a self-signed root through Vault's chain.
pub async fn sign_intermediate_upstream(
    settings: &VaultSettings,
    mount: &str,
    csr_pem: &str,
    common_name: &str,
    ttl: Duration,
) -> Result<UpstreamChain, Error> {
    let client = VaultClient::new(settings)?;
    sign_intermediate_with(&client, mount, csr_pem, common_name, ttl).await
}

/// [`sign_intermediate_upstream`] through an existing client (and its token).
pub async fn sign_intermediate_with(
    client: &VaultClient,
    mount: &str,
    csr_pem: &str,
    common_name: &str,
    ttl: Duration,
) -> Result<UpstreamChain, Error> {
    let mount = mount.trim_matches('/');
    check_path(mount, "mount")?;
    let csr = pem::parse(csr_pem)
        .ok()
        .filter(|p| p.tag() == "CERTIFICATE REQUEST" || p.tag() == "NEW CERTIFICATE REQUEST")
        .ok_or_else(|| Error::InvalidInput("the CSR is not a PEM 'CERTIFICATE REQUEST'".into()))?;
    let (_, req) = X509CertificationRequest::from_der(csr.contents())
        .map_err(|e| Error::InvalidInput(format!("the CSR does not parse: {e}")))?;
    let csr_key = req.certification_request_info.subject_pki.raw.to_vec();

    let mut body = serde_json::json!({
        "csr": csr_pem,
        "format": "pem",
        "ttl": format!("{}s", ttl.as_secs().max(1)),
        "exclude_cn_from_sans": true,
    });
    if common_name.trim().is_empty() {
        body["use_csr_values"] = true.into();
    } else {
        body["common_name"] = common_name.trim().into();
    }
    let body = serde_json::to_vec(&body).map_err(|e| Error::backend_with("encode", e))?;
    let path = format!("{mount}/root/sign-intermediate");
    // On a cluster, a request whose answer was lost (the node died after signing) is
    // sent again to another node, which signs a second certificate. That is harmless:
    // both are for this CSR's key; the unused one expires (or the operator revokes it).
    let env = client
        .call::<Signed>(Method::POST, &path, Some(&body), TokenUse::Current)
        .await
        .map_err(|e| match e {
            Error::NotFound(_) => Error::backend(format!(
                "Vault/OpenBao at {} has no PKI root to sign with at '{mount}/' ({path} not found)",
                client.address()
            )),
            e => e,
        })?;
    let signed = env
        .data
        .ok_or_else(|| Error::backend(format!("{path} returned no certificate")))?;
    check_chain(signed, &csr_key, &path)
}

/// The CRL of the PKI engine at `mount` (`MOUNT/crl`, DER), through an existing client.
/// Not checked here: the caller verifies it under the upstream CA it trusts. On a
/// cluster any node answers it, a standby included (its copy may lag the leader's).
pub async fn fetch_crl_with(client: &VaultClient, mount: &str) -> Result<Vec<u8>, Error> {
    let mount = mount.trim_matches('/');
    check_path(mount, "mount")?;
    let path = format!("{mount}/crl");
    let der = client
        .send(&Method::GET, &path, None, TokenUse::Current)
        .await
        .map_err(|e| match e {
            Error::NotFound(_) => Error::backend(format!(
                "Vault/OpenBao at {} has no PKI CRL at '{path}' (is '{mount}/' a PKI mount?)",
                client.address()
            )),
            e => e,
        })?;
    if der.is_empty() {
        return Err(Error::backend(format!(
            "Vault/OpenBao at {} answered {path} with an empty body",
            client.address()
        )));
    }
    Ok(der.to_vec())
}

/// The self-signed roots the PKI engine at `mount` publishes (every issuer of the
/// mount that is a root: the current one and any next one an operator added), DER.
/// Read from `MOUNT/issuers` and `MOUNT/issuer/ID/json`; an unknown mount fails with
/// one line naming it.
pub async fn published_roots(client: &VaultClient, mount: &str) -> Result<Vec<Vec<u8>>, Error> {
    #[derive(Deserialize)]
    struct Issuers {
        #[serde(default)]
        keys: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Issuer {
        certificate: String,
    }
    let mount = mount.trim_matches('/');
    check_path(mount, "mount")?;
    let no_pki = |e: Error| match e {
        Error::NotFound(_) => Error::backend(format!(
            "Vault/OpenBao at {} has no PKI engine with a CA at '{mount}/'",
            client.address()
        )),
        e => e,
    };
    let path = format!("{mount}/issuers?list=true");
    let ids = client
        .call::<Issuers>(Method::GET, &path, None, TokenUse::Current)
        .await
        .map_err(no_pki)?
        .data
        .map(|d| d.keys)
        .unwrap_or_default();
    let mut roots = Vec::new();
    for id in ids {
        check_path(&id, "issuer id")?;
        let path = format!("{mount}/issuer/{id}/json");
        let Some(issuer) = client
            .call::<Issuer>(Method::GET, &path, None, TokenUse::Current)
            .await?
            .data
        else {
            continue;
        };
        let der = der_of(&issuer.certificate, "issuer certificate")?;
        let cert = parse_cert(&der, &path)?;
        if cert.subject().as_raw() == cert.issuer().as_raw() && cert.verify_signature(None).is_ok()
        {
            roots.push(der);
        }
    }
    if roots.is_empty() {
        return Err(Error::backend(format!(
            "Vault/OpenBao at {} has no root CA in the PKI engine at '{mount}/'",
            client.address()
        )));
    }
    Ok(roots)
}

/// Checks that the PKI engine at `mount` has the role `role`, so a mistyped role is
/// caught before anything is made (`root/sign-intermediate` itself takes no role).
pub async fn check_role(client: &VaultClient, mount: &str, role: &str) -> Result<(), Error> {
    let mount = mount.trim_matches('/');
    check_path(mount, "mount")?;
    check_path(role, "role")?;
    let path = format!("{mount}/roles/{role}");
    client
        .call::<serde_json::Value>(Method::GET, &path, None, TokenUse::Current)
        .await
        .map(|_| ())
        .map_err(|e| match e {
            Error::NotFound(_) => Error::InvalidInput(format!(
                "Vault/OpenBao at {} has no PKI role '{role}' at '{mount}/'",
                client.address()
            )),
            e => e,
        })
}

fn der_of(pem_text: &str, what: &str) -> Result<Vec<u8>, Error> {
    pem::parse(pem_text)
        .ok()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .ok_or_else(|| {
            Error::backend(format!(
                "Vault/OpenBao returned a {what} that is not a PEM certificate"
            ))
        })
}

fn parse_cert<'a>(d: &'a [u8], path: &str) -> Result<X509Certificate<'a>, Error> {
    X509Certificate::from_der(d).map(|(_, c)| c).map_err(|e| {
        Error::backend(format!(
            "{path} returned a certificate that does not parse: {e}"
        ))
    })
}

/// Orders and checks Vault's answer into an [`UpstreamChain`].
fn check_chain(signed: Signed, csr_key: &[u8], path: &str) -> Result<UpstreamChain, Error> {
    let cert_der = der_of(&signed.certificate, "certificate")?;
    let mut chain_der = Vec::new();
    for p in signed.ca_chain.iter().flatten() {
        let d = der_of(p, "ca_chain entry")?;
        if d != cert_der && !chain_der.contains(&d) {
            chain_der.push(d);
        }
    }
    if chain_der.is_empty()
        && let Some(p) = &signed.issuing_ca
    {
        chain_der.push(der_of(p, "issuing_ca")?);
    }
    let cert = parse_cert(&cert_der, path)?;
    if cert.public_key().raw != csr_key {
        return Err(Error::Verification(format!(
            "{path} returned a certificate for another public key than the CSR's"
        )));
    }
    if !cert.is_ca() {
        return Err(Error::Verification(format!(
            "{path} returned a certificate that is not a CA"
        )));
    }
    let parsed: Vec<X509Certificate<'_>> = chain_der
        .iter()
        .map(|d| parse_cert(d, path))
        .collect::<Result<_, _>>()?;
    let mut below = &cert;
    for issuer in &parsed {
        below
            .verify_signature(Some(issuer.public_key()))
            .map_err(|_| {
                Error::Verification(format!(
                    "'{}' in Vault's chain did not sign '{}'",
                    issuer.subject(),
                    below.subject()
                ))
            })?;
        below = issuer;
    }
    let top = parsed
        .last()
        .ok_or_else(|| Error::backend(format!("{path} returned no issuing CA")))?;
    if top.subject().as_raw() != top.issuer().as_raw() || top.verify_signature(None).is_err() {
        return Err(Error::Verification(format!(
            "Vault's chain ends at '{}', which is not a self-signed root: import the full \
             chain into the PKI mount",
            top.subject()
        )));
    }
    let root_der = chain_der.last().cloned().unwrap_or_default();
    Ok(UpstreamChain {
        certificate_pem: pem::encode(&pem::Pem::new("CERTIFICATE", cert_der.clone())),
        chain_der,
        root_der,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_strings_parse_and_print() {
        let u = VaultPkiUpstream::parse("vault-pki:pki").unwrap();
        assert_eq!((u.mount.as_str(), u.role.as_deref()), ("pki", None));
        let u: VaultPkiUpstream = "vault-pki:/team/pki_root/?role=agents".parse().unwrap();
        assert_eq!(u.mount, "team/pki_root");
        assert_eq!(u.role.as_deref(), Some("agents"));
        assert_eq!(u.to_string(), "vault-pki:team/pki_root?role=agents");
    }

    #[test]
    fn bad_upstream_strings_name_the_part() {
        for (s, part) in [
            ("pki", "vault-pki:"),
            ("vault-pki:", "mount is empty"),
            ("vault-pki:a/../sys", "'..'"),
            ("vault-pki:pki?rol=x", "unknown attribute"),
            ("vault-pki:pki?role=a&role=b", "repeated"),
            ("vault-pki:pki?role=a/b", "contains '/'"),
            ("vault-pki:p k", "contains ' '"),
        ] {
            let e = VaultPkiUpstream::parse(s).unwrap_err().to_string();
            assert!(e.contains(part), "{s}: {e}");
        }
    }
}
