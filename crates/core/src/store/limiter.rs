//! The shared limits of a provider, kept in Redis so every submitter and poller process counts together.

use super::{Result, Store};
use crate::config::ProviderLimits;

/// The lowest the AIMD factor goes after repeated 429s, and how much each good answer gives back.
const FACTOR_FLOOR: f64 = 0.05;
const FACTOR_STEP: f64 = 0.02;

/// What one process's pool asks of a provider's shared limits (see `limiter_take.lua`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PermitRequest<'a> {
    /// Which share of the in-flight slots this kind of call may use (creates leave room for polls).
    pub share: f64,
    /// How long the slots stay held should the holder die (ms).
    pub lease_ms: u64,
    /// The pool's id (one per process and kind of call).
    pub holder: &'a str,
    /// The slots the pool wants to hold, those in use included; 0 gives them all back.
    pub slots: u32,
    /// The rate tokens the pool wants now.
    pub tokens: u32,
    /// What the pool's calls met since it last asked: 429s, and good answers.
    pub rate_limited: u32,
    pub ok: u32,
}

/// What the shared limits granted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PermitGrant {
    /// The slots the pool holds now (may be fewer than it holds in use, when others took the rest).
    pub slots: u32,
    /// Rate tokens granted, to be spent at once.
    pub tokens: u32,
    /// When no token was granted: how long to wait before asking again (ms).
    pub wait_ms: u64,
    /// The AIMD factor now in force.
    pub factor: f64,
}

impl Store {
    /// Asks `provider`'s shared limits for a block of permits (one script call, however many are granted).
    pub async fn limiter_take(
        &self,
        provider: &str,
        limits: &ProviderLimits,
        request: &PermitRequest<'_>,
        now: u64,
    ) -> Result<PermitGrant> {
        let (tat, holders, factor) = self.keys.limiter(provider);
        let (slots, tokens, wait_ms, factor): (u32, u32, u64, String) = self
            .scripts
            .limiter_take
            .key(tat)
            .key(holders)
            .key(factor)
            .arg(now)
            .arg(limits.rate_per_sec)
            .arg(limits.burst.max(1))
            .arg(limits.max_in_flight)
            .arg(request.share)
            .arg(request.lease_ms)
            .arg(request.holder)
            .arg(request.slots)
            .arg(request.tokens)
            .arg(request.rate_limited)
            .arg(request.ok)
            .arg(FACTOR_FLOOR)
            .arg(FACTOR_STEP)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(PermitGrant {
            slots,
            tokens,
            wait_ms,
            factor: factor.parse().unwrap_or(1.0),
        })
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
