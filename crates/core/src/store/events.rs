//! Reading the batches' live event streams (what their transitions wrote, for SSE).
//!
//! A gateway holds one [`EventWatcher`] (one connection of its own for blocking reads) that waits for new entries
//! on the streams of every batch someone is watching; the readers themselves fetch entries with short reads on the
//! shared connection. So a gateway's Redis connections do not grow with the number of open streams.
//!
//! A Redis Cluster refuses a read over keys of several slots, and a blocked read holds up its connection: there
//! the watcher reads each slot's streams with one `XREAD` on a connection of that slot's own (at most one per
//! partition), all slots at once, and answers as soon as any of them has news; the reads still waiting carry on
//! into the next call.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use redis::{
    cluster_routing::Slot,
    streams::{StreamRangeReply, StreamReadOptions, StreamReadReply},
    AsyncCommands,
};
use tokio::task::JoinSet;

use super::{Connection, Result, Store};
use crate::config::RedisMode;

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
    store: Store,
    block: Duration,
    reads: Reads,
}

/// The batches that got new entries, each with its newest entry id.
type News = Vec<(String, String)>;

/// How the watcher reads.
enum Reads {
    /// One server: one `XREAD` over every stream.
    Single(Connection),
    /// A cluster: one `XREAD` per slot, each slot on a connection of its own.
    PerSlot {
        connections: HashMap<Slot, Connection>,
        /// The reads in flight, each answering for its slot.
        in_flight: JoinSet<(Slot, Result<News>)>,
        busy: HashSet<Slot>,
    },
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
        let reads = match self.mode() {
            RedisMode::Standalone => Reads::Single(self.blocking_connection(block).await?),
            RedisMode::Cluster => Reads::PerSlot {
                connections: HashMap::new(),
                in_flight: JoinSet::new(),
                busy: HashSet::new(),
            },
        };
        Ok(EventWatcher {
            store: self.clone(),
            block,
            reads,
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
        let watched = batches
            .iter()
            .map(|(id, cursor)| (self.store.keys.batch_events(id), (id.clone(), cursor.clone())));
        let (connections, in_flight, busy) = match &mut self.reads {
            Reads::Single(conn) => return read_news(conn, watched.collect(), self.block).await,
            Reads::PerSlot {
                connections,
                in_flight,
                busy,
            } => (connections, in_flight, busy),
        };
        for group in super::by_slot(watched) {
            let slot = Slot::for_key(&group[0].0);
            if busy.contains(&slot) {
                continue;
            }
            let mut conn = match connections.get(&slot) {
                Some(conn) => conn.clone(),
                None => {
                    let conn = self.store.blocking_connection(self.block).await?;
                    connections.entry(slot).or_insert(conn).clone()
                }
            };
            let block = self.block;
            busy.insert(slot);
            in_flight.spawn(async move { (slot, read_news(&mut conn, group, block).await) });
        }
        // The first read to answer, and any others done by then.
        let mut news = Vec::new();
        let mut done = in_flight.join_next().await.into_iter().collect::<Vec<_>>();
        while let Some(more) = in_flight.try_join_next() {
            done.push(more);
        }
        for joined in done {
            let (slot, read) = joined.map_err(|e| super::StoreError::reader(e.to_string()))?;
            busy.remove(&slot);
            news.extend(read?);
        }
        Ok(news)
    }
}

/// One `XREAD` over `streams` (stream key, (batch id, cursor)), blocking up to `block`: the batches that got new
/// entries, each with its newest entry id.
async fn read_news(
    conn: &mut Connection,
    streams: Vec<(String, (String, String))>,
    block: Duration,
) -> Result<News> {
    let (keys, cursors): (Vec<&String>, Vec<&str>) = streams
        .iter()
        .map(|(key, (_, cursor))| (key, cursor.as_str()))
        .unzip();
    let options = StreamReadOptions::default()
        .count(1000)
        .block(usize::try_from(block.as_millis()).unwrap_or(usize::MAX));
    let reply: Option<StreamReadReply> = conn.xread_options(&keys, &cursors, &options).await?;
    let by_key: HashMap<&String, &String> = streams.iter().map(|(key, (id, _))| (key, id)).collect();
    Ok(reply
        .into_iter()
        .flat_map(|r| r.keys)
        .filter_map(|k| {
            let newest = k.ids.last()?.id.clone();
            Some(((*by_key.get(&k.key)?).clone(), newest))
        })
        .collect())
}

fn event(entry: redis::streams::StreamId) -> BatchEvent {
    BatchEvent {
        kind: entry.get("type").unwrap_or_default(),
        data: entry.get("data").unwrap_or_default(),
        id: entry.id,
    }
}
