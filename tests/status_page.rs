//! End-to-end: the agent's HTML status page, rendered by headless Chromium. The DOM
//! lists the CA chain, the workload SVID and the state directory's issued
//! certificate; a screenshot is kept as target/test-artifacts/status-page.png.

mod agent_common;
mod common;
mod metrics_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agent_common::*;
use common::keyward_ok;
use metrics_common::{get, metrics_addr, with_metrics};
use tempfile::TempDir;

/// Chromium's binary (Debian's `chromium`, installed by scripts/test.sh).
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let p = Path::new(dir).join(name);
            if p.exists() {
                return p;
            }
        }
    }
    panic!("chromium not found: run the tests through scripts/test.sh (it installs chromium)");
}

/// Runs headless Chromium with a fresh profile and `args`; returns stdout.
fn headless(args: &[&str]) -> String {
    let profile = TempDir::new().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// target/test-artifacts, next to the test executable's profile directory.
fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .expect("target dir above target/PROFILE/deps/test");
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn status_page_renders_the_chain_and_every_certificate() {
    let mut agent = Agent::new(&with_metrics(&entry("page-test", 0, "1h", "")));
    agent.start();
    let addr = metrics_addr(&agent.log());
    let svc = agent.dir.path().join("svc");
    keyward_ok(
        &agent.state,
        &[
            "issue",
            "--name",
            "web-frontend",
            "--validity",
            "20d",
            "--out",
            svc.to_str().unwrap(),
        ],
    );
    wait_for(
        "the issued certificate on the page",
        Duration::from_secs(30),
        || get(addr, "/").body.contains("web-frontend"),
    );
    let page = get(addr, "/");
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );
    assert!(
        !page.body.contains("<script")
            && !page.body.contains("src=\"http")
            && !page.body.contains("href=\"http"),
        "no script, no external asset"
    );
    assert!(!page.body.contains("PRIVATE KEY"), "no key material");

    let url = format!("http://{addr}/");
    let dom = headless(&["--dump-dom", &url]);
    let id = format!("spiffe://{TRUST_DOMAIN}/page-test");
    for needle in [
        "id=\"ca-chain\"",
        "CN=agent test root",
        "id=\"certificates\"",
        id.as_str(),
        "web-frontend",
        "id=\"timeline\"",
        "class=\"lvl WARNING\"",
        "ready",
    ] {
        assert!(
            dom.contains(needle),
            "the rendered page lacks {needle}:\n{dom}"
        );
    }

    let shot = artifacts_dir().join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    headless(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1280,1600",
        &url,
    ]);
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(png.len() > 10_000, "a real rendering, {} bytes", png.len());
    agent.stop();
}
