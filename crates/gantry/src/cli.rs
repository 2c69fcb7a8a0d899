//! Command-line parsing and wiring: loads the configuration, sets up logging, runs what was asked.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gantry_core::{
    store::{Grant, MAX_GRANT},
    Config, Store,
};
use gantry_telemetry::{
    metrics::{announce, Role},
    LogFormat,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Gantry: batches of AI video generations, one service per command.
#[derive(Debug, Parser)]
#[command(name = "gantry", version, about, propagate_version = true)]
pub struct Cli {
    /// A TOML file of settings, layered over the defaults (environment variables GANTRY__SECTION__KEY override it).
    #[arg(long, global = true, env = "GANTRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long, global = true)]
    pub print_config: bool,
    /// Log lines as `json` or `pretty` (overrides `log.format`); the level comes from `RUST_LOG`.
    #[arg(long, global = true, value_parser = ["json", "pretty"])]
    pub log_format: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The REST gateway.
    Gateway,
    /// Creates tasks at the provider.
    Submitter,
    /// Polls running tasks.
    Poller,
    /// Settles finished batches.
    Settlement,
    /// The provider simulator (speaks the Grsai and Seedance APIs; faults from `[sim.faults]`).
    Sim,
    /// Everything in one process, with a private redis-server when `redis.url` is unset.
    Dev,
    /// Runs the local stack, submits a six-shot batch and shows it through to settlement.
    Demo,
    /// Operator commands against Redis.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Credits.
    Credits {
        #[command(subcommand)]
        command: CreditsCommand,
    },
    /// Checks every tenant's books (balance + frozen + charged == granted, the ledger agrees, every finished
    /// batch settled exactly once); exits non-zero on any violation.
    VerifyLedger,
    /// Messages that could not be processed (malformed, or delivered `streams.max_deliveries` times).
    DeadLetters {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// Lists every dead letter with its handle, source stream, reason and fields.
    List,
    /// Puts a dead letter back on its stream, as a new message.
    Replay { handle: String },
    /// Deletes a dead letter.
    Drop { handle: String },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Creates a tenant and prints its id and API key (shown once).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 0)]
        credits: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum CreditsCommand {
    /// Grants credits to a tenant.
    Grant {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        amount: u64,
        #[arg(long, default_value = "grant")]
        reason: String,
    },
}

/// Loads the configuration, builds the async runtime it asks for and runs the command line on it.
pub fn main(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    runtime_with(config.runtime.worker_threads)?.block_on(run(cli, config))
}

/// An async runtime with `worker_threads` workers: one per core for 0, and for 1 a current-thread runtime (the
/// command's own future and every task it spawns share the main thread, so no message wakes another thread).
fn runtime_with(worker_threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    Ok(builder.enable_all().build()?)
}

/// Runs a parsed command line with its configuration.
async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    if cli.print_config {
        print!("{}", config.to_redacted_toml());
        return Ok(());
    }
    let format = match cli.log_format.as_deref() {
        Some("json") => LogFormat::Json,
        Some(_) => LogFormat::Pretty,
        None => match config.log.format {
            gantry_core::config::LogFormat::Json => LogFormat::Json,
            gantry_core::config::LogFormat::Pretty => LogFormat::Pretty,
        },
    };
    let telemetry = gantry_telemetry::init(cli.command.service_name(), format);
    let result = run_command(config, cli.command).await;
    // Flush the last spans and metrics (a blocking call: keep it off the runtime's workers).
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    result
}

impl Command {
    /// The `service.name` of a process running this command.
    fn service_name(&self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Submitter => "submitter",
            Self::Poller => "poller",
            Self::Settlement => "settlement",
            Self::Sim => "sim",
            Self::Dev => "gantry-dev",
            Self::Demo => "gantry-demo",
            Self::Admin { .. } => "gantry-admin",
        }
    }
}

async fn run_command(config: Config, command: Command) -> anyhow::Result<()> {
    if matches!(
        command,
        Command::Gateway | Command::Submitter | Command::Poller | Command::Settlement
    ) {
        config.check_deployment_secrets()?;
    }
    match command {
        Command::Gateway => {
            announce(Role::Gateway);
            let listeners = gantry_gateway::Listeners::bind(&config).await?;
            gantry_gateway::run(&config, listeners, shutdown_signal()).await
        }
        Command::Submitter => {
            announce(Role::Submitter);
            let shutdown = shutdown_signal();
            serve_metrics(&config, &shutdown).await?;
            gantry_submitter::run(&config, shutdown).await
        }
        Command::Poller => {
            announce(Role::Poller);
            let shutdown = shutdown_signal();
            serve_metrics(&config, &shutdown).await?;
            gantry_poller::run(&config, shutdown).await
        }
        Command::Settlement => {
            announce(Role::Settlement);
            let shutdown = shutdown_signal();
            serve_metrics(&config, &shutdown).await?;
            gantry_settlement::run(&config, shutdown).await
        }
        Command::Sim => run_sim(&config).await,
        Command::Dev => {
            let stack = crate::dev::DevStack::start(config).await?;
            println!("gateway    {}", stack.gateway_url());
            println!("admin      {} (admin API, /metrics)", stack.admin_url());
            println!("simulator  {}", stack.sim.base_url());
            if let Some(url) = &stack.config.redis.url {
                println!("redis      {}", url.expose());
            }
            stack.serve_until(shutdown_signal()).await
        }
        Command::Demo => {
            // The demo draws progress bars on the terminal; keep the services' logs to warnings.
            crate::demo::run(config).await
        }
        Command::Admin { command } => admin(&config, command).await,
    }
}

/// Serves `GET /metrics` on `telemetry.metrics_listen`, when it is set, until `shutdown`.
async fn serve_metrics(config: &Config, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let Some(addr) = config.telemetry.metrics_listen else {
        return Ok(());
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding telemetry.metrics_listen = {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics");
    tokio::spawn(gantry_telemetry::serve_metrics(listener, shutdown.clone()));
    Ok(())
}

async fn run_sim(config: &Config) -> anyhow::Result<()> {
    let sim = crate::dev::sim_config(config)?;
    let listener = TcpListener::bind(sim.listen)
        .await
        .with_context(|| format!("binding sim.listen = {}", sim.listen))?;
    gantry_sim::run(sim, listener, shutdown_signal()).await?;
    Ok(())
}

async fn admin(config: &Config, command: AdminCommand) -> anyhow::Result<()> {
    let store = Store::from_config(config).await?;
    match command {
        AdminCommand::Tenant {
            command: TenantCommand::Create { name, credits },
        } => {
            let (tenant_id, api_key) = store.create_tenant(&name, credits).await?;
            println!("tenant_id: {tenant_id}");
            println!("api_key:   {api_key}   (shown once: store it now)");
        }
        AdminCommand::Credits {
            command:
                CreditsCommand::Grant {
                    tenant,
                    amount,
                    reason,
                },
        } => {
            anyhow::ensure!(
                (1..=MAX_GRANT).contains(&amount),
                "--amount must be from 1 to {MAX_GRANT}"
            );
            match store.grant(&tenant, amount, &reason).await? {
                Grant::Granted { balance } => println!("balance: {balance}"),
                Grant::NoTenant => anyhow::bail!("no tenant {tenant}"),
                Grant::TooMuch => anyhow::bail!("tenant {tenant} cannot hold that many credits"),
            }
        }
        AdminCommand::DeadLetters { command } => dead_letters(&store, command).await?,
        AdminCommand::VerifyLedger => {
            let (mut tenants, mut violations) = (0, 0);
            for tenant in store.tenant_ids().await? {
                let audit = store.audit_tenant(&tenant).await?;
                tenants += 1;
                violations += audit.violations.len();
                for violation in &audit.violations {
                    println!("VIOLATION tenant {tenant}: {violation}");
                }
            }
            println!("verify-ledger: {tenants} tenants, {violations} violations");
            anyhow::ensure!(violations == 0, "the ledger has {violations} violation(s)");
        }
    }
    Ok(())
}

async fn dead_letters(store: &Store, command: DeadLetterCommand) -> anyhow::Result<()> {
    match command {
        DeadLetterCommand::List => {
            let letters = store.dead_letters().await?;
            for letter in &letters {
                let fields: Vec<String> = letter.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "{}  {}  {}  [{}]",
                    letter.handle,
                    letter.source,
                    letter.error,
                    fields.join(" ")
                );
            }
            println!("{} dead letter(s)", letters.len());
        }
        DeadLetterCommand::Replay { handle } => {
            anyhow::ensure!(
                store.replay_dead_letter(&handle).await?,
                "no dead letter {handle}"
            );
            println!("replayed {handle}");
        }
        DeadLetterCommand::Drop { handle } => {
            anyhow::ensure!(store.drop_dead_letter(&handle).await?, "no dead letter {handle}");
            println!("dropped {handle}");
        }
    }
    Ok(())
}

/// A token cancelled on Ctrl+C or SIGTERM.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    use super::runtime_with;

    #[test]
    fn one_worker_thread_is_a_current_thread_runtime() {
        let flavor = |n| runtime_with(n).expect("a runtime").handle().runtime_flavor();
        assert_eq!(flavor(1), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(0), RuntimeFlavor::MultiThread);
        assert_eq!(flavor(3), RuntimeFlavor::MultiThread);
        let two = runtime_with(2).expect("a runtime");
        assert_eq!(two.metrics().num_workers(), 2);
    }
}
