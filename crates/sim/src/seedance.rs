//! The Seedance (BytePlus ModelArk) wire format as the simulator reads and writes it, and the validation of create
//! calls.
//!
//! A create is `{model, content: [{type:"text", text}, {type:"image_url", image_url:{url}, role}...],
//! return_last_frame?, callback_url?}`; a task is `{id, model, status, content?:{video_url, last_frame_url?},
//! error?:{code, message}, created_at, updated_at}`; every error is `{error:{code, message}}`. Generation settings
//! travel as `--flag value` pairs at the end of the text; the simulator checks `--ratio` and `--duration` only.

use serde::{Deserialize, Serialize};

use crate::{
    state::{last_frame_url, unix_ms, NewTask, Snapshot},
    task::{Api, Failure, Phase},
    webhook::Callback,
};

/// The ratios Seedance accepts after `--ratio`.
const RATIOS: [&str; 8] = ["16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "9:21", "adaptive"];

/// The durations (seconds) Seedance accepts after `--duration`.
const DURATIONS: std::ops::RangeInclusive<u32> = 2..=12;

/// Below this progress a running task is reported as `queued`.
const QUEUED_BELOW: u8 = 10;

/// Body of `POST /api/v3/contents/generations/tasks`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SeedanceCreate {
    model: Option<String>,
    #[serde(default)]
    content: Vec<ContentItem>,
    return_last_frame: Option<bool>,
    callback_url: Option<String>,
}

/// One entry of `content`.
#[derive(Debug, Default, Deserialize)]
struct ContentItem {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    image_url: Option<ImageUrl>,
    role: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ImageUrl {
    url: Option<String>,
}

impl SeedanceCreate {
    /// Checks the call and turns it into a task, or says what is wrong.
    pub(crate) fn validate(self) -> Result<NewTask, String> {
        let model = self
            .model
            .filter(|model| !model.trim().is_empty())
            .ok_or("model is required")?;
        let mut text = None;
        let (mut first_frame, mut last_frame) = (None::<String>, None::<String>);
        for item in self.content {
            match item.kind.as_deref() {
                Some("text") => {
                    let value = item.text.filter(|value| !value.trim().is_empty());
                    let value = value.ok_or("a text item needs a non-empty text")?;
                    if text.replace(value).is_some() {
                        return Err("at most one text item".to_owned());
                    }
                }
                Some("image_url") => {
                    let url = item.image_url.and_then(|image| image.url);
                    let url = url.filter(|url| !url.trim().is_empty());
                    let url = url.ok_or("an image_url item needs image_url.url")?;
                    let slot = match item.role.as_deref() {
                        Some("first_frame") | None => &mut first_frame,
                        Some("last_frame") => &mut last_frame,
                        Some("reference_image") => continue,
                        Some(other) => return Err(format!("unknown image role {other:?}")),
                    };
                    if slot.replace(url).is_some() {
                        return Err("at most one image per frame role".to_owned());
                    }
                }
                other => return Err(format!("unknown content type {other:?}")),
            }
        }
        let prompt = text.ok_or("content needs a text item")?;
        check_parameters(&prompt)?;
        Ok(NewTask {
            api: Api::Seedance,
            model,
            prompt,
            first_frame_url: first_frame,
            report_last_frame: self.return_last_frame.unwrap_or(false),
            callback: self
                .callback_url
                .filter(|url| !url.trim().is_empty())
                .map(|url| Callback { url, progress: true }),
        })
    }
}

/// Checks the values of `--ratio` and `--duration` where the text carries them.
fn check_parameters(text: &str) -> Result<(), String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    for pair in words.windows(2) {
        match pair {
            ["--ratio" | "--rt", value] if !RATIOS.contains(value) => {
                return Err(format!("unsupported ratio {value:?}"));
            }
            ["--duration" | "--dur", value]
                if !value
                    .parse::<u32>()
                    .is_ok_and(|seconds| DURATIONS.contains(&seconds)) =>
            {
                return Err(format!("unsupported duration {value:?}"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `{code, message}` of a failed task or of an error answer.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorDetail {
    code: &'static str,
    message: String,
}

/// Every error answer: `{error: {code, message}}`.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

impl ErrorBody {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

/// Body of a create answer.
#[derive(Debug, Serialize)]
pub(crate) struct Created {
    pub(crate) id: String,
}

/// `content` of a succeeded task.
#[derive(Debug, Serialize)]
struct Content {
    video_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_frame_url: Option<String>,
}

/// A task, as the status call answers it and callbacks carry it.
#[derive(Debug, Serialize)]
pub(crate) struct TaskBody {
    id: String,
    model: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDetail>,
    /// Seconds since the Unix epoch.
    created_at: u64,
    /// Seconds since the Unix epoch.
    updated_at: u64,
}

impl TaskBody {
    /// The task `task` describes, with result URLs under `base_url`.
    pub(crate) fn new(task: &Snapshot, base_url: &str) -> Self {
        let id = task.id.clone();
        let (status, content, error) = match task.phase {
            Phase::Running { progress } if progress < QUEUED_BELOW => ("queued", None, None),
            Phase::Running { .. } => ("running", None, None),
            Phase::Succeeded => {
                let content = Content {
                    video_url: format!("{base_url}/videos/{id}.mp4"),
                    last_frame_url: task.report_last_frame.then(|| last_frame_url(base_url, &id)),
                };
                ("succeeded", Some(content), None)
            }
            Phase::Failed(failure) => {
                let (code, message) = match failure {
                    Failure::Error => ("InternalServiceError", "simulated failure"),
                    Failure::InputModeration => {
                        ("InputTextSensitiveContentDetected", "simulated input moderation")
                    }
                    Failure::OutputModeration => (
                        "OutputVideoSensitiveContentDetected",
                        "simulated output moderation",
                    ),
                };
                let error = ErrorDetail {
                    code,
                    message: message.to_owned(),
                };
                ("failed", None, Some(error))
            }
            Phase::Cancelled => ("cancelled", None, None),
        };
        Self {
            id,
            model: task.model.clone(),
            status,
            content,
            error,
            created_at: task.created_at_ms / 1000,
            updated_at: unix_ms() / 1000,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn create(body: Value) -> Result<NewTask, String> {
        serde_json::from_value::<SeedanceCreate>(body)
            .map_err(|error| error.to_string())?
            .validate()
    }

    fn valid() -> Value {
        json!({
            "model": "seedance-1-0-pro-250528",
            "content": [
                { "type": "text", "text": "a fox --ratio 16:9 --duration 5" },
                { "type": "image_url", "image_url": { "url": "http://img/f.png" }, "role": "first_frame" },
            ],
            "return_last_frame": true,
            "callback_url": "http://hook/s",
        })
    }

    #[test]
    fn valid_create_becomes_a_task() {
        let task = create(valid()).expect("valid");
        assert_eq!(task.api, Api::Seedance);
        assert_eq!(task.prompt, "a fox --ratio 16:9 --duration 5");
        assert_eq!(task.first_frame_url.as_deref(), Some("http://img/f.png"));
        assert!(task.report_last_frame);
        assert_eq!(
            task.callback.map(|callback| callback.url).as_deref(),
            Some("http://hook/s")
        );
    }

    #[test]
    fn invalid_creates_are_refused() {
        let mut bad = Vec::new();
        let mut body = valid();
        body["model"] = json!("");
        bad.push(body);
        let mut body = valid();
        body["content"] = json!([]);
        bad.push(body);
        for text in ["", "x --ratio 2:1", "x --duration 99", "x --duration five"] {
            let mut body = valid();
            body["content"][0]["text"] = json!(text);
            bad.push(body);
        }
        let mut body = valid();
        body["content"][1]["role"] = json!("middle_frame");
        bad.push(body);
        let mut body = valid();
        body["content"][1]["type"] = json!("video_url");
        bad.push(body);
        for body in bad {
            assert!(create(body.clone()).is_err(), "{body}");
        }
    }

    #[test]
    fn task_bodies_follow_the_phase() {
        let snapshot = |phase| Snapshot {
            id: "cgt-1".into(),
            api: Api::Seedance,
            model: "m".into(),
            phase,
            created_at_ms: 5_000,
            report_last_frame: true,
        };
        let body =
            |phase| serde_json::to_value(TaskBody::new(&snapshot(phase), "http://h")).expect("serialise");
        assert_eq!(body(Phase::Running { progress: 0 })["status"], "queued");
        assert_eq!(body(Phase::Running { progress: 50 })["status"], "running");
        let done = body(Phase::Succeeded);
        assert_eq!(done["content"]["video_url"], "http://h/videos/cgt-1.mp4");
        assert_eq!(
            done["content"]["last_frame_url"],
            "http://h/frames/cgt-1-last.jpg"
        );
        assert_eq!(done["created_at"], 5);
        let failed = body(Phase::Failed(Failure::InputModeration));
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["error"]["code"], "InputTextSensitiveContentDetected");
        assert!(failed.get("content").is_none());
        assert_eq!(body(Phase::Cancelled)["status"], "cancelled");
    }
}
