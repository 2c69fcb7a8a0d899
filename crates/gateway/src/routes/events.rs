//! `GET /v1/batches/{id}/events`: the live progress of a batch as server-sent events.
//!
//! Every state change writes an entry to the batch's event stream in Redis (inside the transition's script), so
//! the entry ids are the SSE `id:`s: a client that reconnects with `Last-Event-ID` resumes right after the last
//! event it saw. The response ends after the batch's final `batch.updated` (completed or cancelled), or after
//! `gateway.sse_max_secs` (the client reconnects and resumes). A tenant may hold `gateway.sse_max_per_tenant`
//! streams per gateway at once; one more is 429. New entries are announced by the gateway's one event hub
//! (`hub.rs`), so open streams cost no Redis connection of their own.

use std::{
    convert::Infallible,
    time::{Duration, Instant},
};

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::{stream, Stream, StreamExt};
use gantry_core::{domain::BatchStatus, Store};

use crate::{
    auth::Tenant,
    error::{ApiError, ApiResult},
    hub::Subscription,
    AppState,
};

/// How long a quiet stream waits before it checks whether its batch is over (when its last event was trimmed).
const QUIET: Duration = Duration::from_secs(5);

struct Cursor {
    subscription: Subscription,
    store: Store,
    batch_id: String,
    last_id: String,
    ends_at: Instant,
    done: bool,
}

pub(crate) async fn stream(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    state
        .store
        .tenant_batch(&tenant, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(super::stream_id)
        .unwrap_or_else(|| "0-0".to_owned());
    let subscription = state
        .events
        .subscribe(&tenant, &id)
        .map_err(|_| ApiError::TooManyStreams(state.config.gateway.sse_max_per_tenant))?;
    let cursor = Cursor {
        subscription,
        store: state.store.clone(),
        batch_id: id,
        last_id,
        ends_at: Instant::now() + Duration::from_secs(state.config.gateway.sse_max_secs),
        done: false,
    };
    let events = stream::unfold(cursor, |mut cursor| async move {
        if cursor.done {
            return None;
        }
        let events = cursor.read().await;
        Some((stream::iter(events.into_iter().map(Ok)), cursor))
    })
    .flatten();
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(state.keepalive())))
}

impl Cursor {
    /// The next events (possibly none, after a quiet wait); marks the cursor done after the final one, or when the
    /// stream's time is up.
    async fn read(&mut self) -> Vec<Event> {
        let now = Instant::now();
        if now >= self.ends_at {
            self.done = true;
            return Vec::new();
        }
        // Seen before reading: a change announced after this point wakes the wait below.
        self.subscription.changes.borrow_and_update();
        let entries = match self
            .store
            .batch_events_after(&self.batch_id, &self.last_id, 100)
            .await
        {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %e, "reading batch events failed; closing the stream");
                self.done = true;
                return Vec::new();
            }
        };
        if entries.is_empty() {
            let wait = QUIET.min(self.ends_at - now);
            let changed = tokio::time::timeout(wait, self.subscription.changes.changed()).await;
            if changed.is_err() {
                // Quiet: if the batch is final and its last event was trimmed away, end here.
                if let Ok(Some(batch)) = self.store.batch(&self.batch_id).await {
                    self.done = batch.status.is_final();
                }
            }
            return Vec::new();
        }
        let mut events = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.kind == "batch.updated" && is_final(&entry.data) {
                self.done = true;
            }
            events.push(Event::default().id(&entry.id).event(entry.kind).data(entry.data));
            self.last_id = entry.id;
        }
        events
    }
}

/// Whether a `batch.updated` payload announces a final status.
fn is_final(data: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Update {
        status: BatchStatus,
    }
    serde_json::from_str::<Update>(data).is_ok_and(|u| u.status.is_final())
}
