//! Callbacks: a task created with a webhook URL (Grsai `webHook`, Seedance `callback_url`) gets POSTs about itself.
//!
//! One callback at about half the task's duration while it runs (unless Grsai's `shutProgress` is set) and one when
//! it ends (succeeded, failed or cancelled); a task that never finishes gets no final callback. The body is what the
//! status call would answer at that moment: Grsai's `data` object, or Seedance's task object. Each delivery goes
//! through the webhook faults (drop, duplicate, random delay per POST, which reorders deliveries). Failed POSTs are
//! counted, never retried. Pending deliveries end when the simulator shuts down.

use std::{sync::Arc, time::Duration};

use axum::http::header::CONTENT_TYPE;

use crate::{
    seedance::TaskBody,
    state::{Counter, Sim, Snapshot},
    task::Api,
    wire::TaskData,
};

/// Limit for one callback POST.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and what to call back for one task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Callback {
    pub(crate) url: String,
    /// Whether to send the mid-way progress callback too.
    pub(crate) progress: bool,
}

/// The HTTP client callbacks are sent with.
pub(crate) fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder().timeout(POST_TIMEOUT).build()
}

/// Arranges the callbacks of task `id` in the background.
pub(crate) fn schedule(sim: &Arc<Sim>, id: String, callback: Callback) {
    let sim = Arc::clone(sim);
    tokio::spawn(async move {
        let shutdown = sim.shutdown().clone();
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = follow(&sim, &id, &callback) => {}
        }
    });
}

/// Waits for each moment a callback is due and delivers it, while the task still exists.
async fn follow(sim: &Arc<Sim>, id: &str, callback: &Callback) {
    let Some((started, duration)) = sim.timing(id) else {
        return;
    };
    if callback.progress {
        tokio::time::sleep_until(started + duration / 2).await;
        match sim.peek(id) {
            Some(task) if task.phase.is_live() => deliver(sim, &callback.url, &task),
            Some(_) => {}
            None => return,
        }
    }
    tokio::time::sleep_until(started + duration).await;
    match sim.peek(id) {
        Some(task) if !task.phase.is_live() => deliver(sim, &callback.url, &task),
        _ => tracing::debug!(task.id = %id, "no final callback for a task that is gone or never finishes"),
    }
}

/// Sends the callback for `task` as the webhook faults decide: not at all, once or twice, each after a delay.
fn deliver(sim: &Arc<Sim>, url: &str, task: &Snapshot) {
    let body = match body(sim, task) {
        Ok(body) => body,
        Err(error) => {
            tracing::warn!(%error, task.id = %task.id, "callback body could not be built");
            return;
        }
    };
    let delays = sim.faults().delivery();
    match delays.len() {
        0 => {
            sim.bump(Counter::WebhookDropped);
            tracing::debug!(task.id = %task.id, "callback dropped");
            return;
        }
        1 => {}
        _ => sim.bump(Counter::WebhookDuplicated),
    }
    for delay in delays {
        let (sim, url, body) = (Arc::clone(sim), url.to_owned(), body.clone());
        tokio::spawn(async move {
            let shutdown = sim.shutdown().clone();
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = post(&sim, &url, body, delay) => {}
            }
        });
    }
}

/// One POST after `delay`; counted as sent once it is answered or has failed (a failure is counted first, so a
/// reader who sees the sent count also sees the failures among them).
async fn post(sim: &Sim, url: &str, body: Vec<u8>, delay: Duration) {
    tokio::time::sleep(delay).await;
    let result = sim
        .webhook_client()
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    match result {
        Ok(response) if response.status().is_success() => {
            tracing::debug!(%url, http.status = response.status().as_u16(), "callback delivered");
        }
        Ok(response) => {
            sim.bump(Counter::WebhookFailed);
            tracing::debug!(%url, http.status = response.status().as_u16(), "callback refused");
        }
        Err(error) => {
            sim.bump(Counter::WebhookFailed);
            tracing::debug!(%url, %error, "callback failed");
        }
    }
    sim.bump(Counter::WebhookSent);
}

/// The callback body: what the task's own API answers to a status call.
fn body(sim: &Sim, task: &Snapshot) -> serde_json::Result<Vec<u8>> {
    match task.api {
        Api::Grsai => serde_json::to_vec(&TaskData::new(&task.id, task.phase, sim.base_url())),
        Api::Seedance => serde_json::to_vec(&TaskBody::new(task, sim.base_url())),
    }
}
