//! The providers a deployment talks to, each behind the shared limits of `store/limiter.rs`, and the routing of
//! models to providers.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use gantry_provider::{
    CreateRequest, GrsaiClient, GrsaiConfig, Model, Provider, ProviderError, RemoteStatus, SeedanceClient,
    SeedanceConfig,
};

use crate::{
    config::{ProviderLimits, ProviderName, Routes},
    model::now_ms,
    store::CallOutcome,
    Config, StartError, Store,
};

/// Every provider of the deployment, by name, and the model routes.
#[derive(Clone)]
pub struct Providers {
    grsai: Arc<dyn Provider>,
    seedance: Arc<dyn Provider>,
    routes: Routes,
}

impl Providers {
    /// Builds the clients of `config`, each limited through `store`.
    pub fn from_config(config: &Config, store: &Store) -> Result<Self, StartError> {
        let p = &config.provider;
        let grsai = GrsaiClient::new(GrsaiConfig {
            base_url: p.grsai.base_url.clone(),
            api_key: p.grsai.api_key.expose().to_owned().into(),
            timeout: Duration::from_millis(p.grsai.timeout_ms),
        })
        .map_err(|e| StartError::Provider(e.to_string()))?;
        let seedance = SeedanceClient::new(SeedanceConfig {
            base_url: p.seedance.base_url.clone(),
            api_key: p.seedance.api_key.expose().to_owned().into(),
            timeout: Duration::from_millis(p.seedance.timeout_ms),
            model: p.seedance.model.clone(),
        })
        .map_err(|e| StartError::Provider(e.to_string()))?;
        let limited = |inner: Arc<dyn Provider>, name: ProviderName, timeout_ms: u64| -> Arc<dyn Provider> {
            Arc::new(Limited {
                inner,
                name,
                store: store.clone(),
                limits: p.limits.of(name).clone(),
                lease_ms: timeout_ms + 5_000,
            })
        };
        Ok(Self {
            grsai: limited(Arc::new(grsai), ProviderName::Grsai, p.grsai.timeout_ms),
            seedance: limited(Arc::new(seedance), ProviderName::Seedance, p.seedance.timeout_ms),
            routes: p.routes.clone(),
        })
    }

    /// The provider that serves `model`.
    pub fn for_model(&self, model: Model) -> (ProviderName, Arc<dyn Provider>) {
        let name = self.routes.provider_for(model);
        (name, self.by_name(name))
    }

    pub fn by_name(&self, name: ProviderName) -> Arc<dyn Provider> {
        match name {
            ProviderName::Grsai => self.grsai.clone(),
            ProviderName::Seedance => self.seedance.clone(),
        }
    }
}

/// A provider whose every call first takes a slot of the provider's cluster-wide limits.
struct Limited {
    inner: Arc<dyn Provider>,
    name: ProviderName,
    store: Store,
    limits: ProviderLimits,
    lease_ms: u64,
}

/// Which share of the in-flight permits a kind of call may use: creates leave room for polls.
#[derive(Clone, Copy)]
enum Kind {
    Create,
    Status,
}

impl Limited {
    async fn acquire(&self, kind: Kind) -> Result<String, ProviderError> {
        let holder = uuid::Uuid::now_v7().simple().to_string();
        let share = match kind {
            Kind::Create => self.limits.create_share,
            Kind::Status => 1.0,
        };
        loop {
            let wait = self
                .store
                .limiter_acquire(
                    self.name.as_str(),
                    &self.limits,
                    share,
                    self.lease_ms,
                    &holder,
                    now_ms(),
                )
                .await
                .map_err(|e| ProviderError::Transient(format!("shared limiter unavailable: {e}")))?;
            if wait == 0 {
                return Ok(holder);
            }
            // The limiter says when a slot can open; waiting here is back-pressure on this worker.
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }

    async fn release<T>(&self, holder: &str, result: &Result<T, ProviderError>) {
        let outcome = match result {
            Ok(_) => CallOutcome::Ok,
            Err(ProviderError::RateLimited { .. }) => CallOutcome::RateLimited,
            Err(_) => CallOutcome::Error,
        };
        match self
            .store
            .limiter_release(self.name.as_str(), holder, outcome)
            .await
        {
            Ok(factor) if outcome == CallOutcome::RateLimited => {
                tracing::warn!(
                    provider = self.name.as_str(),
                    factor,
                    "provider answered 429; shared rate lowered"
                );
            }
            Ok(_) => {}
            // The permit's lease ends by itself.
            Err(e) => tracing::warn!(error = %e, "releasing a provider permit failed"),
        }
    }
}

#[async_trait]
impl Provider for Limited {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn create(&self, request: &CreateRequest) -> Result<String, ProviderError> {
        let holder = self.acquire(Kind::Create).await?;
        let result = self.inner.create(request).await;
        self.release(&holder, &result).await;
        result
    }

    async fn status(&self, remote_id: &str) -> Result<RemoteStatus, ProviderError> {
        let holder = self.acquire(Kind::Status).await?;
        let result = self.inner.status(remote_id).await;
        self.release(&holder, &result).await;
        result
    }

    async fn cancel(&self, remote_id: &str) -> Result<bool, ProviderError> {
        let holder = self.acquire(Kind::Status).await?;
        let result = self.inner.cancel(remote_id).await;
        self.release(&holder, &result).await;
        result
    }
}
