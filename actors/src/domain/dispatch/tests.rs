//! The fleet's queue and its record of which drone serves which delivery,
//! without actors or stores.

use chrono::{Duration, TimeZone, Utc};

use super::*;
use crate::domain::{DroneStatus, Location, PackageSize};

fn at(lat: f64, lon: f64) -> Location {
    Location::new(lat, lon)
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn req(id: &str, ticket: u64) -> DroneRequest {
    DroneRequest {
        delivery_id: id.into(),
        ticket,
        pickup: at(47.6, -122.3),
        dropoff: at(47.7, -122.1),
        expedited: false,
        deadline: None,
        package_size: PackageSize::Small,
        package_weight: 1.0,
    }
}

/// A drone as the pool stores it once claimed for `job`.
fn claimed(id: &str, job: &DroneRequest) -> DroneState {
    DroneState::parked(id.into(), at(47.6, -122.3)).claimed(job, 1, now())
}

/// The ids of the requests taken from the queue until it is empty.
fn drain(d: &mut Dispatcher) -> Vec<String> {
    std::iter::from_fn(|| d.next_request(now()).map(|w| w.request.delivery_id)).collect()
}

#[test]
fn requests_wait_first_come_first_served() {
    let mut d = Dispatcher::new();
    for id in ["a", "b", "c"] {
        assert_eq!(d.request(req(id, 1), now()), None);
    }
    assert_eq!(d.waiting(), 3);
    assert_eq!(drain(&mut d), ["a", "b", "c"]);
    assert_eq!(d.waiting(), 0);
}

#[test]
fn a_request_given_back_is_served_next_and_keeps_its_wait() {
    let mut d = Dispatcher::new();
    d.request(req("a", 1), now());
    d.request(req("b", 1), now() + Duration::seconds(5));
    let a = d.next_request(now()).unwrap();
    assert_eq!(a.since, Some(now()));
    d.hand_back(a, now());
    assert_eq!(
        d.next_request(now())
            .map(|w| (w.request.delivery_id, w.since)),
        Some(("a".into(), Some(now())))
    );
    // Deferred: behind the others, still waiting since it first asked.
    let b = d.next_request(now()).unwrap();
    d.request(req("c", 1), now());
    d.defer(b, now());
    assert_eq!(drain(&mut d), ["c", "b"]);
    d.defer(
        Waiting {
            request: req("b", 1),
            since: Some(now()),
        },
        now(),
    );
    let expired = d.take_expired(now() + Duration::seconds(61), Duration::seconds(60));
    assert_eq!(expired, vec![req("b", 1)]);
}

#[test]
fn a_repeated_request_is_served_once_and_a_newer_ticket_moves_the_job() {
    let mut d = Dispatcher::new();
    d.request(req("a", 1), now());
    let w = d.next_request(now()).unwrap();
    d.serve(&claimed("drone-1", &w.request));
    assert!(d.serves("a"));
    // The same ticket again (a redelivered message): nothing to do.
    assert_eq!(d.request(req("a", 1), now()), None);
    assert_eq!(d.waiting(), 0);
    // A reschedule's newer ticket: the old drone drops the job, the
    // delivery waits for a claim again.
    let abort = d.request(req("a", 2), now());
    assert_eq!(
        abort,
        Some(Abort {
            drone_id: "drone-1".into(),
            delivery_id: "a".into()
        })
    );
    assert!(!d.serves("a"));
    assert_eq!(d.next_request(now()).map(|w| w.request.ticket), Some(2));
}

#[test]
fn withdrawing_aborts_the_drone_or_leaves_the_queue() {
    let mut d = Dispatcher::new();
    d.request(req("a", 1), now());
    d.request(req("b", 1), now());
    let a = d.next_request(now()).unwrap();
    d.serve(&claimed("drone-1", &a.request));
    assert_eq!(
        d.withdraw("a"),
        Some(Abort {
            drone_id: "drone-1".into(),
            delivery_id: "a".into()
        })
    );
    assert_eq!(d.withdraw("b"), None);
    assert_eq!(d.waiting(), 0);
    assert_eq!(d.served(), 0);
}

#[test]
fn an_adopted_drone_serves_its_delivery_which_stops_waiting() {
    let mut d = Dispatcher::new();
    d.enqueue(req("a", 1), now());
    let mut drone = claimed("drone-7", &req("a", 1));
    drone.status = DroneStatus::HeadedToDropoff;
    d.serve(&drone);
    assert!(d.serves("a"));
    assert_eq!(d.waiting(), 0);
    // A free drone serves nothing.
    d.serve(&DroneState::parked("drone-8".into(), at(47.6, -122.3)));
    assert_eq!(d.served(), 1);
    // Its release ends the job; a stale release of another drone does not.
    d.free("drone-9", "a");
    assert!(d.serves("a"));
    assert_eq!(d.job_of("drone-7"), Some("a"));
    // Claimed for another delivery (a repeated claim after a restart), the
    // drone serves that one only.
    d.serve(&claimed("drone-7", &req("b", 1)));
    assert_eq!((d.serves("a"), d.job_of("drone-7")), (false, Some("b")));
    d.free("drone-7", "b");
    assert!(!d.serves("b"));
    assert_eq!(d.job_of("drone-7"), None);
}

#[test]
fn deliveries_of_a_partition_that_moved_are_forgotten_and_their_drones_stopped() {
    let mut d = Dispatcher::new();
    for id in ["a", "b", "c", "d"] {
        d.request(req(id, 1), now());
    }
    let a = d.next_request(now()).unwrap();
    d.serve(&claimed("drone-1", &a.request));
    let b = d.next_request(now()).unwrap();
    d.serve(&claimed("drone-2", &b.request));
    let mut stopped = d.drop_deliveries(|id| id == "a" || id == "c");
    stopped.sort_by(|x, y| x.drone_id.cmp(&y.drone_id));
    assert_eq!(
        stopped,
        vec![Abort {
            drone_id: "drone-1".into(),
            delivery_id: "a".into()
        }]
    );
    assert!(d.serves("b"));
    assert_eq!(drain(&mut d), ["d"]);
    assert_eq!(
        d.take_expired(now() + Duration::hours(1), Duration::seconds(1)),
        vec![]
    );
}

/// Once no free drone carries a size, the most urgent smaller package is
/// taken, whatever waits before it; the larger ones keep their order and
/// their place, and are served first again once asked for.
#[test]
fn only_smaller_packages_are_taken_below_a_size_and_the_others_keep_their_place() {
    let sized = |id: &str, size: PackageSize, expedited: bool| DroneRequest {
        package_size: size,
        expedited,
        ..req(id, 1)
    };
    let mut d = Dispatcher::new();
    d.request(sized("large-1", PackageSize::Large, true), now());
    d.request(sized("medium-1", PackageSize::Medium, false), now());
    d.request(sized("large-2", PackageSize::Large, false), now());
    d.request(sized("small-1", PackageSize::Small, false), now());
    d.request(sized("small-2", PackageSize::Small, true), now());
    d.request(sized("medium-2", PackageSize::Medium, true), now());
    let below = |d: &mut Dispatcher, size| {
        d.next_request_below(now(), Some(size))
            .map(|w| w.request.delivery_id)
    };
    // Nothing large is free: the most urgent of small and medium.
    assert_eq!(
        below(&mut d, PackageSize::Large).as_deref(),
        Some("small-2")
    );
    assert_eq!(
        below(&mut d, PackageSize::Large).as_deref(),
        Some("medium-2")
    );
    // Nothing medium either: small only.
    assert_eq!(
        below(&mut d, PackageSize::Medium).as_deref(),
        Some("small-1")
    );
    assert_eq!(below(&mut d, PackageSize::Medium), None);
    assert_eq!(d.waiting(), 3);
    // The rest in the order they had: expedited, then arrival.
    assert_eq!(drain(&mut d), ["large-1", "medium-1", "large-2"]);
}
