//! `[[workload]] keys`: each grant's name, key URI and ops checked, errors at
//! `file:line:column`.

use keyward_core::{Error, KeyUri};
use toml::Spanned;

use super::Src;
use crate::daemon::config::grants::{KeyGrant, KeyOp, RawGrant};

/// The grants of one entry: names unique and non-empty, URIs valid, ops known, and a
/// grant's ops all for a signing key or all for a key-encryption key.
pub(super) fn grants(src: &Src, raw: &[Spanned<RawGrant>]) -> Result<Vec<KeyGrant>, Error> {
    let mut out: Vec<KeyGrant> = Vec::with_capacity(raw.len());
    for g in raw {
        let g = g.get_ref();
        let name = g.name.get_ref();
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(src.err(
                &g.name.span(),
                format!("'{name}' is not a grant name (letters, digits, '-', '_', '.')"),
            ));
        }
        if out.iter().any(|o| &o.name == name) {
            return Err(src.err(
                &g.name.span(),
                format!("grant '{name}' is listed twice in this entry"),
            ));
        }
        let key = KeyUri::parse(&src.key_text(&g.key)).map_err(|e| src.wrap(&g.key.span(), e))?;
        let mut ops = Vec::new();
        for op in g.ops.get_ref() {
            let parsed = KeyOp::parse(op.get_ref()).ok_or_else(|| {
                let known: Vec<_> = KeyOp::ALL.iter().map(|(_, n)| *n).collect();
                src.err(
                    &op.span(),
                    format!(
                        "unknown op '{}' (one of {})",
                        op.get_ref(),
                        known.join(", ")
                    ),
                )
            })?;
            if !ops.contains(&parsed) {
                ops.push(parsed);
            }
        }
        if ops.is_empty() {
            return Err(src.err(&g.ops.span(), format!("grant '{name}' lists no ops")));
        }
        if ops.iter().any(|o| o.signs()) && ops.iter().any(|o| !o.signs()) {
            return Err(src.err(
                &g.ops.span(),
                format!(
                    "grant '{name}' mixes signing ops with encryption ops; one key is either a signing key or a key-encryption key"
                ),
            ));
        }
        out.push(KeyGrant {
            name: name.clone(),
            key,
            ops,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::daemon::config::Config;
    use crate::daemon::config::grants::KeyOp;

    /// A configuration whose one entry has `keys = KEYS` on line 10.
    fn parse(keys: &str) -> Result<Config, keyward_core::Error> {
        let text = format!(
            "[agent]\nsocket = \"/run/a.sock\"\nstate_dir = \"/var/lib/keyward\"\ntrust_domain = \"example.org\"\n\n\
             [ca]\nkey = \"file:/var/lib/keyward/ca.pem\"\n\n\
             [[workload]]\nkeys = {keys}\nspiffe_id = \"spiffe://example.org/app\"\nselectors = {{ uid = 1000 }}\n"
        );
        Config::parse(&text, "agent.toml", Path::new("/etc/keyward"))
    }

    fn error(keys: &str) -> String {
        parse(keys).unwrap_err().to_string()
    }

    #[test]
    fn grants_are_read_with_their_ops_and_paths_made_absolute() {
        let c = parse(
            r#"[{ name = "sig", key = "file:keys/sig.pem", ops = ["sign", "public-key", "sign"] },
                { name = "kek", key = "transit:db-kek", ops = ["generate-data-key", "decrypt"] }]"#,
        )
        .unwrap();
        let keys = &c.workloads[0].keys;
        assert_eq!(keys[0].name, "sig");
        assert_eq!(keys[0].key.to_string(), "file:/etc/keyward/keys/sig.pem");
        assert_eq!(keys[0].ops, vec![KeyOp::Sign, KeyOp::PublicKey]);
        assert!(keys[1].allows(KeyOp::Decrypt) && !keys[1].allows(KeyOp::Encrypt));
    }

    #[test]
    fn bad_grants_are_refused_at_their_line() {
        for (keys, want) in [
            (
                r#"[{ name = "k", key = "transit:x", ops = ["signn"] }]"#,
                "agent.toml:10:",
            ),
            (
                r#"[{ name = "k", key = "transit:x", ops = ["signn"] }]"#,
                "unknown op 'signn'",
            ),
            (
                r#"[{ name = "k", key = "transit:x", ops = [] }]"#,
                "lists no ops",
            ),
            (
                r#"[{ name = "k", key = "transit:x", ops = ["sign", "decrypt"] }]"#,
                "mixes signing ops with encryption ops",
            ),
            (
                r#"[{ name = "k", key = "transit:x", ops = ["sign"] }, { name = "k", key = "transit:y", ops = ["sign"] }]"#,
                "grant 'k' is listed twice",
            ),
            (
                r#"[{ name = "a b", key = "transit:x", ops = ["sign"] }]"#,
                "not a grant name",
            ),
            (
                r#"[{ name = "k", key = "nope:x", ops = ["sign"] }]"#,
                "agent.toml:10:",
            ),
            (r#"[{ name = "k", ops = ["sign"] }]"#, "missing field `key`"),
        ] {
            let e = error(keys);
            assert!(e.contains(want), "{keys}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }
}
