//! `/api/deliveryrequests`: the ingestion API (the original Java service).
//!
//! Requests are validated here, then put on the queue; the workflow creates,
//! reschedules or cancels the delivery asynchronously. Unlike the original,
//! whose `@Async` send ran after the response, every answer here is sent only
//! once the broker accepted the message, so a 2xx means "queued", and a queue
//! outage is a 503 the client can retry instead of a silently lost request.

use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use axum::{Json, Router};
use dronedelivery_actors::domain::{DeliveryRequest, DeliveryStage, RescheduleRequest};
use dronedelivery_actors::metrics::DELIVERIES_ACCEPTED_TOTAL;
use dronedelivery_actors::ports::{Operation, QueueMessage};

use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::{correlation_id, encode_segment, AppState};

/// Routes of the ingestion API.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/deliveryrequests", post(create))
        .route(
            "/api/deliveryrequests/{id}",
            patch(reschedule).delete(cancel),
        )
}

/// `POST /api/deliveryrequests`: validates an `ExternalDelivery`, mints its
/// id (UUIDv4; a `deliveryId` in the body is ignored, as in the original),
/// queues it and answers **202** with the echo and
/// `Location: /api/deliveries/{id}`, where the client polls for the result.
async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let id = uuid::Uuid::new_v4().to_string();
    let request = DeliveryRequest::from_external(&body, id.clone())?;
    let message = QueueMessage::new(
        Operation::Delivery,
        &request.to_message_json(),
        correlation_id(&headers),
    );
    state.engine.submit(message).await?;
    metrics::counter!(DELIVERIES_ACCEPTED_TOTAL).increment(1);
    tracing::info!(delivery_id = %id, "delivery request queued");
    let location = format!("/api/deliveries/{}", encode_segment(&id));
    Ok((
        StatusCode::ACCEPTED,
        [(LOCATION, location)],
        Json(request.to_external_json()),
    )
        .into_response())
}

/// `PATCH /api/deliveryrequests/{id}`: validates the new pickup, dropoff,
/// deadline or pickup time and queues a reschedule. Answers **200** with the
/// id as plain text, as the original did.
///
/// A delivery whose package is already on board (`HeadedToDropoff`) or that
/// has ended (`Completed`, `Cancelled`) is refused with 409 now rather than
/// dead-lettered later. An id the store does not know yet is still queued: the
/// delivery may have been accepted a moment ago and not processed yet; the
/// workflow retries and dead-letters the message if it never appears.
async fn reschedule(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<String, ApiError> {
    let request = RescheduleRequest::from_external(&body, id.clone())?;
    if let Some(record) = state.engine.delivery(&id).await? {
        if record.stage.is_terminal() || record.stage == DeliveryStage::HeadedToDropoff {
            return Err(ApiError::Conflict(format!(
                "cannot reschedule: delivery is {}",
                record.stage.name()
            )));
        }
    }
    let message = QueueMessage::new(
        Operation::Reschedule,
        &request.to_message_json(),
        correlation_id(&headers),
    );
    state.engine.submit(message).await?;
    tracing::info!(delivery_id = %id, "reschedule queued");
    Ok(id)
}

/// `DELETE /api/deliveryrequests/{id}`: queues a cancellation and answers
/// **204**. A completed delivery cannot be cancelled (409); an already
/// cancelled one answers 204 without queueing anything, so the call is
/// idempotent.
///
/// Unknown ids are still queued, on purpose: a delivery POSTed a moment ago
/// may not have been processed by the workflow yet, and refusing its
/// cancellation with a 404 would be wrong. The workflow retries a cancel whose
/// delivery does not exist and dead-letters it if it never appears.
async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    match state.engine.delivery(&id).await?.map(|r| r.stage) {
        Some(DeliveryStage::Completed) => {
            return Err(ApiError::Conflict(
                "cannot cancel: delivery is Completed".into(),
            ));
        }
        Some(DeliveryStage::Cancelled) => return Ok(StatusCode::NO_CONTENT),
        _ => {}
    }
    let message = QueueMessage::new(
        Operation::Cancel,
        &serde_json::Value::String(id.clone()),
        correlation_id(&headers),
    );
    state.engine.submit(message).await?;
    tracing::info!(delivery_id = %id, "cancellation queued");
    Ok(StatusCode::NO_CONTENT)
}
