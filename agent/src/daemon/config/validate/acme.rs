//! Checks of the ACME server's keys in `[acme]`: `allowed`, `validity`, `challenges`,
//! `rate_limit` and the `[acme.testing]` overrides (the listener's `listen`/`names`
//! are checked with EST's, in `enroll`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use keyward_core::Error;
use toml::Spanned;

use super::super::raw::RawAcme;
use super::Src;
use crate::daemon::enroll::acme::{AcmeSettings, AllowedPattern, Targets};

/// The default lifetime of a certificate issued over ACME.
const DEFAULT_VALIDITY: Duration = Duration::from_secs(72 * 3600);
/// Requests per second per account unless `rate_limit` says otherwise, and the burst.
const DEFAULT_RATE: (f64, u32) = (20.0, 200);
/// The challenge types this server can validate.
const CHALLENGE_TYPES: [&str; 2] = ["http-01", "tls-alpn-01"];

/// The ACME server's settings when `[acme]` is present (it needs `allowed`).
pub(super) fn settings(
    src: &Src,
    acme: Option<&Spanned<RawAcme>>,
) -> Result<Option<AcmeSettings>, Error> {
    let Some(acme) = acme else { return Ok(None) };
    let raw = acme.get_ref();
    let Some(allowed_raw) = &raw.allowed else {
        return Err(src.err(
            &acme.span(),
            "[acme] needs allowed = [...], the names and networks clients may order (e.g. [\"*.internal\", \"10.0.0.0/8\"])",
        ));
    };
    let mut allowed = Vec::new();
    for p in allowed_raw.get_ref() {
        allowed.push(
            p.get_ref()
                .parse::<AllowedPattern>()
                .map_err(|why| src.err(&p.span(), why))?,
        );
    }
    if allowed.is_empty() {
        return Err(src.err(
            &allowed_raw.span(),
            "[acme] allowed is empty: no client could order anything",
        ));
    }
    let challenges = match &raw.challenges {
        None => CHALLENGE_TYPES.iter().map(|c| c.to_string()).collect(),
        Some(list) => {
            let mut out: Vec<String> = Vec::new();
            for c in list.get_ref() {
                if !CHALLENGE_TYPES.contains(&c.get_ref().as_str()) {
                    return Err(src.err(
                        &c.span(),
                        format!(
                            "challenge '{}' is not one of http-01, tls-alpn-01",
                            c.get_ref()
                        ),
                    ));
                }
                if !out.contains(c.get_ref()) {
                    out.push(c.get_ref().clone());
                }
            }
            if out.is_empty() {
                return Err(src.err(&list.span(), "[acme] challenges is empty"));
            }
            out
        }
    };
    let (per_second, burst) = match &raw.rate_limit {
        Some(r) => super::limits::rate_limit(src, r.get_ref(), DEFAULT_RATE)?,
        None => DEFAULT_RATE,
    };
    Ok(Some(AcmeSettings {
        allowed,
        validity: raw
            .validity
            .as_ref()
            .map(|v| src.duration(v))
            .transpose()?
            .unwrap_or(DEFAULT_VALIDITY),
        challenges,
        per_second,
        burst,
        targets: targets(src, raw)?,
    }))
}

/// `[acme.testing]`, or the standard ports and DNS.
fn targets(src: &Src, raw: &RawAcme) -> Result<Targets, Error> {
    let mut targets = Targets::default();
    let Some(testing) = &raw.testing else {
        return Ok(targets);
    };
    let t = testing.get_ref();
    let port = |p: &Spanned<i64>| {
        u16::try_from(*p.get_ref())
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                src.err(
                    &p.span(),
                    format!("port {} is outside 1 to 65535", p.get_ref()),
                )
            })
    };
    if let Some(p) = &t.http_port {
        targets.http_port = port(p)?;
    }
    if let Some(p) = &t.tls_port {
        targets.tls_port = port(p)?;
    }
    let mut resolve = HashMap::new();
    for (name, ip) in t.resolve.iter().flatten() {
        let addr: IpAddr = ip.get_ref().parse().map_err(|_| {
            src.err(
                &ip.span(),
                format!("'{}' is not an IP address", ip.get_ref()),
            )
        })?;
        resolve.insert(name.to_ascii_lowercase(), addr);
    }
    targets.resolve = resolve;
    tracing::warn!(
        "[acme.testing] is set: challenge validations go to the ports and addresses it names"
    );
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::super::Config;
    use super::DEFAULT_VALIDITY;

    const BASE: &str = "[agent]\nsocket = \"/run/a.sock\"\nstate_dir = \"/var/lib/keyward\"\n\
        trust_domain = \"example.org\"\n\n[ca]\nkey = \"file:/k/ca.pem\"\n\n";

    fn parse(acme: &str) -> Result<Config, keyward_core::Error> {
        Config::parse(
            &format!("{BASE}{acme}"),
            "agent.toml",
            Path::new("/etc/keyward"),
        )
    }

    #[test]
    fn acme_keys_parse_with_their_defaults() {
        let cfg = parse(
            "[acme]\nlisten = \"127.0.0.1:8443\"\nallowed = [\"*.internal\", \"10.0.0.0/8\"]\n",
        )
        .unwrap();
        let acme = cfg.acme.unwrap();
        assert_eq!(acme.allowed.len(), 2);
        assert_eq!(acme.validity, DEFAULT_VALIDITY);
        assert_eq!(acme.challenges, ["http-01", "tls-alpn-01"]);
        assert_eq!((acme.targets.http_port, acme.targets.tls_port), (80, 443));
        assert!(
            acme.targets.resolve.is_empty(),
            "[acme.testing] is never on by default"
        );
        let cfg = parse(
            "[acme]\nlisten = \"127.0.0.1:8443\"\nallowed = [\"a.internal\"]\nchallenges = [\"http-01\"]\n\
             [acme.testing]\nhttp_port = 5002\nresolve = { \"A.internal\" = \"127.0.0.1\" }\n",
        )
        .unwrap();
        let acme = cfg.acme.unwrap();
        assert_eq!((acme.targets.http_port, acme.challenges.len()), (5002, 1));
        assert!(acme.targets.resolve.contains_key("a.internal"));
    }

    #[test]
    fn bad_acme_keys_are_refused_with_their_position() {
        for (acme, needle) in [
            ("[acme]\nlisten = \"127.0.0.1:8443\"\n", "needs allowed"),
            (
                "[acme]\nlisten = \"127.0.0.1:8443\"\nallowed = [\"bad pattern!\"]\n",
                "agent.toml:11:",
            ),
            (
                "[acme]\nlisten = \"127.0.0.1:8443\"\nallowed = [\"*.x\"]\nchallenges = [\"dns-01\"]\n",
                "dns-01",
            ),
            (
                "[acme]\nlisten = \"127.0.0.1:8443\"\nallowed = [\"*.x\"]\n[acme.testing]\nhttp_port = 70000\n",
                "70000",
            ),
            (
                "[acme]\nlisten = \"127.0.0.1:8443\"\nallowed = [\"*.x\"]\nunknown = 1\n",
                "unknown",
            ),
        ] {
            let e = parse(acme).unwrap_err().to_string();
            assert!(e.contains(needle), "{acme}: {e}");
        }
    }
}
