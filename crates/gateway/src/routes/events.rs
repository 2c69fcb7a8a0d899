//! `GET /v1/batches/{id}/events`: the live progress of a batch as server-sent events.
//!
//! Every state change writes an entry to the batch's event stream in Redis (inside the transition's script), so
//! the entry ids are the SSE `id:`s: a client that reconnects with `Last-Event-ID` resumes right after the last
//! event it saw. The response ends after the batch's final `batch.updated` (completed or cancelled).

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::{stream, Stream, StreamExt};
use gantry_core::{domain::BatchStatus, store::EventReader, Store};

use crate::{
    auth::Tenant,
    error::{ApiError, ApiResult},
    AppState,
};

const READ_BLOCK: Duration = Duration::from_secs(5);

struct Cursor {
    reader: EventReader,
    store: Store,
    batch_id: String,
    last_id: String,
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
    let cursor = Cursor {
        reader: state.store.batch_event_reader(&id, READ_BLOCK).await?,
        store: state.store.clone(),
        batch_id: id,
        last_id,
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
    /// The next events (possibly none, after a quiet read); marks the cursor done after the final one.
    async fn read(&mut self) -> Vec<Event> {
        let entries = match self.reader.read_after(&self.last_id, 100).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %e, "reading batch events failed; closing the stream");
                self.done = true;
                return Vec::new();
            }
        };
        if entries.is_empty() {
            // Quiet: if the batch is final and its last event was trimmed away, end here.
            if let Ok(Some(batch)) = self.store.batch(&self.batch_id).await {
                self.done = batch.status.is_final();
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
