//! Body extractors with the contract's rules: JSON content type, 64 KiB limit,
//! serde's message on malformed JSON, all answered as [`ApiError`] problems
//! rather than axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::error::ApiError;

/// A JSON body parsed to a [`Value`]. Parsing to a value (not a typed struct)
/// lets the domain's lenient validators report every bad field at once.
#[derive(Debug)]
pub struct JsonBody(pub Value);

/// A body that may be empty (then `None`, and no `Content-Type` is needed),
/// otherwise JSON. For `PUT /api/packages/{id}`, which the original's README
/// calls with no body at all.
#[derive(Debug)]
pub struct OptionalJsonBody(pub Option<Value>);

/// True for `application/json` and any `type/subtype+json`, with parameters
/// (`; charset=utf-8`) ignored, case-insensitively.
pub fn is_json_content_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.split_once('/') {
        Some((ty, sub)) if !ty.is_empty() => {
            essence == "application/json" || sub.ends_with("+json")
        }
        _ => false,
    }
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        Some(ct) if is_json_content_type(ct) => Ok(()),
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else if is_body_timeout(&rejection) {
            ApiError::RequestTimeout
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    })
}

/// True when the body could not be read because it paused longer than the
/// server's body timeout (tower-http's `RequestBodyTimeoutLayer`, installed
/// by the engine's HTTP server): the error sits somewhere in the rejection's
/// source chain.
fn is_body_timeout(rejection: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(rejection);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

fn parse(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadJson(e.to_string()))
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json(req.headers())?;
        let bytes = read_body(req, state).await?;
        parse(&bytes).map(Self)
    }
}

impl<S: Send + Sync> FromRequest<S> for OptionalJsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let bytes = read_body(req, state).await?;
        // Only no bytes at all is no body: whitespace is not an empty body but
        // malformed JSON (the document allows a JSON value or nothing).
        if bytes.is_empty() {
            return Ok(Self(None));
        }
        require_json(&headers)?;
        parse(&bytes).map(|v| Self(Some(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use std::time::Duration;
    use tower_http::timeout::TimeoutBody;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_is_a_request_timeout() {
        // A body whose first bytes never come, behind the server's body timeout.
        let never = Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
        let req = Request::builder()
            .header(CONTENT_TYPE, "application/json")
            .body(Body::new(TimeoutBody::new(Duration::from_secs(1), never)))
            .unwrap_or_default();
        let rejection = JsonBody::from_request(req, &()).await.err();
        assert!(
            matches!(rejection, Some(ApiError::RequestTimeout)),
            "{rejection:?}"
        );
        // Other body errors stay a 400.
        let failing = Body::from_stream(futures::stream::iter([Err::<Bytes, _>(
            std::io::Error::other("reset"),
        )]));
        let req = Request::builder()
            .header(CONTENT_TYPE, "application/json")
            .body(failing)
            .unwrap_or_default();
        let rejection = JsonBody::from_request(req, &()).await.err();
        assert!(
            matches!(rejection, Some(ApiError::BadRequest(_))),
            "{rejection:?}"
        );
    }

    #[tokio::test]
    async fn an_optional_body_is_nothing_or_json() {
        let read = |ct: Option<&str>, body: &'static str| {
            let mut req = Request::builder();
            if let Some(ct) = ct {
                req = req.header(CONTENT_TYPE, ct);
            }
            let req = req.body(Body::from(body)).unwrap_or_default();
            OptionalJsonBody::from_request(req, &())
        };
        assert!(matches!(read(None, "").await, Ok(OptionalJsonBody(None))));
        assert!(matches!(
            read(Some("application/json"), "").await,
            Ok(OptionalJsonBody(None))
        ));
        assert!(matches!(
            read(Some("application/json"), "{}").await,
            Ok(OptionalJsonBody(Some(_)))
        ));
        assert!(matches!(
            read(Some("application/json"), "\r\n").await,
            Err(ApiError::BadJson(_))
        ));
        assert!(matches!(
            read(None, " ").await,
            Err(ApiError::UnsupportedMediaType)
        ));
    }

    #[test]
    fn recognises_json_media_types() {
        for ct in [
            "application/json",
            "Application/JSON; charset=UTF-8",
            "application/merge-patch+json",
            "application/vnd.fabrikam.delivery+json;v=1",
        ] {
            assert!(is_json_content_type(ct), "{ct}");
        }
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "json",
            "",
            "/+json",
        ] {
            assert!(!is_json_content_type(ct), "{ct}");
        }
    }
}
