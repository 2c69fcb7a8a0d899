//! The store's Redis connection: one server or a Redis Cluster behind one type, and the process-wide count of
//! round trips to Redis.
//!
//! [`Connection`] implements redis-rs's `ConnectionLike`, so the store's commands, pipelines and scripts run
//! unchanged on either backend. In cluster mode every command is routed by its key's hash slot. Transactions
//! (`MULTI`) and scripts must keep to one slot (the key layout of `keys.rs` sees to it); a plain pipeline whose
//! commands span several slots (reads over all partitions, a tenant's batches) is split here into one pipeline per
//! slot, sent concurrently, and its replies put back in order.
//!
//! Every request is counted in [`round_trips`]: one per command, one per pipeline or transaction (one per slot
//! when a cluster pipeline is split), blocking reads included.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    cluster_routing::Slot,
    io::tcp::TcpSettings,
    Cmd, IntoConnectionInfo, Pipeline, RedisFuture, TlsCertificates, Value,
};

use crate::config::RedisMode;

static ROUND_TRIPS: AtomicU64 = AtomicU64::new(0);

/// Requests this process has sent to Redis and waited for: one per command, one per pipeline or transaction.
pub fn round_trips() -> u64 {
    ROUND_TRIPS.load(Ordering::Relaxed)
}

fn count(n: u64) {
    ROUND_TRIPS.fetch_add(n, Ordering::Relaxed);
}

/// How the store reaches Redis; makes connections.
#[derive(Clone)]
pub(crate) enum Backend {
    Single(redis::Client),
    /// The seed nodes (and the TLS files' certificates, if any): each connection gets a client with its own
    /// timeouts.
    Cluster(Vec<String>, Option<TlsCertificates>),
}

/// What a cluster request may take beyond one reply's timeout: redirections, reconnections and retries while a
/// node restarts or fails over. Past it the request fails (callers retry): it never hangs.
const CLUSTER_RETRY_ALLOWANCE: Duration = Duration::from_secs(10);

impl Backend {
    /// A backend of `mode` at `urls` (one URL, or a comma-separated list of seed nodes in cluster mode). `tls`
    /// (for `rediss://` URLs) replaces the trusted roots with its CA and sends its client certificate.
    pub(crate) fn open(
        mode: RedisMode,
        urls: &str,
        tls: Option<TlsCertificates>,
    ) -> redis::RedisResult<Self> {
        Ok(match mode {
            RedisMode::Standalone => {
                let info = urls
                    .trim()
                    .into_connection_info()?
                    .set_tcp_settings(tcp_settings());
                Self::Single(match tls {
                    Some(certificates) => redis::Client::build_with_tls(info, certificates)?,
                    None => redis::Client::open(info)?,
                })
            }
            RedisMode::Cluster => {
                let urls: Vec<String> = crate::config::split_urls(urls)
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                // Checks the URLs now rather than at the first connection.
                cluster_client(&urls, tls.as_ref(), Duration::from_secs(5))?;
                Self::Cluster(urls, tls)
            }
        })
    }

    pub(crate) fn mode(&self) -> RedisMode {
        match self {
            Self::Single(_) => RedisMode::Standalone,
            Self::Cluster(..) => RedisMode::Cluster,
        }
    }

    /// A new connection whose replies may take up to `response_timeout` (longer than any `BLOCK` sent on it).
    pub(crate) async fn connect(&self, response_timeout: Duration) -> redis::RedisResult<Connection> {
        Ok(match self {
            Self::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(Some(response_timeout))
                    .set_max_delay(Duration::from_secs(2));
                Connection::Single(ConnectionManager::new_with_config(client.clone(), config).await?)
            }
            Self::Cluster(urls, tls) => Connection::Cluster {
                conn: cluster_client(urls, tls.as_ref(), response_timeout)?
                    .get_async_connection()
                    .await?,
                limit: response_timeout + CLUSTER_RETRY_ALLOWANCE + Duration::from_secs(1),
            },
        })
    }
}

/// A cluster client whose requests wait up to `response_timeout` per attempt, and are bounded overall. Its nodes
/// speak TLS when the seed URLs are `rediss://`, with `tls`'s CA and client certificate if given.
fn cluster_client(
    urls: &[String],
    tls: Option<&TlsCertificates>,
    response_timeout: Duration,
) -> redis::RedisResult<ClusterClient> {
    let mut builder = ClusterClient::builder(urls.iter().map(String::as_str));
    if let Some(certificates) = tls {
        builder = builder.certs(certificates.clone());
    }
    builder
        // Ride out a failover or a node restart for a few seconds; callers retry beyond that.
        .retries(6)
        .min_retry_wait(100)
        .max_retry_wait(2000)
        .connection_timeout(Duration::from_secs(5))
        .response_timeout(response_timeout)
        .overall_response_timeout(Some(response_timeout + CLUSTER_RETRY_ALLOWANCE))
        .tcp_settings(tcp_settings())
        .build()
}

/// `TCP_NODELAY`, which redis-rs leaves off: a connection carries many small pipelined writes, and Nagle would
/// hold each one back until the previous one is acknowledged.
fn tcp_settings() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

/// A multiplexed, self-reconnecting connection to one Redis server or to a Redis Cluster; cheap to clone (clones
/// share the connection).
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster {
        conn: ClusterConnection,
        /// The longest any request may take, all retries included (a safety net over the client's own bound).
        limit: Duration,
    },
}

impl Connection {
    /// A connection of its own to the Redis of `mode` at `urls` (tests and tools that look behind the store).
    pub async fn open(mode: RedisMode, urls: &str) -> redis::RedisResult<Self> {
        Self::open_tls(mode, urls, None).await
    }

    /// Like [`Connection::open`], with a CA and/or client certificate for `rediss://` URLs.
    pub async fn open_tls(
        mode: RedisMode,
        urls: &str,
        tls: Option<TlsCertificates>,
    ) -> redis::RedisResult<Self> {
        Backend::open(mode, urls, tls)?
            .connect(Duration::from_secs(5))
            .await
    }
}

/// `request`, failed with a timeout error once `limit` has passed.
async fn bounded<T>(
    limit: Duration,
    request: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(limit, request).await.unwrap_or_else(|_| {
        Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "redis cluster request timed out",
        )))
    })
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        count(1);
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster { conn, limit } => Box::pin(bounded(*limit, conn.req_packed_command(cmd))),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count_: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => {
                count(1);
                conn.req_packed_commands(pipeline, offset, count_)
            }
            Self::Cluster { conn, limit } => {
                let slots = pipeline_slots(pipeline);
                let first = slots.first().copied().flatten();
                let one_slot = slots.iter().all(|s| s.is_none() || *s == first);
                if pipeline.is_transaction() || one_slot {
                    count(1);
                    return Box::pin(bounded(
                        *limit,
                        conn.req_packed_commands(pipeline, offset, count_),
                    ));
                }
                Box::pin(bounded(*limit, split_by_slot(conn.clone(), pipeline, slots)))
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster { conn, .. } => conn.get_db(),
        }
    }
}

/// Sends a plain pipeline whose commands span several slots as one pipeline per slot, concurrently, and returns
/// the replies in the order of the original commands. (Commands without a key go with the first slot's.)
async fn split_by_slot(
    conn: ClusterConnection,
    pipeline: &Pipeline,
    slots: Vec<Option<Slot>>,
) -> redis::RedisResult<Vec<Value>> {
    let default = slots.iter().flatten().next().copied();
    let mut groups: Vec<(Option<Slot>, Pipeline, Vec<usize>)> = Vec::new();
    let mut index: HashMap<Option<Slot>, usize> = HashMap::new();
    for (i, (cmd, slot)) in pipeline.cmd_iter().zip(slots).enumerate() {
        let slot = slot.or(default);
        let g = *index.entry(slot).or_insert_with(|| {
            groups.push((slot, redis::pipe(), Vec::new()));
            groups.len() - 1
        });
        groups[g].1.add_command(cmd.clone());
        groups[g].2.push(i);
    }
    count(groups.len() as u64);
    let replies = futures::future::join_all(groups.iter().map(|(_, pipe, _)| {
        let mut conn = conn.clone();
        async move { conn.req_packed_commands(pipe, 0, pipe.len()).await }
    }))
    .await;
    let mut out = vec![Value::Nil; pipeline.len()];
    for ((_, _, positions), reply) in groups.iter().zip(replies) {
        for (position, value) in positions.iter().zip(reply?) {
            out[*position] = value;
        }
    }
    Ok(out)
}

/// The slot of each command of `pipeline` (`None` for a command without a key).
fn pipeline_slots(pipeline: &Pipeline) -> Vec<Option<Slot>> {
    pipeline.cmd_iter().map(command_slot).collect()
}

/// The hash slot a command's (first) key maps to: the key follows the command name, except for scripts (after the
/// key count) and stream reads (after `STREAMS`). Good for the commands the store pipelines.
fn command_slot(cmd: &Cmd) -> Option<Slot> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(bytes) => Some(bytes),
            _ => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    let key = match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" => {
            let keys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            if keys == 0 {
                return None;
            }
            args.get(3)?
        }
        b"XREAD" | b"XREADGROUP" => {
            let at = args.iter().position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?;
            args.get(at + 1)?
        }
        b"PING" | b"INFO" | b"TIME" | b"MULTI" | b"EXEC" | b"SCRIPT" => return None,
        _ => args.get(1)?,
    };
    Some(Slot::for_key(key))
}

/// Groups `keys` (with what goes along with each) by hash slot, in order of first appearance: each group can go
/// into one multi-key command on a cluster.
pub(crate) fn by_slot<T>(items: impl IntoIterator<Item = (String, T)>) -> Vec<Vec<(String, T)>> {
    let mut groups: Vec<Vec<(String, T)>> = Vec::new();
    let mut index: HashMap<Slot, usize> = HashMap::new();
    for (key, value) in items {
        let g = *index.entry(Slot::for_key(&key)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push((key, value));
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_placed_by_their_key_or_hash_tag() {
        let slot = |cmd: &Cmd| command_slot(cmd);
        let tagged = Some(Slot::for_key("{p3}"));
        assert_eq!(slot(redis::cmd("HGETALL").arg("g:{p3}:batch:x")), tagged);
        assert_eq!(
            slot(
                redis::cmd("EVALSHA")
                    .arg("abc")
                    .arg(2)
                    .arg("g:{p3}:a")
                    .arg("g:{p3}:b")
            ),
            tagged
        );
        assert_eq!(
            slot(
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg("g")
                    .arg("c")
                    .arg("STREAMS")
                    .arg("g:{p3}:submit")
                    .arg(">")
            ),
            tagged
        );
        assert_eq!(slot(&redis::cmd("PING")), None);
        assert_ne!(slot(redis::cmd("ZCARD").arg("g:{p4}:polls")), tagged);
    }

    #[test]
    fn a_pipeline_over_partitions_spans_slots_and_groups_keep_order() {
        let mut pipe = redis::pipe();
        for p in 0..4 {
            pipe.zcard(format!("g:{{p{p}}}:polls"));
        }
        let slots = pipeline_slots(&pipe);
        assert_eq!(slots.len(), 4);
        assert!(slots.iter().all(Option::is_some));
        assert_ne!(slots[0], slots[1]);
        let groups = by_slot(["a:{p1}:x", "a:{p2}:x", "a:{p1}:y"].map(|k| (k.to_owned(), ())));
        let keys: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(|(k, _)| k.as_str()).collect())
            .collect();
        assert_eq!(keys, [vec!["a:{p1}:x", "a:{p1}:y"], vec!["a:{p2}:x"]]);
    }

    /// The only test of this binary that talks to Redis, so the process-wide count moves by its commands alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn round_trips_count_requests_and_split_pipelines_keep_their_order() {
        use redis::AsyncCommands;

        let server = gantry_testkit::RedisServer::start().expect("redis-server");
        let cluster = gantry_testkit::RedisCluster::start().expect("redis cluster");
        for (mode, urls, split) in [
            (RedisMode::Standalone, server.url(), 1),
            (RedisMode::Cluster, cluster.urls(), 4),
        ] {
            let mut conn = Connection::open(mode, &urls).await.expect("connect");
            let keys: Vec<String> = (0..4).map(|p| format!("t:{{p{p}}}:n")).collect();
            let before = round_trips();
            for (i, key) in keys.iter().enumerate() {
                let _: () = conn.set(key, i).await.expect("set");
            }
            assert_eq!(round_trips() - before, 4, "{mode:?}: one per command");

            let before = round_trips();
            let mut pipe = redis::pipe();
            for key in keys.iter().rev() {
                pipe.get(key);
            }
            let values: Vec<u32> = pipe.query_async(&mut conn).await.expect("pipeline");
            assert_eq!(values, [3, 2, 1, 0], "{mode:?}: replies in the order asked");
            assert_eq!(
                round_trips() - before,
                split,
                "{mode:?}: one per pipeline (per slot on a cluster)"
            );

            let before = round_trips();
            let (a, b): (u32, u32) = redis::pipe()
                .atomic()
                .incr(&keys[1], 1)
                .get(&keys[1])
                .query_async(&mut conn)
                .await
                .expect("transaction");
            assert_eq!((a, b), (2, 2));
            assert_eq!(round_trips() - before, 1, "{mode:?}: one per transaction");
        }
    }
}
