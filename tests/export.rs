//! End-to-end: `keyward export --format k8s-secret` prints a kubernetes.io/tls Secret
//! with the most recent certificate issued under a name.

mod common;

use std::collections::BTreeMap;

use base64::Engine;
use common::*;
use tempfile::TempDir;

/// Every scalar of the Secret by its dotted path (`metadata.name`, `data.tls.crt`),
/// parsed by hand: the output is block YAML with one mapping entry per line.
fn parse(yaml: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut parents: Vec<(usize, String)> = Vec::new();
    for line in yaml.lines() {
        let depth = line.len() - line.trim_start().len();
        let (k, v) = line.trim().split_once(':').expect("key: value");
        parents.retain(|(d, _)| *d < depth);
        let v = v.trim();
        if v.is_empty() {
            parents.push((depth, k.to_string()));
            continue;
        }
        let v = serde_json::from_str::<String>(v).unwrap_or_else(|_| v.to_string());
        let mut path: Vec<&str> = parents.iter().map(|(_, p)| p.as_str()).collect();
        path.push(k);
        out.insert(path.join("."), v);
    }
    out
}

fn decode(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

#[test]
fn the_secret_holds_the_latest_certificate_its_key_and_the_ca() {
    let tmp = TempDir::new().unwrap();
    let state = root_ca(tmp.path(), &software_key(tmp.path()), "ecdsa-p256");
    issue_named(&state, "API_Server", &tmp.path().join("old"));
    let out = tmp.path().join("new");
    issue_named(&state, "API_Server", &out);
    let yaml = keyward_ok(
        &state,
        &[
            "export",
            "--name",
            "API_Server",
            "--format",
            "k8s-secret",
            "--namespace",
            "prod",
        ],
    );
    let s = parse(&yaml);
    assert_eq!(s["apiVersion"], "v1", "{yaml}");
    assert_eq!(s["kind"], "Secret");
    assert_eq!(s["type"], "kubernetes.io/tls");
    assert_eq!(s["metadata.name"], "api-server");
    assert_eq!(s["metadata.namespace"], "prod");
    let crt = decode(&s["data.tls.crt"]);
    let key = decode(&s["data.tls.key"]);
    assert_eq!(crt, std::fs::read(out.join("chain.pem")).unwrap());
    assert_eq!(key, std::fs::read(out.join("key.pem")).unwrap());
    assert_eq!(
        decode(&s["data.ca.crt"]),
        std::fs::read(state.join("ca/root.pem")).unwrap()
    );
    // The newer of the two certificates named API_Server.
    let new_serial = openssl(&[
        "x509",
        "-noout",
        "-serial",
        "-in",
        out.join("cert.pem").to_str().unwrap(),
    ]);
    assert_eq!(
        format!("serial={}", s["metadata.annotations.keyward.io/serial"]).to_lowercase(),
        new_serial.trim().to_lowercase()
    );
    // openssl takes the pair: the certificate's public key is the key's.
    let d = tmp.path().join("secret");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("tls.crt"), &crt).unwrap();
    std::fs::write(d.join("tls.key"), &key).unwrap();
    let from_cert = openssl(&[
        "x509",
        "-noout",
        "-pubkey",
        "-in",
        d.join("tls.crt").to_str().unwrap(),
    ]);
    let from_key = openssl(&[
        "pkey",
        "-pubout",
        "-in",
        d.join("tls.key").to_str().unwrap(),
    ]);
    assert_eq!(from_cert, from_key);
    // The export is in the audit log, without the key.
    let log = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    assert!(log.contains("credentials_exported"), "{log}");
    assert!(!log.contains(s["data.tls.key"].as_str()), "{log}");
    // --secret-name names it as given; names YAML would read as other types stay strings.
    let yaml = keyward_ok(
        &state,
        &[
            "export",
            "--name",
            "API_Server",
            "--format",
            "k8s-secret",
            "--secret-name",
            "123",
        ],
    );
    assert!(yaml.contains("  name: \"123\"\n"), "{yaml}");
    assert!(!yaml.contains("namespace"), "{yaml}");
}

#[test]
fn bad_exports_fail_with_one_clear_line() {
    let tmp = TempDir::new().unwrap();
    let state = root_ca(tmp.path(), &software_key(tmp.path()), "ecdsa-p256");
    let out = tmp.path().join("svc");
    issue_named(&state, "api", &out);
    keyward_fails(
        &state,
        &["export", "--name", "nope", "--format", "k8s-secret"],
        "no certificate issued with --name 'nope'",
    );
    keyward_fails(
        &state,
        &["export", "--name", "api", "--format", "pkcs12"],
        "unknown export format 'pkcs12'",
    );
    keyward_fails(
        &state,
        &[
            "export",
            "--name",
            "api",
            "--format",
            "k8s-secret",
            "--namespace",
            "Prod_1",
        ],
        "--namespace 'Prod_1' is not a valid Kubernetes name",
    );
    std::fs::remove_file(out.join("key.pem")).unwrap();
    let line = keyward_fails(
        &state,
        &["export", "--name", "api", "--format", "k8s-secret"],
        "key.pem",
    );
    assert!(line.contains("cannot read"), "{line}");
}
