//! Pure mapping from Grsai answers to Gantry's types: create answer to task id, status answer (or callback) to
//! [`RemoteStatus`]. Non-2xx answers are classified by the shared `crate::classify`.
//!
//! | answer | create | status |
//! | --- | --- | --- |
//! | HTTP 400/401/403/404/422 (and other 4xx but 408 and 429) | `Rejected{status}` | `Rejected{status}` |
//! | HTTP 429 | `RateLimited{Retry-After}` | `RateLimited{Retry-After}` |
//! | HTTP 408, 5xx, anything else unexpected | `Transient` | `Transient` |
//! | body that does not decode | `Transient` | `Transient` |
//! | `code: 0` | the id | the task's state |
//! | `code: -22` | `Rejected{200}` | `Pending` |
//! | other `code` | `Rejected{200}` | `Transient` |

use serde::de::DeserializeOwned;

use super::wire::{CreatedData, Envelope, TaskData};
use crate::{
    classify::{non_empty, progress, truncate},
    FailureCode, ProviderError, RemoteStatus, Result,
};

/// `code` Grsai answers when it does not know a task (yet).
const NOT_KNOWN_YET: i64 = -22;

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
    task_status(data)
}

/// The remote id and state carried by a Grsai callback, whose body is the `data` object of the status answer
/// (`id`, `status`, `progress`, `results`, `url`, `failure_reason`, `error`, `last_frame_url`).
///
/// Mapped exactly like a status answer; a body that does not decode, lacks the id or has an unknown status is
/// [`ProviderError::Transient`], as it would be from the status call.
pub fn parse_grsai_callback(body: &[u8]) -> Result<(String, RemoteStatus)> {
    let mut data: TaskData = serde_json::from_slice(body)
        .map_err(|error| ProviderError::Transient(format!("undecodable callback: {error}")))?;
    let id = non_empty(data.id.take())
        .ok_or_else(|| ProviderError::Transient("callback without a task id".to_owned()))?;
    Ok((id, task_status(data)?))
}

/// The state described by one task object.
fn task_status(data: TaskData) -> Result<RemoteStatus> {
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

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<Envelope<T>> {
    serde_json::from_slice(body)
        .map_err(|error| ProviderError::Transient(format!("undecodable answer: {error}")))
}

fn code_message(code: i64, msg: Option<String>) -> String {
    format!(
        "code {code}: {}",
        truncate(msg.as_deref().unwrap_or("no message"))
    )
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
    fn callbacks_map_like_status_answers() {
        let body = json!({ "id": "sim-1", "status": "succeeded", "progress": 100, "results": [{ "url": "http://v/1.mp4" }],
                           "url": "http://v/1.mp4", "failure_reason": "", "error": "",
                           "last_frame_url": "http://f/1.jpg" });
        assert_eq!(
            parse_grsai_callback(body.to_string().as_bytes()).unwrap(),
            (
                "sim-1".to_owned(),
                RemoteStatus::Succeeded {
                    video_url: "http://v/1.mp4".into(),
                    last_frame_url: Some("http://f/1.jpg".into())
                }
            )
        );
        let body = json!({ "id": "sim-2", "status": "running", "progress": 50 });
        assert_eq!(
            parse_grsai_callback(body.to_string().as_bytes()).unwrap().1,
            RemoteStatus::Running { progress: 50 }
        );
        let body = json!({ "id": "sim-3", "status": "failed", "failure_reason": "input_moderation" });
        assert!(matches!(
            parse_grsai_callback(body.to_string().as_bytes()).unwrap().1,
            RemoteStatus::Failed {
                code: FailureCode::InputModeration,
                ..
            }
        ));
        for bad in [
            json!({ "status": "running" }),
            json!({ "id": "", "status": "running" }),
            json!({ "id": "x", "status": "weird" }),
        ] {
            assert!(
                matches!(
                    parse_grsai_callback(bad.to_string().as_bytes()),
                    Err(ProviderError::Transient(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_grsai_callback(b"not json"),
            Err(ProviderError::Transient(_))
        ));
    }
}
