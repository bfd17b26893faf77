//! End-to-end: `/readyz` follows the CA key's backend. The agent keeps its CA key in
//! OpenBao Transit on a private dev server this test starts; stopping that server
//! (SIGSTOP: dev mode keeps keys only in memory, so it is paused, not restarted) makes
//! the agent unready, resuming it makes the agent ready again.

mod agent_common;
mod backend_common;
mod common;
mod metrics_common;

use std::process::Command;
use std::time::Duration;

use agent_common::*;
use backend_common::PrivateServer;
use common::{keyward_bin, unique};
use metrics_common::{get, metrics_addr, scrape, with_metrics};
use tempfile::TempDir;

#[test]
fn readyz_follows_the_transit_backend() {
    let bao = PrivateServer::bao();
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
