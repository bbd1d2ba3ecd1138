//! One trace across the queue: W3C trace context (`traceparent`,
//! `tracestate`) carried in each queue message.
//!
//! A delivery request is traced in the gateway (its HTTP span) and again in
//! the worker that processes its message, often another process. Without
//! propagation these are two unrelated traces. So the sender writes the
//! current span's W3C context into the message ([`inject`], called by the
//! engine's `submit`), the adapters carry it (a Service Bus application
//! property, a Redis Streams field, the in-process queue as is), and the
//! worker opens its span for the message as a child of it ([`span_for`]).
//!
//! This crate knows no tracing backend: the binary installs a
//! [`Propagation`] when it exports traces (OpenTelemetry, `--features
//! otel`). Without one, messages carry no context and worker spans start
//! their own traces.

use std::sync::OnceLock;

use crate::ports::QueueMessage;

/// Reads and continues W3C trace contexts for the installed tracer.
pub trait Propagation: Send + Sync + 'static {
    /// The W3C context (`traceparent`, `tracestate`) of the current span,
    /// when it is traced.
    fn current(&self) -> Option<(String, Option<String>)>;
    /// Makes the context the parent of `span`.
    fn continue_in(&self, span: &tracing::Span, traceparent: &str, tracestate: Option<&str>);
}

static PROPAGATION: OnceLock<Box<dyn Propagation>> = OnceLock::new();

/// Installs the process's propagation; false when one was installed
/// already (the first stays).
pub fn install(propagation: impl Propagation) -> bool {
    PROPAGATION.set(Box::new(propagation)).is_ok()
}

/// Writes the current span's context into `message`, unless it carries one
/// already (a replayed or forwarded message keeps its original trace).
pub fn inject(message: &mut QueueMessage) {
    if message.traceparent.is_some() {
        return;
    }
    if let Some((traceparent, tracestate)) = PROPAGATION.get().and_then(|p| p.current()) {
        message.traceparent = Some(traceparent);
        message.tracestate = tracestate;
    }
}

/// The span a worker processes `message` in: `queue_message`, a child of
/// the sender's span when the message carries its context.
pub fn span_for(message: &QueueMessage) -> tracing::Span {
    let span = tracing::info_span!(
        "queue_message",
        message_id = %message.message_id,
        operation = %message.operation,
    );
    if let (Some(p), Some(traceparent)) = (PROPAGATION.get(), message.traceparent.as_deref()) {
        p.continue_in(&span, traceparent, message.tracestate.as_deref());
    }
    span
}
