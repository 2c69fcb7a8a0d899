//! Authentication: a tenant by API key (`Authorization: Bearer <key>` or `x-api-key: <key>`), or the admin by
//! the configured admin token (compared in constant time). Every authenticated tenant request also counts against
//! the tenant's rate limit, shared by all gateways through Redis (429 `rate_limited` beyond it).

use axum::{extract::FromRequestParts, http::request::Parts};
use gantry_core::{model::now_ms, store::RateDecision};

use crate::{error::ApiError, AppState};

/// The authenticated tenant's id.
pub(crate) struct Tenant(pub String);

/// Proof that the caller holds the admin token.
pub(crate) struct Admin;

fn presented_key(parts: &Parts) -> Option<&str> {
    let bearer = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    bearer
        .or_else(|| {
            parts
                .headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|k| !k.is_empty())
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = presented_key(parts).ok_or(ApiError::Unauthorized)?;
        let owner = state
            .store
            .authenticate(key)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        tracing::Span::current().record("tenant.id", owner.tenant_id.as_str());
        let gateway = &state.config.gateway;
        let decision = state
            .store
            .tenant_rate(
                &owner,
                gateway.tenant_rate_per_sec,
                gateway.tenant_burst,
                now_ms(),
            )
            .await?;
        if let RateDecision::Limited { retry_after_ms } = decision {
            return Err(ApiError::RateLimited {
                retry_after_ms,
                limit: gateway.tenant_burst,
            });
        }
        Ok(Self(owner.tenant_id))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let expected = state
            .config
            .gateway
            .admin_token
            .as_ref()
            .ok_or(ApiError::Unauthorized)?;
        let presented = presented_key(parts).ok_or(ApiError::Unauthorized)?;
        if constant_time_eq(presented.as_bytes(), expected.expose().as_bytes()) {
            Ok(Self)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    // The token's length is not secret; its bytes are.
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
