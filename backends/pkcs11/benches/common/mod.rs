//! Setup shared by the SoftHSM benchmarks: the module from the test environment and
//! fresh tokens made before the benchmark process loads the module.

use std::path::PathBuf;
use std::process::Command;

/// The user PIN of every benchmark token.
pub const PIN: &str = "bench-pin-1234";

/// The PKCS#11 module named by the environment scripts/softhsm.sh sets up.
pub fn module() -> PathBuf {
    let m = std::env::var_os("KEYWARD_TEST_PKCS11_MODULE").unwrap_or_else(|| {
        panic!("KEYWARD_TEST_PKCS11_MODULE not set: run the benchmarks through scripts/test.sh or source scripts/softhsm.sh and call softhsm_start")
    });
    assert!(
        std::env::var_os("SOFTHSM2_CONF").is_some(),
        "SOFTHSM2_CONF not set: run the benchmarks through scripts/test.sh"
    );
    PathBuf::from(m)
}

/// A fresh token made with softhsm2-util before this process loads the module.
pub fn make_token(label: &str) {
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            PIN,
            "--so-pin",
            "bench-so-5678",
        ])
        .output()
        .expect("run softhsm2-util (install softhsm2)");
    assert!(
        out.status.success(),
        "softhsm2-util: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
