//! `GET /api/drones`: every drone of the simulated fleet, for dashboards
//! (the [console](crate::console)'s fleet page).
//!
//! The list is read from the drone store through the engine handle, like
//! every other read: it never wakes an actor, works on a `gateway`-role
//! process (which runs no drones) and shows the drones of every engine that
//! shares the store. A drone's stored position is written on every
//! simulation tick, so polling this route shows the fleet moving.
//!
//! ## Battery
//! The engine does not simulate batteries. `batteryPercent` is an estimate
//! derived from the distance flown, so that operators see which drones have
//! been flying longest: a drone parked at its depot (`Available`) is full
//! (it charges there), and on a job it loses charge linearly with the metres
//! flown since it accepted that job (`flownM` minus the odometer at the
//! job's start), against a nominal range of [`NOMINAL_RANGE_M`]. A drone
//! that takes a new job while flying home starts that job's count afresh,
//! so the figure is an indication, not a state of charge.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use dronedelivery_actors::cluster::FleetSummary;
use dronedelivery_actors::domain::{DroneState, DroneStatus, Location, ServiceArea};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, InternalError, ServiceUnavailable};
use crate::state::AppState;

/// Distance a drone flies on a full battery in the battery estimate, in
/// metres (a small delivery drone; longer than any job in the default
/// service area).
pub const NOMINAL_RANGE_M: f64 = 60_000.0;

/// Routes of the drone list and the cluster's fleet figures, with their
/// documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(drones))
        .routes(routes!(fleet))
}

/// `GET /api/fleet`: the whole cluster's figures, whichever engine answers
/// (a gateway runs no workflow of its own, so its `/metrics` cannot tell
/// what the workers did).
#[utoipa::path(
    get,
    path = "/api/fleet",
    operation_id = "getFleetSummary",
    tag = "drones",
    summary = "The cluster's delivery figures",
    description = "Deliveries accepted, completed and cancelled, summed over the live engines' \
counts since each started (an engine that restarts counts from zero again), and deliveries \
waiting for a drone, queue depth and dead letters, read from the shared queue and stores: the \
same answer from every engine.",
    responses(
        (status = 200, description = "The figures", body = FleetSummary),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn fleet(State(state): State<AppState>) -> Result<Json<FleetSummary>, ApiError> {
    Ok(Json(state.engine.fleet_summary().await?))
}

/// One drone as dashboards see it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DroneView {
    /// Drone id (`drone-0042`).
    pub id: String,
    /// What it is doing.
    pub status: DroneStatus,
    /// Where it is.
    pub position: Location,
    /// Its home depot.
    pub depot: Location,
    /// Where it is flying to: the pickup, the dropoff or its depot; `null`
    /// while parked.
    #[schema(required = true)]
    pub target: Option<Location>,
    /// The delivery it serves, if any.
    #[schema(required = true)]
    pub delivery_id: Option<String>,
    /// Metres flown since the drone was seeded.
    pub flown_m: f64,
    /// Estimated charge, 0 to 100 (see the battery model in the route's
    /// description).
    #[schema(minimum = 0, maximum = 100)]
    pub battery_percent: u8,
    /// When its state last changed.
    pub updated_at: DateTime<Utc>,
}

/// `GET /api/drones`: every drone, ordered by id, and the service area.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DroneList {
    /// The service area this process is configured with (a frame for
    /// drawing the drones).
    pub area: ServiceArea,
    /// The drones.
    pub drones: Vec<DroneView>,
}

/// The battery estimate of the [module docs](self), in whole percent.
pub fn battery_percent(drone: &DroneState) -> u8 {
    if drone.status == DroneStatus::Available {
        return 100;
    }
    let used = (drone.flown_m - drone.job_start_m).max(0.0);
    let percent = (100.0 * (1.0 - used / NOMINAL_RANGE_M)).clamp(0.0, 100.0);
    // In 0..=100 after the clamp.
    percent.round() as u8
}

impl From<&DroneState> for DroneView {
    fn from(drone: &DroneState) -> Self {
        Self {
            id: drone.id.clone(),
            status: drone.status,
            position: drone.position,
            depot: drone.depot,
            target: drone.target(),
            delivery_id: drone.delivery_id.clone(),
            flown_m: drone.flown_m,
            battery_percent: battery_percent(drone),
            updated_at: drone.updated_at,
        }
    }
}

/// `GET /api/drones`: see the [module docs](self).
#[utoipa::path(
    get,
    path = "/api/drones",
    operation_id = "listDrones",
    tag = "drones",
    summary = "List the fleet's drones",
    description = "Every drone's status, position, target and current delivery, ordered by id, \
read from the drone store (all engines sharing it), with the service area. Positions change on \
every simulation tick.\n\n\
`batteryPercent` is an estimate, not simulated state: 100 while parked at the depot, then \
decreasing linearly with the metres flown on the current job against a nominal range of 60 km.",
    responses(
        (status = 200, description = "The drones", body = DroneList),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn drones(State(state): State<AppState>) -> Result<Json<DroneList>, ApiError> {
    let stored = state.engine.drones().await?;
    let mut drones: Vec<DroneView> = stored.iter().map(DroneView::from).collect();
    drones.sort_by(|a, b| a.id.cmp(&b.id));
    let area = state.engine.context().config.area;
    Ok(Json(DroneList { area, drones }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drone(status: DroneStatus, job_start_m: f64, flown_m: f64) -> DroneState {
        let mut d = DroneState::parked("d".into(), Location::new(47.6, -122.3));
        d.status = status;
        d.job_start_m = job_start_m;
        d.flown_m = flown_m;
        d
    }

    #[test]
    fn battery_is_full_at_the_depot_and_drains_with_the_job() {
        assert_eq!(
            battery_percent(&drone(DroneStatus::Available, 0.0, 90_000.0)),
            100
        );
        assert_eq!(
            battery_percent(&drone(DroneStatus::HeadedToPickup, 1_000.0, 1_000.0)),
            100
        );
        assert_eq!(
            battery_percent(&drone(DroneStatus::HeadedToDropoff, 1_000.0, 31_000.0)),
            50
        );
        assert_eq!(
            battery_percent(&drone(DroneStatus::Returning, 0.0, 200_000.0)),
            0
        );
        // An odometer behind the job's start (a corrupt document) is full.
        assert_eq!(
            battery_percent(&drone(DroneStatus::Returning, 5.0, 0.0)),
            100
        );
    }

    #[test]
    fn a_view_names_its_target() {
        let mut d = drone(DroneStatus::HeadedToPickup, 0.0, 0.0);
        d.pickup = Some(Location::new(47.7, -122.2));
        d.delivery_id = Some("x".into());
        let view = DroneView::from(&d);
        assert_eq!(view.target, d.pickup);
        assert_eq!(view.status, DroneStatus::HeadedToPickup);
        let json = serde_json::to_value(&view).unwrap_or_default();
        assert_eq!(json["deliveryId"], "x");
        assert_eq!(json["status"], "HeadedToPickup");
        assert_eq!(json["batteryPercent"], 100);
    }
}
