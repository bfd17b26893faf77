//! The HTTP endpoint on `[metrics] listen`: `/metrics` (Prometheus text), `/healthz`,
//! `/readyz` and `/` (the status page). Read-only; anything else is 404.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keyward_core::Error;
use prometheus_client::encoding::prometheus_text;
use time::OffsetDateTime;
use tokio::task::JoinHandle;

use super::{Metrics, page};

/// Binds `addr` and serves until the returned task is aborted; logs the bound address
/// (the port is chosen by the system when `addr` has port 0).
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> Result<JoinHandle<()>, Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {addr} for [metrics]"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the metrics listener's address", e))?;
    let app = Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(prometheus))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(metrics);
    tracing::info!(listen = %bound, "serving metrics, health and the status page over HTTP");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    }))
}

async fn prometheus(State(m): State<Metrics>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        m.render(OffsetDateTime::now_utc()),
    )
        .into_response()
}

async fn readyz(State(m): State<Metrics>) -> Response {
    match m.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", why.replace('\n', " ")),
        )
            .into_response(),
    }
}

async fn status_page(State(m): State<Metrics>) -> Response {
    let html = page::render(&m, OffsetDateTime::now_utc());
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}
