//! Probes and metrics: `/healthz` (liveness), `/readyz` (readiness),
//! `/healthz/dependencies` (what each backend is doing), `/metrics`
//! (Prometheus).
//!
//! Neither probe checks a backend. Liveness failing restarts the pod, and
//! readiness failing on every replica at once (which a shared backend's
//! blip would cause) takes the whole service out of load balancing and
//! turns a partial outage into a total one. Dependencies are reported by
//! `/healthz/dependencies`, the metrics and their alerts instead, and a
//! request that needs a down one fails fast with a `503` naming it.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use dronedelivery_actors::health::DependencyStatus;

use crate::error::{ApiError, ServiceUnavailable};
use crate::state::AppState;

/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// Routes of the probes, with their documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(dependencies))
        .routes(routes!(metrics))
}

/// `GET /healthz`: `{"status": "OK"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    /// Always `OK`.
    #[schema(example = "OK")]
    pub status: String,
}

/// `GET /readyz`: `{"status": "ready", "role": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// Always `ready` (not ready is a 503 problem).
    #[schema(example = "ready")]
    pub status: String,
    /// What this process runs: `all`, `gateway` (HTTP API only) or `worker`
    /// (queue consumers and actors; its HTTP port serves only probes,
    /// metrics and the admin API).
    #[schema(example = "all")]
    pub role: String,
}

/// Liveness: answering at all is the signal, so it never checks backends (a
/// Redis outage must not get every replica restarted). Same body as the
/// original Package service's `/healthz`.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "liveness",
    tag = "probes",
    summary = "Liveness",
    description = "Answers as long as the process serves HTTP; never checks backends.",
    responses((status = 200, description = "Alive: `{\"status\": \"OK\"}`", body = Liveness))
)]
async fn healthz() -> Json<Liveness> {
    Json(Liveness {
        status: "OK".into(),
    })
}

/// Readiness: start-up is done, the actor tree is running and the engine is
/// not draining; otherwise 503 with the reason. Backends do not count (see
/// the module docs).
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readiness",
    tag = "probes",
    summary = "Readiness",
    description = "Ready once start-up is done and the actor tree runs, whatever the backends \
are doing (see `/healthz/dependencies`); 503 only while starting or draining.",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    let ready = state.engine.readiness().await;
    metrics::gauge!(dronedelivery_actors::metrics::READY).set(if ready.is_ok() {
        1.0
    } else {
        0.0
    });
    match ready {
        Ok(()) => Ok(Json(Readiness {
            status: "ready".into(),
            role: state.engine.role().name().into(),
        })),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            Err(ApiError::Unavailable(reason))
        }
    }
}

/// `GET /healthz/dependencies`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Dependencies {
    /// `up` when every dependency is, `degraded` otherwise.
    #[schema(example = "up")]
    pub status: String,
    /// Each dependency, as last probed (every 2 s).
    pub dependencies: Vec<DependencyStatus>,
}

/// What each backend is doing: information for operators, never a reason
/// to take the engine out of load balancing (always 200).
#[utoipa::path(
    get,
    path = "/healthz/dependencies",
    operation_id = "dependencies",
    tag = "probes",
    summary = "Dependency health",
    description = "Each dependency (queue and stores) with its backend, whether its last probe \
succeeded, the workflow's circuit breaker on it, the last error (credentials removed) and since when \
it is down. While one is down, requests that need it answer 503 at once with `dependency` naming it; \
the others are served. Always 200: use `/readyz` for readiness.",
    responses((status = 200, description = "The report", body = Dependencies))
)]
async fn dependencies(State(state): State<AppState>) -> Json<Dependencies> {
    let dependencies = state.engine.dependencies();
    let status = if dependencies.iter().all(|d| d.up) {
        "up"
    } else {
        "degraded"
    };
    Json(Dependencies {
        status: status.into(),
        dependencies,
    })
}

/// Prometheus scrape endpoint; the renderer refreshes gauges first.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "probes",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "The Prometheus text exposition format", body = String,
            content_type = "text/plain; version=0.0.4")
    )
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(CONTENT_TYPE, PROMETHEUS_TEXT)], (state.render_metrics)())
}
