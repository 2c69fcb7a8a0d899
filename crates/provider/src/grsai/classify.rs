//! Pure mapping from Grsai answers to Gantry's types: HTTP status to error class, create answer to task id, status
//! answer to [`RemoteStatus`].
//!
//! | answer | create | status |
//! | --- | --- | --- |
//! | HTTP 400/401/403/404/422 (and other 4xx but 408) | `Rejected{status}` | `Rejected{status}` |
//! | HTTP 429 | `RateLimited{Retry-After}` | `RateLimited{Retry-After}` |
//! | HTTP 408, 5xx, anything else unexpected | `Transient` | `Transient` |
//! | body that does not decode | `Transient` | `Transient` |
//! | `code: 0` | the id | the task's state |
//! | `code: -22` | `Rejected{200}` | `Pending` |
//! | other `code` | `Rejected{200}` | `Transient` |

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::wire::{CreatedData, Envelope, TaskData};
use crate::{FailureCode, ProviderError, RemoteStatus, Result};

/// `code` Grsai answers when it does not know a task (yet).
const NOT_KNOWN_YET: i64 = -22;

/// Longest provider message kept in an error, in characters.
const MAX_MESSAGE_CHARS: usize = 300;

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

/// The remote task id from a 2xx answer to a create call.
pub(crate) fn created_id(body: &[u8]) -> Result<String> {
    let envelope: Envelope<CreatedData> = decode(body)?;
    if envelope.code != 0 {
        return Err(ProviderError::Rejected {
            status: 200,
            message: code_message(envelope.code, envelope.msg),
        });
    }
    envelope
        .data
        .and_then(|data| non_empty(data.id))
        .ok_or_else(|| ProviderError::Transient("create answer without a task id".to_owned()))
}

/// The task's state from a 2xx answer to a status call.
pub(crate) fn remote_status(body: &[u8]) -> Result<RemoteStatus> {
    let envelope: Envelope<TaskData> = decode(body)?;
    match envelope.code {
        0 => {}
        NOT_KNOWN_YET => return Ok(RemoteStatus::Pending),
        code => return Err(ProviderError::Transient(code_message(code, envelope.msg))),
    }
    let data = envelope
        .data
        .ok_or_else(|| ProviderError::Transient("status answer without data".to_owned()))?;
    match data.status.as_deref() {
        Some("running") => Ok(RemoteStatus::Running {
            progress: progress(data.progress),
        }),
        Some("succeeded") => {
            let first_result = data
                .results
                .into_iter()
                .flatten()
                .find_map(|item| non_empty(item.url));
            let video_url = first_result
                .or_else(|| non_empty(data.url))
                .ok_or_else(|| ProviderError::Transient("succeeded task without a video url".to_owned()))?;
            Ok(RemoteStatus::Succeeded {
                video_url,
                last_frame_url: non_empty(data.last_frame_url),
            })
        }
        Some("failed") => {
            let reason = non_empty(data.failure_reason);
            let code = match reason.as_deref() {
                Some("input_moderation") => FailureCode::InputModeration,
                Some("output_moderation") => FailureCode::OutputModeration,
                _ => FailureCode::ProviderError,
            };
            let message = non_empty(data.error)
                .or(reason)
                .unwrap_or_else(|| "task failed without a reason".to_owned());
            Ok(RemoteStatus::Failed {
                code,
                message: truncate(&message),
            })
        }
        other => Err(ProviderError::Transient(format!("unknown task status {other:?}"))),
    }
}

/// `Retry-After` as a number of seconds; the HTTP-date form is not used by Grsai and is ignored.
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<Envelope<T>> {
    serde_json::from_slice(body)
        .map_err(|error| ProviderError::Transient(format!("undecodable answer: {error}")))
}

/// Progress as a percentage, clamped to 0..=100.
fn progress(value: Option<f64>) -> u8 {
    // The clamp makes the cast exact.
    value.unwrap_or(0.0).clamp(0.0, 100.0).round() as u8
}

fn code_message(code: i64, msg: Option<String>) -> String {
    format!(
        "code {code}: {}",
        truncate(msg.as_deref().unwrap_or("no message"))
    )
}

/// The `msg` of a JSON error body, or the body itself as text.
fn body_message(body: &[u8]) -> String {
    let msg = serde_json::from_slice::<Envelope<serde::de::IgnoredAny>>(body)
        .ok()
        .and_then(|envelope| non_empty(envelope.msg));
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

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.trim().is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{json, Value};

    use super::*;

    fn status(body: Value) -> Result<RemoteStatus> {
        remote_status(body.to_string().as_bytes())
    }

    fn data(data: Value) -> Result<RemoteStatus> {
        status(json!({ "code": 0, "msg": "success", "data": data }))
    }

    #[test]
    fn running_reports_clamped_progress() {
        let running = |progress: Value| data(json!({ "id": "t", "status": "running", "progress": progress }));
        assert_eq!(
            running(json!(42)).unwrap(),
            RemoteStatus::Running { progress: 42 }
        );
        assert_eq!(
            running(json!(250)).unwrap(),
            RemoteStatus::Running { progress: 100 }
        );
        assert_eq!(
            running(json!(null)).unwrap(),
            RemoteStatus::Running { progress: 0 }
        );
    }

    #[test]
    fn succeeded_takes_the_sora_or_the_veo_url() {
        let sora =
            data(json!({ "status": "succeeded", "results": [{ "url": "http://v/1.mp4" }], "url": "" }));
        assert_eq!(
            sora.unwrap(),
            RemoteStatus::Succeeded {
                video_url: "http://v/1.mp4".into(),
                last_frame_url: None
            }
        );
        let veo = data(
            json!({ "status": "succeeded", "results": [], "url": "http://v/2.mp4",
                               "last_frame_url": "http://f/2.jpg" }),
        );
        assert_eq!(
            veo.unwrap(),
            RemoteStatus::Succeeded {
                video_url: "http://v/2.mp4".into(),
                last_frame_url: Some("http://f/2.jpg".into())
            }
        );
        let nothing = data(json!({ "status": "succeeded", "results": [{ "url": "" }], "url": "" }));
        assert!(matches!(nothing, Err(ProviderError::Transient(_))));
    }

    #[test]
    fn failure_reasons_map_to_failure_codes() {
        let failed = |reason: &str, error: &str| {
            data(json!({ "status": "failed", "failure_reason": reason, "error": error })).unwrap()
        };
        assert_eq!(
            failed("input_moderation", ""),
            RemoteStatus::Failed {
                code: FailureCode::InputModeration,
                message: "input_moderation".into()
            }
        );
        assert!(matches!(
            failed("output_moderation", "nsfw"),
            RemoteStatus::Failed { code: FailureCode::OutputModeration, message } if message == "nsfw"
        ));
        assert!(matches!(
            failed("error", "boom"),
            RemoteStatus::Failed { code: FailureCode::ProviderError, message } if message == "boom"
        ));
        assert!(matches!(
            failed("", ""),
            RemoteStatus::Failed {
                code: FailureCode::ProviderError,
                ..
            }
        ));
    }

    #[test]
    fn status_codes_and_malformed_answers() {
        assert_eq!(
            status(json!({ "code": -22, "msg": "not found" })).unwrap(),
            RemoteStatus::Pending
        );
        assert!(matches!(
            status(json!({ "code": -1, "msg": "x" })),
            Err(ProviderError::Transient(_))
        ));
        assert!(matches!(
            status(json!({ "code": 0 })),
            Err(ProviderError::Transient(_))
        ));
        assert!(matches!(
            data(json!({ "status": "weird" })),
            Err(ProviderError::Transient(_))
        ));
        assert!(matches!(
            remote_status(b"<html>"),
            Err(ProviderError::Transient(_))
        ));
        assert!(matches!(
            remote_status(b"{\"msg\":\"no code\"}"),
            Err(ProviderError::Transient(_))
        ));
    }

    #[test]
    fn create_answers() {
        let body = json!({ "code": 0, "msg": "success", "data": { "id": "abc" } }).to_string();
        assert_eq!(created_id(body.as_bytes()).unwrap(), "abc");
        let body = json!({ "code": -3, "msg": "insufficient credits" }).to_string();
        assert!(matches!(
            created_id(body.as_bytes()),
            Err(ProviderError::Rejected { status: 200, message }) if message.contains("insufficient credits")
        ));
        let body = json!({ "code": 0, "data": {} }).to_string();
        assert!(matches!(
            created_id(body.as_bytes()),
            Err(ProviderError::Transient(_))
        ));
        assert!(matches!(created_id(b""), Err(ProviderError::Transient(_))));
    }

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
        let long = "é".repeat(MAX_MESSAGE_CHARS + 10);
        assert_eq!(
            body_message(long.as_bytes()).chars().count(),
            MAX_MESSAGE_CHARS + 1
        );
    }
}
