//! A provider whose every call first takes a slot of the provider's cluster-wide limits (`store/limiter.rs`):
//! a GCRA rate and an in-flight semaphore in Redis, shared by every replica.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use gantry_core::{config::ProviderLimits, model::now_ms, store::CallOutcome, Store};

use crate::{CreateRequest, Provider, ProviderError, ProviderName, RemoteStatus};

/// A provider whose every call first takes a slot of the provider's cluster-wide limits.
pub(crate) struct Limited {
    pub(crate) inner: Arc<dyn Provider>,
    pub(crate) store: Store,
    pub(crate) limits: ProviderLimits,
    /// How long a permit is held at most (the call's timeout plus a margin), should its holder die.
    pub(crate) lease_ms: u64,
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
                    self.inner.name().as_str(),
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

    /// Runs `call` (not started until awaited) under a permit of `kind`, and reports its outcome to the limits.
    async fn within_limits<T>(
        &self,
        kind: Kind,
        call: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let holder = self.acquire(kind).await?;
        let result = call.await;
        self.release(&holder, &result).await;
        result
    }

    async fn release<T>(&self, holder: &str, result: &Result<T, ProviderError>) {
        let outcome = match result {
            Ok(_) => CallOutcome::Ok,
            Err(ProviderError::RateLimited { .. }) => CallOutcome::RateLimited,
            Err(_) => CallOutcome::Error,
        };
        match self
            .store
            .limiter_release(self.inner.name().as_str(), holder, outcome)
            .await
        {
            Ok(factor) if outcome == CallOutcome::RateLimited => {
                tracing::warn!(
                    provider = self.inner.name().as_str(),
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
    fn name(&self) -> ProviderName {
        self.inner.name()
    }

    fn can_cancel(&self) -> bool {
        self.inner.can_cancel()
    }

    fn callback_status(&self, body: &[u8]) -> Option<RemoteStatus> {
        self.inner.callback_status(body)
    }

    fn start_from_frame(&self, request: &mut CreateRequest, frame: String) {
        self.inner.start_from_frame(request, frame)
    }

    async fn create(&self, request: &CreateRequest) -> Result<String, ProviderError> {
        self.within_limits(Kind::Create, self.inner.create(request)).await
    }

    async fn status(&self, remote_id: &str) -> Result<RemoteStatus, ProviderError> {
        self.within_limits(Kind::Status, self.inner.status(remote_id))
            .await
    }

    async fn cancel(&self, remote_id: &str) -> Result<bool, ProviderError> {
        if !self.inner.can_cancel() {
            return Ok(false);
        }
        self.within_limits(Kind::Status, self.inner.cancel(remote_id))
            .await
    }
}
