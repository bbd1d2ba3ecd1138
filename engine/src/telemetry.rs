//! Logs and traces (`tracing`) and metrics (`metrics` + the Prometheus
//! exporter).
//!
//! Logs go to stderr as text or JSON. Traces can also be exported over
//! OTLP/HTTP (`--otlp-endpoint`) when the binary is built with the `otel`
//! feature: the same spans (one per HTTP request, carrying its request id)
//! then reach a collector. The exporter is a feature so that the default
//! build carries none of the OpenTelemetry crates. With export on, the W3C
//! trace context of each request travels in the messages it queues (see
//! the actors' `tracecontext`), so the worker's span for a message joins
//! the trace of the request that sent it, across processes.

use std::sync::OnceLock;

use dronedelivery_actors::metrics as m;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

use crate::config::LogFormat;

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global tracing subscriber (`RUST_LOG` filters, default
/// `info`). Calling it again is harmless (tests build many apps).
pub fn init_logging(format: LogFormat) {
    // Without an OTLP endpoint this cannot fail.
    let _ = init_telemetry(format, None);
}

/// Keeps the trace exporter alive; dropping it flushes pending spans.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("could not flush traces: {e}");
            }
        }
    }
}

/// Installs logging and, with an OTLP endpoint, trace export. Fails when an
/// endpoint is given to a binary built without the `otel` feature, or when
/// the exporter cannot be built.
pub fn init_telemetry(
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs: BoxedLayer = match format {
        LogFormat::Text => fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    let (traces, guard) = trace_layer(otlp_endpoint)?;
    let layers: Vec<BoxedLayer> = std::iter::once(logs).chain(traces).collect();
    // Err means a subscriber is already installed: keep it.
    let _ = tracing_subscriber::registry()
        .with(layers.with_filter(filter))
        .try_init();
    Ok(guard)
}

#[cfg(not(feature = "otel"))]
fn trace_layer(endpoint: Option<&str>) -> anyhow::Result<(Option<BoxedLayer>, TelemetryGuard)> {
    match endpoint {
        Some(_) => anyhow::bail!(
            "--otlp-endpoint needs a binary built with `--features otel` (cargo build --release --features otel)"
        ),
        None => Ok((None, TelemetryGuard {})),
    }
}

#[cfg(feature = "otel")]
fn trace_layer(endpoint: Option<&str>) -> anyhow::Result<(Option<BoxedLayer>, TelemetryGuard)> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;

    let Some(endpoint) = endpoint else {
        return Ok((None, TelemetryGuard { provider: None }));
    };
    let traces_url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url)
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("dronedelivery")
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("dronedelivery");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer).boxed();
    dronedelivery_actors::tracecontext::install(W3cTraceContext);
    Ok((
        Some(layer),
        TelemetryGuard {
            provider: Some(provider),
        },
    ))
}

/// W3C trace context through OpenTelemetry's propagator: what the actors'
/// `tracecontext` needs to carry a trace across the queue.
#[cfg(feature = "otel")]
struct W3cTraceContext;

#[cfg(feature = "otel")]
impl dronedelivery_actors::tracecontext::Propagation for W3cTraceContext {
    fn current(&self) -> Option<(String, Option<String>)> {
        use opentelemetry::propagation::TextMapPropagator as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let context = tracing::Span::current().context();
        let mut carrier = std::collections::HashMap::new();
        opentelemetry_sdk::propagation::TraceContextPropagator::new()
            .inject_context(&context, &mut carrier);
        let traceparent = carrier.remove("traceparent")?;
        let tracestate = carrier.remove("tracestate").filter(|s| !s.is_empty());
        Some((traceparent, tracestate))
    }

    fn continue_in(&self, span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
        use opentelemetry::propagation::TextMapPropagator as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let mut carrier = std::collections::HashMap::new();
        carrier.insert("traceparent".to_owned(), traceparent.to_owned());
        if let Some(tracestate) = tracestate {
            carrier.insert("tracestate".to_owned(), tracestate.to_owned());
        }
        let parent =
            opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
        if let Err(e) = span.set_parent(parent) {
            tracing::debug!(error = %e, "could not continue a message's trace");
        }
    }
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. `None` only
/// if another recorder was installed first by someone else.
pub fn prometheus() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(m::HTTP_REQUEST_DURATION_SECONDS.into()), m::HTTP_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(m::DELIVERY_DURATION_SECONDS.into()), m::DELIVERY_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(m::STAGE_DURATION_SECONDS.into()), m::LAG_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(m::QUEUE_LAG_SECONDS.into()), m::LAG_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(m::STORE_BATCH_SIZE.into()), m::BATCH_BUCKETS));
            match builder.map(|b| b.install_recorder()) {
                Ok(Ok(handle)) => {
                    describe();
                    Some(handle)
                }
                Ok(Err(e)) | Err(e) => {
                    tracing::warn!(error = %e, "could not install the Prometheus recorder; /metrics will be empty");
                    None
                }
            }
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        m::HTTP_REQUESTS_TOTAL,
        "HTTP requests by method, route and status"
    );
    describe_histogram!(
        m::HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "HTTP request latency"
    );
    describe_counter!(
        m::DELIVERIES_ACCEPTED_TOTAL,
        "Delivery requests accepted (queued) by the gateway"
    );
    describe_counter!(
        m::DELIVERIES_CREATED_TOTAL,
        "Deliveries created by the workflow"
    );
    describe_counter!(m::DELIVERIES_COMPLETED_TOTAL, "Deliveries completed");
    describe_counter!(m::DELIVERIES_CANCELLED_TOTAL, "Deliveries cancelled");
    describe_histogram!(
        m::DELIVERY_DURATION_SECONDS,
        Unit::Seconds,
        "Time from creation to completion"
    );
    describe_counter!(
        m::MESSAGES_TOTAL,
        "Queue messages settled, by operation and outcome"
    );
    describe_gauge!(m::QUEUE_DEPTH, "Messages waiting in the queue");
    describe_gauge!(
        m::QUEUE_UNSETTLED,
        "Messages delivered to consumers and not settled yet (all processes)"
    );
    describe_gauge!(
        m::MESSAGES_IN_FLIGHT,
        "Messages received and not yet settled by this process"
    );
    describe_counter!(m::DEAD_LETTERS_TOTAL, "Messages dead-lettered");
    describe_gauge!(m::ACTORS_LIVE, "Live actors by kind");
    describe_counter!(m::ACTOR_RESTARTS_TOTAL, "Actor restarts by supervisor");
    describe_gauge!(m::FLEET_PENDING, "Deliveries waiting for a free drone");
    describe_gauge!(
        m::DELIVERIES_AT_RISK,
        "Deliveries under way at risk of missing their deadline (the whole cluster's)"
    );
    describe_counter!(
        m::DEADLINES_MISSED_TOTAL,
        "Deliveries completed after their deadline"
    );
    describe_gauge!(m::FLEET_FREE_DRONES, "Drones free to take a job");
    describe_gauge!(
        m::OWNED_PARTITIONS,
        "Partitions this engine holds the lease of"
    );
    describe_gauge!(
        m::CLUSTER_ENGINES,
        "Live engines, as this engine last saw them"
    );
    describe_counter!(
        m::PARTITION_CHANGES_TOTAL,
        "Partition leases acquired, released (hand-over) and lost (taken over), by change"
    );
    describe_histogram!(
        m::STAGE_DURATION_SECONDS,
        Unit::Seconds,
        "Time a delivery spent in a stage, by the stage left"
    );
    describe_histogram!(
        m::QUEUE_LAG_SECONDS,
        Unit::Seconds,
        "Time from enqueueing to first delivery to a consumer"
    );
    describe_histogram!(
        m::STORE_BATCH_SIZE,
        Unit::Count,
        "Calls carried by one round trip of a batched store write, by op"
    );
    describe_gauge!(m::READY, "1 when the last readiness check passed");
    describe_counter!(m::NOTIFICATIONS_TOTAL, "Notifications sent to subscribers");
    describe_counter!(
        m::DEAD_LETTERS_REPLAYED_TOTAL,
        "Dead letters put back on the queue by an operator"
    );
    describe_gauge!(
        m::BREAKER_STATE,
        "Circuit breaker state by backend: 0 closed, 1 open, 2 half-open"
    );
    describe_counter!(
        m::COMPENSATIONS_TOTAL,
        "Deliveries given up and cancelled by compensation"
    );
    describe_counter!(
        m::ACTIVATIONS_TOTAL,
        "Delivery actors activated from the store"
    );
    describe_counter!(
        m::PASSIVATIONS_TOTAL,
        "Delivery actors stopped after an idle period"
    );
}

#[cfg(all(test, not(feature = "otel")))]
mod tests {
    use super::*;

    #[test]
    fn an_otlp_endpoint_needs_the_otel_feature() {
        let err = init_telemetry(LogFormat::Text, Some("http://127.0.0.1:4318"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("--features otel"), "{err}");
        assert!(init_telemetry(LogFormat::Json, None).is_ok());
    }
}
