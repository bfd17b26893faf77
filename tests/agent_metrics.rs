//! End-to-end: the agent's `[metrics]` endpoint. `/metrics` parses as Prometheus text
//! and counts what happened (an issuance, a refused caller, an open stream), `/healthz`
//! and `/readyz` answer, and a non-loopback listen address is refused.

mod agent_common;
mod common;
mod metrics_common;

use std::process::{Command, Stdio};
use std::time::Duration;

use agent_common::*;
use common::{keyward, keyward_bin, snapshot};
use metrics_common::{get, metrics_addr, scrape, with_metrics};

#[test]
fn metrics_count_issuance_refusals_and_open_streams() {
    let mut agent = Agent::new(&with_metrics(&entry("metrics-test", 0, "1h", "")));
    agent.start();
    let addr = metrics_addr(&agent.log());

    let health = get(addr, "/healthz");
    assert_eq!((health.status, health.body.trim()), (200, "ok"));
    let ready = get(addr, "/readyz");
    assert_eq!(ready.status, 200, "/readyz: {}", ready.body);

    // A caller no entry matches is refused and counted.
    let refused = fetch_as(NOBODY, &agent.socket, &agent.out_dir("nobody", NOBODY));
    assert!(!refused.status.success(), "nobody must be refused");

    // A watching fetch holds two streams open: its SVIDs, and the bundles whose
    // messages carry the CRLs (the `spiffe` crate it reads SVIDs with drops them).
    let out = agent.out_dir("watch", 0);
    let mut watcher = Command::new(keyward_bin())
        .args(["fetch", "--watch", "--socket"])
        .arg(&agent.socket)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start keyward fetch --watch");
    wait_for("the watcher's first SVID", Duration::from_secs(30), || {
        out.join("cert.pem").exists()
    });
    let m = scrape(addr);
    let open = m.value("keyward_workload_api_open_streams", &[]);
    assert_eq!(open, Some(2.0), "two streams open");

    for (family, kind) in [
        ("keyward_svid_issuance_total", "counter"),
        ("keyward_ca_sign_duration_seconds", "histogram"),
        ("keyward_workload_api_denied_total", "counter"),
        ("keyward_workload_api_open_streams", "gauge"),
        ("keyward_backend_up", "gauge"),
        ("keyward_certificate_expiry_seconds", "gauge"),
        ("keyward_certificate_alert_level", "gauge"),
        ("keyward_ready", "gauge"),
    ] {
        assert_eq!(m.family(family).kind, kind, "{family}");
        assert!(!m.family(family).help.is_empty(), "{family} has help");
    }
    let issued = m
        .value(
            "keyward_svid_issuance_total",
            &[("backend", "file"), ("outcome", "success")],
        )
        .expect("issuances counted");
    assert!(issued >= 1.0, "issued {issued}");
    let denied = m
        .value(
            "keyward_workload_api_denied_total",
            &[("reason", "no_matching_entry")],
        )
        .expect("refusal counted");
    assert!(denied >= 1.0);
    let signs = m
        .value(
            "keyward_ca_sign_duration_seconds_count",
            &[("backend", "file")],
        )
        .expect("signing latency observed");
    assert!(
        signs >= issued,
        "every issuance signs once: {signs} < {issued}"
    );
    let sum = m
        .value(
            "keyward_ca_sign_duration_seconds_sum",
            &[("backend", "file")],
        )
        .unwrap();
    assert!(sum > 0.0 && sum < signs * 10.0, "sane latency sum {sum}");
    assert_eq!(
        m.value("keyward_backend_up", &[("backend", "file")]),
        Some(1.0)
    );
    assert_eq!(m.value("keyward_ready", &[]), Some(1.0));

    let id = format!("spiffe://{TRUST_DOMAIN}/metrics-test");
    let svid_left = m
        .value(
            "keyward_certificate_expiry_seconds",
            &[("role", "svid"), ("spiffe_id", &id)],
        )
        .expect("the SVID's expiry");
    assert!(
        svid_left > 0.0 && svid_left <= 3600.0 + 60.0,
        "a 1h SVID: {svid_left}"
    );
    let root_left = m
        .value("keyward_certificate_expiry_seconds", &[("role", "root")])
        .expect("the root's expiry");
    assert!(
        root_left > 9.0 * 365.0 * 86_400.0,
        "a 10y root: {root_left}"
    );
    assert_eq!(
        m.value(
            "keyward_certificate_alert_level",
            &[("role", "svid"), ("spiffe_id", &id)]
        ),
        Some(0.0),
        "a fresh SVID is OK"
    );

    let _ = watcher.kill();
    let _ = watcher.wait();
    wait_for("the stream to close", Duration::from_secs(30), || {
        scrape(addr).value("keyward_workload_api_open_streams", &[]) == Some(0.0)
    });
    assert_eq!(get(addr, "/nothing").status, 404);
    agent.stop();
}

#[test]
fn metrics_on_a_non_loopback_address_are_refused() {
    let agent = Agent::new("[metrics]\nlisten = \"0.0.0.0:9464\"\n");
    let before = snapshot(&agent.state);
    let out = keyward(
        &agent.state,
        &["agent", "--config", agent.config.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("agent.toml:") && errors[0].contains("not a loopback address"),
        "{}",
        errors[0]
    );
    assert_eq!(snapshot(&agent.state), before, "nothing changed");
}
