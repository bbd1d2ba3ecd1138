//! [`ApiError`]: every failure a handler can answer with, rendered as an
//! RFC 9457 problem document (`application/problem+json`).
//!
//! Handlers return `Result<_, ApiError>` and use `?` on engine calls, so the
//! mapping from a domain or backend failure to an HTTP status lives here and
//! nowhere else.
//!
//! The error shape's OpenAPI description lives here too: [`Problem`] (the
//! schema of every error body) and the error responses shared by many
//! operations ([`ServiceUnavailable`], [`TooManyRequests`],
//! [`PayloadTooLarge`], …), which the handlers' `#[utoipa::path]`
//! annotations reference and [`ErrorComponents`] registers in the document.

use axum::http::header::{CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dronedelivery_actors::domain::{FieldError, ValidationError};
use dronedelivery_actors::ports::{DependencyDown, StoreError};
use dronedelivery_actors::CommandError;
use serde_json::json;
use utoipa::{OpenApi, ToResponse, ToSchema};

use crate::limits::BODY_LIMIT;

/// Media type of every error body (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Detail given to clients for any 500: the real cause is logged, never sent,
/// because it may name internal hosts, keys or documents.
const INTERNAL_DETAIL: &str = "an internal error occurred; it has been logged";

/// Detail given to clients when a backend is down: which backend and why is
/// logged, not sent, for the same reason as [`INTERNAL_DETAIL`].
const BACKEND_DETAIL: &str = "a backend is temporarily unavailable; retry later";

/// `WWW-Authenticate` challenge of a 401 without credentials (RFC 6750 §3).
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"dronedelivery\"";

/// Everything that can go wrong while serving a request, one variant per HTTP
/// status the gateway answers with on its own. Each renders as a problem
/// document so that clients have a single error shape to parse, unlike the
/// original services (Spring's `{timestamp,...}`, Koa's `{level,code,...}`,
/// .NET's empty 500s).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 with the offending fields listed in `errors`, so a client can fix
    /// them all in one round trip.
    #[error("invalid request: {0}")]
    Validation(#[from] ValidationError),
    /// 400: the body is not well-formed JSON (serde's message says where).
    #[error("malformed JSON: {0}")]
    BadJson(String),
    /// 400 for any other unreadable request (for example a body that could not
    /// be received).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 408: the request body stopped arriving (the HTTP server's body
    /// timeout); the connection is closed after the answer.
    #[error("request body timeout")]
    RequestTimeout,
    /// 415: the route takes JSON and the `Content-Type` says otherwise.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// 413: the body exceeds [`BODY_LIMIT`].
    #[error("payload too large")]
    PayloadTooLarge,
    /// 404 with a detail naming what was not found.
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 401 with `WWW-Authenticate: Bearer`: credentials are missing or not a
    /// well-formed bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// 401 with `WWW-Authenticate: Bearer …, error="invalid_token"`: a
    /// bearer token that is not valid (see [`crate::auth`]); the text says
    /// why and is safe to send.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// 403: well-formed credentials that do not grant access.
    #[error("{0}")]
    Forbidden(String),
    /// 422: the request is well-formed but cannot be processed as sent (an
    /// `Idempotency-Key` reused with a different body).
    #[error("{0}")]
    Unprocessable(String),
    /// 409: the request contradicts the resource's state (rescheduling a
    /// delivery already on its way to the dropoff, cancelling a completed one).
    #[error("{0}")]
    Conflict(String),
    /// 429 with `Retry-After`: the client is over its write rate limit
    /// (see [`crate::ratelimit`]).
    #[error("too many requests")]
    TooManyRequests {
        /// Seconds until the client's next request would be accepted.
        retry_after_secs: u64,
    },
    /// 503 with `Retry-After: 1`: a backend (queue or store) is down or the
    /// engine is not ready. The detail is sent as is, so it must be safe to
    /// show; backend errors are logged when converted (see `From<StoreError>`).
    #[error("{0}")]
    Unavailable(String),
    /// 503 with `Retry-After`: the request needs a dependency the engine
    /// knows to be down, so it was not tried (see the actors' `health`
    /// module). The problem document names the dependency in `dependency`;
    /// requests that do not need it are still served.
    #[error("{dependency} is down")]
    DependencyDown {
        /// `queue`, `deliveries`, `drones`, `packages`, `deadletters`, `history`.
        dependency: &'static str,
        /// Seconds until the dependency is probed again.
        retry_after_secs: u64,
    },
    /// 504: another engine an operator command was sent to did not answer
    /// (it stopped or died, or took longer than the command's timeout).
    #[error("{0}")]
    GatewayTimeout(String),
    /// 500: a bug or corrupt data. The detail is logged with `tracing::error!`
    /// and replaced by a generic text in the body.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::BadJson(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized(_) | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::DependencyDown { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `detail` member: what a client may be told.
    pub fn detail(&self) -> String {
        match self {
            Self::Validation(e) => e.to_string(),
            Self::BadJson(m) => format!("malformed JSON: {m}"),
            Self::BadRequest(m)
            | Self::NotFound(m)
            | Self::Conflict(m)
            | Self::Unavailable(m)
            | Self::GatewayTimeout(m)
            | Self::Unauthorized(m)
            | Self::Forbidden(m)
            | Self::Unprocessable(m) => m.clone(),
            Self::RequestTimeout => {
                "the request body stopped arriving before it was complete".into()
            }
            Self::UnsupportedMediaType => {
                "the request body must be JSON (Content-Type: application/json or a +json type)"
                    .into()
            }
            Self::PayloadTooLarge => format!(
                "the request body exceeds the {} KiB limit",
                BODY_LIMIT / 1024
            ),
            Self::MethodNotAllowed => "the resource exists but does not support this method".into(),
            Self::TooManyRequests { retry_after_secs } => {
                format!("too many write requests from this client; retry in {retry_after_secs} s")
            }
            Self::DependencyDown {
                dependency,
                retry_after_secs,
            } => format!(
                "this request needs the {dependency} store, which is down; \
                 retry in {retry_after_secs} s (requests that do not need it are served)"
            ),
            Self::InvalidToken(m) => format!("the bearer token is not valid: {m}"),
            Self::Internal(_) => INTERNAL_DETAIL.into(),
        }
    }
}

/// The `WWW-Authenticate` value of a 401 for an invalid token: the realm,
/// `error="invalid_token"` and the reason as `error_description`, reduced
/// to the characters RFC 6750 allows there (no quote, no backslash).
fn invalid_token_challenge(why: &str) -> HeaderValue {
    let description: String = why
        .chars()
        .filter(|c| matches!(c, ' ' | '!' | '#'..='[' | ']'..='~'))
        .take(200)
        .collect();
    HeaderValue::from_str(&format!(
        "Bearer realm=\"dronedelivery\", error=\"invalid_token\", error_description=\"{description}\""
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(BEARER_CHALLENGE))
}

/// Backend failures: `Unavailable` is transient (503, retry), `Corrupt` is a
/// stored document we cannot decode, which a retry will not fix (500). Both
/// are logged here with their cause; the client gets a generic detail.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "backend unavailable");
                Self::Unavailable(BACKEND_DETAIL.into())
            }
            StoreError::Corrupt(cause) => Self::Internal(format!("corrupt document: {cause}")),
            StoreError::DependencyDown(down) => down.into(),
        }
    }
}

/// Refused engine commands, with generic details: handlers that can name
/// the resource match `NotFound` themselves first. `Unavailable` carries a
/// backend's or actor's reason, which is logged, not sent.
impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound => Self::NotFound("not found".into()),
            CommandError::WrongStage(stage) => Self::Conflict(format!(
                "not possible while the delivery is {}",
                stage.name()
            )),
            CommandError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "engine command unavailable");
                Self::Unavailable(BACKEND_DETAIL.into())
            }
            CommandError::DependencyDown(down) => down.into(),
        }
    }
}

impl From<DependencyDown> for ApiError {
    fn from(down: DependencyDown) -> Self {
        Self::DependencyDown {
            dependency: down.dependency,
            retry_after_secs: down.retry_after.as_secs().max(1),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            tracing::error!(error = %cause, "internal error");
        }
        let status = self.status();
        let errors = match &self {
            Self::Validation(e) => Some(e.errors.as_slice()),
            _ => None,
        };
        let mut response = match &self {
            Self::DependencyDown { dependency, .. } => {
                problem_with(status, &self.detail(), &[("dependency", json!(dependency))])
            }
            _ => problem(status, &self.detail(), errors),
        };
        if let Self::DependencyDown {
            retry_after_secs, ..
        } = &self
        {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::TooManyRequests { retry_after_secs } = &self {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            // RFC 9110 §15.5.9: the server is not waiting for the rest.
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if let Self::InvalidToken(why) = &self {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, invalid_token_challenge(why));
        } else if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(BEARER_CHALLENGE));
        }
        response
    }
}

/// Builds a problem document response. Used by [`ApiError`] and by the
/// middleware that turns bare error responses of other layers (timeouts, body
/// limit, extractor rejections) into the same shape.
pub fn problem(status: StatusCode, detail: &str, errors: Option<&[FieldError]>) -> Response {
    match errors {
        Some(errors) => problem_with(status, detail, &[("errors", json!(errors))]),
        None => problem_with(status, detail, &[]),
    }
}

/// A problem document with extension members (RFC 9457 §3.2).
fn problem_with(
    status: StatusCode,
    detail: &str,
    members: &[(&str, serde_json::Value)],
) -> Response {
    let mut body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some(obj) = body.as_object_mut() {
        for (name, value) in members {
            obj.insert((*name).to_owned(), value.clone());
        }
    }
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

// ---------------------------------------------------------------------------
// The error shape and the shared error responses, as OpenAPI components.
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
    /// On a 503 for a request that needs a dependency known to be down:
    /// which one (`queue`, `deliveries`, `drones`, `packages`,
    /// `deadletters`, `history`). Absent otherwise.
    #[schema(nullable = false, example = "packages")]
    pub dependency: Option<String>,
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

/// The client is over its write rate limit; retry after the delay given.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds until the client's next request would be accepted"))
)]
pub struct TooManyRequests(pub Problem);

/// A backend (queue or store) is unavailable, or the engine is not ready;
/// retry after the delay given. When the engine knows the dependency the
/// request needs is down, it answers at once and names it in `dependency`.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds to wait before retrying (1, or until the down dependency is probed again)"))
)]
pub struct ServiceUnavailable(pub Problem);

/// The engine an operator command was aimed at did not answer in time.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct GatewayTimeout(pub Problem);

/// An internal error (a bug or a stored document that cannot be read); the
/// cause is logged, not sent.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct InternalError(pub Problem);

/// No `Authorization: Bearer <token>` header, a malformed one, or (with
/// bearer-token authentication on) a token that is not valid.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"dronedelivery\"`, with \
`error=\"invalid_token\"` and an `error_description` when a token was sent and refused"))
)]
pub struct Unauthorized(pub Problem);

/// The bearer token does not grant this: not the admin token, not a role
/// the route needs, or another owner's resources.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct Forbidden(pub Problem);

/// The OpenAPI components of this module: [`Problem`] and the shared error
/// responses, which operations reference as `response = …` (a `$ref` to
/// `#/components/responses/…`) and so must be registered once.
#[derive(OpenApi)]
#[openapi(components(
    schemas(Problem),
    responses(
        PayloadTooLarge,
        UnsupportedMediaType,
        TooManyRequests,
        ServiceUnavailable,
        GatewayTimeout,
        InternalError,
        Unauthorized,
        Forbidden
    )
))]
pub struct ErrorComponents;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    async fn render(e: ApiError) -> (StatusCode, Option<String>, Option<String>, Value) {
        let r = e.into_response();
        let status = r.status();
        let ct = r
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry = r
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, ct, retry, body)
    }

    #[tokio::test]
    async fn validation_lists_fields() {
        let err = ValidationError {
            errors: vec![
                FieldError {
                    field: "ownerId".into(),
                    message: "is required".into(),
                },
                FieldError {
                    field: "packageInfo.size".into(),
                    message: "must be one of Small, Medium, Large".into(),
                },
            ],
        };
        let (status, ct, retry, body) = render(ApiError::Validation(err)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(ct.as_deref(), Some(PROBLEM_JSON));
        assert_eq!(retry, None);
        assert_eq!(body["type"], "about:blank");
        assert_eq!(body["title"], "Bad Request");
        assert_eq!(body["status"], 400);
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("ownerId") && detail.contains("packageInfo.size"),
            "{detail}"
        );
        assert_eq!(body["errors"][0]["field"], "ownerId");
        assert_eq!(
            body["errors"][1]["message"],
            "must be one of Small, Medium, Large"
        );
    }

    #[tokio::test]
    async fn unavailable_sets_retry_after() {
        let (status, ct, retry, body) = render(ApiError::Unavailable("queue down".into())).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ct.as_deref(), Some(PROBLEM_JSON));
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(body["title"], "Service Unavailable");
        assert_eq!(body["detail"], "queue down");
        assert!(body.get("errors").is_none());
    }

    #[tokio::test]
    async fn internal_never_leaks_its_cause() {
        let (status, _, _, body) = render(ApiError::Internal("password=hunter2".into())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["status"], 500);
        assert!(!body.to_string().contains("hunter2"));
    }

    #[tokio::test]
    async fn store_errors_map_by_kind() {
        let (status, _, retry, body) =
            render(StoreError::Unavailable("redis at 10.0.0.5 refused".into()).into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(!body.to_string().contains("10.0.0.5"));
        let (status, _, _, _) = render(StoreError::Corrupt("bad json".into()).into()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn other_variants_have_their_status() {
        for (e, s) in [
            (ApiError::BadJson("EOF".into()), 400),
            (ApiError::UnsupportedMediaType, 415),
            (ApiError::PayloadTooLarge, 413),
            (ApiError::NotFound("delivery x not found".into()), 404),
            (ApiError::MethodNotAllowed, 405),
            (ApiError::Conflict("cannot cancel".into()), 409),
            (ApiError::Forbidden("wrong token".into()), 403),
            (ApiError::Unprocessable("key reused".into()), 422),
            (ApiError::RequestTimeout, 408),
        ] {
            let (status, ct, _, body) = render(e).await;
            assert_eq!(status.as_u16(), s);
            assert_eq!(ct.as_deref(), Some(PROBLEM_JSON));
            assert_eq!(body["status"], s);
        }
    }

    #[tokio::test]
    async fn unauthorized_sends_a_bearer_challenge() {
        let r = ApiError::Unauthorized("missing bearer token".into()).into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let challenge = r
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
    }

    #[tokio::test]
    async fn request_timeout_closes_the_connection() {
        let r = ApiError::RequestTimeout.into_response();
        assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            r.headers().get(CONNECTION).and_then(|v| v.to_str().ok()),
            Some("close")
        );
    }

    #[tokio::test]
    async fn command_errors_map_by_kind() {
        use dronedelivery_actors::domain::DeliveryStage;
        let (status, _, _, _) = render(CommandError::NotFound.into()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _, body) =
            render(CommandError::WrongStage(DeliveryStage::HeadedToPickup).into()).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("HeadedToPickup")));
        let (status, _, retry, body) =
            render(CommandError::Unavailable("redis at 10.0.0.5".into()).into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(!body.to_string().contains("10.0.0.5"));
    }
}
