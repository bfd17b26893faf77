//! End-to-end: `socket_group` names resolve through the C library's NSS lookups, so a
//! group that only an NSS source knows (LDAP, sssd and systemd-homed in real life; here
//! nss_wrapper with a private group file, Debian package libnss-wrapper, which
//! scripts/with-backends.sh installs) is found, and the agent's socket gets its gid.

mod agent_common;
mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use agent_common::*;

/// A group name no system has in /etc/group.
const GROUP: &str = "kw-nss-only";
/// Its gid in the NSS-only group file.
const GID: u32 = 4242;

#[test]
fn a_socket_group_only_nss_knows_is_resolved() {
    let mut agent = Agent::new(&entry("api", 0, "1h", ""));
    let passwd = agent.dir.path().join("nss-passwd");
    let group = agent.dir.path().join("nss-group");
    std::fs::write(&passwd, "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(&group, format!("root:x:0:\n{GROUP}:x:{GID}:\n")).unwrap();
    let nss = [
        ("LD_PRELOAD", "libnss_wrapper.so".to_string()),
        ("NSS_WRAPPER_PASSWD", passwd.display().to_string()),
        ("NSS_WRAPPER_GROUP", group.display().to_string()),
    ];

    let etc_group = std::fs::read_to_string("/etc/group").unwrap();
    assert!(
        !etc_group
            .lines()
            .any(|l| l.split(':').next() == Some(GROUP)),
        "{GROUP} must not be in /etc/group: only NSS may know it"
    );
    let plain = Command::new("getent")
        .args(["group", GROUP])
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "without nss_wrapper {GROUP} is unknown"
    );
    let wrapped = Command::new("getent")
        .args(["group", GROUP])
        .envs(nss.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&wrapped.stdout).trim(),
        format!("{GROUP}:x:{GID}:"),
        "nss_wrapper must resolve the group (install libnss-wrapper): {}",
        String::from_utf8_lossy(&wrapped.stderr)
    );

    let config = std::fs::read_to_string(&agent.config).unwrap();
    let with_group = config.replacen(
        "socket_mode = \"0666\"\n",
        &format!("socket_mode = \"0660\"\nsocket_group = \"{GROUP}\"\n"),
        1,
    );
    assert_ne!(config, with_group, "the config sets the socket's mode");
    std::fs::write(&agent.config, with_group).unwrap();
    for (k, v) in &nss {
        agent.env(k, v);
    }
    agent.start();
    let meta = std::fs::metadata(&agent.socket).unwrap();
    assert_eq!(meta.gid(), GID, "the socket belongs to the NSS-only group");
    assert_eq!(meta.mode() & 0o777, 0o660);
    agent.stop();
}
