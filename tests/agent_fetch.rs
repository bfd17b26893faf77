//! End-to-end: `keyward fetch` writes the caller's SVID to files (a new directory
//! per SVID, switched in through `OUT/current` in one step) with the CRLs the agent
//! serves, and with `--watch` writes every rotation and every new CRL and runs its
//! command; socket addresses in every accepted
//! form, from the flag or the environment; bad addresses and bad `--out`
//! directories are one error line.

mod agent_common;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use agent_common::*;
use common::{issue_named, keyward_bin, keyward_ok, mode, openssl, snapshot};
use rcgen::PublicKeyData;

/// The names `keyward fetch --out` links at the top of OUT, through `current`.
const TOP_LEVEL: [&str; 4] = ["cert.pem", "key.pem", "bundle.pem", "crl.pem"];

fn serial_of(path: &std::path::Path) -> Option<String> {
    let pem = std::fs::read(path).ok()?;
    let ders = keyward_core::check::pem_to_ders(&pem).ok()?;
    ders.first().map(|d| serial(d))
}

/// `OUT/current` resolved: the directory of the newest SVID.
fn current_dir(out: &Path) -> PathBuf {
    std::fs::canonicalize(out.join("current")).expect("OUT/current resolves")
}

/// The `.svid-*` directories in `out`.
fn svid_dirs(out: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".svid-")
        })
        .collect();
    dirs.sort();
    dirs
}

/// The layout: `current` links to a 0700 `.svid-*` directory holding the four
/// files; the top-level names link through `current`.
fn check_layout(out: &Path) {
    let target = std::fs::read_link(out.join("current")).expect("current is a symlink");
    assert!(
        target.to_string_lossy().starts_with(".svid-") && target.components().count() == 1,
        "current -> {}",
        target.display()
    );
    let dir = current_dir(out);
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    for name in TOP_LEVEL {
        assert_eq!(
            std::fs::read_link(out.join(name)).expect("a symlink at the top"),
            Path::new("current").join(name)
        );
        assert!(dir.join(name).is_file(), "{name} in {}", dir.display());
    }
    check_files(&dir);
}

/// Whether the PKCS#8 key in `key_pem` belongs to the leaf of `cert_pem`.
fn key_matches_cert(cert_pem: &[u8], key_pem: &[u8]) -> bool {
    let ders = keyward_core::check::pem_to_ders(cert_pem).expect("cert.pem");
    let (_, leaf) = x509_parser::parse_x509_certificate(&ders[0]).expect("leaf");
    let key =
        rcgen::KeyPair::from_pem(std::str::from_utf8(key_pem).expect("PEM text")).expect("key.pem");
    key.subject_public_key_info() == leaf.public_key().raw
}

/// `keyward fetch --watch --out OUT [extra...]` against `agent`, after its first write:
/// the top-level links are made after `current`, so they are waited for.
fn watch(agent: &Agent, out: &Path, extra: &[&str]) -> Child {
    let child = Command::new(keyward_bin())
        .args(["fetch", "--watch", "--out"])
        .arg(out)
        .args(extra)
        .env("SPIFFE_ENDPOINT_SOCKET", agent.endpoint())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the first write", Duration::from_secs(20), || {
        TOP_LEVEL.iter().all(|name| out.join(name).exists())
    });
    child
}

fn check_files(dir: &std::path::Path) {
    assert_eq!(mode(&dir.join("key.pem")), 0o600);
    let out = Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile"])
        .arg(dir.join("bundle.pem"))
        .arg("-untrusted")
        .arg(dir.join("cert.pem"))
        .arg(dir.join("cert.pem"))
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert_pub = openssl(&[
        "x509",
        "-in",
        dir.join("cert.pem").to_str().unwrap(),
        "-noout",
        "-pubkey",
    ]);
    let key_pub = openssl(&[
        "pkey",
        "-in",
        dir.join("key.pem").to_str().unwrap(),
        "-pubout",
    ]);
    assert_eq!(cert_pub, key_pub, "key.pem does not match cert.pem");
    assert!(
        key_matches_cert(
            &std::fs::read(dir.join("cert.pem")).unwrap(),
            &std::fs::read(dir.join("key.pem")).unwrap()
        ),
        "the Rust key check agrees with openssl"
    );
}

#[test]
fn fetch_writes_cert_key_and_bundle_that_openssl_verifies() {
    let mut agent = Agent::new(&entry("files", 0, "1h", ""));
    agent.start();
    let out = agent.dir.path().join("svid");
    let o = Command::new(keyward_bin())
        .args(["fetch", "--out"])
        .arg(&out)
        .env("SPIFFE_ENDPOINT_SOCKET", agent.endpoint())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("spiffe://example.org/files"));
    assert_eq!(mode(&out), 0o700, "a new --out is private");
    check_layout(&out);
    check_files(&out);
    let chain =
        keyward_core::check::pem_to_ders(&std::fs::read(out.join("cert.pem")).unwrap()).unwrap();
    assert_eq!(
        uri_sans(&chain[0]),
        vec!["spiffe://example.org/files".to_string()]
    );
    agent.stop();
}

#[test]
fn fetch_watch_rewrites_the_files_on_rotation_and_runs_its_command() {
    let mut agent = Agent::new(&entry("watched", 0, "4s", ""));
    agent.start();
    let out = agent.dir.path().join("svid");
    let hook = agent.dir.path().join("hook.log");
    let mut child = watch(
        &agent,
        &out,
        &[
            "--exec",
            &format!("echo \"$KEYWARD_SVID_DIR\" >> {}", hook.display()),
        ],
    );
    let hook_runs = || {
        std::fs::read_to_string(&hook)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    wait_for(
        "the first write and hook run",
        Duration::from_secs(20),
        || hook_runs() >= 1,
    );
    let first = serial_of(&out.join("cert.pem")).expect("cert.pem written");
    check_layout(&out);
    wait_for(
        "a rotation to be written (ttl 4 s)",
        Duration::from_secs(30),
        || hook_runs() >= 2 && serial_of(&out.join("cert.pem")).is_some_and(|s| s != first),
    );
    check_layout(&out);
    // The command sees KEYWARD_SVID_DIR: the new SVID's directory, a new one each run.
    let log = std::fs::read_to_string(&hook).unwrap();
    let dirs: Vec<&str> = log.lines().collect();
    for d in &dirs {
        let d = Path::new(d);
        assert_eq!(d.parent(), Some(out.as_path()), "{log}");
        assert!(
            d.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".svid-"),
            "{log}"
        );
    }
    assert!(dirs.windows(2).all(|w| w[0] != w[1]), "{log}");
    let _ = child.kill();
    let _ = child.wait();
    agent.stop();
}

#[test]
fn fetch_watch_writes_the_served_crls_to_crl_pem_and_rewrites_them_when_they_change() {
    let mut agent = Agent::new(&entry("crls", 0, "1h", ""));
    agent.start();
    let revoked = issue_named(&agent.state, "svc", &agent.dir.path().join("svc"));
    let out = agent.dir.path().join("svid");
    let mut child = watch(&agent, &out, &[]);
    check_layout(&out);
    assert_eq!(
        std::fs::read(out.join("crl.pem")).unwrap(),
        b"",
        "no CRL yet"
    );

    keyward_ok(&agent.state, &["revoke", "--serial", &revoked]);
    let signed = std::fs::read(agent.state.join("crl.pem")).unwrap();
    wait_for("crl.pem rewritten", Duration::from_secs(20), || {
        std::fs::read(out.join("crl.pem")).is_ok_and(|c| c == signed)
    });
    check_layout(&out);
    let text = openssl(&[
        "crl",
        "-in",
        out.join("crl.pem").to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    assert!(
        text.contains(&format!("Serial Number: {revoked}")),
        "{text}"
    );
    let _ = child.kill();
    let _ = child.wait();
    agent.stop();
}

#[test]
fn a_reader_that_resolves_current_never_sees_a_key_beside_another_certificate() {
    let mut agent = Agent::new(&entry("rotating", 0, "2s", ""));
    agent.start();
    let out = agent.dir.path().join("svid");
    let mut child = watch(&agent, &out, &[]);
    // A reader as the README says: resolve OUT/current once, then read the set there.
    let reader_out = out.clone();
    let reader = std::thread::spawn(move || {
        let mut serials = std::collections::BTreeSet::new();
        let (mut sets, mut gone) = (0u32, 0u32);
        let deadline = Instant::now() + Duration::from_secs(90);
        while serials.len() < 8 && Instant::now() < deadline {
            let dir = current_dir(&reader_out);
            let (Ok(cert), Ok(key)) = (
                std::fs::read(dir.join("cert.pem")),
                std::fs::read(dir.join("key.pem")),
            ) else {
                // Removed two rotations later, between resolving and reading.
                gone += 1;
                continue;
            };
            assert!(
                key_matches_cert(&cert, &key),
                "{}: key.pem does not match cert.pem",
                dir.display()
            );
            let ders = keyward_core::check::pem_to_ders(&cert).unwrap();
            serials.insert(serial(&ders[0]));
            sets += 1;
        }
        (serials.len(), sets, gone)
    });
    let (rotations, sets, gone) = reader.join().expect("the reader saw only matching sets");
    assert!(
        rotations >= 8,
        "saw {rotations} SVIDs in 90 s (ttl 2 s): {}",
        agent.log()
    );
    assert!(sets > 100 && gone < sets, "{sets} sets read, {gone} gone");
    // Older directories go once switched away from: the current and previous stay
    // (a third only while one is being written).
    wait_for(
        "old SVID directories removed",
        Duration::from_secs(10),
        || svid_dirs(&out).len() <= 2,
    );
    let _ = child.kill();
    let _ = child.wait();
    agent.stop();
}

#[test]
fn an_out_directory_from_an_older_keyward_is_migrated() {
    let mut agent = Agent::new(&entry("migrated", 0, "1h", ""));
    agent.start();
    let out = agent.dir.path().join("svid");
    std::fs::create_dir(&out).unwrap();
    for name in ["cert.pem", "key.pem", "bundle.pem", "notes.txt"] {
        std::fs::write(out.join(name), format!("old {name}\n")).unwrap();
    }
    let o = fetch(&out, Some(&agent.socket.display().to_string()), None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    check_layout(&out);
    check_files(&out);
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "old notes.txt\n",
        "other files are left alone"
    );
    // A second fetch switches to a new directory and keeps the previous one.
    let before = current_dir(&out);
    let o = fetch(&out, Some(&agent.endpoint()), None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    check_layout(&out);
    assert_ne!(current_dir(&out), before);
    assert_eq!(svid_dirs(&out), {
        let mut both = vec![before, current_dir(&out)];
        both.sort();
        both
    });
    agent.stop();
}

#[test]
fn a_bad_out_is_one_error_line_and_changes_nothing() {
    let mut agent = Agent::new(&entry("bad-out", 0, "1h", ""));
    agent.start();
    let base = agent.dir.path().join("outs");
    std::fs::create_dir(&base).unwrap();
    let file = base.join("a-file");
    std::fs::write(&file, b"keep me").unwrap();
    let with_dir = |name: &str, inner: &str| {
        let out = base.join(name);
        std::fs::create_dir_all(out.join(inner)).unwrap();
        out
    };
    let cases = [
        (file.clone(), "is not a directory".to_string()),
        (file.join("sub"), "Not a directory".to_string()),
        (
            with_dir("current-is-a-dir", "current"),
            "is not a symlink".to_string(),
        ),
        (
            with_dir("key-is-a-dir", "key.pem"),
            "is a directory".to_string(),
        ),
    ];
    for (out, needle) in &cases {
        let before = snapshot(&base);
        let o = fetch(out, Some(&agent.endpoint()), None);
        let stderr = String::from_utf8_lossy(&o.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert!(!o.status.success(), "{}: succeeded", out.display());
        assert_eq!(errors.len(), 1, "{}: {stderr}", out.display());
        assert!(errors[0].contains(needle.as_str()), "{}", errors[0]);
        assert!(
            errors[0].contains(&out.display().to_string())
                || errors[0].contains(&file.display().to_string()),
            "names the path: {}",
            errors[0]
        );
        assert_eq!(
            snapshot(&base),
            before,
            "{}: nothing changed",
            out.display()
        );
    }
    agent.stop();
}

/// `keyward fetch --out OUT` with `--socket` and `SPIFFE_ENDPOINT_SOCKET` as given
/// (`None`: not passed, not set).
fn fetch(out: &Path, flag: Option<&str>, env: Option<&str>) -> Output {
    let mut c = Command::new(keyward_bin());
    c.arg("fetch").arg("--out").arg(out);
    if let Some(s) = flag {
        c.arg("--socket").arg(s);
    }
    c.env_remove("SPIFFE_ENDPOINT_SOCKET")
        .env_remove("KEYWARD_LOG");
    if let Some(s) = env {
        c.env("SPIFFE_ENDPOINT_SOCKET", s);
    }
    c.output().unwrap()
}

#[test]
fn every_socket_form_works_from_the_flag_and_the_environment_and_bad_ones_are_one_line() {
    let mut agent = Agent::new(&entry("forms", 0, "1h", ""));
    agent.start();
    let path = agent.socket.display().to_string();
    let good = [
        format!("unix://{path}"),
        format!("unix:{path}"),
        path.clone(),
    ];
    for (i, addr) in good.iter().enumerate() {
        for (how, flag, env) in [
            ("--socket", Some(addr.as_str()), None),
            ("SPIFFE_ENDPOINT_SOCKET", None, Some(addr.as_str())),
            // The flag wins over the environment.
            ("both", Some(addr.as_str()), Some("tcp://127.0.0.1:1")),
        ] {
            let out = agent.dir.path().join(format!("out-{i}-{}", how.len()));
            let o = fetch(&out, flag, env);
            assert!(
                o.status.success(),
                "{addr} from {how}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            check_files(&current_dir(&out));
        }
    }
    let bad = [
        "run/agent.sock".to_string(),
        "tcp://127.0.0.1:8081".to_string(),
        String::new(),
        format!("unix://host{path}"),
        format!("http://localhost{path}"),
    ];
    let out = agent.dir.path().join("never");
    for addr in &bad {
        for (how, flag, env) in [
            ("--socket", Some(addr.as_str()), None),
            ("SPIFFE_ENDPOINT_SOCKET", None, Some(addr.as_str())),
        ] {
            let o = fetch(&out, flag, env);
            let stderr = String::from_utf8_lossy(&o.stderr);
            let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
            assert!(!o.status.success(), "{addr:?} from {how} succeeded");
            assert_eq!(errors.len(), 1, "{addr:?} from {how}: {stderr}");
            assert!(
                errors[0].contains(how) && errors[0].contains(&format!("'{addr}'")),
                "names where the value came from and the value: {}",
                errors[0]
            );
            assert!(
                errors[0].contains("unix:///absolute/path, unix:/absolute/path or /absolute/path"),
                "names the forms: {}",
                errors[0]
            );
        }
    }
    let o = fetch(&out, None, None);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && stderr.contains("SPIFFE_ENDPOINT_SOCKET"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing was written");
    agent.stop();
}

#[test]
fn fetch_watch_reconnects_after_an_agent_restart_and_writes_the_new_svid() {
    let mut agent = Agent::new(&entry("restarted", 0, "1h", ""));
    agent.start();
    let out = agent.dir.path().join("svid");
    let mut child = watch(&agent, &out, &[]);
    let first = current_dir(&out);
    agent.stop();
    std::thread::sleep(Duration::from_millis(500));
    agent.start();
    wait_for(
        "a write after the agent came back",
        Duration::from_secs(30),
        || current_dir(&out) != first,
    );
    check_layout(&out);
    assert!(
        child.try_wait().unwrap().is_none(),
        "fetch --watch kept running"
    );
    let _ = child.kill();
    let log = drain(child.stderr.as_mut().unwrap());
    let _ = child.wait();
    assert!(log.contains("reconnect"), "the loss was logged: {log}");
    agent.stop();
}
