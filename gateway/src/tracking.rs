//! `GET /api/deliveries/{id}/events`: live tracking of one delivery as a
//! server-sent event stream (`text/event-stream`).
//!
//! ## What is sent
//! - `event: stage`, one per tracking event, oldest first: the stored
//!   [`TrackingEvent`] (`deliveryId`, `stage`, `location`, `at`, and
//!   `atRisk` with the reason on the event that marks the delivery at risk
//!   of missing its deadline, in the stage it is in) plus `stageName`. Its SSE `id` is the event's 1-based position in the
//!   delivery's history, so a reconnecting `EventSource` (which sends
//!   `Last-Event-ID`) gets only the stage events it missed.
//! - `event: position`, `{"droneId","location","stage","stageName",
//!   "pickupETA","deliveryETA"}`, whenever the status's `lastKnownLocation`
//!   changes (the first known position included).
//! - Comments every 15 s while nothing else is sent (keep-alive), so proxies
//!   do not close an idle connection.
//!
//! The stream ends by itself after the terminal stage event (`Completed` or
//! `Cancelled`). A client reconnecting after that with a `Last-Event-ID` that
//! has seen every event gets **204**, which tells an `EventSource` to stop
//! reconnecting. An unknown delivery is a 404 problem.
//!
//! ## How
//! The handler polls the stores through the engine handle every
//! [`POLL_INTERVAL`] (`status`, then `events`) instead of subscribing to the
//! delivery actor. Reads never wake an actor, and the store is shared by
//! every engine process, so the stream works on any gateway replica, whether
//! or not the delivery's actor lives in that process (or is passivated). The
//! price is up to one poll interval of latency and two store reads per
//! interval per open stream.
//!
//! The stream is an `unfold` over that state, owned by the response body: when
//! the client disconnects, hyper drops the body and with it the stream, so no
//! task is left polling. A stream also ends after [`MAX_LIFETIME`] whatever
//! happens (an `EventSource` then reconnects with `Last-Event-ID`). Transient
//! store errors are logged and retried at the next poll.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header::HeaderName;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use dronedelivery_actors::domain::{DeliveryStage, DeliveryStatus, Location, TrackingEvent};
use dronedelivery_actors::Engine;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::Instant;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{OpenApi, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, InternalError, Problem, ServiceUnavailable};
use crate::state::AppState;

/// How often an open stream reads the delivery's status and events.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Longest an open stream lives, so none can run forever.
pub const MAX_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// Polls after which a terminal status whose terminal event has still not
/// been read ends the stream anyway (a store writing the record and its event
/// in two steps).
const TERMINAL_GRACE_POLLS: u32 = 8;

/// Route of the tracking stream, with its documentation and the schemas of
/// its events.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(EventSchemas::openapi()).routes(routes!(events))
}

/// `event: stage` of the tracking stream: one stage change, oldest first.
/// Its SSE `id` is the event's 1-based position in the delivery's history.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageEvent<'a> {
    /// The stored event.
    #[serde(flatten)]
    pub event: &'a TrackingEvent,
    /// The stage's name.
    #[schema(example = "HeadedToPickup")]
    pub stage_name: &'static str,
}

/// `event: position` of the tracking stream: sent whenever the delivery's
/// last known location changes.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PositionEvent<'a> {
    /// The assigned drone.
    #[schema(required = true)]
    pub drone_id: Option<&'a str>,
    /// Where the drone is.
    pub location: Location,
    /// Stage code.
    pub stage: DeliveryStage,
    /// Stage name.
    pub stage_name: &'a str,
    /// When the drone is expected at the pickup.
    #[serde(rename = "pickupETA")]
    #[schema(required = true)]
    pub pickup_eta: Option<DateTime<Utc>>,
    /// When the package is expected at the dropoff.
    #[serde(rename = "deliveryETA")]
    #[schema(required = true)]
    pub delivery_eta: Option<DateTime<Utc>>,
}

/// One event of the stream, as the `schema` of a `text/event-stream`
/// response describes it: each event, read as `{event, id, data}` (what an
/// `EventSource` gives a listener), is a `stage` or a `position` event whose
/// `data` is the JSON of a [`StageEvent`] or a [`PositionEvent`]. OpenAPI
/// 3.2 calls this the media type's `itemSchema`; before 3.2, tools read
/// `schema` that way for event streams. `contentSchema` names the data's
/// schema (JSON Schema 2020-12; an annotation, so validators do not parse
/// `data`).
#[derive(Debug)]
pub struct TrackingStreamEvent;

impl TrackingStreamEvent {
    /// The schema of one kind of event.
    fn kind(event: &str, data: &str, description: &str, id_required: bool) -> ObjectBuilder {
        let json_data = ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/json")
            .description(Some(format!("A `{data}` as JSON")))
            .extensions(Some(Extensions::from_iter([(
                "contentSchema",
                json!({ "$ref": format!("#/components/schemas/{data}") }),
            )])));
        let id = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[1-9][0-9]*$"))
            .description(Some(if id_required {
                "The event's 1-based position in the delivery's stage history (send it back as `Last-Event-ID`)"
            } else {
                "Not sent with it: an `EventSource` reports the id of the last stage event before it"
            }));
        let builder = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(description))
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([event])),
            )
            .required("event")
            .property("id", id)
            .property("data", json_data)
            .required("data");
        if id_required {
            builder.required("id")
        } else {
            builder
        }
    }
}

impl PartialSchema for TrackingStreamEvent {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(Self::kind(
                "stage",
                "StageEvent",
                "A stage change, oldest first",
                true,
            ))
            .item(Self::kind(
                "position",
                "PositionEvent",
                "The drone moved (the delivery's last known location changed)",
                false,
            ))
            .description(Some(
                "One event of the tracking stream (comments, sent as keep-alives, are not events)",
            ))
            .into()
    }
}

impl ToSchema for TrackingStreamEvent {}

/// The schemas of the stream's event data, which [`TrackingStreamEvent`]
/// names by reference, registered as components.
#[derive(OpenApi)]
#[openapi(components(schemas(StageEvent, PositionEvent)))]
struct EventSchemas;

/// One thing to send.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    /// A stage event: its 0-based position in the history, and its JSON.
    Stage(usize, Value),
    /// A position update.
    Position(Value),
}

impl Item {
    fn into_event(self) -> Event {
        match self {
            Self::Stage(index, data) => Event::default()
                .event("stage")
                .id((index + 1).to_string())
                .data(data.to_string()),
            Self::Position(data) => Event::default().event("position").data(data.to_string()),
        }
    }
}

fn stage_item(index: usize, event: &TrackingEvent) -> Item {
    let data = StageEvent {
        event,
        stage_name: event.stage.name(),
    };
    Item::Stage(index, serde_json::to_value(data).unwrap_or(Value::Null))
}

fn position_item(status: &DeliveryStatus, location: Location) -> Item {
    let data = PositionEvent {
        drone_id: status.drone_id.as_deref(),
        location,
        stage: status.stage,
        stage_name: &status.stage_name,
        pickup_eta: status.pickup_eta,
        delivery_eta: status.delivery_eta,
    };
    Item::Position(serde_json::to_value(data).unwrap_or(Value::Null))
}

/// What a stream has sent and still has to send: the pure part of a
/// [`Tracker`].
#[derive(Debug, Default)]
struct Progress {
    /// Stage events sent (or skipped through `Last-Event-ID`).
    sent: usize,
    last_location: Option<Location>,
    queue: VecDeque<Item>,
    terminal_polls: u32,
    finished: bool,
}

impl Progress {
    /// Queues what is new in `status` and `events` (read in that order: a
    /// store that saves a record with its event at once then always shows a
    /// terminal status's terminal event). After a terminal status the stream
    /// is finished once that event is queued, so it is the last one sent.
    fn update(&mut self, status: &DeliveryStatus, events: &[TrackingEvent]) {
        for (index, event) in events.iter().enumerate().skip(self.sent) {
            self.queue.push_back(stage_item(index, event));
        }
        self.sent = self.sent.max(events.len());
        if status.stage.is_terminal() {
            self.terminal_polls += 1;
            let seen_end = events.last().is_some_and(|e| e.stage.is_terminal());
            self.finished = seen_end || self.terminal_polls >= TERMINAL_GRACE_POLLS;
        } else if let Some(location) = status.last_known_location {
            if self.last_location != Some(location) {
                self.last_location = Some(location);
                self.queue.push_back(position_item(status, location));
            }
        }
    }
}

/// The state of one open stream.
struct Tracker {
    engine: Engine,
    id: String,
    progress: Progress,
    ends_at: Instant,
}

impl Tracker {
    async fn poll(&mut self) {
        let status = match self.engine.status(&self.id).await {
            Ok(Some(status)) => status,
            Ok(None) => {
                // Expired (retention) while watched: nothing more will come.
                self.progress.finished = true;
                return;
            }
            Err(e) => {
                tracing::warn!(delivery_id = %self.id, error = %e, "tracking stream: status unavailable");
                return;
            }
        };
        match self.engine.events(&self.id).await {
            Ok(events) => self.progress.update(&status, &events),
            Err(e) => {
                tracing::warn!(delivery_id = %self.id, error = %e, "tracking stream: events unavailable");
            }
        }
    }

    /// The next SSE event, waiting for one as long as the stream lives.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(item) = self.progress.queue.pop_front() {
                return Some((Ok(item.into_event()), self));
            }
            if self.progress.finished || Instant::now() >= self.ends_at {
                return None;
            }
            tokio::time::sleep_until((Instant::now() + POLL_INTERVAL).min(self.ends_at)).await;
            if Instant::now() < self.ends_at {
                self.poll().await;
            }
        }
    }
}

/// `Last-Event-ID` as a count of stage events already seen.
fn last_event_id(headers: &HeaderMap) -> usize {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
}

/// `GET /api/deliveries/{id}/events`: see the [module docs](self).
#[utoipa::path(
    get,
    path = "/api/deliveries/{id}/events",
    operation_id = "trackDelivery",
    tag = "tracking",
    summary = "Track a delivery live",
    description = "A server-sent event stream (`text/event-stream`):\n\
- `event: stage`, one per stage change, oldest first; `data` is a `StageEvent` and the \
SSE `id` its 1-based position in the history, so a reconnecting client sending \
`Last-Event-ID` gets only what it missed;\n\
- `event: position`, whenever the last known location changes; `data` is a `PositionEvent`;\n\
- a comment every 15 s while nothing else is sent.\n\n\
The stream ends after the terminal stage (`Completed` or `Cancelled`), or after an hour. \
Reconnecting after the end with a `Last-Event-ID` that saw every event gets 204.",
    params(
        ("id" = String, Path, description = "Delivery id"),
        ("Last-Event-ID" = Option<u64>, Header, nullable = false, description = "Stage events already received (the last SSE `id` seen)")
    ),
    responses(
        (status = 200, description = "The event stream. Its schema is that of each event (`TrackingStreamEvent`): the `data` of `stage` events is a `StageEvent`, of `position` events a `PositionEvent` (JSON)",
            body = TrackingStreamEvent, content_type = "text/event-stream"),
        (status = 204, description = "The delivery has ended and every event was already received: stop reconnecting"),
        (status = 404, description = "No such delivery",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let status = crate::deliveries::readable_status(&state, &caller, &id).await?;
    let engine = state.engine.clone();
    let stored = engine.events(&id).await?;
    let seen = last_event_id(&headers).min(stored.len());
    if status.stage.is_terminal() && seen > 0 && seen == stored.len() {
        // Everything was sent before: tell the EventSource to stop.
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let mut progress = Progress {
        sent: seen,
        ..Progress::default()
    };
    progress.update(&status, &stored);
    let tracker = Tracker {
        engine,
        id,
        progress,
        ends_at: Instant::now() + MAX_LIFETIME,
    };
    let stream = futures::stream::unfold(tracker, Tracker::next);
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    // Ask reverse proxies (nginx) not to buffer the stream.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dronedelivery_actors::domain::DeliveryStage;

    fn status(stage: DeliveryStage, at: Option<(f64, f64)>) -> DeliveryStatus {
        DeliveryStatus {
            stage,
            stage_name: stage.name().into(),
            last_known_location: at.map(|(lat, lon)| Location::new(lat, lon)),
            pickup_eta: None,
            delivery_eta: None,
            drone_id: Some("d1".into()),
            deadline: None,
            scheduled_for: None,
            at_risk: false,
            at_risk_reason: None,
        }
    }

    fn event(stage: DeliveryStage) -> TrackingEvent {
        TrackingEvent {
            delivery_id: "x".into(),
            stage,
            location: None,
            at: chrono::Utc::now(),
            at_risk: None,
        }
    }

    fn kinds(p: &mut Progress) -> Vec<String> {
        p.queue
            .drain(..)
            .map(|i| match i {
                Item::Stage(n, v) => {
                    format!("{}:{}", n + 1, v["stageName"].as_str().unwrap_or("?"))
                }
                Item::Position(v) => format!("pos:{}", v["location"]["latitude"]),
            })
            .collect()
    }

    #[test]
    fn sends_new_stages_then_positions_and_ends_after_the_terminal_stage() {
        use DeliveryStage::*;
        let mut p = Progress::default();
        let mut history = vec![event(Created)];
        p.update(&status(Created, None), &history);
        assert_eq!(kinds(&mut p), ["1:Created"]);
        history.push(event(HeadedToPickup));
        p.update(&status(HeadedToPickup, Some((1.0, 1.0))), &history);
        assert_eq!(kinds(&mut p), ["2:HeadedToPickup", "pos:1.0"]);
        // Same position: nothing new.
        p.update(&status(HeadedToPickup, Some((1.0, 1.0))), &history);
        assert!(kinds(&mut p).is_empty());
        p.update(&status(HeadedToPickup, Some((2.0, 1.0))), &history);
        assert_eq!(kinds(&mut p), ["pos:2.0"]);
        assert!(!p.finished);
        history.push(event(HeadedToDropoff));
        history.push(event(Completed));
        p.update(&status(Completed, Some((3.0, 1.0))), &history);
        assert_eq!(kinds(&mut p), ["3:HeadedToDropoff", "4:Completed"]);
        assert!(p.finished);
    }

    #[test]
    fn skips_what_last_event_id_has_seen() {
        use DeliveryStage::*;
        let history = [event(Created), event(HeadedToPickup)];
        let mut p = Progress {
            sent: 1,
            ..Progress::default()
        };
        p.update(&status(HeadedToPickup, None), &history);
        assert_eq!(kinds(&mut p), ["2:HeadedToPickup"]);
    }

    #[test]
    fn a_terminal_status_waits_a_little_for_its_event() {
        use DeliveryStage::*;
        let history = [event(Created)];
        let mut p = Progress::default();
        for _ in 1..TERMINAL_GRACE_POLLS {
            p.update(&status(Cancelled, None), &history);
            assert!(!p.finished);
        }
        p.update(&status(Cancelled, None), &history);
        assert!(p.finished);
    }
}
