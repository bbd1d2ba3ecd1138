//! Probes and metrics: `/healthz` (liveness), `/readyz` (readiness),
//! `/metrics` (Prometheus).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// Routes of the probes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Liveness: answering at all is the signal, so it never checks backends (a
/// Redis outage must not get every replica restarted). Same body as the
/// original Package service's `/healthz`.
async fn healthz() -> Json<Value> {
    Json(json!({"status": "OK"}))
}

/// Readiness: the actor tree is running and every backend answers; otherwise
/// 503 with the reason, so the load balancer stops sending traffic.
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match state.engine.readiness().await {
        Ok(()) => Ok(Json(json!({"status": "ready"}))),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            Err(ApiError::Unavailable(reason))
        }
    }
}

/// Prometheus scrape endpoint; the renderer refreshes gauges first.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(CONTENT_TYPE, PROMETHEUS_TEXT)], (state.render_metrics)())
}
