//! Bad input, table-driven: every CLI command and every agent configuration field given
//! malformed, empty, oversized and wrongly typed values. Each row must exit non-zero
//! with exactly one `error:` line naming the cause, never panic, and leave the state
//! directory (and everything beside it) byte-for-byte unchanged.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use tempfile::TempDir;

/// A 100 KB string.
fn big() -> String {
    "a".repeat(100_000)
}

/// Runs `keyward ARGS` under a time limit (a row that wrongly succeeds, e.g. a valid
/// agent config, must not hang the test) and checks the row; `Err` says what was wrong.
/// `needle` may list alternatives separated by `|`.
fn check_row(dir: &Path, state: &Path, args: &[String], needle: &str) -> Result<(), String> {
    let before = snapshot(dir);
    let out = Command::new("timeout")
        .args(["-s", "KILL", "20"])
        .arg(keyward_bin())
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("KEYWARD_LOG")
        .output()
        .expect("run keyward");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown: String = args
        .iter()
        .map(|a| {
            if a.len() > 80 {
                format!("{}...", &a[..40])
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let short = |s: &str| s.chars().take(300).collect::<String>();
    if out.status.success() {
        return Err(format!("{shown}: succeeded"));
    }
    if stderr.contains("panicked") {
        return Err(format!("{shown}: panicked: {}", short(&stderr)));
    }
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    if errors.len() != 1 {
        return Err(format!(
            "{shown}: {} error lines: {}",
            errors.len(),
            short(&stderr)
        ));
    }
    if !needle.split('|').any(|n| errors[0].contains(n)) {
        return Err(format!(
            "{shown}: error does not name '{needle}': {}",
            short(errors[0])
        ));
    }
    if errors[0].len() > 2_000 {
        return Err(format!(
            "{shown}: error line is {} bytes long",
            errors[0].len()
        ));
    }
    if snapshot(dir) != before {
        return Err(format!("{shown}: changed files"));
    }
    Ok(())
}

fn report(failures: Vec<String>, rows: usize) {
    assert!(
        failures.is_empty(),
        "{} of {rows} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_command_refuses_bad_arguments() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let key = software_key(dir);
    let state = root_ca(dir, &key, "ecdsa-p256");
    let out = dir.join("out").display().to_string();
    let d = dir.display().to_string();
    keyward_ok(
        &state,
        &[
            "issue",
            "--name",
            "api",
            "--dns",
            "api.internal",
            "--out",
            &out,
        ],
    );
    let cert = format!("{out}/cert.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let garbage = garbage.display().to_string();
    let empty = dir.join("empty");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.display().to_string();
    let big = big();
    let new_key = format!("file:{d}/new.pem");
    let new_out = format!("{d}/new-out");
    let archive = format!("{d}/a.kwb");
    let no_sock = format!("{d}/no.sock");

    #[rustfmt::skip]
    let rows: Vec<(Vec<&str>, &str)> = vec![
        // key generate / show
        (vec!["key", "generate", "--key", "", "--algorithm", "ecdsa-p256"], "URI"),
        (vec!["key", "generate", "--key", &big, "--algorithm", "ecdsa-p256"], "URI"),
        (vec!["key", "generate", "--key", "file:", "--algorithm", "ecdsa-p256"], "file"),
        (vec!["key", "generate", "--key", &new_key, "--algorithm", ""], "algorithm"),
        (vec!["key", "generate", "--key", &new_key, "--algorithm", &big], "algorithm"),
        (vec!["key", "generate", "--key", &new_key], "required"),
        (vec!["key", "show", "--key", ""], "URI"),
        (vec!["key", "show", "--key", &big], "URI"),
        (vec!["key", "show", "--key", "pkcs11:token=x?pin-value=1&pin-source=file:/x"], "pin"),
        // ca init / intermediate
        (vec!["ca", "init", "--key", &key], "already exists"),
        (vec!["ca", "intermediate", "--key", ""], "URI"),
        (vec!["ca", "intermediate", "--key", &new_key, "--subject", ""], "subject"),
        (vec!["ca", "intermediate", "--key", &new_key, "--subject", &big], "subject"),
        (vec!["ca", "intermediate", "--key", &new_key, "--validity", ""], "duration"),
        (vec!["ca", "intermediate", "--key", &new_key, "--validity", "99999999999999999999d"], "duration"),
        (vec!["ca", "intermediate", "--key", &new_key, "--upstream", "ftp:x"], "upstream"),
        // issue
        (vec!["issue", "--name", "", "--dns", "a.internal", "--out", &new_out], "name"),
        (vec!["issue", "--name", &big, "--dns", "a.internal", "--out", &new_out], "CN"),
        (vec!["issue", "--name", "a", "--dns", "", "--out", &new_out], "DNS"),
        (vec!["issue", "--name", "a", "--dns", &big, "--out", &new_out], "DNS"),
        (vec!["issue", "--name", "a", "--ip", "300.1.1.1", "--out", &new_out], "--ip"),
        (vec!["issue", "--name", "a", "--uri", "not a uri", "--out", &new_out], "URI"),
        (vec!["issue", "--name", "a", "--dns", "a.internal", "--validity=-5d", "--out", &new_out], "duration"),
        (vec!["issue", "--name", "a", "--dns", "a.internal", "--validity", "99999999999999999999d", "--out", &new_out], "duration"),
        (vec!["issue", "--name", "a", "--dns", "a.internal", "--validity", &big, "--out", &new_out], "duration"),
        (vec!["issue", "--name", "a", "--dns", "a.internal", "--out", ""], "out"),
        (vec!["issue", "--name", "a", "--dns", "a.internal", "--out", &garbage], "not a directory"),
        // sign-csr
        (vec!["sign-csr", "--csr", &empty, "--out", &new_out], "CSR"),
        (vec!["sign-csr", "--csr", "", "--out", &new_out], "csr"),
        (vec!["sign-csr", "--csr", &garbage, "--out", &new_out, "--validity", "1x"], "duration"),
        // verify / status
        (vec!["verify", "--cert", &garbage], "CERTIFICATE"),
        (vec!["verify", "--cert", &empty], "CERTIFICATE"),
        (vec!["verify", "--cert", ""], "cert"),
        (vec!["verify", "--cert", &cert, "--ca", &garbage], "garbage.pem"),
        (vec!["verify", "--cert", &cert, "--crl", &garbage], "--crl"),
        (vec!["verify", "--cert", &cert, "--crl", &empty], "--crl"),
        (vec!["verify", "--cert", &cert, "--crl", "/nonexistent.crl"], "/nonexistent.crl"),
        (vec!["status", "--warning", "x"], "duration"),
        (vec!["status", "--warning", &big], "duration"),
        (vec!["status", "--error", "99999999999999999999d"], "duration"),
        (vec!["status", "--warning", "7d", "--error", "30d"], "warning"),
        // hsm
        (vec!["hsm", "slots", "--module", "/nonexistent/lib.so"], "/nonexistent/lib.so"),
        (vec!["hsm", "slots", "--module", ""], "module"),
        (vec!["hsm", "slots", "--module", &garbage], "garbage.pem"),
        (vec!["hsm", "keys", "--key", "file:/x.pem"], "pkcs11"),
        (vec!["hsm", "keys", "--key", ""], "URI"),
        (vec!["hsm", "keys", "--key", &big], "URI"),
        // revoke / crl
        (vec!["revoke", "--serial", "zz"], "serial"),
        (vec!["revoke", "--serial", ""], "serial"),
        (vec!["revoke", "--serial", &big], "serial"),
        (vec!["revoke", "--serial", "01", "--reason", "bored"], "reason"),
        (vec!["revoke", "--serial", "01", "--next-update", "0d"], "duration"),
        (vec!["crl", "--next-update", "soon"], "duration"),
        (vec!["crl", "--next-update", "99999999999999999999d"], "duration"),
        // audit verify
        (vec!["audit", "verify"], "required"),
        (vec!["audit", "verify", "/nonexistent.jsonl"], "/nonexistent.jsonl"),
        (vec!["audit", "verify", &garbage], "line 1"),
        // export
        (vec!["export", "--name", "nope", "--format", "k8s-secret"], "nope"),
        (vec!["export", "--name", "api", "--format", "yaml"], "format"),
        (vec!["export", "--name", "api", "--format", "k8s-secret", "--namespace", "Bad_NS"], "namespace"),
        (vec!["export", "--name", "api", "--format", "k8s-secret", "--secret-name", &big], "name"),
        (vec!["export", "--name", &big, "--format", "k8s-secret"], "name"),
        // backup / restore
        (vec!["backup", "--out", &archive, "--passphrase-file", "/nonexistent"], "/nonexistent"),
        (vec!["backup", "--out", &archive, "--passphrase-file", &empty], "passphrase"),
        (vec!["backup", "--out", &garbage, "--passphrase-file", &garbage], "garbage.pem"),
        // fetch / agent
        (vec!["fetch", "--socket", "", "--out", &new_out], "socket"),
        (vec!["fetch", "--socket", &no_sock, "--out", &new_out], "no.sock"),
        (vec!["fetch", "--socket", "tcp://1.2.3.4:5", "--out", &new_out], "socket"),
        (vec!["fetch", "--socket", &big, "--out", &new_out], "agent"),
        (vec!["agent", "--config", "/nonexistent.toml"], "/nonexistent.toml"),
        (vec!["agent", "--config", &empty], "agent"),
        (vec!["agent", "--config", &garbage], "garbage.pem"),
        (vec!["agent", "--config", ""], "config"),
    ];
    let mut failures = Vec::new();
    for (args, needle) in &rows {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if let Err(e) = check_row(dir, &state, &args, needle) {
            failures.push(e);
        }
    }
    // restore needs a new state directory.
    let fresh = dir.join("fresh-state");
    #[rustfmt::skip]
    let restore_rows: Vec<(Vec<&str>, &str)> = vec![
        (vec!["restore", &garbage, "--passphrase-file", &garbage], "archive"),
        (vec!["restore", &empty, "--passphrase-file", &garbage], "archive"),
        (vec!["restore", "/nonexistent.kwb", "--passphrase-file", &garbage], "/nonexistent.kwb"),
        (vec!["restore", &garbage, "--passphrase-file", "/nonexistent"], "/nonexistent|archive"),
        (vec!["restore", &big, "--passphrase-file", &garbage], "aaaa"),
    ];
    for (args, needle) in &restore_rows {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if let Err(e) = check_row(dir, &fresh, &args, needle) {
            failures.push(e);
        }
    }
    report(failures, rows.len() + restore_rows.len());
}

/// A valid agent configuration as (section, [(key, TOML value)]), in file order.
fn base_config(dir: &Path) -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let q = |s: String| format!("\"{s}\"");
    let d = dir.display();
    vec![
        (
            "agent",
            vec![
                ("socket", q(format!("{d}/run/agent.sock"))),
                ("state_dir", q(format!("{d}/state"))),
                ("trust_domain", q("example.org".into())),
            ],
        ),
        (
            "ca",
            vec![
                ("key", q(format!("file:{d}/keys/ca.pem"))),
                ("subject", q("CN=matrix root".into())),
            ],
        ),
        (
            "ca.intermediate",
            vec![("key", q(format!("file:{d}/keys/int-{{n}}.pem")))],
        ),
        ("metrics", vec![("listen", q("127.0.0.1:0".into()))]),
        (
            "alerts",
            vec![("warning", q("30d".into())), ("error", q("7d".into()))],
        ),
        ("audit", vec![("path", q(format!("{d}/state/audit.jsonl")))]),
        ("jwt", vec![]),
        (
            "[workload]",
            vec![
                ("spiffe_id", q("spiffe://example.org/api".into())),
                ("ttl", q("1h".into())),
                ("selectors", "{ uid = 0 }".into()),
            ],
        ),
    ]
}

/// The configuration text with `key` in `section` set to `value` (TOML), and the
/// line (from 1) that key is on.
fn config_with(dir: &Path, section: &str, key: &str, value: &str) -> (String, usize) {
    let mut text = String::new();
    let mut line = 0;
    for (name, mut fields) in base_config(dir) {
        if name == section {
            match fields.iter_mut().find(|(k, _)| *k == key) {
                Some(f) => f.1 = value.to_string(),
                None => fields.push((leak(key), value.to_string())),
            }
        }
        text.push_str(&format!("[{name}]\n"));
        for (k, v) in fields {
            if name == section && k == key {
                line = text.lines().count() + 1;
            }
            text.push_str(&format!("{k} = {v}\n"));
        }
        text.push('\n');
    }
    (text, line)
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

#[test]
fn every_agent_config_field_refuses_bad_values() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let state = dir.join("state");
    common::generate_key(&state, &software_key(dir), "ecdsa-p256");
    let config = dir.join("agent.toml");
    let config_s = config.display().to_string();
    let big = format!("\"{}\"", big());
    let huge = "99999999999999999999";

    // Values tried on every string field: empty, 100 KB, wrong types.
    let string_fields: &[(&str, &str)] = &[
        ("agent", "socket"),
        ("agent", "state_dir"),
        ("agent", "trust_domain"),
        ("agent", "log_format"),
        ("agent", "socket_group"),
        ("ca", "key"),
        ("ca", "subject"),
        ("ca", "validity"),
        ("ca.intermediate", "key"),
        ("ca.intermediate", "algorithm"),
        ("ca.intermediate", "subject"),
        ("ca.intermediate", "ttl"),
        ("ca.intermediate", "rotate_before"),
        ("metrics", "listen"),
        ("alerts", "warning"),
        ("alerts", "error"),
        ("audit", "path"),
        ("jwt", "key"),
        ("jwt", "algorithm"),
        ("jwt", "ttl"),
        ("jwt", "key_ttl"),
        ("jwt", "key_overlap"),
        ("[workload]", "spiffe_id"),
        ("[workload]", "ttl"),
        ("[workload]", "algorithm"),
        ("[workload]", "hint"),
    ];
    let mut rows: Vec<(&str, String, String, String)> = Vec::new();
    for (section, key) in string_fields {
        // Empty or oversized: every field but the free-form `hint`.
        if *key != "hint" {
            rows.push((section, key.to_string(), "\"\"".into(), key.to_string()));
            // A 100 KB path fails when used: "File name too long" names the cause.
            rows.push((
                section,
                key.to_string(),
                big.clone(),
                format!("{key}|File name too long"),
            ));
        }
        rows.push((section, key.to_string(), "[1, 2]".into(), key.to_string()));
        rows.push((
            section,
            key.to_string(),
            "{ a = 1 }".into(),
            key.to_string(),
        ));
        if *key != "socket_group" {
            rows.push((section, key.to_string(), "5".into(), key.to_string()));
        }
    }
    #[rustfmt::skip]
    let specific: Vec<(&str, &str, String, &str)> = vec![
        ("agent", "socket_mode", "\"0999\"".into(), "socket_mode"),
        ("agent", "socket_mode", "\"\"".into(), "socket_mode"),
        ("agent", "socket_mode", "0o7777".into(), "socket_mode"),
        ("agent", "socket_mode", huge.into(), "socket_mode"),
        ("agent", "socket_mode", "true".into(), "socket_mode"),
        ("agent", "socket_mode", big.clone(), "socket_mode"),
        ("agent", "socket_group", "\"no-such-group-xyz\"".into(), "no-such-group-xyz"),
        ("agent", "socket_group", "-1".into(), "socket_group"),
        ("agent", "socket_group", "99999999999".into(), "socket_group"),
        ("agent", "socket_group", "true".into(), "socket_group"),
        ("agent", "trust_domain", "\"Not A Domain\"".into(), "trust_domain"),
        ("agent", "log_format", "\"xml\"".into(), "log_format"),
        ("agent", "renew_fraction", "0.0".into(), "renew_fraction"),
        ("agent", "renew_fraction", "1.5".into(), "renew_fraction"),
        ("agent", "renew_fraction", "nan".into(), "renew_fraction"),
        ("agent", "renew_fraction", "1e400".into(), "renew_fraction"),
        ("agent", "renew_fraction", "\"half\"".into(), "renew_fraction"),
        ("agent", "idle", "1".into(), "idle"),
        ("ca", "key", "\"gcpkms:x\"".into(), "gcpkms"),
        ("ca", "subject", "\"CN=x,ZZ=y\"".into(), "subject"),
        ("ca", "validity", "\"10q\"".into(), "10q"),
        ("ca", "validity", format!("\"{huge}d\""), "validity"),
        ("ca.intermediate", "algorithm", "\"dsa\"".into(), "dsa"),
        ("ca.intermediate", "ttl", "\"0d\"".into(), "ttl"),
        ("ca.intermediate", "ttl", format!("\"{huge}d\""), "ttl"),
        ("ca.intermediate", "rotate_before", "\"400d\"".into(), "rotate_before"),
        ("metrics", "listen", "\"not an address\"".into(), "listen"),
        ("metrics", "listen", "\"127.0.0.1:99999\"".into(), "listen"),
        ("alerts", "warning", "\"x\"".into(), "warning"),
        ("alerts", "error", "\"60d\"".into(), "error"),
        ("audit", "max_bytes", "0".into(), "max_bytes"),
        ("audit", "max_bytes", "-1".into(), "max_bytes"),
        ("audit", "max_bytes", huge.into(), "max_bytes"),
        ("audit", "max_bytes", "\"1MB\"".into(), "max_bytes"),
        ("audit", "keep", "-1".into(), "keep"),
        ("audit", "keep", huge.into(), "keep"),
        ("audit", "keep", "9223372036854775807".into(), "keep"),
        ("audit", "keep", "\"3\"".into(), "keep"),
        ("jwt", "algorithm", "\"HS256\"".into(), "HS256"),
        ("jwt", "ttl", "\"0s\"".into(), "ttl"),
        ("jwt", "key_ttl", format!("\"{huge}d\""), "key_ttl"),
        ("jwt", "key_overlap", "\"-1h\"".into(), "key_overlap"),
        ("[workload]", "spiffe_id", "\"spiffe://other.org/api\"".into(), "spiffe_id"),
        ("[workload]", "spiffe_id", "\"http://example.org/api\"".into(), "spiffe_id"),
        ("[workload]", "ttl", "\"90 minutes\"".into(), "90 minutes"),
        ("[workload]", "algorithm", "\"dsa\"".into(), "dsa"),
        ("[workload]", "dns", "[\"bad name!\"]".into(), "bad name!"),
        ("[workload]", "dns", "[\"\"]".into(), "dns"),
        ("[workload]", "dns", format!("[{big}]"), "dns"),
        ("[workload]", "dns", "\"a.internal\"".into(), "dns"),
        ("[workload]", "dns", "[5]".into(), "dns"),
        ("[workload]", "ip", "[\"300.1.1.1\"]".into(), "300.1.1.1"),
        ("[workload]", "ip", "[\"\"]".into(), "ip"),
        ("[workload]", "ip", format!("[{big}]"), "ip"),
        ("[workload]", "ip", "[5]".into(), "ip"),
        ("[workload]", "selectors", "{}".into(), "selectors"),
        ("[workload]", "selectors", "5".into(), "selectors"),
        ("[workload]", "selectors", "{ uid = -1 }".into(), "uid"),
        ("[workload]", "selectors", format!("{{ uid = {huge} }}"), "uid"),
        ("[workload]", "selectors", "{ uid = \"root\" }".into(), "uid"),
        ("[workload]", "selectors", "{ gid = -1 }".into(), "gid"),
        ("[workload]", "selectors", "{ gid = 99999999999 }".into(), "gid"),
        ("[workload]", "selectors", "{ gid = [0] }".into(), "gid"),
        ("[workload]", "selectors", "{ path = \"\" }".into(), "path"),
        ("[workload]", "selectors", "{ path = \"relative/bin\" }".into(), "path"),
        ("[workload]", "selectors", format!("{{ path = {big} }}"), "path"),
        ("[workload]", "selectors", "{ path = 5 }".into(), "path"),
        ("[workload]", "selectors", "{ sha256 = \"abc\" }".into(), "sha256"),
        ("[workload]", "selectors", "{ sha256 = \"\" }".into(), "sha256"),
        ("[workload]", "selectors", format!("{{ sha256 = {big} }}"), "sha256"),
        ("[workload]", "selectors", "{ sha256 = 5 }".into(), "sha256"),
        ("[workload]", "selectors", "{ colour = 1 }".into(), "colour"),
    ];
    for (s, k, v, n) in specific {
        rows.push((s, k.to_string(), v, n.to_string()));
    }

    let mut failures = Vec::new();
    for (section, key, value, needle) in &rows {
        let (text, line) = config_with(dir, section, key, value);
        std::fs::write(&config, text).unwrap();
        let args = vec!["agent".to_string(), "--config".into(), config_s.clone()];
        // The error names the field by its file position, or names it in words.
        let needle = format!("agent.toml:{line}:|{needle}");
        if let Err(e) = check_row(dir, &state, &args, &needle) {
            failures.push(format!(
                "[{section}] {key} = {}: {e}",
                &value[..value.len().min(40)]
            ));
        }
    }
    report(failures, rows.len());
}
