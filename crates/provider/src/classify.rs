//! Error classification shared by every client: a non-2xx HTTP answer becomes a [`ProviderError`] class, and
//! provider messages are shortened before they travel in an error.
//!
//! | HTTP answer | class |
//! | --- | --- |
//! | 400/401/403/404/422 (and any other 4xx but 408 and 429) | `Rejected{status}` |
//! | 429 | `RateLimited{Retry-After}` |
//! | 408, 5xx, anything else unexpected | `Transient` |
//!
//! Bodies that do not decode, timeouts and connection failures are `Transient` too; the clients see to those.

use std::time::Duration;

use serde::Deserialize;

use crate::ProviderError;

/// Longest provider message kept in an error, in characters.
pub(crate) const MAX_MESSAGE_CHARS: usize = 300;

/// The error for a non-2xx answer with `status`, its `Retry-After` header and its body.
pub(crate) fn http_error(status: u16, retry_after: Option<&str>, body: &[u8]) -> ProviderError {
    match status {
        429 => ProviderError::RateLimited {
            retry_after: retry_after.and_then(parse_retry_after),
        },
        408 => ProviderError::Transient(format!("http {status}: {}", body_message(body))),
        400..=499 => ProviderError::Rejected {
            status,
            message: body_message(body),
        },
        _ => ProviderError::Transient(format!("http {status}: {}", body_message(body))),
    }
}

/// `Retry-After` as a number of seconds; the HTTP-date form is not used by our providers and is ignored.
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The error shapes our providers answer with: Grsai `{code, msg}`, Seedance `{error: {code, message}}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorShapes {
    msg: Option<String>,
    error: Option<ErrorDetail>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorDetail {
    code: Option<String>,
    message: Option<String>,
}

/// The message of a JSON error body (Grsai `msg`, Seedance `error.code: error.message`), or the body as text.
pub(crate) fn body_message(body: &[u8]) -> String {
    let shapes = serde_json::from_slice::<ErrorShapes>(body).ok();
    let msg = shapes.and_then(|shapes| {
        let seedance =
            shapes
                .error
                .and_then(|error| match (non_empty(error.code), non_empty(error.message)) {
                    (Some(code), Some(message)) => Some(format!("{code}: {message}")),
                    (code, message) => message.or(code),
                });
        non_empty(shapes.msg).or(seedance)
    });
    match msg {
        Some(msg) => truncate(&msg),
        None => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                "no message".to_owned()
            } else {
                truncate(text)
            }
        }
    }
}

/// `text` cut to [`MAX_MESSAGE_CHARS`] characters, with an ellipsis when cut.
pub(crate) fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// `value` unless it is absent or blank (providers send empty strings for fields that do not apply).
pub(crate) fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.trim().is_empty())
}

/// Progress as a percentage, clamped to 0..=100.
pub(crate) fn progress(value: Option<f64>) -> u8 {
    // The clamp makes the cast exact.
    value.unwrap_or(0.0).clamp(0.0, 100.0).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_are_classified() {
        for status in [400, 401, 403, 404, 422] {
            assert!(
                matches!(http_error(status, None, b"{\"code\":-1,\"msg\":\"bad\"}"),
                    ProviderError::Rejected { status: s, message } if s == status && message == "bad"),
                "{status}"
            );
        }
        assert!(matches!(
            http_error(429, Some(" 7 "), b""),
            ProviderError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            http_error(429, Some("Wed, 21 Oct 2015 07:28:00 GMT"), b""),
            ProviderError::RateLimited { retry_after: None }
        ));
        for status in [408, 500, 502, 503, 504, 302] {
            assert!(
                matches!(http_error(status, None, b"oops"), ProviderError::Transient(_)),
                "{status}"
            );
        }
    }

    #[test]
    fn messages_are_taken_from_the_body_and_truncated() {
        assert_eq!(body_message(b"  plain text \n"), "plain text");
        assert_eq!(body_message(b""), "no message");
        assert_eq!(
            body_message(br#"{"error":{"code":"InvalidParameter","message":"bad ratio"}}"#),
            "InvalidParameter: bad ratio"
        );
        assert_eq!(
            body_message(br#"{"error":{"code":"AuthenticationError"}}"#),
            "AuthenticationError"
        );
        let long = "é".repeat(MAX_MESSAGE_CHARS + 10);
        assert_eq!(
            body_message(long.as_bytes()).chars().count(),
            MAX_MESSAGE_CHARS + 1
        );
    }

    #[test]
    fn progress_is_clamped() {
        assert_eq!(progress(Some(42.4)), 42);
        assert_eq!(progress(Some(250.0)), 100);
        assert_eq!(progress(Some(-3.0)), 0);
        assert_eq!(progress(None), 0);
    }
}
