//! End-to-end: `/readyz` follows the CA key's backend. The agent keeps its CA key in
//! OpenBao Transit on a private dev server this test starts; stopping that server
//! (SIGSTOP: dev mode keeps keys only in memory, so it is paused, not restarted) makes
//! the agent unready, resuming it makes the agent ready again.

mod agent_common;
mod common;
mod metrics_common;

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use agent_common::*;
use common::{keyward_bin, required_env, unique};
use metrics_common::{get, metrics_addr, scrape, with_metrics};
use tempfile::TempDir;

/// A private `bao server -dev` with Transit enabled; resumed and killed on drop.
struct PrivateBao {
    child: Child,
    addr: String,
    _dir: TempDir,
}

impl PrivateBao {
    fn start() -> PrivateBao {
        let bin = required_env("KEYWARD_TEST_BAO_BIN");
        let dir = TempDir::new().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("bao.log")).unwrap();
        let child = Command::new(&bin)
            .args([
                "server",
                "-dev",
                "-dev-root-token-id=root",
                "-dev-no-store-token",
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let bao = PrivateBao {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        wait_for("the private bao server", Duration::from_secs(30), || {
            bao.curl("GET", "sys/health", None).status.success()
        });
        let mounted = bao.curl("POST", "sys/mounts/transit", Some(r#"{"type":"transit"}"#));
        assert!(mounted.status.success(), "enable transit: {mounted:?}");
        bao
    }

    fn curl(&self, method: &str, path: &str, body: Option<&str>) -> Output {
        let mut cmd = Command::new("curl");
        cmd.args(["-sf", "-m", "5", "-X", method, "-H", "X-Vault-Token: root"]);
        if let Some(b) = body {
            cmd.args(["-d", b]);
        }
        cmd.arg(format!("{}/v1/{path}", self.addr))
            .output()
            .expect("curl")
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{sig} bao");
    }
}

impl Drop for PrivateBao {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn readyz_follows_the_transit_backend() {
    let bao = PrivateBao::start();
    let dir = TempDir::new().unwrap();
    let key = format!("transit:{}", unique("kw-ready"));
    let generated = Command::new(keyward_bin())
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args([
            "key",
            "generate",
            "--key",
            &key,
            "--algorithm",
            "ecdsa-p256",
        ])
        .env("VAULT_ADDR", &bao.addr)
        .env("VAULT_TOKEN", "root")
        .output()
        .expect("keyward key generate");
    assert!(generated.status.success(), "{generated:?}");
    let mut agent = Agent::with_ca_key(dir, &key, &with_metrics(&entry("ready", 0, "1h", "")));
    agent.env("VAULT_ADDR", &bao.addr);
    agent.env("VAULT_TOKEN", "root");
    agent.start();
    let addr = metrics_addr(&agent.log());
    let ready = get(addr, "/readyz");
    assert_eq!(ready.status, 200, "{}\n{}", ready.body, agent.log());

    bao.signal("STOP");
    let stopped = std::time::Instant::now();
    let mut last = String::new();
    wait_for("/readyz to turn 503", Duration::from_secs(60), || {
        let r = get(addr, "/readyz");
        last = r.body.clone();
        r.status == 503
    });
    eprintln!("unready {:?} after SIGSTOP", stopped.elapsed());
    assert!(
        last.starts_with("not ready:")
            && last.contains("transit")
            && last.trim().lines().count() == 1,
        "one line naming the backend: {last}"
    );
    assert_eq!(
        scrape(addr).value("keyward_backend_up", &[("backend", "transit")]),
        Some(0.0)
    );
    assert_eq!(get(addr, "/healthz").status, 200, "alive while unready");

    bao.signal("CONT");
    let resumed = std::time::Instant::now();
    wait_for("/readyz to turn 200 again", Duration::from_secs(60), || {
        get(addr, "/readyz").status == 200
    });
    eprintln!("ready {:?} after SIGCONT", resumed.elapsed());
    assert_eq!(
        scrape(addr).value("keyward_backend_up", &[("backend", "transit")]),
        Some(1.0)
    );
    agent.stop();
}
