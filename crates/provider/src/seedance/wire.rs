//! The Seedance (BytePlus ModelArk) wire format: the create body built from a [`CreateRequest`], and the answers.
//!
//! Generation settings travel at the end of the text prompt as `--ratio <r> --duration <s>`. Answers are decoded
//! leniently (every field optional, unknown fields ignored); [`super::classify`] decides what is missing.

use serde::{Deserialize, Serialize};

use crate::CreateRequest;

/// Seconds of video when the request names none.
pub(crate) const DEFAULT_DURATION: u32 = 5;

/// Body of `POST /api/v3/contents/generations/tasks`.
#[derive(Debug, Serialize)]
pub(crate) struct CreateBody<'a> {
    model: &'a str,
    content: Vec<ContentItem<'a>>,
    /// Always asked for: chain mode hands the last frame to the next shot.
    return_last_frame: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    callback_url: Option<&'a str>,
}

/// One entry of `content`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentItem<'a> {
    Text {
        text: String,
    },
    ImageUrl {
        image_url: ImageUrl<'a>,
        role: &'static str,
    },
}

#[derive(Debug, Serialize)]
struct ImageUrl<'a> {
    url: &'a str,
}

impl<'a> CreateBody<'a> {
    /// The body for `request` with ModelArk model id `model`: the prompt with its settings, then the first frame.
    /// Reference images and the last frame have no place in this call and are left out (the caller logs it).
    pub(crate) fn new(model: &'a str, request: &'a CreateRequest) -> Self {
        let duration = request.duration.unwrap_or(DEFAULT_DURATION);
        let text = format!(
            "{} --ratio {} --duration {duration}",
            request.prompt.trim_end(),
            request.aspect_ratio
        );
        let mut content = vec![ContentItem::Text { text }];
        if let Some(url) = request.first_frame_url.as_deref() {
            content.push(ContentItem::ImageUrl {
                image_url: ImageUrl { url },
                role: "first_frame",
            });
        }
        Self {
            model,
            content,
            return_last_frame: true,
            callback_url: request.webhook_url.as_deref(),
        }
    }
}

/// A create answer: `{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Created {
    pub(crate) id: Option<String>,
}

/// A task, as the status call answers it and callbacks carry it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Task {
    pub(crate) id: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) content: Option<Content>,
    pub(crate) error: Option<TaskError>,
}

/// `content` of a succeeded task.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Content {
    pub(crate) video_url: Option<String>,
    pub(crate) last_frame_url: Option<String>,
}

/// `error` of a failed task.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct TaskError {
    pub(crate) code: Option<String>,
    pub(crate) message: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;
    use crate::Model;

    fn request() -> CreateRequest {
        CreateRequest {
            model: Model::Veo31Fast,
            prompt: "a fox in snow".into(),
            aspect_ratio: "16:9".into(),
            duration: None,
            reference_image_urls: vec!["http://img/ref.png".into()],
            first_frame_url: None,
            last_frame_url: None,
            webhook_url: None,
        }
    }

    #[test]
    fn text_only_body_carries_the_settings() {
        let request = request();
        let body = serde_json::to_value(CreateBody::new("seedance-1-0-pro-250528", &request)).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "seedance-1-0-pro-250528",
                "content": [{ "type": "text", "text": "a fox in snow --ratio 16:9 --duration 5" }],
                "return_last_frame": true,
            })
        );
    }

    #[test]
    fn first_frame_and_callback_are_passed_on() {
        let mut request = request();
        request.aspect_ratio = "9:16".into();
        request.duration = Some(10);
        request.first_frame_url = Some("http://img/first.png".into());
        request.webhook_url = Some("http://gantry/hook".into());
        let body = serde_json::to_value(CreateBody::new("m", &request)).unwrap();
        assert_eq!(
            body["content"][0]["text"],
            "a fox in snow --ratio 9:16 --duration 10"
        );
        assert_eq!(
            body["content"][1],
            json!({ "type": "image_url", "image_url": { "url": "http://img/first.png" }, "role": "first_frame" })
        );
        assert_eq!(body["content"].as_array().unwrap().len(), 2);
        assert_eq!(body["callback_url"], "http://gantry/hook");
    }
}
