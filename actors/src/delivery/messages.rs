//! Messages of the delivery actor.

use chrono::{DateTime, Utc};
use ractor::RpcReplyPort;

use crate::domain::{
    Confirmation, DeliveryRecord, DeliveryRequest, DeliveryStage, Location, RescheduleRequest,
};
use crate::ports::StoreError;

/// A delivery to create.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// The validated request.
    pub request: DeliveryRequest,
    /// Correlation id carried from the HTTP request.
    pub correlation_id: Option<String>,
}

/// What `Create` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Stored for the first time.
    Created,
    /// It existed already (a redelivered message); nothing changed.
    AlreadyExists,
}

/// Why a command was refused. These are answers, not failures: the actor
/// keeps running.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// No such delivery (yet).
    #[error("delivery not found")]
    NotFound,
    /// The command does not apply in this stage.
    #[error("not possible in stage {}", .0.name())]
    WrongStage(DeliveryStage),
    /// The command's data is invalid.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The store refused the change; retry later.
    #[error(transparent)]
    Store(StoreError),
}

/// Progress reported by the drone serving the delivery. Each carries the
/// ticket of the drone request it answers.
#[derive(Debug, Clone)]
pub enum DroneReport {
    /// A drone took the job.
    Assigned {
        /// Request ticket.
        ticket: u64,
        /// The drone.
        drone_id: String,
        /// Its position now.
        position: Location,
        /// Expected at pickup.
        pickup_eta: DateTime<Utc>,
        /// Expected at dropoff.
        delivery_eta: DateTime<Utc>,
    },
    /// The package is on board.
    PickedUp {
        /// Request ticket.
        ticket: u64,
        /// The drone.
        drone_id: String,
        /// The pickup point.
        position: Location,
        /// Expected at dropoff.
        delivery_eta: DateTime<Utc>,
    },
    /// The package was dropped off.
    Delivered {
        /// Request ticket.
        ticket: u64,
        /// The drone.
        drone_id: String,
        /// The dropoff point.
        position: Location,
        /// Metres flown for this delivery (from accepting the job to dropoff).
        flown_m: f64,
    },
}

impl DroneReport {
    /// The request ticket.
    pub fn ticket(&self) -> u64 {
        match self {
            Self::Assigned { ticket, .. }
            | Self::PickedUp { ticket, .. }
            | Self::Delivered { ticket, .. } => *ticket,
        }
    }
}

/// Messages of the delivery actor.
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
    /// The fleet gave up finding a drone for this request: cancel with the
    /// reason and dead-letter the request (compensation).
    Compensate {
        /// The request ticket given up on.
        ticket: u64,
        /// Why.
        reason: String,
    },
}
