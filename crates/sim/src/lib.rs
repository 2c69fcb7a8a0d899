//! A simulator of the provider APIs Gantry uses, as a real HTTP server: Grsai and Seedance (BytePlus ModelArk).
//!
//! It speaks the Grsai endpoints (`/v1/video/sora-video`, `/v1/video/veo`, `/v1/draw/result`) and the Seedance ones
//! (`POST /api/v3/contents/generations/tasks`, `GET` and `DELETE .../tasks/{id}`) on the same port, with the same
//! key and one task store, and finishes each task a configurable time after it was created. Markers in the prompt
//! force an outcome, whichever the API:
//!
//! | marker | effect |
//! | --- | --- |
//! | `[sim:reject]` | the create call answers HTTP 400 |
//! | `[sim:fail]` | the task fails (Grsai `failure_reason: "error"`) |
//! | `[sim:moderation]` | the task fails for input moderation |
//! | `[sim:output-moderation]` | the task fails for output moderation |
//! | `[sim:never]` | the task runs forever, progress capped at 99 |
//!
//! A create with a webhook URL (Grsai `webHook`, Seedance `callback_url`) gets callbacks (module `webhook`).
//! [`FaultConfig`] makes the provider flaky: 429s, 5xx, latency, hangs, malformed answers, a concurrency limit,
//! tasks that never finish, lost, doubled and reordered callbacks.
//!
//! Besides the API it serves, without auth, for tests: `GET /sim/stats`, `POST /sim/reset`, `GET`/`POST /sim/config`
//! (the current [`FaultConfig`]; a POST replaces it and answers 204), and tiny placeholder files under
//! `/videos/<id>.mp4` and `/frames/<id>-last.jpg`.
//!
//! [`run`] serves on a listener until a [`CancellationToken`] is cancelled; [`spawn`] does the same in the background
//! and hands back a [`SimHandle`] for tests.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    task::{JoinHandle, JoinSet},
};
use tokio_util::sync::CancellationToken;

mod api;
mod faults;
mod seedance;
mod state;
mod stats;
mod task;
mod webhook;
mod wire;

pub use faults::FaultConfig;
pub use stats::{SimStats, SimTaskInfo};

use state::Sim;

/// Settings of one simulator instance.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct SimConfig {
    /// Where [`spawn`] binds; port 0 picks a free port. Ignored by [`run`], which is handed a listener.
    pub listen: SocketAddr,
    /// The key requests must present as `Authorization: Bearer <api_key>`.
    pub api_key: String,
    /// How long a task takes to finish after it was created.
    pub task_duration_ms: u64,
    /// A uniform random extra `0..=duration_jitter_ms` added to each task's duration.
    pub duration_jitter_ms: u64,
    /// How long each `/v1/draw/result` call waits before answering (lets tests observe concurrent polls).
    pub poll_latency_ms: u64,
    /// Base of the fake result URLs; `None` means `http://<bound address>` (loopback if bound to `0.0.0.0`).
    pub public_base_url: Option<String>,
    /// The faults injected from the start; `POST /sim/config` or [`SimHandle::set_faults`] replace them later.
    pub faults: FaultConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            api_key: "sim-key".to_owned(),
            task_duration_ms: 3000,
            duration_jitter_ms: 0,
            poll_latency_ms: 0,
            public_base_url: None,
            faults: FaultConfig::default(),
        }
    }
}

/// Runs the simulator on `listener` until `shutdown` is cancelled.
///
/// Fails with [`io::ErrorKind::InvalidInput`] when `config.faults` is invalid (see [`FaultConfig::validate`]).
pub async fn run(config: SimConfig, listener: TcpListener, shutdown: CancellationToken) -> io::Result<()> {
    let sim = Arc::new(new_sim(config, listener.local_addr()?, shutdown.clone())?);
    serve(sim, listener, shutdown).await
}

/// Binds `config.listen` (port 0 allowed) and runs the simulator in the background on the current tokio runtime.
///
/// Fails with [`io::ErrorKind::InvalidInput`] when `config.faults` is invalid (see [`FaultConfig::validate`]).
pub async fn spawn(config: SimConfig) -> io::Result<SimHandle> {
    config
        .faults
        .validate()
        .map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?;
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let sim = Arc::new(new_sim(config, addr, shutdown.clone())?);
    let task = tokio::spawn(serve(Arc::clone(&sim), listener, shutdown.clone()));
    Ok(SimHandle {
        addr,
        sim,
        shutdown,
        task: Some(task),
    })
}

fn new_sim(config: SimConfig, addr: SocketAddr, shutdown: CancellationToken) -> io::Result<Sim> {
    Sim::new(config, addr, shutdown).map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))
}

/// Serves HTTP/1.1 and HTTP/2 (h2c, prior knowledge) like `axum::serve`, with room for more concurrent streams.
async fn serve(sim: Arc<Sim>, listener: TcpListener, shutdown: CancellationToken) -> io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, base_url = %sim.base_url(), "provider simulator listening");
    let app = api::router(sim);
    let mut connections = JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Answers are small and written as soon as they are ready: Nagle would only hold them back.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "setting TCP_NODELAY failed");
        }
        let service = TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(MAX_H2_STREAMS);
            let connection = builder.serve_connection(TokioIo::new(Unvectored(stream)), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
        while connections.try_join_next().is_some() {}
    }
    // Like `axum::serve`'s graceful shutdown: every connection finishes what it has started.
    while connections.join_next().await.is_some() {}
    tracing::info!(%addr, "provider simulator stopped");
    Ok(())
}

/// A connection that tells hyper and h2 it has no vectored writes. With vectored writes, h2 sends every DATA frame
/// of 256 bytes or more (a finished task's status answer) in a `writev` of its own; without, it copies frames of up to
/// 1 KB into its write buffer, so a burst of answers leaves in one write. On loopback each write costs the sender
/// the receiver's TCP path too.
struct Unvectored(TcpStream);

impl AsyncRead for Unvectored {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Unvectored {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Concurrent HTTP/2 streams a client may open on one connection. hyper's default is 200, fewer than one worker
/// keeps in flight in `just bench` (1,024): the rest waited in the client, and on 2,000 x 10 the stack ran 2-14 %
/// slower (four interleaved pairs, at 512 in flight). A real provider's limits are the fault config's business, not
/// the transport's.
const MAX_H2_STREAMS: u32 = 4096;

/// A simulator running in the background; dropping it stops the server.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    sim: Arc<Sim>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl SimHandle {
    /// The address the simulator is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, the base URL a Grsai or Seedance client should use (an unspecified IP such as `0.0.0.0` becomes
    /// loopback).
    pub fn base_url(&self) -> String {
        local_base_url(self.addr)
    }

    /// The API key the simulator expects.
    pub fn api_key(&self) -> &str {
        &self.sim.config().api_key
    }

    /// A snapshot of the counters and tasks, read in process.
    pub fn stats(&self) -> SimStats {
        self.sim.stats()
    }

    /// The faults in force, like `GET /sim/config`.
    pub fn faults(&self) -> FaultConfig {
        self.sim.faults().config().clone()
    }

    /// Replaces the faults (and reseeds their random draws), like `POST /sim/config`; refuses an invalid config
    /// with the reason.
    pub fn set_faults(&self, faults: FaultConfig) -> Result<(), String> {
        faults.validate()?;
        self.sim.set_faults(faults);
        Ok(())
    }

    /// Forgets all tasks and clears the counters, like `POST /sim/reset`.
    pub fn reset(&self) {
        self.sim.reset();
    }

    /// Stops the server and waits for in-flight requests to finish.
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `http://<addr>`, with an unspecified IP (`0.0.0.0`, `::`) replaced by loopback so the URL can be dialled.
pub(crate) fn local_base_url(mut addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        let loopback = match addr {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        addr.set_ip(loopback);
    }
    format!("http://{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_dials_loopback_for_unspecified_addresses() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("valid address");
        assert_eq!(local_base_url(addr("0.0.0.0:8090")), "http://127.0.0.1:8090");
        assert_eq!(local_base_url(addr("[::]:8090")), "http://[::1]:8090");
        assert_eq!(local_base_url(addr("10.0.0.2:1")), "http://10.0.0.2:1");
    }
}
