//! Drones: the simulated fleet.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::geo::Location;

/// What a drone is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DroneStatus {
    /// Parked at its depot, free.
    Available,
    /// Flying empty to a pickup.
    HeadedToPickup,
    /// Carrying a package to its dropoff.
    HeadedToDropoff,
    /// Flying home after a delivery or an abort; free to take a new job.
    Returning,
}

impl DroneStatus {
    /// Free drones are the ones the fleet may assign.
    pub fn is_free(self) -> bool {
        matches!(self, Self::Available | Self::Returning)
    }
}

/// The stored state of one drone: enough to resume a flight after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DroneState {
    /// Drone id (`drone-0042`).
    pub id: String,
    /// Home depot.
    pub depot: Location,
    /// Last known position.
    pub position: Location,
    /// Current activity.
    pub status: DroneStatus,
    /// Delivery being served, if any.
    pub delivery_id: Option<String>,
    /// Pickup point of the current job.
    pub pickup: Option<Location>,
    /// Dropoff point of the current job.
    pub dropoff: Option<Location>,
    /// Ticket of the delivery's drone request this job serves.
    #[serde(default)]
    pub ticket: u64,
    /// `flown_m` when the current job was accepted.
    #[serde(default)]
    pub job_start_m: f64,
    /// Total metres flown (drone utilisation).
    pub flown_m: f64,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl DroneState {
    /// A drone parked at its depot.
    pub fn parked(id: String, depot: Location) -> Self {
        Self {
            id,
            depot,
            position: depot,
            status: DroneStatus::Available,
            delivery_id: None,
            pickup: None,
            dropoff: None,
            ticket: 0,
            job_start_m: 0.0,
            flown_m: 0.0,
            updated_at: Utc::now(),
        }
    }

    /// Where the drone is flying now, if anywhere.
    pub fn target(&self) -> Option<Location> {
        match self.status {
            DroneStatus::Available => None,
            DroneStatus::HeadedToPickup => self.pickup,
            DroneStatus::HeadedToDropoff => self.dropoff,
            DroneStatus::Returning => Some(self.depot),
        }
    }
}

/// A delivery's request for a drone, as the fleet queues and assigns it.
#[derive(Debug, Clone, PartialEq)]
pub struct DroneRequest {
    /// The delivery.
    pub delivery_id: String,
    /// The delivery's request ticket (see
    /// [`DeliveryRecord::ticket`](super::DeliveryRecord::ticket)).
    pub ticket: u64,
    /// Where to pick up.
    pub pickup: Location,
    /// Where to drop off.
    pub dropoff: Location,
}

/// Progress reported by the drone serving a delivery. Each carries the
/// ticket of the drone request it answers, so a report from a drone of an
/// earlier request (released by a reschedule or a cancel) is recognised.
#[derive(Debug, Clone, PartialEq)]
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

    /// The reporting drone.
    pub fn drone_id(&self) -> &str {
        match self {
            Self::Assigned { drone_id, .. }
            | Self::PickedUp { drone_id, .. }
            | Self::Delivered { drone_id, .. } => drone_id,
        }
    }

    /// Where the drone was when it reported.
    pub fn position(&self) -> Location {
        match self {
            Self::Assigned { position, .. }
            | Self::PickedUp { position, .. }
            | Self::Delivered { position, .. } => *position,
        }
    }
}
