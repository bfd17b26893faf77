//! `[ca.upstream]` and `[vault]`: what they give, and the mistakes refused with one line.

use std::path::Path;
use std::time::Duration;

use super::*;

const AGENT: &str = r#"
[agent]
socket = "/run/agent.sock"
state_dir = "/var/lib/keyward"
trust_domain = "example.org"
"#;

const UPSTREAM: &str = r#"
[ca.upstream]
authority = "vault-pki:pki?role=agents"
key = "file:keys/intermediate-{n}.pem"
ttl = "720h"
rotate_before = "240h"
"#;

fn parse(text: &str) -> Result<Config, Error> {
    Config::parse(text, "agent.toml", Path::new("/etc/keyward"))
}

fn error(text: &str) -> String {
    let e = parse(text).unwrap_err().to_string();
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    e
}

#[test]
fn an_upstream_section_gives_its_intermediates_and_the_vault_nodes() {
    let text = format!(
        "{AGENT}{UPSTREAM}\n[vault]\naddresses = [\"http://127.0.0.1:8200\", \"http://127.0.0.1:8210/\"]\n"
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.ca.key, None);
    let u = c.ca.upstream.unwrap();
    assert_eq!(u.authority, "vault-pki:pki?role=agents");
    assert_eq!(
        u.generation.key_template,
        "file:/etc/keyward/keys/intermediate-{n}.pem"
    );
    assert_eq!(u.generation.ttl, Duration::from_secs(720 * 3600));
    assert_eq!(u.generation.rotate_before, Duration::from_secs(240 * 3600));
    assert_eq!(
        u.vault_addresses.unwrap(),
        ["http://127.0.0.1:8200", "http://127.0.0.1:8210/"]
    );
    let c = parse(&format!("{AGENT}{UPSTREAM}")).unwrap();
    assert_eq!(c.ca.signing_backend(), "file");
    assert_eq!(
        c.ca.upstream.unwrap().vault_addresses,
        None,
        "VAULT_ADDR then"
    );
}

#[test]
fn upstream_and_local_intermediates_are_exclusive() {
    let text = format!("{AGENT}{UPSTREAM}\n[ca.intermediate]\nkey = \"file:/k/i-{{n}}.pem\"\n");
    let e = error(&text);
    assert!(
        e.contains("[ca.upstream] and [ca.intermediate] are exclusive"),
        "{e}"
    );
}

#[test]
fn mistakes_around_the_upstream_are_named() {
    let cases = [
        // [ca] key has no use with [ca.upstream].
        (
            format!("{AGENT}[ca]\nkey = \"file:/k/ca.pem\"\n{UPSTREAM}"),
            "[ca] key is not used with [ca.upstream]",
        ),
        // Neither a key nor an upstream.
        (
            format!("{AGENT}[ca]\nsubject = \"CN=x\"\n"),
            "[ca] key is missing",
        ),
        // [vault] configures nothing without an upstream.
        (
            format!(
                "{AGENT}[ca]\nkey = \"file:/k/ca.pem\"\n[vault]\naddresses = [\"http://a:8200\"]\n"
            ),
            "[vault] configures the upstream authority's client",
        ),
        (
            format!(
                "{AGENT}{}",
                UPSTREAM.replace("vault-pki:pki?role=agents", "acme:pki")
            ),
            "does not start with 'vault-pki:'",
        ),
        (
            format!("{AGENT}{}", UPSTREAM.replace("?role=agents", "/../sys")),
            "'..'",
        ),
        (
            format!(
                "{AGENT}{UPSTREAM}[vault]\naddresses = [\"http://a:8200\", \"http://A:8200/\"]\n"
            ),
            "listed twice",
        ),
        (
            format!("{AGENT}{UPSTREAM}[vault]\naddresses = []\n"),
            "list is empty",
        ),
        (
            format!(
                "{AGENT}{}",
                UPSTREAM.replace("authority = \"vault-pki:pki?role=agents\"\n", "")
            ),
            "[ca.upstream] authority is missing",
        ),
        (
            format!(
                "{AGENT}[ca]\nkey = \"file:/k/ca.pem\"\n[ca.intermediate]\nkey = \"file:/k/i-{{n}}.pem\"\nauthority = \"vault-pki:pki\"\n"
            ),
            "authority and crl_refresh belong in [ca.upstream]",
        ),
        (
            format!("{AGENT}{}", UPSTREAM.replace("240h", "400h")),
            "rotate_before must be at most half",
        ),
        (
            format!(
                "{AGENT}{}",
                UPSTREAM.replace(
                    "file:keys/intermediate-{n}.pem",
                    "pkcs11:token=t;object=i-{n}?module-path=/m.so&pin-value=1"
                )
            ),
            "[ca.upstream] key",
        ),
        (
            format!(
                "{AGENT}{}",
                UPSTREAM.replace("ttl = \"720h\"\n", "ttl = \"720h\"\ncolour = \"red\"\n")
            ),
            "unknown field `colour`",
        ),
    ];
    for (text, part) in cases {
        let e = error(&text);
        assert!(e.contains(part), "{part}: {e}");
        assert!(e.starts_with("agent.toml:"), "{e}");
    }
}
