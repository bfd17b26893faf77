//! End-to-end: the agent with its keys in a TPM (tpm2-pkcs11 on swtpm): the root, the
//! agent's own intermediate and its JWT key; and the TPM going away under the running
//! agent (swtpm and its resource manager killed) and coming back, modelled on the
//! SoftHSM case of tests/agent_outages.rs: the current SVID keeps being served, the
//! agent turns unready, and it renews once the TPM is back.

mod agent_common;
mod common;
mod metrics_common;
mod tpm_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agent_common::*;
use metrics_common::{get, metrics_addr, with_metrics};
use spiffe::{JwtSvid, TrustDomain, WorkloadApiClient};
use tempfile::TempDir;
use tokio_stream::StreamExt;
use tpm_common::TpmToken;

/// The `[ca.intermediate]` and `[jwt]` sections, inserted after `[ca]`'s subject.
fn with_sections(agent: &Agent, sections: &str) {
    let config = std::fs::read_to_string(&agent.config).unwrap().replace(
        "subject = \"CN=agent test root\"\n",
        &format!("subject = \"CN=agent test root\"\n\n{sections}"),
    );
    std::fs::write(&agent.config, config).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_root_intermediate_and_jwt_key_live_in_the_tpm() {
    let dir = TempDir::new().unwrap();
    let tpm = TpmToken::take();
    // The JWT key on a second token of the same store: tpm2-pkcs11 gives both the same
    // serial, and one process uses both.
    let jwt_token = tpm.add_token("kw-jwt");
    let root = tpm.key_uri("agent-root");
    common::generate_key(&dir.path().join("state"), &root, "ecdsa-p256");
    let mut agent = Agent::with_ca_key(dir, &root, &entry("api", 0, "1h", ""));
    with_sections(
        &agent,
        &format!(
            "[ca.intermediate]\nkey = \"{}\"\nttl = \"1d\"\n\n[jwt]\nkey = \"{}\"\nalgorithm = \"ES256\"\n",
            tpm.key_uri("agent-int-{n}"),
            tpm.key_uri_on(&jwt_token, "agent-jwt"),
        ),
    );
    agent.start();

    let c = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .expect("connect");
    let ctx = c.fetch_x509_context().await.expect("fetch X.509 context");
    let svid = ctx.default_svid().expect("an SVID");
    let chain: Vec<Vec<u8>> = svid
        .cert_chain()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    let td = TrustDomain::new("example.org").unwrap();
    let roots: Vec<Vec<u8>> = ctx
        .bundle_set()
        .get(&td)
        .expect("a bundle")
        .authorities()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    assert_eq!(chain.len(), 2, "leaf and the agent's intermediate");
    verify(&chain, &roots);

    let token = c
        .fetch_jwt_svid(["web"], None)
        .await
        .unwrap_or_else(|e| panic!("fetch a JWT-SVID: {e}\n{}", agent.log()));
    let bundles = c.fetch_jwt_bundles().await.expect("fetch JWT bundles");
    JwtSvid::parse_and_validate(token.token(), &bundles, &["web"])
        .unwrap_or_else(|e| panic!("the spiffe crate rejects the token: {e:?}"));
    agent.stop();

    // The agent made both keys in the TPM, protected like any key keyward generates.
    for (token, object) in [(&tpm.token, "agent-int-1"), (&jwt_token, "agent-jwt")] {
        let key = tpm.listed_private(&agent.state, token, object);
        assert_eq!(key["sensitive"], true, "{key}");
        assert_eq!(key["extractable"], false, "{key}");
    }
}

/// A TPM chain of this test's own (scripts/swtpm.sh start) in a directory of its own,
/// so that taking its TPM away disturbs no other test; stopped on drop (before its
/// directory goes).
struct PrivateTpm {
    dir: PathBuf,
    env: Vec<(String, String)>,
    _home: TempDir,
}

fn swtpm_sh(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/swtpm.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .output()
        .expect("run scripts/swtpm.sh");
    assert!(
        out.status.success(),
        "scripts/swtpm.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl PrivateTpm {
    fn start() -> Self {
        let home = TempDir::new().unwrap();
        let dir = home.path().join("tpm");
        let env = swtpm_sh(&["start", dir.to_str().unwrap()])
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PrivateTpm {
            dir,
            env,
            _home: home,
        }
    }

    fn var(&self, name: &str) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("scripts/swtpm.sh start did not print {name}"))
    }

    fn key_uri(&self, object: &str) -> String {
        format!(
            "pkcs11:token={};object={object}?module-path={}&pin-source=file:{}",
            self.var("KEYWARD_TEST_TPM_TOKEN"),
            self.var("KEYWARD_TEST_TPM_MODULE"),
            self.var("KEYWARD_TEST_TPM_PIN_FILE"),
        )
    }

    fn kill(&self) {
        swtpm_sh(&["kill-tpm", self.dir.to_str().unwrap()]);
    }

    fn revive(&self) {
        swtpm_sh(&["revive-tpm", self.dir.to_str().unwrap()]);
    }
}

impl Drop for PrivateTpm {
    fn drop(&mut self) {
        // No assertion here: this may run while a failed test unwinds.
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/swtpm.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tpm_going_away_under_the_agent_keeps_svids_served_and_recovers() {
    let tpm = PrivateTpm::start();
    let dir = TempDir::new().unwrap();
    let key = tpm.key_uri("agent-ca");
    let generated = Command::new(common::keyward_bin())
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args([
            "key",
            "generate",
            "--key",
            &key,
            "--algorithm",
            "ecdsa-p256",
        ])
        .envs(tpm.env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("keyward key generate");
    assert!(generated.status.success(), "{generated:?}");
    // ttl 20 s: the renewal is due 9-10 s after issuance, while the TPM is away.
    let mut agent = Agent::with_ca_key(dir, &key, &with_metrics(&entry("tpm", 0, "20s", "")));
    for (k, v) in &tpm.env {
        agent.env(k, v);
    }
    agent.start();
    let addr = metrics_addr(&agent.log());
    let roots = keyward_core::check::pem_to_ders(&agent.root_pem()).unwrap();
    let c = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .expect("connect");
    let mut svids = c.stream_x509_svids().await.expect("open the stream");
    let first = tokio::time::timeout(Duration::from_secs(20), svids.next())
        .await
        .expect("a first SVID in time")
        .expect("stream open")
        .expect("an SVID");
    let first: Vec<Vec<u8>> = first
        .cert_chain()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    verify(&first, &roots);
    wait_for("/readyz to say 200", Duration::from_secs(15), || {
        get(addr, "/readyz").status == 200
    });

    tpm.kill();
    let gone = Instant::now();
    wait_for(
        "/readyz to turn 503 once the renewal fails",
        Duration::from_secs(25),
        || get(addr, "/readyz").status == 503,
    );
    let unready = get(addr, "/readyz");
    assert!(
        unready.body.contains("pkcs11"),
        "names the backend: {}",
        unready.body
    );
    eprintln!("tpm: unready {:?} after it went away", gone.elapsed());
    // The stream stays quiet and the current SVID valid while the TPM is away.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), svids.next())
            .await
            .is_err(),
        "nothing on the stream while the TPM is away:\n{}",
        agent.log()
    );
    verify(&first, &roots);

    tpm.revive();
    let back = Instant::now();
    let renewed = tokio::time::timeout(Duration::from_secs(40), svids.next())
        .await
        .unwrap_or_else(|_| panic!("no renewal after the TPM came back:\n{}", agent.log()))
        .expect("stream open")
        .unwrap_or_else(|e| panic!("stream error {e}:\n{}", agent.log()));
    eprintln!("tpm: renewed {:?} after it came back", back.elapsed());
    let renewed: Vec<Vec<u8>> = renewed
        .cert_chain()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    assert_ne!(serial(&renewed[0]), serial(&first[0]), "a new certificate");
    verify(&renewed, &roots);
    wait_for("/readyz to turn 200 again", Duration::from_secs(15), || {
        get(addr, "/readyz").status == 200
    });
    agent.stop();
}
