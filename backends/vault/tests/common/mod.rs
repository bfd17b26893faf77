//! Shared helpers of keyward-vault's tests: the OpenBao server started by
//! scripts/openbao.sh, admin calls as root, and private servers a test may stop.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use keyward_core::KeyUri;
use keyward_vault::{VaultAuth, VaultSettings};
use serde_json::{Value, json};
use zeroize::Zeroizing;

fn env(name: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{name} not set: run the tests through scripts/test.sh"))
}

/// The address of the shared OpenBao dev server.
pub fn addr() -> String {
    env("KEYWARD_TEST_VAULT_ADDR")
}

/// Its root token (scripts/openbao.sh exports VAULT_TOKEN=root).
pub fn root_token() -> String {
    env("VAULT_TOKEN")
}

/// Settings for the shared server with the root token.
pub fn root_settings() -> VaultSettings {
    VaultSettings::new(&addr(), VaultAuth::Token(Zeroizing::new(root_token()))).unwrap()
}

/// A name unique to this test run (the shared server outlives single tests).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{:x}-{}",
        std::process::id(),
        nanos & 0xffff_ffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `transit:NAME` (with `&`-joined extra attributes after `?`, if any).
pub fn transit(name: &str, query: &str) -> KeyUri {
    let s = if query.is_empty() {
        format!("transit:{name}")
    } else {
        format!("transit:{name}?{query}")
    };
    KeyUri::parse(&s).unwrap()
}

/// Raw HTTP calls to a server as root, for setting up what keyward then uses.
#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    addr: String,
    token: String,
}

impl Admin {
    /// Root on the shared server.
    pub fn shared() -> Self {
        Admin::on(&addr(), &root_token())
    }

    /// `token` on the server at `addr`.
    pub fn on(addr: &str, token: &str) -> Self {
        Admin {
            http: reqwest::Client::new(),
            addr: addr.to_string(),
            token: token.to_string(),
        }
    }

    /// Calls `/v1/{path}`; panics unless the answer is 2xx. Returns the JSON (or null).
    pub async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(
            status.is_success(),
            "{method} {path}: HTTP {status}: {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// POST `body` to `path`.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.api(reqwest::Method::POST, path, Some(body)).await
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Value {
        self.api(reqwest::Method::GET, path, None).await
    }

    /// Writes an ACL policy.
    pub async fn policy(&self, name: &str, hcl: &str) {
        self.post(
            &format!("sys/policies/acl/{name}"),
            json!({ "policy": hcl }),
        )
        .await;
    }

    /// Creates a token with `policies` (and the default policy) and `ttl`.
    pub async fn token(&self, policies: &[&str], ttl: &str) -> String {
        let v = self
            .post(
                "auth/token/create",
                json!({ "policies": policies, "ttl": ttl, "renewable": true }),
            )
            .await;
        v["auth"]["client_token"].as_str().unwrap().to_string()
    }
}

/// A `bao server -dev` of the test's own, on its own port, killed on drop.
pub struct PrivateBao {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` (or `https://` with TLS).
    pub addr: String,
    /// Holds the log (and the TLS files).
    pub dir: tempfile::TempDir,
}

impl PrivateBao {
    /// Starts a plain-HTTP dev server with root token `root`, Transit enabled.
    pub async fn start() -> Self {
        Self::launch(false, false).await
    }

    /// Starts a dev server with a generated TLS CA (`ca_file()`), Transit enabled.
    pub async fn start_tls() -> Self {
        Self::launch(true, false).await
    }

    /// Starts a plain-HTTP dev server that logs every request to a file audit device
    /// (see [`PrivateBao::requests_to`]), Transit enabled.
    pub async fn start_audited() -> Self {
        Self::launch(false, true).await
    }

    async fn launch(tls: bool, audit: bool) -> Self {
        let bin = env("KEYWARD_TEST_BAO_BIN");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("bao.log")).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.args([
            "server",
            "-dev",
            "-dev-root-token-id=root",
            "-dev-no-store-token",
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ]);
        if audit {
            // OpenBao enables audit devices only from its configuration file.
            let config = dir.path().join("audit.hcl");
            let log = dir.path().join("audit.log");
            std::fs::write(
                &config,
                format!(
                    "audit \"file\" \"keyward-test\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                    log.display()
                ),
            )
            .unwrap();
            cmd.arg(format!("-config={}", config.display()));
        }
        if tls {
            cmd.arg("-dev-tls")
                .arg(format!("-dev-tls-cert-dir={}", dir.path().display()));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let scheme = if tls { "https" } else { "http" };
        let mut me = PrivateBao {
            child: Some(child),
            addr: format!("{scheme}://127.0.0.1:{port}"),
            dir,
        };
        me.wait_healthy().await;
        me.admin()
            .post("sys/mounts/transit", json!({ "type": "transit" }))
            .await;
        me
    }

    async fn wait_healthy(&mut self) {
        let started = Instant::now();
        loop {
            // Rebuilt each time: a TLS server writes its CA file only once it starts.
            let ok = self
                .admin()
                .http
                .get(format!("{}/v1/sys/health", self.addr))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log =
                    std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default();
                panic!("private bao server exited ({status}): {log}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "private bao server not healthy in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many requests to `path` (e.g. `transit/sign/k`) the audit log holds.
    pub fn requests_to(&self, path: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("audit.log")).unwrap();
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["type"] == "request" && e["request"]["path"] == path)
            .count()
    }

    /// The generated CA of a TLS server.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("vault-ca.pem")
    }

    /// Root on this server (trusting its TLS CA, if any).
    pub fn admin(&self) -> Admin {
        let mut b = reqwest::Client::builder();
        if let Ok(pem) = std::fs::read(self.ca_file()) {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        Admin {
            http: b.build().unwrap(),
            addr: self.addr.clone(),
            token: "root".into(),
        }
    }

    /// Settings for keyward with the root token and `deadline`.
    pub fn settings(&self, deadline: Duration) -> VaultSettings {
        let mut s = VaultSettings::new(&self.addr, VaultAuth::Token(Zeroizing::new("root".into())))
            .unwrap();
        s.request_deadline = deadline;
        s
    }

    /// Kills the server (by its pid) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateBao {
    fn drop(&mut self) {
        self.stop();
    }
}
