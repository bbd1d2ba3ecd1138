//! Cross-cutting HTTP concerns: path normalisation, request ids, tracing,
//! metrics, body limit, timeout, and turning every bare error into a problem
//! document. [`wrap`] assembles them around a router; the order is explained
//! there. The path templates the normaliser knows are not listed here: they
//! are the documented routes' own ([`Templates`]), passed in by
//! [`crate::finish`].

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::to_bytes;
use axum::extract::{MatchedPath, OriginalUri, Request};
use axum::http::header::{
    HeaderName, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER,
};
use axum::http::uri::PathAndQuery;
use axum::http::HeaderValue;
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{from_fn, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use dronedelivery_actors::metrics::{HTTP_REQUESTS_TOTAL, HTTP_REQUEST_DURATION_SECONDS};
use futures::StreamExt;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::error::{problem, ApiError, PROBLEM_JSON};
use crate::state::REQUEST_ID_HEADER;

pub use crate::limits::{BODY_LIMIT, DRAIN_LIMIT, DRAIN_TIMEOUT, REQUEST_TIMEOUT};

/// Version prefix of the original's public ingress (`/v0.1.0/api/...`).
/// Stripped so that clients of either the ingress or the services work.
pub const VERSION_PREFIX: &str = "/v0.1.0";

/// First segments of the paths whose static segments match
/// case-insensitively: the API, the operator API and the console, as
/// ASP.NET Core routing matched the original Delivery service's
/// (`/api/Deliveries/{id}`). The probes, `/metrics` and `/openapi.json`
/// match exactly, as they always did.
pub const CASE_INSENSITIVE_ROOTS: [&str; 3] = ["api", "admin", "console"];

/// The path templates [`Templates::normalize`] knows, one entry per segment
/// (`None` is a parameter), most specific first.
///
/// Built from the templates of the documented routes (the OpenAPI
/// document's paths, which `utoipa-axum` registers together with the
/// routes, see [`crate::finish`]), so the router, the document and the
/// normaliser cannot disagree. Only templates under
/// [`CASE_INSENSITIVE_ROOTS`] are kept.
///
/// Static segments are matched case-insensitively and rewritten to the
/// template's (lower) case so the case-sensitive axum router matches them;
/// parameters are never touched. Where two templates fit one path, the one
/// with a static segment at the first position where they differ wins
/// (`public/{id}` over `{id}/owner`), as the router's static-first rule does.
#[derive(Debug, Clone, Default)]
pub struct Templates(Arc<[Vec<Option<String>>]>);

impl Templates {
    /// The templates among `paths` (`/api/deliveries/{id}`) that start with
    /// one of [`CASE_INSENSITIVE_ROOTS`].
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>) -> Self {
        let mut templates: Vec<Vec<Option<String>>> = paths
            .into_iter()
            .filter_map(|path| path.strip_prefix('/'))
            .map(|path| {
                path.split('/')
                    .map(|seg| (!seg.starts_with('{')).then(|| seg.to_owned()))
                    .collect::<Vec<_>>()
            })
            .filter(|t| {
                t.first()
                    .and_then(Option::as_deref)
                    .is_some_and(|root| CASE_INSENSITIVE_ROOTS.contains(&root))
            })
            .collect();
        // Static before parameter at the first differing position; a stable
        // sort keeps the given order otherwise.
        templates.sort_by(|a, b| {
            let params =
                |t: &Vec<Option<String>>| t.iter().map(Option::is_none).collect::<Vec<_>>();
            params(a).cmp(&params(b))
        });
        Self(templates.into())
    }

    /// The templates, each as a path (`/api/deliveries/{}`), most specific
    /// first.
    pub fn paths(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|t| {
                t.iter()
                    .map(|seg| format!("/{}", seg.as_deref().unwrap_or("{}")))
                    .collect()
            })
            .collect()
    }

    /// Normalises a request path the way the original deployment accepted
    /// it: strips a leading `/v0.1.0`, then, if the path fits one of the
    /// templates (ignoring a single trailing slash, which ASP.NET and Koa
    /// also ignored), lower-cases its static segments. Ids are left exactly
    /// as sent. Paths that fit no template are only stripped of the prefix,
    /// so they still reach the 404 fallback (or the probes) unchanged.
    ///
    /// `/v0.1.0/api/Deliveries/AbC/Status` becomes
    /// `/api/deliveries/AbC/status`.
    pub fn normalize<'p>(&self, path: &'p str) -> Cow<'p, str> {
        let stripped = strip_version_prefix(path);
        let Some(body) = stripped.strip_prefix('/') else {
            return Cow::Borrowed(path);
        };
        let body = body.strip_suffix('/').unwrap_or(body);
        let segments: Vec<&str> = body.split('/').collect();
        let template = self.0.iter().find(|t| {
            t.len() == segments.len()
                && t.iter().zip(&segments).all(|(word, seg)| match word {
                    Some(word) => seg.eq_ignore_ascii_case(word),
                    None => !seg.is_empty(),
                })
        });
        match template {
            Some(template) => {
                let mut out = String::with_capacity(stripped.len());
                for (word, seg) in template.iter().zip(&segments) {
                    out.push('/');
                    out.push_str(word.as_deref().unwrap_or(seg));
                }
                if out == path {
                    Cow::Borrowed(path)
                } else {
                    Cow::Owned(out)
                }
            }
            None => Cow::Borrowed(stripped),
        }
    }

    fn normalize_uri(&self, uri: &Uri) -> Option<Uri> {
        let path = self.normalize(uri.path());
        if path == uri.path() {
            return None;
        }
        let path = path.into_owned();
        let path_and_query = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
        Uri::from_parts(parts).ok()
    }

    /// Rewrites the request URI with [`Templates::normalize`], keeping the
    /// query. Must run before routing, so it wraps the router (see
    /// [`wrap`]); axum keeps the URI as sent in [`OriginalUri`] for logs.
    pub fn normalize_request(&self, mut req: Request) -> Request {
        if let Some(uri) = self.normalize_uri(req.uri()) {
            *req.uri_mut() = uri;
        }
        req
    }
}

fn strip_version_prefix(path: &str) -> &str {
    match path.get(..VERSION_PREFIX.len()) {
        Some(head) if head.eq_ignore_ascii_case(VERSION_PREFIX) => {
            let rest = &path[VERSION_PREFIX.len()..];
            if rest.is_empty() {
                "/"
            } else if rest.starts_with('/') {
                rest
            } else {
                path
            }
        }
        _ => path,
    }
}

/// Method label with bounded cardinality: arbitrary methods are "other".
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Records `HTTP_REQUESTS_TOTAL` (method, route, status) and
/// `HTTP_REQUEST_DURATION_SECONDS` (method, route). The route label is the
/// matched template (`/api/deliveries/{id}`), never the raw path, so ids do
/// not explode the series count; anything unrouted is `unmatched`.
pub async fn record_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS_TOTAL, "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}

/// Largest plain-text error body reused as a problem's `detail`.
const MAX_DETAIL: usize = 1024;

/// Answers `413` to a request whose `Content-Length` exceeds
/// [`BODY_LIMIT`], after reading and discarding its body (up to
/// [`DRAIN_LIMIT`], within [`DRAIN_TIMEOUT`]).
///
/// Answering before the body is read is what a limit layer does, and the
/// HTTP server then closes the connection with the client still sending:
/// the client's next write fails (broken pipe, connection reset) and it
/// never reads the `413` waiting for it, about once in twenty tries with a
/// 1 MB body. Reading the body out first costs at most [`DRAIN_LIMIT`]
/// bytes per refused request; a larger one is answered at once, as before.
pub async fn drain_oversized(req: Request, next: Next) -> Response {
    let announced = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(length) = announced.filter(|n| *n > BODY_LIMIT as u64) else {
        return next.run(req).await;
    };
    if length <= DRAIN_LIMIT {
        let mut body = req.into_body().into_data_stream();
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while let Some(chunk) = body.next().await {
                if chunk.is_err() {
                    break;
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::debug!(
                length,
                "an oversized body was still arriving; answering 413 anyway"
            );
        }
    }
    ApiError::PayloadTooLarge.into_response()
}

/// Turns any 4xx/5xx response that is not already a problem document into
/// one: the timeout layer's empty 408, the body-limit layer's text 413 (sent
/// before the body is read, from `Content-Length`), axum's plain-text
/// extractor rejections (an undecodable path). Headers such as `Allow` are
/// kept; a short plain-text body becomes the `detail`.
pub async fn problem_for_bare_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    if content_type
        .as_deref()
        .is_some_and(|ct| ct.starts_with(PROBLEM_JSON))
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let detail = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge.detail(),
        StatusCode::REQUEST_TIMEOUT => format!(
            "the request was not answered within {} s",
            REQUEST_TIMEOUT.as_secs()
        ),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed.detail(),
        _ => {
            let text = if content_type
                .as_deref()
                .is_none_or(|ct| ct.starts_with("text/plain"))
            {
                to_bytes(body, MAX_DETAIL)
                    .await
                    .ok()
                    .and_then(|b| String::from_utf8(b.to_vec()).ok())
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
            } else {
                None
            };
            text.unwrap_or_else(|| status.canonical_reason().unwrap_or("Error").to_owned())
        }
    };
    let (problem_parts, problem_body) = problem(status, &detail, None).into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.extend(problem_parts.headers);
    Response::from_parts(parts, problem_body)
}

/// The span of one request: method, the URI as sent, the matched route and
/// the request id, so every log line of a request can be found by its id.
fn make_span(req: &Request) -> Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let uri = req
        .extensions()
        .get::<OriginalUri>()
        .map_or(req.uri(), |o| &o.0);
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!("http_request", method = %req.method(), uri = %uri, route, request_id)
}

async fn not_found(uri: OriginalUri) -> ApiError {
    ApiError::NotFound(format!("no resource at {}", uri.0.path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Adds the fallbacks and layers to a router whose state is already provided,
/// and puts path normalisation with `templates` (the router's documented
/// path templates, see [`Templates`]) in front of it.
///
/// Layers go on the inner router with [`Router::layer`] so that they run
/// after routing and can read [`MatchedPath`] (metrics and span labels);
/// from outside in:
/// 1. `SetRequestIdLayer`: mints `x-request-id` when absent, so the span, the
///    queue message and the response all carry the same id;
/// 2. `TraceLayer`: one span per request;
/// 3. `PropagateRequestIdLayer`: echoes the id on the response;
/// 4. metrics: sees the final status, including 408 and 413 from below;
/// 5. problem conversion: bare errors of the layers below become problems;
/// 6. [`drain_oversized`]: a body announced above [`BODY_LIMIT`] is read
///    and discarded (up to [`DRAIN_LIMIT`]) before its `413`, so the client
///    sees the answer;
/// 7. `RequestBodyLimitLayer` ([`BODY_LIMIT`], 413, for bodies that do not
///    announce their length);
/// 8. `TimeoutLayer` (408 after [`REQUEST_TIMEOUT`]). Innermost because it
///    needs a response body type with a `Default`, which the limit layer's
///    wrapper body lacks.
///
/// The URI rewrite cannot be a layer of that router: routing would already
/// have happened. So the layered router is wrapped with
/// `tower::ServiceExt::map_request` and installed as the fallback service of
/// an empty outer `Router`, which makes the result an ordinary [`Router`]
/// (servable directly, `into_make_service()`, `oneshot` in tests).
pub fn wrap(router: Router, templates: Templates) -> Router {
    wrap_with(router, templates, &[])
}

/// [`wrap`], plus CORS for `cors_origins` when there are any. Two more
/// layers sit between 3 and 4 of the list above: CORS (answers preflight
/// requests itself, so they are neither counted nor limited) and gzip
/// compression of responses when the client accepts it (never of event
/// streams, which must flush each event).
pub fn wrap_with(router: Router, templates: Templates, cors_origins: &[HeaderValue]) -> Router {
    let cors = (!cors_origins.is_empty()).then(|| {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(cors_origins.iter().cloned()))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                CONTENT_TYPE,
                AUTHORIZATION,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static(REQUEST_ID_HEADER),
            ])
            .expose_headers([
                LOCATION,
                RETRY_AFTER,
                HeaderName::from_static(REQUEST_ID_HEADER),
            ])
            .max_age(Duration::from_secs(600))
    });
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(TraceLayer::new_for_http().make_span_with(make_span))
        .layer(PropagateRequestIdLayer::x_request_id())
        .option_layer(cors)
        .layer(CompressionLayer::new())
        .layer(from_fn(record_metrics))
        .layer(from_fn(problem_for_bare_errors))
        .layer(from_fn(drain_oversized))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ));
    let inner = router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(layers);
    let normalized =
        tower::ServiceExt::map_request(inner, move |req| templates.normalize_request(req));
    Router::new().fallback_service(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::Path;
    use axum::http::header::ALLOW;
    use axum::routing::{get, post};
    use serde_json::Value;

    /// The application's templates, from its documented routes.
    fn templates() -> Templates {
        let doc = crate::document();
        Templates::new(doc.paths.paths.keys().map(String::as_str))
    }

    fn normalize_path(path: &str) -> String {
        templates().normalize(path).into_owned()
    }

    fn normalize_uri(uri: &Uri) -> Option<Uri> {
        templates().normalize_uri(uri)
    }

    #[test]
    fn normalises_static_segments_only() {
        for (given, expected) in [
            (
                "/v0.1.0/api/Deliveries/AbC/Status",
                "/api/deliveries/AbC/status",
            ),
            ("/api/deliveries/AbC/status", "/api/deliveries/AbC/status"),
            ("/API/DeliveryRequests", "/api/deliveryrequests"),
            ("/api/DELIVERYREQUESTS/Xy", "/api/deliveryrequests/Xy"),
            ("/api/Deliveries/Public/AbC", "/api/deliveries/public/AbC"),
            ("/api/Deliveries/AbC/Owner", "/api/deliveries/AbC/owner"),
            ("/V0.1.0/api/Packages/P1/", "/api/packages/P1"),
            ("/api/packages/", "/api/packages"),
            ("/v0.1.0/healthz", "/healthz"),
            ("/api/Deliveries/AbC/Events", "/api/deliveries/AbC/events"),
            (
                "/api/deliveries/AbC/NotifyMeRequests",
                "/api/deliveries/AbC/notifymerequests",
            ),
            (
                "/v0.1.0/api/Deliveries/AbC/Confirmations/",
                "/api/deliveries/AbC/confirmations",
            ),
            (
                "/api/DroneDeliveries/Utilization",
                "/api/dronedeliveries/utilization",
            ),
            ("/Admin/Supervisors", "/admin/supervisors"),
            (
                "/ADMIN/supervisors/Fleet/Restart",
                "/admin/supervisors/Fleet/restart",
            ),
            ("/admin/DeadLetters/", "/admin/deadletters"),
            (
                "/admin/deadletters/M-1/REPLAY",
                "/admin/deadletters/M-1/replay",
            ),
            ("/API/Drones", "/api/drones"),
            ("/Console/Fleet/", "/console/fleet"),
            ("/CONSOLE/Track/AbC", "/console/track/AbC"),
            ("/console/Assets/App.JS", "/console/assets/App.JS"),
            ("/v0.1.0", "/"),
            ("/metrics", "/metrics"),
        ] {
            assert_eq!(normalize_path(given), expected, "{given}");
        }
    }

    #[test]
    fn leaves_ids_alone() {
        // An id that happens to be a static word stays as sent.
        assert_eq!(
            normalize_path("/api/Deliveries/Status"),
            "/api/deliveries/Status"
        );
        assert_eq!(
            normalize_path("/api/packages/Packages"),
            "/api/packages/Packages"
        );
        assert_eq!(
            normalize_path("/api/deliveries/Owner/Owner"),
            "/api/deliveries/Owner/owner"
        );
        // Paths that fit no template are not rewritten (beyond the prefix).
        assert_eq!(normalize_path("/API/unknown/Thing"), "/API/unknown/Thing");
        assert_eq!(normalize_path("/v0.1.0x/api"), "/v0.1.0x/api");
        assert_eq!(
            normalize_path("/api/deliveries//status"),
            "/api/deliveries//status"
        );
    }

    #[test]
    fn rewrites_uri_keeping_query() {
        let uri: Uri = "/v0.1.0/API/Packages/x?a=B".parse().unwrap_or_default();
        assert_eq!(
            normalize_uri(&uri).map(|u| u.to_string()),
            Some("/api/packages/x?a=B".into())
        );
        let uri: Uri = "/v0.1.0/healthz".parse().unwrap_or_default();
        assert_eq!(
            normalize_uri(&uri).map(|u| u.to_string()),
            Some("/healthz".into())
        );
        let uri: Uri = "/api/packages/x".parse().unwrap_or_default();
        assert_eq!(normalize_uri(&uri), None);
    }

    fn stub() -> Router {
        wrap(
            Router::new()
                .route(
                    "/api/deliveries/{id}/status",
                    get(|Path(id): Path<String>| async move { id }),
                )
                .route(
                    "/api/packages/{id}",
                    post(|body: axum::body::Bytes| async move { body.len().to_string() }),
                )
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(REQUEST_TIMEOUT * 2).await;
                    }),
                ),
            templates(),
        )
    }

    async fn send(req: axum::http::Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let resp = match tower::ServiceExt::oneshot(stub(), req).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
        let (parts, body) = resp.into_parts();
        let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
        (parts.status, parts.headers, bytes.to_vec())
    }

    fn request(method: &str, uri: &str, body: Body) -> axum::http::Request<Body> {
        axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(body)
            .unwrap_or_default()
    }

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap_or(Value::Null)
    }

    #[tokio::test]
    async fn routes_normalised_paths_and_sets_request_id() {
        let (status, headers, body) = send(request(
            "GET",
            "/v0.1.0/API/Deliveries/AbC/Status",
            Body::empty(),
        ))
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"AbC");
        assert!(headers.get(REQUEST_ID_HEADER).is_some());
        let mut req = request("GET", "/api/deliveries/x/status", Body::empty());
        req.headers_mut().insert(
            REQUEST_ID_HEADER,
            axum::http::HeaderValue::from_static("corr-1"),
        );
        let (_, headers, _) = send(req).await;
        assert_eq!(
            headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()),
            Some("corr-1")
        );
    }

    #[tokio::test]
    async fn unknown_path_and_wrong_method_are_problems() {
        let (status, headers, body) = send(request("GET", "/nope", Body::empty())).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some(PROBLEM_JSON)
        );
        assert_eq!(json(&body)["status"], 404);
        let (status, headers, body) =
            send(request("DELETE", "/api/Deliveries/x/status", Body::empty())).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some(PROBLEM_JSON)
        );
        assert!(headers.get(ALLOW).is_some());
        assert_eq!(json(&body)["status"], 405);
    }

    #[tokio::test]
    async fn oversized_body_is_a_problem() {
        let big = vec![b'a'; BODY_LIMIT + 1];
        let mut req = request("POST", "/api/packages/x", Body::from(big.clone()));
        req.headers_mut().insert(CONTENT_LENGTH, big.len().into());
        let (status, headers, body) = send(req).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some(PROBLEM_JSON)
        );
        assert_eq!(json(&body)["status"], 413);
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_is_a_problem() {
        let (status, headers, body) = send(request("GET", "/slow", Body::empty())).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some(PROBLEM_JSON)
        );
        assert_eq!(json(&body)["status"], 408);
    }

    /// Remembers the keys (name and labels) of the counters registered.
    #[derive(Default)]
    struct KeyRecorder(std::sync::Mutex<Vec<String>>);

    impl metrics::Recorder for KeyRecorder {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            if let Ok(mut keys) = self.0.lock() {
                keys.push(format!("{}{{{}}}", key.name(), labels.join(",")));
            }
            metrics::Counter::noop()
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    #[test]
    fn metrics_are_labelled_by_route_template() {
        let recorder = KeyRecorder::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let Ok(rt) = rt else { return };
        metrics::with_local_recorder(&recorder, || {
            rt.block_on(async {
                send(request(
                    "GET",
                    "/v0.1.0/api/Deliveries/AbC/status",
                    Body::empty(),
                ))
                .await;
                send(request("GET", "/nope/42", Body::empty())).await;
            })
        });
        let keys = recorder.0.lock().map(|k| k.clone()).unwrap_or_default();
        assert_eq!(
            keys,
            [
                format!("{HTTP_REQUESTS_TOTAL}{{method=GET,route=/api/deliveries/{{id}}/status,status=200}}"),
                format!("{HTTP_REQUESTS_TOTAL}{{method=GET,route=unmatched,status=404}}"),
            ]
        );
    }
}
