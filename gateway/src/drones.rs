//! `GET /api/drones`: every drone of the simulated fleet, for dashboards
//! (the [console](crate::console)'s fleet page).
//!
//! The list is read from the drone store through the engine handle, like
//! every other read: it never wakes an actor, works on a `gateway`-role
//! process (which runs no drones) and shows the drones of every engine that
//! shares the store. A drone's stored position is written on every
//! simulation tick, so polling this route shows the fleet moving.
//!
//! ## Battery and payload
//! `batteryPercent` is the simulated battery (see
//! [`dronedelivery_actors::domain::limits`]): drained by the metres flown,
//! recharged while parked at the depot, as of the moment of the read.
//! A drone stored without a battery (an unlimited range: `--drone-range-km
//! 0`, or seeded by an earlier version) shows 100 and no `rangeLeftM`.
//! `payload` is what the drone carries (class and weight limit).

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use dronedelivery_actors::cluster::FleetSummary;
use dronedelivery_actors::domain::{DroneState, DroneStatus, Location, Payload, ServiceArea};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, InternalError, ServiceUnavailable};
use crate::state::AppState;

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
    /// Charge, 0 to 100, of the simulated battery (100: unlimited range).
    #[schema(minimum = 0, maximum = 100)]
    pub battery_percent: u8,
    /// Range left on the battery, metres; `null` for an unlimited range.
    #[schema(required = true)]
    pub range_left_m: Option<f64>,
    /// What it carries: payload class and weight limit (`null`: anything).
    #[schema(required = true)]
    pub payload: Option<Payload>,
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

/// The simulated battery's charge at `now`, in whole percent (100 for a
/// drone without a battery limit).
pub fn battery_percent(drone: &DroneState, now: DateTime<Utc>) -> u8 {
    drone.battery.map_or(100, |b| b.percent_at(now))
}

impl DroneView {
    /// The view of `drone` at `now` (its battery charges while parked).
    pub fn at(drone: &DroneState, now: DateTime<Utc>) -> Self {
        Self {
            id: drone.id.clone(),
            status: drone.status,
            position: drone.position,
            depot: drone.depot,
            target: drone.target(),
            delivery_id: drone.delivery_id.clone(),
            flown_m: drone.flown_m,
            battery_percent: battery_percent(drone, now),
            range_left_m: drone.battery.map(|b| b.level_at(now)),
            payload: drone.payload,
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
`batteryPercent` and `rangeLeftM` are the simulated battery: drained by the metres flown, \
recharged while parked at the depot. A drone takes a job only if its battery holds the flight \
to the pickup, the dropoff and home. `payload` is the drone's class and weight limit.",
    responses(
        (status = 200, description = "The drones", body = DroneList),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn drones(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<DroneList>, ApiError> {
    let stored = state.engine.drones().await?;
    let now = Utc::now();
    let mut drones: Vec<DroneView> = stored.iter().map(|d| DroneView::at(d, now)).collect();
    if !caller.reads_everything() {
        // Which delivery a drone carries, and where it flies for it, are
        // other owners' business: dispatchers and operators only.
        for d in &mut drones {
            d.delivery_id = None;
            d.target = None;
        }
    }
    drones.sort_by(|a, b| a.id.cmp(&b.id));
    let area = state.engine.context().config.area;
    Ok(Json(DroneList { area, drones }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dronedelivery_actors::domain::{Battery, PackageSize};

    fn drone(status: DroneStatus) -> DroneState {
        let mut d = DroneState::parked("d".into(), Location::new(47.6, -122.3));
        d.status = status;
        d
    }

    #[test]
    fn battery_is_the_simulated_one_and_charges_while_parked() {
        let now = Utc::now();
        let mut d = drone(DroneStatus::Returning);
        assert_eq!(battery_percent(&d, now), 100, "no battery: unlimited");
        d.battery = Some(Battery {
            capacity_m: 10_000.0,
            level_m: 2_500.0,
            recharge_mps: 10.0,
            charging_since_ms: None,
        });
        assert_eq!(battery_percent(&d, now), 25);
        let view = DroneView::at(&d, now);
        assert_eq!(view.range_left_m, Some(2_500.0));
        // Parked 100 s ago: 1 km charged since.
        if let Some(b) = d.battery.as_mut() {
            b.charging_since_ms = Some(now.timestamp_millis() - 100_000);
        }
        assert_eq!(battery_percent(&d, now), 35);
    }

    #[test]
    fn a_view_names_its_target() {
        let mut d = drone(DroneStatus::HeadedToPickup);
        d.pickup = Some(Location::new(47.7, -122.2));
        d.delivery_id = Some("x".into());
        d.payload = Some(Payload {
            class: PackageSize::Medium,
            max_weight_kg: 100.0,
        });
        let view = DroneView::at(&d, Utc::now());
        assert_eq!(view.target, d.pickup);
        assert_eq!(view.status, DroneStatus::HeadedToPickup);
        let json = serde_json::to_value(&view).unwrap_or_default();
        assert_eq!(json["deliveryId"], "x");
        assert_eq!(json["status"], "HeadedToPickup");
        assert_eq!(json["batteryPercent"], 100);
        assert_eq!(json["rangeLeftM"], serde_json::Value::Null);
        assert_eq!(json["payload"]["class"], "Medium");
        assert_eq!(json["payload"]["maxWeightKg"], 100.0);
    }
}
