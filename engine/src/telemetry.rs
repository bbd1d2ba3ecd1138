//! Logs (`tracing`) and metrics (`metrics` + the Prometheus exporter).

use std::sync::OnceLock;

use dronedelivery_actors::metrics as m;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Installs the global tracing subscriber (`RUST_LOG` filters, default
/// `info`). Calling it again is harmless (tests build many apps).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let result = match format {
        LogFormat::Text => fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .try_init(),
        LogFormat::Json => fmt()
            .json()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .try_init(),
    };
    // Err means a subscriber is already installed: keep it.
    let _ = result;
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. `None` only
/// if another recorder was installed first by someone else.
pub fn prometheus() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(m::HTTP_REQUEST_DURATION_SECONDS.into()), m::HTTP_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(m::DELIVERY_DURATION_SECONDS.into()), m::DELIVERY_BUCKETS));
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
    describe_gauge!(m::FLEET_FREE_DRONES, "Drones free to take a job");
}
