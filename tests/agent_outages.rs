//! End-to-end: the agent rides out an outage of its CA key's backend. The CA key lives
//! on a private server this test starts (OpenBao Transit, moto KMS); the server is
//! paused (SIGSTOP: it accepts connections but never answers) across a renewal, for
//! longer than a retry period, then resumed. Throughout, a streaming client keeps its
//! last SVID (no error, no end of stream) and that SVID still verifies; `/readyz` says
//! 503; the agent retries with exponential backoff (0.5 s doubling), not in a tight
//! loop; after the resume a renewed SVID arrives within one backoff period (plus the
//! backend's request deadline and slack) and `/readyz` says 200 again.

mod agent_common;
mod backend_common;
mod common;
mod metrics_common;

use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agent_common::*;
use backend_common::PrivateServer;
use common::{keyward_bin, unique};
use metrics_common::{get, metrics_addr, scrape, with_metrics};
use tempfile::TempDir;
use tokio_stream::StreamExt;

/// The agent's first retry delay; it doubles after every failure (rotation.rs).
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The agent's longest retry delay (rotation.rs).
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Tolerance for scheduling on a busy 2-core test machine.
const SLACK: Duration = Duration::from_secs(5);

/// One outage: the SVID lifetime and when (after the first SVID was issued) the
/// backend is paused and resumed. The renewal (at half the lifetime, up to 10 % earlier)
/// must fall inside the outage, and the SVID must outlive it.
struct Plan {
    /// `[[workload]] ttl`, in seconds.
    ttl: u64,
    /// Pause the backend this long after the first SVID's issuance.
    stop_at: Duration,
    /// Resume it this long after the first SVID's issuance.
    resume_at: Duration,
    /// How long one backend request may take before the backend gives up on it.
    request_deadline: Duration,
}

/// What the streaming client saw: an SVID's chain (leaf first), an error, or the end.
enum Seen {
    Svid(Vec<Vec<u8>>),
    Error(String),
    End,
}

/// Streams the caller's X.509 SVIDs (the `spiffe` crate) on a thread of its own.
fn stream_svids(endpoint: String) -> mpsc::Receiver<Seen> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = spiffe::WorkloadApiClient::connect_to(endpoint)
                .await
                .expect("connect with the spiffe crate");
            let mut stream = client.stream_x509_svids().await.expect("open the stream");
            loop {
                let seen = match stream.next().await {
                    Some(Ok(svid)) => Seen::Svid(
                        svid.cert_chain()
                            .iter()
                            .map(|c| c.as_bytes().to_vec())
                            .collect(),
                    ),
                    Some(Err(e)) => Seen::Error(e.to_string()),
                    None => Seen::End,
                };
                let end = !matches!(seen, Seen::Svid(_));
                if tx.send(seen).is_err() || end {
                    return;
                }
            }
        });
    });
    rx
}

/// The next SVID within `timeout`; panics on an error, the end of the stream or none.
fn next_svid(rx: &mpsc::Receiver<Seen>, timeout: Duration, what: &str, log: &str) -> Vec<Vec<u8>> {
    match rx.recv_timeout(timeout) {
        Ok(Seen::Svid(chain)) => chain,
        Ok(Seen::Error(e)) => panic!("{what}: the stream sent an error: {e}\n{log}"),
        Ok(Seen::End) => panic!("{what}: the stream ended\n{log}"),
        Err(e) => panic!("{what}: no SVID within {timeout:?} ({e})\n{log}"),
    }
}

/// Seconds from now until the certificate's notAfter.
fn secs_left(der: &[u8]) -> i64 {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("certificate");
    cert.validity().not_after.timestamp() - time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The agent's delay before retry number `failures` (1-based).
fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// The most failed attempts a doubling schedule from 0.5 s allows in `outage`: the
/// delays 0.5, 1, 2, ... s sum past the outage after about log2(outage / 0.5 s) of
/// them; two more for the attempt in flight when it began and the rounding.
fn max_failures(outage: Duration) -> u32 {
    (outage.as_secs_f64() / FIRST_BACKOFF.as_secs_f64())
        .log2()
        .floor() as u32
        + 2
}

fn counter(addr: std::net::SocketAddr, backend: &str, outcome: &str) -> u32 {
    scrape(addr)
        .value(
            "keyward_svid_issuance_total",
            &[("backend", backend), ("outcome", outcome)],
        )
        .unwrap_or(0.0) as u32
}

/// How the test takes the backend away and gives it back.
struct Backend<'a> {
    /// The scheme label the agent's metrics use (`transit`, `awskms`, `pkcs11`).
    name: &'a str,
    /// Environment for `keyward key generate` and the agent.
    env: Vec<(&'static str, String)>,
    /// Starts the outage.
    take_away: Box<dyn Fn() + 'a>,
    /// Ends it; `None` when the test only covers the outage itself.
    give_back: Option<Box<dyn Fn() + 'a>>,
}

/// Pausing and resuming `server` with SIGSTOP and SIGCONT.
fn paused<'a>(server: &'a PrivateServer, name: &'a str) -> Backend<'a> {
    Backend {
        name,
        env: server.client_env(),
        take_away: Box::new(|| server.signal("STOP")),
        give_back: Some(Box::new(|| server.signal("CONT"))),
    }
}

/// Generates the CA key `key` in `backend`, runs an agent with it and one short-lived
/// workload entry for this process, and takes the backend away as `plan` says.
fn agent_rides_out_an_outage(b: Backend<'_>, key: &str, plan: Plan) {
    let (env, backend) = (&b.env, b.name);
    let dir = TempDir::new().unwrap();
    let generated = Command::new(keyward_bin())
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["key", "generate", "--key", key, "--algorithm", "ecdsa-p256"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("keyward key generate");
    assert!(generated.status.success(), "{generated:?}");
    let ttl = format!("{}s", plan.ttl);
    let mut agent = Agent::with_ca_key(dir, key, &with_metrics(&entry("outage", 0, &ttl, "")));
    for (k, v) in env {
        agent.env(k, v);
    }
    if backend == "transit" {
        let deadline = format!("{}ms", plan.request_deadline.as_millis());
        agent.env("VAULT_CLIENT_TIMEOUT", &deadline);
    }
    agent.start();
    let addr = metrics_addr(&agent.log());
    assert_eq!(get(addr, "/readyz").status, 200, "{}", agent.log());
    let roots = keyward_core::check::pem_to_ders(&agent.root_pem()).unwrap();

    let svids = stream_svids(agent.endpoint());
    let first = next_svid(&svids, Duration::from_secs(20), "first SVID", &agent.log());
    verify(&first, &roots);
    let left = secs_left(&first[0]);
    assert!(
        left > 0 && left <= plan.ttl as i64,
        "ttl {ttl}, {left} s left"
    );
    // notAfter is the issuance plus the ttl: the schedule is relative to the issuance.
    let issued = Instant::now() - Duration::from_secs(plan.ttl - left as u64);
    std::thread::sleep((issued + plan.stop_at).saturating_duration_since(Instant::now()));

    (b.take_away)();
    let stopped = Instant::now();
    wait_for("/readyz to turn 503", Duration::from_secs(20), || {
        get(addr, "/readyz").status == 503
    });
    eprintln!("{backend}: unready {:?} into the outage", stopped.elapsed());
    std::thread::sleep((issued + plan.resume_at).saturating_duration_since(Instant::now()));

    // Just before the resume: still unready, the stream quiet, the old SVID valid.
    let unready = get(addr, "/readyz");
    assert_eq!(
        unready.status, 503,
        "unready through the outage: {}",
        unready.body
    );
    assert!(
        unready.body.contains(backend),
        "names the backend: {}",
        unready.body
    );
    match svids.try_recv() {
        Err(mpsc::TryRecvError::Empty) => {}
        Ok(Seen::Svid(_)) => panic!("an SVID was issued while the backend was paused"),
        Ok(Seen::Error(e)) => panic!("the stream sent an error during the outage: {e}"),
        Ok(Seen::End) | Err(mpsc::TryRecvError::Disconnected) => {
            panic!("the stream ended during the outage")
        }
    }
    assert!(secs_left(&first[0]) > 0, "the plan keeps the SVID valid");
    verify(&first, &roots);
    let failures = counter(addr, backend, "failure");
    let outage = stopped.elapsed();
    let logged = plain_count(&agent.log(), "cannot issue workload SVID");
    eprintln!("{backend}: {failures} failed issuances ({logged} logged) in a {outage:?} outage");
    assert!(
        failures >= 1,
        "the renewal came due during the outage and failed:\n{}",
        agent.log()
    );
    let allowed = max_failures(outage);
    assert!(
        failures <= allowed && logged as u32 <= allowed,
        "{failures} failures ({logged} logged) in {outage:?}: more than the {allowed} \
         exponential backoff allows:\n{}",
        agent.log()
    );

    let Some(give_back) = b.give_back else {
        agent.stop();
        return;
    };
    give_back();
    let resumed = Instant::now();
    // The retry due next waits at most one more doubling, then one request.
    let bound = backoff(failures + 1) + plan.request_deadline + SLACK;
    let renewed = next_svid(&svids, bound, "renewal after the resume", &agent.log());
    eprintln!(
        "{backend}: renewed {:?} after the outage (bound {bound:?})",
        resumed.elapsed()
    );
    assert_ne!(serial(&renewed[0]), serial(&first[0]), "a new certificate");
    verify(&renewed, &roots);
    assert!(secs_left(&renewed[0]) > plan.ttl as i64 / 2, "a fresh SVID");
    wait_for("/readyz to turn 200 again", Duration::from_secs(15), || {
        get(addr, "/readyz").status == 200
    });
    eprintln!("{backend}: ready {:?} after the outage", resumed.elapsed());
    assert!(counter(addr, backend, "success") >= 2);
    assert!(
        matches!(svids.try_recv(), Err(mpsc::TryRecvError::Empty)),
        "the stream stays open with nothing else to say"
    );
    agent.stop();
}

/// How many log lines contain `needle` (ANSI colours removed).
fn plain_count(log: &str, needle: &str) -> usize {
    metrics_common::plain(log)
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn transit_outage_keeps_svids_served_and_recovers() {
    let bao = PrivateServer::bao();
    // ttl 30 s: renewal due 13.5-15 s after issuance, inside a 10 s to 24 s outage,
    // and the SVID valid until 30 s. A 1 s client deadline makes each attempt fail
    // fast, so the agent's own backoff schedule is what spaces the retries.
    let plan = Plan {
        ttl: 30,
        stop_at: Duration::from_secs(10),
        resume_at: Duration::from_secs(24),
        request_deadline: Duration::from_secs(1),
    };
    let key = format!("transit:{}", unique("kw-outage"));
    agent_rides_out_an_outage(paused(&bao, "transit"), &key, plan);
}

#[test]
fn kms_outage_keeps_svids_served_and_recovers() {
    let moto = PrivateServer::moto();
    // ttl 36 s: renewal due 16.2-18 s after issuance, inside a 10 s to 32 s outage.
    // A KMS request gives up after the backend's default 10 s deadline, so the first
    // renewal attempt fails by 28 s and the next one is in flight at the resume.
    let plan = Plan {
        ttl: 36,
        stop_at: Duration::from_secs(10),
        resume_at: Duration::from_secs(32),
        request_deadline: Duration::from_secs(10),
    };
    let key = format!("awskms:alias/{}", unique("kw-outage"));
    agent_rides_out_an_outage(paused(&moto, "awskms"), &key, plan);
}

/// A SoftHSM configuration of this test's own (file object store in `dir/tokens`)
/// with one token holding the agent's CA key; returns (SOFTHSM2_CONF, key URI).
fn private_softhsm(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let module = common::required_env("KEYWARD_TEST_PKCS11_MODULE");
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "kw-outage"])
        .args(["--pin", "outage-pin", "--so-pin", "so-secret-1"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util");
    assert!(out.status.success(), "{out:?}");
    let pin = dir.join("token.pin");
    std::fs::write(&pin, "outage-pin").unwrap();
    let key = format!(
        "pkcs11:token=kw-outage;object=agent-ca?module-path={module}&pin-source=file:{}",
        pin.display()
    );
    (conf, key)
}

/// SoftHSM: the token directory disappears under the running agent (a removed token)
/// and comes back. SoftHSM marks the token invalid once it notices (and keeps it so
/// after the directory is back, until the module is finalized and initialized
/// again), and `C_Initialize` fails while the directory is away; keyward's PKCS#11
/// backend reports this as an outage and resets the module at the next attempt, so
/// the agent keeps serving its current SVID, reports unready, backs off, and renews
/// within one backoff period after the directory is back.
#[test]
fn softhsm_token_removed_under_the_agent_keeps_svids_served_and_recovers() {
    let hsm = TempDir::new().unwrap();
    let (conf, key) = private_softhsm(hsm.path());
    let tokens = hsm.path().join("tokens");
    let away = hsm.path().join("tokens-away");
    let plan = Plan {
        ttl: 30,
        stop_at: Duration::from_secs(10),
        resume_at: Duration::from_secs(24),
        request_deadline: Duration::ZERO,
    };
    let backend = Backend {
        name: "pkcs11",
        env: vec![("SOFTHSM2_CONF", conf.display().to_string())],
        take_away: Box::new(|| {
            std::fs::rename(&tokens, &away).expect("move the token directory away")
        }),
        give_back: Some(Box::new(|| {
            std::fs::rename(&away, &tokens).expect("move the token directory back")
        })),
    };
    agent_rides_out_an_outage(backend, &key, plan);
}
