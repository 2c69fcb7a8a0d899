//! Pure mapping from Seedance answers to Gantry's types: create answer to task id, task (status answer or callback)
//! to [`RemoteStatus`]. Non-2xx answers are classified by the shared `crate::classify`.
//!
//! | task `status` | [`RemoteStatus`] |
//! | --- | --- |
//! | `queued` | `Running{0}` |
//! | `running` | `Running{50}` (Seedance reports no progress) |
//! | `succeeded` | `Succeeded{content.video_url, content.last_frame_url}` |
//! | `failed`, `error.code` about sensitive content or moderation | `Failed{InputModeration}` (`OutputModeration` when the code names the output) |
//! | `failed`, any other code | `Failed{ProviderError}` |
//! | `cancelled` | `Failed{ProviderError, "cancelled at the provider"}` |
//! | `expired` | `Failed{Timeout, "expired at the provider"}` |
//! | anything else, or a body that does not decode | `Transient` error |

use serde::de::DeserializeOwned;

use super::wire::{Created, Task};
use crate::{
    classify::{non_empty, truncate},
    FailureCode, ProviderError, RemoteStatus, Result,
};

/// Progress reported for a running task, which Seedance does not measure.
const RUNNING_PROGRESS: u8 = 50;

/// The remote task id from a 2xx answer to a create call.
pub(crate) fn created_id(body: &[u8]) -> Result<String> {
    let created: Created = decode(body, "answer")?;
    non_empty(created.id)
        .ok_or_else(|| ProviderError::Transient("create answer without a task id".to_owned()))
}

/// The task's state from a 2xx answer to a status call.
pub(crate) fn remote_status(body: &[u8]) -> Result<RemoteStatus> {
    task_status(decode(body, "answer")?)
}

/// The remote id and state carried by a Seedance callback, whose body is the task object of the status answer.
///
/// Mapped exactly like a status answer; a body that does not decode, lacks the id or has an unknown status is
/// [`ProviderError::Transient`], as it would be from the status call.
pub fn parse_seedance_callback(body: &[u8]) -> Result<(String, RemoteStatus)> {
    let mut task: Task = decode(body, "callback")?;
    let id = non_empty(task.id.take())
        .ok_or_else(|| ProviderError::Transient("callback without a task id".to_owned()))?;
    Ok((id, task_status(task)?))
}

fn task_status(task: Task) -> Result<RemoteStatus> {
    match task.status.as_deref() {
        Some("queued") => Ok(RemoteStatus::Running { progress: 0 }),
        Some("running") => Ok(RemoteStatus::Running {
            progress: RUNNING_PROGRESS,
        }),
        Some("succeeded") => {
            let content = task.content.unwrap_or_default();
            let video_url = non_empty(content.video_url)
                .ok_or_else(|| ProviderError::Transient("succeeded task without a video url".to_owned()))?;
            Ok(RemoteStatus::Succeeded {
                video_url,
                last_frame_url: non_empty(content.last_frame_url),
            })
        }
        Some("failed") => {
            let error = task.error.unwrap_or_default();
            let code = non_empty(error.code);
            let failure = code.as_deref().map_or(FailureCode::ProviderError, failure_code);
            let message = match (code, non_empty(error.message)) {
                (_, Some(message)) => message,
                (Some(code), None) => code,
                (None, None) => "task failed without a reason".to_owned(),
            };
            Ok(RemoteStatus::Failed {
                code: failure,
                message: truncate(&message),
            })
        }
        Some("cancelled") => Ok(RemoteStatus::Failed {
            code: FailureCode::ProviderError,
            message: "cancelled at the provider".to_owned(),
        }),
        Some("expired") => Ok(RemoteStatus::Failed {
            code: FailureCode::Timeout,
            message: "expired at the provider".to_owned(),
        }),
        other => Err(ProviderError::Transient(format!("unknown task status {other:?}"))),
    }
}

/// The failure class of a Seedance error code such as `InputTextSensitiveContentDetected`.
fn failure_code(code: &str) -> FailureCode {
    let code = code.to_ascii_lowercase();
    if !(code.contains("sensitive") || code.contains("moderation")) {
        FailureCode::ProviderError
    } else if code.contains("output") {
        FailureCode::OutputModeration
    } else {
        FailureCode::InputModeration
    }
}

fn decode<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|error| ProviderError::Transient(format!("undecodable {what}: {error}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{json, Value};

    use super::*;

    fn status(body: Value) -> Result<RemoteStatus> {
        remote_status(body.to_string().as_bytes())
    }

    fn failed(code: &str) -> RemoteStatus {
        status(json!({ "id": "cgt-1", "status": "failed", "error": { "code": code, "message": "why" } }))
            .unwrap()
    }

    #[test]
    fn running_states_map_to_progress() {
        assert_eq!(
            status(json!({ "id": "cgt-1", "status": "queued" })).unwrap(),
            RemoteStatus::Running { progress: 0 }
        );
        assert_eq!(
            status(json!({ "id": "cgt-1", "status": "running" })).unwrap(),
            RemoteStatus::Running { progress: 50 }
        );
    }

    #[test]
    fn succeeded_carries_both_urls() {
        let body = json!({ "id": "cgt-1", "model": "m", "status": "succeeded",
                           "content": { "video_url": "http://v/1.mp4", "last_frame_url": "http://f/1.jpg" } });
        assert_eq!(
            status(body).unwrap(),
            RemoteStatus::Succeeded {
                video_url: "http://v/1.mp4".into(),
                last_frame_url: Some("http://f/1.jpg".into())
            }
        );
        let body = json!({ "status": "succeeded", "content": { "video_url": "http://v/1.mp4" } });
        assert!(matches!(
            status(body).unwrap(),
            RemoteStatus::Succeeded {
                last_frame_url: None,
                ..
            }
        ));
        let body = json!({ "status": "succeeded", "content": { "video_url": "" } });
        assert!(matches!(status(body), Err(ProviderError::Transient(_))));
    }

    #[test]
    fn failures_and_cancellations_map_to_failure_codes() {
        assert_eq!(
            failed("InputTextSensitiveContentDetected"),
            RemoteStatus::Failed {
                code: FailureCode::InputModeration,
                message: "why".into()
            }
        );
        assert!(matches!(
            failed("OutputVideoSensitiveContentDetected"),
            RemoteStatus::Failed {
                code: FailureCode::OutputModeration,
                ..
            }
        ));
        assert!(matches!(
            failed("ContentModerationFailed"),
            RemoteStatus::Failed {
                code: FailureCode::InputModeration,
                ..
            }
        ));
        assert!(matches!(
            failed("InternalServiceError"),
            RemoteStatus::Failed {
                code: FailureCode::ProviderError,
                ..
            }
        ));
        assert_eq!(
            status(json!({ "status": "failed", "error": { "code": "Boom" } })).unwrap(),
            RemoteStatus::Failed {
                code: FailureCode::ProviderError,
                message: "Boom".into()
            }
        );
        assert!(matches!(
            status(json!({ "status": "failed" })).unwrap(),
            RemoteStatus::Failed {
                code: FailureCode::ProviderError,
                ..
            }
        ));
        assert_eq!(
            status(json!({ "status": "cancelled" })).unwrap(),
            RemoteStatus::Failed {
                code: FailureCode::ProviderError,
                message: "cancelled at the provider".into()
            }
        );
        assert!(matches!(
            status(json!({ "status": "expired" })).unwrap(),
            RemoteStatus::Failed {
                code: FailureCode::Timeout,
                ..
            }
        ));
    }

    #[test]
    fn malformed_answers_are_transient() {
        assert!(matches!(
            status(json!({ "status": "weird" })),
            Err(ProviderError::Transient(_))
        ));
        assert!(matches!(status(json!({})), Err(ProviderError::Transient(_))));
        assert!(matches!(
            remote_status(b"{\"id\":"),
            Err(ProviderError::Transient(_))
        ));
        assert_eq!(created_id(br#"{"id":"cgt-9"}"#).unwrap(), "cgt-9");
        assert!(matches!(
            created_id(br#"{"id":""}"#),
            Err(ProviderError::Transient(_))
        ));
        assert!(matches!(created_id(b"<html>"), Err(ProviderError::Transient(_))));
    }

    #[test]
    fn callbacks_carry_the_id() {
        let body = json!({ "id": "cgt-7", "status": "running" }).to_string();
        assert_eq!(
            parse_seedance_callback(body.as_bytes()).unwrap(),
            ("cgt-7".to_owned(), RemoteStatus::Running { progress: 50 })
        );
        let body = json!({ "status": "running" }).to_string();
        assert!(matches!(
            parse_seedance_callback(body.as_bytes()),
            Err(ProviderError::Transient(_))
        ));
        assert!(matches!(
            parse_seedance_callback(b"nope"),
            Err(ProviderError::Transient(_))
        ));
    }
}
