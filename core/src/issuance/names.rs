//! Names that go into certificates: subject strings (`CN=x,O=y`), DNS names, URIs and
//! SPIFFE IDs, each checked with an error that says what is wrong.

use rcgen::{DistinguishedName, DnType, DnValue};

use crate::Error;

fn bad(msg: String) -> Error {
    Error::InvalidInput(msg)
}

/// Splits `s` at unescaped `sep` characters; a backslash escapes the next character.
fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Removes backslash escapes (`\,` → `,`); a trailing lone backslash is an error.
fn unescape(s: &str, subject: &str) -> Result<String, Error> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) => out.push(n),
                None => {
                    return Err(bad(format!(
                        "subject '{subject}' ends with a lone backslash"
                    )));
                }
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// The attribute types accepted in subjects, with their upper bounds (RFC 5280 ub-*).
fn attribute(key: &str) -> Option<(DnType, &'static str, usize)> {
    Some(match key.to_ascii_uppercase().as_str() {
        "CN" => (DnType::CommonName, "CN", 64),
        "O" => (DnType::OrganizationName, "O", 64),
        "OU" => (DnType::OrganizationalUnitName, "OU", 64),
        "C" => (DnType::CountryName, "C", 64), // checked as a two-letter code below
        "L" => (DnType::LocalityName, "L", 128),
        "ST" => (DnType::StateOrProvinceName, "ST", 128),
        _ => return None,
    })
}

/// Parses a subject such as `CN=Example Root CA,O=Example,C=NL` into a distinguished
/// name, in the order given. Accepted attributes: CN, O, OU, C, L, ST (case-insensitive,
/// once each); `\,` escapes a comma inside a value; a string without any `=` is a bare
/// common name (`api.internal` means `CN=api.internal`).
pub fn parse_subject(s: &str) -> Result<DistinguishedName, Error> {
    let subject = s.trim();
    if subject.is_empty() {
        return Err(bad("empty subject name".into()));
    }
    let mut dn = DistinguishedName::new();
    if split_unescaped(subject, '=').len() == 1 {
        let value = unescape(subject, subject)?;
        check_value("CN", &value, 64, subject)?;
        dn.push(DnType::CommonName, value);
        return Ok(dn);
    }
    let mut seen: Vec<&'static str> = Vec::new();
    for part in split_unescaped(subject, ',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(bad(format!(
                "subject '{subject}' has an empty component (stray comma?)"
            )));
        }
        let kv = split_unescaped(part, '=');
        let (key, value) = match kv.as_slice() {
            [_] => {
                return Err(bad(format!(
                    "subject component '{part}' has no '=' (expected e.g. CN=name)"
                )));
            }
            [k, ..] => (k.trim(), part[k.len() + 1..].trim()),
            [] => unreachable!("split yields at least one part"),
        };
        let (ty, label, max) = attribute(key).ok_or_else(|| {
            bad(format!(
                "unknown attribute '{key}' in subject '{subject}' (expected CN, O, OU, C, L or ST)"
            ))
        })?;
        if seen.contains(&label) {
            return Err(bad(format!(
                "{label} appears twice in subject '{subject}' (one value per attribute)"
            )));
        }
        seen.push(label);
        let value = unescape(value, subject)?;
        check_value(label, &value, max, subject)?;
        if label == "C" {
            if value.len() != 2 || !value.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(bad(format!(
                    "C={value} in subject '{subject}' is not a two-letter country code"
                )));
            }
            let code = rcgen::string::PrintableString::try_from(value.to_ascii_uppercase())
                .map_err(|e| bad(format!("C={value}: {e}")))?;
            dn.push(ty, DnValue::PrintableString(code));
        } else {
            dn.push(ty, value);
        }
    }
    Ok(dn)
}

/// Checks one attribute value: not empty, no control characters, within its bound.
fn check_value(label: &str, value: &str, max: usize, subject: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(bad(format!(
            "empty value for {label} in subject '{subject}'"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(bad(format!(
            "{label} in subject '{subject}' contains a control character"
        )));
    }
    let n = value.chars().count();
    if n > max {
        return Err(bad(format!(
            "{label} in subject '{subject}' is {n} characters long (at most {max})"
        )));
    }
    Ok(())
}

/// Checks a common name: not empty, no control characters, at most 64 characters.
pub(crate) fn check_common_name(cn: &str) -> Result<(), Error> {
    if cn.trim().is_empty() {
        return Err(bad("empty common name".into()));
    }
    check_value("CN", cn, 64, cn)
}

/// Why `name` is not a DNS name a certificate may carry, or `Ok` if it is one.
/// Accepted: ASCII labels of letters, digits and hyphens (1 to 63 characters, not
/// starting or ending with a hyphen), at most 253 characters, and a wildcard `*` as
/// the whole leftmost label of a name with at least two more labels.
pub(crate) fn check_dns_name(name: &str) -> Result<(), Error> {
    let why = |reason: &str| Err(bad(format!("invalid DNS name '{name}': {reason}")));
    if name.is_empty() {
        return Err(bad("empty DNS name".into()));
    }
    if !name.is_ascii() {
        return why("not ASCII (use the punycode xn-- form)");
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return why("it is an IP address; pass it as an IP name");
    }
    if name.len() > 253 {
        return why("longer than 253 characters");
    }
    if name.ends_with('.') {
        return why("trailing dot");
    }
    let labels: Vec<&str> = name.split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        if *label == "*" {
            if i != 0 {
                return why("a wildcard is allowed only as the whole leftmost label");
            }
            if labels.len() < 3 {
                return why("a wildcard needs at least two labels after it");
            }
            continue;
        }
        if label.is_empty() {
            return why("empty label");
        }
        if label.len() > 63 {
            return why("a label is longer than 63 characters");
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return why(&format!("character '{c}' is not allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return why("a label starts or ends with a hyphen");
        }
    }
    if labels
        .last()
        .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return why("the last label is all digits");
    }
    Ok(())
}

/// Checks that `uri` is an absolute URI (`scheme:rest`, RFC 3986 characters only) and,
/// for `spiffe:` URIs, a well-formed SPIFFE ID.
pub(crate) fn check_uri(uri: &str) -> Result<(), Error> {
    let why = |reason: &str| Err(bad(format!("invalid URI name '{uri}': {reason}")));
    if uri.is_empty() {
        return Err(bad("empty URI name".into()));
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return why("not an absolute URI (expected scheme:..., e.g. spiffe://example.org/api)");
    };
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return why("not an absolute URI (the scheme before ':' is missing or malformed)");
    }
    if rest.is_empty() {
        return why("nothing after the scheme");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c);
    if let Some(c) = uri.chars().find(|c| !allowed(*c)) {
        return why(&format!(
            "character {c:?} is not allowed in a URI (percent-encode it)"
        ));
    }
    let bytes = uri.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit())
        {
            return why("'%' is not followed by two hex digits");
        }
    }
    if scheme.eq_ignore_ascii_case("spiffe") {
        check_spiffe_id(uri)?;
    }
    Ok(())
}

/// Checks a SPIFFE ID: `spiffe://` + trust domain (lower-case letters, digits, `.`,
/// `-`, `_`; no port or user) + a non-empty path of segments of letters, digits, `.`,
/// `-`, `_` (no empty, `.` or `..` segment, no trailing slash), no query or fragment.
pub(crate) fn check_spiffe_id(id: &str) -> Result<(), Error> {
    let why = |reason: &str| Err(bad(format!("invalid SPIFFE ID '{id}': {reason}")));
    let Some(rest) = id.strip_prefix("spiffe://") else {
        return why("must start with spiffe:// (lower-case scheme)");
    };
    if id.len() > 2048 {
        return why("longer than 2048 bytes");
    }
    if rest.contains(['?', '#']) {
        return why("query and fragment are not allowed");
    }
    let (domain, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if domain.is_empty() {
        return why("empty trust domain");
    }
    if domain.contains(':') {
        return why("the trust domain must not have a port");
    }
    if domain.contains('@') {
        return why("the trust domain must not have user info");
    }
    if let Some(c) = domain
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
    {
        return why(&format!(
            "character '{c}' is not allowed in the trust domain (lower-case letters, digits, '.', '-', '_')"
        ));
    }
    if path.is_empty() || path == "/" {
        return why(
            "a workload ID needs a path after the trust domain, e.g. spiffe://example.org/api",
        );
    }
    for seg in path[1..].split('/') {
        match seg {
            "" => return why("empty path segment (double or trailing slash)"),
            "." | ".." => return why("'.' and '..' path segments are not allowed"),
            _ => {}
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return why(&format!(
                "character '{c}' is not allowed in the path (letters, digits, '.', '-', '_')"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "names_tests.rs"]
mod tests;
