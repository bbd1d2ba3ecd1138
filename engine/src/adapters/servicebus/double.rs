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
//! - `GET /{queue}?api-version=...`: the management entity description (an
//!   Atom entry) with `CountDetails` (`ActiveMessageCount` = messages ready
//!   for delivery: neither locked nor scheduled).
//!
//! Locks last `lock_duration`; an expired or unlocked lock makes the message
//! available again and its next delivery has `DeliveryCount + 1`. A message
//! whose lock is released after its `max_delivery_count`-th delivery goes to
//! the queue's dead-letter list (reason `MaxDeliveryCountExceeded`), which
//! [`DoubleHandle::dead_lettered`] exposes for assertions.
//!
//! Every request must carry `Authorization: SharedAccessSignature ...`
//! signed with the configured policy ([`DOUBLE_POLICY_NAME`] /
//! [`DOUBLE_POLICY_KEY`] by default): HMAC-SHA256 over `sr + "\n" + se`
//! (computed with `azure_core::hmac::hmac_sha256`), checked along with the
//! policy name, the expiry and that the signed resource's path covers the
//! request path. Otherwise `401` with the service's XML error body. Rights
//! (Send/Listen/Manage) are not modelled, nor are message time-to-live,
//! sessions, duplicate detection or size quotas.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
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

use super::{sas, ServiceBusConfig};

/// Namespace name to put in a [`ServiceBusConfig`] aimed at the double (it
/// only appears in signed resource URIs).
pub const DOUBLE_NAMESPACE: &str = "double";
/// Shared access policy name the double accepts by default.
pub const DOUBLE_POLICY_NAME: &str = "RootManageSharedAccessKey";
/// Shared access policy key the double accepts by default (a test value).
pub const DOUBLE_POLICY_KEY: &str = "ZG91YmxlLWtleS1mb3ItbG9jYWwtZGV2ZWxvcG1lbnQ=";

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

/// How the double is set up.
#[derive(Debug, Clone)]
pub struct DoubleConfig {
    /// Queue `lockDuration`.
    pub lock_duration: Duration,
    /// Queue `maxDeliveryCount`.
    pub max_delivery_count: u32,
    /// Accepted shared access policy name.
    pub policy_name: String,
    /// Accepted shared access policy key.
    pub policy_key: String,
    /// Sequence number of each queue's first message. Partitioned entities
    /// carry the partition in the high bits (e.g. `3 << 48`), beyond `i32`.
    pub first_sequence_number: i64,
}

impl DoubleConfig {
    /// The default policy, sequence numbers from 1.
    pub fn new(lock_duration: Duration, max_delivery_count: u32) -> Self {
        Self {
            lock_duration,
            max_delivery_count,
            policy_name: DOUBLE_POLICY_NAME.to_owned(),
            policy_key: DOUBLE_POLICY_KEY.to_owned(),
            first_sequence_number: 1,
        }
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
}

#[derive(Debug)]
struct QueueState {
    next_seq: i64,
    messages: BTreeMap<i64, Stored>,
    dead: Vec<DeadLetteredMessage>,
}

impl QueueState {
    fn new(first: i64) -> Self {
        Self {
            next_seq: first,
            messages: BTreeMap::new(),
            dead: Vec::new(),
        }
    }

    /// Makes a message available again, or dead-letters it past the
    /// maximum delivery count.
    fn release(&mut self, seq: i64, max_delivery_count: u32) {
        let exhausted = self
            .messages
            .get(&seq)
            .is_some_and(|m| m.delivery_count >= max_delivery_count);
        if exhausted {
            if let Some(m) = self.messages.remove(&seq) {
                self.dead.push(DeadLetteredMessage {
                    message_id: m.message_id,
                    sequence_number: m.seq,
                    body: String::from_utf8_lossy(&m.body).into_owned(),
                    properties: m.properties,
                    delivery_count: m.delivery_count,
                    reason: "MaxDeliveryCountExceeded".to_owned(),
                });
            }
        } else if let Some(m) = self.messages.get_mut(&seq) {
            m.state = MessageState::Available;
            m.lock_token = None;
        }
    }

    /// Applies lock expiries and due schedules.
    fn reclaim(&mut self, now: Instant, max_delivery_count: u32) {
        let mut expired = Vec::new();
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
        let mut c = QueueCounts {
            dead_lettered: self.dead.len() as u64,
            ..QueueCounts::default()
        };
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
    key: azure_core::auth::Secret,
    queues: Mutex<HashMap<String, QueueState>>,
    wake: Notify,
    stop: watch::Sender<bool>,
}

impl Shared {
    fn queues(&self) -> MutexGuard<'_, HashMap<String, QueueState>> {
        // Critical sections never await and leave no half-made change.
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the queue (created on first use) after reclaiming
    /// expired locks and due messages.
    fn with_queue<R>(&self, name: &str, f: impl FnOnce(&mut QueueState, Instant) -> R) -> R {
        let now = Instant::now();
        let mut queues = self.queues();
        let q = queues
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| QueueState::new(self.cfg.first_sequence_number));
        q.reclaim(now, self.cfg.max_delivery_count);
        f(q, now)
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }
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

    /// Adapter settings reaching `queue` on this double with its policy.
    pub fn config(&self, queue: &str) -> ServiceBusConfig {
        ServiceBusConfig {
            namespace: DOUBLE_NAMESPACE.to_owned(),
            queue: queue.to_owned(),
            policy_name: self.shared.cfg.policy_name.clone(),
            policy_key: self.shared.cfg.policy_key.clone(),
            partitions: 1,
            endpoint: Some(self.endpoint()),
        }
    }

    /// A valid `Authorization` header value for requests under
    /// `resource_path` (e.g. `/myqueue`), valid for an hour: for tests that
    /// speak raw HTTP to the double.
    pub fn authorization(&self, resource_path: &str) -> String {
        let resource = format!("https://{DOUBLE_NAMESPACE}.servicebus.windows.net{resource_path}");
        // Signing only fails on a key that is not base64, and
        // `signing_secret` always produces base64.
        sas::token(
            &resource,
            &self.shared.cfg.policy_name,
            &self.shared.key,
            Duration::from_secs(3600),
        )
        .unwrap_or_default()
    }

    /// Messages the double moved to `queue`'s dead-letter list, oldest first.
    pub fn dead_lettered(&self, queue: &str) -> Vec<DeadLetteredMessage> {
        self.shared.with_queue(queue, |q, _| q.dead.clone())
    }

    /// Message counts of `queue`.
    pub fn counts(&self, queue: &str) -> QueueCounts {
        self.shared.with_queue(queue, |q, _| q.counts())
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

/// Serves a double on `127.0.0.1:0` set up by `cfg`.
///
/// # Errors
/// When no local port can be bound.
pub async fn spawn_double_with(cfg: DoubleConfig) -> std::io::Result<(SocketAddr, DoubleHandle)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        key: sas::signing_secret(&cfg.policy_key),
        cfg,
        queues: Mutex::new(HashMap::new()),
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

/// The `401` answer for a request without a valid token, if it has none.
fn unauthorized(shared: &Shared, headers: &HeaderMap, uri: &Uri) -> Option<Response> {
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    sas::verify(
        auth,
        &shared.cfg.policy_name,
        &shared.key,
        uri.path(),
        Utc::now().timestamp(),
    )
    .err()
    .map(|why| error(StatusCode::UNAUTHORIZED, &why))
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(s.trim())
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

async fn send(
    State(shared): SharedState,
    Path(queue): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(denied) = unauthorized(&shared, &headers, &uri) {
        return denied;
    }
    let broker: Map<String, Value> = match headers.get("brokerproperties") {
        None => Map::new(),
        Some(v) => match v.to_str().ok().map(serde_json::from_str::<Value>) {
            Some(Ok(Value::Object(m))) => m,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "BrokerProperties is not a JSON object",
                )
            }
        },
    };
    let scheduled = match broker.get("ScheduledEnqueueTimeUtc") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_str().and_then(parse_time) {
            Some(at) => Some(at),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "ScheduledEnqueueTimeUtc is not an RFC 1123 date",
                )
            }
        },
    };
    let message_id = broker
        .get("MessageId")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
    let settable: Map<String, Value> = broker
        .into_iter()
        .filter(|(k, _)| SETTABLE.contains(&k.as_str()))
        .collect();
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
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    shared.with_queue(&queue, |q, now| {
        let state = match scheduled {
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
                message_id,
                body,
                content_type,
                broker: settable,
                properties,
                enqueued_at: Utc::now(),
                delivery_count: 0,
                lock_token: None,
                state,
            },
        );
    });
    shared.wake.notify_waiters();
    StatusCode::CREATED.into_response()
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
        let until = next_due.map_or(deadline, |t| t.min(deadline));
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
    props
        .entry("TimeToLive")
        .or_insert_with(|| DEFAULT_TIME_TO_LIVE.into());
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
    if let Some(denied) = unauthorized(&shared, &headers, &uri) {
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
    if let Some(denied) = unauthorized(&shared, &headers, &uri) {
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
    if let Some(denied) = unauthorized(shared, headers, uri) {
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
    if let Some(denied) = unauthorized(&shared, &headers, &uri) {
        return denied;
    }
    let counts = shared.with_queue(&queue, |q, _| q.counts());
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
            r#"<DeadLetteringOnMessageExpiration>false</DeadLetteringOnMessageExpiration>"#,
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
