//! A private Redis Cluster for tests: three masters (no replicas) on free loopback ports, every slot assigned,
//! persistence off unless asked. Killed, and its directory removed, on drop.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::{free_port, ping, spawn};

/// One node of a [`RedisCluster`].
struct Node {
    port: u16,
    /// Its TLS port, in a cluster started with [`RedisCluster::start_tls`].
    tls_port: Option<u16>,
    dir: PathBuf,
    child: Child,
}

/// Three `redis-server --cluster-enabled yes` masters joined with `redis-cli --cluster create`.
pub struct RedisCluster {
    nodes: Vec<Node>,
    args: Vec<String>,
    /// With TLS: the certificate arguments of every node (each also gets a `--tls-port` of its own).
    tls: Option<Vec<String>>,
    root: PathBuf,
}

impl RedisCluster {
    /// Starts three masters and waits until the cluster serves every slot (`cluster_state:ok` on every node).
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// A cluster whose nodes persist every write (`appendonly yes`, `appendfsync always`), for crash tests: a node
    /// killed and restarted comes back with its data and its place in the cluster.
    pub fn start_durable() -> anyhow::Result<Self> {
        Self::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// Like [`RedisCluster::start`] with extra `--name value` arguments for every node.
    pub fn start_with(extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_on(extra, None)
    }

    /// A cluster whose nodes also listen for TLS, each on a port of its own ([`RedisCluster::tls_urls`]), with
    /// `certs`' server certificate, asking TLS clients for a certificate signed by `certs`' CA. The nodes talk to
    /// each other over TLS too (`tls-cluster yes`), so each tells a TLS client the other nodes' TLS ports.
    pub fn start_tls(certs: &crate::TestCerts) -> anyhow::Result<Self> {
        let mut tls = certs.redis_server_args();
        tls.extend(["--tls-cluster".to_owned(), "yes".to_owned()]);
        Self::start_on(&[], Some(tls))
    }

    fn start_on(extra: &[&str], tls: Option<Vec<String>>) -> anyhow::Result<Self> {
        let mut last_error = None;
        // A port picked free can be taken before redis binds it (or its cluster bus port, +10000): try again.
        for _ in 0..3 {
            match Self::try_start(extra, tls.clone()) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the redis cluster did not start")))
    }

    fn try_start(extra: &[&str], tls: Option<Vec<String>>) -> anyhow::Result<Self> {
        let root = std::env::temp_dir().join(format!(
            "gantry-redis-cluster-{}-{}",
            std::process::id(),
            free_port()?
        ));
        let mut args: Vec<String> = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let mut cluster = Self {
            nodes: Vec::new(),
            args,
            tls,
            root,
        };
        for _ in 0..3 {
            let port = cluster_port()?;
            let tls_port = match cluster.tls {
                Some(_) => Some(free_port()?),
                None => None,
            };
            let dir = cluster.root.join(port.to_string());
            std::fs::create_dir_all(&dir).context("creating a cluster node's directory")?;
            let child = spawn(port, &dir, &cluster.node_args(&dir, tls_port))?;
            cluster.nodes.push(Node {
                port,
                tls_port,
                dir,
                child,
            });
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_answers(i, Duration::from_secs(10))?;
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .context("running redis-cli --cluster create (is redis-cli installed?)")?;
        if !created.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&created.stdout),
                String::from_utf8_lossy(&created.stderr)
            );
        }
        cluster.wait_ok(Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn node_args(&self, dir: &std::path::Path, tls_port: Option<u16>) -> Vec<String> {
        let mut args = self.args.clone();
        args.push("--cluster-config-file".into());
        args.push(dir.join("nodes.conf").to_string_lossy().into_owned());
        if let (Some(tls), Some(port)) = (&self.tls, tls_port) {
            args.extend(tls.iter().cloned());
            args.push("--tls-port".into());
            args.push(port.to_string());
        }
        args
    }

    fn wait_answers(&mut self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let node = &mut self.nodes[i];
        loop {
            if let Some(status) = node.child.try_wait()? {
                bail!("cluster node on port {} exited early with {status}", node.port);
            }
            if ping(node.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "cluster node on port {} did not answer within {timeout:?}",
                    node.port
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until every node reports `cluster_state:ok` and knows every node.
    fn wait_ok(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self.nodes.iter().all(|n| {
                let info = cluster_info(n.port).unwrap_or_default();
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{}", self.nodes.len()))
            });
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the redis cluster was not ok within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The seed-node list Gantry takes in cluster mode: `redis://127.0.0.1:<port>,...`.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The seed-node list over TLS, for a cluster started with [`RedisCluster::start_tls`]:
    /// `rediss://127.0.0.1:<TLS port>,...`.
    pub fn tls_urls(&self) -> Option<String> {
        let urls: Option<Vec<String>> = self
            .nodes
            .iter()
            .map(|n| n.tls_port.map(|port| format!("rediss://127.0.0.1:{port}")))
            .collect();
        urls.map(|urls| urls.join(","))
    }

    /// The nodes' ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Kills node `i` at once (SIGKILL), as a crash would: its slots are unserved until it is back.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let _ = node.child.kill();
        let _ = node.child.wait();
    }

    /// Starts node `i` again on its port and directory (it reloads its cluster config, and what it persisted),
    /// and waits until the cluster is ok again.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        let args = self.node_args(&self.nodes[i].dir, self.nodes[i].tls_port);
        let node = &mut self.nodes[i];
        node.child = spawn(node.port, &node.dir, &args)?;
        self.wait_answers(i, Duration::from_secs(30))?;
        self.wait_ok(Duration::from_secs(30))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A free port whose cluster bus port (+10000) is free too.
fn cluster_port() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let port = free_port()?;
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port pair for a cluster node")
}

/// `CLUSTER INFO` of the node on `port`, over a plain socket.
fn cluster_info(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    stream.write_all(b"CLUSTER INFO\r\n").ok()?;
    // A bulk string: `$<len>\r\n<payload>\r\n`.
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        if let Some((header, rest)) = text.split_once("\r\n") {
            let len: usize = header.strip_prefix('$')?.parse().ok()?;
            if rest.len() >= len {
                return Some(rest[..len].to_owned());
            }
        }
    }
    None
}
