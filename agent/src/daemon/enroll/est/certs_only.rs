//! EST's certificate responses (RFC 7030 4.1.3, 4.2.3): a CMS certs-only SignedData
//! (no content, no signers; RFC 5751's "certs-only"), built with RustCrypto's `cms`
//! types, sent base64-encoded with its media type.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use cms::cert::x509::der::{Decode, Encode};
use cms::cert::x509::{Certificate, PkiPath};
use cms::content_info::ContentInfo;
use keyward_core::Error;

/// The media type of a certs-only response.
pub const CERTS_ONLY: &str = "application/pkcs7-mime; smime-type=certs-only";

/// The DER certs-only SignedData holding `certs` (DER certificates), in that order.
pub fn encode(certs: &[Vec<u8>]) -> Result<Vec<u8>, Error> {
    let bad = |e: cms::cert::x509::der::Error| {
        Error::backend(format!("cannot encode the certs-only response: {e}"))
    };
    let path: PkiPath = certs
        .iter()
        .map(|der| Certificate::from_der(der))
        .collect::<Result<_, _>>()
        .map_err(bad)?;
    ContentInfo::try_from(path)
        .and_then(|ci| ci.to_der())
        .map_err(bad)
}

/// A 200 response carrying `certs` as base64 certs-only CMS.
pub fn response(certs: &[Vec<u8>]) -> Result<Response, Error> {
    let body = base64::engine::general_purpose::STANDARD.encode(encode(certs)?);
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CERTS_ONLY));
    headers.insert(
        "content-transfer-encoding",
        HeaderValue::from_static("base64"),
    );
    Ok(response)
}
