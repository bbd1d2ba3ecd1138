//! The actor protocol: every message the delivery, drone and fleet actors
//! send each other, in one place.
//!
//! The vocabulary is shared (a drone reports to a delivery, a delivery asks
//! the fleet for a drone, the fleet assigns a drone), so it lives apart from
//! any one actor's behaviour: [`crate::context::Context`] addresses actors
//! with these types alone, and each actor module (`delivery`, `drone`,
//! `fleet`) depends on this module and the context, never on another
//! actor's internals. The data carried (requests, reports, records) is the
//! domain's ([`crate::domain`]).

use ractor::RpcReplyPort;
use serde::Serialize;

pub use crate::domain::lifecycle::NewDelivery;
pub use crate::domain::{DroneReport, DroneRequest};

use crate::domain::lifecycle::Rejection;
use crate::domain::ownership::PartitionId;
use crate::domain::{Confirmation, DeliveryRecord, DroneState, RescheduleRequest};
use crate::ports::StoreError;

/// What `Create` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Stored for the first time (or revived after a compensation).
    Created,
    /// It existed already (a redelivered message); nothing changed.
    AlreadyExists,
}

/// Why a delivery command failed: the rules refused it (an answer, the
/// actor keeps running), or the store did (retry later).
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// Refused by the rules: unknown delivery, wrong stage, invalid data.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The store refused the change; retry later.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store refused the write because another writer changed the
    /// delivery (a newer version, or another engine's lease): the command is
    /// retried on the delivery's current state.
    #[error("the delivery changed elsewhere")]
    Superseded,
}

/// Messages of a delivery actor.
#[derive(Debug)]
pub enum DeliveryMsg {
    /// Create the delivery (idempotent).
    Create(
        Box<NewDelivery>,
        RpcReplyPort<Result<CreateOutcome, DeliveryError>>,
    ),
    /// Change route or times.
    Reschedule(RescheduleRequest, RpcReplyPort<Result<(), DeliveryError>>),
    /// Cancel (idempotent) and release the drone.
    Cancel(RpcReplyPort<Result<(), DeliveryError>>),
    /// Current record.
    Get(RpcReplyPort<Option<DeliveryRecord>>),
    /// The recipient confirms receipt of a completed delivery.
    Confirm(Box<Confirmation>, RpcReplyPort<Result<(), DeliveryError>>),
    /// Progress from the drone.
    Drone(DroneReport),
    /// Retry writing unsaved changes.
    Flush,
    /// Idle timer of the given generation expired: stop if still idle.
    Passivate(u64),
    /// The delivery's durable timer is due (from the fleet's timer
    /// poller): a scheduled delivery asks for its drone.
    Wake,
    /// The fleet gave up finding a drone for this request: cancel with the
    /// reason and dead-letter the request (compensation).
    Compensate {
        /// The request ticket given up on.
        ticket: u64,
        /// Why.
        reason: String,
    },
}

/// Messages of a drone.
#[derive(Debug)]
pub enum DroneMsg {
    /// The drone was claimed (again) while its actor runs here: the stored
    /// state with the claim (from the fleet).
    Assign(Box<DroneState>),
    /// Drop the job for this delivery; the drone goes back to the pool
    /// (from the fleet).
    Abort {
        /// The delivery whose job to drop.
        delivery_id: String,
    },
    /// Advance the simulation.
    Tick,
    /// The delivery stored the drop-off (or no longer wants this drone): the
    /// drone may forget the job and fly home. Sent by the delivery actor in
    /// answer to `Delivered`.
    Released {
        /// The delivery that let the drone go.
        delivery_id: String,
        /// The ticket of the job it let go.
        ticket: u64,
    },
}

/// Messages of the fleet.
#[derive(Debug)]
pub enum FleetMsg {
    /// Find a drone for a delivery (idempotent per delivery id; a newer
    /// ticket replaces an older request and releases its drone).
    Request(DroneRequest),
    /// The delivery no longer needs a drone (cancelled).
    Withdraw {
        /// The delivery.
        delivery_id: String,
    },
    /// A drone's job ended and it is back in the pool.
    Free {
        /// The drone.
        drone_id: String,
        /// The delivery it finished.
        delivery_id: String,
    },
    /// Restart a drone actor (after a failure and its backoff).
    Respawn(String),
    /// Claim drones for the waiting requests (again: a claim found none
    /// free, and engines release drones to the pool they share).
    Dispatch,
    /// Counts for operators.
    Snapshot(RpcReplyPort<FleetSnapshot>),
    /// This engine gained or lost partitions: the fleet serves the waiting
    /// deliveries of the partitions it holds, and only those.
    Partitions {
        /// Partitions gained: their waiting deliveries are read from the store.
        gained: Vec<PartitionId>,
        /// Partitions lost: their waiting requests are dropped here.
        lost: Vec<PartitionId>,
    },
    /// Give up on deliveries that waited longer than `--max-drone-wait-secs`.
    Expire,
    /// Read the deliveries' due timers and wake them (scheduled pickups).
    Timers,
}

/// What the fleet looks like now.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FleetSnapshot {
    /// Drones in the pool every engine shares (as last read).
    pub drones: usize,
    /// Drones free in the pool (as last read).
    pub free: usize,
    /// Drones flying a job for this engine's deliveries.
    pub flying: usize,
    /// Requests waiting for a drone.
    pub pending: usize,
    /// Drone actor restarts since the fleet started.
    pub restarts: u64,
}
