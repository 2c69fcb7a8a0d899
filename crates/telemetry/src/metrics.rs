//! Every metric instrument Gantry records, built once from the global meter provider (so after [`crate::init`];
//! before it, or without it, they record nothing). `proto-docs/metrics.md` lists them with their Prometheus
//! names. Attribute values come from small fixed sets: never an id.

use gantry_core::domain::{Model, ProviderName, TaskStatus};
use std::sync::OnceLock;

use opentelemetry::{
    global,
    metrics::{Counter, Gauge, Histogram, ObservableCounter, UpDownCounter},
    KeyValue,
};

/// Seconds, for HTTP calls.
const HTTP_BUCKETS: &[f64] = &[
    0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Seconds, for minutes-long work (task states, whole batches).
const LONG_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];
/// Seconds, from a batch's last terminal task to its settlement.
const DELAY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Status calls per task.
const POLL_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 55.0, 89.0];

/// The instruments.
pub struct Metrics {
    pub http_server_duration: Histogram<f64>,
    pub http_server_active: UpDownCounter<i64>,
    pub http_client_duration: Histogram<f64>,
    pub provider_in_flight: UpDownCounter<i64>,
    pub provider_in_flight_limit: Gauge<u64>,
    pub task_retries: Counter<u64>,
    pub stream_length: Gauge<u64>,
    pub stream_lag: Gauge<u64>,
    pub stream_pending: Gauge<u64>,
    pub schedule_size: Gauge<u64>,
    pub schedule_due: Gauge<u64>,
    pub tasks: Gauge<u64>,
    pub batches_open: Gauge<u64>,
    pub tasks_finished: Counter<u64>,
    pub task_polls: Histogram<u64>,
    pub task_state_duration: Histogram<f64>,
    pub batch_duration: Histogram<f64>,
    pub settlement_delay: Histogram<f64>,
    pub credits_frozen: Counter<u64>,
    pub credits_charged: Counter<u64>,
    pub credits_refunded: Counter<u64>,
    pub credits_reserved: Gauge<u64>,
    pub dead_letters: Counter<u64>,
    pub webhooks: Counter<u64>,
    /// Reads [`gantry_core::store::round_trips`] at each collection.
    pub redis_round_trips: ObservableCounter<u64>,
}

/// The instruments of this process.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let m = global::meter("gantry");
        Self {
            http_server_duration: m
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP requests served by the gateway")
                .with_boundaries(HTTP_BUCKETS.to_vec())
                .build(),
            http_server_active: m
                .i64_up_down_counter("http.server.active_requests")
                .with_unit("{request}")
                .with_description("HTTP requests being served")
                .build(),
            http_client_duration: m
                .f64_histogram("http.client.request.duration")
                .with_unit("s")
                .with_description("Duration of requests to a provider")
                .with_boundaries(HTTP_BUCKETS.to_vec())
                .build(),
            provider_in_flight: m
                .i64_up_down_counter("gantry.provider.in_flight")
                .with_unit("{request}")
                .with_description("Provider requests this process has in flight")
                .build(),
            provider_in_flight_limit: m
                .u64_gauge("gantry.provider.in_flight.limit")
                .with_unit("{request}")
                .with_description("The provider's cluster-wide limit on requests in flight")
                .build(),
            task_retries: m
                .u64_counter("gantry.task.retries")
                .with_unit("{retry}")
                .with_description("Provider creates scheduled to be tried again")
                .build(),
            stream_length: m
                .u64_gauge("gantry.stream.length")
                .with_unit("{message}")
                .with_description("Entries in a kind of stream, all partitions")
                .build(),
            stream_lag: m
                .u64_gauge("gantry.stream.lag")
                .with_unit("{message}")
                .with_description("Entries not yet delivered to a consumer group, all partitions")
                .build(),
            stream_pending: m
                .u64_gauge("gantry.stream.pending")
                .with_unit("{message}")
                .with_description("Entries delivered to a consumer group and not yet acknowledged")
                .build(),
            schedule_size: m
                .u64_gauge("gantry.schedule.size")
                .with_unit("{task}")
                .with_description("Tasks in a schedule (polls or create retries)")
                .build(),
            schedule_due: m
                .u64_gauge("gantry.schedule.due")
                .with_unit("{task}")
                .with_description("Tasks of a schedule whose time has come")
                .build(),
            tasks: m
                .u64_gauge("gantry.tasks")
                .with_unit("{task}")
                .with_description("Tasks of batches not yet settled, by state")
                .build(),
            batches_open: m
                .u64_gauge("gantry.batches.open")
                .with_unit("{batch}")
                .with_description("Batches accepted and not yet settled")
                .build(),
            tasks_finished: m
                .u64_counter("gantry.tasks.finished")
                .with_unit("{task}")
                .with_description("Tasks settled, by final state and model")
                .build(),
            task_polls: m
                .u64_histogram("gantry.task.polls")
                .with_unit("{poll}")
                .with_description("Status calls a task took before it finished")
                .with_boundaries(POLL_BUCKETS.to_vec())
                .build(),
            task_state_duration: m
                .f64_histogram("gantry.task.state.duration")
                .with_unit("s")
                .with_description("Time a task spent in a state")
                .with_boundaries(LONG_BUCKETS.to_vec())
                .build(),
            batch_duration: m
                .f64_histogram("gantry.batch.duration")
                .with_unit("s")
                .with_description("Time from accepting a batch to settling it")
                .with_boundaries(LONG_BUCKETS.to_vec())
                .build(),
            settlement_delay: m
                .f64_histogram("gantry.settlement.delay")
                .with_unit("s")
                .with_description("Time from a batch's last terminal task to its settlement")
                .with_boundaries(DELAY_BUCKETS.to_vec())
                .build(),
            credits_frozen: m
                .u64_counter("gantry.credits.frozen")
                .with_unit("{credit}")
                .with_description("Credits frozen for accepted batches")
                .build(),
            credits_charged: m
                .u64_counter("gantry.credits.charged")
                .with_unit("{credit}")
                .with_description("Credits charged for succeeded tasks")
                .build(),
            credits_refunded: m
                .u64_counter("gantry.credits.refunded")
                .with_unit("{credit}")
                .with_description("Credits refunded for failed and cancelled tasks")
                .build(),
            credits_reserved: m
                .u64_gauge("gantry.credits.reserved")
                .with_unit("{credit}")
                .with_description("Credits frozen now, all tenants")
                .build(),
            dead_letters: m
                .u64_counter("gantry.dead_letters")
                .with_unit("{message}")
                .with_description("Messages moved to the dead letters")
                .build(),
            webhooks: m
                .u64_counter("gantry.webhooks")
                .with_unit("{request}")
                .with_description("Provider callbacks received, by outcome")
                .build(),
            redis_round_trips: m
                .u64_observable_counter("gantry.redis.round_trips")
                .with_unit("{round_trip}")
                .with_description(
                    "Requests this process sent to Redis and waited for: one per command, one per pipeline or \
                     transaction (per slot in cluster mode), blocking reads included",
                )
                .with_callback(|observer| observer.observe(gantry_core::store::round_trips(), &[]))
                .build(),
        }
    }
}

/// The service a process runs, for the series it creates at zero when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Gateway,
    Submitter,
    Poller,
    Settlement,
}

/// The providers, as the `gantry.provider` attribute.
fn providers() -> impl Iterator<Item = &'static str> {
    ProviderName::ALL.iter().map(|p| p.as_str())
}

/// Creates the counters `role` owns at zero, so queries over them return data before the first event.
pub fn announce(role: Role) {
    let m = metrics();
    match role {
        Role::Gateway => {
            m.credits_frozen.add(0, &[]);
            for provider in providers() {
                for outcome in ["applied", "ignored", "rejected"] {
                    m.webhooks.add(
                        0,
                        &[
                            KeyValue::new("gantry.provider", provider),
                            KeyValue::new("gantry.webhook.outcome", outcome),
                        ],
                    );
                }
            }
        }
        Role::Submitter => {
            in_flight_zero();
            for provider in providers() {
                for reason in ["rate_limited", "transient"] {
                    m.task_retries.add(
                        0,
                        &[
                            KeyValue::new("gantry.provider", provider),
                            KeyValue::new("gantry.retry.reason", reason),
                        ],
                    );
                }
            }
            count_dead_letters("submitter", 0);
        }
        Role::Poller => in_flight_zero(),
        Role::Settlement => {
            m.credits_charged.add(0, &[]);
            m.credits_refunded.add(0, &[]);
            for state in TaskStatus::ALL.iter().filter(|s| s.is_terminal()) {
                for model in Model::ALL {
                    m.tasks_finished.add(
                        0,
                        &[
                            KeyValue::new("gantry.task.state", state.as_str()),
                            KeyValue::new("gantry.model", model.as_str()),
                        ],
                    );
                }
            }
            count_dead_letters("settlement", 0);
        }
    }
}

fn in_flight_zero() {
    for provider in providers() {
        metrics()
            .provider_in_flight
            .add(0, &[KeyValue::new("gantry.provider", provider)]);
    }
}

/// Counts `n` messages of consumer `group` moved to the dead letters.
pub fn count_dead_letters(group: &'static str, n: u64) {
    metrics()
        .dead_letters
        .add(n, &[KeyValue::new("messaging.consumer.group.name", group)]);
}

/// Records the sampled backlog of one kind of stream (`submit`, `settle`, `dead`) for consumer `group`.
pub fn record_stream(stream: &'static str, group: &'static str, length: u64, lag: u64, pending: u64) {
    let m = metrics();
    let kind = KeyValue::new("gantry.stream", stream);
    m.stream_length.record(length, std::slice::from_ref(&kind));
    if stream != "dead" {
        let attributes = [kind, KeyValue::new("messaging.consumer.group.name", group)];
        m.stream_lag.record(lag, &attributes);
        m.stream_pending.record(pending, &attributes);
    }
}

/// Records the sampled size of a schedule (`polls`, `retries`) and how many of its tasks are due.
pub fn record_schedule(schedule: &'static str, size: u64, due: u64) {
    let m = metrics();
    let attributes = [KeyValue::new("gantry.schedule", schedule)];
    m.schedule_size.record(size, &attributes);
    m.schedule_due.record(due, &attributes);
}

/// Records each provider's configured cluster-wide limit on requests in flight.
pub fn record_in_flight_limits(limits: &[(&'static str, u32)]) {
    for (provider, limit) in limits {
        metrics()
            .provider_in_flight_limit
            .record(u64::from(*limit), &[KeyValue::new("gantry.provider", *provider)]);
    }
}

/// Seconds between two millisecond timestamps (0 when they are out of order).
pub fn seconds_between(from_ms: u64, to_ms: u64) -> f64 {
    to_ms.saturating_sub(from_ms) as f64 / 1000.0
}

/// The status class of a provider answer: `2xx`, `4xx`, `429`, `5xx`, or `error` (no answer).
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(429) => "429",
        Some(200..=299) => "2xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(status_class(Some(200)), "2xx");
        assert_eq!(status_class(Some(429)), "429");
        assert_eq!(status_class(Some(404)), "4xx");
        assert_eq!(status_class(Some(503)), "5xx");
        assert_eq!(status_class(None), "error");
        assert_eq!(seconds_between(2_000, 1_000), 0.0);
        assert_eq!(seconds_between(1_000, 3_500), 2.5);
    }
}
