//! The retry loop with synthetic SDK errors: what is retried, what is not, and that
//! every call ends within its deadline.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_kms::operation::sign::SignError;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::error::ErrorMetadata;

use super::*;

const ENDPOINT: &str = "http://127.0.0.1:9";
/// What a loaded machine's scheduler may add to a deadline.
const SLACK: Duration = Duration::from_secs(1);

fn uri() -> KeyUri {
    KeyUri::parse("awskms:alias/retry-test").unwrap()
}

fn service(code: &str, status: u16) -> SdkError<SignError, HttpResponse> {
    let err = SignError::generic(ErrorMetadata::builder().code(code).build());
    let raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
    SdkError::service_error(err, raw)
}

fn refused() -> SdkError<SignError, HttpResponse> {
    let io = io::Error::from(io::ErrorKind::ConnectionRefused);
    SdkError::dispatch_failure(ConnectorError::io(Box::new(io)))
}

fn timed_out() -> SdkError<SignError, HttpResponse> {
    SdkError::timeout_error("attempt timeout")
}

/// Calls `limits` with an attempt that fails with `errors` in turn, then returns 7.
async fn run(
    limits: &Limits,
    idempotency: Idempotency,
    errors: Vec<SdkError<SignError, HttpResponse>>,
) -> (Result<u32, Failure<SignError>>, usize) {
    let client = KmsClient::offline(ENDPOINT);
    let errors = std::sync::Mutex::new(errors.into_iter());
    let attempts = AtomicUsize::new(0);
    let result = limits
        .call(&client, "Sign", &uri(), idempotency, || {
            attempts.fetch_add(1, Ordering::SeqCst);
            let next = errors.lock().unwrap().next();
            async move { next.map_or(Ok(7), Err) }
        })
        .await;
    (result, attempts.load(Ordering::SeqCst))
}

fn unavailable_message<T: std::fmt::Debug>(r: Result<T, Failure<SignError>>) -> String {
    match r {
        Err(Failure::Done(e @ Error::Unavailable { .. })) => e.to_string(),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn backoff_grows_and_is_capped() {
    for tries in 1..40 {
        let d = BACKOFF.delay(tries);
        let ceiling = BACKOFF_BASE * 2u32.pow((tries - 1).min(16));
        assert!(d <= ceiling.min(BACKOFF_CAP), "try {tries}: {d:?}");
    }
}

#[test]
fn refused_connection_is_found_in_the_chain() {
    let wrapped = Error::unavailable(
        "x",
        Some(Box::new(io::Error::from(io::ErrorKind::ConnectionRefused))),
    );
    assert!(connection_refused(&wrapped));
    assert!(!connection_refused(&Error::backend("x")));
}

#[tokio::test]
async fn throttling_and_transient_failures_are_retried_until_success() {
    let limits = Limits::new(4, Duration::from_secs(5));
    let errors = vec![
        service("ThrottlingException", 400),
        service("KMSInternalException", 500),
        service("Whatever", 503),
        refused(),
        timed_out(),
    ];
    let (result, attempts) = run(&limits, Idempotency::Safe, errors).await;
    assert_eq!(result.unwrap(), 7);
    assert_eq!(attempts, 6);
}

#[tokio::test]
async fn final_service_errors_are_not_retried() {
    let limits = Limits::new(4, Duration::from_secs(5));
    let errors = vec![service("NotFoundException", 400)];
    let (result, attempts) = run(&limits, Idempotency::Safe, errors).await;
    assert_eq!(attempts, 1);
    let failure = result.unwrap_err();
    assert_eq!(failure.code(), Some("NotFoundException"));
    assert!(matches!(
        failure.into_error("Sign", &uri()),
        Error::NotFound(_)
    ));
}

#[tokio::test]
async fn non_idempotent_calls_retry_only_when_kms_cannot_have_acted() {
    let limits = Limits::new(4, Duration::from_secs(5));
    let (result, attempts) = run(&limits, Idempotency::Unsafe, vec![timed_out()]).await;
    assert_eq!(attempts, 1, "a timed-out CreateKey may have created a key");
    assert!(unavailable_message(result).contains(ENDPOINT));

    let errors = vec![refused(), service("ThrottlingException", 400)];
    let (result, attempts) = run(&limits, Idempotency::Unsafe, errors).await;
    assert_eq!((result.unwrap(), attempts), (7, 3));
}

#[tokio::test]
async fn constant_throttling_gives_up_as_unavailable_within_the_deadline() {
    let deadline = Duration::from_millis(400);
    let limits = Limits::new(4, deadline);
    let errors = (0..1000)
        .map(|_| service("ThrottlingException", 400))
        .collect();
    let start = Instant::now();
    let (result, attempts) = run(&limits, Idempotency::Safe, errors).await;
    assert!(start.elapsed() < deadline + SLACK, "{:?}", start.elapsed());
    assert!(attempts > 1);
    let m = unavailable_message(result);
    assert!(
        m.contains("kept throttling (ThrottlingException)") && m.contains(ENDPOINT),
        "{m}"
    );
}

#[tokio::test]
async fn a_hung_attempt_is_cut_at_the_deadline() {
    let deadline = Duration::from_millis(300);
    let limits = Limits::new(4, deadline);
    let client = KmsClient::offline(ENDPOINT);
    let start = Instant::now();
    let result: Result<(), Failure<SignError>> = limits
        .call(&client, "Sign", &uri(), Idempotency::Safe, || {
            std::future::pending::<Result<(), SdkError<SignError, HttpResponse>>>()
        })
        .await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= deadline && elapsed < deadline + SLACK,
        "{elapsed:?}"
    );
    assert!(unavailable_message(result).contains("no answer to Sign"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_never_exceed_the_limit() {
    let limits = Arc::new(Limits::new(3, Duration::from_secs(5)));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let (limits, in_flight, peak) = (limits.clone(), in_flight.clone(), peak.clone());
            tokio::spawn(async move {
                let client = KmsClient::offline(ENDPOINT);
                limits
                    .call(&client, "Sign", &uri(), Idempotency::Safe, || {
                        let (in_flight, peak) = (in_flight.clone(), peak.clone());
                        async move {
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, SdkError<SignError, HttpResponse>>(())
                        }
                    })
                    .await
                    .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 3);
}
