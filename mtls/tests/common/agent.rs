//! A real `keyward agent` process for the end-to-end tests, and the echo_client example
//! run as another user.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The target directory's profile folder (where `keyward` and `examples/` are built).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// The `keyward` binary: `KEYWARD_BIN`, or the one built beside this test.
pub fn keyward_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KEYWARD_BIN") {
        return p.into();
    }
    let bin = profile_dir().join("keyward");
    assert!(
        bin.exists(),
        "KEYWARD_BIN not set and {} not built: run the tests through scripts/test.sh (or cargo build -p keyward)",
        bin.display()
    );
    bin
}

/// The echo_client example built beside this test.
pub fn echo_client_bin() -> PathBuf {
    let bin = profile_dir().join("examples/echo_client");
    assert!(
        bin.exists(),
        "{} not built: run the tests through scripts/test.sh (or cargo test -p keyward-rustls, which builds the examples)",
        bin.display()
    );
    bin
}

/// A copy of `bin` that any user can execute: tests run as root and start some
/// processes as other users, and the build directory may sit under a directory only
/// root can enter (a clone in /root). All test processes share one copy per build of
/// the binary (keyed by its size and modification time), created atomically.
pub fn executable_by_anyone(bin: &Path) -> PathBuf {
    let meta = std::fs::metadata(bin).expect("binary metadata");
    let stamp = meta
        .modified()
        .expect("mtime")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("mtime after epoch")
        .as_nanos();
    let dir = std::env::temp_dir().join("keyward-test-bin");
    let name = bin.file_name().expect("file name").to_string_lossy();
    let copy = dir.join(format!("{name}-{}-{stamp}", meta.len()));
    if copy.exists() {
        return copy;
    }
    std::fs::create_dir_all(&dir).expect("bin dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let tmp = dir.join(format!(".{name}-{}", std::process::id()));
    std::fs::copy(bin, &tmp).expect("copy binary");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&tmp, &copy).expect("install binary copy");
    copy
}

/// A `keyward agent` process with a software root key, in a temporary directory.
pub struct Agent {
    pub dir: TempDir,
    pub socket: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Agent {
    /// An agent for trust domain example.org with the given `[[workload]]` TOML.
    pub fn new(workloads: &str) -> Agent {
        let dir = TempDir::new().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let state = dir.path().join("state");
        let socket = dir.path().join("run/agent.sock");
        let key = format!("file:{}/keys/ca.pem", dir.path().display());
        let out = Command::new(keyward_bin())
            .arg("--state-dir")
            .arg(&state)
            .args([
                "key",
                "generate",
                "--key",
                &key,
                "--algorithm",
                "ecdsa-p256",
            ])
            .output()
            .expect("run keyward key generate");
        assert!(
            out.status.success(),
            "keyward key generate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.path().join("agent.toml");
        let text = format!(
            "[agent]\nsocket = \"{}\"\nsocket_mode = \"0666\"\nstate_dir = \"{}\"\ntrust_domain = \"example.org\"\n\n\
             [ca]\nkey = \"{key}\"\nsubject = \"CN=keyward-rustls test root\"\n\n{workloads}\n",
            socket.display(),
            state.display(),
        );
        std::fs::write(&config, text).expect("write config");
        Agent {
            log: dir.path().join("agent.log"),
            dir,
            socket,
            config,
            child: None,
        }
    }

    /// Starts `keyward agent --config FILE` and waits until the socket accepts.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(keyward_bin())
            .arg("agent")
            .arg("--config")
            .arg(&self.config)
            .env("KEYWARD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start keyward agent");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("try_wait"))
            {
                panic!("the agent exited with {s} before serving:\n{}", self.log());
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not start serving:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the agent with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("agent running");
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().expect("try_wait").is_none() {
            assert!(
                Instant::now() < deadline,
                "the agent did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The Workload API address, `unix:///path`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `[[workload]]` entry for `uid` named `spiffe://example.org/PATH`.
pub fn entry(path: &str, uid: u32, ttl: &str) -> String {
    format!(
        "[[workload]]\nspiffe_id = \"spiffe://example.org/{path}\"\nttl = \"{ttl}\"\nselectors = {{ uid = {uid} }}\n"
    )
}

/// Runs the echo_client example as `uid` against `addr`, fed by the agent's socket.
pub fn echo_client_as(
    uid: u32,
    agent: &Agent,
    addr: std::net::SocketAddr,
    args: &[&str],
) -> Output {
    Command::new(executable_by_anyone(&echo_client_bin()))
        .arg(addr.to_string())
        .args(args)
        .env("SPIFFE_ENDPOINT_SOCKET", agent.endpoint())
        .current_dir("/")
        .uid(uid)
        .gid(uid)
        .output()
        .expect("run echo_client")
}
