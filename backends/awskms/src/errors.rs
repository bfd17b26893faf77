//! A KMS call that failed for good, and its translation into keyward's `Error`.

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_kms::error::SdkError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use keyward_core::{Error, KeyUri};

/// Why a KMS call did not succeed.
#[derive(Debug)]
pub(crate) enum Failure<E> {
    /// KMS answered with an error code that retrying will not change; the caller may
    /// interpret the code (e.g. `NotFoundException` on DescribeKey) before mapping it.
    Service {
        /// The KMS error code, e.g. `NotFoundException`.
        code: String,
        /// The SDK error, kept as the source.
        error: Box<SdkError<E, HttpResponse>>,
        /// The endpoint that answered.
        endpoint: String,
    },
    /// Already translated: `Unavailable` after retries, or a local failure.
    Done(Error),
}

impl<E> Failure<E>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    /// A failure that will not be retried: service errors keep their code for the caller.
    pub(crate) fn fatal(
        error: SdkError<E, HttpResponse>,
        op: &str,
        subject: &KeyUri,
        endpoint: &str,
    ) -> Self {
        match &error {
            SdkError::ServiceError(ctx) => Failure::Service {
                code: ctx.err().code().unwrap_or("UnknownError").to_string(),
                error: Box::new(error),
                endpoint: endpoint.to_string(),
            },
            SdkError::ConstructionFailure(_) => Failure::Done(Error::backend_with(
                format!("cannot build the AWS KMS {op} request for {subject}"),
                error,
            )),
            // Missing credentials surface here: the SDK resolves them before sending.
            _ => {
                let message = match credentials_error(&error) {
                    Some(CredentialsError::CredentialsNotLoaded(_)) => format!(
                        "no AWS credentials for {op} on {subject}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
                    ),
                    Some(_) => format!("cannot get AWS credentials for {op} on {subject}"),
                    None => format!("cannot send {op} for {subject} to AWS KMS at {endpoint}"),
                };
                Failure::Done(Error::backend_with(message, error))
            }
        }
    }

    /// The KMS error code, if KMS answered with one.
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            Failure::Service { code, .. } => Some(code),
            Failure::Done(_) => None,
        }
    }

    /// The usual translation: `NotFound` for unknown keys, `Backend` with the cause in
    /// plain words for everything KMS refused.
    pub(crate) fn into_error(self, op: &str, subject: &KeyUri) -> Error {
        let (code, error, endpoint) = match self {
            Failure::Done(e) => return e,
            Failure::Service {
                code,
                error,
                endpoint,
            } => (code, error, endpoint),
        };
        let detail = match &*error {
            SdkError::ServiceError(ctx) => ctx.err().message().unwrap_or("").to_string(),
            _ => String::new(),
        };
        let message = match code.as_str() {
            "NotFoundException" => return Error::NotFound(subject.to_string()),
            "DisabledException" => format!("key {subject} is disabled"),
            "KMSInvalidStateException" => {
                format!("key {subject} cannot be used for {op} in its current state")
            }
            "InvalidKeyUsageException" => {
                format!("key {subject} cannot be used for {op}: wrong key usage")
            }
            "AccessDeniedException" => {
                format!("AWS KMS at {endpoint} denied {op} on {subject}: check the IAM permissions")
            }
            "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "InvalidSignatureException"
            | "IncompleteSignature"
            | "ExpiredTokenException"
            | "MissingAuthenticationToken" => {
                format!("AWS KMS at {endpoint} rejected the AWS credentials ({code})")
            }
            _ if detail.is_empty() => format!("AWS KMS refused {op} on {subject}: {code}"),
            _ => format!(
                "AWS KMS refused {op} on {subject}: {code}: {}",
                detail.replace('\n', " ")
            ),
        };
        Error::backend_with(message, error)
    }
}

/// The credentials failure somewhere in `error`'s source chain, if any.
fn credentials_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a CredentialsError> {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return Some(c);
        }
        cur = e.source();
    }
    None
}
