//! The gateway: Gantry's REST API for the web app (v1), the admin API, health checks and the live progress
//! stream. Routes live in `routes/`, one module per resource; errors map to HTTP in `error.rs` only.

mod auth;
mod error;
mod idempotency;
mod routes;
mod serve;
mod trace;

use std::{sync::Arc, time::Duration};

use axum::{error_handling::HandleErrorLayer, extract::DefaultBodyLimit, middleware, BoxError, Router};
use error::ApiError;
use gantry_core::{Config, Store};
use gantry_provider::Providers;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::{limit::GlobalConcurrencyLimitLayer, ServiceBuilder};

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    store: Store,
    providers: Providers,
    config: Arc<Config>,
    /// Provider callback confirmations in flight (`routes/callbacks.rs`).
    confirmations: Arc<routes::Confirmations>,
}

/// Serves the gateway on `listener` until `shutdown`, then drains open requests.
pub async fn run(config: &Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = Store::connect_when_ready(config, &shutdown).await?;
    let providers = Providers::from_config(config, &store)?;
    let state = AppState {
        store,
        providers,
        config: Arc::new(config.clone()),
        confirmations: Arc::default(),
    };
    let app = router(state);
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    // Open requests (live event streams above all) get the grace period after shutdown, then are cut.
    serve::serve(
        listener,
        app,
        Duration::from_millis(config.gateway.header_read_timeout_ms),
        shutdown,
        Duration::from_millis(config.shutdown.grace_ms),
    )
    .await;
    Ok(())
}

fn router(state: AppState) -> Router {
    let gateway = &state.config.gateway;
    // Bounded work per gateway: at most `max_concurrent_requests` at once (more are shed with a 503 at once),
    // none longer than `request_timeout_ms` until its answer starts.
    let bounded = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(gateway.max_concurrent_requests))
        .timeout(Duration::from_millis(gateway.request_timeout_ms));
    routes::routes()
        .layer(DefaultBodyLimit::max(gateway.max_body_bytes))
        .layer(bounded)
        .layer(middleware::from_fn(trace::trace_id))
        .with_state(state)
}

/// The answer to a request the limits of [`router`] refused.
async fn overloaded(error: BoxError) -> ApiError {
    if error.is::<tower::timeout::error::Elapsed>() {
        ApiError::Busy("the request took too long; retry later")
    } else if error.is::<tower::load_shed::error::Overloaded>() {
        ApiError::Busy("the gateway is handling as many requests as it may; retry later")
    } else {
        ApiError::Internal(error.to_string())
    }
}

impl AppState {
    fn keepalive(&self) -> Duration {
        Duration::from_secs(self.config.gateway.sse_keepalive_secs.max(1))
    }
}
