//! `/admin`: the operator API (supervision tree, operator restarts, dead
//! letters), called by `dronedelivery admin …` and by scripts.
//!
//! ## Authentication
//! Every `/admin` path, known or not, and every method on it, is guarded by
//! [`authorize`] *before* routing by method:
//! - no token configured ([`AppState::admin_token`] `None` or empty) and
//!   bearer-token authentication off: **404** problem, exactly what the
//!   router answers for a path that does not exist, so a deployment without
//!   a token does not even reveal the API;
//! - no `Authorization` header, or one that is not `Bearer <token>`: **401**
//!   problem with `WWW-Authenticate: Bearer realm="dronedelivery"`;
//! - the configured (static, break-glass) token: allowed;
//! - with bearer-token authentication on ([`crate::auth`]), a valid token
//!   with the `Operator` role: allowed; a valid token without it: **403**; a
//!   token that is not valid: **401** with `error="invalid_token"`;
//! - otherwise, a well-formed bearer token that is not the configured one:
//!   **403** problem.
//!
//! Only then is the request routed by method, so a wrong method answers 405
//! (with `Allow`) to authenticated callers only: unauthenticated ones cannot
//! learn which paths or methods exist. This is done by wrapping each route's
//! [`MethodRouter`] in an `any` route (`guarded`) rather than by a layer,
//! because axum adds the `Allow` header of a method router to whatever its
//! fallback answers, and because a guard inside the route cannot be lost by
//! composing [`router`] differently.
//!
//! The token is compared in constant time: both the presented and the
//! configured token are hashed with SHA-256 first, then the two 32-byte
//! digests are compared with [`subtle::ConstantTimeEq`], which looks at every
//! byte without an early exit. Hashing first gives equal-length inputs, so
//! neither the position of the first wrong byte nor the token's length leaks
//! through the response time. (The token itself should be long and random:
//! there is no rate limiting here.)

use std::collections::HashMap;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, OriginalUri, Path, Query, Request, State};
use axum::http::header::USER_AGENT;
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, MethodRouter};
use axum::Json;
use dronedelivery_actors::cluster::{CallError, EngineRestart, RemoteError};
use dronedelivery_actors::ownership::ClusterView;
use dronedelivery_actors::ports::DeadLetter;
use dronedelivery_actors::{CommandError, SupervisorInfo};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::auth::{identify, Auth, Caller, Role};
use crate::error::{
    ApiError, Forbidden, GatewayTimeout, InternalError, Problem, ServiceUnavailable, Unauthorized,
};
use crate::state::AppState;

/// Page size of `GET /admin/deadletters` when `limit` is not given.
pub const DEFAULT_PAGE: usize = 20;

/// Largest `limit` of `GET /admin/deadletters`.
pub const MAX_PAGE: usize = 100;

/// Routes of the admin API, with their documentation, each behind
/// [`authorize`].
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(cluster).map(guarded))
        .routes(routes!(supervisors).map(guarded))
        .routes(routes!(restart_supervisor).map(guarded))
        .routes(routes!(dead_letters).map(guarded))
        .routes(routes!(replay_dead_letter).map(guarded))
        // Unknown admin paths: authenticate first, then 404, so that the
        // answer to an unauthenticated caller does not tell which exist.
        // Not operations, so not documented (the only routes that are not).
        .route("/admin", guarded(any(unknown)))
        .route("/admin/{*rest}", guarded(any(unknown)))
}

/// Wraps a route so that [`authorize`] runs before the method is matched.
fn guarded(inner: MethodRouter<AppState>) -> MethodRouter<AppState> {
    any(move |State(state): State<AppState>, req: Request| {
        let inner = inner.clone();
        async move {
            let path = req
                .extensions()
                .get::<OriginalUri>()
                .map_or_else(|| req.uri().path().to_owned(), |o| o.0.path().to_owned());
            if let Err(e) = authorize_operator(&state, req.headers(), &path).await {
                return e.into_response();
            }
            match tower::ServiceExt::oneshot(inner.with_state(state), req).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    })
}

/// The static token first (break-glass), then, with bearer-token
/// authentication on, a token with the `Operator` role (see the
/// [module docs](self)).
async fn authorize_operator(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
) -> Result<(), ApiError> {
    let Auth::Jwt(authenticator) = &state.auth else {
        return authorize(state.admin_token.as_deref(), headers, path);
    };
    match authorize(state.admin_token.as_deref(), headers, path) {
        Ok(()) => Ok(()),
        // No header, or not a bearer token: the same 401 either way.
        Err(e @ ApiError::Unauthorized(_)) => Err(e),
        Err(_) => {
            let caller = Caller::Token(Arc::new(identify(authenticator.as_ref(), headers).await?));
            caller.must_have(Role::Operator)
        }
    }
}

/// Checks the request's bearer token against the configured one (see the
/// [module docs](self) for the answers and the constant-time comparison).
/// `path` is only used for the 404 detail, which is the router's own.
pub fn authorize(
    configured: Option<&str>,
    headers: &HeaderMap,
    path: &str,
) -> Result<(), ApiError> {
    let Some(expected) = configured.filter(|t| !t.is_empty()) else {
        return Err(ApiError::NotFound(format!("no resource at {path}")));
    };
    let Some(presented) = crate::auth::bearer_token(headers)? else {
        return Err(ApiError::Unauthorized(
            "this resource needs one Authorization: Bearer <token> header".into(),
        ));
    };
    let equal = Sha256::digest(presented.as_bytes()).ct_eq(&Sha256::digest(expected.as_bytes()));
    if bool::from(equal) {
        Ok(())
    } else {
        tracing::warn!(%path, "admin API: wrong bearer token");
        Err(ApiError::Forbidden(
            "the bearer token is not valid for this resource".into(),
        ))
    }
}

/// Any other `/admin` path, once authenticated.
async fn unknown(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::NotFound(format!("no resource at {}", uri.path()))
}

/// `GET /admin/cluster`: the live engines and who holds which partition,
/// read from the store, so any engine gives the same answer.
#[utoipa::path(
    get,
    path = "/admin/cluster",
    operation_id = "getCluster",
    tag = "admin",
    summary = "The engines and their partitions",
    description = "The live engines (those whose heartbeat has not lapsed) and every \
partition's lease: owner, fencing epoch and whether it is live; `members` lists every live \
engine, gateways included, with its role, version, start time, readiness, partitions and \
drones flying. Read from the store, so every engine gives the same answer.",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The cluster", body = ClusterView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No admin token is configured (the admin API is disabled)",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn cluster(State(state): State<AppState>) -> Result<Json<ClusterView>, ApiError> {
    Ok(Json(state.engine.cluster().await?))
}

/// Which engine an operator command is for (`?engine=`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// The engine serving the request (no `engine` parameter).
    Here,
    /// One engine, by id.
    Engine(String),
    /// Every engine (`engine=all`).
    All,
}

fn target(query: &HashMap<String, String>) -> Result<Target, ApiError> {
    match query.get("engine").map(|v| v.trim()) {
        None => Ok(Target::Here),
        Some("") => Err(ApiError::Validation(
            dronedelivery_actors::domain::ValidationError::field(
                "engine",
                "must name an engine (see GET /admin/cluster) or be `all`",
            ),
        )),
        Some(all) if all.eq_ignore_ascii_case("all") => Ok(Target::All),
        Some(id) => Ok(Target::Engine(id.to_owned())),
    }
}

/// Who asked, for the logs of this engine and of the target: the client's
/// address (the first `X-Forwarded-For` hop behind a proxy) and its user
/// agent, through this engine. Every caller holds the one admin token, so
/// this is what tells operators apart.
fn who(headers: &HeaderMap, extensions: &Extensions, via: &str) -> String {
    let forwarded = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip().to_string());
    let client = forwarded
        .map(str::to_owned)
        .or(peer)
        .unwrap_or_else(|| "unknown client".into());
    let agent = headers
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no user agent");
    format!("{client} ({agent}) via {via}")
}

/// The answer for a command on another engine that failed.
fn remote_error(e: RemoteError, engine: &str, what: &str) -> ApiError {
    match e {
        RemoteError::Command(CommandError::NotFound) => ApiError::NotFound(format!(
            "no supervisor named {what} on engine {engine}; known: {KNOWN_SUPERVISORS}"
        )),
        RemoteError::Command(CommandError::Unavailable(reason)) => {
            tracing::warn!(%engine, %what, %reason, "admin API: command failed");
            ApiError::Unavailable(format!("{what} on engine {engine}: {reason}"))
        }
        RemoteError::Command(e) => e.into(),
        RemoteError::Call(CallError::UnknownEngine(id)) => ApiError::NotFound(format!(
            "no live engine {id} (GET /admin/cluster lists the members)"
        )),
        RemoteError::Call(e @ (CallError::NotListening(_) | CallError::Timeout { .. })) => {
            tracing::warn!(%engine, %what, error = %e, "admin API: engine did not answer");
            ApiError::GatewayTimeout(e.to_string())
        }
        RemoteError::Call(CallError::Store(e)) => e.into(),
    }
}

/// The supervisors an operator can restart.
const KNOWN_SUPERVISORS: &str = "root, fleet, deliveries, consumers, workflow";

/// `GET /admin/supervisors[?engine=ID|all]`: an engine's supervision tree,
/// parents first (`root`, `fleet`, `deliveries`, `consumers`, `workflow`):
/// this engine's, a named engine's, or every live engine's.
#[utoipa::path(
    get,
    path = "/admin/supervisors",
    operation_id = "listSupervisors",
    tag = "admin",
    summary = "The supervision tree of one engine or of all",
    description = "Without `engine`, the tree of the engine answering; with `engine=ID`, that \
engine's, asked through the control plane; with `engine=all`, every live engine's (an engine \
that does not answer is listed with its error).",
    security(("bearerAuth" = [])),
    params(("engine" = Option<String>, Query, min_length = 1, description = "An engine id from `GET /admin/cluster`, or `all`")),
    responses(
        (status = 200, description = "The tree of one engine, or of every engine", body = SupervisorsView),
        (status = 400, description = "`engine` is empty",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No live engine of that id, or no admin token is configured (the admin API is disabled)",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, response = ServiceUnavailable),
        (status = 504, response = GatewayTimeout)
    )
)]
async fn supervisors(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<SupervisorsView>, ApiError> {
    let engine = &state.engine;
    let one = |id: String, supervisors| {
        Json(SupervisorsView::One(SupervisorList {
            engine: id,
            supervisors,
        }))
    };
    match target(&query)? {
        Target::Here => Ok(one(engine.id().to_owned(), engine.supervisor_tree().await)),
        Target::Engine(id) => {
            let supervisors = engine
                .supervisors_of(&id)
                .await
                .map_err(|e| remote_error(e, &id, "the supervision tree"))?;
            Ok(one(id, supervisors))
        }
        Target::All => {
            let members = engine.members().await?;
            let engines = futures::future::join_all(members.into_iter().map(|card| async move {
                match engine.supervisors_of(&card.id).await {
                    Ok(supervisors) => EngineSupervisors {
                        engine: card.id,
                        role: card.role,
                        supervisors: Some(supervisors),
                        error: None,
                    },
                    Err(e) => EngineSupervisors {
                        engine: card.id,
                        role: card.role,
                        supervisors: None,
                        error: Some(e.to_string()),
                    },
                }
            }))
            .await;
            Ok(Json(SupervisorsView::All(ClusterSupervisors { engines })))
        }
    }
}

/// `POST /admin/supervisors/{name}/restart[?engine=ID|all]`: restarts a
/// supervisor's subtree gracefully, here, on a named engine, or on every
/// engine that runs actors one after the other (a rolling restart).
#[utoipa::path(
    post,
    path = "/admin/supervisors/{name}/restart",
    operation_id = "restartSupervisor",
    tag = "admin",
    summary = "Restart a supervisor's subtree, here, on one engine or on all",
    description = "Restarts the subtree gracefully and answers with the supervisor's new state. \
With `engine=ID`, on that engine (through the control plane); with `engine=all`, on every \
engine that runs actors, one at a time, each once the previous one is ready again (a rolling \
restart); it stops at the first failure, answered 503 with what was done. Every restart is \
logged, here and on the target, with the client's address and user agent.",
    security(("bearerAuth" = [])),
    params(
        ("name" = String, Path, description = "`root`, `fleet`, `deliveries`, `consumers` or `workflow` (case-insensitive)"),
        ("engine" = Option<String>, Query, min_length = 1, description = "An engine id from `GET /admin/cluster`, or `all`")
    ),
    responses(
        (status = 200, description = "Restarted (one engine: its new state; all: each engine's outcome)", body = RestartView),
        (status = 400, description = "`engine` is empty",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No supervisor of that name, no live engine of that id, or no admin token is configured (the admin API is disabled)",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, response = ServiceUnavailable),
        (status = 504, response = GatewayTimeout)
    )
)]
async fn restart_supervisor(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    extensions: Extensions,
) -> Result<Json<RestartView>, ApiError> {
    let name = name.to_ascii_lowercase();
    let engine = &state.engine;
    let target = target(&query)?;
    let by = who(&headers, &extensions, engine.id());
    tracing::info!(supervisor = %name, ?target, %by, "admin API: restart requested");
    if !KNOWN_SUPERVISORS.split(", ").any(|k| k == name) {
        return Err(ApiError::NotFound(format!(
            "no supervisor named {name}; known: {KNOWN_SUPERVISORS}"
        )));
    }
    let id = match target {
        Target::Here => engine.id().to_owned(),
        Target::Engine(id) => id,
        Target::All => {
            let engines = engine
                .rolling_restart(&name, &by, |o| {
                    tracing::info!(supervisor = %name, engine = %o.engine, outcome = %o.outcome,
                        error = ?o.error, "admin API: rolling restart");
                })
                .await?;
            if let Some(failed) = engines.iter().find(|o| o.outcome != "restarted") {
                let done: Vec<&str> = engines
                    .iter()
                    .filter(|o| o.outcome == "restarted")
                    .map(|o| o.engine.as_str())
                    .collect();
                return Err(ApiError::Unavailable(format!(
                    "rolling restart of {name} stopped at engine {}: {}; restarted before it: [{}]",
                    failed.engine,
                    failed.error.as_deref().unwrap_or("failed"),
                    done.join(", ")
                )));
            }
            return Ok(Json(RestartView::All(RollingRestart {
                supervisor: name,
                engines,
            })));
        }
    };
    match engine.restart_on(&id, &name, &by).await {
        Ok(info) => Ok(Json(RestartView::One(info))),
        Err(e) => Err(remote_error(e, &id, &name)),
    }
}

/// Reads an optional non-negative integer query parameter. Given empty
/// (`limit=`), it is not a number, as the document says.
fn number(query: &HashMap<String, String>, name: &str) -> Result<Option<usize>, ApiError> {
    match query.get(name).map(|v| v.trim()) {
        None => Ok(None),
        Some(v) => v.parse::<usize>().map(Some).map_err(|_| {
            ApiError::Validation(dronedelivery_actors::domain::ValidationError::field(
                name,
                "must be a non-negative integer",
            ))
        }),
    }
}

/// `GET /admin/deadletters?offset=…&limit=…`: a page of dead letters, newest
/// first, `{"items", "total", "offset", "limit"}`. `limit` defaults to
/// [`DEFAULT_PAGE`] and must be in `1..=`[`MAX_PAGE`].
#[utoipa::path(
    get,
    path = "/admin/deadletters",
    operation_id = "listDeadLetters",
    tag = "admin",
    summary = "List dead letters",
    description = "A page of the messages that could not be processed, newest first.",
    security(("bearerAuth" = [])),
    params(
        ("offset" = Option<u64>, Query, description = "Items to skip (default 0, at most 2^63 - 1)"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 100, description = "Page size (default 20, at most 100)")
    ),
    responses(
        (status = 200, description = "A page", body = DeadLetterPage),
        (status = 400, description = "`offset` or `limit` is not a valid number",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No admin token is configured (the admin API is disabled)",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn dead_letters(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    let offset = number(&query, "offset")?.unwrap_or(0);
    if u64::try_from(offset).map_or(true, |o| o > i64::MAX as u64) {
        // The document says int64, as clients and fuzzers read `u64`.
        return Err(ApiError::Validation(
            dronedelivery_actors::domain::ValidationError::field(
                "offset",
                format!("must be at most {}", i64::MAX),
            ),
        ));
    }
    let limit = number(&query, "limit")?.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::Validation(
            dronedelivery_actors::domain::ValidationError::field(
                "limit",
                format!("must be between 1 and {MAX_PAGE}"),
            ),
        ));
    }
    let (items, total) = state.engine.dead_letters(offset, limit).await?;
    Ok(Json(DeadLetterPage {
        items,
        total,
        offset: offset as u64,
        limit: limit as u64,
    }))
}

/// `POST /admin/deadletters/{id}/replay`: puts the message back on the queue
/// (same message id) and answers **202** `{"replayed": id, "operation": …}`.
/// If it fails again it is dead-lettered again under the same id.
#[utoipa::path(
    post,
    path = "/admin/deadletters/{id}/replay",
    operation_id = "replayDeadLetter",
    tag = "admin",
    summary = "Replay a dead letter",
    description = "Puts the message back on the queue under the same message id; if it fails \
again it is dead-lettered again under that id.",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "Message id of the dead letter")),
    responses(
        (status = 202, description = "Queued again", body = ReplayedDeadLetter),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No dead letter with that id, or no admin token is configured (the admin API is disabled)",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn replay_dead_letter(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    extensions: Extensions,
) -> Result<Response, ApiError> {
    let by = who(&headers, &extensions, state.engine.id());
    match state.engine.replay_dead_letter(&id).await {
        Ok(message) => {
            tracing::info!(message_id = %id, operation = %message.operation, %by, "admin API: dead letter replayed");
            Ok((
                StatusCode::ACCEPTED,
                Json(ReplayedDeadLetter {
                    replayed: id,
                    operation: message.operation,
                }),
            )
                .into_response())
        }
        Err(CommandError::NotFound) => Err(ApiError::NotFound(format!("no dead letter {id}"))),
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------
// Response bodies, as documented.
// ---------------------------------------------------------------------------

/// `GET /admin/supervisors[?engine=ID]`: one engine's supervision tree,
/// parents first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SupervisorList {
    /// The engine.
    pub engine: String,
    /// `root`, `fleet`, `deliveries`, `consumers`, `workflow`.
    pub supervisors: Vec<SupervisorInfo>,
}

/// One engine's tree in `GET /admin/supervisors?engine=all`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EngineSupervisors {
    /// The engine.
    pub engine: String,
    /// Its role: `all`, `gateway` or `worker`.
    pub role: String,
    /// Its supervisors; `null` when it did not answer.
    #[schema(required = true)]
    pub supervisors: Option<Vec<SupervisorInfo>>,
    /// Why it did not answer.
    #[schema(required = true)]
    pub error: Option<String>,
}

/// `GET /admin/supervisors?engine=all`: every live engine's tree.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterSupervisors {
    /// By engine id.
    pub engines: Vec<EngineSupervisors>,
}

/// One engine's tree, or every engine's.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum SupervisorsView {
    /// Without `engine`, or `engine=ID`.
    One(SupervisorList),
    /// `engine=all`.
    All(ClusterSupervisors),
}

/// `POST /admin/supervisors/{name}/restart?engine=all`: each engine's
/// outcome, in the order they were restarted.
#[derive(Debug, Serialize, ToSchema)]
pub struct RollingRestart {
    /// The supervisor restarted.
    pub supervisor: String,
    /// Every engine that runs actors.
    pub engines: Vec<EngineRestart>,
}

/// One engine's restarted supervisor, or every engine's outcome.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum RestartView {
    /// Without `engine`, or `engine=ID`.
    One(SupervisorInfo),
    /// `engine=all`.
    All(RollingRestart),
}

/// `GET /admin/deadletters`: a page of dead letters, newest first.
#[derive(Debug, Serialize, ToSchema)]
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
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayedDeadLetter {
    /// The message id replayed.
    pub replayed: String,
    /// Its operation (`delivery`, `reschedule`, `cancel`, …).
    pub operation: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header::AUTHORIZATION;
    use axum::http::HeaderValue;

    fn headers(auth: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for a in auth {
            h.append(AUTHORIZATION, HeaderValue::from_static(a));
        }
        h
    }

    fn status(r: Result<(), ApiError>) -> u16 {
        r.err().map_or(200, |e| e.status().as_u16())
    }

    #[test]
    fn disabled_without_a_token() {
        for configured in [None, Some("")] {
            assert_eq!(
                status(authorize(configured, &headers(&["Bearer x"]), "/admin/x")),
                404
            );
        }
    }

    #[test]
    fn needs_a_well_formed_bearer_token() {
        let t = Some("s3cret");
        for auth in [
            &[][..],
            &["s3cret"][..],
            &["Basic czNjcmV0"][..],
            &["Bearer"][..],
            &["Bearer "][..],
            &["Bearer s3 cret"][..],
            &["Bearer s3cret", "Bearer s3cret"][..],
        ] {
            assert_eq!(
                status(authorize(t, &headers(auth), "/admin")),
                401,
                "{auth:?}"
            );
        }
        assert_eq!(
            status(authorize(t, &headers(&["Bearer s3cre"]), "/admin")),
            403
        );
        assert_eq!(
            status(authorize(t, &headers(&["Bearer s3cret1"]), "/admin")),
            403
        );
        assert_eq!(
            status(authorize(t, &headers(&["Bearer s3cret"]), "/admin")),
            200
        );
        assert_eq!(
            status(authorize(t, &headers(&["bearer   s3cret "]), "/admin")),
            200
        );
    }
}
