//! Probes and metrics: `/healthz` (liveness), `/readyz` (readiness),
//! `/metrics` (Prometheus).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ServiceUnavailable};
use crate::state::AppState;

/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// Routes of the probes, with their documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
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

/// Readiness: the actor tree is running and every backend answers; otherwise
/// 503 with the reason, so the load balancer stops sending traffic.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readiness",
    tag = "probes",
    summary = "Readiness",
    description = "Ready when the actor tree runs and every backend answers.",
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
