//! Gantry's telemetry, shared by every service: logs (pretty or JSON lines with trace and span ids), traces
//! exported over OTLP, metrics pushed over OTLP and pulled by Prometheus, and the W3C trace context that carries
//! one batch's trace through stream messages and task hashes.
//!
//! - `setup`: [`init`] once per process; the returned [`Telemetry`] flushes the exporters on shutdown.
//! - `context`: `traceparent` strings to and from `tracing` spans.
//! - `metrics`: every instrument, by name, in one place (`proto-docs/metrics.md` is the catalogue).

pub mod context;
pub mod metrics;
mod serve;
mod setup;

pub use opentelemetry::KeyValue;
pub use serve::{metrics_handler, serve_metrics};
pub use setup::{init, render_prometheus, LogFormat, Telemetry};
