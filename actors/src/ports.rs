//! Ports: the traits behind which queues and stores live.
//!
//! The actors and the gateway only see these traits; the engine crate provides
//! the adapters (in-process memory for the embedded default, and the real
//! backends). Traits use `async_trait` so they can be held as `Arc<dyn _>`:
//! one boxed future per call is negligible next to a network round trip, and
//! it keeps backend choice a run-time decision (`--queue`, `--redis-url`, ...).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::control::{ControlReply, ControlRequest, EngineCard, IncomingRequest};
#[cfg(doc)]
use crate::domain::ownership::LeaseRules;
use crate::domain::ownership::{Fence, Lease, LeaseAnswer, LeaseOp, PartitionId};
use crate::domain::{
    DeliveryRecord, DroneRequest, DroneState, Package, PackagePatch, TrackingEvent, Upserted,
};

/// A backend failure. Everything here is retryable unless it says otherwise:
/// the workflow abandons the message and lets the queue redeliver it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or timed out.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// A stored document could not be decoded; retrying will not help.
    #[error("corrupt document: {0}")]
    Corrupt(String),
    /// Not tried: the dependency is known to be down (see
    /// [`crate::health`]), so the request fails at once instead of waiting
    /// for a timeout.
    #[error("{} is down; retry in {} s", .0.dependency, .0.retry_after.as_secs().max(1))]
    DependencyDown(DependencyDown),
}

/// The dependency a request needed and found down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyDown {
    /// Its name (`queue`, `deliveries`, `packages`, …).
    pub dependency: &'static str,
    /// When to try again: the next probe's time.
    pub retry_after: Duration,
}

/// Result of store and queue operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The queue operation a message asks for: the original's `operation`
/// application property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Create a delivery (body: the delivery request).
    Delivery,
    /// Change pickup/dropoff/deadline (body: the reschedule request).
    Reschedule,
    /// Cancel (body: the delivery id as a JSON string).
    Cancel,
    /// Store a recipient's confirmation (body: `{"deliveryId", "confirmation"}`).
    /// Sent by a `gateway`-role process, which runs no delivery actors, so
    /// the delivery's actor stays its single writer.
    Confirm,
}

impl Operation {
    /// The property value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivery => "delivery",
            Self::Reschedule => "reschedule",
            Self::Cancel => "cancel",
            Self::Confirm => "confirm",
        }
    }

    /// Parses the property value (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "delivery" => Some(Self::Delivery),
            "reschedule" => Some(Self::Reschedule),
            "cancel" => Some(Self::Cancel),
            "confirm" => Some(Self::Confirm),
            _ => None,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message as it travels on the queue: the original's JSON body plus its
/// application properties. The operation is kept as the raw property string
/// so that an unknown operation reaches the workflow and is dead-lettered with
/// a reason instead of being dropped by a decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct QueueMessage {
    /// Unique message id.
    pub message_id: String,
    /// `operation` property: `delivery | reschedule | cancel | confirm`.
    pub operation: String,
    /// UTF-8 JSON body.
    pub body: String,
    /// Correlation id carried across the queue (the original's `Diagnostic-Id`).
    pub correlation_id: Option<String>,
    /// When the producer sent it.
    pub enqueued_at: DateTime<Utc>,
    /// W3C `traceparent` of the request that sent it, when that request was
    /// traced: the worker's spans continue the sender's trace (see
    /// [`crate::tracecontext`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// W3C `tracestate` that came with `traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// Whether the message travels in the queue's **expedited lane**: the
    /// create of an expedited delivery, so that it is not stuck behind a
    /// backlog of normal messages, and what follows it (reschedule, cancel),
    /// so that it stays behind its create in one lane. A queue with lanes
    /// sends it there and marks what it receives from there; a queue
    /// without lanes ignores it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expedited: bool,
}

impl QueueMessage {
    /// A new message with a fresh id.
    pub fn new(
        operation: Operation,
        body: &serde_json::Value,
        correlation_id: Option<String>,
    ) -> Self {
        Self::with_body(operation, body.to_string(), correlation_id)
    }

    /// A new message with a fresh id and an already serialised JSON body.
    pub fn with_body(operation: Operation, body: String, correlation_id: Option<String>) -> Self {
        Self {
            message_id: uuid::Uuid::new_v4().to_string(),
            operation: operation.as_str().to_owned(),
            body,
            correlation_id,
            enqueued_at: Utc::now(),
            traceparent: None,
            tracestate: None,
            expedited: false,
        }
    }

    /// The delivery id this message is about, when it can be read cheaply;
    /// used as the routing key so that all messages of one delivery are
    /// handled in order by the same worker.
    pub fn routing_key(&self) -> String {
        #[derive(Deserialize)]
        struct Id {
            #[serde(rename = "deliveryId")]
            delivery_id: String,
        }
        serde_json::from_str::<Id>(&self.body)
            .map(|i| i.delivery_id)
            .or_else(|_| serde_json::from_str::<String>(&self.body))
            .unwrap_or_else(|_| self.message_id.clone())
    }
}

/// Opaque token identifying one peek-locked delivery of a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LockToken(pub String);

/// A message received under a peek-lock.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    /// The message.
    pub message: QueueMessage,
    /// The lock to settle it with.
    pub lock: LockToken,
    /// 1 on first delivery, incremented on each redelivery.
    pub delivery_count: u32,
    /// The partition whose stream it was read from; `None` for a queue
    /// that is not partitioned ([`MessageQueue::partitioned`]).
    pub partition: Option<PartitionId>,
}

/// A competing-consumer queue with peek-lock semantics (Service Bus style):
/// a received message stays invisible until it is completed (deleted),
/// abandoned (made visible again) or its lock expires.
#[async_trait]
pub trait MessageQueue: Send + Sync + 'static {
    /// Human-readable backend name for logs (`in-process`, `redis-streams`, ...).
    fn backend(&self) -> &'static str;
    /// Whether the queue keeps the messages of each partition apart (one
    /// stream per partition, chosen by [`QueueMessage::routing_key`]), so
    /// that an engine receives only the messages of the partitions it
    /// holds. A queue that is not partitioned hands any message to any
    /// engine.
    fn partitioned(&self) -> bool {
        false
    }
    /// Sends a message (to its partition's stream on a partitioned queue).
    /// Returns only once the broker has accepted it.
    async fn send(&self, message: QueueMessage) -> StoreResult<()>;
    /// Receives up to `max` messages, waiting up to `wait` for the first one.
    /// A partitioned queue reads only the partitions in `from`, each with
    /// the lease epoch this engine holds it under: an epoch the queue has
    /// not seen for that partition means the partition has just been
    /// gained, and its messages still locked by a previous holder are taken
    /// over at once instead of after their locks expire. A queue that is
    /// not partitioned ignores `from`.
    async fn receive(
        &self,
        from: &[Fence],
        max: usize,
        wait: Duration,
    ) -> StoreResult<Vec<ReceivedMessage>>;
    /// Deletes a processed message.
    async fn complete(&self, lock: &LockToken) -> StoreResult<()>;
    /// Gives a message back for redelivery after `delay`.
    async fn abandon(&self, lock: &LockToken, delay: Duration) -> StoreResult<()>;
    /// Removes a message that will never succeed. The caller has already
    /// written it to the [`DeadLetterStore`] with its reason.
    async fn dead_letter(&self, lock: &LockToken, reason: &str) -> StoreResult<()>;
    /// Extends a lock for long work.
    async fn renew(&self, lock: &LockToken) -> StoreResult<()>;
    /// Messages waiting (not locked), or `None` when the broker does not
    /// tell this client: the count is information for operators and
    /// autoscalers, never a condition of serving (on Service Bus it needs a
    /// key with the Manage right, which a least-privilege deployment lacks).
    async fn depth(&self) -> StoreResult<Option<u64>>;
    /// Messages the broker dead-lettered on its own (Service Bus's
    /// dead-letter subqueues), at most `max`, as [`DeadLetter`]s with
    /// source `broker` and an id that [`Self::replay_dead_letter`] takes.
    /// Brokers without their own dead-letter queue have none.
    async fn dead_letters(&self, max: usize) -> StoreResult<Vec<DeadLetter>> {
        let _ = max;
        Ok(Vec::new())
    }
    /// Sends the broker dead letter `id` back to the queue and then removes
    /// it from the broker's dead letters; the message sent, or `None` when
    /// the broker holds no such dead letter.
    async fn replay_dead_letter(&self, id: &str) -> StoreResult<Option<QueueMessage>> {
        let _ = id;
        Ok(None)
    }
    /// Whether the broker answers, for the dependency report. By default a
    /// depth read; a broker whose depth needs rights the engine may lack
    /// answers from its own recent requests instead.
    async fn ping(&self) -> StoreResult<()> {
        self.depth().await.map(|_| ())
    }
    /// Messages handed to consumers (of every process) and not settled yet,
    /// when the broker can tell; the consumer-lag metric.
    async fn unsettled(&self) -> StoreResult<Option<u64>> {
        Ok(None)
    }
    /// Stops receiving and hands back, at once, what was received ahead of
    /// the caller and not handed to it yet, so that whoever holds the
    /// partitions next gets those messages without waiting for their locks
    /// to expire. Called once, when the engine shuts down; a closed queue
    /// still sends and settles, and receives nothing. Queues that receive
    /// only when asked have nothing to do.
    async fn close(&self) {}
}

/// What a delivery save did. A refused save is an answer, not an error:
/// the writer's copy is out of date and it must reload before writing again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// Written.
    Written,
    /// Written again: its event was the last one stored already (a retried
    /// save whose answer was lost), so the event log keeps one copy.
    Repeated,
    /// Refused: a newer version of the record is stored.
    Stale,
    /// Refused: the writer's lease epoch is not the partition's current one
    /// (another engine owns the partition now).
    Fenced,
}

impl Saved {
    /// Whether the record is stored as written.
    pub fn is_stored(self) -> bool {
        matches!(self, Self::Written | Self::Repeated)
    }
}

/// Delivery documents and their tracking events.
#[async_trait]
pub trait DeliveryStore: Send + Sync + 'static {
    /// Backend name.
    fn backend(&self) -> &'static str;
    /// Reads a delivery.
    async fn get(&self, id: &str) -> StoreResult<Option<DeliveryRecord>>;
    /// Writes a delivery and, in the same step, the tracking event of its
    /// stage change, unless a newer version is stored or, with a `fence`,
    /// the writer's lease epoch is not the partition's current one (the
    /// store checks both in the same atomic step as the write).
    async fn save(
        &self,
        record: &DeliveryRecord,
        event: Option<&TrackingEvent>,
        fence: Option<Fence>,
    ) -> StoreResult<Saved>;
    /// Tracking events of a delivery, oldest first.
    async fn events(&self, id: &str) -> StoreResult<Vec<TrackingEvent>>;
    /// Ids of deliveries waiting for a drone (stage Created or Rescheduled),
    /// so a restarted fleet can pick them up again.
    async fn awaiting_drone(&self) -> StoreResult<Vec<String>>;
    /// How many deliveries wait for a drone, for figures polled often
    /// (`GET /api/fleet`): a store that can count without listing should.
    async fn awaiting_drone_count(&self) -> StoreResult<u64> {
        Ok(self.awaiting_drone().await?.len() as u64)
    }
    /// Ids of deliveries whose durable timer ([`DeliveryRecord::wake_at`])
    /// is due at `now`, earliest first, at most `limit`. The store keeps the
    /// timers indexed by time in the same atomic write as each record
    /// ([`Self::save`]), so a due timer stays listed until a save clears or
    /// moves it.
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<String>>;
    /// How many deliveries under way are at risk of missing their deadline
    /// ([`DeliveryRecord::at_risk`], not yet completed or cancelled),
    /// indexed by [`Self::save`] like the timers.
    async fn at_risk_count(&self) -> StoreResult<u64>;
    /// Liveness of the backend (readiness probe).
    async fn ping(&self) -> StoreResult<()>;
}

/// What a claim for a drone found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claimed {
    /// The drone now serving the job, stored with it: the drone that
    /// already served the delivery (its job updated when the ticket is
    /// newer), or the nearest free drone, taken out of the pool.
    Drone(Box<DroneState>),
    /// No drone of a class that carries the package's size is free (no
    /// drone at all, for a small package).
    NoneFree,
    /// Drones of those classes are free, but none can take this job now:
    /// over their weight limit, or their batteries do not hold the flight
    /// (see [`crate::domain::limits`]). Another job may still find one.
    NoneFits,
    /// The delivery's drone of an older request (a reschedule) is still
    /// serving it: the claim waits until that drone is released.
    Busy(String),
    /// Refused: the claimer's lease epoch is not the partition's current
    /// one (another engine serves the delivery now).
    Fenced,
}

/// Drones, and the pool of free drones every engine's fleet claims from.
///
/// The store is the arbiter of assignment: a claim takes the nearest free
/// drone out of the pool and records which delivery it serves in one
/// atomic step, so a drone serves one delivery at a time and a delivery has
/// one drone, whichever engines claim at once. A claimed drone's writes
/// carry its claim number and its delivery's fence: once it has been
/// released (and perhaps claimed again) or its delivery's partition has
/// moved to another engine, a late write is refused.
#[async_trait]
pub trait DroneStore: Send + Sync + 'static {
    /// Backend name.
    fn backend(&self) -> &'static str;
    /// Reads a drone.
    async fn get(&self, id: &str) -> StoreResult<Option<DroneState>>;
    /// Adds the drones not stored yet, free, to the pool (idempotent, so
    /// every engine may seed its share at start); returns how many were
    /// added. A stored free drone missing from the pool (stored by an
    /// earlier version) is put back in it.
    async fn seed(&self, drones: &[DroneState]) -> StoreResult<usize>;
    /// Claims the nearest free drone that can take `job` at `now` (see
    /// [`crate::domain::limits::choose`] and [`Claimed`]), atomically, if `fence`
    /// (the delivery's partition) is current; the claimed drone is stored
    /// with the job (`HeadedToPickup`, a new claim number) as of `now`.
    async fn claim(
        &self,
        job: &DroneRequest,
        fence: Option<Fence>,
        now: DateTime<Utc>,
    ) -> StoreResult<Claimed>;
    /// Writes a claimed drone's progress, if `drone.claim` is still its
    /// claim and `fence` is current; false when refused. A free drone
    /// flying home (after [`Self::release`], with the job's claim number)
    /// moves in the pool with it until another claim takes it.
    async fn put(&self, drone: &DroneState, fence: Option<Fence>) -> StoreResult<bool>;
    /// Ends a claimed drone's job for `delivery_id`: stores `drone` (free,
    /// flying home from where it is) and puts it back in the pool, under
    /// the same conditions as [`Self::put`]; false when refused.
    async fn release(
        &self,
        drone: &DroneState,
        delivery_id: &str,
        fence: Option<Fence>,
    ) -> StoreResult<bool>;
    /// All drones.
    async fn list(&self) -> StoreResult<Vec<DroneState>>;
    /// Drones in all, and free in the pool.
    async fn counts(&self) -> StoreResult<(u64, u64)>;
    /// Liveness of the backend.
    async fn ping(&self) -> StoreResult<()>;
}

/// Packages (the original Package service's collection).
#[async_trait]
pub trait PackageStore: Send + Sync + 'static {
    /// Backend name.
    fn backend(&self) -> &'static str;
    /// Reads a package.
    async fn get(&self, id: &str) -> StoreResult<Option<Package>>;
    /// Inserts or replaces, atomically, telling which happened.
    async fn upsert(&self, package: &Package) -> StoreResult<Upserted>;
    /// Applies a partial update; `None` when the package does not exist.
    async fn patch(&self, id: &str, patch: &PackagePatch) -> StoreResult<Option<Package>>;
    /// Liveness of the backend.
    async fn ping(&self) -> StoreResult<()>;
}

/// A message that could not be processed, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The queue message id.
    pub id: String,
    /// The message as received.
    pub message: QueueMessage,
    /// Why it was given up.
    pub reason: String,
    /// Deliveries attempted.
    pub attempts: u32,
    /// When it was first dead-lettered.
    pub first_seen: DateTime<Utc>,
    /// When it was last dead-lettered.
    pub last_seen: DateTime<Utc>,
    /// Who gave it up: `engine` (the workflow, kept in the dead-letter
    /// store) or `broker` (the queue's own dead-letter queue: Service Bus's
    /// `$DeadLetterQueue`, past the queue's `MaxDeliveryCount` or when a
    /// message's time to live ran out).
    #[serde(default)]
    pub source: DeadLetterSource,
    /// The broker's description of why (`DeadLetterErrorDescription`),
    /// when it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Who dead-lettered a message (see [`DeadLetter::source`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterSource {
    /// The workflow, with its reason.
    #[default]
    Engine,
    /// The broker on its own.
    Broker,
}

/// Dead letters, for operators to inspect and replay.
#[async_trait]
pub trait DeadLetterStore: Send + Sync + 'static {
    /// Backend name.
    fn backend(&self) -> &'static str;
    /// Records a dead letter (an existing id is updated: attempts and last_seen).
    async fn put(&self, letter: DeadLetter) -> StoreResult<()>;
    /// Most recent first.
    async fn list(&self, offset: usize, limit: usize) -> StoreResult<Vec<DeadLetter>>;
    /// Reads one.
    async fn get(&self, id: &str) -> StoreResult<Option<DeadLetter>>;
    /// Number of dead letters.
    async fn count(&self) -> StoreResult<u64>;
    /// Removes one (after it was replayed); false when it did not exist.
    async fn remove(&self, id: &str) -> StoreResult<bool>;
    /// Liveness of the backend.
    async fn ping(&self) -> StoreResult<()>;
}

pub use crate::domain::HistoryEntry;

/// Drone utilisation of one owner in one month, the original's
/// `GET /api/dronedeliveries/utilization` answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Utilization {
    /// Miles flown.
    pub traveled_miles: f64,
    /// Hours drones were assigned.
    pub assigned_hours: f64,
}

/// An owner's finished deliveries in one month, for invoicing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MonthSummary {
    /// Deliveries completed.
    pub completed: u64,
    /// Deliveries cancelled.
    pub cancelled: u64,
    /// Total weight of the completed deliveries' packages (the unit the
    /// clients use, kilograms by convention).
    pub total_weight: f64,
}

impl MonthSummary {
    /// Counts `count` deliveries that ended in `stage` with packages
    /// weighing `weight` in all: completed ones count with their weight,
    /// cancelled ones without; other stages are not finished.
    pub fn add(&mut self, stage: crate::domain::DeliveryStage, count: u64, weight: f64) {
        match stage {
            crate::domain::DeliveryStage::Completed => {
                self.completed += count;
                self.total_weight += weight;
            }
            crate::domain::DeliveryStage::Cancelled => self.cancelled += count,
            _ => {}
        }
    }
}

/// Finished deliveries.
#[async_trait]
pub trait HistoryStore: Send + Sync + 'static {
    /// Backend name.
    fn backend(&self) -> &'static str;
    /// Records a finished delivery (idempotent by delivery id).
    async fn record(&self, entry: &HistoryEntry) -> StoreResult<()>;
    /// Sums an owner's deliveries finished in a calendar month (UTC).
    async fn utilization(&self, owner_id: &str, year: i32, month: u32) -> StoreResult<Utilization>;
    /// Counts an owner's deliveries finished in a calendar month (UTC), and
    /// the weight of the packages of the completed ones.
    async fn month_summary(
        &self,
        owner_id: &str,
        year: i32,
        month: u32,
    ) -> StoreResult<MonthSummary>;
    /// Liveness of the backend.
    async fn ping(&self) -> StoreResult<()>;
}

/// A request to be notified about a delivery (`notifymerequests`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifyMeRequest {
    /// The delivery.
    pub delivery_id: String,
    /// E-mail address, if any.
    pub email_address: Option<String>,
    /// Phone number for SMS, if any.
    pub sms: Option<String>,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
}

/// Notify-me requests.
#[async_trait]
pub trait NotifyMeStore: Send + Sync + 'static {
    /// Backend name.
    fn backend(&self) -> &'static str;
    /// Adds a request.
    async fn add(&self, request: &NotifyMeRequest) -> StoreResult<()>;
    /// Requests of a delivery, oldest first.
    async fn list(&self, delivery_id: &str) -> StoreResult<Vec<NotifyMeRequest>>;
}

/// Idempotency keys: the first answer given for a key, returned again for
/// a repeated request (`Idempotency-Key` on POST).
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Backend name.
    fn backend(&self) -> &'static str;
    /// Stores `value` under `key` for `ttl` unless the key exists; returns
    /// the value already stored, if any (atomic: of two concurrent callers
    /// exactly one gets `None`).
    async fn put_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> StoreResult<Option<String>>;
    /// The value stored under `key`, if it has not expired.
    async fn get(&self, key: &str) -> StoreResult<Option<String>>;
}

/// Partition leases and cluster membership: where the engines agree on who
/// owns which partition (see [`crate::domain::ownership`] for the rules).
/// Every expiry is measured on the store's clock, never on an engine's.
#[async_trait]
pub trait OwnershipStore: Send + Sync + 'static {
    /// Backend name.
    fn backend(&self) -> &'static str;
    /// Registers or refreshes `engine` as live for `ttl`; returns the live
    /// engines, sorted.
    async fn heartbeat(&self, engine: &str, ttl: Duration) -> StoreResult<Vec<String>>;
    /// Removes `engine` from the live engines (a graceful stop).
    async fn leave(&self, engine: &str) -> StoreResult<()>;
    /// The live engines, sorted, without registering the caller.
    async fn engines(&self) -> StoreResult<Vec<String>>;
    /// Applies a lease operation to `partition` for `engine` (a grant or
    /// renewal lasts `ttl`), atomically, as [`LeaseRules::decide`] says.
    async fn lease(
        &self,
        partition: PartitionId,
        engine: &str,
        op: LeaseOp,
        ttl: Duration,
    ) -> StoreResult<LeaseAnswer>;
    /// Every partition's stored lease (index = partition) and the store's
    /// clock, ms, read at one instant.
    async fn leases(&self, partitions: u32) -> StoreResult<(Vec<Option<Lease>>, u64)>;
    /// Tells every engine that the leases or the membership changed (an
    /// engine released partitions, joined or left), so they plan again now
    /// instead of at their next heartbeat: a hand-over then takes a round
    /// trip, not a heartbeat. Best effort: heartbeats converge without it.
    async fn announce(&self) -> StoreResult<()> {
        Ok(())
    }
    /// Resolves at the next announcement (any engine's, this one's
    /// included) made after the previous call returned, or never for a
    /// store that cannot tell. For one listener per engine.
    async fn next_announcement(&self) {
        std::future::pending::<()>().await;
    }
}

/// Why a call to another engine got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No live engine has that id.
    #[error("no live engine {0}")]
    UnknownEngine(String),
    /// The engine is listed but nobody received the request: it stopped or
    /// died and its card has not lapsed yet.
    #[error("engine {0} is not listening (stopped, or dead and not yet timed out)")]
    NotListening(String),
    /// The request was received but not answered in time.
    #[error("engine {engine} did not answer within {timeout:?}")]
    Timeout {
        /// The engine called.
        engine: String,
        /// How long the caller waited.
        timeout: Duration,
    },
    /// The control plane's store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Cluster membership cards and operator commands carried between engines
/// (see [`crate::cluster`]). Requests are at most once: a request nobody
/// receives, or nobody answers in time, is an error for the caller, never
/// kept for later.
#[async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// Backend name.
    fn backend(&self) -> &'static str;
    /// Publishes `card` (replacing the engine's previous one) for `ttl`.
    async fn register(&self, card: &EngineCard, ttl: Duration) -> StoreResult<()>;
    /// Removes an engine's card at once (a graceful stop).
    async fn deregister(&self, engine: &str) -> StoreResult<()>;
    /// The cards that have not lapsed, sorted by engine id.
    async fn members(&self) -> StoreResult<Vec<EngineCard>>;
    /// Sends `request` to `engine` and waits up to `timeout` for its reply.
    async fn call(
        &self,
        engine: &str,
        request: &ControlRequest,
        timeout: Duration,
    ) -> Result<ControlReply, CallError>;
    /// The next request addressed to `engine` (the caller's own id). For
    /// one serving loop per engine; never resolves on a plane that carries
    /// no requests.
    async fn next_request(&self, engine: &str) -> StoreResult<IncomingRequest>;
    /// Answers a request received with [`ControlPlane::next_request`].
    async fn reply(&self, to: &IncomingRequest, reply: &ControlReply) -> StoreResult<()>;
}

/// The set of adapters one engine runs on.
#[derive(Clone)]
pub struct Backends {
    /// The delivery request queue.
    pub queue: Arc<dyn MessageQueue>,
    /// Delivery documents and events.
    pub deliveries: Arc<dyn DeliveryStore>,
    /// Drone state.
    pub drones: Arc<dyn DroneStore>,
    /// Packages.
    pub packages: Arc<dyn PackageStore>,
    /// Dead letters.
    pub dead_letters: Arc<dyn DeadLetterStore>,
    /// Finished deliveries.
    pub history: Arc<dyn HistoryStore>,
    /// Notify-me requests.
    pub notify: Arc<dyn NotifyMeStore>,
    /// Idempotency keys.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Partition leases and cluster membership.
    pub ownership: Arc<dyn OwnershipStore>,
    /// Engines' cards and operator commands between engines.
    pub control: Arc<dyn ControlPlane>,
}

impl Backends {
    /// One line naming each backend, for the start-up log.
    pub fn describe(&self) -> String {
        format!(
            "queue={} deliveries={} drones={} packages={} deadletters={} history={} notify={} idempotency={} ownership={} control={}",
            self.queue.backend(),
            self.deliveries.backend(),
            self.drones.backend(),
            self.packages.backend(),
            self.dead_letters.backend(),
            self.history.backend(),
            self.notify.backend(),
            self.idempotency.backend(),
            self.ownership.backend(),
            self.control.backend()
        )
    }
}

impl fmt::Debug for Backends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}
