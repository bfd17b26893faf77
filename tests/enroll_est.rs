//! The agent's EST server (RFC 7030) driven the way RFC 7030's own examples do, with curl
//! and openssl: `cacerts` decoded by `openssl pkcs7`, a first enrollment with a one-use
//! bootstrap secret (`keyward est bootstrap add`), re-enrollment with the issued
//! certificate as the TLS client certificate, a device certificate from a manufacturer
//! CA, and the refusals: a wrong or spent secret, a CSR whose signature does not verify
//! (nothing written), names the client may not have, and a client certificate from
//! another CA.

mod agent_common;
mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use agent_common::Agent;
use base64::Engine;
use common::{keyward_ok, openssl, openssl_csr, snapshot};

/// A running agent serving EST, and the files the tests make.
struct Est {
    agent: Agent,
    /// `https://127.0.0.1:PORT/.well-known/est`.
    base: String,
    /// The root certificate (the listener's trust anchor).
    root: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Est {
    /// An agent with a software CA, the listener on a free port and `[est]` as `est`
    /// (TOML lines); its audit log lives outside the state directory, so the state
    /// directory changes only when something is issued.
    fn start(est: &str) -> Est {
        let port = free_port();
        let mut agent = Agent::new("");
        let audit = agent.dir.path().join("agent-audit.jsonl");
        agent.write_config(&format!(
            "[audit]\npath = \"{}\"\n\n[acme]\nlisten = \"127.0.0.1:{port}\"\nnames = [\"127.0.0.1\"]\nallowed = [\"*.internal\"]\n\n[est]\n{est}\n",
            audit.display()
        ));
        agent.start();
        let root = agent.dir.path().join("root.pem");
        std::fs::write(&root, agent.root_pem()).expect("write root.pem");
        Est {
            base: format!("https://127.0.0.1:{port}/.well-known/est"),
            root,
            agent,
        }
    }

    /// A path in the test's directory.
    fn path(&self, name: &str) -> PathBuf {
        self.agent.dir.path().join(name)
    }

    /// `keyward est bootstrap add --name NAME [extra]`: the secret it printed.
    fn bootstrap_secret(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["est", "bootstrap", "add", "--name", name];
        args.extend_from_slice(extra);
        keyward_ok(&self.agent.state, &args).trim().to_string()
    }

    /// A new P-256 key `NAME.key` and its CSR `NAME.csr.b64` (base64 DER, as EST sends
    /// it) for `subject` with openssl `extra` arguments.
    fn csr(&self, name: &str, subject: &str, extra: &[&str]) -> PathBuf {
        let der = self.path(&format!("{name}.csr.der"));
        let mut args = vec!["-outform", "DER"];
        args.extend_from_slice(extra);
        openssl_csr(&self.path(&format!("{name}.key")), &der, subject, &args);
        let b64 = self.path(&format!("{name}.csr.b64"));
        let bytes = std::fs::read(&der).expect("read csr");
        std::fs::write(
            &b64,
            base64::engine::general_purpose::STANDARD.encode(bytes),
        )
        .expect("write csr");
        b64
    }

    /// curl against `endpoint` with `args`: the HTTP status (0 when the connection
    /// failed) and the body. Calls may run at once (each has its own body file).
    fn curl(&self, endpoint: &str, args: &[&str]) -> (u16, Vec<u8>) {
        static CALLS: AtomicU32 = AtomicU32::new(0);
        let body = self.path(&format!(
            "curl-{}.body",
            CALLS.fetch_add(1, Ordering::Relaxed)
        ));
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&self.root)
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code}"])
            .args(args)
            .arg(format!("{}/{endpoint}", self.base))
            .output()
            .expect("curl is installed (scripts/with-backends.sh installs it)");
        let code = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        (code, std::fs::read(&body).unwrap_or_default())
    }

    /// POSTs the CSR at `csr` to `endpoint` with curl `auth` arguments.
    fn enroll(&self, endpoint: &str, csr: &Path, auth: &[&str]) -> (u16, Vec<u8>) {
        let data = format!("@{}", csr.display());
        let mut args = vec![
            "-H",
            "Content-Type: application/pkcs10",
            "--data-binary",
            &data,
        ];
        args.extend_from_slice(auth);
        self.curl(endpoint, &args)
    }

    /// The certificates of a base64 certs-only response, as PEM (`openssl pkcs7
    /// -print_certs`), written to `name`.
    fn certs(&self, body: &[u8], name: &str) -> PathBuf {
        let text: Vec<u8> = body
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("the response is base64");
        let p7 = self.path(&format!("{name}.p7"));
        std::fs::write(&p7, der).expect("write p7");
        let pem = self.path(name);
        openssl(&[
            "pkcs7",
            "-inform",
            "DER",
            "-in",
            p7.to_str().unwrap(),
            "-print_certs",
            "-out",
            pem.to_str().unwrap(),
        ]);
        pem
    }

    /// `openssl verify -x509_strict` of `cert` against the root.
    fn verify(&self, cert: &Path) {
        let out = openssl(&[
            "verify",
            "-x509_strict",
            "-CAfile",
            self.root.to_str().unwrap(),
            cert.to_str().unwrap(),
        ]);
        assert!(out.contains(": OK"), "{out}");
    }

    /// `keyward status` of the state directory.
    fn status(&self) -> String {
        keyward_ok(&self.agent.state, &["status"])
    }
}

/// The subject and SANs of a PEM certificate, as openssl prints them.
fn names(cert: &Path) -> String {
    openssl(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        "-subject",
        "-ext",
        "subjectAltName",
    ])
}

#[test]
fn cacerts_and_csrattrs_decode_with_openssl() {
    let mut est = Est::start("");
    let (code, body) = est.curl("cacerts", &[]);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let pem = est.certs(&body, "cacerts.pem");
    let served = std::fs::read_to_string(pem).unwrap();
    let root = String::from_utf8(est.agent.root_pem()).unwrap();
    assert!(
        served.contains(root.trim()),
        "cacerts lacks the root:\n{served}"
    );

    let headers = est.path("headers");
    est.curl("cacerts", &["-D", headers.to_str().unwrap()]);
    let headers = std::fs::read_to_string(headers)
        .unwrap()
        .to_ascii_lowercase();
    assert!(headers.contains("content-type: application/pkcs7-mime; smime-type=certs-only"));
    assert!(headers.contains("content-transfer-encoding: base64"));

    let (code, body) = est.curl("csrattrs", &[]);
    assert_eq!(code, 200);
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let attrs = est.path("csrattrs.der");
    std::fs::write(&attrs, der).unwrap();
    let parsed = openssl(&[
        "asn1parse",
        "-inform",
        "DER",
        "-in",
        attrs.to_str().unwrap(),
    ]);
    assert!(
        parsed.contains("ecdsa-with-SHA256") && parsed.contains("prime256v1"),
        "{parsed}"
    );
    est.agent.stop();
}

#[test]
fn a_bootstrap_secret_enrolls_once_and_the_certificate_reenrolls() {
    let mut est = Est::start("validity = \"30d\"");
    let secret = est.bootstrap_secret("dev-42", &["--dns", "dev-42.internal"]);
    let stored =
        std::fs::read_to_string(est.agent.state.join("est/bootstrap/dev-42.json")).unwrap();
    assert!(!stored.contains(&secret), "the secret itself is stored");
    let csr = est.csr(
        "dev",
        "/CN=dev-42",
        &["-addext", "subjectAltName=DNS:dev-42.internal"],
    );

    // No credentials, a wrong secret, an unknown name: 401, nothing issued.
    let (code, _) = est.enroll("simpleenroll", &csr, &[]);
    assert_eq!(code, 401);
    let wrong = format!("dev-42:{secret}x");
    assert_eq!(est.enroll("simpleenroll", &csr, &["--user", &wrong]).0, 401);
    let unknown = format!("dev-43:{secret}");
    assert_eq!(
        est.enroll("simpleenroll", &csr, &["--user", &unknown]).0,
        401
    );
    assert!(!est.status().contains("est:"), "{}", est.status());

    let user = format!("dev-42:{secret}");
    let (code, body) = est.enroll("simpleenroll", &csr, &["--user", &user]);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let cert = est.certs(&body, "dev.pem");
    est.verify(&cert);
    let first = names(&cert);
    assert!(
        first.contains("CN = dev-42") && first.contains("DNS:dev-42.internal"),
        "{first}"
    );
    assert!(est.status().contains("est:dev-42"), "{}", est.status());

    // The same secret again: refused, nothing more issued.
    let (code, body) = est.enroll("simpleenroll", &csr, &["--user", &user]);
    assert_eq!(code, 401, "{}", String::from_utf8_lossy(&body));
    assert_eq!(est.status().matches("est:").count(), 1);

    // Re-enrollment: the issued certificate authenticates (curl --cert/--key).
    let key = est.path("dev.key");
    let tls = [
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let renew = est.csr(
        "renew",
        "/CN=dev-42",
        &["-addext", "subjectAltName=DNS:dev-42.internal"],
    );
    let (code, body) = est.enroll("simplereenroll", &renew, &tls);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let renewed = est.certs(&body, "renewed.pem");
    est.verify(&renewed);
    assert_eq!(names(&renewed), first);
    assert_eq!(est.status().matches("est:").count(), 2, "{}", est.status());

    // Re-enrollment asking for a name the certificate does not have: refused.
    let more = est.csr(
        "more",
        "/CN=dev-42",
        &["-addext", "subjectAltName=DNS:bank.internal"],
    );
    assert_eq!(est.enroll("simplereenroll", &more, &tls).0, 403);
    // Without a client certificate: refused.
    assert_eq!(est.enroll("simplereenroll", &renew, &[]).0, 401);

    // A revoked certificate no longer re-enrolls.
    let serial = openssl(&[
        "x509",
        "-in",
        renewed.to_str().unwrap(),
        "-noout",
        "-serial",
    ]);
    let serial = serial.trim().trim_start_matches("serial=").to_string();
    keyward_ok(&est.agent.state, &["revoke", "--serial", &serial]);
    let key = est.path("renew.key");
    let revoked = [
        "--cert",
        renewed.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let (code, body) = est.enroll("simplereenroll", &renew, &revoked);
    assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("revoked"));
    est.agent.stop();
}

#[test]
fn a_csr_whose_signature_does_not_verify_is_refused_and_nothing_is_written() {
    let mut est = Est::start("");
    let secret = est.bootstrap_secret("dev-7", &[]);
    let user = format!("dev-7:{secret}");
    let good = est.csr("dev", "/CN=dev-7", &[]);
    // Flip a bit in the signature (the CSR's last byte): it still parses, but the
    // signature no longer verifies with the CSR's key.
    let mut der = std::fs::read(est.path("dev.csr.der")).unwrap();
    *der.last_mut().unwrap() ^= 0x01;
    let bad = est.path("bad.csr.b64");
    std::fs::write(&bad, base64::engine::general_purpose::STANDARD.encode(&der)).unwrap();

    let before = snapshot(&est.agent.state);
    let (code, body) = est.enroll("simpleenroll", &bad, &["--user", &user]);
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("signature"));
    // Names the secret does not allow: refused too.
    let other = est.csr("other", "/CN=someone-else", &[]);
    assert_eq!(
        est.enroll("simpleenroll", &other, &["--user", &user]).0,
        403
    );
    assert!(
        before == snapshot(&est.agent.state),
        "the state directory changed"
    );

    // The secret was not spent: the good CSR enrolls with it.
    let (code, body) = est.enroll("simpleenroll", &good, &["--user", &user]);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    est.verify(&est.certs(&body, "dev.pem"));
    est.agent.stop();
}

#[test]
fn a_client_certificate_from_another_ca_gets_nothing() {
    let mut est = Est::start("");
    // Same subject as a real device, but self-signed by the attacker.
    let key = est.path("evil.key");
    let cert = est.path("evil.pem");
    // (`openssl req -x509`: a self-signed certificate instead of a CSR.)
    let extra = [
        "-x509",
        "-days",
        "1",
        "-addext",
        "extendedKeyUsage=clientAuth",
    ];
    openssl_csr(&key, &cert, "/CN=dev-42", &extra);
    let csr = est.csr("dev", "/CN=dev-42", &[]);
    let tls = [
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let before = snapshot(&est.agent.state);
    for endpoint in ["simplereenroll", "simpleenroll"] {
        let (code, _) = est.enroll(endpoint, &csr, &tls);
        assert_eq!(code, 0, "{endpoint}: the handshake should fail");
    }
    assert!(
        before == snapshot(&est.agent.state),
        "the state directory changed"
    );
    assert!(!est.status().contains("est:"));
    est.agent.stop();
}

#[test]
fn a_manufacturer_device_certificate_enrolls_for_its_own_names() {
    let dir = tempfile::TempDir::new().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    // The manufacturer's CA and a device certificate it issued (openssl as the factory).
    let ca = [
        "-x509",
        "-days",
        "30",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ];
    openssl_csr(
        Path::new(&p("mfr.key")),
        Path::new(&p("mfr.pem")),
        "/CN=Acme Devices Manufacturing CA",
        &ca,
    );
    openssl_csr(
        Path::new(&p("device.key")),
        Path::new(&p("device.csr")),
        "/CN=esp32-0042",
        &[],
    );
    std::fs::write(
        p("ext.cnf"),
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("device.csr"),
        "-CA",
        &p("mfr.pem"),
        "-CAkey",
        &p("mfr.key"),
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("device.pem"),
    ]);
    let mut est = Est::start(&format!("manufacturer_ca = \"{}\"", p("mfr.pem")));
    let tls = ["--cert", &p("device.pem"), "--key", &p("device.key")];
    let csr = est.csr("op", "/CN=esp32-0042", &[]);
    let (code, body) = est.enroll("simpleenroll", &csr, &tls);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let cert = est.certs(&body, "op.pem");
    est.verify(&cert);
    assert!(names(&cert).contains("CN = esp32-0042"));
    // Another device's name with this device's certificate: refused.
    let other = est.csr("other", "/CN=esp32-0043", &[]);
    assert_eq!(est.enroll("simpleenroll", &other, &tls).0, 403);
    // The manufacturer certificate does not re-enroll (only this CA's certificates do).
    assert_eq!(est.enroll("simplereenroll", &csr, &tls).0, 403);
    est.agent.stop();
}

#[test]
fn a_secret_raced_by_many_clients_enrolls_exactly_once_and_is_audited() {
    let mut est = Est::start("");
    let secret = est.bootstrap_secret("dev-9", &[]);
    let user = format!("dev-9:{secret}");
    let csrs: Vec<PathBuf> = (0..8)
        .map(|i| est.csr(&format!("race{i}"), "/CN=dev-9", &[]))
        .collect();
    let codes: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = csrs
            .iter()
            .map(|csr| {
                let (est, user) = (&est, &user);
                s.spawn(move || est.enroll("simpleenroll", csr, &["--user", user]).0)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(codes.iter().filter(|&&c| c == 200).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 401).count(), 7, "{codes:?}");
    assert_eq!(est.status().matches("est:dev-9").count(), 1);
    est.agent.stop();
    let audit = std::fs::read_to_string(est.path("agent-audit.jsonl")).unwrap();
    let issued: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\"certificate_issued\"") && l.contains("\"est\""))
        .collect();
    assert_eq!(issued.len(), 1, "{audit}");
    assert!(issued[0].contains("est:dev-9"));
    assert_eq!(audit.matches("\"est_refused\"").count(), 7, "{audit}");
}

#[test]
fn silent_connections_do_not_keep_other_clients_out() {
    let mut est = Est::start("");
    let addr = est
        .base
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    // Connections that never start a handshake, and one that handshakes then says nothing.
    let idle: Vec<std::net::TcpStream> = (0..50)
        .map(|_| std::net::TcpStream::connect(&addr).expect("connect"))
        .collect();
    let mut quiet = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &addr])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let (code, body) = est.curl("cacerts", &[]);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    drop(idle);
    let _ = quiet.kill();
    let _ = quiet.wait();
    est.agent.stop();
}

#[test]
fn a_certificate_from_a_sign_csr_batch_reenrolls() {
    // The agent finds it in the inventory: the second certificate of its chunk's one
    // file in issued/.
    let mut est = Est::start("validity = \"30d\"");
    let san = ["-addext", "subjectAltName=DNS:dev-9.internal"];
    est.csr(
        "dev8",
        "/CN=dev-8",
        &["-addext", "subjectAltName=DNS:dev-8.internal"],
    );
    est.csr("dev9", "/CN=dev-9", &san);
    let (batch, out) = (est.path("batch"), est.path("batch-out"));
    std::fs::create_dir_all(&batch).unwrap();
    for dev in ["dev8", "dev9"] {
        let csr = format!("{}.csr", dev.replace("dev", "dev-"));
        std::fs::copy(est.path(&format!("{dev}.csr.der")), batch.join(csr)).unwrap();
    }
    let (b, o) = (batch.to_str().unwrap(), out.to_str().unwrap());
    keyward_ok(&est.agent.state, &["sign-csr", "--batch", b, "--out", o]);
    let issued: Vec<String> = std::fs::read_dir(est.agent.state.join("issued"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        issued.len() == 1 && issued[0].starts_with("batch-"),
        "{issued:?}"
    );
    let cert = out.join("dev-9.pem");
    let key = est.path("dev9.key");
    let tls = [
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let renew = est.csr("renew9", "/CN=dev-9", &san);
    let (code, body) = est.enroll("simplereenroll", &renew, &tls);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let renewed = est.certs(&body, "renewed9.pem");
    est.verify(&renewed);
    assert!(names(&renewed).contains("DNS:dev-9.internal"));
    est.agent.stop();
}
