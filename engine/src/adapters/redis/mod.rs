//! Redis adapters: the delivery, drone and idempotency stores, and a
//! peek-lock queue on Redis Streams.
//!
//! # Key layout
//!
//! Every key lives under a configurable prefix and is built in one place,
//! [`keys::Keys`] (see its table). In short, with prefix `p`:
//! `p:delivery:{id}` (record JSON), `p:delivery:{id}:events` (list of
//! tracking events), `p:deliveries:awaiting` (set), `p:drone:{id}`,
//! `p:drones` (set), `p:idem:{key}`, `p:stream:{stream}` and
//! `p:stream:{stream}:delayed` (sorted set).
//!
//! # Stores ([`connect`])
//!
//! The three stores share one [`::redis::aio::ConnectionManager`]: a
//! multiplexed connection that pipelines concurrent commands and reconnects
//! in the background after an I/O error (the failing call returns
//! [`StoreError::Unavailable`], the caller retries).
//!
//! - **Deliveries.** `save` runs one Lua script, so the record, its tracking
//!   event, the awaiting-drone set and the expiry change together or not at
//!   all. The script reads the stored record's `version` (with `cjson`) and
//!   ignores a save whose version is *older* (equal versions are written: the
//!   delivery actor stores one record with several events that way). A
//!   terminal record (`Completed`, `Cancelled`) and its event list get a TTL
//!   of [`RedisConfig::retention`] (7 days, the original's logical delete
//!   `EXPIREAT now+7d`): still readable, then gone. A live record never has
//!   a TTL (`SET` clears it, the event list is `PERSIST`ed).
//! - **Drones.** `SET` + `SADD` in a `MULTI`/`EXEC` pipeline; `list` is
//!   `SMEMBERS` + `MGET`, sorted by id.
//! - **Idempotency.** `SET NX PX`, then `GET` of the existing answer.
//!
//! # Queue ([`RedisStreamsQueue`])
//!
//! Service Bus's peek-lock maps onto a stream consumer group: a received
//! entry sits in the group's pending-entries list (PEL) until it is
//! acknowledged; "the lock expired" means "pending and idle for longer than
//! the lock duration", after which any consumer takes it over with
//! `XAUTOCLAIM`. Settled entries are `XACK`ed **and** `XDEL`eted, so the
//! stream only holds waiting and in-flight messages. Lock checks and every
//! multi-step change are Lua scripts, hence atomic. See [`streams`] for the
//! details: lock tokens, delivery counts, delayed redelivery, blocking reads
//! and depth.
//!
//! Scripts touch several keys, which is fine on a single server or a
//! primary with replicas, not on Redis Cluster (the keys would need a
//! common hash tag).

pub mod keys;
mod stores;
pub mod streams;

use std::sync::Arc;
use std::time::Duration;

use dronedelivery_actors::ports::StoreError;

pub use keys::Keys;
pub use stores::{RedisDeliveryStore, RedisDroneStore, RedisIdempotencyStore};
pub use streams::{RedisStreamsQueue, StreamsConfig};

/// How long a terminal delivery stays readable by default (RI: 7 days).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Timeout of one command on the shared connection.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of establishing a connection.
pub(crate) const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the stores keep their data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Server URL, `redis://[:password@]host:port[/db]` (`rediss://` for TLS).
    pub url: String,
    /// Prefix of every key (see [`keys`]).
    pub prefix: String,
    /// How long a terminal delivery and its events stay readable.
    pub retention: Duration,
}

impl RedisConfig {
    /// A configuration with the default retention of 7 days.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: prefix.into(),
            retention: DEFAULT_RETENTION,
        }
    }
}

/// The stores of one Redis server, sharing a connection.
#[derive(Clone)]
pub struct RedisStores {
    /// Deliveries and their tracking events.
    pub deliveries: Arc<RedisDeliveryStore>,
    /// Drone state.
    pub drones: Arc<RedisDroneStore>,
    /// Idempotency keys.
    pub idempotency: Arc<RedisIdempotencyStore>,
}

impl std::fmt::Debug for RedisStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisStores")
    }
}

/// Connects (a [`::redis::aio::ConnectionManager`], which reconnects by
/// itself) and returns the stores sharing it. Fails if the server cannot be
/// reached now.
pub async fn connect(cfg: &RedisConfig) -> Result<RedisStores, StoreError> {
    let conn = connection_manager(&cfg.url).await?;
    let keys = Keys::new(&cfg.prefix);
    Ok(RedisStores {
        deliveries: Arc::new(RedisDeliveryStore::new(
            conn.clone(),
            keys.clone(),
            cfg.retention,
        )),
        drones: Arc::new(RedisDroneStore::new(conn.clone(), keys.clone())),
        idempotency: Arc::new(RedisIdempotencyStore::new(conn, keys)),
    })
}

/// Opens a client for `url`.
pub(crate) fn client(url: &str) -> Result<::redis::Client, StoreError> {
    ::redis::Client::open(url).map_err(|e| StoreError::Unavailable(format!("redis url: {e}")))
}

/// A reconnecting connection with the adapters' timeouts.
pub(crate) async fn connection_manager(
    url: &str,
) -> Result<::redis::aio::ConnectionManager, StoreError> {
    let config = ::redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECTION_TIMEOUT));
    ::redis::aio::ConnectionManager::new_with_config(client(url)?, config)
        .await
        .map_err(unavailable)
}

/// A Redis failure as a store error: retryable.
pub(crate) fn unavailable(e: ::redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// A document that does not decode: not retryable.
pub(crate) fn corrupt(key: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("{key}: {e}"))
}

/// Milliseconds of a duration for `PX`/`PEXPIRE`/`BLOCK`, at least 1.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
