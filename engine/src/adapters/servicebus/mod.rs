//! Azure Service Bus queue adapter, over the Service Bus REST protocol.
//!
//! [`ServiceBusQueue`] implements [`MessageQueue`] with
//! `azure_messaging_servicebus` 0.21 (the REST crate: one HTTP request per
//! operation, SAS token per request). The `double` module (behind the
//! `test-support` feature, not part of the binary) serves the same protocol
//! locally, for tests and benchmarks, since Azure cannot be reached from
//! every place the engine is built.
//!
//! # Partitions: one queue each
//!
//! Deliveries are spread over partitions held by lease (see the actors'
//! `domain::ownership`); an engine must receive only the messages of the
//! partitions it holds, so that one delivery has one owner. Service Bus
//! offers two tools that do not fit: **sessions** (one receiver per session
//! id) cannot be received over the REST protocol, and a **partitioned
//! entity**'s `PartitionKey` spreads one queue over message brokers without
//! letting a receiver choose a partition. So each partition is its **own
//! queue**: partition 0 is the configured queue (one partition is the
//! reference implementation's layout, and messages queued before
//! partitioning are still read; the workflow moves them to their
//! partition), partition `n` is `{queue}-{n}`. The operator creates the
//! queues (a missing one is reported by name); `send` routes a message by
//! its delivery id; `receive` reads the partitions it is given through one
//! receiver each (`receivers`: long polls, a small bounded read-ahead,
//! hand-back of a partition given up and on `close`); `depth` sums the
//! queues. Unlike Redis Streams there is no claim of another receiver's
//! lock: messages a dead engine had locked come back when their locks
//! expire (the queue's lock duration bounds that part of a crash
//! hand-over; a graceful stop hands everything back at once).
//!
//! # Wire protocol
//!
//! All requests carry `Authorization: SharedAccessSignature
//! sr={url}&sig={hmac}&se={expiry}&skn={policy}` (see `sas`).
//!
//! | Operation | Request | Answer |
//! |---|---|---|
//! | [`send`](MessageQueue::send) | `POST /{partition queue}/messages`, body = the JSON text unchanged, `BrokerProperties: {"MessageId":..}`, custom properties as headers: `operation: "delivery"`, `Diagnostic-Id: "<correlation id>"`, and when traced `traceparent`, `tracestate` (W3C) | `201` |
//! | [`send`](MessageQueue::send), concurrent (`sender`) | the same `POST` with `Content-Type: application/vnd.microsoft.servicebus.json`, body = `[{"Body":..,"BrokerProperties":{"MessageId":..,"ContentType":"application/json"},"UserProperties":{"operation":..,..}},..]` (batch send, at most 192 KiB) | `201` for all |
//! | [`receive`](MessageQueue::receive) | `POST /{partition queue}/messages/head?timeout=3` (peek-lock, by each held partition's receiver) | `201` + body + `BrokerProperties` (`LockToken`, `SequenceNumber`, `DeliveryCount`, `MessageId`, `EnqueuedTimeUtc`, `LockedUntilUtc`) + `Location: {lock url}` + custom properties; `204` when nothing came within `N` s |
//! | [`complete`](MessageQueue::complete), [`dead_letter`](MessageQueue::dead_letter) | `DELETE {lock url}` | `200`; `404`/`410` when the lock is lost |
//! | [`abandon`](MessageQueue::abandon) | `PUT {lock url}` (unlock) | `200` |
//! | [`renew`](MessageQueue::renew) | `POST {lock url}` | `200` |
//! | [`depth`](MessageQueue::depth) | `GET /{partition queue}?api-version=2017-04` for each partition (management: an Atom entry) | `<d2p1:ActiveMessageCount>N</…>`, summed |
//!
//! The lock URL is the peek-lock answer's `Location`,
//! `https://{ns}.servicebus.windows.net/{queue}/messages/{sequence number or
//! message id}/{lock token}` (rebuilt from `SequenceNumber` and `LockToken`
//! if `Location` is missing); it is the [`LockToken`] handed to the
//! workflow, so any holder of the queue's key can settle it.
//!
//! The body is the message's JSON text byte for byte and `operation` is the
//! same application property the original Java ingestion service wrote, so
//! messages from either producer are read by either consumer. String
//! properties travel JSON-quoted (`"cancel"`), as the REST protocol wants;
//! unquoted values from other producers are read as they are.
//!
//! # Lock semantics
//!
//! A peek-locked message is invisible to other receivers until it is
//! completed (deleted), unlocked, or its lock expires (the queue's
//! `lockDuration`, PT5M for the reference implementation's queue); each
//! delivery raises `DeliveryCount`, and past `maxDeliveryCount` (10) the
//! service moves the message to its own dead-letter queue.
//!
//! - **receive**: the REST API hands out one message per request, from one
//!   queue. Each held partition's receiver long-polls its queue and passes
//!   what it locks to an inbox of at most 32 messages, which `receive`
//!   drains: up to `max`, waiting up to `wait` for the first, on time even
//!   for sub-second waits (see `receivers` for the locks of messages
//!   waiting there). A peek-lock in flight is never cancelled (a cancelled
//!   peek-lock may still lock a message nobody will see until its lock
//!   expires): the draining runs in its own task, and the messages it takes
//!   for a caller that went away are unlocked at once. (The transport does
//!   give up on a request that outlives its long-poll timeout by 30 s.)
//! - **abandon with a delay**: the REST unlock has no delay (nor does the
//!   service offer "abandon with visibility timeout"). The adapter keeps the
//!   lock: it renews it once right away (so a lost lock is reported to the
//!   caller), then a timer task renews it every half lock duration for as
//!   long as the delay lasts (retrying a failed renewal while the lock still
//!   holds) and unlocks it when the delay is over. Meanwhile `complete`,
//!   `renew` and `abandon` on that lock fail, as for a handed-back lock. The
//!   message thus keeps its identity, its sequence position and a delivery
//!   count maintained by the service (so `maxDeliveryCount` still applies),
//!   and nothing is duplicated. If the process stops meanwhile, the lock
//!   simply expires and the message comes back after at most the lock
//!   duration. The alternative, complete + re-send with
//!   `ScheduledEnqueueTimeUtc`, was rejected: the two steps are not atomic
//!   over REST (loss or duplicate), the service's delivery count restarts at
//!   1 (the service's own dead-lettering would never trigger) and the
//!   schedule has one-second resolution. While held, a message is locked at
//!   the service and so not counted by [`depth`](MessageQueue::depth),
//!   unlike the in-process queue's delayed messages. The lock duration is
//!   learnt from each peek-lock answer (`LockedUntilUtc` minus the service's
//!   `Date`).
//! - **dead_letter**: the REST API has no dead-letter operation, so the
//!   message is completed; the engine has already stored the dead letter
//!   and its reason in its own dead-letter store before calling this.
//! - **depth**: the runtime REST API has no count; the management `GET`
//!   returns the entity description, whose `ActiveMessageCount` is read with
//!   a targeted scan (no XML dependency). It needs a SAS rule with *Manage*
//!   rights on a real namespace (a Listen/Send-only rule gets `401`), and the
//!   service refreshes the count asynchronously, so it can lag by a moment.
//!   Microsoft documents it as messages "ready for delivery"; the double
//!   counts neither locked nor scheduled messages.
//!
//! # Traps of `azure_messaging_servicebus` 0.21 and how they are handled
//!
//! - It only ever addresses `https://{namespace}.servicebus.windows.net`.
//!   The adapter injects its own `azure_core::HttpClient` (`transport`) that
//!   redirects requests to [`ServiceBusConfig::endpoint`] and otherwise
//!   forwards them with azure_core's reqwest client.
//! - `peek_lock_message2` returns `Ok` whatever the status: `204` (empty
//!   queue) looks like a message with an empty body, and `401`/`5xx` look
//!   like messages too. The status is checked here: `201`/`200` is a
//!   message, `204` is none, anything else is an error.
//! - Its `BrokerProperties` struct has `i32` sequence numbers and fails the
//!   whole call when decoding fails, after the message was locked (the lock
//!   URL is then lost and the message is stuck until the lock expires). The
//!   transport hides the header from the crate and this module decodes it
//!   itself, every field optional and sequence numbers as `i64`.
//! - The crate cannot be given a timeout-less long poll safely: without
//!   `?timeout` the service waits 60 s. A timeout is always sent.
//! - Settling needs the crate's `PeekLockResponse`, which cannot be rebuilt
//!   from a lock URL. The adapter keeps the responses of the locks it holds
//!   (dropped when settled, and swept a minute after their lock expired)
//!   and settles through them; for a lock URL it does not hold (received by
//!   another instance) it signs and sends the same request itself, after
//!   checking that the URL is a lock URL of its own queue (the token never
//!   goes to a host named by a caller).
//! - Header names are lower-cased on the way out (`Diagnostic-Id` is stored
//!   as `diagnostic-id`): the crate's `HeaderName` lower-cases, and so does
//!   the HTTP/1 stack. Readers here look names up case-insensitively; a
//!   .NET consumer reading `ApplicationProperties["Diagnostic-Id"]` would not
//!   find it (`operation` is lower case anyway).
//! - azure_core's reqwest client has no request timeout and keeps no idle
//!   connections (a new TLS connection per request); the transport adds a
//!   deadline (long-poll timeout + 30 s) and sends through its own pooled
//!   client, so connections are reused.
//! - azure_core 0.21 prints the `Authorization` header when a `Request` is
//!   `Debug`-formatted (its redaction test is inverted): requests are never
//!   logged, and [`ServiceBusConfig`]'s `Debug` hides the key.

mod config;
mod deadletters;
#[cfg(feature = "test-support")]
pub mod double;
mod receivers;
mod sas;
mod sender;
mod transport;
mod wire;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::auth::Secret;
use azure_core::error::{Error as AzureError, ErrorKind};
use azure_core::headers::{self, Headers};
use azure_core::{HttpClient, Method, Request, Url};
use azure_messaging_servicebus::service_bus::{PeekLockResponse, QueueClient};
use chrono::Utc;
use dronedelivery_actors::domain::ownership::{partition_of, Fence, PartitionId};
use dronedelivery_actors::ports::{
    DeadLetter, LockToken, MessageQueue, QueueMessage, ReceivedMessage, StoreError, StoreResult,
};
use tokio::time::Instant;

use crate::adapters::batch::BatchConfig;

use self::config::invalid;
pub use self::config::{ServiceBusConfig, MAX_PARTITIONS};
use self::receivers::Receivers;
use self::sender::Sender;
use self::transport::Transport;
use self::wire::{
    describe, failed, header, lock_duration, parse_active_message_count, property_value, status_of,
    ReceivedProperties,
};

/// Application property carrying the queue operation.
const OPERATION: &str = "operation";
/// Application property carrying the correlation id (the original's
/// Application Insights `Diagnostic-Id`).
const DIAGNOSTIC_ID: &str = "Diagnostic-Id";
/// Application properties carrying the W3C trace context.
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
/// Lifetime of the SAS tokens the adapter signs itself.
const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// How long after its expected expiry a held lock is forgotten.
const SWEEP_GRACE: Duration = Duration::from_secs(60);
/// After the key was refused the queue description (no Manage right), how
/// long before the depth is asked for again (the key may have been changed).
const DEPTH_RECHECK: Duration = Duration::from_secs(600);

/// The settle operations on a lock URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockOp {
    /// `DELETE`: complete.
    Complete,
    /// `PUT`: unlock (abandon).
    Unlock,
    /// `POST`: renew.
    Renew,
}

impl LockOp {
    fn method(self) -> Method {
        match self {
            Self::Complete => Method::Delete,
            Self::Unlock => Method::Put,
            Self::Renew => Method::Post,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Unlock => "unlock",
            Self::Renew => "renew lock",
        }
    }
}

/// A lock this adapter holds.
struct Held {
    /// The crate's handle to settle it; `None` when the answer had no
    /// `Location` (the lock URL was rebuilt from the broker properties).
    peek: Option<PeekLockResponse>,
    /// For logs.
    message_id: String,
    /// The queue's lock duration, as learnt from the peek-lock answer.
    lock_duration: Duration,
    /// When the lock is expected to expire (local clock).
    expires: Mutex<Instant>,
    /// Handed back by an abandon with a delay: a timer task owns it now.
    parked: AtomicBool,
}

impl Held {
    fn expires(&self) -> Instant {
        *self.expires.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn extend(&self) {
        *self.expires.lock().unwrap_or_else(|p| p.into_inner()) =
            Instant::now() + self.lock_duration;
    }
}

/// The Service Bus queue. Cheap to share: hold it in an `Arc`.
pub struct ServiceBusQueue {
    inner: Arc<Inner>,
}

impl fmt::Debug for ServiceBusQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBusQueue")
            .field("base", &self.inner.base)
            .field("queues", &self.inner.entities.len())
            .field("queue", &self.inner.entities.first().map(|e| &e.name))
            .finish_non_exhaustive()
    }
}

struct Inner {
    http: Arc<dyn HttpClient>,
    /// `https://{namespace}.servicebus.windows.net`: the URI requests are
    /// addressed and signed for (the transport redirects them).
    base: String,
    /// One queue per partition, indexed by partition.
    entities: Vec<Entity>,
    /// Partition of each queue, by lower-cased name (entity names are
    /// case-insensitive at the service).
    by_name: HashMap<String, PartitionId>,
    policy_name: String,
    key: Secret,
    /// Locks held, by lock URL.
    locks: Mutex<HashMap<String, Arc<Held>>>,
    /// The receivers of the partitions held, and what they received ahead.
    receivers: Receivers,
    /// Since when the key is known not to be allowed to read the depth.
    depth_denied: Mutex<Option<Instant>>,
    /// Whether that was logged (once per process).
    depth_denied_logged: AtomicBool,
    /// The outcome of the latest request to the service, for `ping` when
    /// the depth cannot be read.
    last_outcome: Mutex<Option<Result<(), String>>>,
    /// How concurrent sends are grouped into batch sends (`max` 1: never).
    send_batch: BatchConfig,
}

/// The queue of one partition.
struct Entity {
    name: String,
    client: QueueClient,
    /// Its batch sender, started on the first send (a runtime is needed).
    sender: OnceLock<Sender>,
}

impl ServiceBusQueue {
    /// The batch sender of `partition`'s queue, started on first use.
    fn sender(&self, partition: PartitionId) -> &Sender {
        self.inner.entity(partition).sender.get_or_init(|| {
            sender::spawn(
                Arc::downgrade(&self.inner),
                partition,
                self.inner.send_batch,
            )
        })
    }

    fn partitions(&self) -> u32 {
        // At most MAX_PARTITIONS entities.
        u32::try_from(self.inner.entities.len()).unwrap_or(1)
    }

    /// A queue adapter for `cfg`. Nothing is sent until the first call.
    ///
    /// # Errors
    /// Invalid settings (namespace, queue name, endpoint, missing key).
    pub fn new(cfg: ServiceBusConfig) -> Result<Arc<Self>, StoreError> {
        Self::with_send_batch(cfg, Self::default_send_batch())
    }

    /// How sends are grouped unless told otherwise: up to 64 messages per
    /// batch send, up to 4 requests in flight per queue, no waiting on
    /// purpose (see `sender`).
    pub fn default_send_batch() -> BatchConfig {
        BatchConfig {
            max: 64,
            in_flight: 4,
            ..BatchConfig::default()
        }
    }

    /// A queue adapter for `cfg` whose concurrent sends to one queue are
    /// grouped as `batch` says ([`BatchConfig::unbatched`]: one request per
    /// message, as the engine's `--send-batch-max 1`).
    ///
    /// # Errors
    /// As [`ServiceBusQueue::new`].
    pub fn with_send_batch(
        cfg: ServiceBusConfig,
        batch: BatchConfig,
    ) -> Result<Arc<Self>, StoreError> {
        let endpoint = cfg.validate()?;
        Self::with_transport(cfg, Transport::new(endpoint), batch)
    }

    /// The same adapter opening a connection per request, as azure_core's
    /// own client does, and sending each message alone: only to measure
    /// what connection reuse saves.
    ///
    /// # Errors
    /// As [`ServiceBusQueue::new`].
    #[cfg(feature = "test-support")]
    pub fn unpooled(cfg: ServiceBusConfig) -> Result<Arc<Self>, StoreError> {
        let endpoint = cfg.validate()?;
        Self::with_transport(cfg, Transport::unpooled(endpoint), BatchConfig::unbatched())
    }

    fn with_transport(
        cfg: ServiceBusConfig,
        transport: Transport,
        send_batch: BatchConfig,
    ) -> Result<Arc<Self>, StoreError> {
        let http: Arc<dyn HttpClient> = Arc::new(transport);
        let mut entities = Vec::new();
        let mut by_name = HashMap::new();
        for partition in 0..cfg.partitions {
            let name = cfg.partition_queue(partition);
            let client = QueueClient::new(
                Arc::clone(&http),
                cfg.namespace.clone(),
                name.clone(),
                cfg.policy_name.clone(),
                cfg.policy_key.clone(),
            )
            .map_err(invalid)?;
            by_name.insert(name.to_ascii_lowercase(), partition);
            entities.push(Entity {
                name,
                client,
                sender: OnceLock::new(),
            });
        }
        Ok(Arc::new(Self {
            inner: Arc::new(Inner {
                http,
                base: format!("https://{}.servicebus.windows.net", cfg.namespace),
                entities,
                by_name,
                policy_name: cfg.policy_name,
                key: sas::signing_secret(&cfg.policy_key),
                locks: Mutex::new(HashMap::new()),
                receivers: Receivers::new(),
                depth_denied: Mutex::new(None),
                depth_denied_logged: AtomicBool::new(false),
                last_outcome: Mutex::new(None),
                send_batch,
            }),
        }))
    }
}

impl Inner {
    fn locks(&self) -> MutexGuard<'_, HashMap<String, Arc<Held>>> {
        // Every critical section is one map operation: a poisoned lock
        // cannot hold a half-made change.
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn held(&self, lock: &str) -> Option<Arc<Held>> {
        self.locks().get(lock).cloned()
    }

    fn forget(&self, lock: &str) {
        self.locks().remove(lock);
    }

    fn sweep(&self) {
        let now = Instant::now();
        self.locks()
            .retain(|_, h| h.parked.load(Ordering::Acquire) || h.expires() + SWEEP_GRACE > now);
    }

    fn token(&self, partition: PartitionId) -> azure_core::Result<String> {
        sas::token(
            &format!("{}/{}", self.base, self.entity(partition).name),
            &self.policy_name,
            &self.key,
            TOKEN_TTL,
        )
    }

    /// The queue of `partition` (partitions beyond the count fall back to
    /// partition 0's queue; callers only pass partitions they computed).
    fn entity(&self, partition: PartitionId) -> &Entity {
        self.entities
            .get(partition as usize)
            .unwrap_or(&self.entities[0])
    }

    /// A lock URL of one of this adapter's queues, re-rooted on
    /// [`Inner::base`], with the partition of its queue; `None` for anything
    /// else, so a signed request never goes where a token says.
    fn lock_url(&self, lock: &str) -> Option<(Url, PartitionId)> {
        let url = Url::parse(lock).ok()?;
        let path = url.path();
        // `/{queue}/messages/{id}/{token}`, where the queue name may hold `/`.
        let (rest, token) = path.rsplit_once('/')?;
        let (rest, id) = rest.rsplit_once('/')?;
        let (queue, messages) = rest.rsplit_once('/')?;
        let queue = queue.strip_prefix('/')?;
        // A lock of the queue's dead-letter subqueue is the queue's too.
        let queue = match queue.rsplit_once('/') {
            Some((q, sub)) if sub.eq_ignore_ascii_case(deadletters::SUBQUEUE) => q,
            _ => queue,
        };
        if !messages.eq_ignore_ascii_case("messages")
            || id.is_empty()
            || token.is_empty()
            || id == "head"
        {
            return None;
        }
        let partition = *self.by_name.get(&queue.to_ascii_lowercase())?;
        Some((Url::parse(&format!("{}{path}", self.base)).ok()?, partition))
    }

    /// Sends one settle request for `lock`, through the crate when the lock
    /// is held here, else directly.
    async fn lock_request(
        &self,
        lock: &str,
        held: Option<&Held>,
        op: LockOp,
    ) -> azure_core::Result<()> {
        if let Some(peek) = held.and_then(|h| h.peek.as_ref()) {
            return match op {
                LockOp::Complete => peek.delete_message().await.map(|_| ()),
                LockOp::Unlock => peek.unlock_message().await,
                LockOp::Renew => peek.renew_message_lock().await,
            };
        }
        let (url, partition) = self.lock_url(lock).ok_or_else(|| {
            AzureError::message(ErrorKind::DataConversion, "not a lock URL of these queues")
        })?;
        let mut request = Request::new(url, op.method());
        request.insert_header(headers::AUTHORIZATION, self.token(partition)?);
        request.insert_header(headers::CONTENT_LENGTH, "0");
        self.http
            .execute_request_check_status(&request)
            .await
            .map(|_| ())
    }

    /// A settle operation asked for by the workflow, with the bookkeeping
    /// of held locks.
    async fn settle(&self, lock: &str, op: LockOp) -> StoreResult<()> {
        let held = self.held(lock);
        if held
            .as_ref()
            .is_some_and(|h| h.parked.load(Ordering::Acquire))
        {
            return Err(StoreError::Unavailable(
                "message lock already handed back (abandoned with a delay)".into(),
            ));
        }
        let result = self.lock_request(lock, held.as_deref(), op).await;
        match &result {
            Ok(()) => self.note(Ok(())),
            // A lost lock says nothing about the service's health.
            Err(e) if matches!(status_of(e), Some(404 | 410)) => {}
            Err(e) => self.note(Err(describe(e))),
        }
        match &result {
            Ok(()) if op == LockOp::Renew => {
                if let Some(h) = &held {
                    h.extend();
                }
            }
            Ok(()) => self.forget(lock),
            Err(e) if matches!(status_of(e), Some(404 | 410)) => self.forget(lock),
            Err(_) => {}
        }
        result.map_err(|e| failed(op.as_str(), &e))
    }

    /// Keeps a parked lock alive for `delay`, then unlocks it.
    async fn hold_then_unlock(&self, lock: String, held: Arc<Held>, delay: Duration) {
        let until = Instant::now() + delay;
        loop {
            let expires = held.expires();
            let renew_at = expires
                .checked_sub(held.lock_duration / 2)
                .unwrap_or(expires);
            if until <= renew_at {
                break;
            }
            tokio::time::sleep_until(renew_at).await;
            let retry = held.lock_duration / 8;
            match self
                .lock_request(&lock, Some(held.as_ref()), LockOp::Renew)
                .await
            {
                Ok(()) => held.extend(),
                // A passing failure: try again while the lock still holds.
                Err(e)
                    if !matches!(status_of(&e), Some(404 | 410))
                        && Instant::now() + retry < held.expires() =>
                {
                    tracing::debug!(message_id = %held.message_id, error = %describe(&e),
                        "could not renew the lock of a delayed message; retrying");
                    tokio::time::sleep(retry).await;
                }
                Err(e) => {
                    tracing::warn!(message_id = %held.message_id, error = %describe(&e),
                        "lost the lock of a delayed message; the service redelivers it when the lock expires");
                    self.forget(&lock);
                    return;
                }
            }
        }
        tokio::time::sleep_until(until).await;
        if let Err(e) = self
            .lock_request(&lock, Some(held.as_ref()), LockOp::Unlock)
            .await
        {
            tracing::warn!(message_id = %held.message_id, error = %describe(&e),
                "could not unlock a delayed message; it comes back when its lock expires");
        }
        self.forget(&lock);
    }

    /// One peek-lock request on `partition`'s queue.
    async fn peek(
        &self,
        partition: PartitionId,
        timeout_secs: u64,
    ) -> StoreResult<Option<ReceivedMessage>> {
        let entity = self.entity(partition);
        let response = entity
            .client
            .peek_lock_message2(Some(Duration::from_secs(timeout_secs)))
            .await
            .map_err(|e| failed("peek-lock", &e));
        let response = self.outcome(response)?;
        let status = u16::from(*response.status());
        match status {
            200 | 201 => {}
            204 => return Ok(None),
            401 | 403 => {
                return self.outcome(Err(StoreError::Unavailable(format!(
                    "Service Bus peek-lock failed: HTTP {status}: not authorized \
                     (check the shared access policy name, key and Listen right)"
                ))))
            }
            404 => return self.outcome(Err(missing_queue(&entity.name, self.entities.len()))),
            _ => {
                let detail: String = response.body().chars().take(200).collect();
                return self.outcome(Err(StoreError::Unavailable(format!(
                    "Service Bus peek-lock failed: HTTP {status}: {detail}"
                ))));
            }
        }
        let Ok(headers) = response.custom_properties::<Headers>();
        let props = deadletters::broker_properties(&headers);
        let lock_url = self
            .lock_url_of(&headers, &props, &entity.name)
            .ok_or_else(|| {
                StoreError::Corrupt(
                    "a peek-locked message came without Location nor LockToken; \
                     it returns when its lock expires"
                        .into(),
                )
            })?;
        let fallback_id = props
            .sequence_number
            .map_or_else(|| lock_url.clone(), |s| s.to_string());
        let message = message_of(&headers, &props, response.body(), fallback_id);
        let message_id = message.message_id.clone();
        let duration = lock_duration(
            props.locked_until_utc.as_deref(),
            headers.get_optional_str(&headers::DATE),
        );
        let has_location = !header(&headers, "Location").unwrap_or_default().is_empty();
        let held = Arc::new(Held {
            peek: has_location.then_some(response),
            message_id,
            lock_duration: duration,
            expires: Mutex::new(Instant::now() + duration),
            parked: AtomicBool::new(false),
        });
        self.locks().insert(lock_url.clone(), held);
        Ok(Some(ReceivedMessage {
            message,
            lock: LockToken(lock_url),
            delivery_count: props.delivery_count.unwrap_or(1).max(1),
            partition: Some(partition),
        }))
    }
}

impl Inner {
    /// The lock URL of a peek-lock answer on `entity_path` (a queue, or its
    /// dead-letter subqueue): its `Location`, else rebuilt from
    /// `SequenceNumber` and `LockToken`; `None` when it has neither.
    fn lock_url_of(
        &self,
        headers: &Headers,
        props: &ReceivedProperties,
        entity_path: &str,
    ) -> Option<String> {
        if let Some(location) = header(headers, "Location").filter(|l| !l.is_empty()) {
            return Some(location.to_owned());
        }
        match (props.sequence_number, &props.lock_token) {
            (Some(seq), Some(token)) => Some(format!(
                "{}/{entity_path}/messages/{seq}/{token}",
                self.base
            )),
            _ => None,
        }
    }

    /// Notes the outcome of a request for [`Inner::ping`], and passes it on.
    fn outcome<T>(&self, result: StoreResult<T>) -> StoreResult<T> {
        self.note(match &result {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        });
        result
    }

    fn note(&self, outcome: Result<(), String>) {
        *self.last_outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
    }

    /// Whether the depth may be asked for now (not refused lately).
    fn depth_allowed(&self) -> bool {
        let denied = self.depth_denied.lock().unwrap_or_else(|p| p.into_inner());
        denied.is_none_or(|at| at.elapsed() >= DEPTH_RECHECK)
    }

    /// The key was refused the queue description: the depth is unknown.
    fn deny_depth(&self) {
        *self.depth_denied.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        if !self.depth_denied_logged.swap(true, Ordering::AcqRel) {
            tracing::info!(
                "the Service Bus key may not read queue descriptions (no Manage right): \
                 the queue depth is unknown (no dronedelivery_queue_depth value) and \
                 asked for again every 10 minutes; KEDA reads it with its own credentials"
            );
        }
    }

    /// `ActiveMessageCount` of `partition`'s queue (management API), or
    /// `None` when the key may not read it.
    async fn active_count(&self, partition: PartitionId) -> StoreResult<Option<u64>> {
        let name = &self.entity(partition).name;
        let url =
            Url::parse(&format!("{}/{name}?api-version=2017-04", self.base)).map_err(invalid)?;
        let mut request = Request::new(url, Method::Get);
        let token = self.token(partition).map_err(|e| failed("sign", &e))?;
        request.insert_header(headers::AUTHORIZATION, token);
        let response = self
            .http
            .execute_request(&request)
            .await
            .map_err(|e| failed("queue description (depth)", &e));
        let (status, _, body) = match response {
            Ok(response) => response.deconstruct(),
            Err(e) => return self.outcome(Err(e)),
        };
        let body = body
            .collect()
            .await
            .map_err(|e| failed("queue description (depth)", &e))?;
        let body = String::from_utf8_lossy(&body);
        let status = u16::from(status);
        match status {
            200..=299 => self.note(Ok(())),
            // The key is valid but lacks the right ("'Manage' claim(s) are
            // required"); a wrong key or an expired token is an error.
            401 | 403 if body.to_ascii_lowercase().contains("claim") => return Ok(None),
            404 => return Err(missing_queue(name, self.entities.len())),
            _ => {
                let detail: String = body.chars().take(200).collect();
                return self.outcome(Err(StoreError::Unavailable(format!(
                    "Service Bus queue description (depth) failed: HTTP {status}: {detail}"
                ))));
            }
        }
        parse_active_message_count(&body).map(Some).ok_or_else(|| {
            StoreError::Unavailable(format!(
                "Service Bus queue description of '{name}' has no ActiveMessageCount \
                 (does the queue exist?)"
            ))
        })
    }
}

/// The queue message a received answer carries: the body as it is, the
/// `MessageId` (else `fallback_id`), the `operation` and correlation id
/// properties.
fn message_of(
    headers: &Headers,
    props: &ReceivedProperties,
    body: String,
    fallback_id: String,
) -> QueueMessage {
    QueueMessage {
        message_id: props
            .message_id
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or(fallback_id),
        operation: header(headers, OPERATION)
            .map(property_value)
            .unwrap_or_default(),
        body,
        correlation_id: header(headers, DIAGNOSTIC_ID)
            .map(property_value)
            .or_else(|| props.correlation_id.clone()),
        enqueued_at: deadletters::enqueued_at(props),
        traceparent: header(headers, TRACEPARENT).map(property_value),
        tracestate: header(headers, TRACESTATE).map(property_value),
        expedited: false,
    }
}

/// The error for a partition's queue that does not exist.
fn missing_queue(name: &str, partitions: usize) -> StoreError {
    StoreError::Unavailable(format!(
        "Service Bus queue '{name}' does not exist: with {partitions} partitions the \
         namespace needs one queue per partition (the queue, then QUEUE-1 to \
         QUEUE-{}); create them, or run with --partitions 1",
        partitions.saturating_sub(1)
    ))
}

#[async_trait]
impl MessageQueue for ServiceBusQueue {
    fn backend(&self) -> &'static str {
        "servicebus"
    }

    fn partitioned(&self) -> bool {
        true
    }

    /// Concurrent sends to one queue share batch sends (see `sender`);
    /// each is answered once the request carrying it was.
    async fn send(&self, message: QueueMessage) -> StoreResult<()> {
        let partition = partition_of(&message.routing_key(), self.partitions());
        let sent = if self.inner.send_batch.max <= 1 {
            self.inner.send_one(partition, &message).await
        } else {
            self.sender(partition).submit(message).await
        };
        self.inner.outcome(sent)
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
        let held: HashSet<PartitionId> = from
            .iter()
            .map(|f| f.partition)
            .filter(|p| *p < self.partitions())
            .collect();
        Receivers::reconcile(&self.inner, &held);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let result = inner.take(&held, max, wait).await;
            if let Err(Ok(orphans)) = tx.send(result) {
                // The caller stopped waiting: hand the messages back now
                // rather than when their locks expire.
                for r in orphans {
                    let _ = inner.settle(&r.lock.0, LockOp::Unlock).await;
                }
            }
        });
        rx.await
            .map_err(|_| StoreError::Unavailable("Service Bus receive task failed".into()))?
    }

    async fn complete(&self, lock: &LockToken) -> StoreResult<()> {
        self.inner.settle(&lock.0, LockOp::Complete).await
    }

    async fn abandon(&self, lock: &LockToken, delay: Duration) -> StoreResult<()> {
        if delay.is_zero() {
            return self.inner.settle(&lock.0, LockOp::Unlock).await;
        }
        let Some(held) = self.inner.held(&lock.0) else {
            return Err(StoreError::Unavailable(
                "abandon with a delay needs a lock received by this adapter \
                 (this one is unknown, settled or long expired)"
                    .into(),
            ));
        };
        if held.parked.swap(true, Ordering::AcqRel) {
            return Err(StoreError::Unavailable(
                "message lock already handed back (abandoned with a delay)".into(),
            ));
        }
        // Renew once now: a lost lock is reported to the caller, and the
        // lock's clock restarts from a known point.
        if let Err(e) = self
            .inner
            .lock_request(&lock.0, Some(held.as_ref()), LockOp::Renew)
            .await
        {
            if matches!(status_of(&e), Some(404 | 410)) {
                self.inner.forget(&lock.0);
            } else {
                held.parked.store(false, Ordering::Release);
            }
            return Err(failed("abandon (renew lock)", &e));
        }
        held.extend();
        let inner = Arc::clone(&self.inner);
        let lock = lock.0.clone();
        tokio::spawn(async move { inner.hold_then_unlock(lock, held, delay).await });
        Ok(())
    }

    async fn dead_letter(&self, lock: &LockToken, reason: &str) -> StoreResult<()> {
        // No dead-letter operation in the REST API: complete. The engine's
        // dead-letter store already has the message and the reason.
        self.inner.settle(&lock.0, LockOp::Complete).await?;
        tracing::info!(%reason, "dead-lettered message completed on Service Bus");
        Ok(())
    }

    async fn renew(&self, lock: &LockToken) -> StoreResult<()> {
        self.inner.settle(&lock.0, LockOp::Renew).await
    }

    async fn depth(&self) -> StoreResult<Option<u64>> {
        if !self.inner.depth_allowed() {
            return Ok(None);
        }
        let counts = futures::future::try_join_all(
            (0..self.partitions()).map(|p| self.inner.active_count(p)),
        )
        .await?;
        if counts.iter().any(Option::is_none) {
            self.inner.deny_depth();
            return Ok(None);
        }
        Ok(Some(counts.into_iter().flatten().sum()))
    }

    /// The depth when the key may read it; otherwise the outcome of the
    /// latest request (receive, send, settle): a Listen/Send key has no
    /// request that only checks, and the receivers ask every few seconds.
    async fn ping(&self) -> StoreResult<()> {
        if self.depth().await?.is_some() {
            return Ok(());
        }
        let last = self
            .inner
            .last_outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match last {
            Some(Err(e)) => Err(StoreError::Unavailable(e)),
            Some(Ok(())) | None => Ok(()),
        }
    }

    async fn close(&self) {
        self.inner.receivers.close(&self.inner).await;
    }

    async fn dead_letters(&self, max: usize) -> StoreResult<Vec<DeadLetter>> {
        self.inner.dead_letters(max).await
    }

    async fn replay_dead_letter(&self, id: &str) -> StoreResult<Option<QueueMessage>> {
        let Some(locked) = self.inner.find_dead_letter(id).await? else {
            return Ok(None);
        };
        let mut message = locked.letter.message.clone();
        message.enqueued_at = Utc::now();
        if let Err(e) = self.send(message.clone()).await {
            self.inner.release_dead_letter(locked).await;
            return Err(e);
        }
        if let Err(e) = self.inner.remove_dead_letter(&locked).await {
            // Sent already: the workflow absorbs the copy a second replay
            // would send.
            tracing::warn!(dead_letter = %id, error = %e,
                "replayed a Service Bus dead letter but could not remove it from the dead-letter queue");
        }
        Ok(Some(message))
    }
}

#[cfg(test)]
mod tests {
    use super::wire::{parse_http_date, quoted, ReceivedProperties};
    use super::*;

    #[test]
    fn reads_the_active_count_of_an_entity_description() {
        let xml = r#"<entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml"><QueueDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><MessageCount>9</MessageCount><CountDetails xmlns:d2p1="http://schemas.microsoft.com/netservices/2011/06/servicebus"><d2p1:ActiveMessageCount>7</d2p1:ActiveMessageCount><d2p1:DeadLetterMessageCount>2</d2p1:DeadLetterMessageCount></CountDetails></QueueDescription></content></entry>"#;
        assert_eq!(parse_active_message_count(xml), Some(7));
        assert_eq!(
            parse_active_message_count("<ActiveMessageCount> 3 </ActiveMessageCount>"),
            Some(3)
        );
        assert_eq!(
            parse_active_message_count(
                r#"<feed xmlns="http://www.w3.org/2005/Atom"><title type="text">Publicly Listed Services</title></feed>"#
            ),
            None
        );
        assert_eq!(parse_active_message_count("<a:ActiveMessageCount/>"), None);
    }

    #[test]
    fn property_values_are_unquoted() {
        assert_eq!(property_value("\"cancel\""), "cancel");
        assert_eq!(property_value("cancel"), "cancel");
        assert_eq!(property_value(r#""a\"b""#), "a\"b");
        assert_eq!(quoted("|root.x."), "\"|root.x.\"");
        assert_eq!(quoted("é😀"), r#""\u00e9\ud83d\ude00""#);
        assert_eq!(property_value(&quoted("é😀\n")), "é😀\n");
    }

    #[test]
    fn decodes_broker_properties_with_large_sequence_numbers() {
        let raw = r#"{"DeliveryCount":3,"EnqueuedSequenceNumber":56294995342131201,"EnqueuedTimeUtc":"Wed, 08 May 2019 20:00:00 GMT","LockToken":"7da9cfd5-40d5-4bb1-8d64-ec5a52e1c547","LockedUntilUtc":"Wed, 08 May 2019 20:05:00 GMT","MessageId":"m1","SequenceNumber":56294995342131201,"State":"Active","TimeToLive":922337203685.47754}"#;
        let p: ReceivedProperties = serde_json::from_str(raw).unwrap();
        assert_eq!(p.sequence_number, Some(56_294_995_342_131_201));
        assert_eq!(p.delivery_count, Some(3));
        assert_eq!(
            lock_duration(
                p.locked_until_utc.as_deref(),
                Some("Wed, 08 May 2019 20:00:00 GMT")
            ),
            Duration::from_secs(300)
        );
        assert!(p
            .enqueued_time_utc
            .as_deref()
            .and_then(parse_http_date)
            .is_some());
    }

    #[test]
    fn lock_urls_are_checked_and_rerooted() {
        let q = ServiceBusQueue::new(ServiceBusConfig {
            namespace: "ns".into(),
            queue: "deliveries".into(),
            policy_name: "p".into(),
            policy_key: "k".into(),
            partitions: 3,
            endpoint: Some("http://127.0.0.1:9".into()),
        })
        .unwrap();
        let url = |lock: &str| q.inner.lock_url(lock).map(|(u, p)| (u.to_string(), p));
        assert_eq!(
            url("http://127.0.0.1:9/deliveries/messages/31/7da9cfd5"),
            Some((
                "https://ns.servicebus.windows.net/deliveries/messages/31/7da9cfd5".into(),
                0
            ))
        );
        assert_eq!(
            url("http://127.0.0.1:9/Deliveries-2/messages/31/7da9cfd5").map(|(_, p)| p),
            Some(2),
            "entity names are case-insensitive"
        );
        for bad in [
            "https://evil.example/other/messages/1/x",
            "https://ns.servicebus.windows.net/deliveries-3/messages/1/x",
            "https://ns.servicebus.windows.net/deliveries/messages/head",
            "https://ns.servicebus.windows.net/deliveries/messages/1/x/y",
            "https://ns.servicebus.windows.net/deliveries/peek/1/x",
            "https://ns.servicebus.windows.net/deliveries/messages//x",
            "not a url",
        ] {
            assert!(url(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn partition_zero_keeps_the_queue_name() {
        let cfg = ServiceBusConfig {
            namespace: "ns".into(),
            queue: "deliveries".into(),
            policy_name: "p".into(),
            policy_key: "k".into(),
            partitions: 16,
            endpoint: None,
        };
        assert_eq!(cfg.partition_queue(0), "deliveries");
        assert_eq!(cfg.partition_queue(15), "deliveries-15");
        assert!(ServiceBusQueue::new(ServiceBusConfig {
            partitions: 0,
            ..cfg.clone()
        })
        .is_err());
        assert!(ServiceBusQueue::new(ServiceBusConfig {
            partitions: MAX_PARTITIONS + 1,
            ..cfg
        })
        .is_err());
    }

    #[test]
    fn settings_are_validated_and_the_key_is_not_printed() {
        let good = ServiceBusConfig {
            namespace: "ns".into(),
            queue: "q".into(),
            policy_name: "p".into(),
            policy_key: "supersecret".into(),
            partitions: 1,
            endpoint: None,
        };
        assert!(!format!("{good:?}").contains("supersecret"));
        assert!(ServiceBusQueue::new(good.clone()).is_ok());
        let bad_ns = ServiceBusConfig {
            namespace: "a.b".into(),
            ..good.clone()
        };
        assert!(ServiceBusQueue::new(bad_ns).is_err());
        let bad_ep = ServiceBusConfig {
            endpoint: Some("http://h/x".into()),
            ..good.clone()
        };
        assert!(ServiceBusQueue::new(bad_ep).is_err());
        let no_key = ServiceBusConfig {
            policy_key: String::new(),
            ..good
        };
        assert!(ServiceBusQueue::new(no_key).is_err());
    }
}
