//! End-to-end: attacks on caller attestation by a hostile local user (uid 65534), each
//! of which must fail while a legitimate caller is still served. The attacker faking
//! the entitled program in its own mount namespace, exec'ing a root program after
//! connecting, leaving its connection to a process at its reused PID, and making the
//! agent hash a huge executable.

mod agent_common;
mod common;
mod relay_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agent_common::*;
use relay_common::{Relay, perl_as, perl_copy};
use tonic::Code;

/// A `[[workload]]` entry `spiffe://example.org/NAME` with the given selectors.
fn workload(name: &str, selectors: &str) -> String {
    format!(
        "[[workload]]\nspiffe_id = \"spiffe://{TRUST_DOMAIN}/{name}\"\nttl = \"1h\"\nselectors = {{ {selectors} }}\n"
    )
}

/// The entry every test serves to root to show the agent still serves.
fn legit() -> String {
    entry("legit", 0, "1h", "")
}

/// A call that must be refused: `PermissionDenied` and no SVID (so no key byte) at all.
fn refused(r: Result<raw::X509SvidResponse, tonic::Status>, what: &str) -> tonic::Status {
    match r {
        Err(s) => {
            assert_eq!(s.code(), Code::PermissionDenied, "{what}: {s:?}");
            s
        }
        Ok(m) => panic!("{what}: the attacker received {} SVID(s)", m.svids.len()),
    }
}

/// The SPIFFE IDs a call through `channel` is served.
async fn served(channel: tonic::transport::Channel, what: &'static str) -> Vec<String> {
    let m = raw::fetch_x509(channel, true)
        .await
        .unwrap_or_else(|e| panic!("{what} is not served: {e:?}"));
    assert!(m.svids.iter().all(|s| !s.x509_svid_key.is_empty()));
    m.svids.into_iter().map(|s| s.spiffe_id).collect()
}

/// Root, by uid alone, is served `legit`.
async fn root_is_served(agent: &Agent) {
    let ids = served(raw::channel(&agent.socket).await, "root").await;
    assert_eq!(ids, ["spiffe://example.org/legit"]);
}

/// The agent's audit records named `event` (after it stopped, so all are on disk).
fn audited(agent: &Agent, event: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(agent.state.join("audit.jsonl")).expect("audit log");
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("audit record"))
        .filter(|r| r["event"] == event)
        .collect()
}

/// Asserts the audit log records no SVID served to uid `uid` other than to `allowed`.
fn no_svid_served_to(agent: &Agent, uid: u32, allowed: &[u32]) {
    for r in audited(agent, "svid_served") {
        let caller = &r["fields"]["caller"];
        if caller["uid"] == uid {
            let pid = caller["pid"].as_u64().unwrap_or(0) as u32;
            assert!(allowed.contains(&pid), "served to the attacker: {r}");
        }
    }
}

/// The file `/proc/PID/exe` names, as this (root, initial namespace) process sees it.
fn exe_of(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_faked_in_another_mount_namespace_gets_nothing() {
    let mut agent = Agent::new(&legit());
    let api = agent.dir.path().join("bin/api-server");
    perl_copy(&api);
    agent.write_config(&format!(
        "{}{}{}",
        legit(),
        workload("ghost", "uid = 65534, path = \"/usr/local/bin/api-server\""),
        workload("api", &format!("uid = 65534, path = \"{}\"", api.display())),
    ));
    agent.start();
    // Over a directory of the host (where the configured file does not exist) and over
    // the entitled program's own directory: the attacker's copy has the configured
    // name in its namespace, and is another file.
    for over in [Path::new("/usr/local/bin"), api.parent().unwrap()] {
        let mut cmd = tokio::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["unshare", "-Urm", "sh", "-c"])
            .arg(r#"mount -t tmpfs none "$1" && cp /usr/bin/perl "$1/api-server" && exec "$1/api-server" -e "$2" "$3" stay"#)
            .arg("sh")
            .arg(over)
            .arg(relay_common::RELAY)
            .arg(&agent.socket)
            .current_dir("/");
        let attacker = relay_common::start(cmd).await;
        // /proc names the attacker's program like the configured one.
        let fake = over.join("api-server");
        wait_for("the fake api-server", Duration::from_secs(10), || {
            exe_of(attacker.pid).as_deref() == Some(fake.as_path())
        });
        let r = raw::fetch_x509(attacker.channel.clone(), true).await;
        let s = refused(r, &format!("a fake api-server over {}", over.display()));
        assert!(s.message().contains("no workload entry"), "{s:?}");
    }
    // The same uid running the configured file is served, and root still is.
    let real = relay_common::start(perl_as(NOBODY, &api, &agent.socket, &["stay"])).await;
    let ids = served(real.channel.clone(), "the real api-server").await;
    assert_eq!(ids, ["spiffe://example.org/api"]);
    root_is_served(&agent).await;
    agent.stop();
    no_svid_served_to(&agent, NOBODY, &[real.pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_execs_a_root_program_after_connecting_gets_nothing() {
    let sleep = std::fs::canonicalize("/usr/bin/sleep").expect("sleep");
    let mut agent = Agent::new(&format!(
        "{}{}",
        legit(),
        workload(
            "sleeper",
            &format!("uid = 0, path = \"{}\"", sleep.display())
        ),
    ));
    agent.start();
    // Connect, leave the connection to a forked relay, exec the entitled program.
    let sleep_s = sleep.to_str().unwrap();
    let mode = ["exec", sleep_s, "60"];
    let perl = Path::new("/usr/bin/perl");
    let attacker = relay_common::start(perl_as(NOBODY, perl, &agent.socket, &mode)).await;
    wait_for(
        "the attacker to exec sleep",
        Duration::from_secs(10),
        || exe_of(attacker.pid).as_deref() == Some(sleep.as_path()),
    );
    let r = raw::fetch_x509(attacker.channel.clone(), true).await;
    let s = refused(r, "the exec'd connection");
    assert!(s.message().contains("no workload entry"), "{s:?}");
    root_is_served(&agent).await;
    agent.stop();
    no_svid_served_to(&agent, NOBODY, &[]);
}

#[test]
fn an_entry_naming_a_program_but_no_user_is_refused_at_load_unless_meant() {
    let mut agent = Agent::new(&workload("sleeper", "path = \"/usr/bin/sleep\""));
    let mut child = Command::new(common::keyward_bin())
        .arg("agent")
        .arg("--config")
        .arg(&agent.config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the agent");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("an agent with a program-only entry started");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("agent.toml:") && err.contains("needs a uid or gid"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    agent.write_config(&workload(
        "sleeper",
        "path = \"/usr/bin/sleep\", allow_any_user = true",
    ));
    agent.start();
    wait_for("the warning", Duration::from_secs(10), || {
        agent.log().contains("allow_any_user = true")
    });
    agent.stop();
}

/// Starts the relay `command()` makes until its process gets `pid` (set as the next
/// PID to hand out through /proc/sys/kernel/ns_last_pid; another process may take it
/// first, so this tries again). `None` once a process or thread of someone else's holds
/// `pid`: it keeps it for as long as it runs (a test running beside this one can start
/// a long-lived thread at that moment).
async fn at_pid(pid: u32, command: impl Fn() -> tokio::process::Command) -> Option<Relay> {
    for _ in 0..500 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1))
            .expect("write ns_last_pid (needs root)");
        let relay = relay_common::start(command()).await;
        if relay.pid == pid {
            return Some(relay);
        }
        if Path::new(&format!("/proc/{pid}")).exists() {
            return None;
        }
    }
    panic!("could not start a process at PID {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_process_exited_gets_nothing_even_from_its_reused_pid() {
    let mut agent = Agent::new(&legit());
    let tool = agent.dir.path().join("bin/root-tool");
    perl_copy(&tool);
    let tool_entry = format!("path = \"{}\", allow_any_user = true", tool.display());
    agent.write_config(&format!(
        "{}{}",
        legit(),
        workload("root-tool", &tool_entry)
    ));
    agent.start();
    // The attacker connects (and is told it has no identity), leaves the connection to
    // its relay and dies; it is reaped, so its PID is free. A root-only program is
    // started at the attacker's PID; it runs the entitled file. (Again with a new
    // attacker if another process took that PID first.)
    let perl = Path::new("/usr/bin/perl");
    let mut tries = 0;
    let (attacker, holder, pid) = loop {
        let mut attacker =
            relay_common::start(perl_as(NOBODY, perl, &agent.socket, &["stay"])).await;
        let r = raw::fetch_x509(attacker.channel.clone(), true).await;
        refused(r, "the attacker while alive");
        attacker
            .child
            .kill()
            .await
            .expect("kill the connecting process");
        let pid = attacker.pid;
        if let Some(holder) = at_pid(pid, || perl_as(0, &tool, &agent.socket, &["stay"])).await {
            break (attacker, holder, pid);
        }
        tries += 1;
        assert!(
            tries < 5,
            "another process took the attacker's PID {tries} times"
        );
    };
    wait_for(
        "the root program at the PID",
        Duration::from_secs(10),
        || exe_of(pid).as_deref() == Some(tool.as_path()),
    );
    let r = raw::fetch_x509(attacker.channel.clone(), true).await;
    let s = refused(r, "the dead attacker's connection");
    assert!(s.message().contains("exited"), "{s:?}");
    // The program at that PID, on its own connection, is served.
    let ids = served(holder.channel.clone(), "the root program").await;
    assert_eq!(
        ids,
        [
            "spiffe://example.org/legit",
            "spiffe://example.org/root-tool"
        ]
    );
    root_is_served(&agent).await;
    agent.stop();
    no_svid_served_to(&agent, NOBODY, &[]);
    let tool_s = tool.display().to_string();
    for r in audited(&agent, "denied") {
        let caller = &r["fields"]["caller"];
        if caller["uid"] == NOBODY {
            assert_ne!(caller["exe"].as_str(), Some(tool_s.as_str()), "{r}");
        }
    }
}

/// The SHA-256 of a file, by `sha256sum`.
fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// A copy of perl padded (sparse, ELF ignores the tail) to `size` bytes.
fn padded_perl(path: &Path, size: u64) {
    perl_copy(path);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    f.set_len(size).expect("pad");
}

/// The CPU time the agent has used so far (utime + stime of /proc/PID/stat).
fn agent_cpu(agent: &Agent) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", agent.pid())).expect("stat");
    let after_name = &stat[stat.rfind(')').expect("stat") + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) counted from 1; `fields` starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    let hz: u64 = String::from_utf8_lossy(&hz.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK");
    Duration::from_millis(ticks * 1000 / hz)
}

/// How many times the agent logged hashing an executable whose name holds `name`.
fn hashes_of(agent: &Agent, name: &str) -> usize {
    agent
        .log()
        .lines()
        .filter(|l| l.contains("hashing a caller's executable") && l.contains(name))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_executable_is_hashed_only_when_it_can_matter_and_never_over_the_limit() {
    let mut agent = Agent::new(&legit());
    let bin = agent.dir.path().join("bin");
    let bomb = bin.join("bomb");
    padded_perl(&bomb, 2 << 30);
    let big = bin.join("big");
    padded_perl(&big, 192 << 20);
    let big_sha = sha256_of(&big);
    // The bomb, run as uid 65534, asks for an SVID and is refused.
    // Reading 2 GiB costs the agent seconds of CPU (5.5 s measured, release build);
    // a refusal that reads nothing costs milliseconds.
    let bomb_refused = async |agent: &Agent, what: &str| {
        let cpu = agent_cpu(agent);
        let relay = perl_as(NOBODY, &bomb, &agent.socket, &["stay"]);
        let attacker = relay_common::start(relay).await;
        let s = refused(raw::fetch_x509(attacker.channel.clone(), true).await, what);
        let used = agent_cpu(agent) - cpu;
        assert!(
            used < Duration::from_secs(1),
            "{what}: the agent used {used:?} of CPU"
        );
        s
    };

    // No entry for uid 65534 needs sha256 (only uid 1000's does): nothing is hashed.
    let other = format!("uid = 1000, sha256 = \"{big_sha}\"");
    agent.write_config(&format!("{}{}", legit(), workload("other", &other)));
    agent.start();
    let s = bomb_refused(&agent, "the bomb, no sha256 entry for its uid").await;
    assert!(s.message().contains("no workload entry"), "{s:?}");
    root_is_served(&agent).await;
    agent.stop();
    assert_eq!(hashes_of(&agent, "bomb"), 0, "{}", agent.log());

    // An entry for uid 65534 needs sha256: the bomb is over max_hash_bytes (256 MiB by
    // default), refused by name, not read; a 192 MiB program is hashed once for many
    // concurrent callers, who are all served.
    let mine = format!("uid = 65534, sha256 = \"{big_sha}\"");
    agent.write_config(&format!("{}{}", legit(), workload("big", &mine)));
    agent.start();
    let s = bomb_refused(&agent, "the bomb, over max_hash_bytes").await;
    assert!(
        s.message().contains("max_hash_bytes") && s.message().contains(&bomb.display().to_string()),
        "{s:?}"
    );
    let mut callers = Vec::new();
    for _ in 0..6 {
        callers.push(relay_common::start(perl_as(NOBODY, &big, &agent.socket, &["stay"])).await);
    }
    let calls: Vec<_> = callers
        .iter()
        .map(|c| tokio::spawn(served(c.channel.clone(), "a caller running big")))
        .collect();
    for call in calls {
        assert_eq!(call.await.expect("call"), ["spiffe://example.org/big"]);
    }
    root_is_served(&agent).await;
    agent.stop();
    assert_eq!(hashes_of(&agent, "bomb"), 0, "{}", agent.log());
    assert_eq!(hashes_of(&agent, "/bin/big"), 1, "{}", agent.log());
    let pids: Vec<u32> = callers.iter().map(|c| c.pid).collect();
    no_svid_served_to(&agent, NOBODY, &pids);
    let bomb_s = bomb.display().to_string();
    assert!(
        audited(&agent, "denied")
            .iter()
            .any(|r| r["fields"]["reason"]
                .as_str()
                .is_some_and(|w| w.contains(&bomb_s))),
        "the refusal of the bomb is audited by name"
    );
}
