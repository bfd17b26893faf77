//! Private backend servers a test starts for itself (an OpenBao dev server with
//! Transit, a moto KMS server) on free loopback ports, so that pausing one with
//! SIGSTOP disturbs no other test. Both keep their keys only in memory, so an outage
//! is simulated by pausing (SIGSTOP) and resuming (SIGCONT), never by a restart. A
//! paused server still accepts TCP connections (kernel backlog) but never answers.
#![allow(dead_code)]

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::agent_common::wait_for;
use crate::common::required_env;

/// A server process this test owns; resumed and killed on drop.
pub struct PrivateServer {
    child: Child,
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub addr: String,
    name: &'static str,
    dir: TempDir,
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PrivateServer {
    fn spawn(name: &'static str, bin: &str, args: &[String], port: u16) -> PrivateServer {
        let dir = TempDir::new().unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({bin}): {e}"));
        PrivateServer {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            name,
            dir,
        }
    }

    /// A `bao server -dev` (root token `root`) with Transit mounted at `transit/`.
    pub fn bao() -> PrivateServer {
        let bin = required_env("KEYWARD_TEST_BAO_BIN");
        let port = free_port();
        let args = [
            "server".to_string(),
            "-dev".into(),
            "-dev-root-token-id=root".into(),
            "-dev-no-store-token".into(),
            format!("-dev-listen-address=127.0.0.1:{port}"),
        ];
        let bao = PrivateServer::spawn("bao", &bin, &args, port);
        wait_for("the private bao server", Duration::from_secs(30), || {
            bao.bao_api("GET", "sys/health", None).status.success()
        });
        let mounted = bao.bao_api("POST", "sys/mounts/transit", Some(r#"{"type":"transit"}"#));
        assert!(mounted.status.success(), "enable transit: {mounted:?}");
        bao
    }

    /// A `moto_server` (the KMS-compatible server on PATH under scripts/with-backends.sh).
    pub fn moto() -> PrivateServer {
        required_env("KEYWARD_TEST_KMS_ENDPOINT");
        let port = free_port();
        let args = [
            "-H".to_string(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ];
        let moto = PrivateServer::spawn("moto", "moto_server", &args, port);
        wait_for("the private moto server", Duration::from_secs(60), || {
            Command::new("curl")
                .args(["-sf", "-m", "5", "-o", "/dev/null"])
                .arg(format!("{}/moto-api/", moto.addr))
                .status()
                .is_ok_and(|s| s.success())
        });
        moto
    }

    /// The environment a keyward process needs to use this server (on top of the
    /// credentials and region scripts/with-backends.sh exports).
    pub fn client_env(&self) -> Vec<(&'static str, String)> {
        match self.name {
            "bao" => vec![
                ("VAULT_ADDR", self.addr.clone()),
                ("VAULT_TOKEN", "root".into()),
            ],
            _ => vec![
                ("AWS_ENDPOINT_URL", self.addr.clone()),
                ("AWS_ENDPOINT_URL_KMS", self.addr.clone()),
            ],
        }
    }

    /// A request to the OpenBao HTTP API (`/v1/PATH`) with the root token.
    pub fn bao_api(&self, method: &str, path: &str, body: Option<&str>) -> Output {
        let mut cmd = Command::new("curl");
        cmd.args(["-sf", "-m", "5", "-X", method, "-H", "X-Vault-Token: root"]);
        if let Some(b) = body {
            cmd.args(["-d", b]);
        }
        cmd.arg(format!("{}/v1/{path}", self.addr))
            .output()
            .expect("curl")
    }

    /// Sends `sig` ("STOP", "CONT") to the server.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{sig} {}", self.name);
    }

    /// The server's log so far (for diagnostics).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
