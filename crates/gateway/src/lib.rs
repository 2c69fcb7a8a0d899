//! The gateway: Gantry's REST API for the web app (v1), the admin API, health checks and the live progress
//! stream. Routes live in `routes/`, one module per resource; errors map to HTTP in `error.rs` only.

mod auth;
mod error;
mod idempotency;
mod routes;
mod trace;

use std::{future::IntoFuture, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{extract::DefaultBodyLimit, middleware, Router};
use gantry_core::{Config, Store};
use gantry_provider::Providers;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    let grace = Duration::from_millis(config.shutdown.grace_ms);
    let stopping = shutdown.clone();
    let serve = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stopping.cancelled().await })
        .into_future();
    tokio::pin!(serve);
    tokio::select! {
        served = &mut serve => return served.context("serving the gateway"),
        _ = shutdown.cancelled() => {}
    }
    // Open requests (live event streams above all) get the grace period, then are cut.
    match tokio::time::timeout(grace, serve).await {
        Ok(served) => served.context("serving the gateway"),
        Err(_) => {
            tracing::warn!("shutdown grace period over; closing open connections");
            Ok(())
        }
    }
}

fn router(state: AppState) -> Router {
    let body_limit = state.config.gateway.max_body_bytes;
    routes::routes()
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(trace::trace_id))
        .with_state(state)
}

impl AppState {
    fn keepalive(&self) -> Duration {
        Duration::from_secs(self.config.gateway.sse_keepalive_secs.max(1))
    }
}
