//! Turning Vault/OpenBao HTTP answers into `keyward_core::Error`s in plain words.

use keyward_core::Error;
use reqwest::Method;

/// What a non-2xx answer means for the request that got it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The request is wrong or refused (4xx but 429, 501): every node would say so.
    Final,
    /// This node cannot serve it now (502-504, 429, a redirect, a standby that lost its
    /// leader): the next node, or this one again after a pause, may.
    TryElsewhere,
    /// This node is sealed and needs an operator: the others may serve; final when
    /// every node is sealed.
    Sealed,
    /// A plain 500, often a lasting logical error: sent again a bounded number of times.
    ServerError,
}

/// The verdict on an answer with `status` and Vault's `errors`.
pub(crate) fn verdict(status: u16, errors: &[String]) -> Verdict {
    match status {
        503 if is_sealed(status, errors) => Verdict::Sealed,
        500 if no_active_node(errors) => Verdict::TryElsewhere,
        500 => Verdict::ServerError,
        501 => Verdict::Final,
        300..=399 | 429 | 502..=599 => Verdict::TryElsewhere,
        _ => Verdict::Final,
    }
}

fn is_sealed(status: u16, errors: &[String]) -> bool {
    status == 503 && errors.iter().any(|e| e.contains("sealed"))
}

/// A standby whose leader died answers this until a new leader is elected.
fn no_active_node(errors: &[String]) -> bool {
    errors
        .iter()
        .any(|e| e.contains("active cluster node not found"))
}

/// Vault wraps errors as `"1 error occurred:\n\t* cause\n\n"`; keep just the causes.
pub(crate) fn tidy(errors: &[String]) -> String {
    let parts: Vec<String> = errors
        .iter()
        .flat_map(|e| e.lines())
        .map(|l| l.trim().trim_start_matches("* ").trim())
        .filter(|l| {
            !l.is_empty() && !l.ends_with("error occurred:") && !l.ends_with("errors occurred:")
        })
        .map(str::to_string)
        .collect();
    if parts.is_empty() {
        "no error text".into()
    } else {
        parts.join("; ")
    }
}

/// The policy capability a request needs, for the permission-denied message.
fn capability(method: &Method) -> &'static str {
    match *method {
        Method::GET => "read",
        Method::DELETE => "delete",
        Method::PUT | Method::POST => "update",
        _ => "sudo",
    }
}

/// The error for a non-2xx answer `status` with Vault's `errors` to `method path`.
///
/// `path` is the API path without `/v1/` (what a policy names). 404 and "not found"
/// answers become `NotFound(path)`; callers put the key URI in its place.
pub(crate) fn status_error(
    addr: &str,
    method: &Method,
    path: &str,
    status: u16,
    errors: &[String],
) -> Error {
    let text = tidy(errors);
    let route_missing = errors.iter().any(|e| e.contains("no handler for route"));
    match status {
        403 => Error::backend(format!(
            "permission denied by Vault/OpenBao at {addr} on {path}: the token lacks a policy \
             granting '{}' on '{path}' (or it expired)",
            capability(method)
        )),
        404 if route_missing => Error::backend(format!(
            "Vault/OpenBao at {addr} has no secrets engine serving '{path}': is the mount path right?"
        )),
        404 => Error::NotFound(path.to_string()),
        400 if text.contains("not found") => Error::NotFound(path.to_string()),
        429 => Error::unavailable(
            format!("Vault/OpenBao at {addr} is rate-limiting {method} {path}: {text}"),
            None,
        ),
        503 if is_sealed(status, errors) => Error::unavailable(
            format!("Vault/OpenBao at {addr} is sealed: unseal it, then retry"),
            None,
        ),
        500 if no_active_node(errors) => Error::unavailable(
            format!(
                "Vault/OpenBao at {addr} has no active node to serve {method} {path} (a leader \
                 election under way?): {text}"
            ),
            None,
        ),
        300..=399 => Error::unavailable(
            format!("Vault/OpenBao at {addr} redirected {method} {path} (HTTP {status}): {text}"),
            None,
        ),
        502..=504 => Error::unavailable(
            format!(
                "Vault/OpenBao at {addr} is not serving requests (HTTP {status} to {method} {path}): {text}"
            ),
            None,
        ),
        500..=599 => Error::backend(format!(
            "Vault/OpenBao at {addr} failed {method} {path} (HTTP {status}): {text}"
        )),
        400..=499 => Error::backend(format!(
            "Vault/OpenBao at {addr} refused {method} {path} (HTTP {status}): {text}"
        )),
        _ => Error::backend(format!(
            "Vault/OpenBao at {addr} answered HTTP {status} to {method} {path}: {text}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn permission_denied_names_path_and_capability() {
        let e = status_error(
            "http://v",
            &Method::POST,
            "transit/sign/ca",
            403,
            &errs(&["permission denied"]),
        );
        let s = e.to_string();
        assert!(matches!(e, Error::Backend { .. }));
        assert!(
            s.contains("transit/sign/ca") && s.contains("'update'") && s.contains("http://v"),
            "{s}"
        );
    }

    #[test]
    fn sealed_is_unavailable_and_its_own_verdict() {
        let e = errs(&["Vault is sealed"]);
        assert_eq!(verdict(503, &e), Verdict::Sealed);
        let err = status_error("http://v", &Method::GET, "x", 503, &e);
        assert!(
            err.is_retryable() && err.to_string().contains("sealed"),
            "{err}"
        );
    }

    #[test]
    fn verdicts_of_a_cluster_in_failover() {
        let no_leader = errs(&["local node not active but active cluster node not found"]);
        let err = status_error("http://v", &Method::POST, "pki/x", 500, &no_leader);
        assert!(
            err.is_retryable() && err.to_string().contains("no active node"),
            "{err}"
        );
        let redirect =
            errs(&["redirected to http://w/v1/pki/x, which is not a configured address"]);
        let err = status_error("http://v", &Method::POST, "pki/x", 307, &redirect);
        assert!(
            err.is_retryable() && err.to_string().contains("http://w/"),
            "{err}"
        );
        for (status, errors, expected) in [
            (500, &no_leader, Verdict::TryElsewhere),
            (500, &errs(&["internal error"]), Verdict::ServerError),
            (307, &vec![], Verdict::TryElsewhere),
            (429, &vec![], Verdict::TryElsewhere),
            (502, &vec![], Verdict::TryElsewhere),
            (503, &vec![], Verdict::TryElsewhere),
            (501, &vec![], Verdict::Final),
            (400, &errs(&["could not parse CSR"]), Verdict::Final),
            (403, &errs(&["permission denied"]), Verdict::Final),
            (404, &vec![], Verdict::Final),
        ] {
            assert_eq!(verdict(status, errors), expected, "{status} {errors:?}");
        }
    }

    #[test]
    fn not_found_shapes() {
        assert!(matches!(
            status_error("a", &Method::GET, "transit/keys/x", 404, &[]),
            Error::NotFound(_)
        ));
        let e = errs(&["signing key not found"]);
        assert!(matches!(
            status_error("a", &Method::POST, "transit/sign/x", 400, &e),
            Error::NotFound(_)
        ));
        let e = errs(&["no handler for route \"nope/keys/x\". route entry not found."]);
        let s = status_error("a", &Method::GET, "nope/keys/x", 404, &e).to_string();
        assert!(s.contains("mount path"), "{s}");
    }

    #[test]
    fn tidy_unwraps_multierror() {
        let e = errs(&["1 error occurred:\n\t* requested version is too high\n\n"]);
        assert_eq!(tidy(&e), "requested version is too high");
    }
}
