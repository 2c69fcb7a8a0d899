//! The harness's own window on Redis: `INFO` snapshots, the cheap "how many batches are still open" count, and a
//! tally of every command the harness itself sends, so they can be taken out of the system's figures.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use gantry_core::keys::Keys;
use redis::aio::MultiplexedConnection;

/// `INFO` as numbers: `cmdstat_*` calls by command, and every other numeric field.
#[derive(Debug, Clone, Default)]
pub struct Info {
    /// Calls by command name (`evalsha`, `hset`, ...), Lua's `redis.call`s included (Redis 7 counts them).
    pub calls: BTreeMap<String, u64>,
    pub fields: BTreeMap<String, f64>,
    /// `db0:keys=..,expires=..`: (keys, keys with a time to live).
    pub keyspace: (u64, u64),
    /// `redis_version`.
    pub version: Option<String>,
}

impl Info {
    pub fn parse(text: &str) -> Self {
        let mut info = Self {
            calls: gantry_testkit::command_calls(text),
            ..Self::default()
        };
        for line in text.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if name.starts_with("cmdstat_") {
                continue;
            } else if name == "db0" {
                let field = |key: &str| {
                    value
                        .split(',')
                        .find_map(|kv| kv.strip_prefix(key))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                info.keyspace = (field("keys="), field("expires="));
            } else if name == "redis_version" {
                info.version = Some(value.trim().to_owned());
            } else if let Ok(number) = value.trim().parse::<f64>() {
                info.fields.insert(name.to_owned(), number);
            }
        }
        info
    }

    /// A numeric field, 0 when absent.
    pub fn get(&self, name: &str) -> f64 {
        self.fields.get(name).copied().unwrap_or(0.0)
    }

    /// `used_cpu_user + used_cpu_sys`, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.get("used_cpu_user") + self.get("used_cpu_sys")
    }
}

/// A connection of the harness's, counting what it sends.
pub struct Probe {
    conn: MultiplexedConnection,
    keys: Keys,
    /// Commands this probe sent since the last [`Probe::reset_tally`], by commandstats name.
    tally: BTreeMap<&'static str, u64>,
}

impl Probe {
    pub async fn connect(url: &str, keys: Keys) -> anyhow::Result<Self> {
        let mut conn = redis::Client::open(url)?
            .get_multiplexed_async_connection()
            .await
            .context("connecting the harness to redis")?;
        // Redis may stall for a while on a loaded machine; the client's 500 ms default would end the run.
        conn.set_response_timeout(Duration::from_secs(30));
        Ok(Self {
            conn,
            keys,
            tally: BTreeMap::new(),
        })
    }

    fn count(&mut self, command: &'static str, n: u64) {
        *self.tally.entry(command).or_default() += n;
    }

    /// Forgets the tally (call it right after the "before" snapshot, which Redis counts once it has answered).
    pub fn reset_tally(&mut self) {
        self.tally.clear();
        self.count("info", 1);
    }

    pub fn tally(&self) -> &BTreeMap<&'static str, u64> {
        &self.tally
    }

    /// `INFO <section>` (`all`, `memory`, ...).
    pub async fn info(&mut self, section: &str) -> anyhow::Result<Info> {
        self.count("info", 1);
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut self.conn)
            .await?;
        Ok(Info::parse(&text))
    }

    /// Batches accepted and not yet settled (the sum of the partitions' open-batch ZCARDs), batches settled and
    /// waiting for their retention to end (the sum of the `expiring` ZCARDs) and `used_memory`, in one round trip.
    pub async fn open_batches_and_memory(&mut self) -> anyhow::Result<Sample> {
        let partitions = self.keys.partitions();
        let mut pipe = redis::pipe();
        for p in 0..partitions {
            pipe.zcard(self.keys.open_batches(p));
            pipe.zcard(self.keys.expiring_batches(p));
        }
        pipe.cmd("INFO").arg("memory");
        self.count("zcard", 2 * u64::from(partitions));
        self.count("info", 1);
        let mut values: Vec<redis::Value> = pipe.query_async(&mut self.conn).await?;
        let memory: String = redis::from_redis_value(values.pop().context("an INFO reply")?)?;
        let mut sample = Sample {
            used_memory: Info::parse(&memory).get("used_memory"),
            ..Sample::default()
        };
        for pair in values.chunks(2) {
            sample.open += redis::from_redis_value::<u64>(pair[0].clone())?;
            sample.retained += redis::from_redis_value::<u64>(pair[1].clone())?;
        }
        Ok(sample)
    }

    /// The connection, for reads after the measured interval (they are not tallied).
    pub fn conn(&mut self) -> &mut MultiplexedConnection {
        &mut self.conn
    }
}

/// Per-command calls between two snapshots, less the harness's own.
pub fn command_delta(
    before: &Info,
    after: &Info,
    own: &BTreeMap<&'static str, u64>,
) -> BTreeMap<String, u64> {
    after
        .calls
        .iter()
        .map(|(name, calls)| {
            let mut spent = calls.saturating_sub(before.calls.get(name).copied().unwrap_or(0));
            spent = spent.saturating_sub(own.get(name.as_str()).copied().unwrap_or(0));
            (name.clone(), spent)
        })
        .filter(|(_, spent)| *spent > 0)
        .collect()
}

/// One look at the work Redis holds.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sample {
    /// Batches accepted and not yet settled.
    pub open: u64,
    /// Batches settled and kept until their retention ends.
    pub retained: u64,
    pub used_memory: f64,
}
