//! Validation of a batch request: every violation is collected with a JSON pointer into the body, so a client
//! learns everything wrong with its request at once.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};

use crate::{
    config::Prices,
    domain::{Mode, Model},
    model::TaskSpec,
};

/// One violation: where (`/tasks/3/duration`) and what.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub pointer: String,
    pub message: String,
}

/// Limits that come from configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_tasks: usize,
}

pub const MAX_PROMPT_CHARS: usize = 4000;
/// Violations listed at most; past it the list ends with one entry that counts the rest, so the size of a 422
/// answer does not grow with the body.
pub const MAX_ERRORS: usize = 50;
pub const MAX_CUSTOM_ID_CHARS: usize = 64;
/// Longest image URL accepted (it is stored with the task and sent to the provider).
pub const MAX_URL_CHARS: usize = 2048;
pub const MAX_METADATA_PAIRS: usize = 16;
pub const MAX_METADATA_KEY_CHARS: usize = 64;
pub const MAX_METADATA_VALUE_CHARS: usize = 512;

/// A batch that passed validation, priced.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidBatch {
    pub mode: Mode,
    pub tasks: Vec<ValidTask>,
    pub metadata: BTreeMap<String, String>,
}

impl ValidBatch {
    /// The credits the whole batch freezes.
    pub fn cost(&self) -> u64 {
        self.tasks.iter().map(|t| t.price).sum()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValidTask {
    pub custom_id: Option<String>,
    pub model: Model,
    pub spec: TaskSpec,
    pub price: u64,
}

/// The violations found so far: the first [`MAX_ERRORS`], and a count of the rest.
#[derive(Default)]
struct Errors {
    listed: Vec<FieldError>,
    omitted: usize,
}

impl Errors {
    fn add(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        if self.listed.len() < MAX_ERRORS {
            self.listed.push(FieldError {
                pointer: pointer.into(),
                message: message.into(),
            });
        } else {
            self.omitted += 1;
        }
    }

    /// How many violations were found, listed or not.
    fn count(&self) -> usize {
        self.listed.len() + self.omitted
    }

    fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// The list as the API shows it: the first violations, then one entry saying how many more there were.
    fn into_list(mut self) -> Vec<FieldError> {
        if self.omitted > 0 {
            self.listed.push(FieldError {
                pointer: String::new(),
                message: format!("and {} more violations not listed", self.omitted),
            });
        }
        self.listed
    }
}

/// Validates a parsed JSON body against the v1 batch rules and prices it.
pub fn validate_batch(body: &Value, limits: &Limits, prices: &Prices) -> Result<ValidBatch, Vec<FieldError>> {
    let mut errors = Errors::default();
    let Some(object) = body.as_object() else {
        errors.add("", "the body must be a JSON object");
        return Err(errors.into_list());
    };
    for key in object.keys() {
        if !matches!(key.as_str(), "mode" | "tasks" | "metadata") {
            errors.add(format!("/{}", escape(key)), "unknown field");
        }
    }
    let mode = match object.get("mode") {
        None | Some(Value::Null) => Some(Mode::Parallel),
        Some(Value::String(s)) => Mode::parse(s),
        Some(_) => None,
    };
    let mode = mode.unwrap_or_else(|| {
        errors.add("/mode", "must be \"parallel\" or \"chain\"");
        Mode::Parallel
    });
    let metadata = metadata(object.get("metadata"), &mut errors);
    let mut tasks = Vec::new();
    match object.get("tasks") {
        None => errors.add("/tasks", "is required"),
        Some(Value::Array(items)) if items.is_empty() || items.len() > limits.max_tasks => {
            // A structural limit: the items are not looked at, so a huge array costs one error, not one per item.
            errors.add(
                "/tasks",
                format!("must hold between 1 and {} tasks", limits.max_tasks),
            );
        }
        Some(Value::Array(items)) => {
            let mut custom_ids = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                if let Some(task) = validate_task(i, item, prices, &mut errors) {
                    if let Some(id) = &task.custom_id {
                        if !custom_ids.insert(id.clone()) {
                            errors.add(
                                format!("/tasks/{i}/custom_id"),
                                "is used by an earlier task of this batch",
                            );
                        }
                    }
                    tasks.push(task);
                }
            }
        }
        Some(_) => errors.add("/tasks", "must be an array"),
    }
    if errors.is_empty() {
        Ok(ValidBatch {
            mode,
            tasks,
            metadata,
        })
    } else {
        Err(errors.into_list())
    }
}

fn metadata(value: Option<&Value>, errors: &mut Errors) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            if map.len() > MAX_METADATA_PAIRS {
                errors.add(
                    "/metadata",
                    format!("must hold at most {MAX_METADATA_PAIRS} pairs"),
                );
            }
            for (k, v) in map {
                let pointer = format!("/metadata/{}", escape(k));
                if k.is_empty() || k.chars().count() > MAX_METADATA_KEY_CHARS {
                    errors.add(
                        &pointer,
                        format!("keys must be 1 to {MAX_METADATA_KEY_CHARS} characters"),
                    );
                }
                match v {
                    Value::String(s) if s.chars().count() <= MAX_METADATA_VALUE_CHARS => {
                        out.insert(k.clone(), s.clone());
                    }
                    Value::String(_) => errors.add(
                        pointer,
                        format!("must be at most {MAX_METADATA_VALUE_CHARS} characters"),
                    ),
                    _ => errors.add(pointer, "must be a string"),
                }
            }
        }
        Some(_) => errors.add("/metadata", "must be an object of strings"),
    }
    out
}

fn validate_task(i: usize, item: &Value, prices: &Prices, errors: &mut Errors) -> Option<ValidTask> {
    let at = |field: &str| format!("/tasks/{i}/{field}");
    let Some(task) = item.as_object() else {
        errors.add(format!("/tasks/{i}"), "must be an object");
        return None;
    };
    let before = errors.count();
    for key in task.keys() {
        if !matches!(
            key.as_str(),
            "custom_id"
                | "model"
                | "prompt"
                | "aspect_ratio"
                | "duration"
                | "reference_image_urls"
                | "first_frame_url"
                | "last_frame_url"
        ) {
            errors.add(at(&escape(key)), "unknown field");
        }
    }
    let custom_id = optional_string(task, "custom_id", &at("custom_id"), errors);
    if custom_id
        .as_ref()
        .is_some_and(|c| c.is_empty() || c.chars().count() > MAX_CUSTOM_ID_CHARS)
    {
        errors.add(
            at("custom_id"),
            format!("must be 1 to {MAX_CUSTOM_ID_CHARS} characters"),
        );
    }
    let model = match task.get("model") {
        None | Some(Value::Null) => {
            errors.add(at("model"), "is required");
            None
        }
        Some(Value::String(name)) => {
            let model = Model::parse(name);
            if model.is_none() {
                errors.add(
                    at("model"),
                    "must be one of sora-2, veo3.1-fast, veo3.1-pro (or veo-flash, veo-pro)",
                );
            }
            model
        }
        Some(_) => {
            errors.add(at("model"), "must be a string");
            None
        }
    };
    let prompt = optional_string(task, "prompt", &at("prompt"), errors);
    match &prompt {
        None if !task.contains_key("prompt") || task["prompt"].is_null() => {
            errors.add(at("prompt"), "is required")
        }
        Some(p) if p.trim().is_empty() || p.chars().count() > MAX_PROMPT_CHARS => errors.add(
            at("prompt"),
            format!("must be 1 to {MAX_PROMPT_CHARS} characters"),
        ),
        _ => {}
    }
    let aspect_ratio = optional_string(task, "aspect_ratio", &at("aspect_ratio"), errors);
    match aspect_ratio.as_deref() {
        Some("9:16" | "16:9") => {}
        None if task.get("aspect_ratio").is_none_or(Value::is_null) => {
            errors.add(at("aspect_ratio"), "is required")
        }
        _ => errors.add(at("aspect_ratio"), "must be \"9:16\" or \"16:9\""),
    }
    let duration = match task.get("duration") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(d) => u32::try_from(d).ok().or(Some(u32::MAX)),
            None => {
                errors.add(at("duration"), "must be a whole number of seconds");
                Some(0)
            }
        },
    };
    let references = url_list(
        task.get("reference_image_urls"),
        &at("reference_image_urls"),
        errors,
    );
    let reference_count = task
        .get("reference_image_urls")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let first_frame_url = optional_url(task, "first_frame_url", &at("first_frame_url"), errors);
    let last_frame_url = optional_url(task, "last_frame_url", &at("last_frame_url"), errors);

    match model {
        Some(Model::Sora2) => {
            match duration {
                None => errors.add(at("duration"), "is required for sora-2 (10 or 15)"),
                Some(10 | 15) => {}
                Some(_) => errors.add(at("duration"), "must be 10 or 15 for sora-2"),
            }
            if reference_count > 1 {
                errors.add(
                    at("reference_image_urls"),
                    "sora-2 takes at most 1 reference image",
                );
            }
            for field in ["first_frame_url", "last_frame_url"] {
                if task.get(field).is_some_and(|v| !v.is_null()) {
                    errors.add(at(field), "is not supported by sora-2");
                }
            }
        }
        Some(Model::Veo31Fast | Model::Veo31Pro) => {
            if duration.is_some() {
                errors.add(at("duration"), "is not supported by veo models");
            }
            if reference_count > 3 {
                errors.add(
                    at("reference_image_urls"),
                    "veo models take at most 3 reference images",
                );
            }
        }
        None => {}
    }
    if errors.count() > before {
        return None;
    }
    let model = model?;
    Some(ValidTask {
        custom_id,
        model,
        price: prices.cost(model, duration),
        spec: TaskSpec {
            prompt: prompt?,
            aspect_ratio: aspect_ratio?,
            duration,
            reference_image_urls: references,
            first_frame_url,
            last_frame_url,
        },
    })
}

fn optional_string(
    task: &Map<String, Value>,
    field: &str,
    pointer: &str,
    errors: &mut Errors,
) -> Option<String> {
    match task.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.add(pointer, "must be a string");
            None
        }
    }
}

fn optional_url(
    task: &Map<String, Value>,
    field: &str,
    pointer: &str,
    errors: &mut Errors,
) -> Option<String> {
    let value = optional_string(task, field, pointer, errors)?;
    match url_problem(&value) {
        None => Some(value),
        Some(problem) => {
            errors.add(pointer, problem);
            None
        }
    }
}

fn url_list(value: Option<&Value>, pointer: &str, errors: &mut Errors) -> Vec<String> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(j, v)| {
                let problem = match v.as_str() {
                    Some(s) => match url_problem(s) {
                        None => return Some(s.to_owned()),
                        Some(problem) => problem,
                    },
                    None => NOT_A_URL,
                };
                errors.add(format!("{pointer}/{j}"), problem);
                None
            })
            .collect(),
        Some(_) => {
            errors.add(pointer, "must be an array of URLs");
            Vec::new()
        }
    }
}

const NOT_A_URL: &str = "must be an absolute http(s) URL";

/// What is wrong with `s` as an image URL, if anything.
fn url_problem(s: &str) -> Option<&'static str> {
    if s.chars().count() > MAX_URL_CHARS {
        return Some("must be at most 2048 characters");
    }
    let http =
        url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    (!http).then_some(NOT_A_URL)
}

/// Escapes a key for use in a JSON pointer (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn prices() -> Prices {
        Prices {
            sora2_per_second: 1,
            veo31_fast: 8,
            veo31_pro: 20,
        }
    }

    fn check(body: Value) -> Result<ValidBatch, Vec<FieldError>> {
        validate_batch(&body, &Limits { max_tasks: 3 }, &prices())
    }

    fn pointers(body: Value) -> Vec<String> {
        check(body)
            .expect_err("invalid")
            .into_iter()
            .map(|e| e.pointer)
            .collect()
    }

    #[test]
    fn a_good_mixed_batch_is_priced() {
        let batch = check(json!({"mode": "chain", "tasks": [
            {"model": Model::Sora2, "prompt": "a cat", "aspect_ratio": "9:16", "duration": 15},
            {"model": Model::Veo31Fast, "prompt": "a dog", "aspect_ratio": "16:9",
             "first_frame_url": "https://x.test/a.png", "reference_image_urls": ["https://x.test/1.png"]},
            {"model": Model::Veo31Pro, "prompt": "a cow", "aspect_ratio": "16:9", "custom_id": "shot-3"},
        ], "metadata": {"campaign": "spring"}}))
        .expect("valid");
        assert_eq!(batch.mode, Mode::Chain);
        assert_eq!(batch.cost(), 15 + 8 + 20);
        assert_eq!(batch.tasks[1].model, Model::Veo31Fast);
        assert_eq!(batch.metadata["campaign"], "spring");
    }

    #[test]
    fn every_violation_is_reported_with_its_pointer() {
        let got = pointers(json!({"mode": "serial", "extra": 1, "tasks": [
            {"model": Model::Sora2, "prompt": "", "aspect_ratio": "4:3", "duration": 12, "first_frame_url": "https://x.test/a"},
            {"model": Model::Veo31Fast, "prompt": "ok", "aspect_ratio": "16:9", "duration": 10,
             "reference_image_urls": ["ftp://x", "https://a.test/1", "https://a.test/2", "https://a.test/3"]},
            {"model": "dall-e", "aspect_ratio": "16:9"},
        ]}));
        for expected in [
            "/mode",
            "/extra",
            "/tasks/0/prompt",
            "/tasks/0/aspect_ratio",
            "/tasks/0/duration",
            "/tasks/0/first_frame_url",
            "/tasks/1/duration",
            "/tasks/1/reference_image_urls/0",
            "/tasks/1/reference_image_urls",
            "/tasks/2/model",
            "/tasks/2/prompt",
        ] {
            assert!(got.iter().any(|p| p == expected), "missing {expected} in {got:?}");
        }
    }

    #[test]
    fn task_count_and_shape_are_checked() {
        assert_eq!(pointers(json!({"tasks": []})), ["/tasks"]);
        let four = json!({"model": Model::Veo31Pro, "prompt": "p", "aspect_ratio": "16:9"});
        assert_eq!(pointers(json!({"tasks": [four, four, four, four]})), ["/tasks"]);
        assert_eq!(pointers(json!([1, 2])), [""]);
        assert_eq!(pointers(json!({"tasks": "many"})), ["/tasks"]);
        assert_eq!(pointers(json!({"tasks": [7]})), ["/tasks/0"]);
    }

    #[test]
    fn sora_needs_a_duration_and_one_reference_at_most() {
        let got = pointers(
            json!({"tasks": [{"model": Model::Sora2, "prompt": "p", "aspect_ratio": "9:16",
            "reference_image_urls": ["https://a.test/1", "https://a.test/2"]}]}),
        );
        assert_eq!(got, ["/tasks/0/duration", "/tasks/0/reference_image_urls"]);
    }

    #[test]
    fn long_prompts_and_duplicate_custom_ids_are_rejected() {
        let long = "x".repeat(MAX_PROMPT_CHARS + 1);
        let got = pointers(json!({"tasks": [
            {"model": Model::Veo31Pro, "prompt": long, "aspect_ratio": "16:9", "custom_id": "a"},
            {"model": Model::Veo31Pro, "prompt": "p", "aspect_ratio": "16:9", "custom_id": "a"},
            {"model": Model::Veo31Pro, "prompt": "p", "aspect_ratio": "16:9", "custom_id": "a"},
        ]}));
        assert_eq!(got, ["/tasks/0/prompt", "/tasks/2/custom_id"]);
    }

    #[test]
    fn too_many_tasks_is_one_error_and_long_lists_are_capped() {
        let limits = Limits { max_tasks: 100 };
        let huge = json!({ "tasks": vec![json!({}); 100_000] });
        let errors = validate_batch(&huge, &limits, &prices()).expect_err("too many tasks");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].pointer, "/tasks");

        // 100 tasks with several violations each: the first MAX_ERRORS, then one entry counting the rest.
        let bad = json!({ "tasks": vec![json!({ "model": "nope", "prompt": 1, "extra": true }); 100] });
        let errors = validate_batch(&bad, &limits, &prices()).expect_err("many violations");
        assert_eq!(errors.len(), MAX_ERRORS + 1);
        let last = errors.last().expect("a last entry");
        assert_eq!(last.pointer, "");
        assert!(
            last.message.starts_with("and ") && last.message.ends_with(" more violations not listed"),
            "{last:?}"
        );
        assert!(errors[..MAX_ERRORS]
            .iter()
            .all(|e| e.pointer.starts_with("/tasks/")));
    }

    #[test]
    fn urls_are_capped_in_length() {
        let long = format!("https://x.test/{}", "a".repeat(MAX_URL_CHARS));
        let body = json!({ "tasks": [
            { "model": Model::Veo31Fast, "prompt": "p", "aspect_ratio": "16:9", "first_frame_url": long },
            { "model": Model::Veo31Fast, "prompt": "p", "aspect_ratio": "16:9", "reference_image_urls": [long] },
        ]});
        let errors = validate_batch(&body, &Limits { max_tasks: 3 }, &prices()).expect_err("too long");
        let pointers: Vec<_> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            ["/tasks/0/first_frame_url", "/tasks/1/reference_image_urls/0"]
        );
        assert!(
            errors.iter().all(|e| e.message.contains("at most 2048")),
            "{errors:?}"
        );
    }
}
