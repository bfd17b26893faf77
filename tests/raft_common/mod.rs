//! The 3-node OpenBao raft cluster scripts/openbao-raft.sh starts for the fleet tests:
//! its addresses and credentials from the environment (missing ones fail the test), its
//! leader, and SIGKILL and restart of a node with the command the script used (a
//! restarted node comes back sealed; `restart` unseals it). Nodes are numbered 1 to 3 as
//! in the script. A test holds the cluster's lock file from `RaftCluster::take` until it
//! drops the handle, so two tests never take nodes down at once; dropping the handle also
//! restarts any node the test left down, so that a failed test does not break the next.
#![allow(dead_code)]

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent_common::wait_for;
use crate::common::required_env;

/// How long a stopped or restarted node may take to answer, and the cluster to settle.
const SETTLE: Duration = Duration::from_secs(60);

/// One HTTP answer from a node.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status; 0 when no answer came (connection refused, timeout).
    pub status: u16,
    /// The body as sent.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as text (for messages and the bodies OpenBao sends as JSON).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics naming the status and body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("answer {} is not JSON ({e}): {}", self.status, self.text()))
    }
}

/// The cluster, held exclusively by this test until dropped.
pub struct RaftCluster {
    /// `http://127.0.0.1:P` of nodes 1, 2 and 3 (index 0 is node 1).
    pub addrs: Vec<String>,
    /// The root token (the operator's).
    pub root_token: String,
    unseal_key: String,
    /// KEYWARD_TEST_RAFT_DIR: node-N/{config.hcl,data,pid,log}, approle/node-N/.
    pub dir: PathBuf,
    bao: String,
    _lock: File,
}

impl RaftCluster {
    /// The cluster from the environment, once this test holds its lock and all three
    /// nodes are unsealed voters under a leader.
    pub fn take() -> RaftCluster {
        let dir = PathBuf::from(required_env("KEYWARD_TEST_RAFT_DIR"));
        let lock = File::open(dir.join("lock")).expect("the raft cluster's lock file");
        lock.lock().expect("lock the raft cluster");
        let cluster = RaftCluster {
            addrs: required_env("KEYWARD_TEST_RAFT_ADDRS")
                .split(',')
                .map(str::to_string)
                .collect(),
            root_token: required_env("KEYWARD_TEST_RAFT_TOKEN"),
            unseal_key: required_env("KEYWARD_TEST_RAFT_UNSEAL_KEY"),
            bao: required_env("KEYWARD_TEST_BAO_BIN"),
            dir,
            _lock: lock,
        };
        assert_eq!(
            cluster.addrs.len(),
            3,
            "KEYWARD_TEST_RAFT_ADDRS names 3 nodes"
        );
        for node in 1..=3 {
            cluster.wait_rejoined(node);
        }
        cluster
    }

    /// The address of `node`.
    pub fn addr(&self, node: usize) -> &str {
        &self.addrs[node - 1]
    }

    /// `METHOD /v1/PATH` on `node` with `token` and a JSON `body`; never follows a
    /// redirect (a standby that cannot forward answers 307 to the leader it knew).
    pub fn call(
        &self,
        node: usize,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Answer {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "-m",
            "10",
            "-o",
            "-",
            "-w",
            "%{http_code}",
            "-X",
            method,
        ]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("X-Vault-Token: {t}")]);
        }
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        let out = cmd
            .arg(format!("{}/v1/{path}", self.addr(node)))
            .output()
            .expect("run curl");
        let mut body = out.stdout;
        let code = body.split_off(body.len().saturating_sub(3));
        let status = std::str::from_utf8(&code)
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("curl printed no status for {method} {path}"));
        Answer { status, body }
    }

    /// `call` with the root token.
    pub fn root_call(&self, node: usize, method: &str, path: &str, body: Option<&str>) -> Answer {
        self.call(node, method, path, Some(&self.root_token), body)
    }

    /// A token of AppRole role `node-ROLE` (its credentials from approle/node-ROLE/),
    /// logged in through `via`.
    pub fn approle_login(&self, role: usize, via: usize) -> String {
        let secret_id = self.approle_credential(role, "secret_id");
        let answer = self.approle_login_with(role, &secret_id, via);
        assert_eq!(answer.status, 200, "AppRole login: {}", answer.text());
        answer.json()["auth"]["client_token"]
            .as_str()
            .expect("auth.client_token")
            .to_string()
    }

    /// The answer to an AppRole login of role `node-ROLE` with `secret_id`, through `via`.
    pub fn approle_login_with(&self, role: usize, secret_id: &str, via: usize) -> Answer {
        let role_id = self.approle_credential(role, "role_id");
        let body = serde_json::json!({"role_id": role_id, "secret_id": secret_id});
        self.call(
            via,
            "POST",
            "auth/approle/login",
            None,
            Some(&body.to_string()),
        )
    }

    /// What the operator does for a lost node's AppRole: every secret_id of role
    /// `node-ROLE` is destroyed (by its accessor) and a new one goes to its credentials
    /// file (through `via`, root token). Returns the secret_id the file held.
    pub fn replace_secret_id(&self, role: usize, via: usize) -> String {
        let old = self.approle_credential(role, "secret_id");
        let path = format!("auth/approle/role/node-{role}");
        let listed = self.root_call(via, "LIST", &format!("{path}/secret-id"), None);
        assert_eq!(listed.status, 200, "{path}/secret-id: {}", listed.text());
        for accessor in listed.json()["data"]["keys"].as_array().expect("keys") {
            let body = serde_json::json!({ "secret_id_accessor": accessor }).to_string();
            let destroy = format!("{path}/secret-id-accessor/destroy");
            let answer = self.root_call(via, "POST", &destroy, Some(&body));
            assert_eq!(answer.status, 204, "{destroy}: {}", answer.text());
        }
        let created = self.root_call(via, "POST", &format!("{path}/secret-id"), None);
        assert_eq!(created.status, 200, "{path}/secret-id: {}", created.text());
        let new = created.json()["data"]["secret_id"]
            .as_str()
            .expect("data.secret_id")
            .to_string();
        std::fs::write(
            self.dir.join(format!("approle/node-{role}/secret_id")),
            format!("{new}\n"),
        )
        .expect("write the new secret_id");
        old
    }

    /// The `name` file (role_id, secret_id) of AppRole role `node-ROLE`, trimmed.
    fn approle_credential(&self, role: usize, name: &str) -> String {
        let path = self.dir.join(format!("approle/node-{role}/{name}"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_string()
    }

    /// The node that calls itself the leader (`GET /v1/sys/leader`) and is active
    /// (`sys/health` 200), if any. Standbys keep naming a dead leader until a new one is
    /// elected, so their word is not taken.
    pub fn leader(&self) -> Option<usize> {
        (1..=3).find(|&node| {
            let answer = self.call(node, "GET", "sys/leader", None, None);
            answer.status == 200
                && answer.json()["is_self"] == Value::Bool(true)
                && self.call(node, "GET", "sys/health", None, None).status == 200
        })
    }

    /// Waits for a leader other than `not` and returns it.
    pub fn wait_leader(&self, not: Option<usize>) -> usize {
        let mut leader = None;
        wait_for("a raft leader", SETTLE, || {
            leader = self.leader().filter(|&l| Some(l) != not);
            leader.is_some()
        });
        leader.expect("leader")
    }

    /// The raft peers as `(node_id, voter)`, read through `via` with the root token.
    pub fn peers(&self, via: usize) -> Vec<(String, bool)> {
        let answer = self.root_call(via, "GET", "sys/storage/raft/configuration", None);
        assert_eq!(answer.status, 200, "raft configuration: {}", answer.text());
        let servers = answer.json()["data"]["config"]["servers"].clone();
        let servers = servers.as_array().expect("servers").clone();
        servers
            .iter()
            .map(|s| {
                (
                    s["node_id"].as_str().unwrap().to_string(),
                    s["voter"] == true,
                )
            })
            .collect()
    }

    /// Whether `node` answers and reports itself unsealed.
    pub fn unsealed(&self, node: usize) -> bool {
        let answer = self.call(node, "GET", "sys/seal-status", None, None);
        answer.status == 200 && answer.json()["sealed"] == false
    }

    /// Whether autopilot, asked through `node`, reports a healthy cluster in which `node`
    /// is a healthy voter.
    fn healthy_voter(&self, node: usize) -> bool {
        let answer = self.root_call(node, "GET", "sys/storage/raft/autopilot/state", None);
        if answer.status != 200 {
            return false;
        }
        let state = &answer.json()["data"];
        let id = format!("node-{node}");
        state["healthy"] == true
            && state["voters"]
                .as_array()
                .is_some_and(|v| v.len() == 3 && v.contains(&Value::from(id.as_str())))
            && state["servers"][&id]["healthy"] == true
    }

    /// Waits until `node` is unsealed, a healthy voter of a healthy cluster, and answers a
    /// read (`pki/cert/ca`).
    pub fn wait_rejoined(&self, node: usize) {
        wait_for(&format!("node {node} unsealed and a voter"), SETTLE, || {
            self.unsealed(node)
                && self.healthy_voter(node)
                && self.call(node, "GET", "pki/cert/ca", None, None).status == 200
        });
    }

    /// The pid of `node` when its pid file names a live `bao server` with its config.
    pub fn pid(&self, node: usize) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.node_file(node, "pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let config = format!("-config={}", self.node_file(node, "config.hcl").display());
        String::from_utf8_lossy(&cmdline)
            .split('\0')
            .any(|arg| arg == config)
            .then_some(pid)
    }

    /// SIGKILLs `node` and waits until its address refuses connections.
    pub fn kill(&self, node: usize) {
        let pid = self
            .pid(node)
            .unwrap_or_else(|| panic!("node {node} is not running"));
        let pid = rustix::process::Pid::from_raw(pid).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("SIGKILL");
        wait_for(&format!("node {node} gone"), SETTLE, || {
            self.call(node, "GET", "sys/seal-status", None, None).status == 0
        });
    }

    /// Starts `node` again with its configuration (output appended to its log, pid in its
    /// pid file) and unseals it once it answers; it then rejoins on its own.
    pub fn restart(&self, node: usize) {
        self.start(node).expect("start bao server");
        assert!(self.unseal_when_up(node), "node {node} did not unseal");
    }

    /// Starts `node` again and waits until it answers, leaving it sealed as a restarted
    /// node comes back; [`RaftCluster::unseal`] unseals it.
    pub fn restart_sealed(&self, node: usize) {
        self.start(node).expect("start bao server");
        wait_for(&format!("node {node} answering"), SETTLE, || {
            self.call(node, "GET", "sys/seal-status", None, None).status == 200
        });
    }

    /// Unseals `node`, which must be running; it then rejoins on its own.
    pub fn unseal(&self, node: usize) {
        assert!(self.unseal_when_up(node), "node {node} did not unseal");
    }

    /// Spawns `node`'s server in its own process group (a test's end does not take it
    /// down; scripts/openbao-raft.sh stops it by its pid file).
    fn start(&self, node: usize) -> std::io::Result<()> {
        let log = File::options()
            .append(true)
            .create(true)
            .open(self.node_file(node, "log"))?;
        let child = Command::new(&self.bao)
            .arg("server")
            .arg(format!(
                "-config={}",
                self.node_file(node, "config.hcl").display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()?;
        std::fs::write(self.node_file(node, "pid"), format!("{}\n", child.id()))
    }

    /// Waits for `node` to answer, then unseals it; false when either does not happen.
    fn unseal_when_up(&self, node: usize) -> bool {
        let deadline = Instant::now() + SETTLE;
        while self.call(node, "GET", "sys/seal-status", None, None).status != 200 {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let body = serde_json::json!({ "key": self.unseal_key }).to_string();
        self.call(node, "PUT", "sys/unseal", None, Some(&body))
            .status
            == 200
    }

    fn node_file(&self, node: usize, name: &str) -> PathBuf {
        self.dir.join(format!("node-{node}/{name}"))
    }
}

impl Drop for RaftCluster {
    /// Restarts and unseals any node this test left down or sealed (best effort).
    fn drop(&mut self) {
        for node in 1..=3 {
            let running = self.pid(node).is_some() || self.start(node).is_ok();
            if running && !self.unsealed(node) {
                self.unseal_when_up(node);
            }
        }
    }
}
