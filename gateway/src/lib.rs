//! # dronedelivery-gateway
//!
//! The HTTP face of the drone delivery engine: the routes of the original
//! reference implementation's Ingestion, Delivery and Package services, served
//! by one axum application over an [`dronedelivery_actors::Engine`] handle.
//!
//! ## Design
//! - **One `router()` per resource, documented as it is registered.**
//!   [`deliveryrequests`] (ingestion: POST, PATCH, DELETE, all queued;
//!   `Idempotency-Key` handled by [`idempotency`]), [`deliveries`] (reads),
//!   [`tracking`] (live SSE stream of a delivery), [`recipient`] (notify-me
//!   requests and confirmations), [`utilization`] (drone utilisation per
//!   owner and month), [`packages`] (upsert, patch, read), [`drones`] (the
//!   fleet's drones), [`identity`] (`/api/me`: who the caller's token is),
//!   [`probes`] (`/healthz`, `/readyz`, `/healthz/dependencies`, `/metrics`),
//!   [`admin`] (operator API under `/admin`, bearer token), [`openapi`]
//!   (`/openapi.json`) and [`console`] (the web console under `/console`,
//!   static pages over this API) each expose
//!   `router() -> OpenApiRouter<AppState>` (`utoipa-axum`), registering
//!   their handlers with `routes!(handler, …)`: the method and path come
//!   from the handler's `#[utoipa::path]` annotation, which also becomes the
//!   operation in the OpenAPI document. A resource's routes, handlers,
//!   contract notes, annotations and request/response schema types live
//!   together; [`error`] holds the problem schema and the shared error
//!   responses, [`lenient`] the schemas of leniently read values.
//! - **One registration, three uses.** [`routes`] merges the routers onto
//!   the document's own parts ([`openapi::base`]); [`finish`] splits the
//!   result into the axum [`Router`] and the OpenAPI document, serves the
//!   document at `/openapi.json`, and gives its paths to the path
//!   normaliser ([`middleware::Templates`]). Metrics are labelled by the
//!   route the router matched, so route names, documentation and
//!   normalisation all come from the same `routes!` calls.
//! - **Handlers are thin.** Validation is the domain's
//!   ([`dronedelivery_actors::domain::DeliveryRequest::from_external`] and
//!   friends); handlers parse the body, call the engine and map the outcome.
//!   Writes to deliveries go through the queue, answered only once the broker
//!   accepted the message; reads go to the stores and never wake an actor.
//! - **Who may do what is decided in one place.** [`auth`] turns the bearer
//!   token of each `/api` request into a [`auth::Caller`] (a route layer in
//!   [`finish`], so no route is missed) and gives the rules: owners see
//!   and change their own deliveries (another owner's is a 404), roles
//!   widen that. Handlers take the `Caller` and ask it; the token itself
//!   is checked by an [`auth::Authenticator`] the engine provides (OpenID
//!   Connect), and the OpenAPI document gets each operation's requirement
//!   from [`auth::document`].
//! - **One error type.** Every failure is an [`ApiError`], rendered as an
//!   RFC 9457 problem document (`application/problem+json`, with `errors`
//!   listing each invalid field). Errors produced by layers rather than
//!   handlers (timeout, body limit, extractor rejections, 404/405) are
//!   converted to the same shape by [`middleware::problem_for_bare_errors`]
//!   and the router fallbacks. Backend errors become 503 with
//!   `Retry-After: 1`; internal causes are logged, never sent.
//! - **Path normalisation.** The original was reached both as
//!   `/v0.1.0/api/...` (public ingress) and `/api/...` (in cluster), and its
//!   .NET routes matched static segments case-insensitively
//!   (`/api/Deliveries/{id}`). [`middleware::Templates::normalize`] strips the
//!   prefix and lower-cases the static segments of the documented templates
//!   under `/api`, `/admin` and `/console`, never ids. It rewrites the URI
//!   before routing, so it wraps the router rather than being one of its
//!   layers.
//! - **Observability.** Each request gets an `x-request-id` (kept if sent,
//!   echoed on the response, used as the queue message's correlation id), a
//!   `tracing` span, and the metrics
//!   [`HTTP_REQUESTS_TOTAL`](dronedelivery_actors::metrics::HTTP_REQUESTS_TOTAL)
//!   and
//!   [`HTTP_REQUEST_DURATION_SECONDS`](dronedelivery_actors::metrics::HTTP_REQUEST_DURATION_SECONDS)
//!   labelled by route template. Metric names come from
//!   [`dronedelivery_actors::metrics`]; the exporter belongs to the engine,
//!   which renders it through [`AppState::render_metrics`].
//!
//! ## Serving
//! ```ignore
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! axum::serve(listener, dronedelivery_gateway::app(state)).await?;
//! // equivalently: axum::serve(listener, app(state).into_make_service())
//! ```

pub mod admin;
pub mod auth;
pub mod console;
pub mod deliveries;
pub mod deliveryrequests;
pub mod drones;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod identity;
pub mod lenient;
pub mod limits;
pub mod middleware;
pub mod openapi;
pub mod packages;
pub mod probes;
pub mod ratelimit;
pub mod recipient;
pub mod state;
pub mod tracking;
pub mod utilization;

use axum::{Extension, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use error::ApiError;
pub use state::AppState;

/// An empty router holding the document's own parts and the shared error
/// components, onto which resource routers are merged.
fn base() -> OpenApiRouter<AppState> {
    let mut doc = openapi::base();
    doc.merge(error::ErrorComponents::openapi());
    OpenApiRouter::with_openapi(doc)
}

/// Every resource's routes, merged, with the OpenAPI document they make up,
/// still needing their [`AppState`]. For callers that want to add routes of
/// their own before [`finish`]ing (registered with `routes!` to have them
/// documented and normalised too).
pub fn routes() -> OpenApiRouter<AppState> {
    let mut routes = base()
        .merge(deliveryrequests::router())
        .merge(deliveries::router())
        .merge(tracking::router())
        .merge(recipient::router())
        .merge(utilization::router())
        .merge(packages::router())
        .merge(drones::router())
        .merge(identity::router())
        .merge(probes::router())
        .merge(admin::router())
        .merge(openapi::router())
        .merge(console::router());
    auth::document(routes.get_openapi_mut());
    ratelimit::document(routes.get_openapi_mut());
    routes
}

/// The routes a `worker`-role process serves: probes, metrics and the
/// admin API. The public API is a gateway's job; a worker answers it 404.
pub fn worker_routes() -> OpenApiRouter<AppState> {
    let mut routes = base().merge(probes::router()).merge(admin::router());
    auth::document(routes.get_openapi_mut());
    routes
}

/// The OpenAPI document of the full application, as `GET /openapi.json`
/// serves it.
pub fn document() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// Provides the state to `router` and adds authentication ([`auth`]), the
/// ingestion rate limit, the
/// document served at `/openapi.json`, fallbacks, layers and path
/// normalisation over the documented templates (see
/// [`middleware::wrap_with`]).
pub fn finish(router: OpenApiRouter<AppState>, state: AppState) -> Router {
    let (router, doc) = router.split_for_parts();
    let templates = middleware::Templates::new(doc.paths.paths.keys().map(String::as_str));
    let cors = state.cors_origins.clone();
    // Route layers run outermost last-added first: the caller is known
    // before the rate limit is applied.
    let limited = router
        .route_layer(axum::middleware::from_fn_with_state(
            state.rate_limiter.clone(),
            ratelimit::enforce,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            auth::authenticate,
        ));
    let served = limited
        .with_state(state)
        .layer(Extension(openapi::DocumentJson::new(&doc)));
    middleware::wrap_with(served, templates, &cors)
}

/// The application a process of `role` serves: [`app`] for `all` and
/// `gateway`, [`worker_routes`] (finished the same way) for `worker`.
pub fn app_for(role: dronedelivery_actors::Role, state: AppState) -> Router {
    if role.serves_api() {
        app(state)
    } else {
        finish(worker_routes(), state)
    }
}

/// The full application: all routers merged, with the 404/405 fallbacks,
/// layers (request id, trace, metrics, problem conversion, 30 s timeout,
/// 64 KiB body limit) and path normalisation.
///
/// Returns a plain [`Router`] with no state left to provide, so it can be
/// passed to `axum::serve(listener, app(state))` directly, or as
/// `app(state).into_make_service()` (or `into_make_service_with_connect_info`),
/// and driven with `tower::ServiceExt::oneshot` in tests. The URI rewrite is
/// already inside it: do not wrap it in another normaliser.
pub fn app(state: AppState) -> Router {
    finish(routes(), state)
}

#[cfg(test)]
mod tests;
