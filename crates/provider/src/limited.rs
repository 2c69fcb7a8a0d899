//! A provider whose every call first takes a permit of the provider's cluster-wide limits (`store/limiter.rs`):
//! an in-flight slot and a rate token, shared by every replica through Redis.
//!
//! Permits are asked for in blocks: each process keeps one pool per kind of call, which holds some in-flight
//! slots (leased, so a dead process's slots come back by themselves) and spends rate tokens it was granted
//! together. A busy pool asks Redis once for many calls instead of twice per call; an idle one gives its slots
//! back. What the calls met (429s, good answers) rides along with the next ask, to drive the shared AIMD factor.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicU32, Ordering::Relaxed},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use gantry_core::{
    config::ProviderLimits,
    model::now_ms,
    store::{PermitGrant, PermitRequest},
    Store,
};
use tokio::sync::{futures::Notified, Notify};

use crate::{CreateRequest, Provider, ProviderError, ProviderName, RemoteStatus};

/// Granted rate tokens must be spent soon: kept longer, they would add to a later burst.
const TOKEN_SHELF_LIFE: Duration = Duration::from_millis(100);

/// How long to wait before asking again when every slot is held elsewhere (ms).
const SLOT_WAIT_MS: u64 = 20;

/// The most tokens one ask wants.
const MOST_TOKENS_PER_ASK: u32 = 256;

/// A provider whose every call first takes a permit of the provider's cluster-wide limits.
pub(crate) struct Limited {
    inner: Arc<dyn Provider>,
    create: Pool,
    status: Pool,
}

impl Limited {
    /// `lease_ms`: how long a slot stays held should its holder die (the call's timeout plus a margin).
    pub(crate) fn new(inner: Arc<dyn Provider>, store: Store, limits: ProviderLimits, lease_ms: u64) -> Self {
        let pool = |share: f64, kind: &str| Pool {
            store: store.clone(),
            provider: inner.name(),
            limits: limits.clone(),
            share,
            lease_ms,
            holder: format!("{kind}-{}", uuid::Uuid::now_v7().simple()),
            state: Mutex::new(PoolState::default()),
            asked: Notify::new(),
            waiting: AtomicU32::new(0),
        };
        Self {
            // Creates leave room for polls, so running tasks are always followed.
            create: pool(limits.create_share, "create"),
            status: pool(1.0, "status"),
            inner,
        }
    }
}

/// One process's share of a provider's limits for one kind of call.
struct Pool {
    store: Store,
    provider: ProviderName,
    limits: ProviderLimits,
    share: f64,
    lease_ms: u64,
    holder: String,
    /// Never held across an await.
    state: Mutex<PoolState>,
    /// Wakes every call waiting for the ask in progress (see [`Asking`]).
    asked: Notify,
    /// Calls waiting for a permit (they size the next ask).
    waiting: AtomicU32,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Slots held in Redis, and how many of them calls are using.
    held: u32,
    in_use: u32,
    /// Rate tokens granted and not spent yet, good until `tokens_until`.
    tokens: u32,
    tokens_until: Option<Instant>,
    /// What calls met since the last ask.
    rate_limited: u32,
    ok: u32,
    /// The AIMD factor last seen (good answers only matter below 1).
    factor: f64,
    /// An ask is on its way to Redis: calls wait for its grant rather than take from the one it replaces.
    asking: bool,
}

impl PoolState {
    /// Takes a slot and a token when both are at hand.
    fn take(&mut self, now: Instant) -> bool {
        let fresh = self.tokens_until.is_some_and(|until| now < until);
        if self.in_use < self.held && self.tokens > 0 && fresh {
            self.in_use += 1;
            self.tokens -= 1;
            true
        } else {
            false
        }
    }

    /// Records what an ask of `wanted` was granted. What calls met while it was on its way stays for the next ask.
    fn granted(&mut self, wanted: &PermitRequest<'_>, grant: &PermitGrant) {
        self.held = grant.slots;
        self.tokens = grant.tokens;
        self.tokens_until = Some(Instant::now() + TOKEN_SHELF_LIFE);
        self.rate_limited = self.rate_limited.saturating_sub(wanted.rate_limited);
        self.ok = self.ok.saturating_sub(wanted.ok);
        self.factor = grant.factor;
    }
}

/// See [`Pool::step`].
enum Step<'a> {
    /// The call has its permit.
    Taken,
    /// Another call is asking: wait for its grant.
    Wait(Notified<'a>),
    /// This call asks.
    Ask(PermitRequest<'a>, Asking<'a>),
}

/// The one ask of a pool in progress. When it ends (or its call is dropped half-way), every call waiting for it
/// is woken at once, so the calls of a burst go out together: a lock handed from one waiter to the next let them
/// out one per turn of the runtime, and each left in a write of its own.
struct Asking<'a>(&'a Pool);

impl<'a> Asking<'a> {
    fn start(pool: &'a Pool, state: &mut PoolState) -> Self {
        state.asking = true;
        Self(pool)
    }
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        self.0.lock().asking = false;
        self.0.asked.notify_waiters();
    }
}

/// Counts a call in its pool's `waiting` while it waits for a permit (including when it is dropped half-way).
struct Waiting<'a>(&'a AtomicU32);

impl<'a> Waiting<'a> {
    fn start(waiting: &'a AtomicU32) -> Self {
        waiting.fetch_add(1, Relaxed);
        Self(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// How a call under a permit ended, for the AIMD rate adjustment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallOutcome {
    Ok,
    RateLimited,
    Error,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // The state is plain counters: a panic while it was locked leaves nothing half-done worth refusing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a permit: a slot and a token of this pool, asking Redis for a block of them when none is at hand.
    async fn acquire(&self) -> Result<(), ProviderError> {
        let _waiting = Waiting::start(&self.waiting);
        let (mut wanted, _asking) = loop {
            match self.step() {
                Step::Taken => return Ok(()),
                Step::Wait(asked) => asked.await,
                Step::Ask(wanted, asking) => break (wanted, asking),
            }
        };
        // This call asks for the pool; the others wait for what it is granted.
        loop {
            let grant = self.ask(&wanted).await?;
            let wait = {
                let mut state = self.lock();
                state.granted(&wanted, &grant);
                if state.take(Instant::now()) {
                    return Ok(());
                }
                // No slot free (other replicas hold them): ask again a little later; else the rate says when.
                if grant.slots <= state.in_use {
                    SLOT_WAIT_MS
                } else {
                    grant.wait_ms.max(1)
                }
            };
            // Waiting here is back-pressure on this worker.
            tokio::time::sleep(Duration::from_millis(wait)).await;
            wanted = self.wanted(&self.lock());
        }
    }

    /// What a call waiting for a permit does next, decided under the lock.
    fn step(&self) -> Step<'_> {
        let mut state = self.lock();
        if state.asking {
            // Registered before the lock is let go, so the end of that ask cannot be missed.
            return Step::Wait(self.asked.notified());
        }
        if state.take(Instant::now()) {
            return Step::Taken;
        }
        Step::Ask(self.wanted(&state), Asking::start(self, &mut state))
    }

    /// An ask for the slots in use plus one per waiting call, and a token per waiting call.
    fn wanted(&self, state: &PoolState) -> PermitRequest<'_> {
        let waiting = self.waiting.load(Relaxed).max(1);
        self.request(state, state.in_use + waiting, waiting.min(MOST_TOKENS_PER_ASK))
    }

    /// An ask for `slots` held and `tokens` now, carrying what the pool's calls met since its last ask (good
    /// answers only matter while the shared rate is lowered).
    fn request(&self, state: &PoolState, slots: u32, tokens: u32) -> PermitRequest<'_> {
        PermitRequest {
            share: self.share,
            lease_ms: self.lease_ms,
            holder: &self.holder,
            slots,
            tokens,
            rate_limited: state.rate_limited,
            ok: if state.factor < 1.0 { state.ok } else { 0 },
        }
    }

    /// One ask of the shared limits (the caller records the grant).
    async fn ask(&self, wanted: &PermitRequest<'_>) -> Result<PermitGrant, ProviderError> {
        let grant = self
            .store
            .limiter_take(self.provider.as_str(), &self.limits, wanted, now_ms())
            .await
            .map_err(|e| ProviderError::Transient(format!("shared limiter unavailable: {e}")))?;
        if wanted.rate_limited > 0 {
            tracing::warn!(
                provider = self.provider.as_str(),
                factor = grant.factor,
                "provider answered 429; shared rate lowered"
            );
        }
        Ok(grant)
    }

    /// Gives the slot back and notes the outcome. A 429 is reported at once (every replica should slow down),
    /// unless an ask is already on its way (it rides with the next one); a pool left idle hands its slots back to
    /// the other replicas.
    async fn release(&self, outcome: CallOutcome) {
        let (report, asking) = {
            let mut state = self.lock();
            state.in_use = state.in_use.saturating_sub(1);
            match outcome {
                CallOutcome::Ok => state.ok += 1,
                CallOutcome::RateLimited => state.rate_limited += 1,
                CallOutcome::Error => {}
            }
            let idle = state.in_use == 0 && self.waiting.load(Relaxed) == 0;
            if state.asking || !(outcome == CallOutcome::RateLimited || (idle && state.held > 0)) {
                return;
            }
            let keep = if idle { 0 } else { state.held };
            (self.request(&state, keep, 0), Asking::start(self, &mut state))
        };
        match self.ask(&report).await {
            Ok(grant) => self.lock().granted(&report, &grant),
            // On failure the slots' lease ends by itself, and the outcome rides with the next ask.
            Err(e) => tracing::warn!(error = %e, "returning provider permits failed"),
        }
        drop(asking);
    }

    /// Runs `call` (not started until awaited) under a permit of this pool, and notes its outcome.
    async fn within_limits<T>(
        &self,
        call: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        self.acquire().await?;
        let result = call.await;
        let outcome = match &result {
            Ok(_) => CallOutcome::Ok,
            Err(ProviderError::RateLimited { .. }) => CallOutcome::RateLimited,
            Err(_) => CallOutcome::Error,
        };
        self.release(outcome).await;
        result
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
        self.create.within_limits(self.inner.create(request)).await
    }

    async fn status(&self, remote_id: &str) -> Result<RemoteStatus, ProviderError> {
        self.status.within_limits(self.inner.status(remote_id)).await
    }

    async fn cancel(&self, remote_id: &str) -> Result<bool, ProviderError> {
        if !self.inner.can_cancel() {
            return Ok(false);
        }
        self.status.within_limits(self.inner.cancel(remote_id)).await
    }
}
