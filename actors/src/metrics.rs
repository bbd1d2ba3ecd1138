//! Metric names, defined once. Prometheus conventions: `dronedelivery_`
//! prefix, `_total` counters, `_seconds` histograms.

/// HTTP requests, by method, route template and status.
pub const HTTP_REQUESTS_TOTAL: &str = "dronedelivery_http_requests_total";
/// HTTP request latency, by method and route template.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "dronedelivery_http_request_duration_seconds";
/// Delivery requests accepted (queued) by the gateway.
pub const DELIVERIES_ACCEPTED_TOTAL: &str = "dronedelivery_deliveries_accepted_total";
/// Deliveries created by the workflow.
pub const DELIVERIES_CREATED_TOTAL: &str = "dronedelivery_deliveries_created_total";
/// Deliveries that reached Completed.
pub const DELIVERIES_COMPLETED_TOTAL: &str = "dronedelivery_deliveries_completed_total";
/// Deliveries that reached Cancelled.
pub const DELIVERIES_CANCELLED_TOTAL: &str = "dronedelivery_deliveries_cancelled_total";
/// Time from creation to completion of a delivery (real time).
pub const DELIVERY_DURATION_SECONDS: &str = "dronedelivery_delivery_duration_seconds";
/// Time a delivery spent in a stage before leaving it, by the stage left.
pub const STAGE_DURATION_SECONDS: &str = "dronedelivery_stage_duration_seconds";
/// Time from a message's enqueueing to its first delivery to a consumer
/// (consumer lag), by `lane` (`expedited` or `normal`, see the queue's
/// expedited lane).
pub const QUEUE_LAG_SECONDS: &str = "dronedelivery_queue_lag_seconds";
/// Calls carried by one round trip of a batched store write, by `op`
/// (`packages.upsert`, `packages.get`, `deliveryhistory.record`): how much group commit
/// saves under the current load (1 when idle). Reported only by the stores
/// that batch (MongoDB), so not in [`ALL`].
pub const STORE_BATCH_SIZE: &str = "dronedelivery_store_batch_size";
/// 1 when the last readiness check passed, 0 when it failed.
pub const READY: &str = "dronedelivery_ready";
/// 1 while a dependency's last probe succeeded, 0 while it is down, by
/// `dependency` (see `health`).
pub const DEPENDENCY_UP: &str = "dronedelivery_dependency_up";
/// Notifications sent to notify-me subscribers.
pub const NOTIFICATIONS_TOTAL: &str = "dronedelivery_notifications_total";
/// Queue messages settled, by operation and outcome (completed, retried, deadlettered).
pub const MESSAGES_TOTAL: &str = "dronedelivery_queue_messages_total";
/// Messages waiting in the queue.
pub const QUEUE_DEPTH: &str = "dronedelivery_queue_depth";
/// Messages delivered to any consumer and not yet settled, as the broker sees it.
pub const QUEUE_UNSETTLED: &str = "dronedelivery_queue_unsettled";
/// Messages received and not yet settled by this process.
pub const MESSAGES_IN_FLIGHT: &str = "dronedelivery_queue_messages_in_flight";
/// Dead letters put back on the queue by an operator.
pub const DEAD_LETTERS_REPLAYED_TOTAL: &str = "dronedelivery_dead_letters_replayed_total";
/// Dead letters written, by `reason` label: the reason's kind (see [`DeadLetterKind`]).
pub const DEAD_LETTERS_TOTAL: &str = "dronedelivery_dead_letters_total";
/// Live actors, by kind (delivery, drone, fleet, supervisor, consumer).
pub const ACTORS_LIVE: &str = "dronedelivery_actors_live";
/// Circuit breaker state by backend: 0 closed, 1 open, 2 half-open.
pub const BREAKER_STATE: &str = "dronedelivery_breaker_state";
/// Deliveries given up and cancelled by compensation.
pub const COMPENSATIONS_TOTAL: &str = "dronedelivery_compensations_total";
/// Delivery actors activated (loaded from the store).
pub const ACTIVATIONS_TOTAL: &str = "dronedelivery_actor_activations_total";
/// Delivery actors stopped after an idle period.
pub const PASSIVATIONS_TOTAL: &str = "dronedelivery_actor_passivations_total";
/// Actor restarts, by supervisor.
pub const ACTOR_RESTARTS_TOTAL: &str = "dronedelivery_actor_restarts_total";
/// Deliveries under way at risk of missing their deadline (read from the
/// delivery store: the whole cluster's).
pub const DELIVERIES_AT_RISK: &str = "dronedelivery_deliveries_at_risk";
/// Deliveries completed after their deadline.
pub const DEADLINES_MISSED_TOTAL: &str = "dronedelivery_deadlines_missed_total";
/// Deliveries waiting for a free drone.
pub const FLEET_PENDING: &str = "dronedelivery_fleet_pending_requests";
/// Drones currently free.
pub const FLEET_FREE_DRONES: &str = "dronedelivery_fleet_free_drones";
/// Partitions this engine holds the lease of.
pub const OWNED_PARTITIONS: &str = "dronedelivery_owned_partitions";
/// Live engines, as this engine last saw them.
pub const CLUSTER_ENGINES: &str = "dronedelivery_cluster_engines";
/// Partition leases acquired, released (hand-over) and lost (taken over
/// after a lapse), by `change`.
pub const PARTITION_CHANGES_TOTAL: &str = "dronedelivery_partition_changes_total";

/// Buckets of the HTTP latency histogram, in seconds.
pub const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Buckets of the delivery duration histogram, in seconds.
pub const DELIVERY_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0,
];

/// Buckets of the queue lag and stage duration histograms, in seconds.
pub const LAG_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0,
];

/// Buckets of the store batch size histogram, in calls.
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Every metric the engine exports, for documentation and for the test
/// that checks each one is reported after a flow.
pub const ALL: &[&str] = &[
    HTTP_REQUESTS_TOTAL,
    HTTP_REQUEST_DURATION_SECONDS,
    DELIVERIES_ACCEPTED_TOTAL,
    DELIVERIES_CREATED_TOTAL,
    DELIVERIES_COMPLETED_TOTAL,
    DELIVERIES_CANCELLED_TOTAL,
    DELIVERY_DURATION_SECONDS,
    STAGE_DURATION_SECONDS,
    QUEUE_LAG_SECONDS,
    READY,
    DEPENDENCY_UP,
    NOTIFICATIONS_TOTAL,
    MESSAGES_TOTAL,
    QUEUE_DEPTH,
    QUEUE_UNSETTLED,
    MESSAGES_IN_FLIGHT,
    DEAD_LETTERS_REPLAYED_TOTAL,
    DEAD_LETTERS_TOTAL,
    DELIVERIES_AT_RISK,
    DEADLINES_MISSED_TOTAL,
    ACTORS_LIVE,
    BREAKER_STATE,
    COMPENSATIONS_TOTAL,
    ACTIVATIONS_TOTAL,
    PASSIVATIONS_TOTAL,
    ACTOR_RESTARTS_TOTAL,
    FLEET_PENDING,
    FLEET_FREE_DRONES,
    OWNED_PARTITIONS,
    CLUSTER_ENGINES,
    PARTITION_CHANGES_TOTAL,
];

/// The bounded `reason` label of [`DEAD_LETTERS_TOTAL`] (the full reason is
/// in the dead-letter store; a metric label must not carry free text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterKind {
    /// The message names no known operation.
    UnknownOperation,
    /// The body is not JSON.
    NotJson,
    /// The body or a field of it is invalid.
    Invalid,
    /// A transient failure outlasted the message's delivery attempts.
    RetriesExhausted,
    /// The command does not apply in the delivery's stage.
    WrongStage,
    /// Compensation: no drone could take the delivery.
    Compensated,
}

impl DeadLetterKind {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::UnknownOperation => "unknown_operation",
            Self::NotJson => "not_json",
            Self::Invalid => "invalid",
            Self::RetriesExhausted => "retries_exhausted",
            Self::WrongStage => "wrong_stage",
            Self::Compensated => "compensated",
        }
    }
}

/// Counts a live actor of `kind` for as long as the guard lives.
#[derive(Debug)]
pub struct LiveActor(&'static str);

impl LiveActor {
    /// Increments the gauge.
    pub fn new(kind: &'static str) -> Self {
        metrics::gauge!(ACTORS_LIVE, "kind" => kind).increment(1.0);
        Self(kind)
    }
}

impl Drop for LiveActor {
    fn drop(&mut self) {
        metrics::gauge!(ACTORS_LIVE, "kind" => self.0).decrement(1.0);
    }
}
