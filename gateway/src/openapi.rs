//! `GET /openapi.json`: the HTTP contract as an OpenAPI 3.1 document,
//! generated from the code.
//!
//! ## Why
//! Clients (the original's callers, load tests, generated SDKs, API
//! gateways that validate requests) need one machine-readable description
//! of every route: its parameters, bodies, statuses and headers, and the one
//! error shape ([`Problem`](crate::error::Problem),
//! `application/problem+json`). Writing it by hand next to the code would
//! drift; here it is assembled by `utoipa` from:
//! - a `#[utoipa::path]` annotation on every handler, beside the handler in
//!   its resource module (method, path, parameters, request body, every
//!   status with its schema and headers). Each resource's `router()`
//!   registers its handlers with `utoipa-axum`'s `routes!`, which takes the
//!   route's method and path from that annotation, so a route is documented
//!   by being registered, and its path cannot differ from the document's;
//! - the serialised domain types of `dronedelivery-actors`, which derive
//!   their schemas behind its `openapi` feature, so the field names are the
//!   serde names the JSON really has;
//! - the gateway's own response types, and schema-only types for bodies that
//!   handlers read leniently from a `serde_json::Value`, each beside its
//!   handlers (the shared lenient values in [`crate::lenient`]);
//! - [`crate::error`]'s problem schema and shared error responses
//!   ([`ErrorComponents`](crate::error::ErrorComponents));
//! - this module: the document's info, servers, tags and bearer scheme
//!   ([`ApiDoc`], [`base`]), and the route serving the document.
//!
//! [`crate::routes`] merges the routers onto [`base`]; [`crate::finish`]
//! splits the result into the axum router and the document, serialises the
//! document once and hands it to [`openapi_json`] as a request extension
//! ([`DocumentJson`]), so this module depends on none of the modules that
//! make up the document.
//!
//! ## Checked against the router
//! Only the two admin catch-all routes (`/admin`, `/admin/{*rest}`, which
//! answer 404 after authentication) are registered without documentation;
//! a gateway unit test holds the sources to that. The engine's integration
//! tests (`engine/tests/api/openapi.rs`) send every documented operation to
//! the real application (it must answer something other than the router's
//! 404/405 fallback), every undocumented method on a documented path (405),
//! and validate real responses against the schemas here.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, InternalError};
use crate::state::AppState;

/// Name of the security scheme of the admin API (HTTP bearer token).
pub const BEARER_AUTH: &str = "bearerAuth";

/// Path of the document.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// The document's own parts: info, servers, tags and the bearer scheme;
/// [`base`] adds the version of this build. The operations and schemas are
/// added by the routers that register them (see [`crate::routes`]).
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
    modifiers(&Security),
    tags(
        (name = "deliveryrequests", description = "Ingestion: create, reschedule and cancel deliveries. Requests are validated, then queued; a 2xx means the broker accepted the message. Rate limited per client (429) when the engine is configured with a rate."),
        (name = "deliveries", description = "Reading deliveries, their owner and their status, from the stores."),
        (name = "tracking", description = "Live tracking of a delivery as server-sent events."),
        (name = "recipient", description = "What the recipient of a delivery posts: notify-me requests and confirmations."),
        (name = "utilization", description = "Drone utilisation of an owner in a month (billing)."),
        (name = "packages", description = "Packages: upsert, partial update, read."),
        (name = "drones", description = "The simulated fleet: every drone's state, for dashboards."),
        (name = "identity", description = "Who the caller is: whether the engine authenticates requests, and the owner and roles of the caller's token as the engine reads them."),
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

/// The document's own parts ([`ApiDoc`]) with the version of this build:
/// what the routers' operations and schemas are merged onto.
pub fn base() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The serialised document, shared by every response of one application
/// (an `Arc`'d buffer); an error if it could not be serialised.
#[derive(Debug, Clone)]
pub struct DocumentJson(Result<Bytes, Arc<str>>);

impl DocumentJson {
    /// Serialises `doc`.
    pub fn new(doc: &utoipa::openapi::OpenApi) -> Self {
        Self(
            doc.to_json()
                .map(Bytes::from)
                .map_err(|e| e.to_string().into()),
        )
    }
}

/// Route of the document, with its documentation. It serves the
/// [`DocumentJson`] extension that [`crate::finish`] adds.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
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
async fn openapi_json(document: Option<Extension<DocumentJson>>) -> Response {
    match document.as_ref().map(|Extension(DocumentJson(json))| json) {
        Some(Ok(json)) => ([(CONTENT_TYPE, "application/json")], json.clone()).into_response(),
        Some(Err(e)) => ApiError::Internal(format!("OpenAPI document: {e}")).into_response(),
        None => {
            ApiError::Internal("OpenAPI document: not provided to the route".into()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[tokio::test]
    async fn serves_the_document_it_is_given() {
        let doc = base();
        let served = openapi_json(Some(Extension(DocumentJson::new(&doc)))).await;
        assert_eq!(
            served
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        let bytes = axum::body::to_bytes(served.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        let served: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(served["info"]["title"], "Drone delivery engine");
        assert_eq!(served["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(
            served["components"]["securitySchemes"][BEARER_AUTH]["scheme"],
            "bearer"
        );
    }

    #[tokio::test]
    async fn without_the_document_it_is_a_problem() {
        let response = openapi_json(None).await;
        assert_eq!(response.status(), 500);
    }
}
