//! What a provider's answers mean for a task, decided here and nowhere else: the poller, the webhook route and
//! the submitter all call this module.
//!
//! - A remote status becomes a [`PollStep`]: keep polling (with the progress), or finish the task with an
//!   [`Outcome`].
//! - A failed call becomes a [`Decision`] (retry after a delay, or give up) and, when given up, a [`FailureCode`].
//!
//! Rejections (400/401/403/404, content policy) never retry. A 429 waits for its `Retry-After`, or else for a
//! long exponential backoff; transient failures (5xx, timeouts, connection errors, malformed answers) back off
//! exponentially from a short base, with jitter. Delays come from `backon`'s exponential builder.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use gantry_core::{config::RetryConfig, domain::FailureCode, store::Outcome};

use crate::{ProviderError, RemoteStatus};

/// What a remote status means for the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollStep {
    /// Still going: ask again later. `progress` is the provider's figure (0..=100), if it gave one.
    Continue { progress: Option<u8> },
    /// The remote task ended: finish ours.
    Finish(Outcome),
}

/// The step a remote status calls for.
pub fn poll_step(status: RemoteStatus) -> PollStep {
    match status {
        RemoteStatus::Pending => PollStep::Continue { progress: None },
        RemoteStatus::Running { progress } => PollStep::Continue {
            progress: Some(progress),
        },
        RemoteStatus::Succeeded {
            video_url,
            last_frame_url,
        } => PollStep::Finish(Outcome::Succeeded {
            video_url,
            last_frame_url,
        }),
        RemoteStatus::Failed { code, message } => PollStep::Finish(Outcome::Failed { code, message }),
    }
}

/// The outcome a remote status announces, if it is terminal.
pub fn terminal_outcome(status: RemoteStatus) -> Option<Outcome> {
    match poll_step(status) {
        PollStep::Finish(outcome) => Some(outcome),
        PollStep::Continue { .. } => None,
    }
}

/// The failure code of a task whose provider calls failed for good with `error`.
pub fn failure_code(error: &ProviderError) -> FailureCode {
    match error {
        ProviderError::Rejected { .. } => FailureCode::Rejected,
        ProviderError::RateLimited { .. } | ProviderError::Transient(_) => FailureCode::ProviderError,
    }
}

/// What a tenant is told about a failed provider call: a short fixed sentence per class. The error itself (which
/// may carry the provider's URL or its own words) goes to the logs only, under the trace id.
pub fn public_message(error: &ProviderError) -> String {
    match error {
        ProviderError::Rejected { status, .. } => format!("the provider refused the request (HTTP {status})"),
        ProviderError::RateLimited { .. } => "the provider is limiting the rate of requests".into(),
        ProviderError::Transient(_) => "the provider failed or did not answer in time".into(),
    }
}

/// The outcome of a task given up after `error`.
pub fn given_up(error: &ProviderError) -> Outcome {
    Outcome::Failed {
        code: failure_code(error),
        message: public_message(error),
    }
}

/// Why a call is retried, as the `gantry.retry.reason` metric attribute (`None`: it is not retried).
pub fn retry_reason(error: &ProviderError) -> Option<&'static str> {
    match error {
        ProviderError::Rejected { .. } => None,
        ProviderError::RateLimited { .. } => Some("rate_limited"),
        ProviderError::Transient(_) => Some("transient"),
    }
}

/// What to do after a failed provider call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again after this long.
    RetryAfter(Duration),
    /// Stop: the failure is permanent, or the attempts are used up.
    GiveUp,
}

/// The decision after `attempt` (1-based) failed with `error`.
pub fn decide(policy: &RetryConfig, error: &ProviderError, attempt: u32) -> Decision {
    if attempt >= policy.max_attempts {
        return Decision::GiveUp;
    }
    match error {
        ProviderError::Rejected { .. } => Decision::GiveUp,
        ProviderError::RateLimited {
            retry_after: Some(wait),
        } => Decision::RetryAfter((*wait).min(Duration::from_millis(policy.cap_ms))),
        ProviderError::RateLimited { retry_after: None } => {
            Decision::RetryAfter(backoff(policy, policy.rate_limited_base_ms, attempt))
        }
        ProviderError::Transient(_) => {
            Decision::RetryAfter(backoff(policy, policy.transient_base_ms, attempt))
        }
    }
}

/// The `attempt`-th delay (1-based) of an exponential backoff from `base_ms`, capped, with jitter.
pub fn backoff(policy: &RetryConfig, base_ms: u64, attempt: u32) -> Duration {
    let cap = Duration::from_millis(policy.cap_ms.max(base_ms));
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(base_ms))
        .with_factor(policy.factor as f32)
        .with_max_delay(cap)
        .with_max_times(attempt as usize)
        .with_jitter()
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(cap)
        .min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryConfig {
        RetryConfig {
            transient_base_ms: 2000,
            rate_limited_base_ms: 30000,
            factor: 2.0,
            cap_ms: 600_000,
            max_attempts: 5,
        }
    }

    fn delay(d: Decision) -> Duration {
        match d {
            Decision::RetryAfter(d) => d,
            Decision::GiveUp => panic!("gave up"),
        }
    }

    #[test]
    fn remote_statuses_map_to_steps() {
        assert_eq!(
            poll_step(RemoteStatus::Pending),
            PollStep::Continue { progress: None }
        );
        assert_eq!(
            poll_step(RemoteStatus::Running { progress: 40 }),
            PollStep::Continue { progress: Some(40) }
        );
        let failed = RemoteStatus::Failed {
            code: FailureCode::InputModeration,
            message: "no".into(),
        };
        assert_eq!(
            terminal_outcome(failed),
            Some(Outcome::Failed {
                code: FailureCode::InputModeration,
                message: "no".into()
            })
        );
        assert_eq!(terminal_outcome(RemoteStatus::Running { progress: 1 }), None);
    }

    #[test]
    fn errors_map_to_failure_codes_and_retry_reasons() {
        let rejected = ProviderError::Rejected {
            status: 403,
            message: "no".into(),
        };
        assert_eq!(failure_code(&rejected), FailureCode::Rejected);
        assert_eq!(retry_reason(&rejected), None);
        let limited = ProviderError::RateLimited { retry_after: None };
        assert_eq!(failure_code(&limited), FailureCode::ProviderError);
        assert_eq!(retry_reason(&limited), Some("rate_limited"));
        assert_eq!(
            retry_reason(&ProviderError::Transient("x".into())),
            Some("transient")
        );
        let leaky =
            ProviderError::Transient("error sending request for url (http://10.0.0.1/v1/draw/result)".into());
        assert!(!public_message(&leaky).contains("http://"));
        assert!(
            !public_message(&rejected).contains("no"),
            "the provider's own words stay out"
        );
    }

    #[test]
    fn rejections_never_retry_and_attempts_run_out() {
        let p = policy();
        let rejected = ProviderError::Rejected {
            status: 400,
            message: "bad".into(),
        };
        assert_eq!(decide(&p, &rejected, 1), Decision::GiveUp);
        assert_eq!(
            decide(&p, &ProviderError::Transient("503".into()), 5),
            Decision::GiveUp
        );
    }

    #[test]
    fn transient_backoff_grows_from_two_seconds_with_jitter() {
        let p = policy();
        let first = delay(decide(&p, &ProviderError::Transient("x".into()), 1));
        let third = delay(decide(&p, &ProviderError::Transient("x".into()), 3));
        assert!(
            first >= Duration::from_secs(2) && first < Duration::from_secs(4),
            "{first:?}"
        );
        assert!(
            third >= Duration::from_secs(8) && third < Duration::from_secs(16),
            "{third:?}"
        );
    }

    #[test]
    fn rate_limits_honour_retry_after_else_wait_long() {
        let p = policy();
        let told = ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(delay(decide(&p, &told, 1)), Duration::from_secs(7));
        let untold = delay(decide(&p, &ProviderError::RateLimited { retry_after: None }, 1));
        assert!(untold >= Duration::from_secs(30), "{untold:?}");
        assert!(backoff(&p, 30_000, 30) <= Duration::from_millis(p.cap_ms));
    }
}
