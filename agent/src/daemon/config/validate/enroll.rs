//! Checks of `[acme] listen`/`names` (the enrollment listener) and `[est]`.

use std::net::{IpAddr, SocketAddr};

use keyward_core::Error;
use toml::Spanned;

use super::super::enroll::{DEFAULT_EST_VALIDITY, EstSettings, ListenerSettings};
use super::super::raw::{RawAcme, RawEst};
use super::Src;

/// The enrollment listener, when `[acme] listen` is set.
pub(super) fn listener(
    src: &Src,
    acme: Option<&Spanned<RawAcme>>,
) -> Result<Option<ListenerSettings>, Error> {
    let Some(acme) = acme else { return Ok(None) };
    let Some(listen) = &acme.get_ref().listen else {
        return Err(src.err(
            &acme.span(),
            "[acme] needs listen = \"IP:port\", the HTTPS address ACME and EST are served on",
        ));
    };
    let addr: SocketAddr = listen.get_ref().parse().map_err(|_| {
        src.err(
            &listen.span(),
            format!(
                "'{}' is not an IP:port address such as 127.0.0.1:8443",
                listen.get_ref()
            ),
        )
    })?;
    let names = match &acme.get_ref().names {
        Some(names) => {
            let mut out = Vec::with_capacity(names.len());
            for n in names {
                check_name(n.get_ref()).map_err(|why| src.err(&n.span(), why))?;
                out.push(n.get_ref().clone());
            }
            if out.is_empty() {
                return Err(src.err(&acme.span(), "[acme] names is empty"));
            }
            out
        }
        None if addr.ip().is_unspecified() => {
            return Err(src.err(
                &listen.span(),
                format!(
                    "listen address {addr} is a wildcard: set [acme] names to the names clients connect to"
                ),
            ));
        }
        None => vec![addr.ip().to_string()],
    };
    Ok(Some(ListenerSettings {
        listen: addr,
        names,
    }))
}

/// A DNS name or an IP address for the listener's certificate.
fn check_name(name: &str) -> Result<(), String> {
    if name.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("'{name}' is neither a DNS name nor an IP address"))
    }
}

/// `[est]`, which needs the listener.
pub(super) fn est(
    src: &Src,
    est: Option<&Spanned<RawEst>>,
    listener: Option<&ListenerSettings>,
) -> Result<Option<EstSettings>, Error> {
    let Some(est) = est else { return Ok(None) };
    if listener.is_none() {
        return Err(src.err(
            &est.span(),
            "[est] is served on the enrollment listener: set [acme] listen too",
        ));
    }
    let raw = est.get_ref();
    Ok(Some(EstSettings {
        validity: match &raw.validity {
            Some(v) => src.duration(v)?,
            None => DEFAULT_EST_VALIDITY,
        },
        manufacturer_ca: raw
            .manufacturer_ca
            .as_ref()
            .map(|p| src.path(p))
            .transpose()?,
    }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::daemon::config::Config;

    const BASE: &str = "[agent]\nsocket = \"/run/k.sock\"\nstate_dir = \"/var/lib/keyward\"\ntrust_domain = \"example.org\"\n[ca]\nkey = \"file:/k/ca.pem\"\n";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(
            &format!("{BASE}{extra}"),
            "agent.toml",
            Path::new("/etc/keyward"),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_listener_names_default_to_its_ip_and_est_takes_its_keys() {
        let c = parse("[acme]\nlisten = \"127.0.0.1:8443\"\nallowed = [\"*.internal\"]\n[est]\nvalidity = \"30d\"\nmanufacturer_ca = \"mfr.pem\"\n").unwrap();
        let l = c.enroll_listener.unwrap();
        assert_eq!(l.names, ["127.0.0.1"]);
        let est = c.est.unwrap();
        assert_eq!(est.validity.as_secs(), 30 * 86_400);
        assert_eq!(
            est.manufacturer_ca.unwrap(),
            Path::new("/etc/keyward/mfr.pem")
        );
        assert!(parse("").unwrap().enroll_listener.is_none());
    }

    #[test]
    fn bad_listener_and_est_settings_are_refused_with_their_position() {
        let wildcard =
            parse("[acme]\nlisten = \"0.0.0.0:8443\"\nallowed = [\"*.internal\"]\n").unwrap_err();
        assert!(
            wildcard.contains("agent.toml:8:") && wildcard.contains("names"),
            "{wildcard}"
        );
        let name = parse("[acme]\nlisten = \"127.0.0.1:8443\"\nnames = [\"bad name\"]\nallowed = [\"*.internal\"]\n").unwrap_err();
        assert!(name.contains("'bad name'"), "{name}");
        let addr =
            parse("[acme]\nlisten = \"localhost\"\nallowed = [\"*.internal\"]\n").unwrap_err();
        assert!(addr.contains("IP:port"), "{addr}");
        let alone = parse("[est]\n").unwrap_err();
        assert!(alone.contains("[acme] listen"), "{alone}");
    }
}
