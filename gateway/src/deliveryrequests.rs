//! `/api/deliveryrequests`: the ingestion API (the original Java service).
//!
//! Requests are validated here, then put on the queue; the workflow creates,
//! reschedules or cancels the delivery asynchronously. Unlike the original,
//! whose `@Async` send ran after the response, every answer here is sent only
//! once the broker accepted the message, so a 2xx means "queued", and a queue
//! outage is a 503 the client can retry instead of a silently lost request.
//!
//! `POST` also honours an `Idempotency-Key` header, so that such a retry does
//! not create a second delivery: see [`crate::idempotency`].

use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dronedelivery_actors::domain::{
    DeliveryRecord, DeliveryRequest, PackageInfo, PackageSize, RescheduleRequest, ValidationError,
};
use dronedelivery_actors::metrics::DELIVERIES_ACCEPTED_TOTAL;
use dronedelivery_actors::ports::{Operation, QueueMessage};
use serde_json::Value;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{
    ApiError, InternalError, PayloadTooLarge, Problem, ServiceUnavailable, TooManyRequests,
    UnsupportedMediaType,
};
use crate::extract::JsonBody;
use crate::idempotency::{self, StoredAnswer, KEY_TTL};
use crate::lenient::{
    at_least_one_of, check_pickup_time, confirmation_name, ignored, integral_float_as_integer,
    null, LenientBoolean, LenientText, LenientTime, LenientWeight, NonBlankText,
};
use crate::state::{correlation_id, encode_segment, AppState};

/// Routes of the ingestion API, with their documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(reschedule, cancel))
}

/// `POST /api/deliveryrequests`: validates an `ExternalDelivery`, mints its
/// id (UUIDv4; a `deliveryId` in the body is ignored, as in the original),
/// queues it and answers **202** with the echo and
/// `Location: /api/deliveries/{id}`, where the client polls for the result.
///
/// With an `Idempotency-Key` header the id is derived from the key and the
/// first answer is replayed to repeats; see [`crate::idempotency`].
#[utoipa::path(
    post,
    path = "/api/deliveryrequests",
    operation_id = "createDeliveryRequest",
    tag = "deliveryrequests",
    summary = "Request a delivery",
    description = "Validates the request, mints the delivery's id, queues it and answers 202 \
once the broker accepted the message. The delivery is created asynchronously: poll \
the `Location`. With an `Idempotency-Key` the id is derived from the key, and a repeat \
with the same key and request gets the first answer again (`Idempotent-Replayed: true`).",
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 200, pattern = "^[!-~]+$",
            description = "Makes retries safe: 1 to 200 visible ASCII characters, sent once. Kept 24 h; never reuse one for another delivery.")
    ),
    request_body(content = ExternalDelivery, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued; the body echoes the request with the new `deliveryId`",
            body = AcceptedDelivery,
            headers(
                ("Location" = String, description = "`/api/deliveries/{deliveryId}`, where the delivery appears once created"),
                ("Idempotent-Replayed" = bool, description = "`true` on an answer replayed for a repeated `Idempotency-Key`")
            )),
        (status = 400, description = "Invalid request (every invalid field listed in `errors`), a package no drone of the fleet can carry (`packageInfo.size` or `packageInfo.weight`, naming the limit), malformed JSON, or an invalid `Idempotency-Key`",
            body = Problem, content_type = "application/problem+json"),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "The `Idempotency-Key` was already used with a different request",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, response = TooManyRequests),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(mut body): JsonBody,
) -> Result<Response, ApiError> {
    let key = idempotency::key(&headers)?;
    integral_float_as_integer(&mut body, "pickupTime");
    let mut request = DeliveryRequest::from_external(&body, String::new())?;
    // A token creates deliveries for its own owner only.
    caller.must_be_owner(&request.owner_id)?;
    check_pickup_time(request.pickup_time)?;
    // A package no drone of the fleet can ever carry is refused now, not
    // left waiting for a drone that does not exist.
    state
        .engine
        .fleet_spec()
        .check_payload(request.package.size, request.package.weight)
        .map_err(ValidationError::from)?;
    let Some(key) = key else {
        request.delivery_id = uuid::Uuid::new_v4().to_string();
        queue_delivery(&state, &request, &headers).await?;
        count_accepted(&state);
        return Ok(accepted(&request));
    };
    request.delivery_id = idempotency::delivery_id(&request.owner_id, &key);
    let answer = answer(&request);
    let stored = state
        .engine
        .idempotency()
        .put_if_absent(
            &idempotency::store_key(&request.owner_id, &key),
            &answer.to_json(),
            KEY_TTL,
        )
        .await?;
    let Some(stored) = stored else {
        // First request with this key: its answer is stored already, but is
        // only sent once the message is queued (a failed submit is a 503,
        // and a retry queues again, below).
        queue_delivery(&state, &request, &headers).await?;
        count_accepted(&state);
        return Ok(answer.response(false));
    };
    let stored = StoredAnswer::from_json(&stored)?;
    if stored.fingerprint != answer.fingerprint {
        return Err(ApiError::Unprocessable(
            "this Idempotency-Key was already used with a different request".into(),
        ));
    }
    if state.engine.delivery(&stored.delivery_id).await?.is_none() {
        // Not created yet: the first request's submit may have failed, or its
        // message is still queued. Queue it (again): the workflow creates a
        // delivery once per id, so a duplicate is ignored.
        tracing::info!(delivery_id = %stored.delivery_id, "idempotent repeat of a delivery not created yet: queueing it again");
        queue_delivery(&state, &request, &headers).await?;
    }
    Ok(stored.response(true))
}

/// The 202 answer to a delivery request without an idempotency key: the
/// echo serialised straight from the request, nothing stored.
fn accepted(request: &DeliveryRequest) -> Response {
    let location = delivery_location(&request.delivery_id);
    let mut response = (
        StatusCode::ACCEPTED,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        request.external_body(),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// `Location` of an accepted delivery: where it appears once created.
fn delivery_location(id: &str) -> String {
    format!("/api/deliveries/{}", encode_segment(id))
}

/// The 202 answer to a delivery request with an idempotency key (stored
/// under that key).
fn answer(request: &DeliveryRequest) -> StoredAnswer {
    StoredAnswer {
        fingerprint: idempotency::fingerprint(&request.to_message_json()),
        delivery_id: request.delivery_id.clone(),
        status: StatusCode::ACCEPTED.as_u16(),
        location: delivery_location(&request.delivery_id),
        body: request.to_external_json(),
    }
}

/// Counts a new delivery accepted: the Prometheus counter of this process
/// and the count on its card, which `GET /api/fleet` sums over the cluster.
fn count_accepted(state: &AppState) {
    metrics::counter!(DELIVERIES_ACCEPTED_TOTAL).increment(1);
    state.engine.context().counts.accepted();
}

/// Puts a create on the queue; returns once the broker accepted it. The
/// accepted-deliveries metric is the caller's: a re-queued idempotent repeat
/// is not a new delivery.
async fn queue_delivery(
    state: &AppState,
    request: &DeliveryRequest,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let mut message = QueueMessage::with_body(
        Operation::Delivery,
        request.message_body(),
        correlation_id(headers),
    );
    // An expedited create takes the queue's expedited lane, ahead of any
    // backlog of normal messages. Its lane is remembered first, so that
    // what follows it before the workflow has created the delivery takes
    // the same lane, behind it (see `follow_up_lane`).
    if request.expedited {
        match state
            .engine
            .idempotency()
            .put_if_absent(&lane_key(&request.delivery_id), EXPEDITED, KEY_TTL)
            .await
        {
            Ok(_) => message.expedited = true,
            Err(e) => {
                tracing::warn!(delivery_id = %request.delivery_id, error = %e, "could not remember the expedited lane; the create goes in the normal lane");
            }
        }
    }
    state.engine.submit(message).await?;
    tracing::info!(delivery_id = %request.delivery_id, "delivery request queued");
    Ok(())
}

/// Marker of a create sent in the expedited lane (a JSON document, like
/// everything else the stores hold). Public for the stores' ceiling bench,
/// which writes it as the gateway does.
pub const EXPEDITED: &str = r#"{"lane":"expedited"}"#;

/// Where the lane of a delivery's create is remembered (with the
/// idempotency keys, for [`KEY_TTL`]).
pub fn lane_key(delivery_id: &str) -> String {
    format!("lane:{delivery_id}")
}

/// Whether a reschedule or cancel of delivery `id` takes the expedited
/// lane: the lane its create took. Messages of one delivery then stay in
/// one lane, in order (a follow-up never overtakes its create, nor waits
/// behind a normal backlog its expedited create skipped). The stored
/// delivery says it once created; before that, the marker its create left.
async fn follow_up_lane(
    state: &AppState,
    record: Option<&DeliveryRecord>,
    id: &str,
) -> Result<bool, ApiError> {
    if let Some(record) = record {
        return Ok(record.delivery.expedited);
    }
    Ok(state
        .engine
        .idempotency()
        .get(&lane_key(id))
        .await?
        .as_deref()
        == Some(EXPEDITED))
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
#[utoipa::path(
    patch,
    path = "/api/deliveryrequests/{id}",
    operation_id = "rescheduleDelivery",
    tag = "deliveryrequests",
    summary = "Reschedule a delivery",
    description = "Validates the changes and queues a reschedule; answers 200 with the id as \
plain text once the broker accepted the message. A delivery whose package is on board \
or that has ended is refused (409). An id not known yet is still queued: the delivery \
may have been requested a moment ago.",
    params(("id" = String, Path, description = "Delivery id")),
    request_body(content = ExternalRescheduledDelivery, content_type = "application/json"),
    responses(
        (status = 200, description = "Queued; the body is the delivery id", body = String, content_type = "text/plain"),
        (status = 400, description = "Invalid fields (listed in `errors`), nothing to change, or malformed JSON",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The delivery is headed to its dropoff, completed or cancelled",
            body = Problem, content_type = "application/problem+json"),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn reschedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(mut body): JsonBody,
) -> Result<String, ApiError> {
    integral_float_as_integer(&mut body, "pickupTime");
    let request = RescheduleRequest::from_external(&body, id.clone())?;
    check_pickup_time(request.pickup_time)?;
    let record = writable(&state, &caller, &id).await?;
    if let Some(record) = &record {
        // The same rule the delivery's actor applies when the message arrives.
        if let Err(stage) = record.check_reschedule() {
            return Err(ApiError::Conflict(format!(
                "cannot reschedule: delivery is {}",
                stage.name()
            )));
        }
    }
    let mut message = QueueMessage::new(
        Operation::Reschedule,
        &request.to_message_json(),
        correlation_id(&headers),
    );
    message.expedited = follow_up_lane(&state, record.as_ref(), &id).await?;
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
#[utoipa::path(
    delete,
    path = "/api/deliveryrequests/{id}",
    operation_id = "cancelDelivery",
    tag = "deliveryrequests",
    summary = "Cancel a delivery",
    description = "Queues a cancellation and answers 204 once the broker accepted it. Idempotent: \
an already cancelled delivery answers 204 without queueing anything. An id not known yet \
is still queued.",
    params(("id" = String, Path, description = "Delivery id")),
    responses(
        (status = 204, description = "Queued (or already cancelled)"),
        (status = 409, description = "The delivery is completed",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, response = TooManyRequests),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    // The same rule the delivery's actor applies when the message arrives.
    let record = writable(&state, &caller, &id).await?;
    match record.as_ref().map(DeliveryRecord::check_cancel) {
        Some(Err(stage)) => {
            return Err(ApiError::Conflict(format!(
                "cannot cancel: delivery is {}",
                stage.name()
            )));
        }
        Some(Ok(false)) => return Ok(StatusCode::NO_CONTENT),
        Some(Ok(true)) | None => {}
    }
    let mut message = QueueMessage::new(
        Operation::Cancel,
        &serde_json::Value::String(id.clone()),
        correlation_id(&headers),
    );
    message.expedited = follow_up_lane(&state, record.as_ref(), &id).await?;
    state.engine.submit(message).await?;
    tracing::info!(delivery_id = %id, "cancellation queued");
    Ok(StatusCode::NO_CONTENT)
}

/// The stored delivery `id`, if any, when `caller` may change it. A caller
/// scoped to its own deliveries gets `404` for another owner's, and for an
/// id not stored yet: its owner cannot be checked before the workflow has
/// created it (retry once it appears). Callers that read every delivery,
/// or any caller with authentication off, may still queue a change for an
/// id not known yet.
async fn writable(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Option<DeliveryRecord>, ApiError> {
    if caller.reads_everything() {
        return Ok(state.engine.delivery(id).await?);
    }
    crate::deliveries::readable(state, caller, id)
        .await
        .map(Some)
}

// ---------------------------------------------------------------------------
// Request and response bodies, as documented. Schema only: the body is read
// leniently from a `serde_json::Value` by the domain's `from_external`, and
// the 202 echo is built by `DeliveryRequest::external_body`; these types
// describe that wire format.
// ---------------------------------------------------------------------------

/// `POST /api/deliveryrequests`: a delivery request (the original's
/// `ExternalDelivery`). Read leniently: numbers and booleans are accepted
/// where text is expected, `null` is taken for a member left out, and
/// unknown members are ignored.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalDelivery {
    /// Ignored: the gateway mints the id (or derives it from the
    /// `Idempotency-Key`).
    #[schema(schema_with = minted_delivery_id)]
    pub delivery_id: Option<Value>,
    /// The owner (the account billed).
    pub owner_id: NonBlankText,
    /// Where to pick the package up: `"lat,lon"`, `"altitude,lat,lon"` (in
    /// range: latitude -90 to 90, longitude -180 to 180) or any other text
    /// (mapped to a fixed point in the service area).
    #[schema(example = "47.6062,-122.3321")]
    pub pickup_location: NonBlankText,
    /// Where to drop it off, in the same forms. `dropoffLocation` is
    /// accepted too.
    #[serde(rename = "dropOffLocation")]
    #[schema(example = "drop off")]
    pub drop_off_location: NonBlankText,
    /// Requested pickup time.
    pub pickup_time: Option<LenientTime>,
    /// Free-text deadline, kept as given.
    pub deadline: Option<LenientText>,
    /// Expedited delivery (default false).
    pub expedited: Option<LenientBoolean>,
    /// How the recipient confirms.
    #[schema(schema_with = confirmation_name)]
    pub confirmation_required: String,
    /// The package.
    pub package_info: ExternalPackageInfo,
}

fn minted_delivery_id() -> Schema {
    ignored("Ignored: the gateway mints the id (or derives it from the `Idempotency-Key`).")
}

/// The package of a delivery request.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalPackageInfo {
    /// Client-chosen package id.
    pub package_id: NonBlankText,
    /// Size class, case-insensitive on input.
    pub size: PackageSize,
    /// Weight (default 0).
    pub weight: Option<LenientWeight>,
    /// Free tag.
    pub tag: Option<LenientText>,
}

/// The 202 answer to a delivery request: the request as validated, with the
/// delivery's id.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceptedDelivery {
    /// The new delivery's id; poll `GET /api/deliveries/{deliveryId}`.
    pub delivery_id: String,
    /// The owner.
    pub owner_id: String,
    /// Pickup, as given.
    pub pickup_location: String,
    /// Dropoff, as given.
    #[serde(rename = "dropOffLocation")]
    pub drop_off_location: String,
    /// Requested pickup time (RFC 3339, UTC, milliseconds), or null.
    #[schema(required = true, format = DateTime)]
    pub pickup_time: Option<String>,
    /// Deadline, as given (empty when none).
    pub deadline: String,
    /// Expedited flag.
    pub expedited: bool,
    /// How the recipient confirms.
    #[schema(schema_with = confirmation_name)]
    pub confirmation_required: String,
    /// The package.
    pub package_info: PackageInfo,
}

/// `PATCH /api/deliveryrequests/{id}`: what to change (the original's
/// `ExternalRescheduledDelivery`). At least one of `pickupLocation`,
/// `dropOffLocation`, `deadline` or `pickupTime` must be given (not
/// `null`, which is taken for a member left out).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RescheduleChanges {
    /// Ignored: the path id is used.
    #[schema(schema_with = path_delivery_id)]
    pub delivery_id: Option<Value>,
    /// New pickup, in the forms of a delivery request.
    pub pickup_location: Option<NonBlankText>,
    /// New dropoff (`dropoffLocation` is accepted too).
    #[serde(rename = "dropOffLocation")]
    pub drop_off_location: Option<NonBlankText>,
    /// New deadline (may be empty).
    pub deadline: Option<LenientText>,
    /// New pickup time.
    pub pickup_time: Option<LenientTime>,
}

fn path_delivery_id() -> Schema {
    ignored("Ignored: the path id is used.")
}

/// The documented body of `PATCH /api/deliveryrequests/{id}`: the members
/// of [`RescheduleChanges`], at least one of the four changes present.
#[derive(Debug)]
pub struct ExternalRescheduledDelivery;

impl PartialSchema for ExternalRescheduledDelivery {
    fn schema() -> RefOr<Schema> {
        let changes = [
            "pickupLocation",
            "dropOffLocation",
            "deadline",
            "pickupTime",
        ];
        let not_given: Vec<(&str, Value)> = changes.iter().map(|c| (*c, null())).collect();
        at_least_one_of(RescheduleChanges::schema(), &not_given)
    }
}

impl ToSchema for ExternalRescheduledDelivery {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        RescheduleChanges::schemas(schemas);
    }
}
