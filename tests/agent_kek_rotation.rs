//! End-to-end: `[[kek]]`, key-encryption keys the agent rotates on a schedule. For a
//! software KEK and an OpenBao Transit KEK at `rotate_every = "2s"` the version
//! advances on its own; a data key wrapped through the socket before a rotation still
//! unwraps after it, and one made after it names the new version; the audit log has a
//! `kek_rotated` record per rotation and no key material. The time of the last rotation
//! survives restarts (a restart never rotates early, a rotation missed while the agent
//! was down happens at start), and bad `[[kek]]` values are refused at start with the
//! field named and nothing written. A rotation that fails is audited, counted and
//! retried until it succeeds.

mod agent_common;
mod common;
mod keys_common;
mod metrics_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_common::*;
use common::{keyward_fails, mode, required_env, snapshot, unique, vault_api};
use keys_common::*;
use metrics_common::{get, metrics_addr, with_metrics};
use tempfile::TempDir;

/// How long a rotation due every 2 s may take to show (liveness, not speed).
const ROTATION_SEEN_WITHIN: Duration = Duration::from_secs(60);

/// An entry for root granting `kek` for data keys, and `[[kek]]` rotating it `every`.
fn config(kek: &str, every: &str) -> String {
    let keys = format!(
        "keys = [{{ name = \"kek\", key = \"{kek}\", ops = [\"generate-data-key\", \"decrypt\"] }}]"
    );
    format!(
        "{}\n[[kek]]\nkey = \"{kek}\"\nrotate_every = \"{every}\"\n",
        entry("app", 0, "1h", &keys)
    )
}

/// The KEK version a wrapped blob names (see `keyward_core::wrap::blob`).
fn blob_version(blob: &[u8]) -> u32 {
    assert_eq!(&blob[..4], b"KWRP", "not a wrapped blob");
    let n = usize::from(blob[6]);
    u32::from_be_bytes(blob[7 + n..11 + n].try_into().unwrap())
}

/// A data key through the socket: (plaintext, wrapped).
fn audit_log(agent: &Agent) -> String {
    std::fs::read_to_string(agent.state.join("audit.jsonl")).unwrap_or_default()
}

/// The `kek_rotated` records of the audit log.
fn rotations(agent: &Agent) -> Vec<String> {
    audit_log(agent)
        .lines()
        .filter(|l| l.contains("\"kek_rotated\""))
        .map(str::to_string)
        .collect()
}

fn record_path(agent: &Agent) -> PathBuf {
    agent.state.join("agent/kek-rotations.json")
}

/// The agent's record of the last rotation of `kek`.
fn last_rotation(agent: &Agent, kek: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(record_path(agent)).expect("kek-rotations.json");
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["keys"][kek].clone()
}

/// The agent rotates `kek` every 2 s; `version` reads its version from the backend.
fn rotates_on_schedule(kek: &str, version: impl Fn() -> u32) {
    let mut agent = Agent::new(&config(kek, "2s"));
    generate(&agent.state, kek, "aes-256");
    agent.start();
    let (plain, wrapped) = data_key(&agent, agent.dir.path(), "dk1");
    let first = blob_version(&wrapped);

    wait_for("two scheduled rotations", ROTATION_SEEN_WITHIN, || {
        rotations(&agent).len() >= 2
    });
    let rotated = rotations(&agent);
    assert!(
        rotated
            .iter()
            .all(|r| r.contains(&format!("\"key\":\"{kek}\""))),
        "{rotated:?}"
    );
    assert!(
        version() >= first + 2,
        "{kek} at {}, was {first}",
        version()
    );
    assert_eq!(
        unwrap_key(&agent, &wrapped),
        plain,
        "a data key of version {first} after rotations"
    );
    let (plain2, wrapped2) = data_key(&agent, agent.dir.path(), "dk2");
    assert!(
        blob_version(&wrapped2) >= first + 2,
        "a new data key names version {}, not the rotated one",
        blob_version(&wrapped2)
    );
    assert_eq!(unwrap_key(&agent, &wrapped2), plain2);

    let record = last_rotation(&agent, kek);
    assert!(
        record["version"].as_u64().unwrap() >= u64::from(first) + 2,
        "{record}"
    );
    assert_eq!(mode(&record_path(&agent)), 0o600);
    assert_eq!(mode(&agent.state.join("agent")), 0o700);
    let audit = audit_log(&agent);
    let b64 = |b: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b)
    };
    for secret in [&plain, &plain2] {
        assert!(!audit.contains(&b64(secret)), "a data key in the audit log");
    }
    agent.stop();
}

#[test]
fn a_software_kek_rotates_on_schedule_and_old_data_still_decrypts() {
    let keys = TempDir::new().unwrap();
    let dir = keys.path().join("kek");
    let kek = format!("file:{}", dir.display());
    rotates_on_schedule(&kek, || software_version(&dir));
}

#[test]
fn a_transit_kek_rotates_on_schedule_and_old_data_still_decrypts() {
    required_env("KEYWARD_TEST_VAULT_ADDR");
    let name = unique("kw-kek-sched");
    rotates_on_schedule(&format!("transit:{name}"), || transit_version(&name));
}

/// The newest version file of a software KEK directory.
fn software_version(dir: &Path) -> u32 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_prefix('v')?.strip_suffix(".key")?.parse().ok()
        })
        .max()
        .unwrap()
}

/// Transit's latest version of key `name`.
fn transit_version(name: &str) -> u32 {
    let body = vault_api("GET", &format!("transit/keys/{name}"), None);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    u32::try_from(v["data"]["latest_version"].as_u64().unwrap()).unwrap()
}

/// Lets a started agent run long enough that a rotation wrongly due at start would
/// have happened (it runs at once); the caller checks that none did.
fn settle() {
    std::thread::sleep(Duration::from_secs(3));
}

#[test]
fn a_restart_never_rotates_early_and_a_missed_rotation_happens_at_start() {
    let keys = TempDir::new().unwrap();
    let dir = keys.path().join("kek");
    let kek = format!("file:{}", dir.display());
    let mut agent = Agent::new(&config(&kek, "1h"));
    generate(&agent.state, &kek, "aes-256");
    agent.start();
    wait_for("the first sighting recorded", ROTATION_SEEN_WITHIN, || {
        record_path(&agent).exists()
    });
    let seen = last_rotation(&agent, &kek);
    assert!(seen["at"].is_string(), "{seen}");
    agent.stop();

    agent.start();
    settle();
    agent.stop();
    assert_eq!(software_version(&dir), 1, "a restart rotated early");
    assert_eq!(
        last_rotation(&agent, &kek),
        seen,
        "a restart moved the schedule"
    );
    assert!(rotations(&agent).is_empty());

    // The agent was "down" for two hours: the rotation that fell due happens at start.
    let text = std::fs::read_to_string(record_path(&agent)).unwrap();
    let at = seen["at"].as_str().unwrap();
    let earlier = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    let earlier = earlier
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    std::fs::write(record_path(&agent), text.replace(at, &earlier)).unwrap();
    agent.start();
    wait_for("the missed rotation", ROTATION_SEEN_WITHIN, || {
        rotations(&agent).len() == 1
    });
    assert_eq!(software_version(&dir), 2);
    agent.stop();

    agent.start();
    settle();
    agent.stop();
    assert_eq!(
        software_version(&dir),
        2,
        "a restart after a rotation rotated early"
    );
    assert_eq!(rotations(&agent).len(), 1);
}

#[test]
fn bad_kek_values_are_refused_with_the_field_named_and_nothing_written() {
    let keys = TempDir::new().unwrap();
    let kek = format!("file:{}", keys.path().join("kek").display());
    let agent = Agent::new("");
    let config = agent.config.to_str().unwrap().to_string();
    let before = snapshot(&agent.state);
    let cases: [(String, &str); 7] = [
        (
            format!("[[kek]]\nkey = \"{kek}\"\nrotate_every = \"0s\"\n"),
            "rotate_every: invalid duration '0s': must be greater than zero",
        ),
        (
            format!("[[kek]]\nkey = \"{kek}\"\nrotate_every = \"30 days\"\n"),
            "rotate_every: invalid duration '30 days'",
        ),
        (
            format!("[[kek]]\nkey = \"{kek}\"\nrotate_every = \"200y\"\n"),
            "rotate_every: invalid duration '200y': longer than 100 years",
        ),
        (
            format!("[[kek]]\nkey = \"{kek}\"\n"),
            "missing field `rotate_every`",
        ),
        (
            "[[kek]]\nkey = \"nope:x\"\nrotate_every = \"30d\"\n".to_string(),
            "key: invalid key URI",
        ),
        (
            "[[kek]]\nkey = \"transit:k?version=2\"\nrotate_every = \"30d\"\n".to_string(),
            "key: a rotated key-encryption key is used at all its versions",
        ),
        (
            format!(
                "[[kek]]\nkey = \"{kek}\"\nrotate_every = \"30d\"\n[[kek]]\nkey = \"{kek}\"\nrotate_every = \"1d\"\n"
            ),
            "has another [[kek]] already",
        ),
    ];
    for (section, needle) in &cases {
        agent.write_config(section);
        let line = keyward_fails(&agent.state, &["agent", "--config", &config], needle);
        assert!(
            line.contains(&format!("{config}:")),
            "no file position: {line}"
        );
        assert_eq!(
            snapshot(&agent.state),
            before,
            "{needle}: something was written"
        );
        assert!(
            !keys.path().join("kek").exists(),
            "{needle}: the key was made"
        );
    }
    assert!(!agent.socket.exists(), "nothing was served");
}

/// The `keyward_key_operations_total` count of scheduled rotations with `outcome`.
fn counted_rotations(agent: &Agent, outcome: &str) -> u64 {
    let body = get(metrics_addr(&agent.log()), "/metrics").body;
    body.lines()
        .filter(|l| l.starts_with("keyward_key_operations_total{"))
        .filter(|l| {
            l.contains("op=\"kek-rotate\"") && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_failing_rotation_is_audited_counted_and_retried_until_it_works() {
    let keys = TempDir::new().unwrap();
    let kek = format!("file:{}", keys.path().join("kek").display());
    // The key does not exist yet: every rotation fails until it is made.
    let mut agent = Agent::new(&with_metrics(&config(&kek, "1s")));
    agent.start();
    wait_for("two failed attempts", ROTATION_SEEN_WITHIN, || {
        audit_log(&agent).matches("\"kek_rotation_failed\"").count() >= 2
    });
    assert!(rotations(&agent).is_empty());
    assert!(counted_rotations(&agent, "failure") >= 2);
    let failed = audit_log(&agent);
    let line = failed
        .lines()
        .find(|l| l.contains("\"kek_rotation_failed\""))
        .unwrap();
    assert!(line.contains(&format!("\"key\":\"{kek}\"")), "{line}");
    assert!(line.contains("\"error\":"), "{line}");

    generate(&agent.state, &kek, "aes-256");
    wait_for("the retried rotation", ROTATION_SEEN_WITHIN, || {
        !rotations(&agent).is_empty()
    });
    assert!(counted_rotations(&agent, "success") >= 1);
    agent.stop();
}
