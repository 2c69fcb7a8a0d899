//! `GET /metrics` for Prometheus, on a listener of its own (the workers have no other HTTP port).

use axum::{http::header, response::IntoResponse, routing::get, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The Prometheus text exposition of this process's metrics.
pub async fn metrics_handler() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        crate::render_prometheus(),
    )
}

/// Serves `GET /metrics` (and `GET /healthz`) on `listener` until `shutdown`.
pub async fn serve_metrics(listener: TcpListener, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the metrics endpoint stopped");
    }
}
