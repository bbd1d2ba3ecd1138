//! Per-client rate limiting of every write route: ingestion (`POST`,
//! `PATCH`, `DELETE` under `/api/deliveryrequests`), packages, confirmations
//! and notify-me requests.
//!
//! Writes are what a client can drive that costs the system: each accepted
//! request costs a broker message, a store write or a drone. A client over
//! its quota gets `429 Too Many Requests` with `Retry-After` (whole seconds
//! until its next request would pass) and a problem document, before the
//! body is read or anything is queued. Reads are not limited here: they cost
//! one store read and are better shed by the load balancer.
//!
//! The limiter is GCRA (`governor`), keyed by **client**: the owner of the
//! caller's bearer token when authentication is on and the token names one
//! (so one owner has one quota, from however many addresses), otherwise the
//! client address. Behind an ingress the TCP peer is the ingress
//! controller, so `trust_forwarded_for` keys by the right-most
//! `X-Forwarded-For` entry instead: the address the nearest proxy saw, which
//! a client cannot forge (entries to its left can be). Only enable it when
//! every request arrives through such a proxy.
//!
//! State is one small cell per client seen recently; [`RateLimiter::forget_idle`]
//! drops clients whose bucket is full again and is called periodically by the
//! engine, so memory follows the number of active clients.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::auth::Caller;
use crate::error::ApiError;

/// Prefix of the limited routes, after path normalisation: writes under it
/// are limited.
pub const LIMITED_PREFIX: &str = "/api/";

/// Who a quota belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// The owner a bearer token speaks for.
    Owner(Arc<str>),
    /// A client address (no token, or a token without an owner).
    Address(IpAddr),
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Owner(o) => write!(f, "owner {o}"),
            Self::Address(a) => write!(f, "{a}"),
        }
    }
}

/// Settings of the ingestion rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Sustained requests per second allowed per client.
    pub per_second: NonZeroU32,
    /// Requests a client may send at once after being idle.
    pub burst: NonZeroU32,
    /// Key clients by the right-most `X-Forwarded-For` address instead of the
    /// TCP peer (behind a trusted proxy only).
    pub trust_forwarded_for: bool,
}

/// A keyed GCRA limiter over clients.
#[derive(Debug)]
pub struct RateLimiter {
    limiter: DefaultKeyedRateLimiter<ClientKey>,
    clock: DefaultClock,
    trust_forwarded_for: bool,
}

impl RateLimiter {
    /// A limiter enforcing `settings`.
    pub fn new(settings: RateLimitSettings) -> Self {
        let quota = Quota::per_second(settings.per_second).allow_burst(settings.burst);
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            trust_forwarded_for: settings.trust_forwarded_for,
        }
    }

    /// The key of a request: its client address. Requests with no known peer
    /// (served without connection info) share one key.
    pub fn client(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> IpAddr {
        if self.trust_forwarded_for {
            let forwarded = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .and_then(|a| a.trim().parse::<IpAddr>().ok());
            // Only the right-most entry is trusted; if it is unreadable,
            // fall back to the peer rather than to an entry a client wrote.
            if let Some(addr) = forwarded {
                return addr;
            }
        }
        peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip())
    }

    /// The key of a request: the owner of its caller's token, when there is
    /// one, else its client address ([`Self::client`]).
    pub fn key(
        &self,
        caller: Option<&Caller>,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> ClientKey {
        match caller.and_then(Caller::owner) {
            Some(owner) => ClientKey::Owner(Arc::from(owner)),
            None => ClientKey::Address(self.client(headers, peer)),
        }
    }

    /// Takes one request from `client`'s quota; `Err` holds how long until
    /// its next request would be allowed.
    pub fn check(&self, client: &ClientKey) -> Result<(), Duration> {
        self.limiter
            .check_key(client)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets clients whose quota has fully recovered (they would start
    /// afresh anyway), bounding memory by the number of active clients.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Clients currently tracked.
    pub fn tracked_clients(&self) -> usize {
        self.limiter.len()
    }
}

/// Whether a request is limited: a write under [`LIMITED_PREFIX`].
pub fn is_limited(method: &Method, route: &str) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) && route.starts_with(LIMITED_PREFIX)
}

/// Every limited operation of the OpenAPI document answers `429` (the
/// shared `TooManyRequests` response) when the limit is on.
pub fn document(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{Ref, RefOr};
    for (path, item) in &mut doc.paths.paths {
        let ops = [
            (Method::POST, item.post.as_mut()),
            (Method::PUT, item.put.as_mut()),
            (Method::PATCH, item.patch.as_mut()),
            (Method::DELETE, item.delete.as_mut()),
        ];
        for (method, op) in ops {
            if let Some(op) = op.filter(|_| is_limited(&method, path)) {
                op.responses
                    .responses
                    .entry("429".to_owned())
                    .or_insert_with(|| RefOr::Ref(Ref::from_response_name("TooManyRequests")));
            }
        }
    }
}

/// Middleware (installed as a route layer, so the matched route is known,
/// with [`AppState::rate_limiter`](crate::AppState::rate_limiter) as its
/// state): answers 429 when the client is over its quota.
pub async fn enforce(
    State(limiter): State<Option<Arc<RateLimiter>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(limiter) = limiter.as_deref() else {
        return next.run(req).await;
    };
    let limited = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|route| is_limited(req.method(), route.as_str()));
    if !limited {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let client = limiter.key(req.extensions().get::<Caller>(), req.headers(), peer);
    match limiter.check(&client) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            // Whole seconds, rounded up, at least 1: `Retry-After: 0` would
            // invite an immediate retry that fails again.
            let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            tracing::debug!(%client, retry_after_secs, "rate limited");
            ApiError::TooManyRequests {
                retry_after_secs: retry_after_secs.max(1),
            }
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn limiter(per_second: u32, burst: u32, trust: bool) -> RateLimiter {
        RateLimiter::new(RateLimitSettings {
            per_second: NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN),
            trust_forwarded_for: trust,
        })
    }

    #[test]
    fn burst_then_refusal_with_a_wait() {
        let l = limiter(1, 3, false);
        let a: IpAddr = "10.0.0.1"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let (a, b) = (ClientKey::Address(a), ClientKey::Address(b_addr()));
        for _ in 0..3 {
            assert!(l.check(&a).is_ok());
        }
        let wait = l.check(&a).err();
        assert!(wait.is_some_and(|w| w > Duration::ZERO && w <= Duration::from_secs(1)));
        // Another client has its own quota, and so has an owner.
        assert!(l.check(&b).is_ok());
        assert!(l.check(&ClientKey::Owner(Arc::from("a"))).is_ok());
        assert_eq!(l.tracked_clients(), 3);
    }

    fn b_addr() -> IpAddr {
        "10.0.0.2"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    #[test]
    fn a_token_owner_is_its_own_key_wherever_it_calls_from() {
        let l = limiter(1, 1, false);
        let caller = Caller::Token(Arc::new(crate::auth::Identity {
            owner: Some("owner-a".into()),
            roles: Default::default(),
        }));
        let headers = HeaderMap::new();
        let from = |port| Some(SocketAddr::from(([10, 0, 0, port], 1)));
        assert_eq!(
            l.key(Some(&caller), &headers, from(1)),
            l.key(Some(&caller), &headers, from(2))
        );
        assert_eq!(
            l.key(Some(&Caller::Open), &headers, from(1)),
            ClientKey::Address(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
        );
    }

    #[test]
    fn keys_by_rightmost_forwarded_address_only_when_trusted() {
        let peer: SocketAddr = ([192, 168, 1, 1], 5000).into();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 203.0.113.7"),
        );
        assert_eq!(
            limiter(1, 1, true).client(&headers, Some(peer)),
            "203.0.113.7".parse::<IpAddr>().unwrap_or(peer.ip())
        );
        assert_eq!(limiter(1, 1, false).client(&headers, Some(peer)), peer.ip());
        headers.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(limiter(1, 1, true).client(&headers, Some(peer)), peer.ip());
    }

    #[test]
    fn every_api_write_is_limited_and_no_read() {
        assert!(is_limited(&Method::POST, "/api/deliveryrequests"));
        assert!(is_limited(&Method::PATCH, "/api/deliveryrequests/{id}"));
        assert!(is_limited(&Method::DELETE, "/api/deliveryrequests/{id}"));
        assert!(is_limited(&Method::PUT, "/api/packages/{id}"));
        assert!(is_limited(
            &Method::POST,
            "/api/deliveries/{id}/confirmations"
        ));
        assert!(is_limited(
            &Method::POST,
            "/api/deliveries/{id}/notifymerequests"
        ));
        assert!(!is_limited(&Method::GET, "/api/deliveries/{id}"));
        assert!(!is_limited(
            &Method::POST,
            "/admin/supervisors/{name}/restart"
        ));
    }
}
