//! Crash safety: rounds of issuance (`keyward issue`) and rotation (the agent preparing
//! and activating intermediates), each cut by SIGKILL at a random moment and followed
//! by a restart that checks the state directory: the CA intact, no file truncated or
//! half-written, every stored certificate verifying, the inventory matching the files,
//! and every key written by an interrupted operation either recorded or reported.
//! Then `keyward pending resolve` settles every interrupted operation: nothing stays
//! pending or reported, every recorded certificate verifies with openssl, no serial
//! appears twice and the audit chain is intact.
//! Once with a software CA, once with the CA key on SoftHSM.
//!
//! The moments are drawn from a seed printed at the start (`KEYWARD_CRASH_SEED` replays
//! a run).

mod common;
mod crash_common;
mod inventory_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use crash_common::{Moments, assert_resolved_and_clean, kill_after};

/// Rounds per CA backend; every fourth is an agent (rotation) round.
const ROUNDS: usize = 200;

/// The CA under test and what every round needs.
struct Setup {
    dir: PathBuf,
    state: PathBuf,
    ca_key: String,
    intermediate_template: String,
    /// Environment for every keyward process (the private SoftHSM configuration).
    env: Vec<(String, String)>,
    /// A SoftHSM token directory and its pristine copy, put back before each round.
    token_dir: Option<(PathBuf, PathBuf)>,
}

impl Setup {
    fn command(&self) -> Command {
        let mut c = Command::new(keyward_bin());
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Runs `keyward --state-dir STATE ARGS` to completion, asserting success.
    fn keyward_ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self
            .command()
            .arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .env_remove("KEYWARD_LOG")
            .output()
            .expect("run keyward");
        assert!(
            out.status.success(),
            "keyward {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// SoftHSM's file store rewrites token.object in place on every login, so a
    /// SIGKILL can tear the token itself (a real HSM is not at the mercy of its client
    /// process). Each round starts from the intact token; what is checked is keyward's
    /// own state.
    fn restore_token(&self) {
        if let Some((live, pristine)) = &self.token_dir {
            std::fs::remove_dir_all(live).unwrap();
            copy_dir(pristine, live);
        }
    }

    fn issue_command(&self, i: usize) -> Command {
        let mut c = self.command();
        c.arg("--state-dir")
            .arg(&self.state)
            .args([
                "issue",
                "--name",
                &format!("c{i}"),
                "--dns",
                "crash.internal",
            ])
            .arg("--out")
            .arg(self.out(i))
            .env_remove("KEYWARD_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    fn out(&self, i: usize) -> PathBuf {
        self.dir.join("out").join(i.to_string())
    }

    fn agent_config(&self) -> PathBuf {
        let path = self.dir.join("agent.toml");
        let text = format!(
            "[agent]\nsocket = \"{}/agent.sock\"\nstate_dir = \"{}\"\ntrust_domain = \"example.org\"\n\n\
             [ca]\nkey = \"{}\"\n\n\
             [ca.intermediate]\nkey = \"{}\"\nttl = \"2s\"\nrotate_before = \"1s\"\n\n\
             [[workload]]\nspiffe_id = \"spiffe://example.org/crash\"\nttl = \"1s\"\nselectors = {{ uid = {} }}\n",
            self.dir.display(),
            self.state.display(),
            self.ca_key,
            self.intermediate_template,
            current_uid(),
        );
        std::fs::write(&path, text).expect("write agent config");
        path
    }

    fn agent_command(&self, config: &Path) -> Command {
        let mut c = self.command();
        c.arg("agent")
            .arg("--config")
            .arg(config)
            .env("KEYWARD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn current_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Runs `cmd` to completion and returns how long it took.
fn timed(mut cmd: Command) -> Duration {
    let t = Instant::now();
    let status = cmd.status().expect("run keyward");
    assert!(status.success(), "an uninterrupted run failed");
    t.elapsed()
}

/// How long the agent takes from start to a connectable socket (then stopped).
fn agent_start_time(s: &Setup, config: &Path) -> Duration {
    let t = Instant::now();
    let mut child = s.agent_command(config).spawn().expect("start agent");
    wait_socket(&s.socket(), &mut child);
    let took = t.elapsed();
    stop(child);
    took
}

fn wait_socket(socket: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the agent exited with {status} before serving");
        }
        assert!(Instant::now() < deadline, "the agent did not start serving");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stop(mut child: Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
}

/// Problems `keyward status` may report after a crash: each names what was interrupted.
const REPORTED_INTERRUPTIONS: [&str; 3] = [
    "did not finish",
    "temporary file left by an interrupted write",
    "is not in the inventory (an issuance was interrupted",
];

/// The checks after each crash, as the next run (the restart) sees the directory.
fn check_after_crash(s: &Setup, round: usize, rounds_done: usize) {
    let out = s
        .command()
        .arg("--state-dir")
        .arg(&s.state)
        .args(["status", "--json"])
        .output()
        .expect("run keyward status");
    assert!(
        out.status.success(),
        "round {round}: status failed after the crash (the CA must be intact): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let problems: Vec<String> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    for p in &problems {
        assert!(
            REPORTED_INTERRUPTIONS.iter().any(|ok| p.contains(ok)),
            "round {round}: the state directory is damaged: {p}"
        );
    }
    let certs = report["certificates"].as_array().unwrap();
    assert_eq!(
        certs[0]["role"], "root",
        "round {round}: the root is listed"
    );
    for c in certs {
        assert_ne!(
            c["level"], "CRITICAL",
            "round {round}: a stored certificate fails verification: {c}"
        );
    }
    every_state_file_is_whole(&s.state, round);

    // Every key an interrupted `issue` wrote is recorded in the inventory or reported.
    let names: Vec<&str> = certs.iter().filter_map(|c| c["name"].as_str()).collect();
    for i in 0..rounds_done {
        let out = s.out(i);
        if out.join("key.pem").exists() {
            let recorded = names.contains(&format!("c{i}").as_str());
            let reported = problems
                .iter()
                .any(|p| p.contains(&format!("to {})", out.display())));
            assert!(
                recorded || reported,
                "round {round}: {} is neither in the inventory nor reported",
                out.join("key.pem").display()
            );
        }
    }
}

/// Every file keyward keeps in the state directory parses completely (JSON or PEM);
/// temporaries of interrupted writes are the only other files.
fn every_state_file_is_whole(dir: &Path, round: usize) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            every_state_file_is_whole(&path, round);
        } else if name.starts_with('.') {
            assert!(
                name == ".lock" || name.contains(".tmp-"),
                "round {round}: unexpected file {}",
                path.display()
            );
        } else if name.ends_with(".json") {
            let data = std::fs::read(&path).unwrap();
            serde_json::from_slice::<serde_json::Value>(&data)
                .unwrap_or_else(|e| panic!("round {round}: {} is torn: {e}", path.display()));
        } else if name.ends_with(".pem") {
            let data = std::fs::read(&path).unwrap();
            let blocks = pem::parse_many(&data)
                .unwrap_or_else(|e| panic!("round {round}: {} is torn: {e}", path.display()));
            assert!(
                !blocks.is_empty(),
                "round {round}: {} is empty",
                path.display()
            );
        }
    }
}

/// Intermediate keys the agent made but did not record: at most the one an interrupted
/// rotation left, which the next rotation adopts.
fn unrecorded_intermediate_keys(s: &Setup) -> usize {
    let record = s.state.join("agent/generations.json");
    let max = std::fs::read(&record)
        .ok()
        .map(|d| serde_json::from_slice::<serde_json::Value>(&d).unwrap())
        .map(|v| v["kinds"]["local_intermediate"].clone())
        .filter(|v| !v.is_null())
        .map(|v| {
            v["generations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["n"].as_u64().unwrap())
                .fold(v["last"].as_u64().unwrap_or(0), u64::max)
        })
        .unwrap_or(0);
    std::fs::read_dir(s.dir.join("inter"))
        .map(|d| {
            d.filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.strip_prefix("i-")?
                    .strip_suffix(".pem")?
                    .parse::<u64>()
                    .ok()
            })
            .filter(|n| *n > max)
            .count()
        })
        .unwrap_or(0)
}

fn crash_rounds(s: &Setup) {
    let mut moments = Moments::new();
    let config = s.agent_config();
    // Kill moments span a whole uninterrupted run (and a little past it).
    let issue_time = (0..3)
        .map(|k| timed(s.issue_command(ROUNDS + k)))
        .max()
        .unwrap();
    let agent_time = agent_start_time(s, &config);
    eprintln!("an uninterrupted issue takes {issue_time:?}; the agent serves after {agent_time:?}");
    let mut agent_rounds = 0;
    for round in 0..ROUNDS {
        s.restore_token();
        if round % 4 == 3 {
            // Let the intermediate come due now and then, so kills land in rotations.
            if agent_rounds % 3 == 0 {
                std::thread::sleep(Duration::from_millis(500));
            }
            kill_after(
                s.agent_command(&config),
                moments.below(agent_time.mul_f64(1.3)),
            );
            agent_rounds += 1;
            assert!(
                unrecorded_intermediate_keys(s) <= 1,
                "round {round}: more than one intermediate key is unrecorded"
            );
        } else {
            kill_after(
                s.issue_command(round),
                moments.below(issue_time.mul_f64(1.3)),
            );
        }
        check_after_crash(s, round, round + 1);
    }

    // `keyward pending resolve` settles everything the crashes left unfinished.
    s.restore_token();
    let resolved = String::from_utf8(s.keyward_ok(&["pending", "resolve"])).unwrap();
    eprintln!("{resolved}");
    assert_resolved_and_clean(&s.state);

    // After all that, the CA still issues and the agent still serves.
    s.restore_token();
    let out = s.dir.join("after");
    s.keyward_ok(&["issue", "--name", "after", "--out", out.to_str().unwrap()]);
    openssl_verify(&out);
    let mut agent = s.agent_command(&config).spawn().expect("start agent");
    wait_socket(&s.socket(), &mut agent);
    let fetched = s.dir.join("fetched");
    let fetch = s
        .command()
        .args(["fetch", "--socket"])
        .arg(s.socket())
        .arg("--out")
        .arg(&fetched)
        .output()
        .unwrap();
    stop(agent);
    assert!(
        fetch.status.success(),
        "fetch after the crash rounds: {}",
        String::from_utf8_lossy(&fetch.stderr)
    );
    let generations = std::fs::read_to_string(s.state.join("agent/generations.json")).unwrap();
    let record: serde_json::Value = serde_json::from_str(&generations).unwrap();
    assert!(
        record["kinds"]["local_intermediate"]["last"]
            .as_u64()
            .unwrap()
            >= 5,
        "the rounds went through several rotations: {generations}"
    );
    // The next write under the lock swept the temporaries of interrupted writes.
    let status = String::from_utf8(s.keyward_ok(&["status", "--json"])).unwrap();
    assert!(!status.contains(".tmp-"), "{status}");
}

#[test]
fn crashes_during_issuance_and_rotation_lose_nothing_with_a_software_ca() {
    let dir = tempfile::tempdir().unwrap();
    let key = software_key(dir.path());
    let state = root_ca(dir.path(), &key, "ecdsa-p256");
    crash_rounds(&Setup {
        dir: dir.path().to_path_buf(),
        state,
        ca_key: key,
        intermediate_template: format!("file:{}/inter/i-{{n}}.pem", dir.path().display()),
        env: Vec::new(),
        token_dir: None,
    });
}

#[test]
fn crashes_during_issuance_and_rotation_lose_nothing_with_a_softhsm_ca() {
    let module = required_env("KEYWARD_TEST_PKCS11_MODULE");
    let dir = tempfile::tempdir().unwrap();
    // A private SoftHSM configuration: its token directory is put back between rounds.
    let tokens = dir.path().join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let env = vec![("SOFTHSM2_CONF".to_string(), conf.display().to_string())];
    let init = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "crash-ca"])
        .args(["--pin", "crash-pin-1", "--so-pin", "crash-so-pin-1"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("softhsm2-util is installed (scripts/test.sh installs it)");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "crash-pin-1").unwrap();
    let key = format!(
        "pkcs11:token=crash-ca;object=root?module-path={module}&pin-source=file:{}",
        pin.display()
    );
    let mut s = Setup {
        dir: dir.path().to_path_buf(),
        state: dir.path().join("state"),
        ca_key: key.clone(),
        intermediate_template: format!("file:{}/inter/i-{{n}}.pem", dir.path().display()),
        env,
        token_dir: None,
    };
    s.keyward_ok(&[
        "key",
        "generate",
        "--key",
        &key,
        "--algorithm",
        "ecdsa-p256",
    ]);
    s.keyward_ok(&["ca", "init", "--key", &key, "--subject", "CN=Crash Root"]);
    let pristine = dir.path().join("tokens-pristine");
    copy_dir(&tokens, &pristine);
    s.token_dir = Some((tokens, pristine));
    crash_rounds(&s);
}
