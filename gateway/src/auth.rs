//! Who may do what: bearer tokens, per-owner scoping and roles.
//!
//! # Modes
//!
//! - **Off** ([`Auth::Off`], `--auth-mode none`, the default): every caller
//!   is [`Caller::Open`] and may do everything the original allowed, so the
//!   original's clients and the embedded default keep working.
//! - **Bearer tokens** ([`Auth::Jwt`]): every `/api` request needs an
//!   `Authorization: Bearer <JWT>` header. The token is checked by an
//!   [`Authenticator`] (the engine's OpenID Connect adapter: signature
//!   against the issuer's published keys, algorithm pinned to an asymmetric
//!   one, issuer, audience, expiry and not-before with a small leeway). A
//!   missing token is `401` with `WWW-Authenticate: Bearer realm=…`; a bad
//!   one `401` with `error="invalid_token"` and a description (RFC 6750).
//!   When the keys cannot be fetched the answer is `503`: the caller did
//!   nothing wrong.
//!
//! # What a token allows
//!
//! The [`Identity`] of a token is its **owner** (a configurable claim,
//! `sub` by default, `oid` for Entra ID) and its **roles** (a configurable
//! claim, `roles` by default):
//!
//! | caller | may |
//! |---|---|
//! | any valid token | create deliveries for its own `ownerId` (else `403`); read, reschedule, cancel, track and confirm its own deliveries (another owner's is `404`, so ids do not leak); ask for its own utilisation and summaries (another owner's is `403`); read packages; list drones without the deliveries they carry |
//! | [`Role::Dispatcher`] | also read and track every delivery, and see which delivery each drone carries |
//! | [`Role::Operator`] | what a dispatcher may, and the operator API under `/admin` (beside the static admin token, kept for break-glass) |
//! | [`Role::PackageWriter`] | also create and change packages |
//!
//! Checks that need the stored delivery (its owner) are made by the
//! handlers through [`Caller::may_read`]; checks on the request alone
//! through the other methods of [`Caller`].

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// A role a token may carry (the values of the roles claim; others are
/// ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads and tracks every delivery and sees the fleet's assignments.
    Dispatcher,
    /// A dispatcher who may also use the operator API under `/admin`.
    Operator,
    /// May create and change packages.
    PackageWriter,
}

impl Role {
    /// The role's name, as the roles claim spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dispatcher => "Dispatcher",
            Self::Operator => "Operator",
            Self::PackageWriter => "PackageWriter",
        }
    }

    /// The role named `name` as the roles claim spells it (exact match).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "Dispatcher" => Some(Self::Dispatcher),
            "Operator" => Some(Self::Operator),
            "PackageWriter" => Some(Self::PackageWriter),
            _ => None,
        }
    }
}

/// What a valid token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The owner id the token speaks for (the owner claim), if it has one.
    /// A token without it may still act through its roles, never as an
    /// owner.
    pub owner: Option<String>,
    /// Its known roles.
    pub roles: BTreeSet<Role>,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token is not valid (malformed, bad signature, wrong algorithm,
    /// issuer or audience, expired, not yet valid, unknown key): `401`
    /// with `error="invalid_token"`. The text is safe to send.
    #[error("{0}")]
    InvalidToken(String),
    /// The signing keys could not be fetched: `503`, try again.
    #[error("{0}")]
    KeysUnavailable(String),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidToken(why) => ApiError::InvalidToken(why),
            AuthError::KeysUnavailable(why) => {
                tracing::warn!(error = %why, "token signing keys unavailable");
                ApiError::Unavailable("the token issuer's keys are unavailable; retry later".into())
            }
        }
    }
}

/// Checks bearer tokens: the engine provides it (OpenID Connect).
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The identity of a valid `token`.
    async fn authenticate(&self, token: &str) -> Result<Identity, AuthError>;
}

/// Whether and how requests are authenticated.
#[derive(Clone, Default)]
pub enum Auth {
    /// No authentication: every caller is [`Caller::Open`].
    #[default]
    Off,
    /// Bearer tokens checked by this authenticator.
    Jwt(Arc<dyn Authenticator>),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "Off",
            Self::Jwt(_) => "Jwt",
        })
    }
}

/// The caller of a request, as the handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Authentication is off: anything the API offers is allowed.
    Open,
    /// The bearer of a valid token.
    Token(Arc<Identity>),
}

impl Caller {
    fn identity(&self) -> Option<&Identity> {
        match self {
            Self::Open => None,
            Self::Token(identity) => Some(identity.as_ref()),
        }
    }

    /// The owner the caller's token speaks for, if any.
    pub fn owner(&self) -> Option<&str> {
        self.identity().and_then(|i| i.owner.as_deref())
    }

    /// Whether the caller has `role` (everyone has, with authentication off).
    pub fn has(&self, role: Role) -> bool {
        self.identity().is_none_or(|i| i.roles.contains(&role))
    }

    /// Whether the caller reads every delivery (dispatchers and operators).
    pub fn reads_everything(&self) -> bool {
        self.has(Role::Dispatcher) || self.has(Role::Operator)
    }

    /// Whether the caller speaks for `owner`.
    pub fn is_owner(&self, owner: &str) -> bool {
        self.identity()
            .is_none_or(|i| i.owner.as_deref() == Some(owner))
    }

    /// Whether the caller may read (and track, reschedule, cancel, confirm)
    /// a delivery of `owner`.
    pub fn may_read(&self, owner: &str) -> bool {
        self.reads_everything() || self.is_owner(owner)
    }

    /// `Ok` when the caller may act as `owner` (create a delivery for it,
    /// read its utilisation); `403` otherwise.
    pub fn must_be_owner(&self, owner: &str) -> Result<(), ApiError> {
        if self.is_owner(owner) {
            Ok(())
        } else {
            Err(not_owner(owner))
        }
    }

    /// `Ok` when the caller may read what belongs to `owner` or reads
    /// everything; `403` otherwise.
    pub fn must_read_owner(&self, owner: &str) -> Result<(), ApiError> {
        if self.may_read(owner) {
            Ok(())
        } else {
            Err(not_owner(owner))
        }
    }

    /// `Ok` when the caller has `role`; `403` otherwise.
    pub fn must_have(&self, role: Role) -> Result<(), ApiError> {
        if self.has(role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("this needs the {role:?} role")))
        }
    }
}

fn not_owner(owner: &str) -> ApiError {
    ApiError::Forbidden(format!("this token does not speak for owner '{owner}'"))
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Put there by [`authenticate`], which runs on every route; its
        // absence is a wiring bug, and refusing is the safe answer.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("request not authenticated".into()))
    }
}

/// The bearer token of `headers`: `Ok(None)` without an `Authorization`
/// header, `401` for one that is not exactly one well-formed bearer token.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::Unauthorized(
            "send one Authorization header, not several".into(),
        ));
    }
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim_start())
        .filter(|token| !token.is_empty() && !token.contains(char::is_whitespace))
        .map(Some)
        .ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header is not a bearer token".into())
        })
}

/// Whether a route is part of the API that tokens guard. Probes, metrics,
/// the OpenAPI document and the console's static pages are not (the console
/// calls the API with the token it is given); `/admin` has its own guard.
pub fn is_guarded(route: &str) -> bool {
    route.starts_with("/api/")
}

/// Middleware on every route (a route layer, so the matched route is
/// known): puts the request's [`Caller`] in its extensions, or answers
/// `401`/`503` on a guarded route without a valid token.
pub async fn authenticate(State(auth): State<Auth>, mut req: Request, next: Next) -> Response {
    let caller = match &auth {
        Auth::Off => Caller::Open,
        Auth::Jwt(authenticator) => {
            let guarded = req
                .extensions()
                .get::<MatchedPath>()
                .is_some_and(|route| is_guarded(route.as_str()));
            if !guarded {
                return next.run(req).await;
            }
            match identify(authenticator.as_ref(), req.headers()).await {
                Ok(identity) => Caller::Token(Arc::new(identity)),
                Err(e) => return e.into_response(),
            }
        }
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The identity of the bearer token in `headers`: `401` without one.
pub async fn identify(
    authenticator: &dyn Authenticator,
    headers: &HeaderMap,
) -> Result<Identity, ApiError> {
    let Some(token) = bearer_token(headers)? else {
        return Err(ApiError::Unauthorized(
            "this resource needs an Authorization: Bearer <token> header".into(),
        ));
    };
    Ok(authenticator.authenticate(token).await?)
}

/// Name of the OpenAPI security scheme of bearer JWTs.
pub const JWT_AUTH: &str = "jwtAuth";

/// The role model in the OpenAPI document: the `jwtAuth` scheme, and on
/// every guarded operation its security (anonymous while authentication is
/// off, or a JWT listing the role the operation needs) and its `401` and
/// `403` answers; `/admin` operations also take a JWT with the `Operator`
/// role beside the static token. Done on the assembled document, so that
/// no route can be registered without it.
pub fn document(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
    use utoipa::openapi::{Ref, RefOr, SecurityRequirement};

    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        JWT_AUTH,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "With `--auth-mode jwt`: an access token of the configured OpenID Connect \
issuer and audience (RS256 or ES256). Its owner claim (`sub` by default) is the owner the \
caller speaks for: it may create deliveries for that `ownerId` only and read, track, \
reschedule, cancel and confirm only that owner's deliveries (another owner's is a 404). \
Roles (the `roles` claim) widen that: `Dispatcher` reads every delivery and sees which \
delivery each drone carries, `Operator` also uses `/admin`, `PackageWriter` writes \
packages. The role an operation needs is listed in its security requirement. With \
authentication off (the default) the operations need nothing.",
                ))
                .build(),
        ),
    );
    for (path, item) in &mut doc.paths.paths {
        let admin = path.starts_with("/admin");
        if !admin && !is_guarded(path) {
            continue;
        }
        let writes = [
            item.put.as_mut(),
            item.post.as_mut(),
            item.patch.as_mut(),
            item.delete.as_mut(),
        ];
        let reads = [item.get.as_mut()];
        for (write, op) in writes
            .into_iter()
            .map(|op| (true, op))
            .chain(reads.into_iter().map(|op| (false, op)))
        {
            let Some(op) = op else { continue };
            let role = if admin {
                Some("Operator")
            } else if write && path.starts_with("/api/packages") {
                Some("PackageWriter")
            } else {
                None
            };
            let mut security = op.security.take().unwrap_or_default();
            if !admin {
                // Anonymous callers are served while authentication is off.
                security.insert(0, SecurityRequirement::default());
            }
            security.push(SecurityRequirement::new(JWT_AUTH, role));
            op.security = Some(security);
            for (status, name) in [("401", "Unauthorized"), ("403", "Forbidden")] {
                op.responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn token(owner: Option<&str>, roles: &[Role]) -> Caller {
        Caller::Token(Arc::new(Identity {
            owner: owner.map(str::to_owned),
            roles: roles.iter().copied().collect(),
        }))
    }

    #[test]
    fn owners_read_their_own_and_dispatchers_everything() {
        let a = token(Some("a"), &[]);
        assert!(a.may_read("a"));
        assert!(!a.may_read("b"));
        assert!(a.must_be_owner("b").is_err());
        assert!(!a.has(Role::PackageWriter));
        let dispatcher = token(Some("d"), &[Role::Dispatcher]);
        assert!(dispatcher.may_read("b"));
        assert!(
            dispatcher.must_be_owner("b").is_err(),
            "reads, does not act as"
        );
        assert!(token(None, &[Role::Operator]).reads_everything());
        assert!(
            !token(None, &[]).may_read(""),
            "no owner claim owns nothing"
        );
        assert!(Caller::Open.may_read("anyone"));
        assert!(Caller::Open.has(Role::Operator));
    }

    #[test]
    fn roles_are_matched_exactly() {
        assert_eq!(Role::parse("Dispatcher"), Some(Role::Dispatcher));
        assert_eq!(Role::parse("dispatcher"), None);
        assert_eq!(Role::parse("PackageWriter"), Some(Role::PackageWriter));
    }

    #[test]
    fn bearer_tokens_are_read_strictly() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h).ok().flatten(), None);
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer abc.def.ghi"),
        );
        assert_eq!(bearer_token(&h).ok().flatten(), Some("abc.def.ghi"));
        for bad in ["Basic abc", "Bearer", "Bearer a b", "abc"] {
            h.insert(AUTHORIZATION, HeaderValue::from_static(bad));
            assert!(bearer_token(&h).is_err(), "{bad}");
        }
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert!(bearer_token(&h).is_err(), "two headers");
    }
}
