//! ACME problem documents (RFC 8555 section 6.7, RFC 7807): every refusal the ACME
//! server sends is one of these, with an `urn:ietf:params:acme:error:` type, so a client
//! can tell a stale nonce (retry) from a name it may never have (give up).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The media type of a problem document.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An ACME error: its type (the part after `urn:ietf:params:acme:error:`), the HTTP
/// status it goes out with, and one line saying why.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The ACME error type, e.g. `badNonce`.
    pub kind: &'static str,
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub detail: String,
    /// Seconds a rate-limited client should wait (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl Problem {
    fn new(kind: &'static str, status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            kind,
            status,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// `malformed` (400): the request does not parse or breaks the protocol.
    pub fn malformed(detail: impl Into<String>) -> Problem {
        Problem::new("malformed", StatusCode::BAD_REQUEST, detail)
    }

    /// `badNonce` (400): the nonce is unknown or used; the response carries a fresh one.
    pub fn bad_nonce(detail: impl Into<String>) -> Problem {
        Problem::new("badNonce", StatusCode::BAD_REQUEST, detail)
    }

    /// `badSignatureAlgorithm` (400): a JWS algorithm this server does not accept.
    pub fn bad_signature_algorithm(detail: impl Into<String>) -> Problem {
        Problem::new("badSignatureAlgorithm", StatusCode::BAD_REQUEST, detail)
    }

    /// `unauthorized` (403): the signer may not do this.
    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new("unauthorized", StatusCode::FORBIDDEN, detail)
    }

    /// `accountDoesNotExist` (400): the key or `kid` names no account.
    pub fn account_does_not_exist(detail: impl Into<String>) -> Problem {
        Problem::new("accountDoesNotExist", StatusCode::BAD_REQUEST, detail)
    }

    /// `rejectedIdentifier` (400): an identifier outside `[acme] allowed`.
    pub fn rejected_identifier(detail: impl Into<String>) -> Problem {
        Problem::new("rejectedIdentifier", StatusCode::BAD_REQUEST, detail)
    }

    /// `unsupportedIdentifier` (400): an identifier type other than `dns` and `ip`.
    pub fn unsupported_identifier(detail: impl Into<String>) -> Problem {
        Problem::new("unsupportedIdentifier", StatusCode::BAD_REQUEST, detail)
    }

    /// `orderNotReady` (403): finalize before every authorization is valid.
    pub fn order_not_ready(detail: impl Into<String>) -> Problem {
        Problem::new("orderNotReady", StatusCode::FORBIDDEN, detail)
    }

    /// `badCSR` (400): the CSR does not verify or names other identifiers.
    pub fn bad_csr(detail: impl Into<String>) -> Problem {
        Problem::new("badCSR", StatusCode::BAD_REQUEST, detail)
    }

    /// `alreadyRevoked` (400).
    pub fn already_revoked(detail: impl Into<String>) -> Problem {
        Problem::new("alreadyRevoked", StatusCode::BAD_REQUEST, detail)
    }

    /// `badRevocationReason` (400).
    pub fn bad_revocation_reason(detail: impl Into<String>) -> Problem {
        Problem::new("badRevocationReason", StatusCode::BAD_REQUEST, detail)
    }

    /// `rateLimited` (429) with `Retry-After`.
    pub fn rate_limited(detail: impl Into<String>, retry_after: u64) -> Problem {
        Problem {
            retry_after: Some(retry_after),
            ..Problem::new("rateLimited", StatusCode::TOO_MANY_REQUESTS, detail)
        }
    }

    /// `incorrectResponse` (403): a challenge's answer was wrong.
    pub fn incorrect_response(detail: impl Into<String>) -> Problem {
        Problem::new("incorrectResponse", StatusCode::FORBIDDEN, detail)
    }

    /// `connection` (400): the server could not reach the client to validate.
    pub fn connection(detail: impl Into<String>) -> Problem {
        Problem::new("connection", StatusCode::BAD_REQUEST, detail)
    }

    /// `tls` (400): the TLS handshake of a tls-alpn-01 validation failed.
    pub fn tls(detail: impl Into<String>) -> Problem {
        Problem::new("tls", StatusCode::BAD_REQUEST, detail)
    }

    /// `serverInternal` (500): the CA or the state directory failed.
    pub fn server_internal(detail: impl Into<String>) -> Problem {
        Problem::new("serverInternal", StatusCode::INTERNAL_SERVER_ERROR, detail)
    }

    /// `malformed` with 404: no such resource.
    pub fn not_found(what: &str) -> Problem {
        Problem::new(
            "malformed",
            StatusCode::NOT_FOUND,
            format!("no such {what}"),
        )
    }

    /// `malformed` with 405: a method the resource does not answer (ACME resources
    /// other than the directory and newNonce are POST only).
    pub fn method_not_allowed(detail: impl Into<String>) -> Problem {
        Problem::new("malformed", StatusCode::METHOD_NOT_ALLOWED, detail)
    }

    /// The full error type URN.
    pub fn type_urn(&self) -> String {
        format!("urn:ietf:params:acme:error:{}", self.kind)
    }

    /// The problem document as JSON (also how an order's or challenge's `error` is kept).
    pub fn to_json(&self) -> Value {
        json!({
            "type": self.type_urn(),
            "detail": self.detail,
            "status": self.status.as_u16(),
        })
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.to_json().to_string();
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE)],
            body,
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<keyward_core::Error> for Problem {
    fn from(e: keyward_core::Error) -> Problem {
        Problem::server_internal(keyward_core::chain_line(&e))
    }
}
