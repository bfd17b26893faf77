//! End-to-end: the hash-chained audit log written by the CLI and the agent, and
//! `keyward audit verify` naming the first bad line of a tampered log.

mod agent_common;
mod common;
mod inventory_common;

use std::path::{Path, PathBuf};

use agent_common::*;
use common::*;
use serde_json::Value;
use tempfile::TempDir;

fn events(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

/// `keyward audit verify FILES...` (the state directory plays no part).
fn verify_args(files: &[&Path]) -> Vec<String> {
    let mut args = vec!["audit".to_string(), "verify".to_string()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    args
}

fn verify_ok(files: &[&Path]) -> String {
    let args = verify_args(files);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    keyward_ok(Path::new("/nonexistent-state"), &args)
}

fn verify_fails(files: &[&Path], needle: &str) -> String {
    let args = verify_args(files);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    keyward_fails(Path::new("/nonexistent-state"), &args, needle)
}

/// A state directory after key generate, ca init and two issues; returns (tmp, state).
fn cli_run() -> (TempDir, PathBuf) {
    let tmp = TempDir::new().unwrap();
    let state = root_ca(tmp.path(), &software_key(tmp.path()), "ecdsa-p256");
    for name in ["api", "db"] {
        let out = tmp.path().join(name);
        keyward_ok(
            &state,
            &[
                "issue",
                "--name",
                name,
                "--dns",
                &format!("{name}.internal"),
                "--out",
                out.to_str().unwrap(),
            ],
        );
    }
    (tmp, state)
}

/// A copy of the state's log and head in a fresh directory, with its lines.
fn copy_log(state: &Path, dir: &Path) -> (PathBuf, Vec<String>) {
    std::fs::create_dir_all(dir).unwrap();
    let log = dir.join("audit.jsonl");
    std::fs::copy(state.join("audit.jsonl"), &log).unwrap();
    std::fs::copy(state.join("audit.jsonl.head"), dir.join("audit.jsonl.head")).unwrap();
    let lines = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    (log, lines)
}

fn write_lines(p: &Path, lines: &[String]) {
    std::fs::write(
        p,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

/// `keyward issue` of a certificate `x` into `dir/x`, which must fail with `needle`.
fn issue_fails(state: &Path, dir: &Path, needle: &str) {
    let out = dir.join("x");
    keyward_fails(
        state,
        &[
            "issue",
            "--name",
            "x",
            "--dns",
            "x.internal",
            "--out",
            out.to_str().unwrap(),
        ],
        needle,
    );
}

#[test]
fn cli_operations_are_recorded_in_one_intact_chain() {
    let (_tmp, state) = cli_run();
    let log = state.join("audit.jsonl");
    assert_eq!(mode(&log), 0o600);
    let ev = events(&log);
    assert_eq!(
        names(&ev),
        [
            "key_generated",
            "ca_root_created",
            "certificate_issued",
            "certificate_issued"
        ]
    );
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
        assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e}");
    }
    let issued = &ev[2]["fields"];
    assert_eq!(issued["subject"], "CN=api");
    assert!(
        issued["sans"]
            .as_array()
            .unwrap()
            .contains(&Value::from("DNS:api.internal")),
        "{issued}"
    );
    assert!(
        issued["issuer"].as_str().unwrap().contains("Test Root"),
        "{issued}"
    );
    assert!(
        issued["signing_key"].as_str().unwrap().starts_with("file:"),
        "{issued}"
    );
    let inventory = inventory_common::records(&state);
    assert_eq!(
        issued["serial"].as_str().unwrap().to_lowercase(),
        inventory[0]["serial_hex"].as_str().unwrap().to_lowercase()
    );
    assert_eq!(issued["caller"]["uid"], 0);
    assert!(issued["caller"]["pid"].as_u64().unwrap() > 0, "{issued}");
    let out = verify_ok(&[&log]);
    assert_eq!(
        out.lines().next(),
        Some("ok: 4 records, chain intact"),
        "{out}"
    );
}

#[test]
fn each_kind_of_tampering_is_named_at_its_line() {
    let (tmp, state) = cli_run();

    // An edited field: the line's own hash no longer matches.
    let (log, mut lines) = copy_log(&state, &tmp.path().join("edited"));
    lines[2] = lines[2].replace("CN=api", "CN=evil");
    write_lines(&log, &lines);
    let e = verify_fails(&[&log], "line 3:");
    assert!(
        e.contains(&format!("audit log {} line 3:", log.display())),
        "{e}"
    );
    assert!(e.contains("edited"), "{e}");

    // A removed line: the gap is at its place.
    let (log, mut lines) = copy_log(&state, &tmp.path().join("removed"));
    lines.remove(1);
    write_lines(&log, &lines);
    let e = verify_fails(&[&log], "line 2:");
    assert!(e.contains("seq 2 is missing"), "{e}");

    // Two lines swapped: the first of them is out of order.
    let (log, mut lines) = copy_log(&state, &tmp.path().join("swapped"));
    lines.swap(1, 2);
    write_lines(&log, &lines);
    let e = verify_fails(&[&log], "line 2:");
    assert!(e.contains("out of order") && e.contains("reordered"), "{e}");

    // The tail cut off: the head file records more.
    let (log, mut lines) = copy_log(&state, &tmp.path().join("cut"));
    lines.truncate(2);
    write_lines(&log, &lines);
    let e = verify_fails(&[&log], "line 3:");
    assert!(
        e.contains("records seq 3 to 4 are missing from the end"),
        "{e}"
    );
    // ... and the next command refuses to continue the chain, changing nothing.
    let before = snapshot(&state);
    std::fs::copy(&log, state.join("audit.jsonl")).unwrap();
    let cut_state = snapshot(&state);
    issue_fails(&state, tmp.path(), "ends at seq 2");
    assert_eq!(snapshot(&state), cut_state);
    assert_ne!(before, cut_state);
}

#[test]
fn a_pin_given_as_pin_value_never_reaches_the_log_and_cannot_make_a_ca() {
    required_env("SOFTHSM2_CONF");
    let tmp = TempDir::new().unwrap();
    let (token, pin_file) = softhsm_token(tmp.path(), "kw-audit");
    let pin = std::fs::read_to_string(&pin_file).unwrap();
    let module = required_env("KEYWARD_TEST_PKCS11_MODULE");
    let base = format!("pkcs11:token={token};object=root?module-path={module}");
    let with_value = format!("{base}&pin-value={pin}");
    let state = tmp.path().join("state");
    common::generate_key(&state, &with_value, "ecdsa-p256");
    // A CA records its key URI, never a PIN: with pin-value, every later command would
    // find no PIN. `ca init` refuses, naming what to use, and changes nothing.
    let before = snapshot(&state);
    let err = keyward_fails(
        &state,
        &[
            "ca",
            "init",
            "--key",
            &with_value,
            "--subject",
            "CN=pin root",
        ],
        "pin-source=file:",
    );
    assert!(err.contains("pin-source=env:"), "{err}");
    assert!(!err.contains(&pin), "the PIN is in the error: {err}");
    assert_eq!(
        snapshot(&state),
        before,
        "a refused ca init changed the state"
    );
    // The same key with a pin-source makes a CA that later commands can use.
    let with_source = format!("{base}&pin-source=file:{}", pin_file.display());
    keyward_ok(
        &state,
        &[
            "ca",
            "init",
            "--key",
            &with_source,
            "--subject",
            "CN=pin root",
        ],
    );
    let out = tmp.path().join("svc");
    common::issue_named(&state, "svc", &out);
    openssl_verify(&out);
    keyward_fails(
        &state,
        &["ca", "intermediate", "--key", &with_value],
        "pin-source=file:",
    );

    let text = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    assert_eq!(
        names(&events(&state.join("audit.jsonl"))),
        ["key_generated", "ca_root_created", "certificate_issued"],
        "{text}"
    );
    assert!(text.contains(&format!("token={token}")), "{text}");
    assert!(!text.contains(&pin), "the PIN is in the audit log: {text}");
    assert!(!text.contains("pin-value"), "{text}");
    verify_ok(&[&state.join("audit.jsonl")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_records_issuance_service_and_denial_with_the_caller() {
    let mut agent = Agent::new(&entry("api", 0, "1h", ""));
    agent.start();
    let denied = agent.out_dir("denied", NOBODY);
    let o = fetch_as(NOBODY, &agent.socket, &denied);
    assert!(!o.status.success(), "nobody was served");
    let served = agent.out_dir("served", 0);
    let o = fetch_as(0, &agent.socket, &served);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    agent.stop();

    // The CLI's key generation and the agent's records share the state's log.
    let log = agent.state.join("audit.jsonl");
    let ev = events(&log);
    let n = names(&ev);
    assert_eq!(
        &n[..3],
        ["key_generated", "ca_root_created", "svid_issued"],
        "{n:?}"
    );
    let issued = &ev[2]["fields"];
    assert_eq!(issued["spiffe_id"], "spiffe://example.org/api");
    assert_eq!(issued["sans"][0], "URI:spiffe://example.org/api");
    assert_eq!(issued["signing_key"], agent.ca_key.as_str());
    let denial = ev
        .iter()
        .find(|e| e["event"] == "denied")
        .expect("a denial");
    assert_eq!(denial["fields"]["caller"]["uid"], NOBODY);
    assert!(
        denial["fields"]["caller"]["pid"].as_i64().unwrap() > 0,
        "{denial}"
    );
    assert!(
        denial["fields"]["caller"]["exe"]
            .as_str()
            .unwrap()
            .contains("keyward"),
        "{denial}"
    );
    let served = ev
        .iter()
        .find(|e| e["event"] == "svid_served")
        .expect("a service");
    assert_eq!(served["fields"]["caller"]["uid"], 0);
    assert!(
        served["fields"]["caller"]["pid"].as_i64().unwrap() > 0,
        "{served}"
    );
    assert_eq!(served["fields"]["serials"][0], issued["serial"]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    verify_ok(&[&log]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_max_bytes_rotates_the_log_and_the_chain_continues() {
    let workloads: String = (0..8)
        .map(|i| entry(&format!("w{i}"), 0, "1h", ""))
        .collect();
    let mut agent = Agent::new(&workloads);
    let log = agent.dir.path().join("audit/agent.jsonl");
    let mut config = std::fs::read_to_string(&agent.config).unwrap();
    config.push_str(&format!(
        "\n[audit]\npath = \"{}\"\nmax_bytes = 2048\nkeep = 20\n",
        log.display()
    ));
    std::fs::write(&agent.config, config).unwrap();
    agent.start();
    agent.signal("HUP");
    wait_for(
        "the reload record",
        std::time::Duration::from_secs(20),
        || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("config_reloaded")),
    );
    agent.stop();
    let mut files: Vec<PathBuf> = (1..=20)
        .rev()
        .map(|n| PathBuf::from(format!("{}.{n}", log.display())))
        .filter(|p| p.exists())
        .collect();
    assert!(files.len() >= 2, "rotated: {files:?}");
    files.push(log.clone());
    for f in &files {
        assert!(
            std::fs::metadata(f).unwrap().len() <= 2048,
            "{}",
            f.display()
        );
    }
    let all: Vec<Value> = files.iter().flat_map(|f| events(f)).collect();
    let n = names(&all);
    assert_eq!(n[0], "ca_root_created", "{n:?}");
    assert_eq!(n.iter().filter(|e| *e == "svid_issued").count(), 8, "{n:?}");
    let reload = all
        .iter()
        .find(|e| e["event"] == "config_reloaded")
        .unwrap();
    assert_eq!(reload["fields"]["applied"], true);
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let out = verify_ok(&refs);
    assert_eq!(
        out.lines().next().unwrap(),
        format!("ok: {} records, chain intact", all.len())
    );
    // Out of order (newest first), the chain breaks at the second file's first line.
    let e = verify_fails(&[&log, &files[files.len() - 2]], "line 1:");
    assert!(e.contains("oldest first"), "{e}");
}

#[test]
fn a_cut_log_without_its_head_stops_everything_until_recovered() {
    let (tmp, state) = cli_run();
    let log = state.join("audit.jsonl");
    let head = state.join("audit.jsonl.head");
    keyward_fails(&state, &["audit", "recover"], "nothing to recover");

    // The attack: the last records cut off and the head file deleted.
    let kept: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .take(2)
        .map(str::to_string)
        .collect();
    write_lines(&log, &kept);
    std::fs::remove_file(&head).unwrap();
    let recover = format!("keyward audit recover --log {}", log.display());

    let e = verify_fails(&[&log], "line 3:");
    assert!(e.contains("no head file") && e.contains(&recover), "{e}");
    let before = snapshot(&state);
    issue_fails(&state, tmp.path(), &recover);
    assert_eq!(snapshot(&state), before, "nothing changed");

    // The agent on that state refuses to start, naming the same command.
    let agent = Agent::with_ca_key(
        TempDir::new().unwrap(),
        &software_key(tmp.path()),
        &entry("api", 0, "1h", ""),
    );
    let config = std::fs::read_to_string(&agent.config).unwrap().replace(
        &agent.state.display().to_string(),
        &state.display().to_string(),
    );
    std::fs::write(&agent.config, config).unwrap();
    keyward_fails(
        &state,
        &["agent", "--config", agent.config.to_str().unwrap()],
        &recover,
    );
    assert_eq!(snapshot(&state), before, "the agent changed nothing");

    // The operator's deliberate step: the old log kept aside, a new chain that says so.
    let out = keyward_ok(&state, &["audit", "recover"]);
    assert!(out.contains("old chain: audit log"), "{out}");
    let aside: Vec<PathBuf> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("audit.jsonl.unverified-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read_to_string(aside[0].join("audit.jsonl")).unwrap(),
        kept.iter().map(|l| format!("{l}\n")).collect::<String>(),
        "the evidence is kept as it was"
    );
    let ev = events(&log);
    assert_eq!(names(&ev), ["audit_chain_restarted"]);
    assert_eq!(ev[0]["fields"]["old_last_seq"], 2);
    assert!(
        ev[0]["fields"]["reason"]
            .as_str()
            .unwrap()
            .contains("no head file"),
        "{}",
        ev[0]
    );
    assert_eq!(ev[0]["fields"]["caller"]["uid"], 0);
    verify_ok(&[&log]);
    issue_named(&state, "after", &tmp.path().join("after"));
    assert_eq!(
        names(&events(&log)),
        ["audit_chain_restarted", "certificate_issued"]
    );
    verify_ok(&[&log]);
}

#[test]
fn verify_takes_an_empty_log_and_rotated_files_without_a_head() {
    let tmp = TempDir::new().unwrap();
    let empty = tmp.path().join("audit.jsonl");
    std::fs::write(&empty, "").unwrap();
    let out = verify_ok(&[&empty]);
    assert!(out.starts_with("ok: 0 records"), "{out}");

    // A rotated file has no head: the next file's first record vouches for its end.
    let (_tmp, state) = cli_run();
    let rotated = tmp.path().join("audit.jsonl.1");
    std::fs::copy(state.join("audit.jsonl"), &rotated).unwrap();
    let out = verify_ok(&[&rotated]);
    assert!(out.contains("is a rotated file"), "{out}");
}
