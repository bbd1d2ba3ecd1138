//! [`AppState`]: what every handler gets, and small request helpers shared by
//! the resource modules.

use std::fmt;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use dronedelivery_actors::Engine;

use crate::auth::Auth;
use crate::ratelimit::{RateLimitSettings, RateLimiter};

/// The shared state of all routes: one `Arc`, because axum clones the
/// state for every extractor and route layer of every request (a clone of
/// the fields themselves was a dozen reference counts to raise and drop per
/// request). Its fields are read through `Deref` ([`Settings`]).
#[derive(Clone)]
pub struct AppState(Arc<Settings>);

/// What [`AppState`] holds.
#[derive(Clone)]
pub struct Settings {
    /// The engine handle: queue submission and store reads. The gateway never
    /// talks to actors directly, so an HTTP request cannot block on a busy actor.
    pub engine: Engine,
    /// Renders the Prometheus exposition for `GET /metrics`. A closure rather
    /// than a recorder handle so the engine owns the exporter and can refresh
    /// gauges (queue depth, fleet counts) just before rendering.
    pub render_metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// Bearer token of the operator API under `/admin` (see [`crate::admin`]).
    /// `None` (or an empty token) disables that API: every `/admin` path
    /// answers 404 as if it did not exist.
    pub admin_token: Option<Arc<str>>,
    /// Per-client limit on ingestion (see [`crate::ratelimit`]); `None`
    /// disables it.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// Origins allowed to call the API from a browser (CORS). Empty, the
    /// default, sends no CORS headers at all: browsers then allow only
    /// same-origin calls, which is right for an API used by servers.
    pub cors_origins: Arc<[HeaderValue]>,
    /// Who may do what (see [`crate::auth`]); off by default.
    pub auth: Auth,
}

impl std::ops::Deref for AppState {
    type Target = Settings;

    fn deref(&self) -> &Settings {
        &self.0
    }
}

impl AppState {
    /// Builds the state from an engine and a metrics renderer, with the admin
    /// API disabled (see [`AppState::with_admin_token`]).
    pub fn new(
        engine: Engine,
        render_metrics: impl Fn() -> String + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(Settings {
            engine,
            render_metrics: Arc::new(render_metrics),
            admin_token: None,
            rate_limiter: None,
            cors_origins: Arc::from(Vec::new()),
            auth: Auth::Off,
        }))
    }

    /// The settings to change, while the state is being built (copied
    /// first if it is already shared).
    fn settings(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.0)
    }

    /// Limits ingestion per client (`None` leaves it unlimited).
    #[must_use]
    pub fn with_rate_limit(mut self, settings: Option<RateLimitSettings>) -> Self {
        self.settings().rate_limiter = settings.map(|s| Arc::new(RateLimiter::new(s)));
        self
    }

    /// Allows these browser origins (CORS); empty disables CORS.
    #[must_use]
    pub fn with_cors_origins(mut self, origins: Vec<HeaderValue>) -> Self {
        self.settings().cors_origins = Arc::from(origins);
        self
    }

    /// Authenticates API requests with `auth` (see [`crate::auth`]).
    #[must_use]
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.settings().auth = auth;
        self
    }

    /// Enables the admin API with this bearer token (`None` or an empty token
    /// keeps it disabled).
    #[must_use]
    pub fn with_admin_token(mut self, token: Option<&str>) -> Self {
        self.settings().admin_token = token.filter(|t| !t.is_empty()).map(Arc::from);
        self
    }
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token.
        f.debug_struct("AppState")
            .field("admin_api", &self.admin_token.is_some())
            .field("rate_limited", &self.rate_limiter.is_some())
            .field("cors_origins", &self.cors_origins)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// Name of the header carrying the correlation id (set by the request-id
/// layer when the client sent none, and echoed on the response).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request's correlation id, put on queue messages so a delivery can be
/// followed from the HTTP request through the workflow in the logs.
pub fn correlation_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Percent-encodes a path segment for a `Location` header. Ids come from the
/// (decoded) request path and may hold characters a header or a path cannot
/// carry as is.
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_unsafe_characters() {
        assert_eq!(encode_segment("abc-DEF_1.2~"), "abc-DEF_1.2~");
        assert_eq!(encode_segment("a b/\nc"), "a%20b%2F%0Ac");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }
}
