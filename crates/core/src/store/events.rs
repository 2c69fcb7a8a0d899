//! Reading a batch's live event stream (what its transitions wrote, for SSE), on a connection of the reader's
//! own so that its blocking reads never stall the shared one.

use std::time::Duration;

use redis::{
    aio::ConnectionManager,
    streams::{StreamReadOptions, StreamReadReply},
    AsyncCommands,
};

use super::{Result, Store};

/// One entry of a batch's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEvent {
    /// The stream entry id (the SSE `id:`).
    pub id: String,
    /// `batch.updated` or `task.updated`.
    pub kind: String,
    /// The JSON payload.
    pub data: String,
}

/// A reader of one batch's events.
pub struct EventReader {
    conn: ConnectionManager,
    key: String,
    block: Duration,
}

impl Store {
    /// A reader of `batch_id`'s events whose reads wait up to `block` for new ones.
    pub async fn batch_event_reader(&self, batch_id: &str, block: Duration) -> Result<EventReader> {
        Ok(EventReader {
            conn: self.blocking_connection(block).await?,
            key: self.keys.batch_events(batch_id),
            block,
        })
    }
}

impl EventReader {
    /// Up to `count` events after the entry `after` (`0-0`: from the start), waiting up to the reader's block
    /// time when there are none yet (then the answer is empty).
    pub async fn read_after(&mut self, after: &str, count: usize) -> Result<Vec<BatchEvent>> {
        let options = StreamReadOptions::default()
            .count(count)
            .block(usize::try_from(self.block.as_millis()).unwrap_or(usize::MAX));
        let reply: Option<StreamReadReply> =
            self.conn.xread_options(&[&self.key], &[after], &options).await?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(|entry| BatchEvent {
                kind: entry.get("type").unwrap_or_default(),
                data: entry.get("data").unwrap_or_default(),
                id: entry.id,
            })
            .collect())
    }
}
