//! Settings from variables: addresses (one or a cluster's list), auth methods, TLS,
//! namespace and deadline, and the errors naming what is missing or wrong.

use super::*;
use std::collections::HashMap;

fn from(vars: &[(&str, &str)]) -> Result<VaultSettings, Error> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    VaultSettings::from_vars(None, |k| map.get(k).cloned())
}

#[test]
fn vault_vars_win_over_bao_vars() {
    let s = from(&[
        ("VAULT_ADDR", "http://a:8200/"),
        ("BAO_ADDR", "http://b:8200"),
        ("BAO_TOKEN", "t"),
    ])
    .unwrap();
    assert_eq!(s.address, "http://a:8200");
    assert!(matches!(s.auth, VaultAuth::Token(ref t) if t.as_str() == "t"));
    assert_eq!(s.request_deadline, DEFAULT_DEADLINE);
}

#[test]
fn approle_tls_namespace_and_timeout() {
    let s = from(&[
        ("BAO_ADDR", "https://vault.internal:8200"),
        ("VAULT_ROLE_ID_FILE", "/r"),
        ("VAULT_SECRET_ID_FILE", "/s"),
        ("VAULT_CACERT", "/ca.pem"),
        ("VAULT_CLIENT_CERT", "/c.pem"),
        ("VAULT_CLIENT_KEY", "/k.pem"),
        ("VAULT_NAMESPACE", "team"),
        ("VAULT_CLIENT_TIMEOUT", "1500ms"),
    ])
    .unwrap();
    let VaultAuth::AppRole(a) = &s.auth else {
        panic!("expected AppRole, got {:?}", s.auth)
    };
    assert_eq!(a.mount, "approle");
    assert_eq!(a.role_id_file, PathBuf::from("/r"));
    assert_eq!(s.ca_file, Some(PathBuf::from("/ca.pem")));
    assert_eq!(s.client_cert.unwrap().key_file, PathBuf::from("/k.pem"));
    assert_eq!(s.namespace.as_deref(), Some("team"));
    assert_eq!(s.request_deadline, Duration::from_millis(1500));
}

#[test]
fn missing_pieces_are_named() {
    let e = from(&[("VAULT_TOKEN", "t")]).unwrap_err().to_string();
    assert!(e.contains("VAULT_ADDR"), "{e}");
    let e = from(&[("VAULT_ADDR", "http://a")]).unwrap_err().to_string();
    assert!(e.contains("VAULT_TOKEN"), "{e}");
    let e = from(&[("VAULT_ADDR", "http://a"), ("VAULT_ROLE_ID_FILE", "/r")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("VAULT_SECRET_ID_FILE"), "{e}");
    let e = from(&[("VAULT_ADDR", "ftp://a"), ("VAULT_TOKEN", "t")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("must be http"), "{e}");
    let e = from(&[
        ("VAULT_ADDR", "http://a"),
        ("VAULT_TOKEN", "t"),
        ("VAULT_CLIENT_TIMEOUT", "5h"),
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown unit"), "{e}");
}

#[test]
fn a_comma_separated_vault_addr_lists_a_clusters_nodes() {
    let s = from(&[
        (
            "VAULT_ADDR",
            "http://n1:8200/, http://N2:8200,http://n3:8200",
        ),
        ("BAO_ADDR", "http://other:8200"),
        ("VAULT_TOKEN", "t"),
    ])
    .unwrap();
    assert_eq!(
        s.addresses(),
        ["http://n1:8200", "http://n2:8200", "http://n3:8200"]
    );
    assert_eq!(s.address, "http://n1:8200");
    let e = from(&[
        (
            "VAULT_ADDR",
            "http://n1:8200,http://n2:8200,http://n1:8200/",
        ),
        ("VAULT_TOKEN", "t"),
    ])
    .unwrap_err()
    .to_string();
    assert_eq!(e, "Vault address 'http://n1:8200' is listed twice");
}

#[test]
fn given_addresses_replace_vault_addr() {
    let vars = |k: &str| match k {
        "VAULT_ADDR" => Some("http://env:8200".to_string()),
        "VAULT_TOKEN" => Some("t".to_string()),
        _ => None,
    };
    let list = vec!["https://a:8200".to_string(), "https://b:8200/".to_string()];
    let s = VaultSettings::from_vars(Some(&list), vars).unwrap();
    assert_eq!(s.addresses(), ["https://a:8200", "https://b:8200"]);
    // Without VAULT_ADDR at all.
    let s = VaultSettings::from_vars(Some(&list), |k| {
        (k == "VAULT_TOKEN").then(|| "t".to_string())
    })
    .unwrap();
    assert_eq!(s.other_addresses, ["https://b:8200"]);
    let e = VaultSettings::from_vars(Some(&[]), vars)
        .unwrap_err()
        .to_string();
    assert!(e.contains("list is empty"), "{e}");
}

#[test]
fn set_addresses_checks_the_whole_list() {
    let mut s = VaultSettings::new("http://a", VaultAuth::Token("t".to_string().into())).unwrap();
    s.set_addresses(&["http://c:1", "http://b:1"]).unwrap();
    assert_eq!(s.addresses(), ["http://c:1", "http://b:1"]);
    let e = s.set_addresses(&["http://c:1", "http://c:1"]).unwrap_err();
    assert!(e.to_string().contains("listed twice"), "{e}");
    assert_eq!(s.addresses(), ["http://c:1", "http://b:1"], "unchanged");
}

#[test]
fn debug_never_shows_the_token() {
    let s = from(&[("VAULT_ADDR", "http://a"), ("VAULT_TOKEN", "s.supersecret")]).unwrap();
    let d = format!("{s:?}");
    assert!(!d.contains("supersecret") && d.contains("redacted"), "{d}");
}

#[test]
fn timeouts_parse() {
    assert_eq!(parse_timeout("30").unwrap(), Duration::from_secs(30));
    assert_eq!(parse_timeout("2m").unwrap(), Duration::from_secs(120));
    assert!(parse_timeout("0").is_err());
    assert!(parse_timeout("s").is_err());
}
