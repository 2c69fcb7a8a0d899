//! The local stack behind `gantry dev` and `just demo`: a private `redis-server` (when no `redis.url` is
//! configured; a private three-node Redis Cluster when `redis.mode = cluster`), the provider simulator, and all
//! four services in one process.

use std::net::SocketAddr;

use anyhow::Context;
use gantry_core::{
    config::{RedisMode, Secret},
    Config,
};
use gantry_sim::{SimConfig, SimHandle};
use gantry_telemetry::metrics::{announce, Role};
use gantry_testkit::{RedisCluster, RedisServer};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The simulator settings of a Gantry configuration.
pub fn sim_config(config: &Config) -> anyhow::Result<SimConfig> {
    let faults = toml::Value::Table(config.sim.faults.clone())
        .try_into()
        .map_err(|e| anyhow::anyhow!("configuration key `sim.faults`: {e}"))?;
    Ok(SimConfig {
        listen: config.sim.listen,
        api_key: config.sim.api_key.expose().to_owned(),
        task_duration_ms: config.sim.task_duration_ms,
        duration_jitter_ms: config.sim.duration_jitter_ms,
        poll_latency_ms: config.sim.poll_latency_ms,
        faults,
        ..SimConfig::default()
    })
}

/// A running local stack; dropping it stops Redis (if private) and the simulator.
pub struct DevStack {
    pub config: Config,
    pub gateway_addr: SocketAddr,
    /// The admin API and `/metrics`.
    pub admin_addr: SocketAddr,
    pub sim: SimHandle,
    shutdown: CancellationToken,
    services: JoinSet<(&'static str, anyhow::Result<()>)>,
    _redis: Option<RedisServer>,
    _redis_cluster: Option<RedisCluster>,
}

impl DevStack {
    /// Starts everything. The gateway and simulator bind their configured addresses (port 0 is fine); the
    /// provider client is pointed at the simulator.
    pub async fn start(mut config: Config) -> anyhow::Result<Self> {
        let (redis, redis_cluster) = match (&config.redis.url, config.redis.mode) {
            (Some(_), _) => (None, None),
            (None, RedisMode::Standalone) => {
                let server = RedisServer::start().context("starting a private redis-server")?;
                config.redis.url = Some(Secret::new(server.url()));
                (Some(server), None)
            }
            (None, RedisMode::Cluster) => {
                let cluster = RedisCluster::start().context("starting a private three-node Redis Cluster")?;
                config.redis.url = Some(Secret::new(cluster.urls()));
                (None, Some(cluster))
            }
        };
        let sim = gantry_sim::spawn(sim_config(&config)?)
            .await
            .with_context(|| format!("starting the simulator on {}", config.sim.listen))?;
        config.provider.grsai.base_url = sim.base_url();
        config.provider.grsai.api_key = config.sim.api_key.clone();
        config.provider.seedance.base_url = sim.base_url();
        config.provider.seedance.api_key = config.sim.api_key.clone();
        // The simulator speaks HTTP/2 without negotiation.
        config.provider.grsai.h2c = true;
        config.provider.seedance.h2c = true;

        let listeners = gantry_gateway::Listeners::bind(&config).await?;
        let gateway_addr = listeners.public.local_addr()?;
        let admin_addr = listeners.admin.local_addr()?;
        let shutdown = CancellationToken::new();
        for role in [Role::Gateway, Role::Submitter, Role::Poller, Role::Settlement] {
            announce(role);
        }
        let mut services = JoinSet::new();
        let (c, s) = (config.clone(), shutdown.clone());
        services.spawn(async move { ("gateway", gantry_gateway::run(&c, listeners, s).await) });
        let (c, s) = (config.clone(), shutdown.clone());
        services.spawn(async move { ("submitter", gantry_submitter::run(&c, s).await) });
        let (c, s) = (config.clone(), shutdown.clone());
        services.spawn(async move { ("poller", gantry_poller::run(&c, s).await) });
        let (c, s) = (config.clone(), shutdown.clone());
        services.spawn(async move { ("settlement", gantry_settlement::run(&c, s).await) });
        Ok(Self {
            config,
            gateway_addr,
            admin_addr,
            sim,
            shutdown,
            services,
            _redis: redis,
            _redis_cluster: redis_cluster,
        })
    }

    /// `http://<gateway address>`.
    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.gateway_addr)
    }

    /// `http://<admin address>`: the admin API and `/metrics`.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    /// Waits until a service stops on its own (an error) or `stop` is cancelled, then stops everything.
    pub async fn serve_until(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        let first = tokio::select! {
            _ = stop.cancelled() => None,
            done = self.services.join_next() => done,
        };
        self.shutdown().await?;
        match first {
            Some(Ok((name, Err(e)))) => Err(e.context(format!("{name} stopped"))),
            Some(Ok((name, Ok(())))) => anyhow::bail!("{name} stopped unexpectedly"),
            Some(Err(e)) => Err(anyhow::anyhow!("a service panicked: {e}")),
            None => Ok(()),
        }
    }

    /// The services that have stopped by themselves since the last call (none should while the stack runs).
    pub fn stopped_services(&mut self) -> Vec<String> {
        let mut stopped = Vec::new();
        while let Some(done) = self.services.try_join_next() {
            stopped.push(match done {
                Ok((name, Ok(()))) => name.to_owned(),
                Ok((name, Err(e))) => format!("{name}: {e:#}"),
                Err(e) => format!("panicked: {e}"),
            });
        }
        stopped
    }

    /// Stops every service and waits for them.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        while let Some(done) = self.services.join_next().await {
            if let Ok((name, Err(e))) = done {
                tracing::error!(service = name, error = %e, "service failed");
            }
        }
        Ok(())
    }
}
