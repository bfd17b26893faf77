//! Name checks for the configuration: trust domains, SPIFFE IDs, group names.

/// The gid of a group named in /etc/group.
pub fn lookup_group(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
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
