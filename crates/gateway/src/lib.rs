//! The gateway: Gantry's REST API for the web app (v1), the admin API, health checks and the live progress
//! stream. Routes live in `routes/`, one module per resource; errors map to HTTP in `error.rs` only.

mod auth;
mod error;
mod hub;
mod idempotency;
mod routes;
mod serve;
mod trace;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
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
    /// The watcher of every open event stream (`hub.rs`).
    events: Arc<hub::EventHub>,
}

/// The gateway's two listeners: the public API, and the admin API with `/metrics` (`gateway.admin_listen`).
pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds `gateway.listen` and `gateway.admin_listen`.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let bind = |addr| async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the gateway to {addr}"))
        };
        Ok(Self {
            public: bind(config.gateway.listen).await?,
            admin: bind(config.gateway.admin_listen).await?,
        })
    }
}

/// Serves the gateway on `listeners` until `shutdown`, then drains open requests.
pub async fn run(config: &Config, listeners: Listeners, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = Store::connect_when_ready(config, &shutdown).await?;
    let providers = Providers::from_config(config, &store)?;
    let state = AppState {
        store,
        providers,
        config: Arc::new(config.clone()),
        confirmations: Arc::default(),
        events: Arc::new(hub::EventHub::new(config.gateway.sse_max_per_tenant)),
    };
    let hub = tokio::spawn(state.events.clone().run(state.store.clone(), shutdown.clone()));
    tracing::info!(
        addr = %listeners.public.local_addr()?,
        admin = %listeners.admin.local_addr()?,
        "gateway listening"
    );
    let header_read = Duration::from_millis(config.gateway.header_read_timeout_ms);
    let grace = Duration::from_millis(config.shutdown.grace_ms);
    // Open requests (live event streams above all) get the grace period after shutdown, then are cut.
    tokio::join!(
        serve::serve(
            listeners.public,
            router(routes::public_routes(), state.clone()),
            header_read,
            shutdown.clone(),
            grace,
        ),
        serve::serve(
            listeners.admin,
            router(routes::admin_routes(), state),
            header_read,
            shutdown,
            grace,
        ),
    );
    let _ = hub.await;
    Ok(())
}

fn router(routes: Router<AppState>, state: AppState) -> Router {
    let gateway = &state.config.gateway;
    // Bounded work per gateway: at most `max_concurrent_requests` at once (more are shed with a 503 at once),
    // none longer than `request_timeout_ms` until its answer starts.
    let bounded = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(gateway.max_concurrent_requests))
        .timeout(Duration::from_millis(gateway.request_timeout_ms));
    routes
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
