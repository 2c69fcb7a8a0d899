//! Gantry's configuration: one typed struct, loaded in layers (built-in defaults, an optional file, then
//! `GANTRY__SECTION__KEY` environment variables) and validated once at start-up.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::domain::{Model, ProviderName};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// The defaults, compiled in; every key is documented there.
pub const DEFAULTS: &str = include_str!("../config.default.toml");

/// A configuration error, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

/// A secret value: usable through [`Secret::expose`], never printed (Debug and Serialize redact it).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Config {
    pub redis: RedisConfig,
    pub gateway: GatewayConfig,
    pub submitter: SubmitterConfig,
    pub poller: PollerConfig,
    pub settlement: SettlementConfig,
    pub retry: RetryConfig,
    pub streams: StreamsConfig,
    pub sweeper: SweeperConfig,
    pub retention: RetentionConfig,
    pub shutdown: ShutdownConfig,
    pub runtime: RuntimeConfig,
    pub provider: ProviderConfig,
    pub sim: SimSection,
    pub prices: Prices,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RedisConfig {
    /// The server's URL; in cluster mode, a comma-separated list of seed node URLs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<Secret>,
    /// One server, or a Redis Cluster.
    pub mode: RedisMode,
    pub key_prefix: String,
    pub partitions: u32,
    /// TLS (`rediss://` URLs only): a PEM file of the CA that signed the servers' certificates. Unset: the system's
    /// roots and Mozilla's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// TLS: a PEM client certificate for servers that ask for one (`tls-auth-clients yes`, Redis's default);
    /// `tls_key_file` holds its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
}

/// How Gantry talks to Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One server (or a proxy in front of several): `redis.url` is its URL.
    #[default]
    Standalone,
    /// A Redis Cluster: `redis.url` lists seed nodes, comma-separated; commands follow their key's slot.
    Cluster,
}

impl RedisConfig {
    /// The URLs in `redis.url`: one in standalone mode, the seed nodes in cluster mode.
    pub fn urls(&self) -> Vec<&str> {
        self.url
            .as_ref()
            .map_or_else(Vec::new, |url| split_urls(url.expose()))
    }

    /// The CA and client certificate of `redis.tls_*_file`, read now; `None` when none is set (a `rediss://` URL
    /// then trusts the system's roots and Mozilla's, and sends no client certificate).
    pub fn tls_certificates(&self) -> Result<Option<redis::TlsCertificates>, ConfigError> {
        fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
            std::fs::read(path).map_err(|error| ConfigError::Invalid {
                key,
                message: format!("cannot read {}: {error}", path.display()),
            })
        }
        let root_cert = match &self.tls_ca_file {
            Some(path) => Some(read("redis.tls_ca_file", path)?),
            None => None,
        };
        let client_tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read("redis.tls_cert_file", cert)?,
                client_key: read("redis.tls_key_file", key)?,
            }),
            _ => None,
        };
        Ok(
            (root_cert.is_some() || client_tls.is_some()).then_some(redis::TlsCertificates {
                client_tls,
                root_cert,
            }),
        )
    }
}

/// The entries of a comma-separated URL list, trimmed, empty ones dropped.
pub fn split_urls(list: &str) -> Vec<&str> {
    list.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// The listener of the admin API and `/metrics`, apart from the public one (keep it off the internet).
    pub admin_listen: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<Secret>,
    pub max_tasks_per_batch: usize,
    pub max_body_bytes: usize,
    pub sse_keepalive_secs: u64,
    /// Live event streams a tenant may hold open at once, per gateway.
    pub sse_max_per_tenant: usize,
    /// How long one live event stream lasts at most (seconds); the client then resumes with `Last-Event-ID`.
    pub sse_max_secs: u64,
    pub idempotency_ttl_secs: u64,
    pub idempotency_lease_ms: u64,
    /// How long a client may take to send a request's headers (ms); then the connection is closed.
    pub header_read_timeout_ms: u64,
    /// How long a request may take until its answer starts (ms); then 503. Live event streams are not cut.
    pub request_timeout_ms: u64,
    /// Requests a gateway handles at once; past it, 503 at once.
    pub max_concurrent_requests: usize,
    /// Requests a second each tenant may make on average, over all gateways.
    pub tenant_rate_per_sec: f64,
    /// Requests a tenant may make at once before the average rate applies.
    pub tenant_burst: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SubmitterConfig {
    pub concurrency: usize,
    pub read_count: usize,
    pub block_ms: u64,
    pub lease_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PollerConfig {
    pub concurrency: usize,
    pub expected_sora2_ms: u64,
    pub expected_veo31_fast_ms: u64,
    pub expected_veo31_pro_ms: u64,
    pub interval_ms: u64,
    pub interval_factor: f64,
    pub max_interval_ms: u64,
    pub min_interval_ms: u64,
    pub deadline_ms: u64,
    pub webhook_poll_interval_ms: u64,
    pub claim_lease_ms: u64,
    pub idle_wait_ms: u64,
}

impl PollerConfig {
    /// How long a task of `model` is expected to take: when to poll it first.
    pub fn expected_ms(&self, model: Model) -> u64 {
        match model {
            Model::Sora2 => self.expected_sora2_ms,
            Model::Veo31Fast => self.expected_veo31_fast_ms,
            Model::Veo31Pro => self.expected_veo31_pro_ms,
        }
    }

    /// Sets the expected duration of every model at once (tests, demo).
    pub fn set_expected_ms(&mut self, ms: u64) {
        self.expected_sora2_ms = ms;
        self.expected_veo31_fast_ms = ms;
        self.expected_veo31_pro_ms = ms;
    }
}

/// Delivery limits of the streams.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StreamsConfig {
    pub max_deliveries: u32,
    pub dead_letter_maxlen: u64,
    pub claim_idle_ms: u64,
}

/// The sweeper that finishes what a crash could strand.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SweeperConfig {
    pub interval_ms: u64,
    pub reservation_grace_ms: u64,
}

/// How long finished work stays in Redis (see `gantry_core::retention`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RetentionConfig {
    /// Seconds a completed or cancelled batch (its hash, its tasks, its event stream, its entries in the tenant's
    /// batch list and settlement records) is kept after its settlement. The ledger is kept for ever.
    pub completed_secs: u64,
    /// How often the settlement services remove expired batches and trim the submit and settle streams (ms):
    /// consumed stream entries hold memory until then.
    pub interval_ms: u64,
}

/// The process's async runtime.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RuntimeConfig {
    /// Worker threads; 0 = one per core (tokio's default).
    pub worker_threads: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ShutdownConfig {
    pub grace_ms: u64,
}

/// The retry policy of provider calls.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RetryConfig {
    pub transient_base_ms: u64,
    pub rate_limited_base_ms: u64,
    pub factor: f64,
    pub cap_ms: u64,
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SettlementConfig {
    pub block_ms: u64,
    /// Batches settled at once by one settlement process.
    pub concurrency: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ProviderConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_base_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_secret: Option<Secret>,
    pub routes: Routes,
    pub limits: ProviderLimitsByName,
    pub grsai: GrsaiSection,
    pub seedance: SeedanceSection,
}

/// Which provider serves each model.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Routes {
    pub sora2: ProviderName,
    pub veo31_fast: ProviderName,
    pub veo31_pro: ProviderName,
}

impl Routes {
    pub fn provider_for(&self, model: Model) -> ProviderName {
        match model {
            Model::Sora2 => self.sora2,
            Model::Veo31Fast => self.veo31_fast,
            Model::Veo31Pro => self.veo31_pro,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ProviderLimitsByName {
    pub grsai: ProviderLimits,
    pub seedance: ProviderLimits,
}

impl ProviderLimitsByName {
    pub fn of(&self, provider: ProviderName) -> &ProviderLimits {
        match provider {
            ProviderName::Grsai => &self.grsai,
            ProviderName::Seedance => &self.seedance,
        }
    }
}

/// Limits one provider puts on all of Gantry together.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ProviderLimits {
    pub rate_per_sec: f64,
    pub burst: u32,
    pub max_in_flight: u32,
    pub create_share: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SeedanceSection {
    pub base_url: String,
    pub api_key: Secret,
    pub model: String,
    pub timeout_ms: u64,
    /// HTTP/2 without negotiation to a plain http:// base URL (see `config.default.toml`).
    #[serde(default)]
    pub h2c: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct GrsaiSection {
    pub base_url: String,
    pub api_key: Secret,
    pub timeout_ms: u64,
    /// HTTP/2 without negotiation to a plain http:// base URL (see `config.default.toml`).
    #[serde(default)]
    pub h2c: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SimSection {
    pub listen: SocketAddr,
    pub api_key: Secret,
    pub task_duration_ms: u64,
    pub duration_jitter_ms: u64,
    pub poll_latency_ms: u64,
    /// Fault injection, passed through to the simulator (which validates it); see `[sim.faults]` in the defaults.
    #[serde(default)]
    pub faults: toml::Table,
}

/// The price list, in credits.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Prices {
    pub sora2_per_second: u64,
    pub veo31_fast: u64,
    pub veo31_pro: u64,
}

impl Prices {
    /// The cost of one task of `model`; `duration` matters for Sora only.
    pub fn cost(&self, model: Model, duration: Option<u32>) -> u64 {
        match model {
            Model::Sora2 => self.sora2_per_second * u64::from(duration.unwrap_or(0)),
            Model::Veo31Fast => self.veo31_fast,
            Model::Veo31Pro => self.veo31_pro,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// Metrics pull and sampling; trace and metric export are configured by the standard `OTEL_*` variables.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TelemetryConfig {
    /// Where a worker (submitter, poller, settlement) serves `GET /metrics`; unset = not served. The gateway
    /// always serves it on its own port.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// How often stream, schedule and task-state gauges are read from Redis (ms).
    pub sample_interval_ms: u64,
}

impl Config {
    /// Loads defaults, then `file` if given, then `GANTRY__*` variables from the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment (tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder =
            config::Config::builder().add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("GANTRY__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("GANTRY")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        let config: Config = builder.build()?.try_deserialize()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    /// The stricter checks a deployed service runs (not `gantry dev` or `demo`): an admin token or callback secret,
    /// when set, has at least [`MIN_SECRET_BYTES`] bytes.
    pub fn check_deployment_secrets(&self) -> Result<(), ConfigError> {
        let secrets = [
            ("gateway.admin_token", &self.gateway.admin_token),
            ("provider.callback_secret", &self.provider.callback_secret),
        ];
        for (key, secret) in secrets {
            if secret
                .as_ref()
                .is_some_and(|s| s.expose().len() < MIN_SECRET_BYTES)
            {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!(
                        "must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`); short ones are only \
                         accepted by `gantry dev` and `gantry demo`"
                    ),
                });
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, message: &str) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        }
        if !(1..=1024).contains(&self.redis.partitions) {
            return invalid("redis.partitions", "must be between 1 and 1024");
        }
        if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(['{', '}']) {
            return invalid("redis.key_prefix", "must be non-empty and contain no braces");
        }
        if self.redis.url.is_some() {
            let urls = self.redis.urls();
            if urls.is_empty() {
                return invalid("redis.url", "is empty");
            }
            if urls
                .iter()
                .any(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")))
            {
                return invalid(
                    "redis.url",
                    "must start with redis:// or rediss:// (each URL, in cluster mode)",
                );
            }
            let tls_files = self.redis.tls_ca_file.is_some() || self.redis.tls_cert_file.is_some();
            if tls_files && urls.iter().any(|u| !u.starts_with("rediss://")) {
                return invalid(
                    "redis.url",
                    "must use rediss:// (each URL, in cluster mode) when redis.tls_ca_file or redis.tls_cert_file is set",
                );
            }
            if self.redis.mode == RedisMode::Standalone && urls.len() > 1 {
                return invalid(
                    "redis.url",
                    "holds several URLs: a list of seed nodes needs redis.mode = \"cluster\" (GANTRY__REDIS__MODE)",
                );
            }
        }
        if self.redis.tls_cert_file.is_some() != self.redis.tls_key_file.is_some() {
            return invalid(
                "redis.tls_cert_file",
                "and redis.tls_key_file go together: set both (a client certificate and its key) or neither",
            );
        }
        if self.gateway.max_tasks_per_batch == 0 {
            return invalid("gateway.max_tasks_per_batch", "must be at least 1");
        }
        if self.gateway.max_body_bytes < 1024 {
            return invalid("gateway.max_body_bytes", "must be at least 1024");
        }
        if self.telemetry.sample_interval_ms < 100 {
            return invalid("telemetry.sample_interval_ms", "must be at least 100");
        }
        if self.submitter.concurrency == 0 {
            return invalid("submitter.concurrency", "must be at least 1");
        }
        if self.submitter.read_count == 0 {
            return invalid("submitter.read_count", "must be at least 1");
        }
        if self.settlement.concurrency == 0 {
            return invalid("settlement.concurrency", "must be at least 1");
        }
        if self.poller.concurrency == 0 {
            return invalid("poller.concurrency", "must be at least 1");
        }
        if self.poller.interval_ms == 0 {
            return invalid("poller.interval_ms", "must be at least 1");
        }
        if self.poller.claim_lease_ms < 1000 {
            return invalid("poller.claim_lease_ms", "must be at least 1000");
        }
        if self.poller.interval_factor < 1.0 {
            return invalid("poller.interval_factor", "must be 1.0 or more");
        }
        if self.poller.max_interval_ms < self.poller.interval_ms {
            return invalid("poller.max_interval_ms", "must be at least poller.interval_ms");
        }
        if self.retry.factor < 1.0 {
            return invalid("retry.factor", "must be 1.0 or more");
        }
        if self.streams.max_deliveries == 0 {
            return invalid("streams.max_deliveries", "must be at least 1");
        }
        if self.sweeper.reservation_grace_ms <= self.gateway.idempotency_lease_ms {
            // A retry may take a crashed create over only while its reservation still stands.
            return invalid(
                "sweeper.reservation_grace_ms",
                "must be longer than gateway.idempotency_lease_ms",
            );
        }
        if self.sweeper.interval_ms == 0 {
            return invalid("sweeper.interval_ms", "must be at least 1");
        }
        if self.retention.interval_ms == 0 {
            return invalid("retention.interval_ms", "must be at least 1");
        }
        if self.retention.completed_secs < self.gateway.idempotency_ttl_secs {
            // A retry with an Idempotency-Key may reuse a batch id as long as its record lives; the settlement
            // record that refuses to reserve a settled id again must outlive it (see `retention.rs`).
            return invalid(
                "retention.completed_secs",
                "must be at least gateway.idempotency_ttl_secs",
            );
        }
        if self.retry.max_attempts == 0 {
            return invalid("retry.max_attempts", "must be at least 1");
        }
        for (key, limits) in [
            ("provider.limits.grsai", &self.provider.limits.grsai),
            ("provider.limits.seedance", &self.provider.limits.seedance),
        ] {
            if limits.rate_per_sec.is_nan()
                || limits.rate_per_sec <= 0.0
                || limits.max_in_flight == 0
                || !(limits.create_share > 0.0 && limits.create_share <= 1.0)
            {
                return invalid(
                    key,
                    "needs rate_per_sec > 0, max_in_flight >= 1 and 0 < create_share <= 1",
                );
            }
        }
        if self.provider.callback_base_url.is_some() && self.provider.callback_secret.is_none() {
            return invalid(
                "provider.callback_secret",
                "is required when provider.callback_base_url is set",
            );
        }
        let g = &self.gateway;
        if g.sse_max_per_tenant == 0 || g.sse_max_secs == 0 {
            return invalid(
                "gateway.sse_max_per_tenant",
                "sse_max_per_tenant and sse_max_secs must be at least 1",
            );
        }
        if g.header_read_timeout_ms == 0 || g.request_timeout_ms == 0 || g.max_concurrent_requests == 0 {
            return invalid(
                "gateway.request_timeout_ms",
                "header_read_timeout_ms, request_timeout_ms and max_concurrent_requests must be at least 1",
            );
        }
        let rate = self.gateway.tenant_rate_per_sec;
        if !rate.is_finite() || rate <= 0.0 || self.gateway.tenant_burst == 0 {
            return invalid(
                "gateway.tenant_rate_per_sec",
                "needs tenant_rate_per_sec > 0 and tenant_burst >= 1",
            );
        }
        if self.poller.idle_wait_ms == 0 {
            return invalid("poller.idle_wait_ms", "must be at least 1");
        }
        if !self.provider.grsai.base_url.starts_with("http://")
            && !self.provider.grsai.base_url.starts_with("https://")
        {
            return invalid("provider.grsai.base_url", "must be an http(s) URL");
        }
        if !self.provider.seedance.base_url.starts_with("http://")
            && !self.provider.seedance.base_url.starts_with("https://")
        {
            return invalid("provider.seedance.base_url", "must be an http(s) URL");
        }
        if self.provider.seedance.model.trim().is_empty() {
            return invalid("provider.seedance.model", "must name a ModelArk model");
        }
        if let Some(url) = &self.provider.callback_base_url {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return invalid("provider.callback_base_url", "must be an http(s) URL");
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }

    pub fn grsai_timeout(&self) -> Duration {
        Duration::from_millis(self.provider.grsai.timeout_ms)
    }
}

/// The shortest admin token or callback secret a deployed service accepts.
pub const MIN_SECRET_BYTES: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_load_and_validate() {
        let config = Config::load_from(None, env(&[])).expect("defaults are valid");
        assert_eq!(config.gateway.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.prices.veo31_pro, 20);
        assert!(config.redis.url.is_none());
    }

    #[test]
    fn env_overrides_nested_keys() {
        let config = Config::load_from(
            None,
            env(&[
                ("GANTRY__REDIS__URL", "redis://127.0.0.1:7000"),
                ("GANTRY__PROVIDER__GRSAI__API_KEY", "sk-live-123"),
                ("GANTRY__PRICES__VEO31_FAST", "9"),
            ]),
        )
        .expect("valid");
        assert_eq!(
            config.redis.url.as_ref().map(Secret::expose),
            Some("redis://127.0.0.1:7000")
        );
        assert_eq!(config.provider.grsai.api_key.expose(), "sk-live-123");
        assert_eq!(config.prices.veo31_fast, 9);
    }

    #[test]
    fn retention_defaults_to_a_week_and_outlives_idempotency_records() {
        let config = Config::load_from(None, env(&[])).expect("valid");
        assert_eq!(config.retention.completed_secs, 7 * 24 * 3600);
        let short = env(&[("GANTRY__RETENTION__COMPLETED_SECS", "60")]);
        let err = Config::load_from(None, short).expect_err("shorter than the idempotency records");
        assert!(err.to_string().contains("retention.completed_secs"), "{err}");
        let both = env(&[
            ("GANTRY__RETENTION__COMPLETED_SECS", "60"),
            ("GANTRY__GATEWAY__IDEMPOTENCY_TTL_SECS", "60"),
        ]);
        assert_eq!(
            Config::load_from(None, both)
                .expect("valid")
                .retention
                .completed_secs,
            60
        );
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = Config::load_from(None, env(&[("GANTRY__GATEWAY__LISTEN", "not-an-address")]))
            .expect_err("invalid address");
        assert!(err.to_string().contains("gateway.listen"), "{err}");
        let err = Config::load_from(None, env(&[("GANTRY__REDIS__PARTITIONS", "0")])).expect_err("invalid");
        assert!(err.to_string().contains("redis.partitions"), "{err}");
        let err = Config::load_from(None, env(&[("GANTRY__REDIS__MODE", "sharded")])).expect_err("invalid");
        assert!(err.to_string().contains("redis.mode"), "{err}");
    }

    #[test]
    fn cluster_mode_takes_a_list_of_seed_nodes() {
        assert_eq!(
            Config::load_from(None, env(&[])).expect("valid").redis.mode,
            RedisMode::Standalone
        );
        let seeds = "redis://127.0.0.1:7000, redis://127.0.0.1:7001,redis://127.0.0.1:7002";
        let config = Config::load_from(
            None,
            env(&[("GANTRY__REDIS__MODE", "cluster"), ("GANTRY__REDIS__URL", seeds)]),
        )
        .expect("valid");
        assert_eq!(config.redis.mode, RedisMode::Cluster);
        assert_eq!(config.redis.urls().len(), 3);
        // A list without cluster mode is refused at start-up, naming the key and the fix.
        let err = Config::load_from(None, env(&[("GANTRY__REDIS__URL", seeds)])).expect_err("a list");
        assert!(err.to_string().contains("redis.mode"), "{err}");
        let err = Config::load_from(
            None,
            env(&[
                ("GANTRY__REDIS__MODE", "cluster"),
                ("GANTRY__REDIS__URL", "redis://a:1,http://b:2"),
            ]),
        )
        .expect_err("not redis");
        assert!(err.to_string().contains("redis.url"), "{err}");
    }

    #[test]
    fn printed_config_redacts_secrets() {
        let config = Config::load_from(
            None,
            env(&[
                ("GANTRY__PROVIDER__GRSAI__API_KEY", "sk-live-123"),
                ("GANTRY__GATEWAY__ADMIN_TOKEN", "adm-9"),
            ]),
        )
        .expect("valid");
        let printed = config.to_redacted_toml();
        assert!(
            !printed.contains("sk-live-123") && !printed.contains("adm-9"),
            "{printed}"
        );
        assert!(printed.contains("[redacted]"));
    }

    #[test]
    fn sora_costs_its_duration() {
        let prices = Config::load_from(None, env(&[])).expect("valid").prices;
        assert_eq!(prices.cost(Model::Sora2, Some(15)), 15);
        assert_eq!(prices.cost(Model::Veo31Fast, None), 8);
    }

    #[test]
    fn deployed_services_refuse_short_secrets() {
        let short =
            Config::load_from(None, env(&[("GANTRY__GATEWAY__ADMIN_TOKEN", "change-me")])).expect("valid");
        let err = short.check_deployment_secrets().expect_err("too short");
        assert!(err.to_string().contains("gateway.admin_token"), "{err}");
        let hook =
            Config::load_from(None, env(&[("GANTRY__PROVIDER__CALLBACK_SECRET", "s3cret")])).expect("valid");
        assert!(hook.check_deployment_secrets().is_err());
        let long = "x".repeat(MIN_SECRET_BYTES);
        let fine = Config::load_from(
            None,
            env(&[
                ("GANTRY__GATEWAY__ADMIN_TOKEN", &long),
                ("GANTRY__PROVIDER__CALLBACK_SECRET", &long),
            ]),
        )
        .expect("valid");
        assert!(fine.check_deployment_secrets().is_ok());
        assert!(Config::load_from(None, env(&[]))
            .expect("valid")
            .check_deployment_secrets()
            .is_ok());
    }
}
