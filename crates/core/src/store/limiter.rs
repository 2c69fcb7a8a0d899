//! The shared limits of a provider, kept in Redis so every submitter and poller process counts together.

use super::{Result, Store};
use crate::config::ProviderLimits;

/// How a limited call ended, for the AIMD rate adjustment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Ok,
    RateLimited,
    Error,
}

/// The lowest the AIMD factor goes after repeated 429s, and how much each good answer gives back.
const FACTOR_FLOOR: f64 = 0.05;
const FACTOR_STEP: f64 = 0.02;

impl Store {
    /// Asks for a request slot of `provider`; 0 = granted (held by `holder` until released or `lease_ms`),
    /// otherwise how many ms to wait before asking again.
    pub async fn limiter_acquire(
        &self,
        provider: &str,
        limits: &ProviderLimits,
        share: f64,
        lease_ms: u64,
        holder: &str,
        now: u64,
    ) -> Result<u64> {
        let (tat, inflight, factor) = self.keys.limiter(provider);
        Ok(self
            .scripts
            .limiter_acquire
            .key(tat)
            .key(inflight)
            .key(factor)
            .arg(now)
            .arg(limits.rate_per_sec)
            .arg(limits.burst.max(1))
            .arg(limits.max_in_flight)
            .arg(share)
            .arg(lease_ms)
            .arg(holder)
            .invoke_async(&mut self.connection())
            .await?)
    }

    /// Gives the slot back and adjusts the shared rate; returns the factor now in force.
    pub async fn limiter_release(&self, provider: &str, holder: &str, outcome: CallOutcome) -> Result<f64> {
        let (_, inflight, factor) = self.keys.limiter(provider);
        let outcome = match outcome {
            CallOutcome::Ok => "ok",
            CallOutcome::RateLimited => "rate_limited",
            CallOutcome::Error => "error",
        };
        let now: String = self
            .scripts
            .limiter_release
            .key(inflight)
            .key(factor)
            .arg(holder)
            .arg(outcome)
            .arg(FACTOR_FLOOR)
            .arg(FACTOR_STEP)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(now.parse().unwrap_or(1.0))
    }
}

/// The answer of a tenant's rate limit to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Go ahead; `remaining` more requests could go right now.
    Allowed { remaining: u64 },
    /// Too many: try again after this long (ms).
    Limited { retry_after_ms: u64 },
}

impl Store {
    /// Counts one request of `key`'s tenant against its rate limit (`rate_per_sec` on average, bursts of
    /// `burst`), which every gateway shares, and records the key's use.
    pub async fn tenant_rate(
        &self,
        key: &super::KeyOwner,
        rate_per_sec: f64,
        burst: u32,
        now: u64,
    ) -> Result<RateDecision> {
        let (allowed, wait_ms, remaining): (i64, u64, u64) = self
            .scripts
            .tenant_rate
            .key(self.keys.tenant_rate(&key.tenant_id))
            .key(self.keys.api_keys_used(&key.tenant_id))
            .arg(now)
            .arg(rate_per_sec)
            .arg(burst)
            .arg(&key.key_id)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(if allowed == 1 {
            RateDecision::Allowed { remaining }
        } else {
            RateDecision::Limited {
                retry_after_ms: wait_ms,
            }
        })
    }
}
