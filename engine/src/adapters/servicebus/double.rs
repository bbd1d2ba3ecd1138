//! A local double of the Azure Service Bus REST API, for tests (Azure
//! itself is not always reachable, and Microsoft's emulator only speaks
//! AMQP). Test support: compiled only with the engine's `test-support`
//! feature, never part of the `dronedelivery` binary.
//!
//! [`spawn_double`] serves, on `127.0.0.1`, the REST endpoints the
//! [`ServiceBusQueue`](super::ServiceBusQueue) adapter uses, for any queue
//! name (queues spring into existence on first use; names are
//! case-insensitive, as on the service), with the service's semantics:
//!
//! - `POST /{queue}/messages`: send. Body kept byte for byte; the
//!   `BrokerProperties` header (JSON) gives `MessageId` (else a fresh one)
//!   and optionally `ScheduledEnqueueTimeUtc` (RFC 1123 or RFC 2822: the
//!   message stays invisible until then), and every non-standard header is a
//!   custom property, echoed back verbatim on receive. `201 Created`.
//!   With `Content-Type: application/vnd.microsoft.servicebus.json` it is a
//!   **batch send**: a JSON array of `{"Body": "...", "BrokerProperties":
//!   {...}, "UserProperties": {...}}`, enqueued all together or, when any
//!   message is refused, not at all (`400`); a batch over
//!   [`MAX_BATCH_BYTES`] is refused `403`, as the service refuses one over
//!   the namespace's message size. `UserProperties` are delivered as a
//!   single send's custom properties are (string values JSON-quoted).
//! - `POST /{queue}/messages/head?timeout=N`: peek-lock the oldest
//!   available message (FIFO by sequence number, an unlocked message keeps
//!   its place). `201` with the body, `BrokerProperties` (`DeliveryCount`,
//!   `EnqueuedSequenceNumber`, `EnqueuedTimeUtc`, `LockToken`,
//!   `LockedUntilUtc`, `MessageId`, `SequenceNumber`, `State`,
//!   `TimeToLive`, plus what the sender set), `Location: {lock url}` and the
//!   custom properties; long-polls up to `N` seconds (60 when absent) and
//!   answers `204 No Content` when nothing came.
//! - `DELETE /{queue}/messages/head?timeout=N`: receive-and-delete (`200`).
//! - `DELETE|PUT|POST /{queue}/messages/{sequence number or message id}/{lock token}`:
//!   complete, unlock, renew (`200`). An unknown, settled or expired lock
//!   answers `410 Gone`; a lock of another message `404`.
//! - The same receive and settle requests on `/{queue}/$DeadLetterQueue/…`:
//!   the queue's **dead-letter subqueue**. Messages arrive there past the
//!   queue's `max_delivery_count` (a lock released after the last delivery:
//!   `DeadLetterReason` `MaxDeliveryCountExceeded`) and, when
//!   `dead_lettering_on_message_expiration` is on, when their time to live
//!   runs out (`TTLExpiredException`); the reason and a description travel
//!   as the custom properties `DeadLetterReason` and
//!   `DeadLetterErrorDescription`, as on the service. Sending to it is
//!   refused (`400`).
//! - `GET /{queue}?api-version=...`: the management entity description (an
//!   Atom entry) with `CountDetails` (`ActiveMessageCount` = messages ready
//!   for delivery: neither locked nor scheduled; `DeadLetterMessageCount`).
//!
//! Locks last `lock_duration`; an expired or unlocked lock makes the message
//! available again and its next delivery has `DeliveryCount + 1`. A message
//! lives for its `TimeToLive` (a `BrokerProperties` field, in seconds) or
//! the queue's `default_time_to_live`; once expired it is never delivered
//! again: dead-lettered or dropped, as the queue is set up. A message that
//! is locked when it expires finishes that delivery first.
//!
//! Every request must carry `Authorization: SharedAccessSignature ...`
//! signed with one of the configured policies: HMAC-SHA256 over
//! `sr + "\n" + se` (computed with `azure_core::hmac::hmac_sha256`),
//! checked along with the policy name, the expiry and that the signed
//! resource's path covers the request path; then the policy's **rights**:
//! sending needs *Send*, receiving and settling *Listen*, the management
//! description *Manage* (which includes the other two). Otherwise `401` with
//! the service's XML error body (`'Listen' claim(s) are required…`). The
//! default policies ([`DoubleConfig::new`]) are the namespace's
//! `RootManageSharedAccessKey` (Manage) and least-privilege rules:
//! [`LISTEN_SEND_POLICY`], [`SEND_POLICY`], [`LISTEN_POLICY`].
//! Sessions, duplicate detection and size quotas (except a batch's size)
//! are not modelled.
//!
//! The double also runs as its own process (`cargo run -p
//! dronedelivery-engine --example servicebus-double -- --listen ADDR`),
//! which prints the settings for each policy.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::sender::BATCH_CONTENT_TYPE;
use super::{sas, ServiceBusConfig};

/// Namespace name to put in a [`ServiceBusConfig`] aimed at the double (it
/// only appears in signed resource URIs).
pub const DOUBLE_NAMESPACE: &str = "double";
/// The namespace's own policy (Manage, hence Listen and Send too).
pub const DOUBLE_POLICY_NAME: &str = "RootManageSharedAccessKey";
/// Its key (a test value).
pub const DOUBLE_POLICY_KEY: &str = "ZG91YmxlLWtleS1mb3ItbG9jYWwtZGV2ZWxvcG1lbnQ=";
/// A least-privilege policy with Listen and Send: what an engine needs.
pub const LISTEN_SEND_POLICY: &str = "engine";
/// A policy with Send only (a producer).
pub const SEND_POLICY: &str = "sender";
/// A policy with Listen only (a consumer that never sends).
pub const LISTEN_POLICY: &str = "listener";
/// The subqueue path segment of a queue's dead-letter queue.
pub const DEAD_LETTER_SUBQUEUE: &str = "$DeadLetterQueue";

/// Service's `TimeToLive` when none is set (`TimeSpan.MaxValue` in seconds).
const DEFAULT_TIME_TO_LIVE: f64 = 922_337_203_685.477_5;
/// Long-poll duration when the request gives no `timeout`.
const DEFAULT_LONG_POLL: u64 = 60;
/// Request headers that are protocol, not custom properties.
const STANDARD_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "authorization",
    "brokerproperties",
    "connection",
    "content-length",
    "content-type",
    "expect",
    "host",
    "te",
    "transfer-encoding",
    "user-agent",
];
/// `BrokerProperties` a sender may set (others are the broker's).
const SETTABLE: &[&str] = &[
    "CorrelationId",
    "Label",
    "PartitionKey",
    "ReplyTo",
    "ReplyToSessionId",
    "SessionId",
    "TimeToLive",
    "To",
    "ViaPartitionKey",
];

/// What a shared access policy may do, as Service Bus grants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rights {
    /// Receive and settle.
    pub listen: bool,
    /// Send.
    pub send: bool,
    /// Read and change entity descriptions; includes Listen and Send.
    pub manage: bool,
}

impl Rights {
    /// Manage (with Listen and Send).
    pub const MANAGE: Self = Self {
        listen: true,
        send: true,
        manage: true,
    };
    /// Listen and Send.
    pub const LISTEN_SEND: Self = Self {
        listen: true,
        send: true,
        manage: false,
    };
    /// Send only.
    pub const SEND: Self = Self {
        listen: false,
        send: true,
        manage: false,
    };
    /// Listen only.
    pub const LISTEN: Self = Self {
        listen: true,
        send: false,
        manage: false,
    };

    fn allows(self, right: Right) -> bool {
        self.manage
            || match right {
                Right::Listen => self.listen,
                Right::Send => self.send,
                Right::Manage => false,
            }
    }

    /// `Manage, Listen, Send`-style list, for people.
    pub fn describe(self) -> String {
        let mut names = Vec::new();
        if self.manage {
            names.push("Manage");
        }
        if self.listen || self.manage {
            names.push("Listen");
        }
        if self.send || self.manage {
            names.push("Send");
        }
        names.join(", ")
    }
}

/// The right a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Right {
    Listen,
    Send,
    Manage,
}

impl Right {
    fn name(self) -> &'static str {
        match self {
            Self::Listen => "Listen",
            Self::Send => "Send",
            Self::Manage => "Manage",
        }
    }
}

/// A shared access policy (authorization rule) of the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Its name (`SharedAccessKeyName`).
    pub name: String,
    /// Its key (`SharedAccessKey`).
    pub key: String,
    /// What it may do.
    pub rights: Rights,
}

impl Policy {
    fn new(name: &str, key: &str, rights: Rights) -> Self {
        Self {
            name: name.to_owned(),
            key: key.to_owned(),
            rights,
        }
    }
}

/// How the double is set up.
#[derive(Debug, Clone)]
pub struct DoubleConfig {
    /// Queue `lockDuration`.
    pub lock_duration: Duration,
    /// Queue `maxDeliveryCount`.
    pub max_delivery_count: u32,
    /// Queue `defaultMessageTimeToLive`: `None` for the service's default
    /// (forever).
    pub default_time_to_live: Option<Duration>,
    /// Queue `deadLetteringOnMessageExpiration`: expired messages go to the
    /// dead-letter subqueue (else they are dropped).
    pub dead_lettering_on_message_expiration: bool,
    /// The namespace's shared access policies.
    pub policies: Vec<Policy>,
    /// Sequence number of each queue's first message. Partitioned entities
    /// carry the partition in the high bits (e.g. `3 << 48`), beyond `i32`.
    pub first_sequence_number: i64,
}

impl DoubleConfig {
    /// The default policies (see the module docs), messages that live
    /// forever, sequence numbers from 1.
    pub fn new(lock_duration: Duration, max_delivery_count: u32) -> Self {
        Self {
            lock_duration,
            max_delivery_count,
            default_time_to_live: None,
            dead_lettering_on_message_expiration: false,
            policies: vec![
                Policy::new(DOUBLE_POLICY_NAME, DOUBLE_POLICY_KEY, Rights::MANAGE),
                Policy::new(
                    LISTEN_SEND_POLICY,
                    "ZG91YmxlLWxpc3Rlbi1zZW5kLWtleS1mb3ItbG9jYWwtdXNl",
                    Rights::LISTEN_SEND,
                ),
                Policy::new(
                    SEND_POLICY,
                    "ZG91YmxlLXNlbmQta2V5LWZvci1sb2NhbC11c2U=",
                    Rights::SEND,
                ),
                Policy::new(
                    LISTEN_POLICY,
                    "ZG91YmxlLWxpc3Rlbi1rZXktZm9yLWxvY2FsLXVzZQ==",
                    Rights::LISTEN,
                ),
            ],
            first_sequence_number: 1,
        }
    }

    /// The policy named `name`.
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == name)
    }
}

/// A message the double moved to a queue's dead-letter list.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetteredMessage {
    /// `MessageId`.
    pub message_id: String,
    /// `SequenceNumber`.
    pub sequence_number: i64,
    /// Body (lossy UTF-8).
    pub body: String,
    /// Custom properties, as sent (header name lower-cased, raw value).
    pub properties: Vec<(String, String)>,
    /// Deliveries made.
    pub delivery_count: u32,
    /// `DeadLetterReason`.
    pub reason: String,
    /// `DeadLetterErrorDescription`.
    pub description: String,
}

/// Message counts of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Ready for delivery.
    pub active: u64,
    /// Peek-locked.
    pub locked: u64,
    /// Scheduled for later.
    pub scheduled: u64,
    /// In the dead-letter list.
    pub dead_lettered: u64,
}

#[derive(Debug, Clone, Copy)]
enum MessageState {
    Available,
    Scheduled(Instant),
    Locked { until: Instant },
}

#[derive(Debug)]
struct Stored {
    seq: i64,
    message_id: String,
    body: Bytes,
    content_type: Option<String>,
    broker: Map<String, Value>,
    properties: Vec<(String, String)>,
    enqueued_at: DateTime<Utc>,
    delivery_count: u32,
    lock_token: Option<String>,
    state: MessageState,
    /// When its time to live runs out (`None`: never).
    expires_at: Option<Instant>,
    /// `TimeToLive` in seconds, as reported.
    time_to_live: f64,
}

/// Why a message leaves its queue for the dead-letter subqueue.
#[derive(Debug)]
struct Fate {
    message: Stored,
    reason: &'static str,
    description: String,
}

#[derive(Debug)]
struct QueueState {
    next_seq: i64,
    messages: BTreeMap<i64, Stored>,
    /// Whether this is a dead-letter subqueue (no delivery limit, no
    /// expiry, nothing is dead-lettered from it).
    dead_letter: bool,
    /// Messages dead-lettered by the last operation, for the caller to move
    /// to the subqueue.
    leaving: Vec<Fate>,
}

impl QueueState {
    fn new(first: i64, dead_letter: bool) -> Self {
        Self {
            next_seq: first,
            messages: BTreeMap::new(),
            dead_letter,
            leaving: Vec::new(),
        }
    }

    /// Makes a message available again, or dead-letters it past the
    /// maximum delivery count.
    fn release(&mut self, seq: i64, max_delivery_count: u32) {
        let exhausted = !self.dead_letter
            && self
                .messages
                .get(&seq)
                .is_some_and(|m| m.delivery_count >= max_delivery_count);
        if exhausted {
            if let Some(m) = self.messages.remove(&seq) {
                let description = format!(
                    "Message could not be consumed after {} delivery attempts.",
                    m.delivery_count
                );
                self.leaving.push(Fate {
                    message: m,
                    reason: "MaxDeliveryCountExceeded",
                    description,
                });
            }
        } else if let Some(m) = self.messages.get_mut(&seq) {
            m.state = MessageState::Available;
            m.lock_token = None;
        }
    }

    /// Applies lock expiries, due schedules and time-to-live expiries.
    fn reclaim(&mut self, now: Instant, max_delivery_count: u32, dead_letter_expired: bool) {
        let mut expired = Vec::new();
        let mut lapsed = Vec::new();
        for m in self.messages.values_mut() {
            match m.state {
                MessageState::Locked { until } if until <= now => expired.push(m.seq),
                MessageState::Scheduled(at) if at <= now => m.state = MessageState::Available,
                _ => {}
            }
        }
        for seq in expired {
            self.release(seq, max_delivery_count);
        }
        if self.dead_letter {
            return;
        }
        for m in self.messages.values() {
            let unlocked = !matches!(m.state, MessageState::Locked { .. });
            if unlocked && m.expires_at.is_some_and(|at| at <= now) {
                lapsed.push(m.seq);
            }
        }
        for seq in lapsed {
            if let Some(m) = self.messages.remove(&seq) {
                if dead_letter_expired {
                    self.leaving.push(Fate {
                        message: m,
                        reason: "TTLExpiredException",
                        description: "The message expired and was dead lettered.".to_owned(),
                    });
                }
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.messages
            .values()
            .filter_map(|m| match m.state {
                MessageState::Available => None,
                MessageState::Scheduled(at) => Some(at),
                MessageState::Locked { until } => Some(until),
            })
            .min()
    }

    fn counts(&self) -> QueueCounts {
        let mut c = QueueCounts::default();
        for m in self.messages.values() {
            match m.state {
                MessageState::Available => c.active += 1,
                MessageState::Scheduled(_) => c.scheduled += 1,
                MessageState::Locked { .. } => c.locked += 1,
            }
        }
        c
    }

    /// The message locked by `token`, if `id` names it (sequence number or
    /// message id): `Err(410)` for an unknown lock, `Err(404)` for a lock of
    /// another message.
    fn locked_by(&self, id: &str, token: &str) -> Result<i64, StatusCode> {
        let m = self
            .messages
            .values()
            .find(|m| {
                matches!(m.state, MessageState::Locked { .. })
                    && m.lock_token
                        .as_deref()
                        .is_some_and(|t| t.eq_ignore_ascii_case(token))
            })
            .ok_or(StatusCode::GONE)?;
        if m.seq.to_string() == id || m.message_id == id {
            Ok(m.seq)
        } else {
            Err(StatusCode::NOT_FOUND)
        }
    }
}

struct Shared {
    cfg: DoubleConfig,
    /// The policies with their signing secrets.
    keys: Vec<(Policy, azure_core::auth::Secret)>,
    queues: Mutex<HashMap<String, QueueState>>,
    /// Send requests answered `201` (a batch counts once).
    send_requests: AtomicU64,
    wake: Notify,
    stop: watch::Sender<bool>,
}

impl Shared {
    fn queues(&self) -> MutexGuard<'_, HashMap<String, QueueState>> {
        // Critical sections never await and leave no half-made change.
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the entity `name` (a queue, or `{queue}/$DeadLetterQueue`;
    /// created on first use) after reclaiming expired locks, due and expired
    /// messages; what the queue dead-letters meanwhile moves to its subqueue.
    fn with_queue<R>(&self, name: &str, f: impl FnOnce(&mut QueueState, Instant) -> R) -> R {
        let now = Instant::now();
        let key = name.to_ascii_lowercase();
        let main = key
            .strip_suffix(&dlq_suffix())
            .map_or_else(|| key.clone(), str::to_owned);
        let mut queues = self.queues();
        self.entity(&mut queues, &main).reclaim(
            now,
            self.cfg.max_delivery_count,
            self.cfg.dead_lettering_on_message_expiration,
        );
        self.move_dead_letters(&mut queues, &main);
        let q = self.entity(&mut queues, &key);
        if key != main {
            // The subqueue's own locks expire too.
            q.reclaim(now, u32::MAX, false);
        }
        let result = f(q, now);
        // A settle may have dead-lettered (a lock released after the last
        // delivery).
        self.move_dead_letters(&mut queues, &main);
        result
    }

    fn entity<'a>(
        &self,
        queues: &'a mut HashMap<String, QueueState>,
        key: &str,
    ) -> &'a mut QueueState {
        let dead_letter = key.ends_with(&dlq_suffix());
        queues
            .entry(key.to_owned())
            .or_insert_with(|| QueueState::new(self.cfg.first_sequence_number, dead_letter))
    }

    /// Moves what queue `main` dead-lettered to its subqueue.
    fn move_dead_letters(&self, queues: &mut HashMap<String, QueueState>, main: &str) {
        let leaving = std::mem::take(&mut self.entity(queues, main).leaving);
        if leaving.is_empty() {
            return;
        }
        let subqueue = self.entity(queues, &format!("{main}{}", dlq_suffix()));
        for fate in leaving {
            subqueue.dead_letter_in(fate);
        }
        self.wake.notify_waiters();
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }
}

/// `/$deadletterqueue`, lower case as entity keys are.
fn dlq_suffix() -> String {
    format!("/{}", DEAD_LETTER_SUBQUEUE.to_ascii_lowercase())
}

impl QueueState {
    /// Takes a dead-lettered message in, with its reason as the service
    /// gives it: custom properties `DeadLetterReason` and
    /// `DeadLetterErrorDescription`. It keeps its message id, body,
    /// properties, sequence number and delivery count (reading it from the
    /// subqueue counts on).
    fn dead_letter_in(&mut self, fate: Fate) {
        let Fate {
            mut message,
            reason,
            description,
        } = fate;
        message
            .properties
            .retain(|(n, _)| n != "deadletterreason" && n != "deadlettererrordescription");
        message
            .properties
            .push(("deadletterreason".into(), quoted(reason)));
        message
            .properties
            .push(("deadlettererrordescription".into(), quoted(&description)));
        message.lock_token = None;
        message.state = MessageState::Available;
        message.expires_at = None;
        self.messages.insert(message.seq, message);
    }
}

fn quoted(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// Handle on a running double. Dropping it stops the double.
pub struct DoubleHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DoubleHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoubleHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl DoubleHandle {
    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`, for [`ServiceBusConfig::endpoint`].
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adapter settings reaching `queue` on this double with the first
    /// policy (the namespace's own, Manage).
    pub fn config(&self, queue: &str) -> ServiceBusConfig {
        let first = self.shared.cfg.policies.first().map(|p| p.name.clone());
        self.config_with(queue, first.as_deref().unwrap_or(DOUBLE_POLICY_NAME))
    }

    /// Adapter settings reaching `queue` with the policy named `policy`
    /// (an unknown name gets an empty key, which the adapter refuses).
    pub fn config_with(&self, queue: &str, policy: &str) -> ServiceBusConfig {
        ServiceBusConfig {
            namespace: DOUBLE_NAMESPACE.to_owned(),
            queue: queue.to_owned(),
            policy_name: policy.to_owned(),
            policy_key: self
                .shared
                .cfg
                .policy(policy)
                .map(|p| p.key.clone())
                .unwrap_or_default(),
            partitions: 1,
            endpoint: Some(self.endpoint()),
        }
    }

    /// The portal-style connection string of `policy` for this double's
    /// namespace (use it with the endpoint override [`Self::endpoint`]).
    pub fn connection_string(&self, policy: &Policy) -> String {
        format!(
            "Endpoint=sb://{DOUBLE_NAMESPACE}.servicebus.windows.net/;SharedAccessKeyName={};SharedAccessKey={}",
            policy.name, policy.key
        )
    }

    /// The policies this double accepts.
    pub fn policies(&self) -> &[Policy] {
        &self.shared.cfg.policies
    }

    /// A valid `Authorization` header value for requests under
    /// `resource_path` (e.g. `/myqueue`), signed with the first policy and
    /// valid for an hour: for tests that speak raw HTTP to the double.
    pub fn authorization(&self, resource_path: &str) -> String {
        let first = self.shared.keys.first().map(|(p, _)| p.name.clone());
        self.authorization_as(resource_path, first.as_deref().unwrap_or_default())
    }

    /// The same signed with the policy named `policy` (empty when the
    /// double has no such policy).
    pub fn authorization_as(&self, resource_path: &str, policy: &str) -> String {
        let resource = format!("https://{DOUBLE_NAMESPACE}.servicebus.windows.net{resource_path}");
        let Some((policy, key)) = self.shared.keys.iter().find(|(p, _)| p.name == policy) else {
            return String::new();
        };
        // Signing only fails on a key that is not base64, and
        // `signing_secret` always produces base64.
        sas::token(&resource, &policy.name, key, Duration::from_secs(3600)).unwrap_or_default()
    }

    /// The messages in `queue`'s dead-letter subqueue, oldest first.
    pub fn dead_lettered(&self, queue: &str) -> Vec<DeadLetteredMessage> {
        let subqueue = format!("{queue}/{DEAD_LETTER_SUBQUEUE}");
        self.shared.with_queue(&subqueue, |q, _| {
            q.messages
                .values()
                .map(|m| {
                    let property = |name: &str| {
                        m.properties
                            .iter()
                            .find(|(n, _)| n == name)
                            .and_then(|(_, v)| serde_json::from_str::<String>(v).ok())
                            .unwrap_or_default()
                    };
                    DeadLetteredMessage {
                        message_id: m.message_id.clone(),
                        sequence_number: m.seq,
                        body: String::from_utf8_lossy(&m.body).into_owned(),
                        properties: m.properties.clone(),
                        delivery_count: m.delivery_count,
                        reason: property("deadletterreason"),
                        description: property("deadlettererrordescription"),
                    }
                })
                .collect()
        })
    }

    /// Send requests accepted so far, over every queue: a batch send
    /// counts once, however many messages it carried.
    pub fn send_requests(&self) -> u64 {
        self.shared.send_requests.load(Ordering::Relaxed)
    }

    /// Drops every message of `queue` (not its subqueue), answering how
    /// many there were: for benchmarks that send without reading.
    pub fn purge(&self, queue: &str) -> usize {
        self.shared.with_queue(queue, |q, _| {
            let n = q.messages.len();
            q.messages.clear();
            n
        })
    }

    /// Message counts of `queue` (with its subqueue's as `dead_lettered`).
    pub fn counts(&self, queue: &str) -> QueueCounts {
        counts_of(&self.shared, queue)
    }

    /// Stops serving: pending long polls answer `204`, then the listener
    /// closes (waiting at most 5 s for open connections).
    pub async fn shutdown(mut self) {
        self.shared.stop.send_replace(true);
        self.shared.wake.notify_waiters();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for DoubleHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            self.shared.stop.send_replace(true);
            self.shared.wake.notify_waiters();
            task.abort();
        }
    }
}

/// Serves a double on `127.0.0.1:0` with the default policy
/// ([`DOUBLE_POLICY_NAME`], [`DOUBLE_POLICY_KEY`]).
///
/// # Panics
/// If no local port can be bound (use [`spawn_double_with`] to get the
/// error instead).
pub async fn spawn_double(
    lock_duration: Duration,
    max_delivery_count: u32,
) -> (SocketAddr, DoubleHandle) {
    match spawn_double_with(DoubleConfig::new(lock_duration, max_delivery_count)).await {
        Ok(served) => served,
        Err(e) => panic!("cannot serve the Service Bus double on 127.0.0.1: {e}"),
    }
}

/// A queue's counts, with its subqueue's messages as `dead_lettered`.
fn counts_of(shared: &Shared, queue: &str) -> QueueCounts {
    let mut counts = shared.with_queue(queue, |q, _| q.counts());
    let subqueue = format!("{queue}/{DEAD_LETTER_SUBQUEUE}");
    counts.dead_lettered = shared.with_queue(&subqueue, |q, _| q.messages.len() as u64);
    counts
}

/// Serves a double on `127.0.0.1:0` set up by `cfg`.
///
/// # Errors
/// When no local port can be bound.
pub async fn spawn_double_with(cfg: DoubleConfig) -> std::io::Result<(SocketAddr, DoubleHandle)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    serve_double(cfg, listener)
}

/// Serves a double set up by `cfg` on `listener` (any address: the
/// standalone double binds the one it is given).
///
/// # Errors
/// When the listener has no local address.
pub fn serve_double(
    cfg: DoubleConfig,
    listener: tokio::net::TcpListener,
) -> std::io::Result<(SocketAddr, DoubleHandle)> {
    let addr = listener.local_addr()?;
    let (stop, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        keys: cfg
            .policies
            .iter()
            .map(|p| (p.clone(), sas::signing_secret(&p.key)))
            .collect(),
        cfg,
        queues: Mutex::new(HashMap::new()),
        send_requests: AtomicU64::new(0),
        wake: Notify::new(),
        stop,
    });
    let app = Router::new()
        .route("/{queue}", get(management))
        .route("/{queue}/messages", post(send))
        .route(
            "/{queue}/messages/head",
            post(peek_lock).delete(receive_and_delete),
        )
        .route(
            "/{queue}/messages/{id}/{lock}",
            post(renew).put(unlock).delete(complete),
        )
        .route("/{queue}/{subqueue}/messages", post(send_to_subqueue))
        .route(
            "/{queue}/{subqueue}/messages/head",
            post(peek_lock_subqueue).delete(receive_and_delete_subqueue),
        )
        .route(
            "/{queue}/{subqueue}/messages/{id}/{lock}",
            post(renew_subqueue)
                .put(unlock_subqueue)
                .delete(complete_subqueue),
        )
        .with_state(Arc::clone(&shared));
    let mut stopped = shared.stop.subscribe();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "Service Bus double stopped");
        }
    });
    Ok((
        addr,
        DoubleHandle {
            addr,
            shared,
            task: Some(task),
        },
    ))
}

type SharedState = State<Arc<Shared>>;

fn rfc1123(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The service's error body.
fn error(status: StatusCode, detail: &str) -> Response {
    let body = format!(
        "<Error><Code>{}</Code><Detail>{}</Detail></Error>",
        status.as_u16(),
        xml_escape(detail)
    );
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/xml; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The `401` answer for a request without a valid token of a policy that
/// has `right`, if it has none.
fn unauthorized(shared: &Shared, headers: &HeaderMap, uri: &Uri, right: Right) -> Option<Response> {
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let policy = sas::policy_of(auth).and_then(|name| {
        shared
            .keys
            .iter()
            .find(|(p, _)| p.name.eq_ignore_ascii_case(&name))
    });
    let Some((policy, key)) = policy else {
        let why = if auth.is_none() {
            "MissingToken: the authorization header was not provided"
        } else {
            "InvalidSignature: unknown shared access policy, or not a SharedAccessSignature token"
        };
        return Some(error(StatusCode::UNAUTHORIZED, why));
    };
    if let Err(why) = sas::verify(auth, &policy.name, key, uri.path(), Utc::now().timestamp()) {
        return Some(error(StatusCode::UNAUTHORIZED, &why));
    }
    if !policy.rights.allows(right) {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            &format!(
                "Unauthorized access. '{}' claim(s) are required to perform this operation. \
                 Resource: 'sb://{DOUBLE_NAMESPACE}.servicebus.windows.net{}'.",
                right.name(),
                uri.path()
            ),
        ));
    }
    None
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(s.trim())
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// Largest batch request: a Standard namespace's message size limit, which
/// bounds a batch as a whole.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Why a send is refused: the status and the detail of the answer.
type Refusal = (StatusCode, String);

fn bad_request(detail: &str) -> Refusal {
    (StatusCode::BAD_REQUEST, detail.to_owned())
}

/// A message to enqueue, checked.
struct Incoming {
    message_id: String,
    body: Bytes,
    content_type: Option<String>,
    broker: Map<String, Value>,
    properties: Vec<(String, String)>,
    scheduled: Option<DateTime<Utc>>,
    time_to_live: Option<Duration>,
}

/// Checks what a sender set: `BrokerProperties` (scheduling, time to live,
/// message id; the settable rest is kept), custom properties, body.
fn incoming(
    shared: &Shared,
    broker: Map<String, Value>,
    properties: Vec<(String, String)>,
    body: Bytes,
    content_type: Option<String>,
) -> Result<Incoming, Refusal> {
    let scheduled = match broker.get("ScheduledEnqueueTimeUtc") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_str().and_then(parse_time) {
            Some(at) => Some(at),
            None => {
                return Err(bad_request(
                    "ScheduledEnqueueTimeUtc is not an RFC 1123 date",
                ))
            }
        },
    };
    let time_to_live = match broker.get("TimeToLive") {
        None | Some(Value::Null) => shared.cfg.default_time_to_live,
        Some(v) => match v.as_f64().filter(|t| t.is_finite() && *t > 0.0) {
            Some(secs) if secs >= DEFAULT_TIME_TO_LIVE => None,
            Some(secs) => Some(Duration::from_secs_f64(secs)),
            None => {
                return Err(bad_request(
                    "TimeToLive must be a positive number of seconds",
                ))
            }
        },
    };
    let message_id = broker
        .get("MessageId")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
    let content_type = content_type.or_else(|| {
        broker
            .get("ContentType")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let broker = broker
        .into_iter()
        .filter(|(k, _)| SETTABLE.contains(&k.as_str()) && k != "TimeToLive")
        .collect();
    Ok(Incoming {
        message_id,
        body,
        content_type,
        broker,
        properties,
        scheduled,
        time_to_live,
    })
}

/// Puts `m` at the end of `q`.
fn enqueue(q: &mut QueueState, now: Instant, m: Incoming) {
    let state = match m.scheduled {
        Some(at) => {
            let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            if wait.is_zero() {
                MessageState::Available
            } else {
                MessageState::Scheduled(now + wait)
            }
        }
        None => MessageState::Available,
    };
    let seq = q.next_seq;
    q.next_seq += 1;
    q.messages.insert(
        seq,
        Stored {
            seq,
            message_id: m.message_id,
            body: m.body,
            content_type: m.content_type,
            broker: m.broker,
            properties: m.properties,
            enqueued_at: Utc::now(),
            delivery_count: 0,
            lock_token: None,
            state,
            expires_at: m.time_to_live.map(|ttl| now + ttl),
            time_to_live: m
                .time_to_live
                .map_or(DEFAULT_TIME_TO_LIVE, |t| t.as_secs_f64()),
        },
    );
}

/// The messages of a batch send: a JSON array of objects, each with a
/// string `Body` and optional `BrokerProperties` and `UserProperties`
/// objects. Custom properties are kept as a single send's headers carry
/// them (JSON text: strings quoted), so a receiver sees no difference.
fn batch_of(shared: &Shared, body: &[u8]) -> Result<Vec<Incoming>, Refusal> {
    if body.len() > MAX_BATCH_BYTES {
        return Err((
            StatusCode::FORBIDDEN,
            "the batch is larger than the namespace's message size limit".into(),
        ));
    }
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(body) else {
        return Err(bad_request(
            "a batch send's body must be a JSON array of messages",
        ));
    };
    if items.is_empty() {
        return Err(bad_request("a batch send must carry at least one message"));
    }
    items
        .into_iter()
        .map(|item| {
            let Value::Object(mut item) = item else {
                return Err(bad_request("each message of a batch must be a JSON object"));
            };
            let Some(Value::String(text)) = item.remove("Body") else {
                return Err(bad_request("each message of a batch needs a string Body"));
            };
            let object = |v: Option<Value>, what: &str| match v {
                None | Some(Value::Null) => Ok(Map::new()),
                Some(Value::Object(m)) => Ok(m),
                Some(_) => Err(bad_request(&format!("{what} must be a JSON object"))),
            };
            let broker = object(item.remove("BrokerProperties"), "BrokerProperties")?;
            let properties = object(item.remove("UserProperties"), "UserProperties")?
                .into_iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.to_string()))
                .collect();
            incoming(shared, broker, properties, Bytes::from(text), None)
        })
        .collect()
}

async fn send(
    State(shared): SharedState,
    Path(queue): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(denied) = unauthorized(&shared, &headers, &uri, Right::Send) {
        return denied;
    }
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let messages = if content_type.as_deref() == Some(BATCH_CONTENT_TYPE) {
        batch_of(&shared, &body)
    } else {
        single_of(&shared, &headers, body, content_type).map(|m| vec![m])
    };
    let messages = match messages {
        Ok(messages) => messages,
        Err((status, detail)) => return error(status, &detail),
    };
    // A batch is enqueued as one operation: all of it, or (refused above)
    // none of it.
    shared.with_queue(&queue, |q, now| {
        for m in messages {
            enqueue(q, now, m);
        }
    });
    shared.send_requests.fetch_add(1, Ordering::Relaxed);
    shared.wake.notify_waiters();
    StatusCode::CREATED.into_response()
}

/// The message of a single send: the body as is, `BrokerProperties` from
/// its header, every non-standard header a custom property.
fn single_of(
    shared: &Shared,
    headers: &HeaderMap,
    body: Bytes,
    content_type: Option<String>,
) -> Result<Incoming, Refusal> {
    let broker: Map<String, Value> = match headers.get("brokerproperties") {
        None => Map::new(),
        Some(v) => match v.to_str().ok().map(serde_json::from_str::<Value>) {
            Some(Ok(Value::Object(m))) => m,
            _ => return Err(bad_request("BrokerProperties is not a JSON object")),
        },
    };
    let properties: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| {
            let n = name.as_str();
            !STANDARD_HEADERS.contains(&n) && !n.starts_with("x-ms-")
        })
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    incoming(shared, broker, properties, body, content_type)
}

#[derive(Debug, Deserialize)]
struct TimeoutQuery {
    timeout: Option<u64>,
}

/// What a receive does with the message it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    Lock,
    Delete,
}

/// Takes the next available message, long-polling up to `timeout` s.
async fn take_next(shared: &Shared, queue: &str, host: &str, timeout: u64, take: Take) -> Response {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        let notified = shared.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let lock_duration = shared.cfg.lock_duration;
        let outcome = shared.with_queue(queue, |q, now| {
            let seq = q
                .messages
                .values()
                .find(|m| matches!(m.state, MessageState::Available))
                .map(|m| m.seq);
            match seq {
                Some(seq) => Ok(deliver(q, seq, now, lock_duration, queue, host, take)),
                None => Err(q.next_due()),
            }
        });
        let next_due = match outcome {
            Ok(Some(response)) => return response,
            Ok(None) => None,
            Err(next_due) => next_due,
        };
        let now = Instant::now();
        if now >= deadline || shared.stopping() {
            return StatusCode::NO_CONTENT.into_response();
        }
        // Look again at least every second: a subqueue's messages arrive
        // when its queue's locks or times to live run out.
        let until = next_due
            .map_or(deadline, |t| t.min(deadline))
            .min(now + Duration::from_secs(1));
        let _ = tokio::time::timeout_at(until, notified).await;
    }
}

/// Builds the answer for message `seq`, locking or removing it.
fn deliver(
    q: &mut QueueState,
    seq: i64,
    now: Instant,
    lock_duration: Duration,
    queue: &str,
    host: &str,
    take: Take,
) -> Option<Response> {
    let wall = Utc::now();
    let token = uuid::Uuid::new_v4().to_string();
    let m = q.messages.get_mut(&seq)?;
    m.delivery_count += 1;
    let mut props = m.broker.clone();
    props.insert("DeliveryCount".into(), m.delivery_count.into());
    props.insert("EnqueuedSequenceNumber".into(), m.seq.into());
    props.insert("EnqueuedTimeUtc".into(), rfc1123(m.enqueued_at).into());
    props.insert("MessageId".into(), m.message_id.clone().into());
    props.insert("SequenceNumber".into(), m.seq.into());
    props.insert("State".into(), "Active".into());
    props.insert("TimeToLive".into(), m.time_to_live.into());
    if let Some(ct) = &m.content_type {
        props.insert("ContentType".into(), ct.clone().into());
    }
    let mut headers = HeaderMap::new();
    let status = match take {
        Take::Lock => {
            let until = chrono::Duration::from_std(lock_duration).unwrap_or_default();
            props.insert("LockToken".into(), token.clone().into());
            props.insert("LockedUntilUtc".into(), rfc1123(wall + until).into());
            m.state = MessageState::Locked {
                until: now + lock_duration,
            };
            m.lock_token = Some(token.clone());
            let location = format!("http://{host}/{queue}/messages/{seq}/{token}");
            if let Ok(v) = HeaderValue::from_str(&location) {
                headers.insert(axum::http::header::LOCATION, v);
            }
            StatusCode::CREATED
        }
        Take::Delete => StatusCode::OK,
    };
    if let Ok(v) = HeaderValue::from_str(&Value::Object(props).to_string()) {
        headers.insert(HeaderName::from_static("brokerproperties"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&rfc1123(wall)) {
        headers.insert(axum::http::header::DATE, v);
    }
    let content_type = m
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        headers.insert(axum::http::header::CONTENT_TYPE, v);
    }
    for (name, value) in &m.properties {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    let body = m.body.clone();
    if take == Take::Delete {
        q.messages.remove(&seq);
    }
    Some((status, headers, body).into_response())
}

fn host_of(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned()
}

async fn peek_lock(
    State(shared): SharedState,
    Path(queue): Path<String>,
    Query(query): Query<TimeoutQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = unauthorized(&shared, &headers, &uri, Right::Listen) {
        return denied;
    }
    let timeout = query.timeout.unwrap_or(DEFAULT_LONG_POLL);
    take_next(&shared, &queue, &host_of(&headers), timeout, Take::Lock).await
}

async fn receive_and_delete(
    State(shared): SharedState,
    Path(queue): Path<String>,
    Query(query): Query<TimeoutQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = unauthorized(&shared, &headers, &uri, Right::Listen) {
        return denied;
    }
    let timeout = query.timeout.unwrap_or(DEFAULT_LONG_POLL);
    take_next(&shared, &queue, &host_of(&headers), timeout, Take::Delete).await
}

/// A settle operation on a lock.
#[derive(Debug, Clone, Copy)]
enum Settle {
    Complete,
    Unlock,
    Renew,
}

fn settle(
    shared: &Shared,
    queue: &str,
    id: &str,
    token: &str,
    uri: &Uri,
    headers: &HeaderMap,
    op: Settle,
) -> Response {
    if let Some(denied) = unauthorized(shared, headers, uri, Right::Listen) {
        return denied;
    }
    let lock_duration = shared.cfg.lock_duration;
    let max = shared.cfg.max_delivery_count;
    let result = shared.with_queue(queue, |q, now| {
        let seq = q.locked_by(id, token)?;
        match op {
            Settle::Complete => {
                q.messages.remove(&seq);
            }
            Settle::Unlock => q.release(seq, max),
            Settle::Renew => {
                if let Some(m) = q.messages.get_mut(&seq) {
                    m.state = MessageState::Locked {
                        until: now + lock_duration,
                    };
                }
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => {
            if matches!(op, Settle::Unlock) {
                shared.wake.notify_waiters();
            }
            StatusCode::OK.into_response()
        }
        Err(StatusCode::NOT_FOUND) => error(
            StatusCode::NOT_FOUND,
            "No message was found with the specified MessageId and LockToken.",
        ),
        Err(status) => error(
            status,
            "The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue.",
        ),
    }
}

async fn complete(
    State(shared): SharedState,
    Path((queue, id, lock)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    settle(
        &shared,
        &queue,
        &id,
        &lock,
        &uri,
        &headers,
        Settle::Complete,
    )
}

async fn unlock(
    State(shared): SharedState,
    Path((queue, id, lock)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    settle(&shared, &queue, &id, &lock, &uri, &headers, Settle::Unlock)
}

async fn renew(
    State(shared): SharedState,
    Path((queue, id, lock)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    settle(&shared, &queue, &id, &lock, &uri, &headers, Settle::Renew)
}

/// Management `GET /{queue}`: the entity description as the service's Atom
/// entry.
async fn management(
    State(shared): SharedState,
    Path(queue): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = unauthorized(&shared, &headers, &uri, Right::Manage) {
        return denied;
    }
    let counts = counts_of(&shared, &queue);
    let now = Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let host = host_of(&headers);
    let name = xml_escape(&queue);
    let lock = shared.cfg.lock_duration;
    let lock = if lock.subsec_millis() == 0 {
        format!("PT{}S", lock.as_secs())
    } else {
        format!("PT{}S", lock.as_secs_f64())
    };
    let total = counts.active + counts.locked + counts.scheduled + counts.dead_lettered;
    let body = format!(
        concat!(
            r#"<entry xmlns="http://www.w3.org/2005/Atom"><id>http://{host}/{name}?api-version=2017-04</id>"#,
            r#"<title type="text">{name}</title><published>{now}</published><updated>{now}</updated>"#,
            r#"<author><name>{ns}</name></author><link rel="self" href="http://{host}/{name}?api-version=2017-04"/>"#,
            r#"<content type="application/xml"><QueueDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">"#,
            r#"<LockDuration>{lock}</LockDuration><MaxSizeInMegabytes>1024</MaxSizeInMegabytes>"#,
            r#"<RequiresDuplicateDetection>false</RequiresDuplicateDetection><RequiresSession>false</RequiresSession>"#,
            r#"<DeadLetteringOnMessageExpiration>{expiry_dlq}</DeadLetteringOnMessageExpiration>"#,
            r#"<MaxDeliveryCount>{max}</MaxDeliveryCount><EnableBatchedOperations>true</EnableBatchedOperations>"#,
            r#"<MessageCount>{total}</MessageCount>"#,
            r#"<CountDetails xmlns:d2p1="http://schemas.microsoft.com/netservices/2011/06/servicebus">"#,
            r#"<d2p1:ActiveMessageCount>{active}</d2p1:ActiveMessageCount>"#,
            r#"<d2p1:DeadLetterMessageCount>{dead}</d2p1:DeadLetterMessageCount>"#,
            r#"<d2p1:ScheduledMessageCount>{scheduled}</d2p1:ScheduledMessageCount>"#,
            r#"<d2p1:TransferMessageCount>0</d2p1:TransferMessageCount>"#,
            r#"<d2p1:TransferDeadLetterMessageCount>0</d2p1:TransferDeadLetterMessageCount>"#,
            r#"</CountDetails><Status>Active</Status><EnablePartitioning>false</EnablePartitioning>"#,
            r#"</QueueDescription></content></entry>"#
        ),
        host = xml_escape(&host),
        name = name,
        now = now,
        ns = DOUBLE_NAMESPACE,
        lock = lock,
        max = shared.cfg.max_delivery_count,
        expiry_dlq = shared.cfg.dead_lettering_on_message_expiration,
        total = total,
        active = counts.active,
        dead = counts.dead_lettered,
        scheduled = counts.scheduled,
    );
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/atom+xml;type=entry;charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The dead-letter subqueue's entity name, `{queue}/$DeadLetterQueue`;
/// `None` for any other subqueue (see [`no_such_subqueue`]).
fn subqueue_entity(queue: &str, subqueue: &str) -> Option<String> {
    subqueue
        .eq_ignore_ascii_case(DEAD_LETTER_SUBQUEUE)
        .then(|| format!("{queue}/{DEAD_LETTER_SUBQUEUE}"))
}

/// The service's `404` for an unknown subqueue.
fn no_such_subqueue(queue: &str, subqueue: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("The messaging entity '{queue}/{subqueue}' could not be found."),
    )
}

async fn send_to_subqueue(
    State(shared): SharedState,
    Path((queue, subqueue)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = unauthorized(&shared, &headers, &uri, Right::Send) {
        return denied;
    }
    match subqueue_entity(&queue, &subqueue) {
        Some(_) => error(
            StatusCode::BAD_REQUEST,
            "Cannot send messages to a dead-letter queue.",
        ),
        None => no_such_subqueue(&queue, &subqueue),
    }
}

async fn peek_lock_subqueue(
    shared: SharedState,
    path: Path<(String, String)>,
    query: Query<TimeoutQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    take_from_subqueue(shared, path, query, uri, headers, Take::Lock).await
}

async fn receive_and_delete_subqueue(
    shared: SharedState,
    path: Path<(String, String)>,
    query: Query<TimeoutQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    take_from_subqueue(shared, path, query, uri, headers, Take::Delete).await
}

/// A receive on the dead-letter subqueue (Listen, like any receive).
async fn take_from_subqueue(
    State(shared): SharedState,
    Path((queue, subqueue)): Path<(String, String)>,
    Query(query): Query<TimeoutQuery>,
    uri: Uri,
    headers: HeaderMap,
    take: Take,
) -> Response {
    if let Some(denied) = unauthorized(&shared, &headers, &uri, Right::Listen) {
        return denied;
    }
    let Some(entity) = subqueue_entity(&queue, &subqueue) else {
        return no_such_subqueue(&queue, &subqueue);
    };
    let timeout = query.timeout.unwrap_or(DEFAULT_LONG_POLL);
    take_next(&shared, &entity, &host_of(&headers), timeout, take).await
}

fn settle_subqueue(
    shared: &Shared,
    (queue, subqueue, id, lock): (String, String, String, String),
    uri: &Uri,
    headers: &HeaderMap,
    op: Settle,
) -> Response {
    match subqueue_entity(&queue, &subqueue) {
        Some(entity) => settle(shared, &entity, &id, &lock, uri, headers, op),
        None => no_such_subqueue(&queue, &subqueue),
    }
}

async fn complete_subqueue(
    State(shared): SharedState,
    Path(path): Path<(String, String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    settle_subqueue(&shared, path, &uri, &headers, Settle::Complete)
}

async fn unlock_subqueue(
    State(shared): SharedState,
    Path(path): Path<(String, String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    settle_subqueue(&shared, path, &uri, &headers, Settle::Unlock)
}

async fn renew_subqueue(
    State(shared): SharedState,
    Path(path): Path<(String, String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    settle_subqueue(&shared, path, &uri, &headers, Settle::Renew)
}
