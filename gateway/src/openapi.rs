//! `GET /openapi.json`: the HTTP contract as an OpenAPI 3.1 document,
//! generated from the code.
//!
//! ## Why
//! Clients (the original's callers, load tests, generated SDKs, API
//! gateways that validate requests) need one machine-readable description
//! of every route: its parameters, bodies, statuses and headers, and the one
//! error shape ([`Problem`], `application/problem+json`). Writing it by hand
//! next to the code would drift; here it is assembled by `utoipa` from:
//! - a `#[utoipa::path]` annotation on every handler, beside the handler in
//!   its resource module (method, path as the router registers it,
//!   parameters, request body, every status with its schema and headers);
//! - the serialised domain types of `dronedelivery-actors`, which derive
//!   their schemas behind its `openapi` feature, so the field names are the
//!   serde names the JSON really has;
//! - schema-only types below ([`ExternalDelivery`], [`PositionEvent`],
//!   [`DeadLetterPage`], …) for bodies that handlers read leniently from a
//!   `serde_json::Value` or build by hand, and [`Problem`] and the shared
//!   error responses ([`ServiceUnavailable`], [`TooManyRequests`], …).
//!
//! ## Checked against the router
//! Annotations are still written by hand, so tests hold them to the router:
//! every gateway `.route(…)` path and every path template the path
//! normaliser knows must be documented, and nothing else; every documented
//! operation answers something other than the router's 404/405 fallback
//! when the real application is sent it, and every method left undocumented
//! on a documented path answers 405 (engine integration tests,
//! `engine/tests/api/openapi.rs`, which also validate real responses against
//! the schemas here). Adding a route without documenting it fails them.
//!
//! The document is built and serialised once, on the first request, and
//! served from memory afterwards.

use std::sync::LazyLock;

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use dronedelivery_actors::domain::{
    ConfirmationRequired, ConfirmationTime, FieldError, Location, PackageInfo, PackageSize,
    TrackingEvent,
};
use dronedelivery_actors::ports::DeadLetter;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::Ref;
use utoipa::{Modify, OpenApi, ToResponse, ToSchema};

use crate::error::ApiError;
use crate::state::AppState;

/// Name of the security scheme of the admin API (HTTP bearer token).
pub const BEARER_AUTH: &str = "bearerAuth";

/// Path of the document.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// The OpenAPI document of the gateway; [`document`] sets the version of
/// this build.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Drone delivery engine",
        description = "HTTP API of the drone delivery engine: ingestion of delivery \
requests (queued, answered 202), delivery reads and live tracking, recipient \
notifications and confirmations, drone utilisation, packages, the fleet's \
drones, probes, the operator API and the web console's pages.\n\n\
Every error is an RFC 9457 problem document (`application/problem+json`); \
400s list each invalid field in `errors`. Any request may also be answered \
408 (not answered within 30 s) or 405 (a method the path does not support), \
both as problems. 503s carry `Retry-After`.\n\n\
Paths are also served under the `/v0.1.0` prefix of the original public \
ingress, and the static segments of `/api`, `/admin` and `/console` paths match \
case-insensitively (`/api/Deliveries/{id}`); ids never do. Every response \
carries `x-request-id` (the client's own, if it sent one)."
    ),
    servers(
        (url = "/", description = "Direct (in cluster)"),
        (url = "/v0.1.0", description = "Behind the original public ingress prefix")
    ),
    paths(
        crate::deliveryrequests::create,
        crate::deliveryrequests::reschedule,
        crate::deliveryrequests::cancel,
        crate::deliveries::delivery,
        crate::deliveries::public_delivery,
        crate::deliveries::owner,
        crate::deliveries::status,
        crate::tracking::events,
        crate::recipient::notify_me,
        crate::recipient::confirm,
        crate::utilization::utilization,
        crate::packages::upsert_new,
        crate::packages::package,
        crate::packages::upsert,
        crate::packages::patch,
        crate::drones::drones,
        crate::probes::healthz,
        crate::probes::readyz,
        crate::probes::metrics,
        crate::admin::supervisors,
        crate::admin::restart_supervisor,
        crate::admin::dead_letters,
        crate::admin::replay_dead_letter,
        openapi_json,
        crate::console::landing,
        crate::console::track,
        crate::console::fleet,
        crate::console::ops,
        crate::console::asset,
    ),
    components(
        schemas(Problem, StageEvent, PositionEvent),
        responses(
            PayloadTooLarge,
            UnsupportedMediaType,
            TooManyRequests,
            ServiceUnavailable,
            InternalError,
            Unauthorized,
            Forbidden
        )
    ),
    modifiers(&Security),
    tags(
        (name = "deliveryrequests", description = "Ingestion: create, reschedule and cancel deliveries. Requests are validated, then queued; a 2xx means the broker accepted the message. Rate limited per client (429) when the engine is configured with a rate."),
        (name = "deliveries", description = "Reading deliveries, their owner and their status, from the stores."),
        (name = "tracking", description = "Live tracking of a delivery as server-sent events."),
        (name = "recipient", description = "What the recipient of a delivery posts: notify-me requests and confirmations."),
        (name = "utilization", description = "Drone utilisation of an owner in a month (billing)."),
        (name = "packages", description = "Packages: upsert, partial update, read."),
        (name = "drones", description = "The simulated fleet: every drone's state, for dashboards."),
        (name = "probes", description = "Liveness, readiness and Prometheus metrics."),
        (name = "admin", description = "Operator API: supervision tree, restarts, dead letters. Needs the configured bearer token; without one configured every /admin path answers 404."),
        (name = "openapi", description = "This document."),
        (name = "console", description = "The web console: HTML pages and their static assets, \
embedded in the binary, over this API (served by processes that serve the API).")
    )
)]
pub struct ApiDoc;

/// Adds the admin API's bearer scheme.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER_AUTH,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The operator token the engine was started with (`--admin-token`).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, with the version of this build.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The serialised document, built on first use; each response shares it.
static DOCUMENT_JSON: LazyLock<Result<Bytes, String>> = LazyLock::new(|| {
    document()
        .to_json()
        .map(Bytes::from)
        .map_err(|e| e.to_string())
});

/// Route of the document.
pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "getOpenApiDocument",
    tag = "openapi",
    summary = "This OpenAPI document",
    description = "The OpenAPI 3.1 document of the HTTP API, generated from the code.",
    responses(
        (status = 200, description = "The OpenAPI document", body = Object, content_type = "application/json"),
        (status = 500, response = InternalError)
    )
)]
async fn openapi_json() -> Response {
    match DOCUMENT_JSON.as_ref() {
        Ok(json) => ([(CONTENT_TYPE, "application/json")], json.clone()).into_response(),
        Err(e) => ApiError::Internal(format!("OpenAPI document: {e}")).into_response(),
    }
}

// ---------------------------------------------------------------------------
// The error shape and the shared error responses.
// ---------------------------------------------------------------------------

/// An RFC 9457 problem document: the body of every error response, sent as
/// `application/problem+json`.
#[derive(ToSchema)]
pub struct Problem {
    /// Identifies the problem type. Always `about:blank`: the status says
    /// what kind of problem it is.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    pub problem_type: String,
    /// The status's reason phrase.
    #[schema(example = "Bad Request")]
    pub title: String,
    /// The HTTP status code.
    #[schema(example = 400)]
    pub status: u16,
    /// What went wrong, for a human.
    #[schema(example = "ownerId: is required")]
    pub detail: String,
    /// Identifies this occurrence of the problem (RFC 9457). Not sent
    /// currently; clients should accept it.
    #[schema(nullable = false)]
    pub instance: Option<String>,
    /// On a 400 for invalid input: every invalid or missing field, so that
    /// all can be fixed in one round trip. Absent otherwise.
    #[schema(nullable = false)]
    pub errors: Option<Vec<FieldError>>,
}

/// The request body exceeds the 64 KiB limit.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct PayloadTooLarge(pub Problem);

/// The body is not JSON (`Content-Type` must be `application/json` or a
/// `+json` type).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct UnsupportedMediaType(pub Problem);

/// The client is over its ingestion rate limit; retry after the delay given.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds until the client's next request would be accepted"))
)]
pub struct TooManyRequests(pub Problem);

/// A backend (queue or store) is unavailable, or the engine is not ready;
/// retry after the delay given.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds to wait before retrying (1)"))
)]
pub struct ServiceUnavailable(pub Problem);

/// An internal error (a bug or a stored document that cannot be read); the
/// cause is logged, not sent.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct InternalError(pub Problem);

/// No `Authorization: Bearer <token>` header, or a malformed one.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"dronedelivery-admin\"`"))
)]
pub struct Unauthorized(pub Problem);

/// The bearer token is not the configured one.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct Forbidden(pub Problem);

// ---------------------------------------------------------------------------
// Bodies that handlers read from, or build as, a `serde_json::Value`.
// Schema only: the handlers' parsers and `json!` calls define the wire format,
// and these types describe it.
// ---------------------------------------------------------------------------

/// `confirmationRequired` on the ingestion API: the type's name.
fn confirmation_name() -> Schema {
    let names: Vec<&str> = (0..)
        .map_while(ConfirmationRequired::from_int)
        .map(ConfirmationRequired::name)
        .collect();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names))
        .description(Some(
            "How the recipient confirms (case-insensitive on input).",
        ))
        .into()
}

/// A date-time on input: ISO-8601 text (RFC 3339, or without a zone, taken
/// as UTC) or epoch milliseconds.
fn lenient_time() -> Schema {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "ISO-8601 date-time (RFC 3339; without a zone it is UTC), a date, or epoch milliseconds as text",
                )),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .description(Some("Epoch milliseconds")),
        )
        .into()
}

/// A weight on input: a number >= 0, or a numeric string (`"14"`).
fn lenient_weight() -> Schema {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(0.0)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("A number >= 0 as text")),
        )
        .into()
}

/// `confirmationType` of a confirmation: the integer code or the name.
fn confirmation_type_input() -> Schema {
    OneOfBuilder::new()
        .item(Ref::from_schema_name(
            <ConfirmationRequired as ToSchema>::name(),
        ))
        .item(confirmation_name())
        .into()
}

/// `POST /api/deliveryrequests`: a delivery request (the original's
/// `ExternalDelivery`). Read leniently: numbers and booleans are accepted
/// where text is expected, and unknown members are ignored.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalDelivery {
    /// Ignored: the gateway mints the id (or derives it from the
    /// `Idempotency-Key`).
    #[schema(nullable = false)]
    pub delivery_id: Option<String>,
    /// The owner (the account billed).
    #[schema(min_length = 1)]
    pub owner_id: String,
    /// Where to pick the package up: `"lat,lon"`, `"altitude,lat,lon"` or
    /// any other text (mapped to a fixed point in the service area).
    #[schema(min_length = 1, example = "47.6062,-122.3321")]
    pub pickup_location: String,
    /// Where to drop it off, in the same forms. `dropoffLocation` is
    /// accepted too.
    #[serde(rename = "dropOffLocation")]
    #[schema(min_length = 1, example = "drop off")]
    pub drop_off_location: String,
    /// Requested pickup time.
    #[schema(schema_with = lenient_time)]
    pub pickup_time: Option<String>,
    /// Free-text deadline, kept as given.
    #[schema(nullable = false)]
    pub deadline: Option<String>,
    /// Expedited delivery (default false).
    #[schema(nullable = false)]
    pub expedited: Option<bool>,
    /// How the recipient confirms.
    #[schema(schema_with = confirmation_name)]
    pub confirmation_required: String,
    /// The package.
    pub package_info: ExternalPackageInfo,
}

/// The package of a delivery request.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalPackageInfo {
    /// Client-chosen package id.
    #[schema(min_length = 1)]
    pub package_id: String,
    /// Size class, case-insensitive on input.
    pub size: PackageSize,
    /// Weight (default 0).
    #[schema(schema_with = lenient_weight)]
    pub weight: Option<f64>,
    /// Free tag.
    #[schema(nullable = false)]
    pub tag: Option<String>,
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
/// `dropOffLocation`, `deadline` or `pickupTime` must be given.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRescheduledDelivery {
    /// Ignored: the path id is used.
    #[schema(nullable = false)]
    pub delivery_id: Option<String>,
    /// New pickup, in the forms of a delivery request.
    #[schema(nullable = false)]
    pub pickup_location: Option<String>,
    /// New dropoff (`dropoffLocation` is accepted too).
    #[serde(rename = "dropOffLocation")]
    #[schema(nullable = false)]
    pub drop_off_location: Option<String>,
    /// New deadline.
    #[schema(nullable = false)]
    pub deadline: Option<String>,
    /// New pickup time.
    #[schema(schema_with = lenient_time)]
    pub pickup_time: Option<String>,
}

/// `POST /api/deliveries/{id}/notifymerequests`: where to notify the
/// recipient. At least one of the two is required. Member names are
/// case-insensitive.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotifyMeRequest {
    /// E-mail address (`name@domain`).
    #[schema(nullable = false, max_length = 254, format = Email)]
    pub email_address: Option<String>,
    /// Phone number for text messages.
    #[schema(nullable = false, max_length = 64)]
    pub sms: Option<String>,
}

/// `POST /api/deliveries/{id}/confirmations`: the recipient confirms
/// receipt. Member names are case-insensitive.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmationRequest {
    /// When the recipient confirmed, as text.
    pub date_time: ConfirmationTime,
    /// Where.
    pub geo_coordinates: GeoCoordinates,
    /// How.
    #[schema(schema_with = confirmation_type_input)]
    pub confirmation_type: u8,
    /// The evidence (a picture, a fingerprint hash, …), opaque.
    pub confirmation_blob: String,
}

/// A point given by the recipient.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeoCoordinates {
    /// Metres above ground (default 0).
    #[schema(nullable = false)]
    pub altitude: Option<f64>,
    /// Degrees north.
    #[schema(minimum = -90.0, maximum = 90.0)]
    pub latitude: f64,
    /// Degrees east.
    #[schema(minimum = -180.0, maximum = 180.0)]
    pub longitude: f64,
}

/// `PUT /api/packages[/{id}]` and `PATCH /api/packages/{id}`: the package's
/// fields; absent and null ones are not set. Other members (a `packageId`)
/// are ignored: the path id wins.
#[derive(ToSchema)]
pub struct PackageFields {
    /// Size class, case-insensitive on input.
    pub size: Option<PackageSize>,
    /// Weight.
    #[schema(schema_with = lenient_weight)]
    pub weight: Option<f64>,
    /// Free tag (numbers and booleans are converted to text).
    pub tag: Option<String>,
}

/// `event: stage` of the tracking stream: one stage change, oldest first.
/// Its SSE `id` is the event's 1-based position in the delivery's history.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageEvent {
    /// The stored event.
    #[serde(flatten)]
    pub event: TrackingEvent,
    /// The stage's name.
    #[schema(example = "HeadedToPickup")]
    pub stage_name: String,
}

/// `event: position` of the tracking stream: sent whenever the delivery's
/// last known location changes.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PositionEvent {
    /// The assigned drone.
    #[schema(required = true)]
    pub drone_id: Option<String>,
    /// Where the drone is.
    pub location: Location,
    /// Stage code.
    pub stage: dronedelivery_actors::domain::DeliveryStage,
    /// Stage name.
    pub stage_name: String,
    /// When the drone is expected at the pickup.
    #[serde(rename = "pickupETA")]
    #[schema(required = true, format = DateTime)]
    pub pickup_eta: Option<String>,
    /// When the package is expected at the dropoff.
    #[serde(rename = "deliveryETA")]
    #[schema(required = true, format = DateTime)]
    pub delivery_eta: Option<String>,
}

/// `GET /healthz`: `{"status": "OK"}`.
#[derive(ToSchema)]
pub struct Liveness {
    /// Always `OK`.
    #[schema(example = "OK")]
    pub status: String,
}

/// `GET /readyz`: `{"status": "ready", "role": …}`.
#[derive(ToSchema)]
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

/// `GET /admin/supervisors`: the supervision tree, parents first.
#[derive(ToSchema)]
pub struct SupervisorList {
    /// `root`, `fleet`, `deliveries`, `consumers`, `workflow`.
    pub supervisors: Vec<SupervisorInfo>,
}

/// One supervisor as operators see it. Mirrors
/// [`dronedelivery_actors::SupervisorInfo`], which carries no schema derive;
/// the engine's integration tests check real answers against this schema.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorInfo {
    /// `root`, `fleet`, `deliveries`, `consumers` or `workflow`.
    pub name: String,
    /// `one_for_one`, `one_for_all` or `rest_for_one`.
    pub strategy: String,
    /// `running`, `restarting` or `stopped`.
    pub status: String,
    /// Live children.
    pub children: u64,
    /// Restarts of it and its children since start.
    pub restarts: u64,
    /// The last failure seen, if any.
    #[schema(required = true)]
    pub last_failure: Option<String>,
}

/// `GET /admin/deadletters`: a page of dead letters, newest first.
#[derive(ToSchema)]
pub struct DeadLetterPage {
    /// The page.
    pub items: Vec<DeadLetter>,
    /// Dead letters in all.
    pub total: u64,
    /// Position of the first item.
    pub offset: u64,
    /// Page size asked for.
    pub limit: u64,
}

/// `POST /admin/deadletters/{id}/replay`: the message is back on the queue.
#[derive(ToSchema)]
pub struct ReplayedDeadLetter {
    /// The message id replayed.
    pub replayed: String,
    /// Its operation (`delivery`, `reschedule`, `cancel`, …).
    pub operation: String,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::error::PROBLEM_JSON;

    fn json() -> Value {
        let bytes = DOCUMENT_JSON.as_ref().cloned().unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }

    /// `/api/deliveries/{id}` → `/api/deliveries/{}`: parameter names do not
    /// matter when comparing templates.
    fn shape(path: &str) -> String {
        path.split('/')
            .map(|s| if s.starts_with('{') { "{}" } else { s })
            .collect::<Vec<_>>()
            .join("/")
    }

    fn documented_paths(doc: &Value) -> BTreeSet<String> {
        doc["paths"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    /// Every `(method, path, operation)` of the document.
    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    ops.push((method.to_owned(), path.clone(), op.clone()));
                }
            }
        }
        ops
    }

    /// Resolves a response that may be a `$ref` to `#/components/responses/…`.
    fn resolve<'a>(doc: &'a Value, response: &'a Value) -> &'a Value {
        match response["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/responses/"))
        {
            Some(name) => &doc["components"]["responses"][name],
            None => response,
        }
    }

    #[test]
    fn is_openapi_3_1_with_info() {
        let doc = json();
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1.")),
            "{}",
            doc["openapi"]
        );
        assert_eq!(doc["info"]["title"], "Drone delivery engine");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert!(doc["info"]["description"].is_string());
        assert_eq!(
            doc["components"]["securitySchemes"][BEARER_AUTH]["scheme"],
            "bearer"
        );
    }

    #[test]
    fn documents_every_normalised_template_and_the_probes() {
        let doc = json();
        let documented: BTreeSet<String> =
            documented_paths(&doc).iter().map(|p| shape(p)).collect();
        let mut expected: BTreeSet<String> = crate::middleware::TEMPLATES
            .iter()
            .map(|t| {
                t.iter()
                    .map(|seg| format!("/{}", seg.unwrap_or("{}")))
                    .collect::<String>()
            })
            .collect();
        expected.extend(["/healthz", "/readyz", "/metrics", OPENAPI_PATH].map(str::to_owned));
        assert_eq!(documented, expected);
    }

    /// The first argument of every `.route(…)` call in the gateway's
    /// sources (test code excluded).
    fn routed_paths() -> BTreeSet<String> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut paths = BTreeSet::new();
        let entries = std::fs::read_dir(dir).map(|d| d.flatten().collect::<Vec<_>>());
        for entry in entries.unwrap_or_default() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let code: String = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for call in code.split(".route(").skip(1) {
                let literal = call
                    .trim_start()
                    .strip_prefix('"')
                    .and_then(|rest| rest.split_once('"'))
                    .map(|(lit, _)| lit.to_owned());
                match literal {
                    Some(lit) => {
                        paths.insert(lit);
                    }
                    None => panic!(
                        "{}: a .route( whose path is not a string literal; \
                         this test cannot check it is documented",
                        path.display()
                    ),
                }
            }
        }
        paths
    }

    #[test]
    fn documents_every_routed_path() {
        let doc = json();
        let documented = documented_paths(&doc);
        let routed = routed_paths();
        assert!(routed.contains("/api/deliveryrequests"), "{routed:?}");
        // The admin catch-alls only answer 404 (after authentication) for
        // paths that do not exist; they are not operations.
        let catch_alls = ["/admin", "/admin/{*rest}"];
        let undocumented: Vec<&String> = routed
            .iter()
            .filter(|p| !documented.contains(*p) && !catch_alls.contains(&p.as_str()))
            .collect();
        assert!(
            undocumented.is_empty(),
            "routes without documentation: {undocumented:?}"
        );
        let unrouted: Vec<&String> = documented.difference(&routed).collect();
        assert!(
            unrouted.is_empty(),
            "documented but not routed: {unrouted:?}"
        );
    }

    #[test]
    fn every_operation_has_a_success_and_problem_errors() {
        let doc = json();
        let ops = operations(&doc);
        assert!(ops.len() >= 23, "{} operations", ops.len());
        let ids: BTreeSet<&str> = ops
            .iter()
            .filter_map(|(_, _, op)| op["operationId"].as_str())
            .collect();
        assert_eq!(ids.len(), ops.len(), "operationIds must be unique: {ids:?}");
        for (method, path, op) in &ops {
            let responses = op["responses"].as_object().cloned().unwrap_or_default();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} has no 2xx response"
            );
            assert!(
                op["tags"].as_array().is_some_and(|t| t.len() == 1),
                "{method} {path}: tag"
            );
            assert!(op["summary"].is_string(), "{method} {path}: summary");
            for (status, response) in &responses {
                let response = resolve(&doc, response);
                assert!(
                    response["description"].is_string(),
                    "{method} {path} {status}"
                );
                if status.starts_with('4') || status.starts_with('5') {
                    let content = response["content"].as_object();
                    let types: Vec<&String> =
                        content.map(|c| c.keys().collect()).unwrap_or_default();
                    assert_eq!(types, [PROBLEM_JSON], "{method} {path} {status}");
                    assert_eq!(
                        response["content"][PROBLEM_JSON]["schema"]["$ref"],
                        "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
                if status == "503" || status == "429" {
                    assert!(
                        response["headers"]["Retry-After"].is_object(),
                        "{method} {path} {status}: Retry-After"
                    );
                }
            }
            if path.starts_with("/admin") {
                assert_eq!(
                    op["security"][0][BEARER_AUTH],
                    serde_json::json!([]),
                    "{method} {path}"
                );
                for status in ["401", "403", "404"] {
                    assert!(responses.contains_key(status), "{method} {path} {status}");
                }
            }
            if path.starts_with("/api/deliveryrequests") {
                assert!(responses.contains_key("429"), "{method} {path} 429");
            }
            if op.get("requestBody").is_some() {
                assert!(responses.contains_key("413"), "{method} {path} 413");
                assert!(responses.contains_key("415"), "{method} {path} 415");
            }
        }
        let accepted = &doc["paths"]["/api/deliveryrequests"]["post"]["responses"]["202"];
        assert!(accepted["headers"]["Location"].is_object(), "{accepted}");
    }

    #[test]
    fn schemas_keep_the_serde_names() {
        let doc = json();
        let schemas = &doc["components"]["schemas"];
        let props = |name: &str| -> BTreeSet<String> {
            schemas[name]["properties"]
                .as_object()
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default()
        };
        assert_eq!(
            props("DeliveryStatus"),
            [
                "stage",
                "stageName",
                "lastKnownLocation",
                "pickupETA",
                "deliveryETA",
                "droneId"
            ]
            .map(str::to_owned)
            .into()
        );
        assert_eq!(
            props("Problem"),
            ["type", "title", "status", "detail", "instance", "errors"]
                .map(str::to_owned)
                .into()
        );
        assert_eq!(schemas["DeliveryStage"]["type"], "integer");
        assert_eq!(
            schemas["DeliveryStage"]["enum"],
            serde_json::json!([0, 1, 2, 3, 4, 5])
        );
        assert_eq!(
            schemas["ConfirmationRequired"]["enum"],
            serde_json::json!([0, 1, 2, 3])
        );
        assert_eq!(
            schemas["PackageSize"]["enum"],
            serde_json::json!(["Small", "Medium", "Large"])
        );
    }

    /// The 202 echo is built with `json!`, so compare its members with the
    /// schema's.
    #[test]
    fn accepted_delivery_schema_matches_the_echo() {
        let body = serde_json::json!({
            "ownerId": "o", "pickupLocation": "a", "dropOffLocation": "b",
            "confirmationRequired": "None",
            "packageInfo": {"packageId": "p", "size": "small"}
        });
        let echo = dronedelivery_actors::domain::DeliveryRequest::from_external(&body, "d".into())
            .map(|r| r.to_external_json())
            .unwrap_or_default();
        let keys = |v: &Value| -> BTreeSet<String> {
            v.as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default()
        };
        let doc = json();
        let schemas = &doc["components"]["schemas"];
        let required = |name: &str| -> BTreeSet<String> {
            schemas[name]["required"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(
            keys(&echo),
            keys(&schemas["AcceptedDelivery"]["properties"])
        );
        assert_eq!(keys(&echo), required("AcceptedDelivery"));
        assert_eq!(
            keys(&echo["packageInfo"]),
            keys(&schemas["PackageInfo"]["properties"])
        );
    }

    #[tokio::test]
    async fn serves_the_cached_document() {
        let first = openapi_json().await;
        assert_eq!(
            first
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        let bytes = axum::body::to_bytes(first.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        let served: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(served, json());
        assert!(served["paths"][OPENAPI_PATH]["get"].is_object());
    }
}
