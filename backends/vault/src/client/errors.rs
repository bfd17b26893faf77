//! Turning Vault/OpenBao HTTP answers into `keyward_core::Error`s in plain words.

use keyward_core::Error;
use reqwest::Method;

/// Whether an answer with this status may succeed if sent again shortly (5xx, except
/// "not implemented" and a sealed server, which needs an operator).
pub(crate) fn retryable_status(status: u16, errors: &[String]) -> bool {
    (500..600).contains(&status) && status != 501 && !is_sealed(status, errors)
}

fn is_sealed(status: u16, errors: &[String]) -> bool {
    status == 503 && errors.iter().any(|e| e.contains("sealed"))
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
    fn sealed_is_unavailable_and_not_retried() {
        let e = errs(&["Vault is sealed"]);
        assert!(!retryable_status(503, &e));
        let err = status_error("http://v", &Method::GET, "x", 503, &e);
        assert!(
            err.is_retryable() && err.to_string().contains("sealed"),
            "{err}"
        );
        assert!(retryable_status(502, &[]));
        assert!(retryable_status(500, &[]));
        assert!(!retryable_status(501, &[]));
        assert!(!retryable_status(400, &[]));
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
