//! Adapters: implementations of the ports of `dronedelivery-actors`.
//!
//! - [`batch`]: group commit, so that concurrent calls share a round trip.
//! - [`lanes`]: the expedited lane in front of any queue adapter.
//! - [`memory`]: in-process queue and in-memory stores (the embedded default).
//! - [`redis`]: delivery, drone and idempotency stores, and the Redis Streams queue.
//! - [`oidc`]: bearer tokens of an OpenID Connect issuer (`--auth-mode jwt`).
//! - [`mongo`]: packages, delivery history, dead letters and notify-me requests.
//! - [`servicebus`]: the Azure Service Bus queue (REST protocol).
//! - `contract`, `pool_contract` and `control_contract`: the conformance
//!   suites every queue adapter, every drone store and every control plane
//!   pass (test support, behind the `test-support` feature).

pub mod batch;
#[cfg(feature = "test-support")]
pub mod contract;
#[cfg(feature = "test-support")]
pub mod control_contract;
pub mod lanes;
pub mod memory;
pub mod mongo;
pub mod oidc;
#[cfg(feature = "test-support")]
pub mod pool_contract;
pub mod redis;
pub mod servicebus;
