//! Test and dev support: a private `redis-server` on a free loopback port (the way redis-rs tests itself), a
//! private three-master Redis Cluster, and waiting on a condition with a deadline instead of sleeping.

mod cluster;
mod tls;

pub use cluster::RedisCluster;
pub use tls::TestCerts;

use std::{
    future::Future,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

/// A `redis-server` child process, killed (and its directory removed) on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    /// The port that speaks TLS only, when started with [`RedisServer::start_tls`].
    tls_port: Option<u16>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port with persistence off and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// Like [`RedisServer::start`] with extra `--name value` arguments.
    pub fn start_with(extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_on(extra, None)
    }

    /// A server that also listens for TLS on a port of its own ([`RedisServer::tls_url`]), with `certs`' server
    /// certificate, and asks TLS clients for a certificate signed by `certs`' CA (Redis's default).
    pub fn start_tls(certs: &TestCerts) -> anyhow::Result<Self> {
        Self::start_on(&[], Some(certs))
    }

    fn start_on(extra: &[&str], tls: Option<&TestCerts>) -> anyhow::Result<Self> {
        let mut last_error = None;
        // A port picked free can be taken before redis binds it; try a few.
        for _ in 0..5 {
            let port = free_port()?;
            let tls_port = tls.map(|_| free_port()).transpose()?;
            let dir = std::env::temp_dir().join(format!("gantry-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).context("creating the redis directory")?;
            let mut args: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
            if let (Some(certs), Some(tls_port)) = (tls, tls_port) {
                args.extend(certs.redis_server_args());
                args.extend(["--tls-port".to_owned(), tls_port.to_string()]);
            }
            let mut server = Self {
                child: spawn(port, &dir, &args)?,
                port,
                dir,
                args,
                tls_port,
            };
            match server.wait_ready(Duration::from_secs(10)) {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
            let _ = server.child.kill();
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    /// A server that persists every write (`appendonly yes`, `appendfsync always`), for crash tests.
    pub fn start_durable() -> anyhow::Result<Self> {
        Self::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and directory (so it reloads what it persisted).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.child = spawn(self.port, &self.dir, &self.args)?;
        self.wait_ready(Duration::from_secs(30))
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("redis-server exited early with {status}");
            }
            if ping(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("redis-server did not answer within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `rediss://127.0.0.1:<TLS port>`, for a server started with [`RedisServer::start_tls`].
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port.map(|port| format!("rediss://127.0.0.1:{port}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Redis settings Gantry recommends (see the README's Scaling section): a task hash holds the task's spec (prompt
/// and options, often a few hundred bytes), and keeping such hashes in Redis's compact listpack encoding rather
/// than a hash table roughly halves the memory of a task; and a new stream node preallocates
/// `stream-node-max-bytes` (4 KB by default), which every batch's event stream pays whatever it holds (1 KB took
/// 15 % off the memory per task of 10-task batches in `just bench`).
pub const RECOMMENDED_REDIS_SETTINGS: [&str; 4] = [
    "--hash-max-listpack-value",
    "1024",
    "--stream-node-max-bytes",
    "1024",
];

pub(crate) fn spawn(port: u16, dir: &std::path::Path, extra: &[String]) -> anyhow::Result<Child> {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(RECOMMENDED_REDIS_SETTINGS)
        .args(["--dir", &dir.to_string_lossy()])
        .args(if extra.iter().any(|a| a == "--appendonly") {
            &[][..]
        } else {
            &["--appendonly", "no"][..]
        })
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting redis-server (is it installed? `apt-get install redis-server`)")
}

pub(crate) fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// The calls per command in the text of `INFO commandstats` (or a whole `INFO`), by command name (`evalsha`,
/// `hset`, `client|list`, ...). Redis 7 counts every `redis.call` a script makes as well.
pub fn command_calls(info: &str) -> std::collections::BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    Ok(listener.local_addr()?.port())
}

/// Polls `check` until it yields `Some`, or fails after `timeout` with `what` in the message.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
