//! Telemetry set up once per process.
//!
//! Export follows the standard OpenTelemetry variables: nothing leaves the process unless
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or the per-signal `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`) is set, so a
//! machine without a collector sees no export errors. `OTEL_EXPORTER_OTLP_PROTOCOL` picks `http/protobuf` (the
//! default) or `http/json`; `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`,
//! `OTEL_SDK_DISABLED` and `OTEL_{TRACES,METRICS}_EXPORTER=none` are honoured. Spans get trace ids whether or not
//! they are exported, so logs, `x-trace-id` and stream messages always carry one.

use std::sync::OnceLock;

use opentelemetry::{global, trace::TracerProvider as _, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_prometheus::ResourceSelector;
use opentelemetry_sdk::{
    metrics::SdkMeterProvider,
    resource::{EnvResourceDetector, ResourceDetector},
    trace::SdkTracerProvider,
    Resource,
};
use tracing_subscriber::{filter::filter_fn, layer::SubscriberExt, EnvFilter, Layer, Registry};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, with `trace_id`, `span_id` and the fields of the spans it happened in.
    Json,
    /// Compact human-readable lines.
    Pretty,
}

/// The exporters of this process; [`Telemetry::shutdown`] flushes what they still hold.
#[must_use = "dropping the handle without shutdown loses the last spans and metrics"]
pub struct Telemetry {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
}

/// The registry behind `GET /metrics`, filled by the Prometheus reader of the meter provider.
static REGISTRY: OnceLock<prometheus::Registry> = OnceLock::new();

/// The metrics of this process in the Prometheus text format (empty before [`init`]).
pub fn render_prometheus() -> String {
    let Some(registry) = REGISTRY.get() else {
        return String::new();
    };
    let encoder = prometheus::TextEncoder::new();
    encoder.encode_to_string(&registry.gather()).unwrap_or_default()
}

/// Installs logging, tracing and metrics for `service` (the default `service.name`). A second call in one process
/// (tests) keeps the first set-up and returns a handle that flushes nothing new.
pub fn init(service: &str, format: LogFormat) -> Telemetry {
    let mut notes = Vec::new();
    let resource = resource(service);
    let protocol = protocol(&mut notes);

    let mut tracer = SdkTracerProvider::builder().with_resource(resource.clone());
    if otlp_wanted("TRACES") {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .build()
        {
            Ok(exporter) => tracer = tracer.with_batch_exporter(exporter),
            Err(e) => notes.push(format!("traces are not exported: {e}")),
        }
    }
    let tracer = tracer.build();

    let mut meter = SdkMeterProvider::builder().with_resource(resource);
    let registry = prometheus::Registry::new();
    match opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .with_resource_selector(ResourceSelector::KeyAllowList(
            [opentelemetry::Key::from_static_str("service.name")].into(),
        ))
        .build()
    {
        Ok(reader) => meter = meter.with_reader(reader),
        Err(e) => notes.push(format!("metrics cannot be pulled: {e}")),
    }
    if otlp_wanted("METRICS") {
        match opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .build()
        {
            Ok(exporter) => meter = meter.with_periodic_exporter(exporter),
            Err(e) => notes.push(format!("metrics are not pushed: {e}")),
        }
    }
    let meter = meter.build();

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn")
    });
    // The SDK's own diagnostics are logged, never turned into spans (that would feed the exporter itself).
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer.tracer("gantry"))
        .with_filter(filter_fn(|meta| !meta.target().starts_with("opentelemetry")));
    let logs = match format {
        LogFormat::Json => json_layer().boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .compact()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let subscriber = Registry::default().with(logs).with(otel).with(filter);
    if tracing::subscriber::set_global_default(subscriber).is_ok() {
        global::set_tracer_provider(tracer.clone());
        global::set_meter_provider(meter.clone());
        let _ = REGISTRY.set(registry);
    }
    for note in notes {
        tracing::warn!("{note}");
    }
    Telemetry { tracer, meter }
}

impl Telemetry {
    /// Flushes and stops the exporters. Blocks while they send; call it off the async runtime's workers
    /// (`spawn_blocking`).
    pub fn shutdown(self) {
        if let Err(e) = self.tracer.shutdown() {
            tracing::debug!(error = %e, "tracer shutdown");
        }
        if let Err(e) = self.meter.shutdown() {
            tracing::debug!(error = %e, "meter shutdown");
        }
    }
}

/// JSON lines on stderr: timestamp, level, target, the event's fields, the fields of every enclosing span (the
/// innermost wins; `batch.id`, `task.id`, `tenant.id`, …), the current span under `span`, and the OpenTelemetry
/// `trace_id` and `span_id`.
fn json_layer() -> json_subscriber::JsonLayer<Registry, fn() -> std::io::Stderr> {
    let mut layer = json_subscriber::JsonLayer::stderr();
    layer
        .with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
        .with_level("level")
        .with_target("target")
        .with_flattened_event()
        .with_top_level_flattened_span_list()
        .with_current_span("span");
    layer.add_multiple_dynamic_fields(|event, ctx, writer| {
        use opentelemetry::trace::TraceContextExt;
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let Some(cx) = tracing::dispatcher::get_default(|dispatch| {
            tracing_opentelemetry::get_otel_context(&span.id(), dispatch)
        }) else {
            return;
        };
        let span_ref = cx.span();
        let ids = span_ref.span_context();
        if ids.is_valid() {
            let _ = writer.write_field("trace_id", ids.trace_id().to_string());
            let _ = writer.write_field("span_id", ids.span_id().to_string());
        }
    });
    layer
}

/// `service.name` (ours, unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` says otherwise), a
/// `service.instance.id` unique to this process, and the attributes of `OTEL_RESOURCE_ATTRIBUTES`.
fn resource(service: &str) -> Resource {
    let from_env = EnvResourceDetector::new().detect();
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .or_else(|| {
            from_env
                .get(&opentelemetry::Key::from_static_str("service.name"))
                .map(|v| v.to_string())
        })
        .unwrap_or_else(|| service.to_owned());
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.namespace", "gantry"),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", uuid::Uuid::now_v7().to_string()),
        ])
        .with_attributes(from_env.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
        .with_service_name(name)
        .build()
}

/// Whether OTLP export of `signal` (`TRACES` or `METRICS`) is configured and not switched off.
fn otlp_wanted(signal: &str) -> bool {
    let value = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if value("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || value(&format!("OTEL_{signal}_EXPORTER")).is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return false;
    }
    value("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || value(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")).is_some()
}

/// The OTLP protocol of `OTEL_EXPORTER_OTLP_PROTOCOL`; gRPC is not built in and falls back to HTTP/protobuf.
fn protocol(notes: &mut Vec<String>) -> Protocol {
    match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")
        .as_deref()
        .map(str::trim)
    {
        Ok("http/json") => Protocol::HttpJson,
        Ok("grpc") => {
            notes.push(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not built in; exporting over http/protobuf (port 4318)"
                    .into(),
            );
            Protocol::HttpBinary
        }
        Ok("http/protobuf") | Ok("") | Err(_) => Protocol::HttpBinary,
        Ok(other) => {
            notes.push(format!(
                "unknown OTEL_EXPORTER_OTLP_PROTOCOL {other:?}; using http/protobuf"
            ));
            Protocol::HttpBinary
        }
    }
}
