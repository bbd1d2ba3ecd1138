//! The scheduling rules of payload and battery, without actors or stores.

use chrono::{Duration, TimeZone, Utc};

use super::*;
use crate::domain::Location;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn job(size: PackageSize, weight: f64, pickup: Location, dropoff: Location) -> DroneRequest {
    DroneRequest {
        delivery_id: "d".into(),
        ticket: 1,
        pickup,
        dropoff,
        expedited: false,
        deadline: None,
        package_size: size,
        package_weight: weight,
    }
}

/// A drone of `class` parked at `depot` with `level_m` of range left
/// (10 km battery, 1 m/s recharge), not charging.
fn drone(id: &str, class: PackageSize, depot: Location, level_m: f64) -> DroneState {
    let limits = PayloadLimits::default();
    DroneState::parked(id.into(), depot).with_limits(
        Payload {
            class,
            max_weight_kg: limits.of(class),
        },
        Some(Battery {
            capacity_m: 10_000.0,
            level_m,
            recharge_mps: 1.0,
            charging_since_ms: None,
        }),
    )
}

/// `metres` north of `from`.
fn north(from: Location, metres: f64) -> Location {
    Location::new(from.latitude + metres / 111_195.0, from.longitude)
}

const HOME: Location = Location {
    altitude: 0.0,
    latitude: 47.6,
    longitude: -122.3,
};

#[test]
fn a_mix_parses_and_prints_and_refuses_nonsense() {
    let mix: FleetMix = "small=70, medium=25 ,large=5".parse().unwrap();
    assert_eq!(mix, FleetMix::default());
    assert_eq!(mix.to_string().parse::<FleetMix>().unwrap(), mix);
    let only_large: FleetMix = "Large=1".parse().unwrap();
    assert_eq!((only_large.small, only_large.large), (0, 1));
    for bad in [
        "",
        "small=0",
        "huge=5",
        "small",
        "small=1.5",
        "small=-1",
        "small=1,small=2",
    ] {
        assert!(bad.parse::<FleetMix>().is_err(), "{bad}");
    }
    let limits: PayloadLimits = "large=inf,small=5".parse().unwrap();
    assert_eq!((limits.small, limits.medium), (5.0, 100.0));
    assert!(limits.large.is_infinite());
    assert!("medium=heavy".parse::<PayloadLimits>().is_err());
}

#[test]
fn a_fleet_gets_its_mix_interleaved_and_every_class_at_least_once() {
    let mix = FleetMix::default();
    let count = |v: &[PackageSize], c| v.iter().filter(|x| **x == c).count();
    let hundred = mix.classes(100);
    assert_eq!(
        (
            count(&hundred, PackageSize::Small),
            count(&hundred, PackageSize::Medium),
            count(&hundred, PackageSize::Large)
        ),
        (70, 25, 5)
    );
    // Interleaved: the first 20 drones already hold every class.
    for c in CLASSES {
        assert!(count(&hundred[..20], c) > 0, "{c:?} in the first 20");
    }
    // A tiny fleet still has the largest class first, then the next.
    assert_eq!(mix.classes(1), [PackageSize::Large]);
    let two = mix.classes(2);
    assert_eq!(count(&two, PackageSize::Large), 1);
    assert_eq!(count(&two, PackageSize::Medium), 1);
    let three = mix.classes(3);
    for c in CLASSES {
        assert_eq!(count(&three, c), 1, "{three:?}");
    }
    for n in [0, 1, 7, 13, 999] {
        assert_eq!(mix.classes(n).len(), n);
    }
    let smalls: FleetMix = "small=1".parse().unwrap();
    assert_eq!(smalls.classes(4), [PackageSize::Small; 4]);
}

#[test]
fn a_package_fits_by_size_and_weight() {
    let medium = Payload {
        class: PackageSize::Medium,
        max_weight_kg: 100.0,
    };
    assert!(medium.fits(PackageSize::Small, 100.0));
    assert!(medium.fits(PackageSize::Medium, 0.0));
    assert!(
        !medium.fits(PackageSize::Large, 1.0),
        "Large needs a large drone"
    );
    assert!(
        !medium.fits(PackageSize::Small, 100.5),
        "over the weight limit"
    );
}

#[test]
fn a_package_no_drone_can_ever_carry_is_named_with_the_limit() {
    let spec = FleetSpec::default();
    assert_eq!(spec.check_payload(PackageSize::Large, 500.0), Ok(()));
    assert_eq!(spec.check_payload(PackageSize::Small, 10.0), Ok(()));
    let heavy = spec.check_payload(PackageSize::Small, 501.0).unwrap_err();
    assert_eq!(
        heavy,
        PayloadError::TooHeavy {
            weight: 501.0,
            limit: 500.0
        }
    );
    assert_eq!(heavy.field(), "packageInfo.weight");
    assert!(heavy.to_string().contains("500 kg"), "{heavy}");
    // Without large drones, a Large package can never go, and a Small one
    // only up to the medium limit.
    let no_large = FleetSpec {
        mix: "small=3,medium=1".parse().unwrap(),
        ..FleetSpec::default()
    };
    let large = no_large.check_payload(PackageSize::Large, 1.0).unwrap_err();
    assert_eq!(large.field(), "packageInfo.size");
    assert!(matches!(
        no_large.check_payload(PackageSize::Small, 150.0),
        Err(PayloadError::TooHeavy { limit, .. }) if limit == 100.0
    ));
}

#[test]
fn a_battery_drains_with_distance_and_charges_while_parked() {
    let mut b = Battery::full(10_000.0, 2.0, t0());
    assert_eq!(
        b.level_at(t0() + Duration::hours(1)),
        10_000.0,
        "never above capacity"
    );
    b.take_off(t0());
    b.drain(7_500.0);
    assert_eq!(
        b.level_at(t0() + Duration::hours(1)),
        2_500.0,
        "no charge in flight"
    );
    assert_eq!(b.percent_at(t0()), 25);
    b.drain(1e9);
    assert_eq!(b.level_m, 0.0, "never below empty");
    b.land(t0());
    assert_eq!(b.level_at(t0() + Duration::seconds(1_000)), 2_000.0);
    // Landing again (a repeated arrival) keeps the charge so far.
    b.land(t0() + Duration::seconds(500));
    assert_eq!(b.level_at(t0() + Duration::seconds(1_000)), 2_000.0);
    b.take_off(t0() + Duration::seconds(1_000));
    assert_eq!((b.level_m, b.charging_since_ms), (2_000.0, None));
    assert_eq!(b.level_at(t0() + Duration::hours(9)), 2_000.0);
}

#[test]
fn a_drone_takes_a_job_only_if_its_battery_holds_the_flight_and_the_way_home() {
    // 1 km to the pickup, 3 km to the dropoff, 4 km home: 8 km.
    let pickup = north(HOME, 1_000.0);
    let far = job(PackageSize::Small, 1.0, pickup, north(HOME, 4_000.0));
    assert!(
        (job_distance_m(&drone("a", PackageSize::Small, HOME, 0.0), &far) - 8_000.0).abs() < 1.0
    );
    assert!(drone("a", PackageSize::Small, HOME, 8_100.0).can_take(&far, t0()));
    assert!(!drone("a", PackageSize::Small, HOME, 7_900.0).can_take(&far, t0()));
    // Short of range for this job, it still takes a shorter one.
    let near = job(PackageSize::Small, 1.0, pickup, north(HOME, 2_000.0));
    assert!(drone("a", PackageSize::Small, HOME, 7_900.0).can_take(&near, t0()));
    // Parked and charging: 200 s at 1 m/s bring it over the need.
    let mut charging = drone("a", PackageSize::Small, HOME, 7_900.0);
    if let Some(b) = charging.battery.as_mut() {
        b.charging_since_ms = Some(t0().timestamp_millis());
    }
    assert!(!charging.can_take(&far, t0() + Duration::seconds(50)));
    assert!(charging.can_take(&far, t0() + Duration::seconds(200)));
    // Payload first: a small drone never takes a medium package.
    let medium = job(PackageSize::Medium, 1.0, pickup, north(HOME, 2_000.0));
    assert!(!drone("a", PackageSize::Small, HOME, 10_000.0).can_take(&medium, t0()));
    // A drone stored without limits takes anything.
    let unlimited = DroneState::parked("old".into(), HOME);
    let huge = job(PackageSize::Large, 1e6, pickup, north(HOME, 1e7));
    assert!(unlimited.can_take(&huge, t0()));
}

#[test]
fn the_smallest_class_then_the_nearest_drone_that_can_take_the_job_is_chosen() {
    let pickup = north(HOME, 1_000.0);
    let work = job(PackageSize::Medium, 50.0, pickup, north(HOME, 3_000.0));
    let drones = [
        // Nearest, but small.
        drone(
            "a-small",
            PackageSize::Small,
            north(HOME, 1_000.0),
            10_000.0,
        ),
        // Next, medium but nearly empty.
        drone(
            "b-empty",
            PackageSize::Medium,
            north(HOME, 1_100.0),
            1_000.0,
        ),
        // Then two equally far ones that can: the lowest id wins.
        drone(
            "d-large",
            PackageSize::Large,
            north(HOME, 1_500.0),
            10_000.0,
        ),
        drone(
            "c-medium",
            PackageSize::Medium,
            north(HOME, 1_500.0),
            10_000.0,
        ),
        drone("e-far", PackageSize::Large, HOME, 10_000.0),
    ];
    assert_eq!(
        choose(&drones, &work, t0()),
        Choice::Drone(&drones[3]),
        "nearest able, ties to the lowest id"
    );
    assert_eq!(choose(&drones[..2], &work, t0()), Choice::NoneFits);
    assert_eq!(choose([], &work, t0()), Choice::NoneFree);
    // Only drones too small for the package are free: none of its classes.
    assert_eq!(choose(&drones[..1], &work, t0()), Choice::NoneFree);
    // The smallest class that carries it goes first, though farther: the
    // larger drones stay free for what only they can carry.
    let small_job = job(PackageSize::Small, 5.0, pickup, north(HOME, 2_000.0));
    let near_large = drone("n-large", PackageSize::Large, pickup, 10_000.0);
    let far_small = drone("f-small", PackageSize::Small, HOME, 10_000.0);
    let pair = [near_large, far_small];
    assert_eq!(choose(&pair, &small_job, t0()), Choice::Drone(&pair[1]));
    // A small drone too weak for the weight: the next class takes it.
    let heavy_small = job(PackageSize::Small, 50.0, pickup, north(HOME, 2_000.0));
    assert_eq!(choose(&pair, &heavy_small, t0()), Choice::Drone(&pair[0]));
}

#[test]
fn a_job_beyond_every_full_battery_is_recognised() {
    let spec = FleetSpec {
        range_m: Some(10_000.0),
        ..FleetSpec::default()
    };
    let depots = [HOME, north(HOME, 50_000.0)];
    // From the second depot: 1 km out, 3 km on, 4 km back.
    let near_second = job(
        PackageSize::Small,
        1.0,
        north(HOME, 49_000.0),
        north(HOME, 46_000.0),
    );
    assert_eq!(spec.beyond_range(&near_second, &depots), None);
    let across = job(PackageSize::Small, 1.0, HOME, north(HOME, 25_000.0));
    let need = spec.beyond_range(&across, &depots).unwrap();
    assert!((need - 50_000.0).abs() < 1.0, "{need}");
    let unlimited = FleetSpec {
        range_m: None,
        ..FleetSpec::default()
    };
    assert_eq!(unlimited.beyond_range(&across, &depots), None);
}

#[test]
fn no_weight_limit_is_stored_as_a_number() {
    let spec = FleetSpec {
        limits: "small=inf,medium=inf,large=inf".parse().unwrap(),
        ..FleetSpec::default()
    };
    let payload = spec.payload(&[PackageSize::Small], 0);
    let json = serde_json::to_string(&payload).unwrap();
    let back: Payload = serde_json::from_str(&json).unwrap();
    assert_eq!(back, payload);
    assert!(back.fits(PackageSize::Small, 1e300));
    assert_eq!(spec.check_payload(PackageSize::Large, 1e300), Ok(()));
}
