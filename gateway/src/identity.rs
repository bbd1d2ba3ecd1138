//! `GET /api/me`: who the caller is, as the engine sees it.
//!
//! A client (the [console](crate::console) first) cannot tell from a token
//! what the engine will make of it: which claim is the owner and which
//! roles it carries depend on the engine's settings (`--auth-owner-claim`,
//! `--auth-roles-claim`), and whether tokens are needed at all on
//! `--auth-mode`. Decoding the token in the browser would guess at all
//! three. This route answers them from the same [`Caller`] the other
//! handlers are given, so what it says is what they enforce:
//!
//! - authentication off: `200` with `authentication: "none"`, no owner and
//!   no roles: everything is open;
//! - authentication on, no or a bad token: the usual `401` (the route is
//!   under `/api`, so the same layer refuses it), which is how the console
//!   learns it must ask for a token;
//! - a valid token: its owner and its known roles, and what they allow.

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Role};
use crate::state::AppState;

/// Route of the caller's identity, with its documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(me))
}

/// Whether requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Authentication {
    /// `--auth-mode none`: no token is needed and none is looked at.
    None,
    /// `--auth-mode jwt`: every `/api` request carries a bearer token.
    Jwt,
}

/// The caller as the engine sees it, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    /// Whether the engine authenticates requests at all.
    pub authentication: Authentication,
    /// The owner id the token speaks for (null with authentication off, or
    /// when the token has no owner claim).
    pub owner: Option<String>,
    /// The token's known roles (`Dispatcher`, `Operator`, `PackageWriter`).
    pub roles: Vec<String>,
    /// Whether the caller reads every owner's deliveries and sees which
    /// delivery each drone carries (dispatchers and operators).
    pub reads_every_delivery: bool,
    /// Whether the caller may create and change packages.
    pub writes_packages: bool,
    /// Whether the caller may use the operator API under `/admin`.
    pub operates: bool,
}

impl Me {
    /// What `caller` is and may do.
    pub fn of(caller: &Caller) -> Self {
        let (authentication, owner, roles) = match caller {
            Caller::Open => (Authentication::None, None, Vec::new()),
            Caller::Token(identity) => (
                Authentication::Jwt,
                identity.owner.clone(),
                identity.roles.iter().map(|r| r.name().to_owned()).collect(),
            ),
        };
        Self {
            authentication,
            owner,
            roles,
            reads_every_delivery: caller.reads_everything(),
            writes_packages: caller.has(Role::PackageWriter),
            operates: caller.has(Role::Operator),
        }
    }
}

/// `GET /api/me`.
#[utoipa::path(
    get,
    path = "/api/me",
    operation_id = "getCaller",
    tag = "identity",
    summary = "Who the caller is",
    description = "Whether the engine authenticates requests and, when it does, the owner and \
roles of the caller's bearer token as the engine reads them (with its configured claims), and \
what they allow. With authentication on, a request without a valid token is a 401 like any \
other `/api` request.",
    responses(
        (status = 200, description = "The caller", body = Me)
    )
)]
async fn me(caller: Caller) -> Json<Me> {
    Json(Me::of(&caller))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::Identity;

    #[test]
    fn open_callers_may_do_everything_and_have_no_identity() {
        let me = Me::of(&Caller::Open);
        assert_eq!(me.authentication, Authentication::None);
        assert_eq!(me.owner, None);
        assert!(me.roles.is_empty());
        assert!(me.reads_every_delivery && me.writes_packages && me.operates);
    }

    #[test]
    fn a_token_shows_its_owner_roles_and_what_they_allow() {
        let owner = Caller::Token(Arc::new(Identity {
            owner: Some("alice".into()),
            roles: Default::default(),
        }));
        let me = Me::of(&owner);
        assert_eq!(me.authentication, Authentication::Jwt);
        assert_eq!(me.owner.as_deref(), Some("alice"));
        assert!(!me.reads_every_delivery && !me.writes_packages && !me.operates);

        let dispatcher = Caller::Token(Arc::new(Identity {
            owner: None,
            roles: [Role::Dispatcher, Role::PackageWriter]
                .into_iter()
                .collect(),
        }));
        let me = Me::of(&dispatcher);
        assert_eq!(me.roles, ["Dispatcher", "PackageWriter"]);
        assert!(me.reads_every_delivery && me.writes_packages && !me.operates);
    }
}
