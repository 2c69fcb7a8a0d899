//! Reading the batches' live event streams (what their transitions wrote, for SSE).
//!
//! A gateway holds one [`EventWatcher`] (one connection of its own for blocking reads) that waits for new entries
//! on the streams of every batch someone is watching; the readers themselves fetch entries with short reads on the
//! shared connection. So a gateway's Redis connections do not grow with the number of open streams.

use std::{collections::HashMap, time::Duration};

use redis::{
    aio::ConnectionManager,
    streams::{StreamRangeReply, StreamReadOptions, StreamReadReply},
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

/// Waits for new entries on many batches' event streams at once.
pub struct EventWatcher {
    conn: ConnectionManager,
    store: Store,
    block: Duration,
}

impl Store {
    /// Up to `count` events of `batch_id` after the entry `after` (`0-0`: from the start), without waiting.
    pub async fn batch_events_after(
        &self,
        batch_id: &str,
        after: &str,
        count: usize,
    ) -> Result<Vec<BatchEvent>> {
        let reply: StreamRangeReply = self
            .connection()
            .xrange_count(self.keys.batch_events(batch_id), format!("({after}"), "+", count)
            .await?;
        Ok(reply.ids.into_iter().map(event).collect())
    }

    /// The id of the newest event of `batch_id` (`0-0` when there is none).
    pub async fn last_batch_event(&self, batch_id: &str) -> Result<String> {
        let reply: StreamRangeReply = self
            .connection()
            .xrevrange_count(self.keys.batch_events(batch_id), "+", "-", 1)
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_owned(), |e| e.id))
    }

    /// A watcher whose waits last up to `block`, on a connection of its own.
    pub async fn event_watcher(&self, block: Duration) -> Result<EventWatcher> {
        Ok(EventWatcher {
            conn: self.blocking_connection(block).await?,
            store: self.clone(),
            block,
        })
    }
}

impl EventWatcher {
    /// Waits up to the block time for an entry newer than its cursor on any of `batches` (batch id → cursor, an
    /// entry id), and returns the batches that got some, each with its newest entry id.
    pub async fn wait(&mut self, batches: &HashMap<String, String>) -> Result<Vec<(String, String)>> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, keys): (Vec<&String>, Vec<String>) = batches
            .keys()
            .map(|id| (id, self.store.keys.batch_events(id)))
            .unzip();
        let cursors: Vec<&str> = ids.iter().map(|id| batches[*id].as_str()).collect();
        let options = StreamReadOptions::default()
            .count(1000)
            .block(usize::try_from(self.block.as_millis()).unwrap_or(usize::MAX));
        let reply: Option<StreamReadReply> = self.conn.xread_options(&keys, &cursors, &options).await?;
        let by_key: HashMap<&String, &String> = keys.iter().zip(ids).collect();
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .filter_map(|k| {
                let newest = k.ids.last()?.id.clone();
                Some(((*by_key.get(&k.key)?).clone(), newest))
            })
            .collect())
    }
}

fn event(entry: redis::streams::StreamId) -> BatchEvent {
    BatchEvent {
        kind: entry.get("type").unwrap_or_default(),
        data: entry.get("data").unwrap_or_default(),
        id: entry.id,
    }
}
