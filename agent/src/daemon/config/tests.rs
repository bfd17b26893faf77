use std::path::Path;
use std::time::Duration;

use super::*;

const GOOD: &str = r#"
[agent]
socket = "run/agent.sock"
socket_mode = "0660"
state_dir = "/var/lib/keyward"
trust_domain = "example.org"
log_format = "json"

[ca]
key = "file:/var/lib/keyward/keys/ca.pem"

[metrics]
listen = "127.0.0.1:9464"

[audit]
path = "/var/lib/keyward/audit.jsonl"

[[workload]]
spiffe_id = "spiffe://example.org/api"
dns = ["api.internal"]
ttl = "1h"
selectors = { uid = 1000, path = "/usr/bin/api-server" }

[[workload]]
spiffe_id = "spiffe://example.org/db"
ip = ["10.0.0.5"]
algorithm = "ed25519"
selectors = { gid = 50, sha256 = "AA00000000000000000000000000000000000000000000000000000000000000" }
"#;

fn parse(text: &str) -> Result<Config, Error> {
    Config::parse(text, "agent.toml", Path::new("/etc/keyward"))
}

fn error(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn the_design_example_parses_with_defaults() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.agent.socket, Path::new("/etc/keyward/run/agent.sock"));
    assert_eq!(c.agent.socket_mode, 0o660);
    assert_eq!(c.agent.log_format, LogFormat::Json);
    assert_eq!(c.agent.renew_fraction, DEFAULT_RENEW_FRACTION);
    assert_eq!(c.workloads.len(), 2);
    let api = &c.workloads[0];
    assert_eq!(api.ttl, Duration::from_secs(3600));
    assert_eq!(api.algorithm, Algorithm::EcdsaP256Sha256);
    assert_eq!(api.selectors.uid, Some(1000));
    let db = &c.workloads[1];
    assert_eq!(db.ttl, DEFAULT_TTL);
    assert_eq!(db.algorithm, Algorithm::Ed25519);
    assert_eq!(db.ips, vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
    assert_eq!(
        db.selectors.sha256.as_deref(),
        Some(&*format!("aa{}", "0".repeat(62)))
    );
    assert_eq!(
        c.audit.path.as_path(),
        Path::new("/var/lib/keyward/audit.jsonl")
    );
}

#[test]
fn unknown_keys_are_refused_with_their_position() {
    let text = GOOD.replace(
        "log_format = \"json\"",
        "log_format = \"json\"\ncolour = true",
    );
    let e = error(&text);
    assert!(e.starts_with("agent.toml:8:1: "), "{e}");
    assert!(e.contains("colour"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn bad_values_name_the_line_and_column() {
    let cases = [
        (
            "ttl = \"1h\"",
            "ttl = \"1x\"",
            "agent.toml:21:7: invalid duration '1x'",
        ),
        (
            "key = \"file:/var/lib/keyward/keys/ca.pem\"",
            "key = \"nope:x\"",
            "agent.toml:10:7: invalid key URI",
        ),
        (
            "spiffe_id = \"spiffe://example.org/api\"",
            "spiffe_id = \"spiffe://other.org/api\"",
            "agent.toml:19:13: spiffe_id 'spiffe://other.org/api' is not in the trust domain",
        ),
        (
            "socket_mode = \"0660\"",
            "socket_mode = \"rw\"",
            "agent.toml:4:15: socket_mode 'rw'",
        ),
        (
            "log_format = \"json\"",
            "log_format = \"xml\"",
            "agent.toml:7:14: unknown log_format 'xml'",
        ),
        (
            "algorithm = \"ed25519\"",
            "algorithm = \"dsa\"",
            "agent.toml:27:13: unsupported: unknown algorithm 'dsa'",
        ),
        (
            "ip = [\"10.0.0.5\"]",
            "ip = [\"10.0.0.500\"]",
            "agent.toml:26:7: '10.0.0.500' is not an IP address",
        ),
        (
            "path = \"/usr/bin/api-server\"",
            "path = \"api-server\"",
            "path selector 'api-server' must be an absolute path",
        ),
        (
            "trust_domain = \"example.org\"",
            "trust_domain = \"Example.org\"",
            "agent.toml:6:16: trust domain 'Example.org'",
        ),
    ];
    for (from, to, want) in cases {
        let text = GOOD.replace(from, to);
        assert_ne!(text, GOOD, "{from}");
        let e = error(&text);
        assert!(e.contains(want), "{to}: {e}");
    }
}

#[test]
fn entries_need_selectors_and_a_path() {
    let text = GOOD.replace(
        "selectors = { uid = 1000, path = \"/usr/bin/api-server\" }",
        "selectors = {}",
    );
    assert!(error(&text).contains("at least one selector"));
    let text = GOOD.replace("spiffe://example.org/api\"", "spiffe://example.org\"");
    assert!(error(&text).contains("needs a path"));
    let text = GOOD.replace(
        "spiffe://example.org/api\"",
        "spiffe://example.org/a/../b\"",
    );
    assert!(error(&text).contains("'..'"));
}

#[test]
fn a_missing_section_is_named() {
    let text = GOOD.replace("[ca]\nkey = \"file:/var/lib/keyward/keys/ca.pem\"\n", "");
    let e = error(&text);
    assert!(e.contains("missing field `ca`"), "{e}");
}

#[test]
fn reload_reports_restart_only_changes() {
    let a = parse(GOOD).unwrap();
    let b = parse(&GOOD.replace(
        "example.org\"\nlog",
        "example.org\"\nrenew_fraction = 0.6\nlog",
    ))
    .unwrap();
    assert!(a.restart_only_changes(&b).is_empty());
    let c = parse(&GOOD.replace("run/agent.sock", "run/other.sock")).unwrap();
    assert_eq!(a.restart_only_changes(&c), vec!["[agent] socket"]);
}

#[test]
fn socket_groups_by_name_or_number() {
    let with = |g: &str| {
        parse(&GOOD.replace(
            "socket_mode = \"0660\"",
            &format!("socket_mode = \"0660\"\nsocket_group = {g}"),
        ))
    };
    assert_eq!(with("\"root\"").unwrap().agent.socket_group, Some(0));
    assert_eq!(with("5").unwrap().agent.socket_group, Some(5));
    let e = with("\"no-such-group-keyward\"").unwrap_err().to_string();
    assert!(
        e.contains("agent.toml:5:16: unknown group 'no-such-group-keyward'"),
        "{e}"
    );
}

#[test]
fn an_intermediate_lead_over_half_its_ttl_is_refused() {
    let with = |lead: &str| {
        GOOD.replace(
            "[metrics]",
            &format!("[ca.intermediate]\nkey = \"file:/k/i-{{n}}.pem\"\nttl = \"40s\"\nrotate_before = \"{lead}\"\n\n[metrics]"),
        )
    };
    parse(&with("20s")).unwrap_or_else(|e| panic!("{e}"));
    let e = error(&with("21s"));
    assert!(
        e.contains("agent.toml:15:17: rotate_before must be at most half the intermediate's ttl"),
        "{e}"
    );
}

#[test]
fn metrics_listen_must_be_loopback_and_alerts_whole_days() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(c.alerts, keyward_core::check::AlertThresholds::default());
    let open = GOOD.replace("127.0.0.1:9464", "0.0.0.0:9464");
    let e = error(&open);
    assert!(
        e.contains("agent.toml:13:10") && e.contains("not a loopback address"),
        "{e}"
    );
    assert!(error(&GOOD.replace("127.0.0.1:9464", "localhost")).contains("IP:port"));
    let alerts = format!("{GOOD}\n[alerts]\nwarning = \"60d\"\nerror = \"2w\"\n");
    let c = parse(&alerts).unwrap();
    assert_eq!((c.alerts.warning_days, c.alerts.error_days), (60, 14));
    let bad = format!("{GOOD}\n[alerts]\nwarning = \"5d\"\n");
    assert!(
        error(&bad).contains("must not be longer than the warning"),
        "{}",
        error(&bad)
    );
    let hours = format!("{GOOD}\n[alerts]\nerror = \"36h\"\n");
    assert!(error(&hours).contains("whole number of days"));
}

#[test]
fn relative_file_keys_are_relative_to_the_file() {
    let text = GOOD.replace("file:/var/lib/keyward/keys/ca.pem", "file:keys/ca.pem");
    let c = parse(&text).unwrap();
    assert_eq!(
        c.ca.key.unwrap().to_string(),
        "file:/etc/keyward/keys/ca.pem"
    );
}

#[test]
fn caller_limits_default_and_parse_and_bad_values_name_their_position() {
    use std::time::Duration;
    let base = std::path::Path::new("/etc/keyward");
    let with = |agent_extra: &str| {
        format!(
            "[agent]\nsocket = \"/run/k.sock\"\nstate_dir = \"/var/lib/k\"\ntrust_domain = \"example.org\"\n{agent_extra}\n[ca]\nkey = \"file:/k/ca.pem\"\n"
        )
    };
    let c = Config::parse(&with(""), "a.toml", base).unwrap();
    assert_eq!(c.agent.limits, super::CallerLimits::default());
    let c = Config::parse(
        &with("idle_timeout = \"3s\"\nmax_connections = 50\nrate_limit = { per_second = 2, burst = 5 }"),
        "a.toml",
        base,
    )
    .unwrap();
    assert_eq!(c.agent.limits.idle_timeout, Duration::from_secs(3));
    assert_eq!(c.agent.limits.max_connections, 50);
    assert_eq!(
        (c.agent.limits.rate_per_second, c.agent.limits.rate_burst),
        (2.0, 5)
    );
    for (bad, needle) in [
        ("max_connections = 0", "a.toml:5:19: max_connections 0"),
        ("rate_limit = { burst = -1 }", "burst -1"),
        ("rate_limit = { per_second = 0 }", "per_second 0"),
        ("idle_timeout = \"0s\"", "a.toml:5:16: invalid duration"),
        ("rate_limit = { rate = 1 }", "unknown field"),
    ] {
        let e = Config::parse(&with(bad), "a.toml", base)
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{bad}: {e}");
    }
}

#[test]
fn a_program_selector_needs_a_user_unless_any_user_is_allowed() {
    let api = "selectors = { uid = 1000, path = \"/usr/bin/api-server\" }";
    let with = |sel: &str| parse(&GOOD.replace(api, sel));
    let e = with("selectors = { path = \"/usr/bin/api-server\" }")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("agent.toml:22:13: a path or sha256 selector needs a uid or gid"),
        "{e}"
    );
    assert!(!e.contains('\n'), "one line: {e}");
    let hash = format!("sha256 = \"{}\"", "ab".repeat(32));
    let e = with(&format!("selectors = {{ {hash} }}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs a uid or gid"), "{e}");
    let e = with(&format!("selectors = {{ {hash}, allow_any_user = false }}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs a uid or gid"), "{e}");

    let gid = with("selectors = { gid = 50, path = \"/usr/bin/api-server\" }").unwrap();
    assert!(!gid.workloads[0].selectors.allow_any_user);
    let any =
        with("selectors = { path = \"/usr/bin/api-server\", allow_any_user = true }").unwrap();
    assert!(any.workloads[0].selectors.allow_any_user);

    for pointless in [
        "selectors = { uid = 1000, path = \"/usr/bin/api-server\", allow_any_user = true }",
        "selectors = { uid = 1000, allow_any_user = true }",
    ] {
        let e = with(pointless).unwrap_err().to_string();
        assert!(
            e.contains("allow_any_user = true is only for"),
            "{pointless}: {e}"
        );
    }
}

#[test]
fn max_hash_bytes_defaults_to_256_mib_and_is_bounded() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.agent.max_hash_bytes, 256 << 20);
    let with = |v: &str| {
        parse(&GOOD.replace(
            "log_format = \"json\"",
            &format!("log_format = \"json\"\nmax_hash_bytes = {v}"),
        ))
    };
    let big = with("1073741824").unwrap();
    assert_eq!(big.agent.max_hash_bytes, 1 << 30);
    assert_eq!(c.restart_only_changes(&big), vec!["[agent] max_hash_bytes"]);
    for bad in ["0", "-1", "1000", "100000000000000"] {
        let e = with(bad).unwrap_err().to_string();
        assert!(e.contains("agent.toml:8:18: max_hash_bytes"), "{bad}: {e}");
    }
}

#[test]
fn per_uid_connections_and_request_timeout_default_parse_and_are_bounded() {
    let with = |v: &str| {
        parse(&GOOD.replace(
            "log_format = \"json\"",
            &format!("log_format = \"json\"\n{v}"),
        ))
    };
    let c = parse(GOOD).unwrap();
    assert_eq!(c.agent.limits.max_connections_per_uid, 10_000 / 4);
    assert_eq!(c.agent.limits.request_timeout, Duration::from_secs(2));
    let eight = with("max_connections = 8").unwrap();
    assert_eq!(eight.agent.limits.max_connections_per_uid, 2, "a quarter");
    let three = with("max_connections = 3").unwrap();
    assert_eq!(three.agent.limits.max_connections_per_uid, 1, "at least 1");

    let set =
        with("max_connections = 8\nmax_connections_per_uid = 8\nrequest_timeout = \"5s\"").unwrap();
    assert_eq!(set.agent.limits.max_connections_per_uid, 8);
    assert_eq!(set.agent.limits.request_timeout, Duration::from_secs(5));
    assert_eq!(
        eight.restart_only_changes(&set),
        vec![
            "[agent] idle_timeout, max_connections, max_connections_per_uid, request_timeout, rate_limit"
        ]
    );
    for (bad, needle) in [
        (
            "max_connections = 8\nmax_connections_per_uid = 9",
            "agent.toml:9:27: max_connections_per_uid 9 is outside 1 to max_connections (8)",
        ),
        (
            "max_connections_per_uid = 0",
            "agent.toml:8:27: max_connections_per_uid 0",
        ),
        (
            "max_connections_per_uid = -1",
            "agent.toml:8:27: max_connections_per_uid -1",
        ),
        (
            "request_timeout = \"0s\"",
            "agent.toml:8:19: invalid duration",
        ),
        (
            "request_timeout = \"2\"",
            "agent.toml:8:19: invalid duration",
        ),
    ] {
        let e = with(bad).unwrap_err().to_string();
        assert!(e.contains(needle), "{bad}: {e}");
    }
}

#[test]
fn a_ca_key_with_pin_value_is_refused_naming_pin_source() {
    let root = GOOD.replace(
        r#"key = "file:/var/lib/keyward/keys/ca.pem""#,
        r#"key = "pkcs11:token=ca;object=root?module-path=/m.so&pin-value=1234""#,
    );
    let e = error(&root);
    assert!(
        e.contains("agent.toml:10:7: invalid key URI: [ca] key gives its PIN as pin-value"),
        "{e}"
    );
    assert!(e.contains("pin-source=file:PATH"), "{e}");
    assert!(!e.contains("1234"), "{e}");
    let with_source = root.replace("pin-value=1234", "pin-source=env:PIN");
    parse(&with_source).unwrap();

    let intermediate = format!(
        "{GOOD}\n[ca.intermediate]\nkey = \"pkcs11:token=ca;object=int-{{n}}?module-path=/m.so&pin-value=1234\"\n"
    );
    let e = error(&intermediate);
    assert!(e.contains("[ca.intermediate] key"), "{e}");
    assert!(!e.contains("1234"), "{e}");
}

#[cfg(feature = "vault")]
#[test]
fn the_upstream_crl_refresh_defaults_to_a_minute_and_a_bad_one_names_its_position() {
    let with = |extra: &str| {
        GOOD.replace(
            "key = \"file:/var/lib/keyward/keys/ca.pem\"\n",
            &format!(
                "[ca.upstream]\nauthority = \"vault-pki:pki\"\nkey = \"file:/k/i-{{n}}.pem\"\n{extra}"
            ),
        )
    };
    let refresh = |c: Config| c.ca.upstream.expect("[ca.upstream]").crl_refresh;
    assert_eq!(refresh(parse(&with("")).unwrap()), Duration::from_secs(60));
    let five = parse(&with("crl_refresh = \"5s\"\n")).unwrap();
    assert_eq!(refresh(five), Duration::from_secs(5));
    let e = error(&with("crl_refresh = \"0s\"\n"));
    assert!(
        e.contains("agent.toml:13:15: invalid duration '0s': must be greater than zero"),
        "{e}"
    );
}
