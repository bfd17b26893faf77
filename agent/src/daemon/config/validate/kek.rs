//! `[[kek]]`: each scheduled key-encryption key's URI and period checked, errors at
//! `file:line:column` naming the field.

use keyward_core::{Error, KeyUri};
use toml::Spanned;

use super::Src;
use crate::daemon::config::kek::{KekSchedule, RawKek};
use crate::duration::parse_duration;

/// The scheduled keys: URIs valid, unpinned and listed once; periods positive
/// durations (the duration parser refuses zero and more than 100 years).
pub(super) fn schedules(src: &Src, raw: &[Spanned<RawKek>]) -> Result<Vec<KekSchedule>, Error> {
    let mut out: Vec<KekSchedule> = Vec::with_capacity(raw.len());
    for k in raw {
        let k = k.get_ref();
        let key = KeyUri::parse(&src.key_text(&k.key))
            .map_err(|e| src.err(&k.key.span(), format!("key: {e}")))?;
        if let KeyUri::Transit(t) = &key
            && t.version.is_some()
        {
            return Err(src.err(
                &k.key.span(),
                "key: a rotated key-encryption key is used at all its versions; drop 'version='",
            ));
        }
        if out.iter().any(|o| o.key == key) {
            return Err(src.err(
                &k.key.span(),
                format!("key: {key} has another [[kek]] already"),
            ));
        }
        let rotate_every = parse_duration(k.rotate_every.get_ref())
            .map_err(|e| src.err(&k.rotate_every.span(), format!("rotate_every: {e}")))?;
        out.push(KekSchedule { key, rotate_every });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::daemon::config::Config;

    const BASE: &str = "[agent]\nsocket = \"/run/a.sock\"\nstate_dir = \"/var/lib/k\"\ntrust_domain = \"example.org\"\n[ca]\nkey = \"file:/k/ca.pem\"\n";

    fn parse(keks: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}{keks}"), "agent.toml", Path::new("/etc/kw"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn scheduled_keys_are_parsed_in_file_order_with_paths_resolved() {
        let c = parse(
            "[[kek]]\nkey = \"transit:db-kek\"\nrotate_every = \"30d\"\n\
             [[kek]]\nkey = \"file:keks/app\"\nrotate_every = \"2s\"\n",
        )
        .unwrap();
        let got: Vec<(String, Duration)> = c
            .keks
            .iter()
            .map(|k| (k.key.to_string(), k.rotate_every))
            .collect();
        assert_eq!(
            got,
            [
                ("transit:db-kek".into(), Duration::from_secs(30 * 86_400)),
                ("file:/etc/kw/keks/app".into(), Duration::from_secs(2)),
            ]
        );
        assert!(parse("").unwrap().keks.is_empty());
    }

    #[test]
    fn bad_values_name_the_field_and_its_position() {
        for (keks, needle) in [
            (
                "[[kek]]\nkey = \"transit:k\"\nrotate_every = \"0s\"\n",
                "agent.toml:9:16: rotate_every: invalid duration '0s'",
            ),
            (
                "[[kek]]\nkey = \"vault:k\"\nrotate_every = \"1d\"\n",
                "agent.toml:8:7: key: invalid key URI",
            ),
            (
                "[[kek]]\nkey = \"transit:k\"\nrotate_every = \"1d\"\nextra = 1\n",
                "unknown field `extra`",
            ),
        ] {
            let e = parse(keks).unwrap_err();
            assert!(e.contains(needle), "{keks}: {e}");
        }
    }

    #[test]
    fn a_changed_schedule_needs_a_restart() {
        let a = parse("[[kek]]\nkey = \"transit:k\"\nrotate_every = \"1d\"\n").unwrap();
        let b = parse("[[kek]]\nkey = \"transit:k\"\nrotate_every = \"2d\"\n").unwrap();
        assert_eq!(a.restart_only_changes(&b), ["[[kek]]"]);
        assert!(a.restart_only_changes(&a.clone()).is_empty());
    }
}
