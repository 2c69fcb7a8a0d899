//! The Grsai wire format as the simulator reads and writes it, and the validation of create calls.
//!
//! Request fields are all optional here so that a missing field is a validation message (HTTP 400 with
//! `{code:-1,msg}`), not a deserialisation error with a framework-specific body.

use serde::{Deserialize, Serialize};

use crate::{
    state::{last_frame_url, NewTask},
    task::{Api, Failure, Phase},
    webhook::Callback,
};

/// `webHook` value that asks for no callback.
const NO_WEBHOOK: &str = "-1";

/// The aspect ratios both models accept.
const ASPECT_RATIOS: [&str; 2] = ["9:16", "16:9"];

/// Sora accepts these durations, in seconds.
const SORA_DURATIONS: [u32; 2] = [10, 15];

/// Veo takes at most this many reference images.
const MAX_VEO_REFERENCES: usize = 3;

/// Body of `POST /v1/video/sora-video`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SoraCreate {
    model: Option<String>,
    prompt: Option<String>,
    url: Option<String>,
    aspect_ratio: Option<String>,
    duration: Option<u32>,
    web_hook: Option<String>,
    shut_progress: Option<bool>,
}

/// Body of `POST /v1/video/veo`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VeoCreate {
    model: Option<String>,
    prompt: Option<String>,
    aspect_ratio: Option<String>,
    first_frame_url: Option<String>,
    #[serde(default)]
    urls: Vec<String>,
    web_hook: Option<String>,
    shut_progress: Option<bool>,
}

/// Body of `POST /v1/draw/result`.
#[derive(Debug, Deserialize)]
pub(crate) struct DrawResultRequest {
    pub(crate) id: String,
}

/// Every answer: `{code, msg, data?}`.
#[derive(Debug, Serialize)]
pub(crate) struct Envelope<T> {
    code: i64,
    msg: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<T>,
}

impl<T> Envelope<T> {
    pub(crate) fn success(data: T) -> Self {
        Self {
            code: 0,
            msg: "success".to_owned(),
            data: Some(data),
        }
    }
}

impl Envelope<()> {
    /// An error answer with no data.
    pub(crate) fn error(code: i64, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            data: None,
        }
    }
}

/// `data` of a create answer.
#[derive(Debug, Serialize)]
pub(crate) struct Created {
    pub(crate) id: String,
}

/// One entry of `data.results`.
#[derive(Debug, Serialize)]
pub(crate) struct ResultUrl {
    url: String,
}

/// `data` of a draw/result answer, and the body of a callback; fields that do not apply are empty, as the real API
/// sends them.
#[derive(Debug, Serialize)]
pub(crate) struct TaskData {
    id: String,
    status: &'static str,
    progress: u8,
    results: Vec<ResultUrl>,
    url: String,
    failure_reason: &'static str,
    error: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_frame_url: Option<String>,
}

impl TaskData {
    /// The answer for task `id` in `phase`, with result URLs under `base_url`.
    pub(crate) fn new(id: &str, phase: Phase, base_url: &str) -> Self {
        let mut data = Self {
            id: id.to_owned(),
            status: "running",
            progress: 0,
            results: Vec::new(),
            url: String::new(),
            failure_reason: "",
            error: "",
            last_frame_url: None,
        };
        match phase {
            Phase::Running { progress } => data.progress = progress,
            Phase::Succeeded => {
                let video = format!("{base_url}/videos/{id}.mp4");
                data.status = "succeeded";
                data.progress = 100;
                data.results.push(ResultUrl { url: video.clone() });
                data.url = video;
                data.last_frame_url = Some(last_frame_url(base_url, id));
            }
            Phase::Failed(failure) => {
                let (reason, error) = match failure {
                    Failure::Error => ("error", "simulated failure"),
                    Failure::InputModeration => ("input_moderation", "simulated input moderation"),
                    Failure::OutputModeration => ("output_moderation", "simulated output moderation"),
                };
                data.status = "failed";
                data.progress = 100;
                data.failure_reason = reason;
                data.error = error;
            }
            Phase::Cancelled => {
                data.status = "failed";
                data.progress = 100;
                data.failure_reason = "error";
                data.error = "cancelled";
            }
        }
        data
    }
}

impl SoraCreate {
    /// Checks the call and turns it into a task, or says what is wrong.
    pub(crate) fn validate(self) -> Result<NewTask, String> {
        let model = self.model.unwrap_or_default();
        if model != "sora-2" {
            return Err(format!("unsupported model {model:?} for sora-video"));
        }
        let prompt = check_prompt(self.prompt)?;
        check_aspect_ratio(self.aspect_ratio.as_deref())?;
        match self.duration {
            Some(duration) if SORA_DURATIONS.contains(&duration) => {}
            other => return Err(format!("duration must be 10 or 15, got {other:?}")),
        }
        Ok(NewTask {
            api: Api::Grsai,
            model,
            prompt,
            first_frame_url: non_empty(self.url),
            report_last_frame: true,
            callback: callback(self.web_hook, self.shut_progress),
        })
    }
}

impl VeoCreate {
    /// Checks the call and turns it into a task, or says what is wrong.
    pub(crate) fn validate(self) -> Result<NewTask, String> {
        let model = self.model.unwrap_or_default();
        if !matches!(model.as_str(), "veo3.1-fast" | "veo3.1-pro") {
            return Err(format!("unsupported model {model:?} for veo"));
        }
        let prompt = check_prompt(self.prompt)?;
        check_aspect_ratio(self.aspect_ratio.as_deref())?;
        if self.urls.len() > MAX_VEO_REFERENCES {
            return Err(format!("at most {MAX_VEO_REFERENCES} reference urls"));
        }
        Ok(NewTask {
            api: Api::Grsai,
            model,
            prompt,
            first_frame_url: non_empty(self.first_frame_url),
            report_last_frame: true,
            callback: callback(self.web_hook, self.shut_progress),
        })
    }
}

/// The callback a create asks for: none for an absent, empty or `"-1"` `webHook`; progress unless `shutProgress`.
fn callback(web_hook: Option<String>, shut_progress: Option<bool>) -> Option<Callback> {
    let url = non_empty(web_hook).filter(|url| url != NO_WEBHOOK)?;
    Some(Callback {
        url,
        progress: !shut_progress.unwrap_or(false),
    })
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.trim().is_empty())
}

fn check_prompt(prompt: Option<String>) -> Result<String, String> {
    match prompt {
        Some(prompt) if !prompt.trim().is_empty() => Ok(prompt),
        _ => Err("prompt is required".to_owned()),
    }
}

fn check_aspect_ratio(ratio: Option<&str>) -> Result<(), String> {
    match ratio {
        Some(ratio) if ASPECT_RATIOS.contains(&ratio) => Ok(()),
        other => Err(format!("aspectRatio must be 9:16 or 16:9, got {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sora() -> SoraCreate {
        SoraCreate {
            model: Some("sora-2".into()),
            prompt: Some("a cat".into()),
            url: Some("http://img/1.png".into()),
            aspect_ratio: Some("16:9".into()),
            duration: Some(10),
            web_hook: Some("-1".into()),
            shut_progress: Some(true),
        }
    }

    fn veo() -> VeoCreate {
        VeoCreate {
            model: Some("veo3.1-pro".into()),
            prompt: Some("a dog".into()),
            aspect_ratio: Some("9:16".into()),
            first_frame_url: Some("http://img/first.png".into()),
            urls: Vec::new(),
            web_hook: Some("http://hook/x".into()),
            shut_progress: None,
        }
    }

    #[test]
    fn valid_calls_become_tasks() {
        let task = sora().validate().expect("valid sora");
        assert_eq!(task.first_frame_url.as_deref(), Some("http://img/1.png"));
        assert!(task.callback.is_none());
        let task = veo().validate().expect("valid veo");
        assert_eq!(task.model, "veo3.1-pro");
        assert_eq!(task.first_frame_url.as_deref(), Some("http://img/first.png"));
        let callback = task.callback.expect("a callback");
        assert_eq!(
            (callback.url.as_str(), callback.progress),
            ("http://hook/x", true)
        );
        let quiet = VeoCreate {
            shut_progress: Some(true),
            ..veo()
        };
        assert!(
            !quiet
                .validate()
                .expect("valid veo")
                .callback
                .expect("a callback")
                .progress
        );
    }

    #[test]
    fn invalid_calls_are_refused() {
        assert!(SoraCreate {
            model: Some("veo3.1-fast".into()),
            ..sora()
        }
        .validate()
        .is_err());
        assert!(SoraCreate {
            prompt: Some("  ".into()),
            ..sora()
        }
        .validate()
        .is_err());
        assert!(SoraCreate {
            duration: Some(5),
            ..sora()
        }
        .validate()
        .is_err());
        assert!(SoraCreate {
            duration: None,
            ..sora()
        }
        .validate()
        .is_err());
        assert!(SoraCreate {
            aspect_ratio: Some("1:1".into()),
            ..sora()
        }
        .validate()
        .is_err());
        assert!(VeoCreate {
            model: Some("sora-2".into()),
            ..veo()
        }
        .validate()
        .is_err());
        assert!(VeoCreate {
            prompt: None,
            ..veo()
        }
        .validate()
        .is_err());
        assert!(VeoCreate {
            urls: vec!["u".into(); 4],
            ..veo()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn succeeded_data_carries_all_urls() {
        let data =
            serde_json::to_value(TaskData::new("sim-1", Phase::Succeeded, "http://h")).expect("serialise");
        assert_eq!(data["status"], "succeeded");
        assert_eq!(data["progress"], 100);
        assert_eq!(data["results"][0]["url"], "http://h/videos/sim-1.mp4");
        assert_eq!(data["url"], "http://h/videos/sim-1.mp4");
        assert_eq!(data["last_frame_url"], "http://h/frames/sim-1-last.jpg");
        let data = serde_json::to_value(TaskData::new("sim-1", Phase::Running { progress: 7 }, "http://h"))
            .expect("serialise");
        assert_eq!(data["status"], "running");
        assert_eq!(data["progress"], 7);
        assert!(data.get("last_frame_url").is_none());
        let data = serde_json::to_value(TaskData::new(
            "sim-1",
            Phase::Failed(Failure::InputModeration),
            "http://h",
        ))
        .expect("serialise");
        assert_eq!(data["failure_reason"], "input_moderation");
        assert_eq!(data["error"], "simulated input moderation");
    }
}
