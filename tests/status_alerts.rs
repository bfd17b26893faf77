//! End-to-end: expiry alert levels. Certificates issued with short validities (one
//! that really expires, 5, 20 and 60 days) show CRITICAL, ERROR, WARNING and OK in
//! `keyward status --json`, custom thresholds move them, and the agent rates the same
//! inventory under its `[alerts]` thresholds in its metrics and log.

mod agent_common;
mod common;
mod metrics_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use agent_common::{Agent, wait_for};
use common::{keyward_fails, keyward_ok, root_ca, software_key};
use metrics_common::{metrics_addr, plain, scrape};
use tempfile::TempDir;

/// A root CA with certificates `expired` (1 s, waited out), `five`, `twenty`, `sixty`.
fn state_with_short_certificates(dir: &Path) -> std::path::PathBuf {
    let state = root_ca(dir, &software_key(dir), "ecdsa-p256");
    for (name, validity) in [
        ("expired", "1s"),
        ("five", "5d"),
        ("twenty", "20d"),
        ("sixty", "60d"),
    ] {
        let out = dir.join(name);
        keyward_ok(
            &state,
            &[
                "issue",
                "--name",
                name,
                "--validity",
                validity,
                "--out",
                out.to_str().unwrap(),
            ],
        );
    }
    // Honestly expired: wait until the 1-second certificate's notAfter has passed.
    wait_for(
        "the 1s certificate to expire",
        Duration::from_secs(30),
        || {
            levels(&state, &[])
                .get("expired")
                .is_some_and(|l| l == "CRITICAL")
        },
    );
    state
}

/// `keyward status --json ARGS` as name (or role for CA certificates) -> level.
fn levels(state: &Path, args: &[&str]) -> BTreeMap<String, String> {
    let mut all = vec!["status", "--json"];
    all.extend_from_slice(args);
    let report: serde_json::Value = serde_json::from_str(&keyward_ok(state, &all)).unwrap();
    report["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap();
            let key = if name.is_empty() {
                c["role"].as_str().unwrap()
            } else {
                name
            };
            (key.to_string(), c["level"].as_str().unwrap().to_string())
        })
        .collect()
}

fn expect(state: &Path, args: &[&str], want: &[(&str, &str)]) {
    let got = levels(state, args);
    for (name, level) in want {
        assert_eq!(
            got.get(*name).map(String::as_str),
            Some(*level),
            "{name} with {args:?}: {got:?}"
        );
    }
}

#[test]
fn status_levels_follow_days_left_and_thresholds() {
    let tmp = TempDir::new().unwrap();
    let state = state_with_short_certificates(tmp.path());
    expect(
        &state,
        &[],
        &[
            ("root", "OK"),
            ("expired", "CRITICAL"),
            ("five", "ERROR"),
            ("twenty", "WARNING"),
            ("sixty", "OK"),
        ],
    );
    expect(
        &state,
        &["--warning", "90d", "--error", "30d"],
        &[
            ("expired", "CRITICAL"),
            ("five", "ERROR"),
            ("twenty", "ERROR"),
            ("sixty", "WARNING"),
        ],
    );
    expect(
        &state,
        &["--warning", "10d", "--error", "3d"],
        &[
            ("expired", "CRITICAL"),
            ("five", "WARNING"),
            ("twenty", "OK"),
            ("sixty", "OK"),
        ],
    );
    let text = keyward_ok(&state, &["status", "--warning", "90d", "--error", "30d"]);
    assert!(
        text.lines()
            .any(|l| l.contains("sixty") && l.trim_end().ends_with("WARNING")),
        "{text}"
    );
    keyward_fails(
        &state,
        &["status", "--error", "36h"],
        "whole number of days",
    );
    keyward_fails(
        &state,
        &["status", "--warning", "5d"],
        "must not be longer than the warning",
    );
}

#[test]
fn agent_rates_the_inventory_under_its_alert_thresholds() {
    let tmp = TempDir::new().unwrap();
    let state = state_with_short_certificates(tmp.path());
    assert_eq!(state, tmp.path().join("state"));
    let key = software_key(tmp.path());
    let config =
        "[metrics]\nlisten = \"127.0.0.1:0\"\n\n[alerts]\nwarning = \"90d\"\nerror = \"30d\"\n";
    let mut agent = Agent::with_ca_key(tmp, &key, config);
    agent.start();
    let addr = metrics_addr(&agent.log());
    let level = |name: &str| {
        scrape(addr).value(
            "keyward_certificate_alert_level",
            &[("role", "issued"), ("name", name)],
        )
    };
    wait_for(
        "the inventory in the metrics",
        Duration::from_secs(30),
        || level("sixty").is_some(),
    );
    assert_eq!(level("expired"), Some(3.0), "CRITICAL");
    assert_eq!(level("five"), Some(2.0), "ERROR");
    assert_eq!(level("twenty"), Some(2.0), "ERROR under error = 30d");
    assert_eq!(level("sixty"), Some(1.0), "WARNING under warning = 90d");
    let m = scrape(addr);
    let expired = m
        .value("keyward_certificate_expiry_seconds", &[("name", "expired")])
        .unwrap();
    assert!(expired <= 0.0, "expired: {expired}");
    let log = plain(&agent.log());
    for (name, level) in [
        ("expired", "CRITICAL"),
        ("sixty", "WARNING"),
        ("twenty", "ERROR"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("level=\"{level}\""))
                    && l.contains(&format!("certificate=issued {name}"))
                    && l.contains("days_left=")),
            "no {level} event for {name}:\n{log}"
        );
    }
    agent.stop();
}
