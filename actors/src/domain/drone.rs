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
