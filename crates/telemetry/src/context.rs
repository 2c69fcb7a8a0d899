//! The W3C trace context of a batch, as a `traceparent` string (`00-<trace id>-<span id>-<flags>`).
//!
//! The gateway's span for the request that created a batch is the root of the batch's trace. Its `traceparent`
//! is stored with the batch and its tasks and copied into every stream message, so that the submit, each poll,
//! each provider callback and the settlement are spans of that one trace, each a short child of the creating
//! request (never one span held open for minutes).

use std::collections::HashMap;

use opentelemetry::{
    propagation::TextMapPropagator,
    trace::{SpanContext, TraceContextExt},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` of `span`, or `None` when it has no valid context (no telemetry installed).
pub fn traceparent(span: &Span) -> Option<String> {
    let cx = span.context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The trace id of `span` (32 hex digits), or `None` without telemetry.
pub fn trace_id(span: &Span) -> Option<String> {
    let cx = span.context();
    let span_ref = cx.span();
    let ids = span_ref.span_context();
    ids.is_valid().then(|| ids.trace_id().to_string())
}

/// The span context inside a `traceparent` header value, when it is valid.
pub fn parse(traceparent: &str) -> Option<SpanContext> {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.trim().to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let ids = cx.span().span_context().clone();
    ids.is_valid().then_some(ids)
}

/// Makes `span` (not yet entered) a child of `traceparent`; returns whether it did.
pub fn set_parent(span: &Span, traceparent: Option<&str>) -> bool {
    let Some(value) = traceparent else {
        return false;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), value.trim().to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid() && span.set_parent(cx).is_ok()
}

/// Links `span` to the span of `traceparent` (a relation without parenthood: a webhook request linked to the
/// trace of the task it reports on).
pub fn add_link(span: &Span, traceparent: &str) {
    if let Some(ids) = parse(traceparent) {
        span.add_link(ids);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_parsed_and_checked() {
        let ids = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
        assert_eq!(ids.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ids.span_id().to_string(), "00f067aa0ba902b7");
        assert!(ids.is_sampled());
        assert!(parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(parse("garbage").is_none());
    }

    #[test]
    fn without_telemetry_spans_have_no_context() {
        let span = tracing::info_span!("x");
        assert_eq!(traceparent(&span), None);
        assert!(!set_parent(
            &span,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        ));
    }
}
