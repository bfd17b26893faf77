//! Helpers for the agent's end-to-end tests: a real `keyward agent` process with a
//! configuration in a temporary directory, signals, clients run as another user, and
//! a raw gRPC client for requests the `spiffe` crate would never send.
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::common::{generate_key, keyward_bin};

/// The unprivileged user the tests run clients as (`nobody`).
pub const NOBODY: u32 = 65534;
/// The trust domain of every test configuration.
pub const TRUST_DOMAIN: &str = "example.org";

/// A `keyward agent` process and its directory.
pub struct Agent {
    /// Holds everything; removed on drop.
    pub dir: TempDir,
    /// The state directory.
    pub state: PathBuf,
    /// The socket.
    pub socket: PathBuf,
    /// The configuration file.
    pub config: PathBuf,
    /// The `[ca] key` URI.
    pub ca_key: String,
    log: PathBuf,
    child: Option<Child>,
    envs: Vec<(String, String)>,
}

impl Agent {
    /// A configuration with a software root key and the given `[[workload]]` TOML.
    /// The socket directory is reachable by every user (the socket is 0666).
    pub fn new(workloads: &str) -> Agent {
        let dir = TempDir::new().expect("tempdir");
        let key = format!("file:{}/keys/ca.pem", dir.path().display());
        generate_key(&dir.path().join("state"), &key, "ecdsa-p256");
        Agent::with_ca_key(dir, &key, workloads)
    }

    /// A configuration whose `[ca] key` is `key` (an existing key in any backend),
    /// in the directory `dir`, with the given `[[workload]]` TOML.
    pub fn with_ca_key(dir: TempDir, key: &str, workloads: &str) -> Agent {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let agent = Agent {
            state: dir.path().join("state"),
            socket: dir.path().join("run/agent.sock"),
            config: dir.path().join("agent.toml"),
            ca_key: key.to_string(),
            log: dir.path().join("agent.log"),
            dir,
            child: None,
            envs: Vec::new(),
        };
        agent.write_config(workloads);
        agent
    }

    /// Rewrites the configuration with other workload entries.
    pub fn write_config(&self, workloads: &str) {
        let text = format!(
            "[agent]\nsocket = \"{}\"\nsocket_mode = \"0666\"\nstate_dir = \"{}\"\ntrust_domain = \"{TRUST_DOMAIN}\"\n\n\
             [ca]\nkey = \"{}\"\nsubject = \"CN=agent test root\"\n\n{workloads}\n",
            self.socket.display(),
            self.state.display(),
            self.ca_key,
        );
        std::fs::write(&self.config, text).expect("write config");
    }

    /// Sets an environment variable for the agent process (e.g. a private VAULT_ADDR).
    pub fn env(&mut self, name: &str, value: &str) {
        self.envs.push((name.to_string(), value.to_string()));
    }

    /// Starts the agent and waits until its socket accepts connections.
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
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start keyward agent");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("try_wait"))
            {
                panic!(
                    "the agent exited with {status} before serving:\n{}",
                    self.log()
                );
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

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent running").id()
    }

    /// Sends `signal` (e.g. "TERM", "HUP", "KILL") to the agent.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{signal} failed");
    }

    /// Stops the agent with SIGTERM and asserts that it exits cleanly.
    pub fn stop(&mut self) {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(20));
        assert!(
            status.success(),
            "the agent exited with {status} after SIGTERM:\n{}",
            self.log()
        );
    }

    /// Kills the agent with SIGKILL (leaving its socket file behind).
    pub fn kill(&mut self) {
        self.signal("KILL");
        self.wait_exit(Duration::from_secs(20));
    }

    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("agent running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the agent did not exit in time:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The endpoint address SPIFFE clients take.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The root certificate in the state directory (PEM).
    pub fn root_pem(&self) -> Vec<u8> {
        std::fs::read(self.state.join("ca/root.pem")).expect("root.pem")
    }

    /// A directory `name` inside the agent's directory, owned by `uid`.
    pub fn out_dir(&self, name: &str, uid: u32) -> PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::os::unix::fs::chown(&d, Some(uid), Some(uid)).expect("chown");
        d
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

/// `keyward fetch --socket S --out DIR` run as `uid` (and its group).
pub fn fetch_as(uid: u32, socket: &Path, out: &Path) -> Output {
    Command::new(executable_by_anyone(&keyward_bin()))
        .args(["fetch", "--socket"])
        .arg(socket)
        .arg("--out")
        .arg(out)
        .current_dir("/")
        .uid(uid)
        .gid(uid)
        .env_remove("KEYWARD_LOG")
        .output()
        .expect("run keyward fetch")
}

/// Waits until `cond` holds, polling; panics with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads everything a child wrote to a pipe so far (for diagnostics).
pub fn drain(r: &mut impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

/// A workload entry for `uid` with SPIFFE ID `spiffe://example.org/PATH`.
pub fn entry(path: &str, uid: u32, ttl: &str, extra: &str) -> String {
    format!(
        "[[workload]]\nspiffe_id = \"spiffe://{TRUST_DOMAIN}/{path}\"\nttl = \"{ttl}\"\n{extra}\nselectors = {{ uid = {uid} }}\n"
    )
}

/// The URI SANs of a DER certificate.
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("certificate");
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(u) = name {
                out.push(u.to_string());
            }
        }
    }
    out
}

/// The serial number (hex) of a DER certificate.
pub fn serial(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("certificate");
    cert.raw_serial_as_string()
}

/// Verifies `chain` (leaf first) against `roots` at the current time.
pub fn verify(chain: &[Vec<u8>], roots: &[Vec<u8>]) {
    keyward_core::check::verify_chain(
        &chain[0],
        &chain[1..],
        roots,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap_or_else(|e| panic!("the SVID does not chain to the bundle: {e}"));
}

/// Writes `file` (name, contents) into the agent's directory, readable by every uid
/// (the checkout may not be), and returns its path.
pub fn client_file(agent: &Agent, file: (&str, &str)) -> PathBuf {
    let dir = agent.dir.path().join("clients");
    std::fs::create_dir_all(&dir).expect("mkdir clients");
    let path = dir.join(file.0);
    std::fs::write(&path, file.1).expect("write a client file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    path
}

/// Runs the Python client `script` (name, source) as `uid` with `args`, finding the
/// agent through SPIFFE_ENDPOINT_SOCKET; returns the JSON object it printed.
pub fn run_python(
    agent: &Agent,
    script: (&str, &str),
    uid: u32,
    args: &[&str],
) -> serde_json::Value {
    let python = std::env::var("KEYWARD_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "KEYWARD_TEST_PYTHON not set: the Python clients' venv comes from \
             scripts/pyclients.sh; run the tests through scripts/with-backends.sh or \
             scripts/test.sh"
        )
    });
    let file = client_file(agent, script);
    let out = Command::new(&python)
        .arg(&file)
        .args(args)
        .env("SPIFFE_ENDPOINT_SOCKET", agent.endpoint())
        .current_dir("/")
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "{} {args:?} as uid {uid} failed ({}):\n{}\nagent log:\n{}",
        script.0,
        out.status,
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{} printed no JSON ({e}):\n{}",
            script.0,
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A raw gRPC client for the Workload API, with messages declared by hand (field
/// numbers from the SPIFFE specification), so a test can send what the `spiffe`
/// crate never sends (a request without the security header).
pub mod raw {
    use std::path::Path;

    use hyper_util::rt::TokioIo;
    use tonic::transport::{Channel, Endpoint, Uri};

    /// `X509SVIDRequest {}` (and `X509BundlesRequest {}`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}

    /// `X509SVIDResponse`: the fields the tests read.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct X509SvidResponse {
        /// `repeated X509SVID svids = 1`
        #[prost(message, repeated, tag = "1")]
        pub svids: Vec<X509Svid>,
        /// `repeated bytes crl = 2`
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub crl: Vec<Vec<u8>>,
    }

    /// `X509SVID`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct X509Svid {
        /// `string spiffe_id = 1`
        #[prost(string, tag = "1")]
        pub spiffe_id: String,
        /// `bytes x509_svid = 2`
        #[prost(bytes = "vec", tag = "2")]
        pub x509_svid: Vec<u8>,
        /// `bytes x509_svid_key = 3`
        #[prost(bytes = "vec", tag = "3")]
        pub x509_svid_key: Vec<u8>,
        /// `bytes bundle = 4`
        #[prost(bytes = "vec", tag = "4")]
        pub bundle: Vec<u8>,
    }

    /// A channel over the Unix socket at `path`.
    pub async fn channel(path: &Path) -> Channel {
        let path = path.to_path_buf();
        Endpoint::from_static("http://agent")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map(TokioIo::new)
                }
            }))
            .await
            .expect("connect to the agent socket")
    }

    /// Calls FetchX509SVID and returns the first message, with or without the
    /// `workload.spiffe.io: true` header.
    pub async fn fetch_x509(
        channel: Channel,
        header: bool,
    ) -> Result<X509SvidResponse, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("channel ready");
        let mut req = tonic::Request::new(Empty {});
        if header {
            req.metadata_mut().insert(
                "workload.spiffe.io",
                tonic::metadata::MetadataValue::from_static("true"),
            );
        }
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/SpiffeWorkloadAPI/FetchX509SVID",
        );
        let codec = tonic_prost::ProstCodec::<Empty, X509SvidResponse>::default();
        let mut stream = grpc.server_streaming(req, path, codec).await?.into_inner();
        stream
            .message()
            .await?
            .ok_or_else(|| tonic::Status::internal("the stream ended with no message"))
    }
}
