//! The Grsai wire format: create bodies built from a [`CreateRequest`], and the answer envelopes.
//!
//! Answers are decoded leniently (every field optional, unknown fields ignored, empty strings treated as absent by
//! the mapping in [`super::classify`]) because the real API sends placeholder values for fields that do not apply.

use serde::{Deserialize, Serialize};

use crate::{CreateRequest, Model};

/// `webHook` value that asks for no callback (polling mode).
const NO_WEBHOOK: &str = "-1";

/// Sora's output size; the only one Gantry uses.
const SORA_SIZE: &str = "small";

/// Sora's duration when the request names none, in seconds.
const DEFAULT_SORA_DURATION: u32 = 10;

/// Veo takes at most this many reference images.
pub(crate) const MAX_VEO_REFERENCES: usize = 3;

/// Body of `POST /v1/video/sora-video`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SoraBody<'a> {
    model: &'static str,
    prompt: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    aspect_ratio: &'a str,
    duration: u32,
    size: &'static str,
    web_hook: &'a str,
    shut_progress: bool,
}

/// Body of `POST /v1/video/veo`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VeoBody<'a> {
    model: &'static str,
    prompt: &'a str,
    aspect_ratio: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_frame_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_frame_url: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    urls: &'a [String],
    web_hook: &'a str,
    shut_progress: bool,
}

/// A create call: which endpoint, with which body.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum CreateBody<'a> {
    Sora(SoraBody<'a>),
    Veo(VeoBody<'a>),
}

impl<'a> CreateBody<'a> {
    /// The body Grsai expects for `request`.
    ///
    /// Sora's single `url` is the first reference image, or the first frame when there is no reference image.
    /// Veo's references beyond [`MAX_VEO_REFERENCES`] are dropped.
    pub(crate) fn new(request: &'a CreateRequest) -> Self {
        let web_hook = request.webhook_url.as_deref().unwrap_or(NO_WEBHOOK);
        let shut_progress = request.webhook_url.is_none();
        match request.model {
            Model::Sora2 => Self::Sora(SoraBody {
                model: request.model.as_str(),
                prompt: &request.prompt,
                url: request
                    .reference_image_urls
                    .first()
                    .or(request.first_frame_url.as_ref())
                    .map(String::as_str),
                aspect_ratio: &request.aspect_ratio,
                duration: request.duration.unwrap_or(DEFAULT_SORA_DURATION),
                size: SORA_SIZE,
                web_hook,
                shut_progress,
            }),
            Model::Veo31Fast | Model::Veo31Pro => {
                let references = &request.reference_image_urls;
                Self::Veo(VeoBody {
                    model: request.model.as_str(),
                    prompt: &request.prompt,
                    aspect_ratio: &request.aspect_ratio,
                    first_frame_url: request.first_frame_url.as_deref(),
                    last_frame_url: request.last_frame_url.as_deref(),
                    urls: references.get(..MAX_VEO_REFERENCES).unwrap_or(references),
                    web_hook,
                    shut_progress,
                })
            }
        }
    }

    /// The endpoint path, relative to the base URL.
    pub(crate) fn path(&self) -> &'static str {
        match self {
            Self::Sora(_) => "/v1/video/sora-video",
            Self::Veo(_) => "/v1/video/veo",
        }
    }
}

/// Body of `POST /v1/draw/result`.
#[derive(Debug, Serialize)]
pub(crate) struct StatusBody<'a> {
    pub(crate) id: &'a str,
}

/// Every answer: `{code, msg, data}`.
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope<T> {
    pub(crate) code: i64,
    pub(crate) msg: Option<String>,
    pub(crate) data: Option<T>,
}

/// `data` of a create answer.
#[derive(Debug, Deserialize)]
pub(crate) struct CreatedData {
    pub(crate) id: Option<String>,
}

/// `data` of a draw/result answer, and the body of a callback.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct TaskData {
    pub(crate) id: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) progress: Option<f64>,
    pub(crate) results: Option<Vec<ResultItem>>,
    pub(crate) url: Option<String>,
    pub(crate) failure_reason: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) last_frame_url: Option<String>,
}

/// One entry of `data.results`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ResultItem {
    pub(crate) url: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{json, Value};

    use super::*;

    fn request(model: Model) -> CreateRequest {
        CreateRequest {
            model,
            prompt: "a cat".into(),
            aspect_ratio: "16:9".into(),
            duration: Some(15),
            reference_image_urls: Vec::new(),
            first_frame_url: None,
            last_frame_url: None,
            webhook_url: None,
        }
    }

    fn body(request: &CreateRequest) -> (&'static str, Value) {
        let body = CreateBody::new(request);
        (body.path(), serde_json::to_value(&body).unwrap())
    }

    #[test]
    fn sora_body_in_polling_mode() {
        let (path, body) = body(&request(Model::Sora2));
        assert_eq!(path, "/v1/video/sora-video");
        assert_eq!(
            body,
            json!({
                "model": Model::Sora2, "prompt": "a cat", "aspectRatio": "16:9", "duration": 15, "size": "small",
                "webHook": "-1", "shutProgress": true,
            })
        );
    }

    #[test]
    fn sora_body_with_images_and_webhook() {
        let mut request = request(Model::Sora2);
        request.duration = None;
        request.first_frame_url = Some("http://img/first.png".into());
        request.webhook_url = Some("http://gantry/hook".into());
        let (_, body) = body(&request);
        assert_eq!(body["url"], "http://img/first.png");
        assert_eq!(body["duration"], 10);
        assert_eq!(body["webHook"], "http://gantry/hook");
        assert_eq!(body["shutProgress"], false);

        request.reference_image_urls = vec!["http://img/ref1.png".into(), "http://img/ref2.png".into()];
        assert_eq!(self::body(&request).1["url"], "http://img/ref1.png");
    }

    #[test]
    fn veo_body_omits_absent_fields_and_caps_references() {
        let (path, body) = body(&request(Model::Veo31Fast));
        assert_eq!(path, "/v1/video/veo");
        assert_eq!(
            body,
            json!({ "model": Model::Veo31Fast, "prompt": "a cat", "aspectRatio": "16:9", "webHook": "-1",
                    "shutProgress": true })
        );

        let mut request = request(Model::Veo31Pro);
        request.first_frame_url = Some("http://img/f.png".into());
        request.last_frame_url = Some("http://img/l.png".into());
        request.reference_image_urls = (1..=5).map(|n| format!("http://img/{n}.png")).collect();
        let (_, body) = self::body(&request);
        assert_eq!(body["model"], Model::Veo31Pro.as_str());
        assert_eq!(body["firstFrameUrl"], "http://img/f.png");
        assert_eq!(body["lastFrameUrl"], "http://img/l.png");
        assert_eq!(body["urls"].as_array().unwrap().len(), MAX_VEO_REFERENCES);
        assert!(body.get("duration").is_none());
    }
}
