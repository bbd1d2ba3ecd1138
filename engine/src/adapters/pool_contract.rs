//! The drone pool contract: one conformance suite that every
//! [`DroneStore`] passes, so the fleets of several engines can rely on the
//! same atomic claims whichever store runs underneath.
//!
//! Each check starts from an **empty** store. Fences are not exercised here
//! (the in-process store runs one engine, which holds every partition); the
//! Redis store's tests check them against real leases.
//!
//! Test support: compiled only with the engine's `test-support` feature.

// Test support: a check that fails panics, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use dronedelivery_actors::domain::{
    Battery, DroneRequest, DroneState, DroneStatus, Location, PackageSize, Payload, PayloadLimits,
};
use dronedelivery_actors::ports::{Claimed, DroneStore};

fn parked(id: &str, lat: f64) -> DroneState {
    DroneState::parked(id.to_owned(), Location::new(lat, -122.0))
}

fn job(delivery: &str, ticket: u64, lat: f64) -> DroneRequest {
    DroneRequest {
        delivery_id: delivery.to_owned(),
        ticket,
        pickup: Location::new(lat, -122.0),
        dropoff: Location::new(lat + 0.05, -122.0),
        expedited: false,
        deadline: None,
        package_size: PackageSize::Small,
        package_weight: 1.0,
    }
}

async fn claim(store: &dyn DroneStore, job: &DroneRequest) -> Claimed {
    store.claim(job, None, Utc::now()).await.expect("claim")
}

/// The delivery a claimed drone serves.
fn job_of(drone: &DroneState) -> &str {
    drone
        .delivery_id
        .as_deref()
        .expect("a claimed drone serves a delivery")
}

fn claimed(c: Claimed) -> DroneState {
    match c {
        Claimed::Drone(d) => *d,
        other => panic!("expected a drone, got {other:?}"),
    }
}

/// Runs every check on `store`, which must be empty.
pub async fn run_all(store: Arc<dyn DroneStore>) {
    let store = store.as_ref();
    seeding_is_idempotent_and_fills_the_pool(store).await;
    a_claim_takes_the_nearest_free_drone_once(store).await;
    writes_need_the_current_claim(store).await;
    concurrent_claims_never_share_a_drone(store).await;
    a_claim_honours_payload_and_battery(store).await;
}

async fn seeding_is_idempotent_and_fills_the_pool(store: &dyn DroneStore) {
    let fleet = [
        parked("p-0", 47.0),
        parked("p-1", 47.5),
        parked("p-2", 48.0),
    ];
    assert_eq!(store.counts().await.expect("counts"), (0, 0));
    assert_eq!(store.seed(&fleet).await.expect("seed"), 3);
    assert_eq!(store.seed(&fleet).await.expect("seed again"), 0);
    assert_eq!(store.counts().await.expect("counts"), (3, 3));
    let ids: Vec<String> = store
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, ["p-0", "p-1", "p-2"]);
}

async fn a_claim_takes_the_nearest_free_drone_once(store: &dyn DroneStore) {
    let first = claimed(claim(store, &job("d-a", 1, 47.45)).await);
    assert_eq!(first.id, "p-1", "the nearest free drone");
    assert_eq!(first.status, DroneStatus::HeadedToPickup);
    assert_eq!(first.delivery_id.as_deref(), Some("d-a"));
    assert!(first.claim > 0);
    assert_eq!(store.get("p-1").await.expect("get"), Some(first.clone()));
    assert_eq!(store.counts().await.expect("counts"), (3, 2));
    // The same request again (a redelivered message): the same drone, no
    // new claim. A newer ticket waits for that drone's release.
    let again = claimed(claim(store, &job("d-a", 1, 47.45)).await);
    assert_eq!((again.id.as_str(), again.claim), ("p-1", first.claim));
    assert_eq!(
        claim(store, &job("d-a", 2, 47.45)).await,
        Claimed::Busy("p-1".into())
    );
    // Another delivery at the same place gets the next nearest (50 km
    // away, before the one at 61 km), then the last.
    let second = claimed(claim(store, &job("d-b", 1, 47.45)).await);
    assert_eq!(second.id, "p-0", "the next nearest free drone");
    assert_ne!(second.claim, first.claim);
    let third = claimed(claim(store, &job("d-c", 1, 47.45)).await);
    assert_eq!(third.id, "p-2");
    assert_eq!(claim(store, &job("d-d", 1, 47.45)).await, Claimed::NoneFree);
    // Released where they are, they are free again.
    for d in [first, second, third] {
        assert!(store
            .release(&d.released(Utc::now()), job_of(&d), None)
            .await
            .expect("release"));
    }
    assert_eq!(store.counts().await.expect("counts"), (3, 3));
    // The delivery's older drone is released: its newer ticket is served.
    let moved = claimed(claim(store, &job("d-a", 2, 47.45)).await);
    assert_eq!(moved.ticket, 2);
    assert!(store
        .release(&moved.released(Utc::now()), job_of(&moved), None)
        .await
        .expect("release"));
}

async fn writes_need_the_current_claim(store: &dyn DroneStore) {
    let drone = claimed(claim(store, &job("d-w", 1, 48.0)).await);
    let mut flying = drone.clone();
    flying.position = Location::new(47.99, -122.0);
    assert!(store.put(&flying, None).await.expect("put"));
    let mut stale = flying.clone();
    stale.claim -= 1;
    assert!(
        !store.put(&stale, None).await.expect("put"),
        "an older claim wrote"
    );
    assert!(
        !store.release(&stale, "d-w", None).await.expect("release"),
        "an older claim released"
    );
    assert_eq!(
        store.get(&drone.id).await.expect("get"),
        Some(flying.clone())
    );
    let freed = flying.released(Utc::now());
    assert!(store.release(&freed, "d-w", None).await.expect("release"));
    let stored = store.get(&drone.id).await.expect("get").expect("stored");
    assert_eq!(
        (stored.status, stored.position),
        (DroneStatus::Returning, flying.position)
    );
    // Flying home with the job's claim, it moves in the pool: it is the
    // nearest to a pickup by where it is now, not where it was released.
    let mut home = freed.clone();
    home.position = Location::new(47.70, -122.0);
    assert!(store.put(&home, None).await.expect("put"));
    let next = claimed(claim(store, &job("d-x", 1, 47.69)).await);
    assert_eq!(
        (next.id.as_str(), next.position),
        (drone.id.as_str(), home.position)
    );
    // Claimed again: the flight home's writes are refused from now on.
    assert!(
        !store.put(&home, None).await.expect("put"),
        "a claimed drone moved home"
    );
    assert!(
        !store.release(&home, "d-w", None).await.expect("release"),
        "released by an old claim"
    );
    assert!(store
        .release(&next.released(Utc::now()), job_of(&next), None)
        .await
        .expect("release"));
}

async fn concurrent_claims_never_share_a_drone(store: &dyn DroneStore) {
    let claims = (0..24).map(|n| {
        let j = job(&format!("d-race-{n}"), 1, 47.0 + f64::from(n) * 0.05);
        async move { store.claim(&j, None, Utc::now()).await.expect("claim") }
    });
    let results = futures::future::join_all(claims).await;
    let drones: Vec<DroneState> = results
        .into_iter()
        .filter_map(|c| match c {
            Claimed::Drone(d) => Some(*d),
            Claimed::NoneFree => None,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let distinct: HashSet<&str> = drones.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(drones.len(), 3, "three drones, three claims");
    assert_eq!(distinct.len(), 3, "a drone claimed twice: {drones:?}");
    assert_eq!(store.counts().await.expect("counts"), (3, 0));
}

/// A drone at latitude `lat` (longitude -122) of `class` with `level_m` of
/// a 10 km battery, charging at 1 m/s since `since`.
fn limited(
    id: &str,
    lat: f64,
    class: PackageSize,
    level_m: f64,
    since: DateTime<Utc>,
) -> DroneState {
    parked(id, lat).with_limits(
        Payload {
            class,
            max_weight_kg: PayloadLimits::default().of(class),
        },
        Some(Battery {
            capacity_m: 10_000.0,
            level_m,
            recharge_mps: 1.0,
            charging_since_ms: Some(since.timestamp_millis()),
        }),
    )
}

/// Runs after the other checks, with their drones all claimed.
async fn a_claim_honours_payload_and_battery(store: &dyn DroneStore) {
    let t0 = Utc::now();
    let fleet = [
        // Nearest to the jobs below, medium, nearly empty.
        limited("q-low", 10.0, PackageSize::Medium, 1_000.0, t0),
        limited("q-small", 10.001, PackageSize::Small, 10_000.0, t0),
        limited("q-large", 10.05, PackageSize::Large, 10_000.0, t0),
    ];
    assert_eq!(store.seed(&fleet).await.expect("seed"), 3);
    // 1.1 km to the pickup, 1.1 km on, 2.2 km home: 4.4 km.
    let sized = |id: &str, size, weight| DroneRequest {
        package_size: size,
        package_weight: weight,
        dropoff: Location::new(10.02, -122.0),
        ..job(id, 1, 10.01)
    };
    let heavy = sized("d-heavy", PackageSize::Small, 300.0);
    let large = claimed(store.claim(&heavy, None, t0).await.expect("claim"));
    assert_eq!(large.id, "q-large", "only the large drone carries 300 kg");
    let battery = large.battery.expect("a battery");
    assert_eq!(
        battery.charging_since_ms, None,
        "charging stops at take-off"
    );
    let medium = sized("d-medium", PackageSize::Medium, 1.0);
    // q-small is too small, q-low too empty: free drones, none fits.
    assert_eq!(
        store.claim(&medium, None, t0).await.expect("claim"),
        Claimed::NoneFits
    );
    // Two hours on the charger later (7,200 m more), q-low can.
    let later = t0 + chrono::Duration::hours(2);
    let charged = claimed(store.claim(&medium, None, later).await.expect("claim"));
    assert_eq!(charged.id, "q-low");
    let b = charged.battery.expect("a battery");
    let expected = fleet[0]
        .battery
        .map(|b| b.level_at(later))
        .unwrap_or_default();
    assert!((b.level_m - expected).abs() < 1e-3, "{b:?} vs {expected}");
    assert_eq!(b.charging_since_ms, None);
    // The small drone still takes what fits it.
    let small = claimed(
        store
            .claim(&sized("d-small", PackageSize::Small, 5.0), None, t0)
            .await
            .expect("claim"),
    );
    assert_eq!(small.id, "q-small");
    assert_eq!(
        store
            .claim(&sized("d-none", PackageSize::Small, 1.0), None, t0)
            .await
            .expect("claim"),
        Claimed::NoneFree
    );
}
