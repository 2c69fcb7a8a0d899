//! Reading a set of streams through a consumer group, at least once.
//!
//! Each process reads under a unique consumer name. A message is acknowledged by the caller only after its
//! effect is durable; messages left pending by a consumer that died are reclaimed with `XAUTOCLAIM` once they
//! have been idle for `claim_idle`. On a clean shutdown the consumer removes itself when it holds nothing.
//!
//! On one Redis server a read is one `XREADGROUP` over every stream. A Redis Cluster refuses a read over streams
//! of several slots, and a blocked read holds up every later command on its connection; so in cluster mode each
//! stream has a reader task of its own, blocking on a connection of its own, that hands what it reads to the
//! consumer through a channel (holding at most one read's worth ahead).

use std::time::{Duration, Instant};

use redis::{
    streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamReadOptions, StreamReadReply},
    AsyncCommands,
};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    config::RedisMode,
    messages::Message,
    store::{Connection, Result, StoreError},
    Store,
};

/// One delivered message.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub stream: String,
    pub id: String,
    /// The parsed message, or why it could not be parsed.
    pub message: Result<Message, String>,
    /// The entry's fields as they were written (kept for the dead-letter stream).
    pub fields: Vec<(String, String)>,
    /// How many times this message has been delivered, this time included.
    pub deliveries: u64,
}

impl Delivery {
    fn new(stream: &str, entry: redis::streams::StreamId, deliveries: u64) -> Self {
        let fields = entry
            .map
            .iter()
            .filter_map(|(k, v)| {
                redis::from_redis_value_ref::<String>(v)
                    .ok()
                    .map(|v| (k.clone(), v))
            })
            .collect();
        Self {
            stream: stream.to_owned(),
            message: Message::from_fields(&entry.map),
            fields,
            deliveries,
            id: entry.id,
        }
    }
}

/// Why a delivery must go to the dead letters instead of being processed: it is malformed, or it has been
/// delivered more than `max_deliveries` times without being acknowledged (a poison message).
pub fn poison(delivery: &Delivery, max_deliveries: u32) -> Option<String> {
    match &delivery.message {
        Err(why) => Some(format!("malformed message: {why}")),
        Ok(_) if delivery.deliveries > u64::from(max_deliveries) => {
            Some(format!("delivered {} times without success", delivery.deliveries))
        }
        Ok(_) => None,
    }
}

/// Reading options.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Messages per read.
    pub count: usize,
    /// How long one read waits for new messages.
    pub block: Duration,
    /// How long a message stays pending before a live consumer takes it over.
    pub claim_idle: Duration,
}

/// A consumer of one group over several streams.
pub struct Consumer {
    /// Group management and reclaims; in standalone mode the reads too (then it is the consumer's own).
    conn: Connection,
    reader: Reader,
    group: String,
    name: String,
    streams: Vec<String>,
    options: ConsumerOptions,
    last_claim: Option<Instant>,
}

/// Where new messages come from.
enum Reader {
    /// One `XREADGROUP` over every stream, on the consumer's connection.
    AllStreams,
    /// One reader task per stream (cluster mode), each blocking on a connection of its own.
    PerStream {
        deliveries: mpsc::Receiver<Result<Vec<Delivery>>>,
        /// Asks the readers to stop after their current read.
        stop: CancellationToken,
        /// Aborted when the consumer is dropped without leaving.
        readers: JoinSet<()>,
    },
}

impl Consumer {
    /// Joins `group` on `streams` (creating the group, from the start of each stream, where it is missing).
    pub async fn join(
        store: &Store,
        group: &str,
        streams: Vec<String>,
        options: ConsumerOptions,
    ) -> Result<Self> {
        let mut conn = match store.mode() {
            RedisMode::Standalone => store.blocking_connection(options.block).await?,
            RedisMode::Cluster => store.connection(),
        };
        for stream in &streams {
            let created: redis::RedisResult<()> = conn.xgroup_create_mkstream(stream, group, "0").await;
            match created {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(e.into()),
            }
        }
        let name = format!("{group}-{}", uuid::Uuid::now_v7().simple());
        let reader = match store.mode() {
            RedisMode::Standalone => Reader::AllStreams,
            RedisMode::Cluster => {
                let (sender, deliveries) = mpsc::channel(streams.len().max(1));
                let stop = CancellationToken::new();
                let mut readers = JoinSet::new();
                for stream in &streams {
                    let read = StreamReader {
                        conn: store.blocking_connection(options.block).await?,
                        store: store.clone(),
                        stream: stream.clone(),
                        group: group.to_owned(),
                        name: name.clone(),
                        count: options.count,
                        block: options.block,
                    };
                    readers.spawn(read.run(sender.clone(), stop.clone()));
                }
                Reader::PerStream {
                    deliveries,
                    stop,
                    readers,
                }
            }
        };
        Ok(Self {
            conn,
            reader,
            group: group.to_owned(),
            name,
            streams,
            options,
            last_claim: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next messages: first any reclaimed from dead consumers, else new ones (waiting up to `block`).
    pub async fn next(&mut self) -> Result<Vec<Delivery>> {
        self.next_at_most(usize::MAX).await
    }

    /// Like [`Consumer::next`], reading at most `max` new messages where one read covers every stream (the stream
    /// readers of a cluster read ahead, and reclaims come in `count`s: those can hand over more).
    async fn next_at_most(&mut self, max: usize) -> Result<Vec<Delivery>> {
        let claimed = self.reclaim().await?;
        if !claimed.is_empty() {
            return Ok(claimed);
        }
        let deliveries = match &mut self.reader {
            Reader::AllStreams => {
                let count = self.options.count.min(max).max(1);
                let options = read_options(&self.group, &self.name, count, self.options.block);
                let ids = vec![">"; self.streams.len()];
                let reply: Option<StreamReadReply> =
                    self.conn.xread_options(&self.streams, &ids, &options).await?;
                return Ok(new_deliveries(reply));
            }
            Reader::PerStream { deliveries, .. } => deliveries,
        };
        // What the readers have handed over, waiting up to `block` for the first read's worth. Failed reads queued
        // meanwhile are taken too, so an outage costs one pause, not one per stream.
        let first = match tokio::time::timeout(self.options.block, deliveries.recv()).await {
            Ok(Some(read)) => read,
            Ok(None) => return Err(StoreError::reader("every stream reader has stopped".into())),
            Err(_) => return Ok(Vec::new()),
        };
        let (mut out, mut failure) = (Vec::new(), None);
        let mut next = Some(first);
        while let Some(read) = next.take() {
            match read {
                Ok(more) => out.extend(more),
                Err(e) => failure = Some(e),
            }
            if out.len() < self.options.count {
                next = deliveries.try_recv().ok();
            }
        }
        match failure {
            Some(e) if out.is_empty() => Err(e),
            Some(e) => {
                tracing::warn!(group = %self.group, error = %e, "reading a stream failed");
                Ok(out)
            }
            None => Ok(out),
        }
    }

    /// Like [`Consumer::next`], but a failed read (Redis down or restarting) is logged and retried after a pause,
    /// so a worker outlives outages; `None` once `shutdown` is cancelled.
    pub async fn next_until(
        &mut self,
        max: usize,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Option<Vec<Delivery>> {
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            match self.next_at_most(max).await {
                Ok(deliveries) => return Some(deliveries),
                Err(e) => {
                    tracing::error!(group = %self.group, error = %e, "reading streams failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    async fn reclaim(&mut self) -> Result<Vec<Delivery>> {
        let interval = self.options.claim_idle / 4;
        if self.last_claim.is_some_and(|at| at.elapsed() < interval) {
            return Ok(Vec::new());
        }
        self.last_claim = Some(Instant::now());
        let idle = usize::try_from(self.options.claim_idle.as_millis()).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        for stream in &self.streams {
            let reply: StreamAutoClaimReply = self
                .conn
                .xautoclaim_options(
                    stream,
                    &self.group,
                    &self.name,
                    idle,
                    "0-0",
                    StreamAutoClaimOptions::default().count(self.options.count),
                )
                .await?;
            if reply.claimed.is_empty() {
                continue;
            }
            // How often each claimed message has been delivered, to spot poison messages.
            let pending: redis::streams::StreamPendingCountReply = self
                .conn
                .xpending_consumer_count(stream, &self.group, "-", "+", self.options.count * 4, &self.name)
                .await?;
            let counts: std::collections::HashMap<String, u64> = pending
                .ids
                .into_iter()
                .map(|p| (p.id, p.times_delivered as u64))
                .collect();
            out.extend(reply.claimed.into_iter().map(|entry| {
                let deliveries = counts.get(&entry.id).copied().unwrap_or(2);
                Delivery::new(stream, entry, deliveries)
            }));
        }
        if !out.is_empty() {
            tracing::warn!(group = %self.group, count = out.len(), "reclaimed messages of a dead consumer");
        }
        Ok(out)
    }

    /// Leaves the group if this consumer holds no pending message (otherwise they stay to be reclaimed).
    pub async fn leave(mut self) {
        // No read may be in flight while the consumer checks what it holds and removes itself: a message
        // delivered in between would be dropped with it.
        if let Reader::PerStream { stop, readers, .. } = &mut self.reader {
            stop.cancel();
            let all_stopped = async { while readers.join_next().await.is_some() {} };
            let wait = self.options.block + Duration::from_secs(1);
            if tokio::time::timeout(wait, all_stopped).await.is_err() {
                // A read still hangs (Redis unreachable): stay in the group; what it may hold is reclaimed later.
                return;
            }
        }
        for stream in &self.streams {
            let pending: redis::RedisResult<redis::streams::StreamPendingCountReply> = self
                .conn
                .xpending_consumer_count(stream, &self.group, "-", "+", 1, &self.name)
                .await;
            if !matches!(pending, Ok(ref p) if p.ids.is_empty()) {
                return;
            }
        }
        for stream in &self.streams {
            let _: redis::RedisResult<i64> = self
                .conn
                .xgroup_delconsumer(stream, &self.group, &self.name)
                .await;
        }
    }
}

fn read_options(group: &str, name: &str, count: usize, block: Duration) -> StreamReadOptions {
    StreamReadOptions::default()
        .group(group, name)
        .count(count)
        .block(usize::try_from(block.as_millis()).unwrap_or(usize::MAX))
}

fn new_deliveries(reply: Option<StreamReadReply>) -> Vec<Delivery> {
    reply
        .into_iter()
        .flat_map(|r| r.keys)
        .flat_map(|key| {
            let stream = key.key;
            key.ids
                .into_iter()
                .map(move |entry| Delivery::new(&stream, entry, 1))
        })
        .collect()
}

/// Reads one stream for a consumer, in cluster mode.
struct StreamReader {
    conn: Connection,
    /// Makes a fresh connection after a failed read.
    store: Store,
    stream: String,
    group: String,
    name: String,
    count: usize,
    block: Duration,
}

impl StreamReader {
    /// Reads until `stop` (checked between reads) or until the consumer is gone, handing over what it reads; after
    /// a failed read (handed over too) it pauses a second and reads on a fresh connection.
    async fn run(mut self, deliveries: mpsc::Sender<Result<Vec<Delivery>>>, stop: CancellationToken) {
        let options = read_options(&self.group, &self.name, self.count, self.block);
        while !stop.is_cancelled() {
            let read: redis::RedisResult<Option<StreamReadReply>> =
                self.conn.xread_options(&[&self.stream], &[">"], &options).await;
            let failed = read.is_err();
            let read = read.map(new_deliveries).map_err(Into::into);
            if matches!(&read, Ok(d) if d.is_empty()) {
                continue;
            }
            // Stopping with a read in hand leaves its messages pending: the consumer then stays in the group, and
            // they are reclaimed.
            tokio::select! {
                _ = stop.cancelled() => return,
                sent = deliveries.send(read) => if sent.is_err() { return },
            }
            if failed {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if let Ok(conn) = self.store.blocking_connection(self.block).await {
                    self.conn = conn;
                }
            }
        }
    }
}

impl crate::service::Source for Consumer {
    type Item = Delivery;

    /// A read's worth of messages: at most `max` (the free slots) where one read covers every stream; a cluster's
    /// stream readers and reclaims may hand over more, which the runner holds until slots free up.
    async fn next(
        &mut self,
        max: usize,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Option<Vec<Delivery>> {
        self.next_until(max, shutdown).await
    }
}
