//! The fleet's choice of a drone, without actors.

use chrono::{Duration, TimeZone, Utc};

use super::*;
use crate::domain::DroneStatus;

fn at(lat: f64, lon: f64) -> Location {
    Location::new(lat, lon)
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn drone(id: &str, position: Location) -> DroneState {
    let mut d = DroneState::parked(id.into(), position);
    d.position = position;
    d
}

fn req(id: &str, ticket: u64, pickup: Location) -> DroneRequest {
    DroneRequest {
        delivery_id: id.into(),
        ticket,
        pickup,
        dropoff: at(47.7, -122.1),
    }
}

fn fleet(drones: &[(&str, Location)]) -> Dispatcher {
    let mut d = Dispatcher::new();
    for (id, position) in drones {
        d.add_drone(&drone(id, *position));
    }
    d
}

/// Every assignment the dispatcher makes now, as (drone, delivery).
fn assign_all(d: &mut Dispatcher) -> Vec<(String, String)> {
    std::iter::from_fn(|| d.next_assignment())
        .map(|a| (a.drone_id, a.request.delivery_id))
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect()
}

#[test]
fn the_nearest_free_drone_takes_the_request() {
    // (drones, pickup, chosen)
    type Case<'a> = (&'a [(&'a str, Location)], Location, Option<&'a str>);
    let cases: [Case; 5] = [
        (
            &[("a", at(47.0, -122.0)), ("b", at(47.5, -122.0))],
            at(47.6, -122.0),
            Some("b"),
        ),
        (
            &[("a", at(47.0, -122.0)), ("b", at(47.5, -122.0))],
            at(46.9, -122.0),
            Some("a"),
        ),
        // Ties: the lowest id, whatever the order the drones were added in.
        (
            &[("b", at(47.5, -122.0)), ("a", at(47.5, -122.0))],
            at(47.6, -122.0),
            Some("a"),
        ),
        (
            &[("z", at(47.4, -122.0)), ("y", at(47.6, -122.0))],
            at(47.5, -122.0),
            Some("y"),
        ),
        (&[], at(47.5, -122.0), None),
    ];
    for (drones, pickup, chosen) in cases {
        let d = fleet(drones);
        assert_eq!(d.nearest_free(&pickup), chosen, "{drones:?} → {pickup:?}");
    }
}

#[test]
fn busy_drones_are_skipped_and_requests_wait_in_order() {
    let mut d = fleet(&[("a", at(47.0, -122.0)), ("b", at(47.9, -122.0))]);
    assert_eq!(d.request(req("d1", 1, at(47.0, -122.0)), now()), None);
    assert_eq!(d.request(req("d2", 1, at(47.0, -122.0)), now()), None);
    assert_eq!(d.request(req("d3", 1, at(47.0, -122.0)), now()), None);
    // "a" is nearest for d1; d2 gets the only other free drone, far away.
    assert_eq!(assign_all(&mut d), pairs(&[("a", "d1"), ("b", "d2")]));
    assert_eq!((d.free_drones(), d.waiting()), (0, 1));
    // "b" finishes first: it takes the oldest waiting request.
    d.free("b", "d2", at(47.1, -122.0));
    assert_eq!(assign_all(&mut d), pairs(&[("b", "d3")]));
    assert_eq!((d.free_drones(), d.waiting()), (0, 0));
}

#[test]
fn a_returning_drone_is_chosen_by_where_it_finished() {
    let mut d = fleet(&[("a", at(47.0, -122.0)), ("b", at(47.2, -122.0))]);
    d.request(req("d1", 1, at(47.0, -122.0)), now());
    assert_eq!(assign_all(&mut d), pairs(&[("a", "d1")]));
    // "a" dropped d1 off far north and flies home: the fleet knows it there.
    d.free("a", "d1", at(47.9, -122.0));
    d.request(req("d2", 1, at(47.8, -122.0)), now());
    assert_eq!(assign_all(&mut d), pairs(&[("a", "d2")]));
}

#[test]
fn a_repeated_request_is_served_once_and_a_newer_ticket_moves_the_job() {
    let mut d = fleet(&[("a", at(47.0, -122.0)), ("b", at(47.5, -122.0))]);
    d.request(req("d1", 1, at(47.0, -122.0)), now());
    assert_eq!(assign_all(&mut d), pairs(&[("a", "d1")]));
    // A redelivered message: the same ticket is already served.
    assert_eq!(d.request(req("d1", 1, at(47.0, -122.0)), now()), None);
    assert_eq!(d.waiting(), 0);
    // Rescheduled: the old drone is aborted and the nearest to the new
    // pickup takes it.
    let abort = d.request(req("d1", 2, at(47.5, -122.0)), now());
    assert_eq!(
        abort,
        Some(Abort {
            drone_id: "a".into(),
            delivery_id: "d1".into()
        })
    );
    assert_eq!(assign_all(&mut d), pairs(&[("b", "d1")]));
    assert!(d.serves("d1"));
    assert_eq!(d.busy_drones().collect::<Vec<_>>(), ["b"]);
}

#[test]
fn withdrawing_frees_the_drone_or_the_place_in_the_queue() {
    let mut d = fleet(&[("a", at(47.0, -122.0))]);
    d.request(req("d1", 1, at(47.0, -122.0)), now());
    d.request(req("d2", 1, at(47.0, -122.0)), now());
    assert_eq!(assign_all(&mut d), pairs(&[("a", "d1")]));
    assert_eq!(d.withdraw("d2"), None);
    assert_eq!(d.waiting(), 0);
    assert_eq!(d.withdraw("d1").map(|a| a.drone_id), Some("a".to_owned()));
    assert_eq!(d.free_drones(), 1);
    // A late Free for the withdrawn job changes nothing but the position.
    d.free("a", "d1", at(47.3, -122.0));
    assert_eq!(d.free_drones(), 1);
}

#[test]
fn a_drone_busy_with_an_unknown_job_is_left_out_until_it_is_free() {
    let mut d = fleet(&[("a", at(47.0, -122.0)), ("b", at(47.9, -122.0))]);
    d.request(req("d1", 1, at(47.0, -122.0)), now());
    assert_eq!(assign_all(&mut d), pairs(&[("a", "d1")]));
    d.rejected("a", req("d1", 1, at(47.0, -122.0)), now());
    assert!(!d.serves("d1"));
    // The refused request is served next, by the other drone.
    assert_eq!(assign_all(&mut d), pairs(&[("b", "d1")]));
    // Any Free from "a" (for the job it had) makes it available again.
    d.free("a", "other", at(47.0, -122.0));
    assert_eq!(d.free_drones(), 1);
}

#[test]
fn a_stored_busy_drone_keeps_its_job() {
    let mut busy = drone("a", at(47.0, -122.0));
    busy.status = DroneStatus::HeadedToPickup;
    busy.delivery_id = Some("d1".into());
    busy.ticket = 3;
    let mut returning = drone("b", at(47.1, -122.0));
    returning.status = DroneStatus::Returning;
    returning.delivery_id = Some("old".into());
    let mut d = Dispatcher::new();
    d.add_drone(&busy);
    d.add_drone(&returning);
    assert!(d.serves("d1") && !d.serves("old"));
    assert_eq!((d.drones(), d.free_drones()), (2, 1));
    // The same ticket again is a repeat; the waiting list stays empty.
    assert_eq!(d.request(req("d1", 3, at(47.0, -122.0)), now()), None);
    assert_eq!(d.waiting(), 0);
}

#[test]
fn a_handed_back_assignment_is_served_next_and_keeps_its_wait() {
    let mut d = fleet(&[("a", at(47.0, -122.0))]);
    d.request(req("d1", 1, at(47.0, -122.0)), now());
    d.request(req("d2", 1, at(47.0, -122.0)), now() + Duration::seconds(1));
    let a = d.next_assignment().unwrap();
    assert_eq!(a.waiting_since, Some(now()));
    d.hand_back(a);
    assert_eq!(d.free_drones(), 1);
    assert!(!d.serves("d1"));
    // Still first, and still counted as waiting since it arrived.
    let later = now() + Duration::seconds(90);
    let expired = d.take_expired(later, Duration::seconds(60));
    let ids: Vec<_> = expired.iter().map(|r| r.delivery_id.as_str()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"d1") && ids.contains(&"d2"));
    assert_eq!(d.waiting(), 0);
}

#[test]
fn only_requests_waiting_longer_than_the_maximum_expire() {
    let mut d = fleet(&[]);
    d.request(req("old", 1, at(47.0, -122.0)), now());
    d.request(
        req("new", 1, at(47.0, -122.0)),
        now() + Duration::seconds(50),
    );
    d.enqueue(
        req("stored", 1, at(47.0, -122.0)),
        now() - Duration::seconds(30),
    );
    let expired = d.take_expired(now() + Duration::seconds(61), Duration::seconds(60));
    let mut ids: Vec<_> = expired.into_iter().map(|r| r.delivery_id).collect();
    ids.sort();
    assert_eq!(ids, ["old", "stored"]);
    assert_eq!(d.waiting(), 1);
    // A request asked again keeps the time it started waiting.
    d.request(
        req("new", 2, at(47.0, -122.0)),
        now() + Duration::seconds(100),
    );
    let expired = d.take_expired(now() + Duration::seconds(111), Duration::seconds(60));
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].ticket, 2);
}
