//! The Seedance API: create, status, cancel, markers and errors, on the same server as Grsai.

use reqwest::Method;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::support::{config, TestSim, DEADLINE, POLL_INTERVAL, SEEDANCE_TASKS};

const MODEL: &str = "seedance-1-0-pro-250528";

fn body(text: &str) -> Value {
    json!({
        "model": MODEL,
        "content": [
            { "type": "text", "text": text },
            { "type": "image_url", "image_url": { "url": "http://img/first.png" }, "role": "first_frame" },
        ],
        "return_last_frame": true,
    })
}

impl TestSim {
    async fn create_seedance(&self, text: &str) -> String {
        let (status, answer) = self.post(SEEDANCE_TASKS, body(text)).await;
        assert_eq!(status, 200, "{answer}");
        answer["id"].as_str().unwrap().to_owned()
    }

    async fn seedance_task(&self, id: &str) -> Value {
        let (status, answer) = self.get(&format!("{SEEDANCE_TASKS}/{id}")).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    /// Polls until the task is neither queued nor running.
    async fn seedance_to_end(&self, id: &str) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let task = self.seedance_task(id).await;
            if !matches!(task["status"].as_str(), Some("queued" | "running")) {
                return task;
            }
            assert!(Instant::now() < deadline, "task {id} never ended");
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

#[tokio::test]
async fn seedance_task_runs_to_success_with_its_last_frame() {
    let sim = TestSim::start(config(100)).await;
    let id = sim.create_seedance("a fox --ratio 16:9 --duration 5").await;
    assert!(id.starts_with("cgt-"), "{id}");
    let task = sim.seedance_to_end(&id).await;
    let base = sim.handle.base_url();
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["model"], MODEL);
    assert_eq!(task["status"], "succeeded");
    assert_eq!(task["content"]["video_url"], format!("{base}/videos/{id}.mp4"));
    assert_eq!(
        task["content"]["last_frame_url"],
        format!("{base}/frames/{id}-last.jpg")
    );
    assert!(task.get("error").is_none());
    let frame = sim
        .http
        .get(format!("{base}/frames/{id}-last.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(frame.status(), 200);

    let stats = sim.handle.stats();
    let info = &stats.tasks[0];
    assert_eq!(info.provider, "seedance");
    assert_eq!(info.model, MODEL);
    assert_eq!(info.prompt, "a fox --ratio 16:9 --duration 5");
    assert_eq!(info.first_frame_url.as_deref(), Some("http://img/first.png"));
    assert_eq!(info.last_frame_url, Some(format!("{base}/frames/{id}-last.jpg")));
    assert_eq!((stats.creates, stats.polls), (1, info.polls));
}

#[tokio::test]
async fn seedance_task_is_queued_then_running() {
    // Queued for the first tenth: 500 ms.
    let sim = TestSim::start(config(5_000)).await;
    let id = sim.create_seedance("slow").await;
    assert_eq!(sim.seedance_task(&id).await["status"], "queued");
    let deadline = Instant::now() + DEADLINE;
    while sim.seedance_task(&id).await["status"] == "queued" {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let task = sim.seedance_task(&id).await;
    assert_eq!(task["status"], "running");
    assert!(task.get("content").is_none());
}

#[tokio::test]
async fn markers_fail_seedance_tasks_with_error_codes() {
    let sim = TestSim::start(config(30)).await;
    let cases = [
        ("x [sim:fail]", "InternalServiceError", "simulated failure"),
        (
            "x [sim:moderation]",
            "InputTextSensitiveContentDetected",
            "simulated input moderation",
        ),
        (
            "x [sim:output-moderation]",
            "OutputVideoSensitiveContentDetected",
            "simulated output moderation",
        ),
    ];
    for (text, code, message) in cases {
        let id = sim.create_seedance(text).await;
        let task = sim.seedance_to_end(&id).await;
        assert_eq!(task["status"], "failed");
        assert_eq!(task["error"], json!({ "code": code, "message": message }));
        assert!(task.get("content").is_none());
    }
}

#[tokio::test]
async fn seedance_errors_have_their_shape_and_status() {
    let sim = TestSim::start(config(30)).await;
    let mut bad = vec![
        body("x [sim:reject]"),
        body("x --ratio 5:4"),
        json!({ "model": MODEL, "content": [] }),
    ];
    let mut no_model = body("x");
    no_model["model"] = json!("");
    bad.push(no_model);
    for body in bad {
        let (status, answer) = sim.post(SEEDANCE_TASKS, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["error"]["code"], "InvalidParameter");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let response = sim
        .http
        .post(sim.url(SEEDANCE_TASKS))
        .bearer_auth("wrong")
        .json(&body("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "AuthenticationError");

    // Unknown ids, and ids of the other API, are not found.
    let grsai = sim.create_sora("a grsai task").await;
    for id in ["cgt-nope", grsai.as_str()] {
        let (status, answer) = sim.get(&format!("{SEEDANCE_TASKS}/{id}")).await;
        assert_eq!(status, 404);
        assert_eq!(answer["error"]["code"], "ResourceNotFound");
        assert_eq!(sim.delete(&format!("{SEEDANCE_TASKS}/{id}")).await.0, 404);
    }
    let seedance = sim.create_seedance("a seedance task").await;
    assert_eq!(sim.poll(&seedance).await["code"], -22);
    assert!(sim.handle.stats().tasks.iter().all(|task| !task.cancelled));
    assert_eq!(sim.handle.stats().creates, 6);
}

#[tokio::test]
async fn seedance_tasks_can_be_cancelled() {
    let sim = TestSim::start(config(10_000)).await;
    let id = sim.create_seedance("to be cancelled").await;
    let path = format!("{SEEDANCE_TASKS}/{id}");
    assert_eq!(sim.delete(&path).await, (200, json!({})));
    let task = sim.seedance_task(&id).await;
    assert_eq!(task["status"], "cancelled");
    assert!(task.get("content").is_none());
    assert!(sim.handle.stats().tasks[0].cancelled);
    assert_eq!(sim.handle.stats().tasks[0].last_frame_url, None);
    // Deleting an ended task is accepted (BytePlus deletes its record) and changes nothing here.
    assert_eq!(sim.delete(&path).await, (200, json!({})));
    let frame = sim
        .http
        .get(sim.url(&format!("/frames/{id}-last.jpg")))
        .send()
        .await
        .unwrap();
    assert_eq!(frame.status(), 404);
    let response = sim.request(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(response.status(), 200);
}
