//! The Grsai wire format as the simulator reads and writes it, and the validation of create calls.
//!
//! Request fields are all optional here so that a missing field is a validation message (HTTP 400 with
//! `{code:-1,msg}`), not a deserialisation error with a framework-specific body.

use serde::{Deserialize, Serialize};

use crate::state::{NewTask, Phase};

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

/// `data` of a draw/result answer; fields that do not apply are empty, as the real API sends them.
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
                data.last_frame_url = Some(format!("{base_url}/frames/{id}-last.jpg"));
            }
            Phase::Failed { reason, error } => {
                data.status = "failed";
                data.progress = 100;
                data.failure_reason = reason;
                data.error = error;
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
            model,
            prompt,
            first_frame_url: self.url.filter(|url| !url.is_empty()),
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
            model,
            prompt,
            first_frame_url: self.first_frame_url.filter(|url| !url.is_empty()),
        })
    }
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
        }
    }

    fn veo() -> VeoCreate {
        VeoCreate {
            model: Some("veo3.1-pro".into()),
            prompt: Some("a dog".into()),
            aspect_ratio: Some("9:16".into()),
            first_frame_url: Some("http://img/first.png".into()),
            urls: Vec::new(),
        }
    }

    #[test]
    fn valid_calls_become_tasks() {
        let task = sora().validate().expect("valid sora");
        assert_eq!(task.first_frame_url.as_deref(), Some("http://img/1.png"));
        let task = veo().validate().expect("valid veo");
        assert_eq!(task.model, "veo3.1-pro");
        assert_eq!(task.first_frame_url.as_deref(), Some("http://img/first.png"));
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
    }
}
