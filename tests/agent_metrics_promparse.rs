//! End-to-end: the agent's `/metrics` text, read by a Prometheus text parser nobody here
//! wrote (the Prometheus project's Python client, `prometheus_client.parser`, from the
//! venv of scripts/pyclients.sh): every sample belongs to a declared family of the right
//! type, label values with quotes come back intact, and it reads the same samples as
//! the tests' own strict parser (tests/metrics_common/prom.rs).

mod agent_common;
mod common;
mod metrics_common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use agent_common::*;
use metrics_common::{get, metrics_addr, prom, with_metrics};
use serde_json::Value;

/// Parses stdin with `prometheus_client.parser` and prints the families as JSON
/// (values as Python's repr, so `inf` and `nan` survive).
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = []
for f in text_string_to_metric_families(sys.stdin.read()):
    families.append({
        "name": f.name, "type": f.type, "help": f.documentation,
        "samples": [{"name": s.name, "labels": s.labels, "value": repr(s.value)} for s in f.samples],
    })
json.dump(families, sys.stdout)
"#;

/// The families `text` holds, as `prometheus_client.parser` reads them.
fn python_parse(text: &str) -> Vec<Value> {
    let python = std::env::var("KEYWARD_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "KEYWARD_TEST_PYTHON not set: the venv with prometheus-client comes from \
             scripts/pyclients.sh; run the tests through scripts/with-backends.sh or \
             scripts/test.sh"
        )
    });
    let mut child = Command::new(&python)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client.parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("the parser's JSON")
}

#[test]
fn the_prometheus_python_parser_reads_the_exposition() {
    let mut agent = Agent::new(&with_metrics(&entry("promparse", 0, "1h", "")));
    let config = std::fs::read_to_string(&agent.config).unwrap();
    let quoted = config.replacen(
        "subject = \"CN=agent test root\"",
        r#"subject = 'CN=agent "quoted" \\ root'"#,
        1,
    );
    assert_ne!(config, quoted, "the config names the root's subject");
    std::fs::write(&agent.config, quoted).unwrap();
    agent.start();
    let addr = metrics_addr(&agent.log());

    // One issuance (the SVID fetched) and one refusal (a caller no entry matches).
    let fetched = fetch_as(0, &agent.socket, &agent.out_dir("root", 0));
    assert!(fetched.status.success(), "{fetched:?}");
    let refused = fetch_as(NOBODY, &agent.socket, &agent.out_dir("nobody", NOBODY));
    assert!(!refused.status.success(), "nobody must be refused");
    let mut body = String::new();
    wait_for(
        "the SVID and the root among the certificates",
        Duration::from_secs(30),
        || {
            body = get(addr, "/metrics").body;
            body.contains("role=\"svid\"") && body.contains("role=\"root\"")
        },
    );

    let families = python_parse(&body);
    let kind = |name: &str| {
        families
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no family {name} in {families:#?}"))
    };
    for (name, type_) in [
        // The parser names a counter's family without `_total`, as OpenMetrics does.
        ("keyward_svid_issuance", "counter"),
        ("keyward_ca_sign_operations", "counter"),
        ("keyward_ca_sign_duration_seconds", "histogram"),
        ("keyward_workload_api_denied", "counter"),
        ("keyward_workload_api_open_streams", "gauge"),
        ("keyward_backend_up", "gauge"),
        ("keyward_ready", "gauge"),
        ("keyward_certificate_expiry_seconds", "gauge"),
        ("keyward_certificate_alert_level", "gauge"),
        ("keyward_certificates", "gauge"),
    ] {
        let f = kind(name);
        assert_eq!(f["type"], type_, "{name}");
        assert!(
            f["help"].as_str().is_some_and(|h| h.ends_with('.')),
            "{name} has its help text: {f}"
        );
    }
    // The parser makes a sample outside any declared family an untyped family of its own.
    assert!(
        families.iter().all(|f| f["type"] != "untyped"),
        "a sample outside its family: {families:#?}"
    );

    let root_subject = kind("keyward_certificate_expiry_seconds")["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["labels"]["role"] == "root")
        .map(|s| s["labels"]["subject"].as_str().unwrap().to_string())
        .expect("the root's expiry");
    let root = keyward_core::check::pem_to_ders(&agent.root_pem()).unwrap();
    let subject = keyward_core::check::summarize(&root[0]).unwrap().subject;
    assert!(
        subject.contains('"') && subject.contains('\\'),
        "the root's subject as the agent writes it has quotes and backslashes: {subject}"
    );
    assert_eq!(
        root_subject, subject,
        "quotes and backslashes survive the label escaping"
    );

    // Both parsers read the same samples with the same values.
    let ours = prom::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    let mut count = 0;
    for f in &families {
        for s in f["samples"].as_array().unwrap() {
            let name = s["name"].as_str().unwrap();
            let labels: Vec<(&str, &str)> = s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
                .collect();
            let value: f64 = s["value"].as_str().unwrap().parse().unwrap();
            let exact = ours
                .families
                .values()
                .flat_map(|f| &f.samples)
                .find(|o| {
                    o.name == name
                        && o.labels.len() == labels.len()
                        && labels
                            .iter()
                            .all(|(k, v)| o.labels.get(*k).map(String::as_str) == Some(*v))
                })
                .unwrap_or_else(|| panic!("{name}{labels:?} is not in our parse"));
            assert_eq!(exact.value, value, "{name}{labels:?}");
            count += 1;
        }
    }
    let ours_count: usize = ours.families.values().map(|f| f.samples.len()).sum();
    assert_eq!(count, ours_count, "the same number of samples");
    agent.stop();
}
