//! Entry points of the agent's fuzz targets in `fuzz/` (cargo-fuzz), kept here so the
//! regression test (`tests/fuzz_regressions.rs`) runs saved inputs through exactly the
//! code the fuzzer ran. Each function takes arbitrary bytes, must never panic on them,
//! and panics only when an invariant of the code under test is broken.
//!
//! Not part of keyward's API: hidden from the docs, used by `fuzz/` and tests only.

use std::fmt::Debug;
use std::path::Path;

use prost::Message;

use crate::daemon::config::Config;
use crate::daemon::workload_api::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest, X509svidRequest,
};

/// The agent configuration parser (`Config::parse`) on arbitrary text. An accepted
/// configuration must hold what validation promises; a refused one must say where.
pub fn agent_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = Path::new("/etc/keyward");
    match Config::parse(text, "fuzz.toml", base) {
        Ok(cfg) => {
            assert!(cfg.agent.socket.is_absolute(), "relative socket path kept");
            assert!(
                cfg.agent.socket.as_os_str().len() <= 107,
                "socket path longer than sun_path accepted"
            );
            assert!(cfg.agent.socket_mode <= 0o777 && cfg.agent.socket_mode & 0o200 != 0);
            assert!((0.1..=0.9).contains(&cfg.agent.renew_fraction));
            assert!(cfg.agent.state_dir.is_absolute(), "relative state_dir kept");
            if let Some(i) = &cfg.ca.intermediate {
                assert!(i.rotate_before < i.ttl, "rotate_before >= ttl accepted");
            }
            for w in &cfg.workloads {
                assert!(
                    !w.selectors.is_empty(),
                    "workload without selectors accepted"
                );
                assert!(!w.ttl.is_zero(), "zero ttl accepted");
                let prefix = format!("spiffe://{}/", cfg.agent.trust_domain);
                assert!(
                    w.spiffe_id.starts_with(&prefix),
                    "foreign SPIFFE ID accepted"
                );
            }
            assert!(cfg.restart_only_changes(&cfg).is_empty());
        }
        Err(e) => {
            let line = e.to_string();
            assert!(
                line.starts_with("fuzz.toml"),
                "error does not name the file: {line}"
            );
        }
    }
}

/// Decoding of the Workload API request messages, as tonic's prost codec does it for
/// every call on the socket. A request that decodes must encode and decode back to
/// the same message.
pub fn workload_request(data: &[u8]) {
    round_trip::<X509svidRequest>(data);
    round_trip::<X509BundlesRequest>(data);
    round_trip::<JwtsvidRequest>(data);
    round_trip::<JwtBundlesRequest>(data);
    round_trip::<ValidateJwtsvidRequest>(data);
}

fn round_trip<M: Message + Default + PartialEq + Debug>(data: &[u8]) {
    let Ok(msg) = M::decode(data) else {
        return;
    };
    let encoded = msg.encode_to_vec();
    assert_eq!(encoded.len(), msg.encoded_len(), "encoded_len is wrong");
    let again = M::decode(encoded.as_slice()).expect("a re-encoded request decodes");
    assert_eq!(again, msg, "a request changed through encode and decode");
}
