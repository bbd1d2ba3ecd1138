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
//! [`StoreError::Unavailable`], the caller retries). A reconnection makes
//! [`RECONNECT_ATTEMPTS`] quick attempts and then fails every call waiting
//! on it; the next call starts a new one. So while the server is down,
//! calls (and the readiness probe) fail within a connection timeout instead
//! of queueing behind the driver's default of seven attempts with
//! exponential delays (6 to 12 s), and the first call after the server is
//! back reconnects.
//!
//! - **Deliveries.** `save` runs one Lua script, so the record, its tracking
//!   event, the awaiting-drone set and the expiry change together or not at
//!   all. The script reads the stored record's `version` (with `cjson`) and
//!   ignores a save whose version is *older* (equal versions are written: the
//!   delivery actor stores one record with several events that way). An
//!   event that repeats the last one stored (the same event, or at the same
//!   version one of the same stage and location) is not appended again: it
//!   comes from a retried save whose first answer was lost (Redis died after
//!   applying it, the connection dropped), and the log keeps one copy. A
//!   terminal record (`Completed`, `Cancelled`) and its event list get a TTL
//!   of [`RedisConfig::retention`] (7 days, the original's logical delete
//!   `EXPIREAT now+7d`): still readable, then gone. A live record never has
//!   a TTL (`SET` clears it, the event list is `PERSIST`ed).
//! - **Drones.** Documents, and the pool of free drones (a geo set) that a
//!   claim takes the nearest from, atomically with the claim's bookkeeping;
//!   a claimed drone's writes are checked against its claim number and its
//!   delivery's fence. See [`drones`]. `list` is `SMEMBERS` + `MGET`,
//!   sorted by id.
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

mod control;
mod drones;
pub mod keys;
mod ownership;
mod pubsub;
mod stores;
pub mod streams;

use std::sync::Arc;
use std::time::Duration;

use dronedelivery_actors::ports::StoreError;

pub use control::RedisControlPlane;
pub use drones::RedisDroneStore;
pub use keys::Keys;
pub use ownership::RedisOwnershipStore;
pub use stores::{RedisDeliveryStore, RedisIdempotencyStore};
pub use streams::{RedisStreamsQueue, StreamsConfig};

/// How long a terminal delivery stays readable by default (RI: 7 days).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Timeout of one command on the shared connection.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of establishing a connection.
pub(crate) const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Connection attempts of one reconnection of the shared connection (see
/// the module docs); every caller retries on its own, with its own backoff.
pub const RECONNECT_ATTEMPTS: usize = 2;
/// Longest pause between two attempts of one reconnection.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(200);

/// The certificate authorities a `rediss://` server's certificate must
/// chain to, when not the system's roots (a private CA): PEM, read once at
/// start-up.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsRoots(Arc<Vec<u8>>);

impl TlsRoots {
    /// Reads a PEM file of one or more CA certificates.
    ///
    /// # Errors
    /// The file cannot be read, or holds no PEM certificate.
    pub fn from_pem_file(path: &std::path::Path) -> Result<Self, StoreError> {
        let pem = std::fs::read(path).map_err(|e| {
            StoreError::Unavailable(format!("redis TLS CA file {}: {e}", path.display()))
        })?;
        if !pem
            .windows(b"-----BEGIN CERTIFICATE-----".len())
            .any(|w| w == b"-----BEGIN CERTIFICATE-----")
        {
            return Err(StoreError::Unavailable(format!(
                "redis TLS CA file {} holds no PEM certificate",
                path.display()
            )));
        }
        Ok(Self(Arc::new(pem)))
    }
}

impl std::fmt::Debug for TlsRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsRoots(<{} bytes of PEM>)", self.0.len())
    }
}

/// Where the stores keep their data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Server URL, `redis://[:password@]host:port[/db]`, or `rediss://` for
    /// TLS (Azure Cache for Redis: port 6380).
    pub url: String,
    /// Certificate authorities of a `rediss://` server, when not the
    /// system's roots.
    pub tls_roots: Option<TlsRoots>,
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
            tls_roots: None,
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
    /// Partition leases and cluster membership.
    pub ownership: Arc<RedisOwnershipStore>,
    /// Engines' cards and operator requests.
    pub control: Arc<RedisControlPlane>,
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
    // One client (TLS roots parsed once) for the shared connection and the
    // two subscriptions, which need connections of their own.
    let client = client(&cfg.url, cfg.tls_roots.as_ref())?;
    let conn = connection_manager(client.clone()).await?;
    let keys = Keys::new(&cfg.prefix);
    Ok(RedisStores {
        deliveries: Arc::new(RedisDeliveryStore::new(
            conn.clone(),
            keys.clone(),
            cfg.retention,
        )),
        drones: Arc::new(RedisDroneStore::new(conn.clone(), keys.clone())),
        idempotency: Arc::new(RedisIdempotencyStore::new(conn.clone(), keys.clone())),
        ownership: Arc::new(
            RedisOwnershipStore::new(conn.clone(), keys.clone()).announced_through(client.clone()),
        ),
        control: Arc::new(RedisControlPlane::new(conn, client, keys)),
    })
}

/// A client for `url`; `rediss://` verifies the server against `roots`, or
/// the system's roots without.
pub(crate) fn client(url: &str, roots: Option<&TlsRoots>) -> Result<::redis::Client, StoreError> {
    let invalid = |e: ::redis::RedisError| StoreError::Unavailable(format!("redis url: {e}"));
    match roots {
        None => ::redis::Client::open(url).map_err(invalid),
        Some(_) if !url.starts_with("rediss://") => Err(StoreError::Unavailable(
            "a Redis TLS CA file is given but the URL is not rediss://".into(),
        )),
        Some(TlsRoots(pem)) => ::redis::Client::build_with_tls(
            url,
            ::redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.as_ref().clone()),
            },
        )
        .map_err(invalid),
    }
}

/// A reconnecting connection with the adapters' timeouts.
pub(crate) async fn connection_manager(
    client: ::redis::Client,
) -> Result<::redis::aio::ConnectionManager, StoreError> {
    let config = ::redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_number_of_retries(RECONNECT_ATTEMPTS - 1)
        .set_max_delay(RECONNECT_MAX_DELAY);
    ::redis::aio::ConnectionManager::new_with_config(client, config)
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

/// A reply value as text: bulk, simple and verbatim strings, integers, `OK`
/// (`None` for nil and nested replies).
pub(crate) fn text(v: &::redis::Value) -> Option<String> {
    use ::redis::Value;
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}

/// A reply of an unexpected shape as a store error: retryable (a script
/// and its caller out of step during a rolling upgrade, say).
pub(crate) fn bad_reply(what: &str, v: &::redis::Value) -> StoreError {
    StoreError::Unavailable(format!("redis: unexpected {what} reply: {v:?}"))
}

/// Milliseconds of a duration for `PX`/`PEXPIRE`/`BLOCK`, at least 1.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};
    use std::thread::JoinHandle;

    use super::*;

    /// A minimal RESP server on 127.0.0.1: `PING` gets `PONG`, every other
    /// command `OK`. Stopping it closes the listener and every connection,
    /// as a killed Redis does.
    struct FakeRedis {
        port: u16,
        stop: Arc<AtomicBool>,
        conns: Arc<Mutex<Vec<TcpStream>>>,
        accept: Option<JoinHandle<()>>,
    }

    impl FakeRedis {
        fn start(port: u16) -> Self {
            let listener = TcpListener::bind(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
            let port = listener.local_addr().map_or(port, |a| a.port());
            listener.set_nonblocking(true).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let conns = Arc::new(Mutex::new(Vec::new()));
            let (flag, held) = (Arc::clone(&stop), Arc::clone(&conns));
            let accept = std::thread::spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((socket, _)) => {
                            let _ = socket.set_nonblocking(false);
                            if let Ok(clone) = socket.try_clone() {
                                held.lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .push(clone);
                            }
                            std::thread::spawn(move || serve(socket));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
            Self {
                port,
                stop,
                conns,
                accept: Some(accept),
            }
        }

        fn stop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(accept) = self.accept.take() {
                let _ = accept.join();
            }
            for conn in self
                .conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain(..)
            {
                let _ = conn.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    impl Drop for FakeRedis {
        fn drop(&mut self) {
            self.stop();
        }
    }

    /// Answers RESP arrays of bulk strings until the peer goes away.
    fn serve(socket: TcpStream) {
        let Ok(mut out) = socket.try_clone() else {
            return;
        };
        let mut input = BufReader::new(socket);
        let mut line = String::new();
        loop {
            line.clear();
            if input.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let parts: usize = line.trim().trim_start_matches('*').parse().unwrap_or(0);
            let mut command = String::new();
            for i in 0..parts {
                line.clear();
                if input.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let len: usize = line.trim().trim_start_matches('$').parse().unwrap_or(0);
                let mut arg = vec![0; len + 2];
                if input.read_exact(&mut arg).is_err() {
                    return;
                }
                if i == 0 {
                    command = String::from_utf8_lossy(&arg[..len]).to_uppercase();
                }
            }
            let reply: &[u8] = if command == "PING" {
                b"+PONG\r\n"
            } else {
                b"+OK\r\n"
            };
            if out.write_all(reply).is_err() {
                return;
            }
        }
    }

    async fn ping(conn: &::redis::aio::ConnectionManager) -> ::redis::RedisResult<String> {
        let mut c = conn.clone();
        ::redis::cmd("PING").query_async(&mut c).await
    }

    /// The driver's default reconnection (seven attempts, 6 to 12 s of
    /// delays) held every call, the readiness probe included, for that long
    /// while the server was down. Each call now fails within a connection
    /// attempt or two, and the connection comes back with the server.
    #[tokio::test]
    async fn calls_fail_fast_while_the_server_is_down_and_reconnect_when_it_is_back(
    ) -> Result<(), String> {
        let mut server = FakeRedis::start(0);
        let url = format!("redis://127.0.0.1:{}", server.port);
        let conn = connection_manager(client(&url, None).map_err(|e| e.to_string())?)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        assert_eq!(ping(&conn).await.map_err(|e| e.to_string())?, "PONG");

        server.stop();
        // The first call may see the dropped connection, the next ones wait
        // on reconnections to a port where nothing listens.
        for _ in 0..3 {
            let answer = tokio::time::timeout(Duration::from_secs(3), ping(&conn))
                .await
                .map_err(|_| "a call waited for seconds while the server was down")?;
            assert!(answer.is_err(), "PING answered with the server down");
        }

        let _server = FakeRedis::start(server.port);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while ping(&conn).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "never reconnected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}
