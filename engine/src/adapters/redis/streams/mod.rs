//! A peek-lock queue on a Redis Streams consumer group.
//!
//! # Model
//!
//! - **Stream** `{p}:stream:{stream}`, **group** [`StreamsConfig::group`]
//!   (created at connect with `MKSTREAM`, starting at id `0` so messages sent
//!   before the group existed are delivered too), **consumer**
//!   [`StreamsConfig::consumer`], unique per process.
//! - **Entry fields**: `id` (message id), `operation`, `body`,
//!   `correlation_id` (absent when `None`), `traceparent` and `tracestate`
//!   (W3C trace context, when the sender was traced), `enqueued_at` (RFC 3339) and, on
//!   redelivered copies only, `delivery_count` (deliveries before this copy).
//!   An entry written by another producer with missing fields is still handed
//!   out (id defaults to the entry id, operation/body to empty, enqueue time
//!   to the entry id's timestamp) so the workflow dead-letters it with a
//!   reason instead of it clogging the queue.
//! - **Lock** = the entry sitting in the group's pending-entries list (PEL)
//!   under our consumer. It "expires" once the entry has been idle for
//!   [`StreamsConfig::lock_duration`]: from then on any consumer's `receive`
//!   takes it over with `XAUTOCLAIM`, which bumps the PEL's delivery counter.
//!   Until someone takes it over, the old holder can still settle it.
//! - **Lock token** `"{partition}/{entry_id}:{times_delivered}"`, where `times_delivered`
//!   is the PEL counter when we got the entry. `complete`, `abandon`,
//!   `dead_letter` and `renew` are Lua scripts that first check, atomically,
//!   that the entry is still pending for *this consumer* with *that* counter
//!   (`XPENDING key group id id 1` gives both); otherwise the lock was lost
//!   (taken over, or already settled) and the call fails with
//!   `StoreError::Unavailable("message lock lost …")`.
//! - **Delivery count** reported = the entry's `delivery_count` field (0 for
//!   a first copy) + the PEL counter (1 on the first read, +1 per takeover).
//! - **Settling**: `complete` and `dead_letter` `XACK` + `XDEL` the entry, so
//!   the stream only ever holds waiting and in-flight messages. `renew` is
//!   `XCLAIM … 0 id JUSTID` to ourselves, which resets the idle time without
//!   counting a delivery.
//!
//! # Partitions
//!
//! With [`StreamsConfig::partitions`] = N the queue is N streams, one per
//! partition (`{p}:stream:{stream}` for partition 0, `{p}:stream:{stream}:{n}`
//! for the others; each with its own delayed set and the same group name).
//! `send` appends a message to the stream of its routing key's partition
//! ([`partition_of`] of [`QueueMessage::routing_key`], the delivery id), so
//! every message of one delivery is in one stream, in order. `receive` reads
//! only the partitions it is given, the ones the engine holds a lease on;
//! each comes with its lease epoch, and an epoch the queue has not read the
//! partition under before means the partition has just been gained: its
//! scan then claims every pending entry with min idle 0, whoever holds it,
//! until it has gone round the PEL once, so a partition's messages in flight
//! move with it at once instead of after their locks expire (the previous
//! holder's settle then fails as lock lost, and its writes are refused by
//! the fence). Lock tokens name the partition: `"{partition}/{entry_id}:{n}"`.
//!
//! # Abandon and delays
//!
//! Streams have no "unlock". `abandon(lock, delay)` acks and deletes the
//! entry and re-adds a copy with `delivery_count` = its total deliveries so
//! far, so the next receive reports one more. With a zero delay the copy is
//! `XADD`ed at once. With a delay it goes to the sorted set
//! `{p}:stream:{stream}:delayed` (score = due time in epoch ms, by the Redis
//! server's clock so that process clocks do not matter; member = the copy's
//! fields as JSON, tagged with the old entry id to stay unique). A
//! `receive` first moves due members back into the stream (`ZRANGEBYSCORE` +
//! `XADD` + `ZREM` in the same script; each partition's set at most every
//! [`PROMOTE_EVERY`]), so a delayed message is never handed out early and
//! never sits in the stream where other readers could see it.
//!
//! # Receive and blocking reads
//!
//! One Lua script per poll, over every partition read: promote due delayed messages, `XAUTOCLAIM`
//! entries idle for longer than the lock duration (with `XPENDING` for each
//! one's counter; entries deleted meanwhile are skipped; the scan resumes
//! from the previous poll's cursor so a large PEL is covered over a few
//! polls; a partition's PEL is scanned at most every tenth of the lock
//! duration, up to a second, except while it is being taken over), and if
//! that found nothing, a non-blocking `XREADGROUP … >`. Only
//! when that is empty does `receive` wait, with `XREADGROUP … BLOCK`.
//!
//! A blocked command occupies its connection until it returns, and the
//! queue's [`ConnectionManager`] multiplexes every other command (`send`,
//! settling, `depth`) onto one connection, so blocking reads run on
//! **dedicated connections**: a small pool of multiplexed connections without
//! a response timeout (the call is bounded by a Tokio timeout of the block
//! time plus a margin instead; a connection that errs or times out is
//! dropped, never reused, and a pooled one the server closed meanwhile is
//! replaced once). Each concurrent `receive` takes its own from the pool, so
//! receivers never queue behind each other. A block lasts at most
//! [`MAX_BLOCK`]; `receive` then polls again, so expired locks and due
//! delayed messages are noticed within a second even during a long wait.
//!
//! # Depth
//!
//! `depth()` = messages not yet delivered to the group + the delayed set.
//! The first term is the group's `lag` from `XINFO GROUPS` (Redis ≥ 7.0).
//! Redis reports no lag when it cannot tell (deletions in the middle of the
//! stream can make it unknown); then it is `XLEN − pending`, which is exact
//! here because settled entries are deleted together with their ack.
//! [`RedisStreamsQueue::pending`] is the PEL size (messages in flight).
//!
//! # Limits
//!
//! - `max_len` trims with `MAXLEN ~` on every `XADD`: a safety cap that
//!   drops the *oldest* entries, waiting or in flight, rather than refusing
//!   new ones. Leave it `None` unless losing messages beats running out of
//!   memory.
//! - A `receive` cancelled while its `XREADGROUP` is in flight may leave the
//!   entries it read pending; they are redelivered after the lock duration.
//! - Every process start adds a consumer name to the group; `connect` removes
//!   consumers that have had nothing pending for an hour (atomically: one
//!   with pending entries is never removed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, MultiplexedConnection};
use ::redis::{Script, Value};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use dronedelivery_actors::domain::ownership::{partition_of, Fence, PartitionId};
use dronedelivery_actors::ports::{
    LockToken, MessageQueue, QueueMessage, ReceivedMessage, StoreError, StoreResult,
};
use tokio::time::Instant;

mod reply;
mod scripts;

use self::reply::{entry_time, parse_poll_reply, parse_read_reply, RawEntry};
use self::scripts::Scripts;
use super::{client, connection_manager, millis, unavailable, Keys, CONNECTION_TIMEOUT};

/// The longest single `XREADGROUP … BLOCK`; `receive` polls again after it.
pub const MAX_BLOCK: Duration = Duration::from_secs(1);
/// Idle blocking connections kept for reuse.
const MAX_IDLE_BLOCKING: usize = 16;
/// Extra time granted to a blocking read beyond its `BLOCK` before giving up.
const BLOCK_MARGIN: Duration = Duration::from_secs(5);
/// Due delayed messages moved back to the stream per poll at most.
const PROMOTE_BATCH: usize = 100;
/// How often a partition's delayed set is looked at for due messages: a
/// delayed redelivery comes at most this much after its due time, and a
/// poll of many partitions does not look at every delayed set every time.
const PROMOTE_EVERY: Duration = Duration::from_millis(50);
/// Consumers with nothing pending and idle this long are removed at connect.
const PRUNE_IDLE: Duration = Duration::from_secs(60 * 60);

const F_ID: &str = "id";
const F_OPERATION: &str = "operation";
const F_BODY: &str = "body";
const F_CORRELATION_ID: &str = "correlation_id";
const F_TRACEPARENT: &str = "traceparent";
const F_TRACESTATE: &str = "tracestate";
const F_ENQUEUED_AT: &str = "enqueued_at";
const F_DELIVERY_COUNT: &str = "delivery_count";

/// Where the queue lives and how it behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamsConfig {
    /// Server URL, `redis://[:password@]host:port[/db]` (`rediss://` for TLS).
    pub url: String,
    /// Certificate authorities of a `rediss://` server, when not the
    /// system's roots.
    pub tls_roots: Option<super::TlsRoots>,
    /// Prefix of every key (see [`super::keys`]).
    pub prefix: String,
    /// Stream name (key `{prefix}:stream:{stream}`); default `deliveries`.
    pub stream: String,
    /// Consumer group; default `workflow`.
    pub group: String,
    /// This process's consumer name, unique per process
    /// (default `hostname-pid-random`).
    pub consumer: String,
    /// Idle time after which a received, unsettled message may be taken
    /// over by any consumer (`XAUTOCLAIM`); default 60 s.
    pub lock_duration: Duration,
    /// Approximate cap on each stream's length (`MAXLEN ~`); `None`: no cap.
    pub max_len: Option<usize>,
    /// Partitions: one stream (with its group and delayed set) per
    /// partition, a message going to the partition of its routing key.
    /// Default 1: the single stream `{prefix}:stream:{stream}`.
    pub partitions: u32,
}

impl StreamsConfig {
    /// Defaults: stream `deliveries`, group `workflow`, a fresh consumer
    /// name, 60 s lock, no length cap, one partition.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            tls_roots: None,
            prefix: prefix.into(),
            stream: "deliveries".to_owned(),
            group: "workflow".to_owned(),
            consumer: Self::unique_consumer_name(),
            lock_duration: Duration::from_secs(60),
            max_len: None,
            partitions: 1,
        }
    }

    /// `hostname-pid-random`: unique per process, recognisable in `XINFO`.
    pub fn unique_consumer_name() -> String {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".to_owned());
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}-{}", std::process::id(), &random[..8])
    }
}

/// A `(waiting, pending)` snapshot.
struct Depth {
    waiting: u64,
    pending: u64,
}

/// The keys of one partition.
struct PartitionKeys {
    stream: String,
    delayed: String,
}

/// Where reading a partition stands.
#[derive(Debug, Clone)]
struct ReadState {
    /// The lease epoch it is read under.
    epoch: u64,
    /// Where the next `XAUTOCLAIM` scan starts (`0-0`: from the beginning).
    cursor: String,
    /// The partition was just gained: its scan claims every pending entry
    /// (min idle 0), whoever holds it, until the scan has gone round once.
    takeover: bool,
    /// When its pending list was last scanned for expired locks.
    scanned: Option<Instant>,
    /// When its delayed set was last looked at.
    promoted: Option<Instant>,
}

/// The Redis Streams queue (see the [module docs](self)).
pub struct RedisStreamsQueue {
    cfg: StreamsConfig,
    client: ::redis::Client,
    conn: ConnectionManager,
    blocking: Mutex<Vec<MultiplexedConnection>>,
    /// Index = partition.
    keys: Vec<PartitionKeys>,
    /// Stream key → partition, for blocking reads' replies.
    by_stream: HashMap<String, PartitionId>,
    reading: Mutex<HashMap<PartitionId, ReadState>>,
    /// Rotates the partition a poll starts with, so no partition starves.
    rotation: AtomicUsize,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisStreamsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamsQueue")
            .field("stream", &self.keys[0].stream)
            .field("partitions", &self.cfg.partitions)
            .field("group", &self.cfg.group)
            .field("consumer", &self.cfg.consumer)
            .finish_non_exhaustive()
    }
}

impl RedisStreamsQueue {
    /// Connects, creates every partition's stream and the consumer group if
    /// missing (`XGROUP CREATE … 0 MKSTREAM`, `BUSYGROUP` ignored) and
    /// removes long-idle consumers that hold nothing.
    pub async fn connect(mut cfg: StreamsConfig) -> Result<Arc<Self>, StoreError> {
        cfg.partitions = cfg.partitions.max(1);
        let names = Keys::new(&cfg.prefix);
        let keys: Vec<PartitionKeys> = (0..cfg.partitions)
            .map(|p| PartitionKeys {
                stream: names.partition_stream(&cfg.stream, p),
                delayed: names.partition_delayed(&cfg.stream, p),
            })
            .collect();
        let by_stream = keys
            .iter()
            .zip(0..)
            .map(|(k, p)| (k.stream.clone(), p))
            .collect();
        let client = client(&cfg.url, cfg.tls_roots.as_ref())?;
        let queue = Self {
            conn: connection_manager(client.clone()).await?,
            client,
            blocking: Mutex::new(Vec::new()),
            keys,
            by_stream,
            reading: Mutex::new(HashMap::new()),
            rotation: AtomicUsize::new(0),
            scripts: Scripts::new(),
            cfg,
        };
        queue.ensure_groups().await?;
        queue.prune_consumers().await;
        Ok(Arc::new(queue))
    }

    /// The configuration this queue runs with.
    pub fn config(&self) -> &StreamsConfig {
        &self.cfg
    }

    /// The stream key of a partition.
    pub fn stream_key(&self, partition: PartitionId) -> Option<&str> {
        self.keys.get(partition as usize).map(|k| k.stream.as_str())
    }

    /// Messages delivered and not yet settled (the group's PELs).
    pub async fn pending(&self) -> StoreResult<u64> {
        Ok(self.snapshot().await?.pending)
    }

    async fn ensure_groups(&self) -> StoreResult<()> {
        for keys in &self.keys {
            self.ensure_group(&keys.stream).await?;
        }
        Ok(())
    }

    async fn ensure_group(&self, stream: &str) -> StoreResult<()> {
        let mut c = self.conn.clone();
        let created = ::redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(&self.cfg.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async::<()>(&mut c)
            .await;
        match created {
            Ok(()) => {
                tracing::info!(%stream, group = %self.cfg.group, "created consumer group");
                Ok(())
            }
            Err(e) if e.code() == Some("BUSYGROUP") || e.to_string().contains("BUSYGROUP") => {
                Ok(())
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn prune_consumers(&self) {
        let mut removed = 0;
        for keys in &self.keys {
            let mut c = self.conn.clone();
            let pruned: Result<i64, _> = self
                .scripts
                .prune
                .key(&keys.stream)
                .arg(&self.cfg.group)
                .arg(millis(PRUNE_IDLE))
                .arg(&self.cfg.consumer)
                .invoke_async(&mut c)
                .await;
            match pruned {
                Ok(n) => removed += n,
                Err(e) => {
                    tracing::warn!(error = %e, "could not prune idle consumers");
                    return;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed idle consumers with nothing pending");
        }
    }

    /// Runs `op`; if a group has vanished (server restarted without
    /// persistence, key deleted), recreates the groups and runs `op` once more.
    async fn with_group<T, F, Fut>(&self, op: F) -> StoreResult<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ::redis::RedisError>>,
    {
        match op().await {
            Ok(v) => Ok(v),
            Err(e) if is_nogroup(&e) => {
                tracing::warn!(group = %self.cfg.group, "consumer group missing; recreating it");
                self.ensure_groups().await?;
                op().await.map_err(unavailable)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The partitions of `from` this queue has, rotated so that polls take
    /// turns at going first, each with its read state (a new epoch starts a
    /// takeover).
    fn read_plan(&self, from: &[Fence]) -> Vec<(PartitionId, ReadState)> {
        let mut reading = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        let mut plan: Vec<(PartitionId, ReadState)> = from
            .iter()
            .filter(|f| f.partition < self.cfg.partitions)
            .map(|f| {
                let fresh = || ReadState {
                    epoch: f.epoch,
                    cursor: "0-0".to_owned(),
                    takeover: true,
                    scanned: None,
                    promoted: None,
                };
                let state = reading.entry(f.partition).or_insert_with(fresh);
                if state.epoch != f.epoch {
                    *state = fresh();
                }
                (f.partition, state.clone())
            })
            .collect();
        if !plan.is_empty() {
            let turn = self.rotation.fetch_add(1, Ordering::Relaxed) % plan.len();
            plan.rotate_left(turn);
        }
        plan
    }

    /// How often a partition's pending list is scanned for expired locks
    /// (a gained partition's is scanned on every poll until taken over):
    /// a tenth of the lock duration, at most [`MAX_BLOCK`], so an expired
    /// lock is seen soon after it expires without every poll paying for a
    /// scan of every partition.
    fn rescan_every(&self) -> Duration {
        (self.cfg.lock_duration / 10).min(MAX_BLOCK)
    }

    /// One non-blocking poll of the planned partitions (see `RECEIVE`).
    async fn poll(
        &self,
        plan: &[(PartitionId, ReadState)],
        max: usize,
    ) -> StoreResult<Vec<RawEntry>> {
        let partitions: Vec<PartitionId> = plan.iter().map(|(p, _)| *p).collect();
        let value: Value = self
            .with_group(|| {
                let mut c = self.conn.clone();
                let mut invocation = self.scripts.receive.prepare_invoke();
                for (p, _) in plan {
                    let keys = &self.keys[*p as usize];
                    invocation.key(&keys.stream).key(&keys.delayed);
                }
                invocation
                    .arg(&self.cfg.group)
                    .arg(&self.cfg.consumer)
                    .arg(max)
                    .arg(self.cfg.max_len.unwrap_or(0))
                    .arg(PROMOTE_BATCH);
                for (_, state) in plan {
                    let idle: i64 = if state.takeover {
                        0
                    } else if !due(state.scanned, self.rescan_every()) {
                        -1
                    } else {
                        i64::try_from(millis(self.cfg.lock_duration)).unwrap_or(i64::MAX)
                    };
                    let promote = due(state.promoted, PROMOTE_EVERY);
                    invocation
                        .arg(&state.cursor)
                        .arg(idle)
                        .arg(if promote { "1" } else { "0" });
                }
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        let (cursors, entries) = parse_poll_reply(value, &partitions)?;
        {
            let mut reading = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            for (p, before) in plan {
                let promoted = due(before.promoted, PROMOTE_EVERY);
                if let (true, Some(state)) = (promoted, reading.get_mut(p)) {
                    state.promoted = Some(now);
                }
            }
            for ((p, before), next) in plan.iter().zip(cursors) {
                let (Some(next), Some(state)) = (next, reading.get_mut(p)) else {
                    continue;
                };
                if state.epoch != before.epoch {
                    continue; // regained meanwhile: its new takeover stands
                }
                if state.takeover && next == "0-0" {
                    state.takeover = false;
                }
                state.cursor = next;
                state.scanned = Some(Instant::now());
            }
        }
        let reclaimed = entries.iter().filter(|e| e.times_delivered > 1).count();
        if reclaimed > 0 {
            metrics::counter!("dronedelivery_queue_lock_expired_total", "backend" => "redis-streams")
                .increment(reclaimed as u64);
            tracing::warn!(
                count = reclaimed,
                "messages taken over (lock expired, or partition gained); redelivering"
            );
        }
        Ok(entries)
    }

    fn take_blocking(&self) -> Option<MultiplexedConnection> {
        self.blocking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn give_back(&self, conn: MultiplexedConnection) {
        let mut pool = self.blocking.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < MAX_IDLE_BLOCKING {
            pool.push(conn);
        }
    }

    async fn new_blocking_connection(&self) -> StoreResult<MultiplexedConnection> {
        let config = ::redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(unavailable)
    }

    /// `XREADGROUP … BLOCK` over the planned partitions' streams on a
    /// dedicated connection (see the module docs). A pooled connection the
    /// server has closed meanwhile (its `timeout` setting, a restart) is
    /// replaced once by a fresh one.
    async fn blocking_read(
        &self,
        plan: &[(PartitionId, ReadState)],
        max: usize,
        block: Duration,
    ) -> StoreResult<Vec<RawEntry>> {
        let mut cmd = ::redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.cfg.group)
            .arg(&self.cfg.consumer)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(millis(block))
            .arg("STREAMS");
        for (p, _) in plan {
            cmd.arg(&self.keys[*p as usize].stream);
        }
        for _ in plan {
            cmd.arg(">");
        }
        let limit = block + BLOCK_MARGIN;
        let mut pooled = self.take_blocking();
        loop {
            let reused = pooled.is_some();
            let mut conn = match pooled.take() {
                Some(c) => c,
                None => self.new_blocking_connection().await?,
            };
            match tokio::time::timeout(limit, cmd.query_async::<Value>(&mut conn)).await {
                Ok(Ok(value)) => {
                    self.give_back(conn);
                    return parse_read_reply(value, |s| self.by_stream.get(s).copied());
                }
                Ok(Err(e)) if is_nogroup(&e) => {
                    self.give_back(conn);
                    self.ensure_groups().await?;
                    return Ok(Vec::new());
                }
                Ok(Err(e)) if reused && (e.is_io_error() || e.is_connection_dropped()) => {
                    tracing::debug!(error = %e, "pooled blocking connection failed; reconnecting");
                }
                Ok(Err(e)) => return Err(unavailable(e)),
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "redis: blocking read gave no answer within {limit:?}"
                    )))
                }
            }
        }
    }

    fn to_received(&self, entry: RawEntry) -> ReceivedMessage {
        let RawEntry {
            partition,
            id,
            mut fields,
            times_delivered,
        } = entry;
        let prior: u64 = fields
            .get(F_DELIVERY_COUNT)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let enqueued_at = fields
            .get(F_ENQUEUED_AT)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .or_else(|| entry_time(&id))
            .unwrap_or_else(Utc::now);
        let message = QueueMessage {
            message_id: fields.remove(F_ID).unwrap_or_else(|| id.clone()),
            operation: fields.remove(F_OPERATION).unwrap_or_default(),
            body: fields.remove(F_BODY).unwrap_or_default(),
            correlation_id: fields.remove(F_CORRELATION_ID),
            enqueued_at,
            traceparent: fields.remove(F_TRACEPARENT),
            tracestate: fields.remove(F_TRACESTATE),
            expedited: false,
        };
        if message.operation.is_empty() {
            tracing::warn!(entry = %id, partition, "stream entry without an operation");
        }
        let delivery_count =
            u32::try_from(prior.saturating_add(times_delivered)).unwrap_or(u32::MAX);
        ReceivedMessage {
            message,
            lock: LockToken(format!("{partition}/{id}:{times_delivered}")),
            delivery_count,
            partition: Some(partition),
        }
    }

    /// Runs a lock-checked script: its result, or the lock-lost error.
    async fn locked(&self, script: &Script, lock: &LockToken, extra: &[u64]) -> StoreResult<i64> {
        let (partition, entry, counter) = parse_lock(lock)?;
        let keys = self
            .keys
            .get(partition as usize)
            .ok_or_else(|| invalid_lock(lock))?;
        let mut c = self.conn.clone();
        let mut invocation = script.key(&keys.stream);
        invocation
            .key(&keys.delayed)
            .arg(&self.cfg.group)
            .arg(&self.cfg.consumer)
            .arg(entry)
            .arg(counter);
        for x in extra {
            invocation.arg(*x);
        }
        match invocation.invoke_async::<i64>(&mut c).await {
            Ok(0) => Err(lock_lost()),
            Ok(n) => Ok(n),
            Err(e) if is_nogroup(&e) => Err(lock_lost()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn snapshot(&self) -> StoreResult<Depth> {
        let mut c = self.conn.clone();
        let mut invocation = self.scripts.depth.prepare_invoke();
        for keys in &self.keys {
            invocation.key(&keys.stream).key(&keys.delayed);
        }
        let v: Vec<i64> = invocation
            .arg(&self.cfg.group)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        let [waiting, pending] = v[..] else {
            return Err(StoreError::Unavailable(format!(
                "redis: unexpected depth reply {v:?}"
            )));
        };
        let n = |x: i64| u64::try_from(x.max(0)).unwrap_or(0);
        Ok(Depth {
            waiting: n(waiting),
            pending: n(pending),
        })
    }
}

#[async_trait]
impl MessageQueue for RedisStreamsQueue {
    fn backend(&self) -> &'static str {
        "redis-streams"
    }

    fn partitioned(&self) -> bool {
        true
    }

    async fn send(&self, message: QueueMessage) -> StoreResult<()> {
        let partition = partition_of(&message.routing_key(), self.cfg.partitions);
        let mut cmd = ::redis::cmd("XADD");
        cmd.arg(&self.keys[partition as usize].stream);
        if let Some(n) = self.cfg.max_len {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*")
            .arg(F_ID)
            .arg(&message.message_id)
            .arg(F_OPERATION)
            .arg(&message.operation)
            .arg(F_BODY)
            .arg(&message.body);
        if let Some(correlation_id) = &message.correlation_id {
            cmd.arg(F_CORRELATION_ID).arg(correlation_id);
        }
        if let Some(traceparent) = &message.traceparent {
            cmd.arg(F_TRACEPARENT).arg(traceparent);
        }
        if let Some(tracestate) = &message.tracestate {
            cmd.arg(F_TRACESTATE).arg(tracestate);
        }
        cmd.arg(F_ENQUEUED_AT).arg(
            message
                .enqueued_at
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        );
        let mut c = self.conn.clone();
        cmd.query_async::<String>(&mut c)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn receive(
        &self,
        from: &[Fence],
        max: usize,
        wait: Duration,
    ) -> StoreResult<Vec<ReceivedMessage>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + wait;
        loop {
            let plan = self.read_plan(from);
            if plan.is_empty() {
                // Nothing held (yet): wait, without spinning.
                tokio::time::sleep_until(deadline.min(Instant::now() + MAX_BLOCK)).await;
                return Ok(Vec::new());
            }
            let mut entries = self.poll(&plan, max).await?;
            if entries.is_empty() {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(Vec::new());
                }
                let block = (deadline - now).min(MAX_BLOCK);
                entries = self.blocking_read(&plan, max, block).await?;
            }
            if !entries.is_empty() {
                return Ok(entries.into_iter().map(|e| self.to_received(e)).collect());
            }
        }
    }

    async fn complete(&self, lock: &LockToken) -> StoreResult<()> {
        self.locked(&self.scripts.settle, lock, &[])
            .await
            .map(|_| ())
    }

    async fn abandon(&self, lock: &LockToken, delay: Duration) -> StoreResult<()> {
        let delay_ms = if delay.is_zero() { 0 } else { millis(delay) };
        let max_len = self.cfg.max_len.map_or(0, |n| n as u64);
        let r = self
            .locked(&self.scripts.abandon, lock, &[delay_ms, max_len])
            .await?;
        if r == 2 {
            tracing::warn!(lock = %lock.0, "abandoned message had been trimmed from the stream; dropped");
        }
        Ok(())
    }

    async fn dead_letter(&self, lock: &LockToken, reason: &str) -> StoreResult<()> {
        self.locked(&self.scripts.settle, lock, &[]).await?;
        tracing::debug!(lock = %lock.0, reason, "message removed from the stream as dead letter");
        Ok(())
    }

    async fn renew(&self, lock: &LockToken) -> StoreResult<()> {
        self.locked(&self.scripts.renew, lock, &[])
            .await
            .map(|_| ())
    }

    async fn depth(&self) -> StoreResult<Option<u64>> {
        Ok(Some(self.snapshot().await?.waiting))
    }

    async fn unsettled(&self) -> StoreResult<Option<u64>> {
        RedisStreamsQueue::pending(self).await.map(Some)
    }
}

/// Whether something last done at `last` (never: `None`) is due again.
fn due(last: Option<Instant>, every: Duration) -> bool {
    last.is_none_or(|at| at.elapsed() >= every)
}

fn lock_lost() -> StoreError {
    StoreError::Unavailable(
        "message lock lost (expired and taken over, or already settled)".to_owned(),
    )
}

fn is_nogroup(e: &::redis::RedisError) -> bool {
    e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP")
}

fn invalid_lock(lock: &LockToken) -> StoreError {
    StoreError::Unavailable(format!("invalid lock token {:?}", lock.0))
}

/// `"{partition}/{entry_id}:{times_delivered}"` → its parts.
fn parse_lock(lock: &LockToken) -> StoreResult<(PartitionId, &str, u64)> {
    let (partition, rest) = lock.0.split_once('/').ok_or_else(|| invalid_lock(lock))?;
    let partition = partition.parse().map_err(|_| invalid_lock(lock))?;
    rest.rsplit_once(':')
        .and_then(|(entry, n)| Some((partition, entry, n.parse().ok()?)))
        .filter(|(_, entry, _)| !entry.is_empty())
        .ok_or_else(|| invalid_lock(lock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_tokens_round_trip() {
        let lock = LockToken("7/1700000000000-3:2".to_owned());
        assert!(matches!(parse_lock(&lock), Ok((7, "1700000000000-3", 2))));
        assert!(parse_lock(&LockToken("nonsense".to_owned())).is_err());
        assert!(parse_lock(&LockToken("1700000000000-3:2".to_owned())).is_err());
        assert!(parse_lock(&LockToken("0/:2".to_owned())).is_err());
    }

    #[test]
    fn entry_ids_carry_a_time() {
        let t = entry_time("1700000000000-0").map(|t| t.timestamp_millis());
        assert_eq!(t, Some(1_700_000_000_000));
    }

    #[test]
    fn read_replies_parse() -> StoreResult<()> {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("p:stream:s"),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("id"), bulk("m1"), bulk("body"), bulk("{}")]),
            ])]),
        ])]);
        let got = parse_read_reply(reply, |s| (s == "p:stream:s").then_some(3))?;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].partition, 3);
        assert_eq!(got[0].id, "1-0");
        assert_eq!(got[0].fields.get("id").map(String::as_str), Some("m1"));
        assert_eq!(got[0].times_delivered, 1);
        assert!(parse_read_reply(Value::Nil, |_| None)?.is_empty());
        Ok(())
    }
}
