//! The Workload API socket address: the one parser for `SPIFFE_ENDPOINT_SOCKET` and
//! `--socket` values, shared by `keyward fetch` and keyward-rustls's `AgentSource`.
//!
//! It lives in keyward-core because both crates already depend on it and on nothing
//! else in common; putting it in keyward-rustls would make the CLI pull in the rustls
//! integration only to read an address. Both then hand the path to the `spiffe`
//! crate's client as a ready `Endpoint::Unix`, so no second parser (with its own idea
//! of percent-encoding) sees the value.
//!
//! Accepted: `unix:///abs/path`, `unix:/abs/path` (the URI forms, percent-decoded as
//! other Workload API clients do) and a bare absolute path `/abs/path` (taken as is).
//! Everything else (a relative path, `tcp://`, another scheme, `unix://host/path`, a
//! query or fragment, an empty value) is refused with one line naming the value.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use crate::Error;

/// The environment variable SPIFFE clients read the agent's address from.
pub const ENV_VAR: &str = "SPIFFE_ENDPOINT_SOCKET";

/// The accepted forms, as named in error messages.
pub const EXPECTED_FORMS: &str = "unix:///absolute/path, unix:/absolute/path or /absolute/path";

/// The socket path of a Workload API address; the error names `addr`.
pub fn socket_path(addr: &str) -> Result<PathBuf, Error> {
    parse(addr).map_err(|why| refuse(&format!("'{addr}'"), why))
}

/// The socket path from `given` (when present, named `given_name` in errors, e.g.
/// `--socket`) or else from `SPIFFE_ENDPOINT_SOCKET`.
pub fn socket_path_or_env(given: Option<&str>, given_name: &str) -> Result<PathBuf, Error> {
    if let Some(addr) = given {
        return parse(addr).map_err(|why| refuse(&format!("{given_name} '{addr}'"), why));
    }
    match std::env::var(ENV_VAR) {
        Ok(addr) => parse(&addr).map_err(|why| refuse(&format!("{ENV_VAR}='{addr}'"), why)),
        Err(std::env::VarError::NotPresent) => Err(Error::InvalidInput(format!(
            "no agent socket: pass {given_name} or set {ENV_VAR} ({EXPECTED_FORMS})"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::InvalidInput(format!(
            "{ENV_VAR} is not valid UTF-8 (expected {EXPECTED_FORMS})"
        ))),
    }
}

fn refuse(what: &str, why: &str) -> Error {
    Error::InvalidInput(format!(
        "{what} is not an agent socket address ({why}); expected {EXPECTED_FORMS}"
    ))
}

/// The path, or why `addr` is not an accepted address.
fn parse(addr: &str) -> Result<PathBuf, &'static str> {
    if addr.is_empty() {
        return Err("it is empty");
    }
    let path: Vec<u8> = if addr.starts_with('/') {
        addr.as_bytes().to_vec()
    } else if let Some(rest) = strip_scheme(addr, "unix:") {
        let path = match rest.strip_prefix("//") {
            Some(after) if after.starts_with('/') => after,
            Some(_) => return Err("a unix: address names no host; use unix:///absolute/path"),
            None if rest.starts_with('/') => rest,
            None => return Err("the path is not absolute"),
        };
        if path.contains(['?', '#']) {
            return Err("a unix: address has no query or fragment");
        }
        percent_encoding::percent_decode_str(path).collect()
    } else if addr.contains("://") || strip_scheme(addr, "tcp:").is_some() {
        return Err("the agent listens only on a Unix socket");
    } else {
        return Err("not an absolute path");
    };
    if path.contains(&0) {
        return Err("the path holds a NUL byte");
    }
    if path.iter().all(|b| *b == b'/') {
        return Err("the path names no socket");
    }
    Ok(PathBuf::from(OsString::from_vec(path)))
}

/// `addr` after `scheme` (matched without regard to case, as URI schemes are).
fn strip_scheme<'a>(addr: &'a str, scheme: &str) -> Option<&'a str> {
    let head = addr.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &addr[scheme.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_name_the_same_socket() {
        for addr in [
            "unix:///run/a.sock",
            "unix:/run/a.sock",
            "/run/a.sock",
            "UNIX:///run/a.sock",
        ] {
            assert_eq!(
                socket_path(addr).unwrap(),
                PathBuf::from("/run/a.sock"),
                "{addr}"
            );
        }
        // URI forms are percent-decoded; a bare path is taken as it is.
        assert_eq!(
            socket_path("unix:///run/my%20dir/a.sock").unwrap(),
            PathBuf::from("/run/my dir/a.sock")
        );
        assert_eq!(
            socket_path("/run/my%20dir/a b.sock").unwrap(),
            PathBuf::from("/run/my%20dir/a b.sock")
        );
    }

    #[test]
    fn anything_else_is_one_line_naming_the_value_and_the_forms() {
        for addr in [
            "",
            "run/a.sock",
            "./a.sock",
            "tcp://127.0.0.1:8081",
            "tcp:127.0.0.1:8081",
            "http://localhost/a.sock",
            "unix://host/run/a.sock",
            "unix://run/a.sock",
            "unix:run/a.sock",
            "unix:",
            "unix:///",
            "unix:///run/a.sock?x=1",
            "unix:///run/a%00.sock",
        ] {
            let e = socket_path(addr).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e}");
            assert!(e.contains(&format!("'{addr}'")), "{e}");
            assert!(e.contains(EXPECTED_FORMS), "{e}");
        }
    }

    #[test]
    fn a_given_address_is_named_by_its_flag() {
        let e = socket_path_or_env(Some("tcp://1.2.3.4:5"), "--socket")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--socket 'tcp://1.2.3.4:5' is not"), "{e}");
        assert_eq!(
            socket_path_or_env(Some("unix:/a.sock"), "--socket").unwrap(),
            PathBuf::from("/a.sock")
        );
    }
}
