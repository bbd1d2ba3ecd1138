//! `/console`: a small web console served by the gateway itself, so that
//! anyone running `dronedelivery serve` can open a browser and watch the
//! system work.
//!
//! ## Pages
//! - `/console`: send the original system's example delivery request in one
//!   click, or type a delivery id to track.
//! - `/console/track/{id}`: one delivery, live: its stage timeline, the
//!   drone moving on a plan of the pickup and dropoff (SVG, no map tiles),
//!   the pickup and delivery ETAs counting down. It reads the delivery and
//!   its status through `/api/deliveries/{id}[/status]` and follows the
//!   server-sent event stream `/api/deliveries/{id}/events`
//!   ([`crate::tracking`]). The HTML is the same for every id (a delivery
//!   appears only once its queued request is processed, so the page waits a
//!   little before it says an id is unknown, and then says so plainly).
//! - `/console/fleet`: every drone on a plan of the area with its status,
//!   simulated battery and current delivery (`GET /api/drones`,
//!   [`crate::drones`]); deliveries per stage, throughput and dead letters.
//! - `/console/ops`: the operator page: the supervision tree with restarts
//!   and last failure, a restart button per supervisor behind a confirm
//!   step, and dead letters with replay, through the `/admin` API
//!   ([`crate::admin`]). The admin token is typed in and kept in the tab's
//!   `sessionStorage` only; it is sent as `Authorization: Bearer`.
//!
//! ## With authentication on
//! Every page asks `GET /api/me` ([`crate::identity`]) who it is. With
//! `--auth-mode jwt` the header then offers a sign-in dialog for an access
//! token, checked with the engine before it is kept (in the tab's
//! `sessionStorage` only), and shows the owner and roles the engine reads
//! in it. Every API call carries it, the tracking stream included: the
//! page reads the stream with `fetch` rather than `EventSource`, which
//! cannot send headers. The pages show what the engine lets the token see:
//! another owner's delivery is not found, drones carry no delivery ids
//! without the `Dispatcher` or `Operator` role, the home page sends for the
//! token's owner, and the operations page uses an `Operator` token when no
//! admin token is typed.
//!
//! ## Why figures come from `/metrics`
//! The fleet page's per-stage counts, throughput and dead letters are read
//! by the browser from the Prometheus text of `GET /metrics` (a few lines
//! of parsing in `common.js`) rather than from a JSON summary route. The
//! numbers are then exactly the ones operators scrape and alert on, nothing
//! is added to the server for them, and nothing the API does per request
//! changes. Like every metric they are the answering process's own: on a
//! `gateway`-role process the workflow's counters are absent and the page
//! says so.
//!
//! ## How it is served
//! Plain HTML, CSS and ES modules under `gateway/console/`, no framework
//! and no build step, embedded in the binary with `include_bytes!`: the
//! console works offline and cannot drift from the binary serving it. Every
//! response carries:
//! - a strict [`CONTENT_SECURITY_POLICY`]: scripts, styles and connections
//!   from this origin only, no inline script or style, no framing;
//! - a weak `ETag` (a SHA-256 prefix of the file, computed once) and
//!   `Cache-Control: no-cache`, so browsers revalidate and get a `304`
//!   until the binary changes; the middleware's gzip applies as to any
//!   response;
//! - `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.
//!
//! Only processes that serve the API (`--role all` or `gateway`) serve the
//! console: it is merged into [`crate::routes`], not into
//! [`crate::worker_routes`]. Its routes are documented in the OpenAPI
//! document (tag `console`) like the probes, so that every route the router
//! answers is described there. An unknown asset is a 404 problem.

use std::sync::LazyLock;

use axum::body::Body;
use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY as CSP, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, Problem};
use crate::state::AppState;

/// The `Content-Security-Policy` of every console response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

/// Path prefix of the console's static assets.
pub const ASSETS_PATH: &str = "/console/assets";

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// File name, as in the URL.
    pub name: &'static str,
    /// `Content-Type` it is served with.
    pub content_type: &'static str,
    /// The bytes.
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! embed {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../console/", $name)),
        }
    };
}

/// The pages, each served at its own route.
pub const PAGES: [Asset; 4] = [
    embed!("index.html", HTML),
    embed!("track.html", HTML),
    embed!("fleet.html", HTML),
    embed!("ops.html", HTML),
];

/// What `/console/assets/{file}` serves.
pub const ASSETS: [Asset; 10] = [
    embed!("console.css", CSS),
    embed!("common.js", JS),
    embed!("session.js", JS),
    embed!("events.js", JS),
    embed!("plan.js", JS),
    embed!("landing.js", JS),
    embed!("track.js", JS),
    embed!("fleet.js", JS),
    embed!("ops.js", JS),
    embed!("favicon.svg", SVG),
];

/// An embedded file with its validator, ready to serve.
struct Prepared {
    asset: &'static Asset,
    etag: HeaderValue,
}

impl Prepared {
    fn new(asset: &'static Asset) -> Self {
        let digest = Sha256::digest(asset.body);
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        // Weak: the compression layer may send another encoding of the same
        // content under it.
        let etag = HeaderValue::from_str(&format!("W/\"{hex}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("W/\"0\""));
        Self { asset, etag }
    }
}

static PREPARED_PAGES: LazyLock<Vec<Prepared>> =
    LazyLock::new(|| PAGES.iter().map(Prepared::new).collect());

static PREPARED_ASSETS: LazyLock<Vec<Prepared>> =
    LazyLock::new(|| ASSETS.iter().map(Prepared::new).collect());

/// Routes of the console, with their documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(landing))
        .routes(routes!(track))
        .routes(routes!(fleet))
        .routes(routes!(ops))
        .routes(routes!(asset))
}

/// Whether `If-None-Match` names `etag` (weak comparison, RFC 9110 13.1.2).
fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.to_str().unwrap_or_default();
    let ours = ours.strip_prefix("W/").unwrap_or(ours);
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
}

/// The security and caching headers of every console response.
fn common_headers(headers: &mut HeaderMap, etag: &HeaderValue) {
    headers.insert(ETAG, etag.clone());
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(CSP, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn serve(file: &Prepared, request: &HeaderMap) -> Response {
    let mut response = if not_modified(request, &file.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = Body::from(file.asset.body).into_response();
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(file.asset.content_type),
        );
        response
    };
    common_headers(response.headers_mut(), &file.etag);
    response
}

fn page(name: &str, request: &HeaderMap) -> Response {
    match PREPARED_PAGES.iter().find(|p| p.asset.name == name) {
        Some(file) => serve(file, request),
        None => ApiError::Internal(format!("console page {name} is not embedded")).into_response(),
    }
}

/// `GET /console`.
#[utoipa::path(
    get,
    path = "/console",
    operation_id = "consoleHome",
    tag = "console",
    summary = "Web console: home",
    description = "An HTML page: send the original system's example delivery request in one \
click, or type a delivery id to track. Links to the fleet and operations pages.",
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 304, description = "Not modified since the `ETag` sent in `If-None-Match`")
    )
)]
async fn landing(headers: HeaderMap) -> Response {
    page("index.html", &headers)
}

/// `GET /console/track/{id}`.
#[utoipa::path(
    get,
    path = "/console/track/{id}",
    operation_id = "consoleTrack",
    tag = "console",
    summary = "Web console: track a delivery",
    description = "An HTML page following one delivery live (stage timeline, drone on a plan, \
ETAs) through the delivery routes and the tracking stream. The page is the same for every id; \
it shows an unknown id as such.",
    params(("id" = String, Path, description = "Delivery id")),
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 304, description = "Not modified since the `ETag` sent in `If-None-Match`")
    )
)]
async fn track(Path(_id): Path<String>, headers: HeaderMap) -> Response {
    page("track.html", &headers)
}

/// `GET /console/fleet`.
#[utoipa::path(
    get,
    path = "/console/fleet",
    operation_id = "consoleFleet",
    tag = "console",
    summary = "Web console: the fleet",
    description = "An HTML page: every drone on a plan with its status, simulated battery and \
delivery; deliveries per stage, throughput and dead letters from this process's metrics.",
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 304, description = "Not modified since the `ETag` sent in `If-None-Match`")
    )
)]
async fn fleet(headers: HeaderMap) -> Response {
    page("fleet.html", &headers)
}

/// `GET /console/ops`.
#[utoipa::path(
    get,
    path = "/console/ops",
    operation_id = "consoleOps",
    tag = "console",
    summary = "Web console: operations",
    description = "An HTML page over the admin API: the supervision tree with restarts, a \
restart button per supervisor (with a confirm step), dead letters with replay. The operator \
types the admin token in; the page keeps it for the browser tab only.",
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 304, description = "Not modified since the `ETag` sent in `If-None-Match`")
    )
)]
async fn ops(headers: HeaderMap) -> Response {
    page("ops.html", &headers)
}

/// `GET /console/assets/{file}`.
#[utoipa::path(
    get,
    path = "/console/assets/{file}",
    operation_id = "consoleAsset",
    tag = "console",
    summary = "Web console: a static asset",
    description = "A stylesheet, ES module or image of the console, embedded in the binary.",
    params(("file" = String, Path, description = "File name (`console.css`, `track.js`, …)")),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/css"),
            (String = "text/javascript"),
            (String = "image/svg+xml")
        )),
        (status = 304, description = "Not modified since the `ETag` sent in `If-None-Match`"),
        (status = 404, description = "No such asset",
            body = Problem, content_type = "application/problem+json")
    )
)]
async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    PREPARED_ASSETS
        .iter()
        .find(|p| p.asset.name == file)
        .map(|p| serve(p, &headers))
        .ok_or_else(|| ApiError::NotFound(format!("no console asset named {file}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_and_asset_is_embedded_and_not_empty() {
        for file in PAGES.iter().chain(ASSETS.iter()) {
            assert!(!file.body.is_empty(), "{}", file.name);
        }
        assert_eq!(PREPARED_PAGES.len(), PAGES.len());
    }

    /// The CSP forbids inline script and style: no page may carry any.
    #[test]
    fn pages_have_no_inline_script_or_style() {
        for page in &PAGES {
            let text = String::from_utf8_lossy(page.body);
            for (i, tag) in text.match_indices("<script").map(|(i, _)| (i, &text[i..])) {
                let end = tag.find('>').unwrap_or(tag.len());
                assert!(
                    tag[..end].contains("src="),
                    "{}: inline script at {i}",
                    page.name
                );
            }
            assert!(!text.contains("<style"), "{}: inline style", page.name);
            assert!(!text.contains(" style="), "{}: style attribute", page.name);
            let handler = text.match_indices(" on").any(|(i, _)| {
                let name: String = text[i + 1..]
                    .chars()
                    .take_while(char::is_ascii_alphabetic)
                    .collect();
                text[i + 1 + name.len()..].starts_with('=')
            });
            assert!(!handler, "{}: an inline event handler", page.name);
        }
    }

    /// Every asset a page or stylesheet references is embedded.
    #[test]
    fn references_resolve() {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        for file in PAGES.iter().chain(ASSETS.iter()) {
            let text = String::from_utf8_lossy(file.body);
            for (i, _) in text.match_indices(ASSETS_PATH) {
                let rest = &text[i + ASSETS_PATH.len() + 1..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
                    .unwrap_or(rest.len());
                let name = &rest[..end];
                assert!(
                    names.contains(&name),
                    "{}: {name} is not embedded",
                    file.name
                );
            }
            // Modules import each other relatively (`from "./plan.js"`).
            for (i, _) in text.match_indices("from \"./") {
                let rest = &text[i + "from \"./".len()..];
                let name = rest.split('"').next().unwrap_or_default();
                assert!(names.contains(&name), "{}: imports {name}", file.name);
            }
        }
    }

    #[test]
    fn if_none_match_is_compared_weakly() {
        let etag = HeaderValue::from_static("W/\"abc\"");
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(IF_NONE_MATCH, HeaderValue::from_static(v));
            h
        };
        assert!(not_modified(&with("W/\"abc\""), &etag));
        assert!(not_modified(&with("\"abc\""), &etag));
        assert!(not_modified(&with("\"x\", W/\"abc\""), &etag));
        assert!(not_modified(&with("*"), &etag));
        assert!(!not_modified(&with("\"abd\""), &etag));
        assert!(!not_modified(&HeaderMap::new(), &etag));
    }
}
