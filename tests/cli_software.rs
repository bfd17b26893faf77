//! End-to-end: the `keyward` CLI with software keys, checked with openssl.

mod common;

use common::*;
use tempfile::TempDir;

const ALGORITHMS: [&str; 6] = [
    "ecdsa-p256",
    "ecdsa-p384",
    "ed25519",
    "rsa-2048",
    "rsa-3072",
    "rsa-4096",
];

fn new_ca(tmp: &TempDir, alg: &str) -> std::path::PathBuf {
    root_ca(tmp.path(), &software_key(tmp.path()), alg)
}

#[test]
fn root_ca_issues_verifiable_certificates_for_every_algorithm() {
    for alg in ALGORITHMS {
        let tmp = TempDir::new().unwrap();
        let state = new_ca(&tmp, alg);
        let out = tmp.path().join("svc");
        keyward_ok(
            &state,
            &[
                "issue",
                "--name",
                "api",
                "--dns",
                "api.internal",
                "--ip",
                "10.0.0.1",
                "--uri",
                "spiffe://example.org/api",
                "--algorithm",
                alg,
                "--out",
                out.to_str().unwrap(),
            ],
        );
        openssl_verify(&out);
        assert_eq!(mode(&out.join("key.pem")), 0o600, "{alg}");
        assert_eq!(mode(&out), 0o700, "{alg}");
        assert_eq!(mode(&state), 0o700, "{alg}");
        // openssl reads the key, and it matches the certificate.
        let cert_pub = openssl(&[
            "x509",
            "-in",
            out.join("cert.pem").to_str().unwrap(),
            "-noout",
            "-pubkey",
        ]);
        let key_pub = openssl(&[
            "pkey",
            "-in",
            out.join("key.pem").to_str().unwrap(),
            "-pubout",
        ]);
        assert_eq!(cert_pub, key_pub, "{alg}: key.pem does not match cert.pem");
        let text = openssl(&[
            "x509",
            "-in",
            out.join("cert.pem").to_str().unwrap(),
            "-noout",
            "-text",
        ]);
        for needle in [
            "DNS:api.internal",
            "IP Address:10.0.0.1",
            "URI:spiffe://example.org/api",
            "TLS Web Server Authentication",
            "TLS Web Client Authentication",
        ] {
            assert!(
                text.contains(needle),
                "{alg}: certificate lacks {needle}:\n{text}"
            );
        }
        let verified = keyward_ok(
            &state,
            &["verify", "--cert", out.join("chain.pem").to_str().unwrap()],
        );
        assert!(verified.starts_with("OK: "), "{verified}");
    }
}

#[test]
fn intermediate_ca_chains_verify_with_mixed_algorithms() {
    for (root_alg, inter_alg, leaf_alg) in [
        ("ecdsa-p384", "ecdsa-p256", "ed25519"),
        ("rsa-4096", "rsa-2048", "ecdsa-p256"),
        ("ed25519", "ecdsa-p384", "rsa-2048"),
    ] {
        let tmp = TempDir::new().unwrap();
        let state = new_ca(&tmp, root_alg);
        let ikey = format!("file:{}/keys/inter.pem", tmp.path().display());
        keyward_ok(
            &state,
            &["key", "generate", "--key", &ikey, "--algorithm", inter_alg],
        );
        keyward_ok(
            &state,
            &[
                "ca",
                "intermediate",
                "--key",
                &ikey,
                "--subject",
                "CN=Test Issuing CA",
            ],
        );
        let out = tmp.path().join("svc");
        keyward_ok(
            &state,
            &[
                "issue",
                "--name",
                "web",
                "--dns",
                "web.internal",
                "--algorithm",
                leaf_alg,
                "--out",
                out.to_str().unwrap(),
            ],
        );
        openssl_verify(&out);
        let chain = std::fs::read_to_string(out.join("chain.pem")).unwrap();
        assert_eq!(
            chain.matches("BEGIN CERTIFICATE").count(),
            2,
            "chain is leaf + intermediate"
        );
        let bundle = std::fs::read_to_string(out.join("ca.pem")).unwrap();
        assert_eq!(
            bundle.matches("BEGIN CERTIFICATE").count(),
            1,
            "bundle is the root"
        );
        let status = keyward_ok(&state, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&status).unwrap();
        let roles: Vec<_> = v["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["role"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(roles, ["root", "intermediate", "issued"]);
        assert!(
            v["certificates"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["level"] == "OK"),
            "{status}"
        );
    }
}

#[test]
fn sign_csr_from_openssl_keeps_sans_and_never_grants_ca() {
    let tmp = TempDir::new().unwrap();
    let state = new_ca(&tmp, "ecdsa-p256");
    let key = tmp.path().join("dev.key");
    let csr = tmp.path().join("dev.csr");
    openssl_csr(
        &key,
        &csr,
        "/CN=device-7",
        &[
            "-addext",
            "subjectAltName=DNS:device-7.iot.internal",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ],
    );
    let cert = tmp.path().join("dev.pem");
    keyward_ok(
        &state,
        &[
            "sign-csr",
            "--csr",
            csr.to_str().unwrap(),
            "--out",
            cert.to_str().unwrap(),
        ],
    );
    let text = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-text"]);
    assert!(text.contains("DNS:device-7.iot.internal"), "{text}");
    assert!(
        !text.contains("CA:TRUE"),
        "a CSR must never get CA:TRUE:\n{text}"
    );
    assert!(!text.contains("Certificate Sign"), "{text}");
    let ca = tmp.path().join("ca.pem");
    std::fs::copy(state.join("ca/root.pem"), &ca).unwrap();
    openssl(&[
        "verify",
        "-x509_strict",
        "-CAfile",
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
}

#[test]
fn verify_rejects_a_certificate_from_another_ca() {
    let a = TempDir::new().unwrap();
    let b = TempDir::new().unwrap();
    let state_a = new_ca(&a, "ecdsa-p256");
    let state_b = new_ca(&b, "ecdsa-p256");
    let out = b.path().join("svc");
    keyward_ok(
        &state_b,
        &[
            "issue",
            "--name",
            "x",
            "--dns",
            "x.internal",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    keyward_fails(
        &state_a,
        &["verify", "--cert", out.join("cert.pem").to_str().unwrap()],
        "",
    );
}

#[test]
fn up_twice_reuses_the_ca_and_prints_the_openssl_command() {
    use std::io::BufRead;
    // `keyward up` serves until SIGTERM: read what it prints, run the commands it
    // prints (keyward fetch, then openssl verify), stop it and return its output.
    fn up_session(state: &std::path::Path) -> String {
        let mut child = std::process::Command::new(keyward_bin())
            .arg("--state-dir")
            .arg(state)
            .arg("up")
            .env_remove("KEYWARD_LOG")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut printed = String::new();
        for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            printed.push_str(&line);
            printed.push('\n');
            if line.contains("stop the agent") {
                break;
            }
        }
        // The fetch command names this binary by its path: it runs as printed, pasted
        // into a shell whose PATH has no `keyward` (as after `cargo run`).
        let exe = keyward_bin().canonicalize().unwrap();
        let fetch = printed
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&format!("{} fetch ", exe.display())))
            .unwrap_or_else(|| panic!("no fetch command naming {}:\n{printed}", exe.display()));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(fetch)
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{fetch}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let verify = printed
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("openssl verify -x509_strict"))
            .unwrap_or_else(|| panic!("no openssl command:\n{printed}"));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(verify)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{verify}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            std::process::Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status()
                .unwrap()
                .success()
        );
        assert!(
            child.wait().unwrap().success(),
            "keyward up exits cleanly on SIGTERM"
        );
        assert!(!state.join("agent.sock").exists(), "the socket is removed");
        printed
    }
    let tmp = TempDir::new().unwrap();
    // A space in the path: the printed commands quote it.
    let state = tmp.path().join("key ward");
    let first = up_session(&state);
    assert!(first.contains("creating a software CA"), "{first}");
    let root = std::fs::read(state.join("ca/root.pem")).unwrap();
    let second = up_session(&state);
    assert!(second.contains("using the CA"), "{second}");
    assert_eq!(std::fs::read(state.join("ca/root.pem")).unwrap(), root);
}
