//! Shared helpers for the tests against moto_server (started by scripts/test.sh).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyward_awskms::KmsSettings;
use keyward_core::KeyUri;
use keyward_core::uri::AwsKmsUri;

/// The moto endpoint; panics (never skips) when the test harness did not start moto.
pub fn endpoint() -> String {
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        if std::env::var_os(var).is_none() {
            panic!("{var} not set: run the tests through scripts/test.sh");
        }
    }
    std::env::var("KEYWARD_TEST_KMS_ENDPOINT").unwrap_or_else(|_| {
        panic!("KEYWARD_TEST_KMS_ENDPOINT not set: run the tests through scripts/test.sh")
    })
}

/// Settings pointing at the test moto_server explicitly.
pub fn settings() -> KmsSettings {
    settings_for(&endpoint())
}

/// Settings pointing at `endpoint`, region us-east-1.
pub fn settings_for(endpoint: &str) -> KmsSettings {
    KmsSettings {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        ..KmsSettings::default()
    }
}

/// A prefix unique to this test process, so runs against one moto never collide.
pub fn run_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("kw-test-{}-{nanos}", std::process::id())
}

/// `awskms:alias/PREFIX/LABEL`.
pub fn alias_uri(prefix: &str, label: &str) -> KeyUri {
    KeyUri::parse(&format!("awskms:alias/{prefix}/{label}")).unwrap()
}

/// The parsed awskms part of a key URI.
pub fn kms(uri: &KeyUri) -> &AwsKmsUri {
    match uri {
        KeyUri::AwsKms(u) => u,
        other => panic!("not an awskms URI: {other}"),
    }
}

/// A loopback port nothing listens on.
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A private moto_server (from the venv on PATH), killed when dropped.
pub struct PrivateMoto {
    child: Child,
    /// Its endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl PrivateMoto {
    /// Starts moto_server on a free port and waits until `/moto-api/` answers.
    pub fn start() -> Self {
        endpoint(); // the harness must have set up the environment (and the venv on PATH)
        let port = closed_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start moto_server from PATH ({e}): run the tests through scripts/test.sh")
            });
        let mut moto = PrivateMoto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let start = Instant::now();
        while !moto_api_answers(port) {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("private moto_server exited at start: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "private moto_server did not answer on port {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// Kills the server and waits until it is gone.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateMoto {
    fn drop(&mut self) {
        self.stop();
    }
}

fn moto_api_answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/")
}
