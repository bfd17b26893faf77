//! The agent of the KeyService rows: `keyward agent` with a CA key in software and one
//! workload entry for this uid granting every benchmark key.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `keyward agent` on a config in `dir`, killed when dropped.
pub(super) struct Agent {
    child: Child,
    /// The agent's socket.
    pub(super) socket: PathBuf,
}

impl Agent {
    /// Writes the config granting `grants` (name, URI, op) to this uid and starts the
    /// agent, the CA key made by `keyward key generate`; waits for its socket.
    pub(super) fn start(keyward: &Path, dir: &Path, grants: &[(String, String, &str)]) -> Agent {
        let state = dir.join("state");
        let ca = format!("file:{}", dir.join("ca.pem").display());
        let status = Command::new(keyward)
            .args(["--state-dir".as_ref(), state.as_os_str()])
            .args(["key", "generate", "--key", &ca, "--algorithm", "ecdsa-p256"])
            .stdout(Stdio::null())
            .status()
            .expect("run keyward key generate");
        assert!(status.success(), "keyward key generate failed");
        let socket = dir.join("agent.sock");
        let uid = std::fs::metadata("/proc/self").expect("/proc/self").uid();
        let mut config = format!(
            "[agent]\nsocket = {:?}\nstate_dir = {:?}\ntrust_domain = \"example.org\"\n\n\
             [ca]\nkey = {ca:?}\n\n[[workload]]\nspiffe_id = \"spiffe://example.org/bench-keys\"\n\
             selectors = {{ uid = {uid} }}\nkeys = [\n",
            socket.display().to_string(),
            state.display().to_string()
        );
        for (name, uri, op) in grants {
            let _ = writeln!(
                config,
                "  {{ name = {name:?}, key = {uri:?}, ops = [{op:?}] }},"
            );
        }
        config.push_str("]\n");
        let path = dir.join("agent.toml");
        std::fs::write(&path, config).expect("write the agent config");
        let log = std::fs::File::create(dir.join("agent.log")).expect("agent log");
        let child = Command::new(keyward)
            .args(["agent".as_ref(), "--config".as_ref(), path.as_os_str()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start keyward agent");
        let agent = Agent { child, socket };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !agent.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "the agent did not start; see {}",
                dir.join("agent.log").display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        agent
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
