//! Name checks for the configuration: trust domains, SPIFFE IDs, group names.

use nix::unistd::Group;

/// The gid of the group `name`, looked up through the C library (getgrnam_r), so a
/// group from any NSS source (LDAP, sssd, systemd-homed) counts as well as
/// /etc/group; the error is one line naming the group.
pub fn lookup_group(name: &str) -> Result<u32, String> {
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!(
            "unknown group '{name}' (the system's group database has no such group)"
        )),
        Err(e) => Err(format!("cannot look up group '{name}': {e}")),
    }
}

/// Checks a trust domain name: lower-case letters, digits, `.`, `-` and `_`.
pub fn check_trust_domain(td: &str) -> Result<(), String> {
    if td.is_empty() {
        return Err("trust_domain is empty".into());
    }
    // The SPIFFE ID standard caps a trust domain name at 255 bytes.
    if td.len() > 255 {
        return Err(format!(
            "trust_domain is {} bytes long; at most 255 are allowed",
            td.len()
        ));
    }
    if !td
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!(
            "trust domain '{td}' may hold only lower-case letters, digits, '.', '-' and '_'"
        ));
    }
    Ok(())
}

/// Checks a SPIFFE ID: `spiffe://TRUST_DOMAIN/path`, in the agent's trust domain.
pub fn check_spiffe_id(id: &str, trust_domain: &str) -> Result<(), String> {
    let rest = id
        .strip_prefix("spiffe://")
        .ok_or_else(|| format!("spiffe_id '{id}' must start with spiffe://"))?;
    let (td, path) = rest.split_once('/').map_or((rest, ""), |(t, p)| (t, p));
    if td != trust_domain {
        return Err(format!(
            "spiffe_id '{id}' is not in the trust domain '{trust_domain}'"
        ));
    }
    if path.is_empty() {
        return Err(format!(
            "spiffe_id '{id}' needs a path after the trust domain (e.g. spiffe://{td}/api)"
        ));
    }
    for seg in path.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(format!(
                "spiffe_id '{id}' has an empty, '.' or '..' path segment"
            ));
        }
        if !seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(format!(
                "spiffe_id '{id}': path segments may hold only letters, digits, '.', '-' and '_'"
            ));
        }
    }
    Ok(())
}
