//! End-to-end: hostile callers of the agent's socket. Thousands of idle connections
//! and slow writers neither exhaust the agent nor delay a legitimate caller and are
//! closed after the idle timeout; an oversized request is refused; a burst past the
//! per-uid rate limit gets `ResourceExhausted`; a caller that execs another program
//! stops receiving the identity of the program it was.

mod agent_common;
mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_common::*;
use hyper_util::rt::TokioIo;
use tonic::Code;
use tonic::transport::{Endpoint, Uri};

/// An agent with `limits` added to its `[agent]` section.
fn agent_with(limits: &str, workloads: &str) -> Agent {
    let agent = Agent::new(workloads);
    let text = std::fs::read_to_string(&agent.config).expect("config");
    let text = text.replacen("\n[ca]", &format!("{limits}\n\n[ca]"), 1);
    std::fs::write(&agent.config, text).expect("config");
    agent
}

/// The agent's resident memory in KiB (VmRSS of /proc/PID/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Whether the agent closed `s` (end of file or reset) within `limit`; whatever the
/// server wrote first (its HTTP/2 settings) is skipped.
fn closed_within(s: &mut UnixStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Raises this process's soft open-file limit to its hard limit.
fn raise_own_fd_limit(need: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: now.maximum,
            maximum: now.maximum,
        },
    )
    .expect("raise RLIMIT_NOFILE");
    let after = getrlimit(Resource::Nofile).current;
    assert!(
        after.is_none_or(|n| n > need),
        "the open file limit {after:?} is too low for this test"
    );
}

/// One FetchX509SVID through the `spiffe` crate on a new connection; its duration.
async fn timed_fetch(agent: &Agent) -> Duration {
    let start = Instant::now();
    let c = spiffe::WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .expect("connect");
    let svid = c
        .fetch_x509_svid()
        .await
        .expect("a legitimate caller is served");
    let took = start.elapsed();
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/legit");
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_slow_writers_are_bounded_and_closed_while_callers_are_served() {
    const IDLE: usize = 5000;
    raise_own_fd_limit(IDLE as u64 + 200);
    // The idle connections come from the test's own uid, as the legitimate caller's
    // do: no per-uid share here (tests/agent_pinning.rs covers that).
    let mut agent = agent_with(
        "idle_timeout = \"3s\"\nmax_connections_per_uid = 10000",
        &entry("legit", 0, "1h", ""),
    );
    agent.start();
    let rss_before = rss_kib(agent.pid());

    let mut idle: Vec<UnixStream> = (0..IDLE)
        .map(|_| UnixStream::connect(&agent.socket).expect("open an idle connection"))
        .collect();
    // Slow writers: the HTTP/2 preface, one byte every 100 ms, on their own threads.
    let slow: Vec<_> = (0..20)
        .map(|_| {
            let mut s = UnixStream::connect(&agent.socket).expect("connect");
            std::thread::spawn(move || {
                for b in b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" {
                    if s.write_all(&[*b]).is_err() {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                closed_within(&mut s, Duration::from_secs(15))
            })
        })
        .collect();

    // A legitimate caller is served promptly while all of them are open.
    let mut took = Vec::new();
    for _ in 0..5 {
        took.push(timed_fetch(&agent).await);
    }
    let rss_during = rss_kib(agent.pid());
    eprintln!(
        "agent RSS: {rss_before} KiB before, {rss_during} KiB with {IDLE} idle connections; fetch times: {took:?}"
    );
    assert!(
        rss_during < 100 * 1024,
        "the agent's RSS grew to {rss_during} KiB with {IDLE} idle connections"
    );
    let slowest = took.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_millis(500),
        "a legitimate fetch took {slowest:?} with {IDLE} idle connections open"
    );

    // Every idle connection is closed once the idle timeout (3 s) has passed.
    let open_after = idle
        .iter_mut()
        .map(|s| closed_within(s, Duration::from_secs(15)))
        .filter(|closed| !closed)
        .count();
    assert_eq!(
        open_after, 0,
        "idle connections still open after the timeout"
    );
    for t in slow {
        assert!(
            t.join().expect("slow writer"),
            "a slow writer was not closed"
        );
    }
    // The agent still serves after all that.
    timed_fetch(&agent).await;
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_outlives_the_idle_timeout() {
    let mut agent = agent_with("idle_timeout = \"1s\"", &entry("legit", 0, "1h", ""));
    agent.start();
    let c = spiffe::WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .expect("connect");
    let mut stream = c.stream_x509_svids().await.expect("stream");
    use tokio_stream::StreamExt;
    stream.next().await.expect("first").expect("first SVID");
    // Nothing arrives for 3 s (the SVID lives an hour), and the stream is not cut.
    let next = tokio::time::timeout(Duration::from_secs(3), stream.next()).await;
    assert!(
        next.is_err(),
        "the stream ended or changed: {:?}",
        next.map(|m| m.map(|r| r.map(|_| ())))
    );
    agent.stop();
}

/// A request message of `size` bytes (field 1, bytes), whatever the method expects.
#[derive(Clone, PartialEq, prost::Message)]
struct Padded {
    #[prost(bytes = "vec", tag = "1")]
    pad: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused_and_the_agent_carries_on() {
    let mut agent = Agent::new(&entry("legit", 0, "1h", ""));
    agent.start();
    let channel = raw::channel(&agent.socket).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut req = tonic::Request::new(Padded {
        pad: vec![b'x'; 4 << 20],
    });
    req.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/SpiffeWorkloadAPI/FetchX509SVID");
    let codec = tonic_prost::ProstCodec::<Padded, raw::X509SvidResponse>::default();
    let err = match grpc.server_streaming(req, path, codec).await {
        Ok(mut s) => s.get_mut().message().await.expect_err("no answer to 4 MiB"),
        Err(e) => e,
    };
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("too large"), "{err:?}");
    let ok = raw::fetch_x509(raw::channel(&agent.socket).await, true)
        .await
        .expect("still serving");
    assert_eq!(ok.svids[0].spiffe_id, "spiffe://example.org/legit");
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_rate_limit_is_refused_then_calls_succeed_again() {
    let mut agent = agent_with(
        "rate_limit = { per_second = 2, burst = 5 }",
        &entry("legit", 0, "1h", ""),
    );
    agent.start();
    let channel = raw::channel(&agent.socket).await;
    let mut codes = Vec::new();
    for _ in 0..12 {
        codes.push(
            raw::fetch_x509(channel.clone(), true)
                .await
                .map(|_| ())
                .map_err(|e| e.code()),
        );
    }
    let refused = codes
        .iter()
        .filter(|c| **c == Err(Code::ResourceExhausted))
        .count();
    assert!(codes[..5].iter().all(Result::is_ok), "{codes:?}");
    assert!(refused >= 5, "the burst was not limited: {codes:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    raw::fetch_x509(channel, true)
        .await
        .expect("a call after the bucket refilled succeeds");
    agent.stop();
}

/// Connects to `socket` as `perl`, relays the connection over stdin/stdout, and on
/// SIGUSR1 execs `second` (another executable) which keeps relaying the socket's
/// bytes to stdout; a forked helper keeps copying stdin to the socket.
const RELAY: &str = r#"
use Socket;
$^F = 1000;
my ($path, $second) = @ARGV;
socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
connect($s, pack_sockaddr_un($path)) or die "connect: $!";
$| = 1;
if (fork() == 0) {
    my $b;
    while (sysread(STDIN, $b, 65536)) { syswrite($s, $b) or exit 0 }
    exit 0;
}
my $fd = fileno($s);
$SIG{USR1} = sub {
    exec {$second} $second, '-e',
        'open(my $s, "+<&=", $ARGV[0]) or die; $|=1; my $b; while (sysread($s, $b, 65536)) { syswrite(STDOUT, $b) }',
        $fd;
    die "exec: $!";
};
my $b;
while (1) {
    my $n = sysread($s, $b, 65536);
    next if !defined $n && $!{EINTR};
    last if !$n;
    syswrite(STDOUT, $b);
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_execs_another_program_stops_receiving_the_old_identity() {
    let perl = std::fs::canonicalize("/usr/bin/perl").expect("perl");
    let mut agent = Agent::new(&format!(
        "[[workload]]\nspiffe_id = \"spiffe://example.org/first\"\nttl = \"4s\"\nselectors = {{ uid = 0, path = \"{}\" }}\n",
        perl.display()
    ));
    agent.start();
    // The second program: the same interpreter under another path.
    let second = agent.dir.path().join("second-perl");
    std::fs::copy(&perl, &second).expect("copy perl");
    let (socket, second_s) = (agent.socket.clone(), second.clone());
    let relay_pid = std::sync::Arc::new(std::sync::Mutex::new(None));
    let pid_slot = relay_pid.clone();
    let channel = Endpoint::from_static("http://agent")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let mut child = tokio::process::Command::new(&perl)
                .arg("-e")
                .arg(RELAY)
                .arg(&socket)
                .arg(&second_s)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("start the relay");
            *pid_slot.lock().unwrap() = child.id();
            let io = tokio::io::join(child.stdout.take().unwrap(), child.stdin.take().unwrap());
            // The child lives as long as the test; dropping it here would kill it.
            std::mem::forget(child);
            async move { Ok::<_, std::io::Error>(TokioIo::new(io)) }
        }))
        .await
        .expect("connect through the relay");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut req = tonic::Request::new(raw::Empty {});
    req.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/SpiffeWorkloadAPI/FetchX509SVID");
    let codec = tonic_prost::ProstCodec::<raw::Empty, raw::X509SvidResponse>::default();
    let mut stream = grpc
        .server_streaming(req, path, codec)
        .await
        .expect("the first program is served")
        .into_inner();
    let first = stream.message().await.expect("first").expect("a message");
    assert_eq!(first.svids[0].spiffe_id, "spiffe://example.org/first");

    let pid = relay_pid.lock().unwrap().expect("relay pid");
    let ok = Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
    wait_for("the relay to exec", Duration::from_secs(10), || {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .as_deref()
            == Some(second.as_path())
    });
    // The SVID is renewed after 2 s; the caller now runs another program and gets no
    // new SVID for the first identity: the stream ends with PermissionDenied.
    let next = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("the stream answers within 20 s");
    match next {
        Err(status) => assert_eq!(status.code(), Code::PermissionDenied, "{status:?}"),
        Ok(msg) => panic!("the exec'd caller still received: {msg:?}"),
    }
    let _ = Command::new("kill").arg(pid.to_string()).status();
    assert!(
        agent.log().contains("now runs another executable"),
        "{}",
        agent.log()
    );
    agent.stop();
}
