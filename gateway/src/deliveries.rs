//! `/api/deliveries`: reading deliveries (the original Delivery service's
//! GET routes). Reads go straight to the store through the engine handle and
//! never wake a delivery actor, so polling clients cost no actor work.
//!
//! Writes (PUT, PATCH, DELETE) were internal calls of the original workflow;
//! here the actors own them, so they have no routes. What the recipient posts
//! (notify-me requests, confirmations) is in [`crate::recipient`], the live
//! event stream in [`crate::tracking`].

use axum::extract::{Path, State};
use axum::Json;
use dronedelivery_actors::domain::{Delivery, DeliveryRecord, DeliveryStatus, UserAccount};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, InternalError, Problem, ServiceUnavailable};
use crate::state::AppState;

/// Routes of the delivery read API, with their documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(delivery))
        .routes(routes!(public_delivery))
        .routes(routes!(owner))
        .routes(routes!(status))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("delivery {id} not found"))
}

async fn record(state: &AppState, id: &str) -> Result<DeliveryRecord, ApiError> {
    state
        .engine
        .delivery(id)
        .await?
        .ok_or_else(|| not_found(id))
}

/// The record of `id` when `caller` may read it; `404` otherwise, for
/// another owner's delivery too, so that ids do not leak (see
/// [`crate::auth`]).
pub(crate) async fn readable(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<DeliveryRecord, ApiError> {
    let record = record(state, id).await?;
    if caller.may_read(&record.delivery.owner.user_id) {
        Ok(record)
    } else {
        Err(not_found(id))
    }
}

/// `Ok` when `caller` may read delivery `id`, without reading it when the
/// caller reads every delivery (or authentication is off).
pub(crate) async fn check_readable(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<(), ApiError> {
    if caller.reads_everything() {
        return Ok(());
    }
    readable(state, caller, id).await.map(|_| ())
}

/// `GET /api/deliveries/{id}`: the delivery document, field for field the
/// original's, with enums as integers.
#[utoipa::path(
    get,
    path = "/api/deliveries/{id}",
    operation_id = "getDelivery",
    tag = "deliveries",
    summary = "Read a delivery",
    description = "The delivery document, field for field the original Delivery service's, \
with enums as integers.",
    params(("id" = String, Path, description = "Delivery id")),
    responses(
        (status = 200, description = "The delivery", body = Delivery),
        (status = 404, description = "No such delivery (yet: a delivery appears once its queued request is processed)",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn delivery(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Delivery>, ApiError> {
    Ok(Json(readable(&state, &caller, &id).await?.delivery))
}

/// `GET /api/deliveries/public/{id}` (the path the original ingress
/// rewrote public calls to): the same as [`delivery`].
#[utoipa::path(
    get,
    path = "/api/deliveries/public/{id}",
    operation_id = "getPublicDelivery",
    tag = "deliveries",
    summary = "Read a delivery (public path)",
    description = "The same as `GET /api/deliveries/{id}`, under the path the original \
public ingress rewrote calls to.",
    params(("id" = String, Path, description = "Delivery id")),
    responses(
        (status = 200, description = "The delivery", body = Delivery),
        (status = 404, description = "No such delivery",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn public_delivery(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
) -> Result<Json<Delivery>, ApiError> {
    delivery(state, caller, id).await
}

/// `GET /api/deliveries/{id}/owner`: `{"userId","accountId"}`.
#[utoipa::path(
    get,
    path = "/api/deliveries/{id}/owner",
    operation_id = "getDeliveryOwner",
    tag = "deliveries",
    summary = "Read a delivery's owner",
    params(("id" = String, Path, description = "Delivery id")),
    responses(
        (status = 200, description = "The owner's user and account", body = UserAccount),
        (status = 404, description = "No such delivery",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn owner(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<UserAccount>, ApiError> {
    Ok(Json(readable(&state, &caller, &id).await?.delivery.owner))
}

/// `GET /api/deliveries/{id}/status`: stage, ETAs and last known location,
/// real values where the original returned a hard-coded stub.
#[utoipa::path(
    get,
    path = "/api/deliveries/{id}/status",
    operation_id = "getDeliveryStatus",
    tag = "deliveries",
    summary = "Read a delivery's status",
    description = "Stage, ETAs and last known location (the drone's position while one is \
assigned).",
    params(("id" = String, Path, description = "Delivery id")),
    responses(
        (status = 200, description = "The status", body = DeliveryStatus),
        (status = 404, description = "No such delivery",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeliveryStatus>, ApiError> {
    Ok(Json(readable_status(&state, &caller, &id).await?))
}

/// The status of delivery `id` when `caller` may read it (`404`
/// otherwise), from one read of its record.
pub(crate) async fn readable_status(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<DeliveryStatus, ApiError> {
    let record = readable(state, caller, id).await?;
    Ok(state.engine.status_of(&record).await?)
}
