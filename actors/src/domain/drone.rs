//! Drones: the simulated fleet.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::capacity::{Battery, Payload};
use super::geo::Location;
use super::package::PackageSize;

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
    /// The claim number of the current job (0: none yet): the store
    /// refuses a write carrying an older one (see
    /// [`crate::ports::DroneStore`]).
    #[serde(default)]
    pub claim: u64,
    /// What it carries (`None`: anything; a drone stored by an earlier
    /// version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
    /// Its battery (`None`: unlimited range; a drone stored by an earlier
    /// version, or a fleet configured without batteries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<Battery>,
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
            claim: 0,
            payload: None,
            battery: None,
            updated_at: Utc::now(),
        }
    }

    /// The same drone with a payload class and a battery.
    pub fn with_limits(self, payload: Payload, battery: Option<Battery>) -> Self {
        Self {
            payload: Some(payload),
            battery,
            ..self
        }
    }

    /// The drone as stored when claimed for `job` under claim number
    /// `claim` at `now`: flying to the pickup, its job's distance counted
    /// from here. (The Redis store's claim script writes the same fields.)
    pub fn claimed(&self, job: &DroneRequest, claim: u64, now: DateTime<Utc>) -> Self {
        Self {
            status: DroneStatus::HeadedToPickup,
            delivery_id: Some(job.delivery_id.clone()),
            pickup: Some(job.pickup),
            dropoff: Some(job.dropoff),
            ticket: job.ticket,
            job_start_m: self.flown_m,
            claim,
            battery: self.battery.map(|mut b| {
                b.take_off(now);
                b
            }),
            updated_at: now,
            ..self.clone()
        }
    }

    /// The drone as stored when its job ends (delivered, or aborted): free
    /// for the next claim, flying home unless it is there.
    pub fn released(&self, now: DateTime<Utc>) -> Self {
        let home = self.position == self.depot;
        let status = if home {
            DroneStatus::Available
        } else {
            DroneStatus::Returning
        };
        Self {
            status,
            battery: self.battery.map(|mut b| {
                if home {
                    b.land(now);
                }
                b
            }),
            delivery_id: None,
            pickup: None,
            dropoff: None,
            updated_at: now,
            ..self.clone()
        }
    }

    /// Whether the drone serves a job (a claimed drone not yet released).
    pub fn has_job(&self) -> bool {
        !self.status.is_free() && self.delivery_id.is_some()
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
    /// Served before every normal request (see `dispatch`).
    pub expedited: bool,
    /// The delivery's deadline, when it names a time: earlier deadlines
    /// are served first within a class.
    pub deadline: Option<DateTime<Utc>>,
    /// The package's size: the drone's class must be at least this.
    pub package_size: PackageSize,
    /// The package's weight: within the drone's limit.
    pub package_weight: f64,
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn parked_at(id: &str, lat: f64, lon: f64) -> DroneState {
        DroneState::parked(id.into(), Location::new(lat, lon))
    }

    #[test]
    fn a_claim_sets_the_job_and_a_release_frees_the_drone_where_it_is() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let mut drone = parked_at("drone-1", 47.6, -122.3);
        drone.flown_m = 1_000.0;
        let job = DroneRequest {
            delivery_id: "d-1".into(),
            ticket: 3,
            pickup: Location::new(47.61, -122.31),
            dropoff: Location::new(47.62, -122.32),
            expedited: false,
            deadline: None,
            package_size: PackageSize::Small,
            package_weight: 1.0,
        };
        let claimed = drone.claimed(&job, 9, now);
        assert_eq!(claimed.status, DroneStatus::HeadedToPickup);
        assert_eq!(claimed.delivery_id.as_deref(), Some("d-1"));
        assert_eq!(
            (claimed.ticket, claimed.claim, claimed.job_start_m),
            (3, 9, 1_000.0)
        );
        assert_eq!(claimed.target(), Some(job.pickup));
        assert!(claimed.has_job());
        let mut flown = claimed.clone();
        flown.position = job.dropoff;
        let released = flown.released(now);
        assert_eq!(released.status, DroneStatus::Returning);
        assert!(released.status.is_free());
        assert_eq!(
            (released.delivery_id.as_deref(), released.target()),
            (None, Some(drone.depot))
        );
        assert_eq!(released.position, job.dropoff);
        assert_eq!(released.claim, 9, "the flight home keeps the job's claim");
        // Released at its depot, it parks.
        assert_eq!(claimed.released(now).status, DroneStatus::Available);
    }
}
