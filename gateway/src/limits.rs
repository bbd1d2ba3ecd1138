//! The request limits every route shares, applied by the
//! [`middleware`](crate::middleware) layers and named in the problems that
//! [`ApiError`](crate::ApiError) renders when they are hit. A module of their
//! own so that both depend on it rather than on each other.

use std::time::Duration;

/// Largest request body accepted (64 KiB): a delivery request is well under
/// 1 KiB, so anything bigger is a mistake or an attack.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Largest announced body that is read (and thrown away) before the `413`
/// is sent, so that a client still sending it reads the answer instead of
/// a reset connection (see `middleware::drain_oversized`). Beyond it the
/// `413` goes at once and the connection is closed: past a few megabytes,
/// reading is the attacker's win, not the client's.
pub const DRAIN_LIMIT: u64 = 4 * 1024 * 1024;

/// Longest an oversized body is read before the `413` goes anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a request may take before it is answered 408. Handlers only wait
/// for a queue send or a store read, so this is a backstop against a hung
/// backend, not a budget.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
