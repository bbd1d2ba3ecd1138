//! Scheduling that honours the request, on the real backends (Redis
//! Streams queue, Redis and MongoDB stores) with a small fleet and a
//! backlog: the order in which waiting deliveries get drones.

use std::time::Duration;

use chrono::{DateTime, Utc};
use dronedelivery_actors::domain::DeliveryStage;
use serde_json::json;

use crate::helpers::{
    assert_problem, real_backends, real_backends_with, ri_example, spawn_app_on, stage, TestApp,
};

/// When `id` first entered `stage` (its first event of that stage), if it
/// has.
async fn event_at(app: &TestApp, id: &str, stage: DeliveryStage) -> Option<DateTime<Utc>> {
    app.engine
        .events(id)
        .await
        .ok()?
        .into_iter()
        .find(|e| e.stage == stage)
        .map(|e| e.at)
}

/// When `id` got its drone (its `HeadedToPickup` event), if it has one.
async fn assigned_at(app: &TestApp, id: &str) -> Option<DateTime<Utc>> {
    event_at(app, id, DeliveryStage::HeadedToPickup).await
}

/// Expedited deliveries posted after 50 waiting normal ones get the next
/// free drones, before any of the backlog: two drones, flights of about a
/// second or two, fifty normal requests waiting at the fleet, then five
/// expedited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expedited_deliveries_take_the_next_drones_before_a_backlog() {
    let app = spawn_app_on(
        |a| {
            a.fleet_size = 2;
            a.depots = 1;
            a.sim_speed = 800.0;
        },
        Some(real_backends().await),
    )
    .await;
    let post = |n: usize, expedited: bool| {
        let mut body = ri_example();
        body["expedited"] = json!(expedited);
        body["pickupLocation"] = json!(format!("scheduling pickup {n}"));
        body["packageInfo"]["packageId"] = json!(format!("scheduling-package-{n}"));
        body
    };
    let mut normal = Vec::new();
    for n in 0..50 {
        normal.push(app.post_delivery(&post(n, false)).await);
    }
    // The backlog is at the fleet: both drones out, the rest waiting.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.engine.fleet().await.map_or(0, |f| f.pending) < 45 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog never built up at the fleet"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut expedited = Vec::new();
    for n in 50..55 {
        expedited.push(app.post_delivery(&post(n, true)).await);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut expedited_at = Vec::new();
    for id in &expedited {
        loop {
            if let Some(at) = assigned_at(&app, id).await {
                expedited_at.push(at);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expedited {id} never got a drone"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let first = expedited_at.iter().min().copied().unwrap_or_default();
    let last = expedited_at.iter().max().copied().unwrap_or_default();
    let mut normal_at = Vec::new();
    for id in &normal {
        normal_at.push(assigned_at(&app, id).await);
    }
    let jumped = normal_at
        .iter()
        .flatten()
        .filter(|at| **at > first && **at < last)
        .count();
    let before = normal_at
        .iter()
        .flatten()
        .filter(|at| **at <= first)
        .count();
    let waiting_then = normal.len() - before;
    eprintln!(
        "scheduling: {before} normal deliveries had a drone before the first expedited one; \
         the five expedited were assigned within {} ms; {jumped} normal ones in between",
        (last - first).num_milliseconds()
    );
    assert_eq!(
        jumped, 0,
        "no waiting normal delivery gets a drone while expedited ones wait"
    );
    assert!(
        waiting_then >= 40,
        "the expedited ones jumped a backlog ({waiting_then} normal ones were still waiting)"
    );
    app.stop().await;
}

/// Expedited requests skip a backlog in the queue itself: a gateway-only
/// engine queues 200 normal requests and then 5 expedited ones while no
/// worker runs; then a worker starts on the same stores. The expedited
/// ones are taken from the queue's expedited lane first: they are among the
/// first deliveries the workflow creates, not behind the 200. One
/// partition, so that the order is the queue's alone (with several, a
/// worker reads each partition from when it gains its lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expedited_requests_skip_a_backlog_in_the_queue() {
    let backends = real_backends_with(|a| a.partitions = 1).await;
    let gateway = spawn_app_on(
        |a| {
            a.role = dronedelivery_engine::config::RoleArg::Gateway;
            a.partitions = 1;
        },
        Some(backends.clone()),
    )
    .await;
    let mut normal = Vec::new();
    for n in 0..200 {
        let mut body = trip(n, "47.61,-122.25", "47.62,-122.25", "Small", 1.0);
        body["expedited"] = json!(false);
        normal.push(gateway.post_delivery(&body).await);
    }
    let mut expedited = Vec::new();
    for n in 200..205 {
        let mut body = trip(n, "47.61,-122.25", "47.62,-122.25", "Small", 1.0);
        body["expedited"] = json!(true);
        expedited.push(gateway.post_delivery(&body).await);
    }
    // Two of them are cancelled at once, before the workflow has created
    // them: the cancels take their creates' lane, so they are not stuck
    // behind the backlog either.
    for id in &expedited[..2] {
        let res = gateway
            .send_json(
                reqwest::Method::DELETE,
                &format!("/api/deliveryrequests/{id}"),
                &json!({}),
            )
            .await;
        assert_eq!(res.status(), 204);
    }
    let worker = spawn_app_on(
        |a| {
            a.role = dronedelivery_engine::config::RoleArg::Worker;
            a.partitions = 1;
            a.fleet_size = 20;
        },
        Some(backends),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut created = Vec::new();
    for (id, is_expedited) in normal
        .iter()
        .map(|id| (id, false))
        .chain(expedited.iter().map(|id| (id, true)))
    {
        loop {
            if let Some(at) = event_at(&worker, id, DeliveryStage::Created).await {
                created.push((at, is_expedited));
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} was never created"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    created.sort();
    let ranks: Vec<usize> = (0..created.len()).filter(|&i| created[i].1).collect();
    eprintln!("scheduling: the five expedited requests were created {ranks:?} of 205");
    assert_eq!(ranks.len(), 5);
    assert!(
        ranks.iter().all(|&r| r < 100),
        "expedited requests must not wait behind the queue's backlog: created {ranks:?} of 205"
    );
    let normal_created: Vec<DateTime<Utc>> = created
        .iter()
        .filter(|(_, urgent)| !urgent)
        .map(|(at, _)| *at)
        .collect();
    for id in &expedited[..2] {
        let status = gateway
            .wait_for_stage(id, stage::CANCELLED, Duration::from_secs(60))
            .await;
        let cancelled_at = event_at(&worker, id, DeliveryStage::Cancelled)
            .await
            .unwrap_or_default();
        let behind = normal_created
            .iter()
            .filter(|at| **at < cancelled_at)
            .count();
        eprintln!("scheduling: {id} cancelled after {behind} of the 200 normal creates");
        assert!(
            behind < 100,
            "the cancel of an expedited delivery waited behind the backlog ({behind} normal creates before it): {status}"
        );
    }
    worker.stop().await;
    gateway.stop().await;
}

/// A delivery request from `pickup` to `dropoff` (`lat,lon`) with a
/// package of `size` and `weight`.
fn trip(n: usize, pickup: &str, dropoff: &str, size: &str, weight: f64) -> serde_json::Value {
    let mut body = ri_example();
    body["pickupLocation"] = json!(pickup);
    body["dropOffLocation"] = json!(dropoff);
    body["packageInfo"]["packageId"] = json!(format!("limits-package-{n}"));
    body["packageInfo"]["size"] = json!(size);
    body["packageInfo"]["weight"] = json!(weight);
    body
}

/// Polls until `id` has a drone; returns when, and which drone.
async fn wait_assigned(app: &TestApp, id: &str, within: Duration) -> (DateTime<Utc>, String) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(at) = assigned_at(app, id).await {
            let drone = app
                .engine
                .delivery(id)
                .await
                .ok()
                .flatten()
                .and_then(|r| r.delivery.drone_id)
                .unwrap_or_default();
            return (at, drone);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never got a drone"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The one drone of a one-drone fleet, as stored.
async fn only_drone(app: &TestApp) -> dronedelivery_actors::domain::DroneState {
    let drones = app.engine.drones().await.expect("drones");
    assert_eq!(drones.len(), 1, "{drones:?}");
    drones.into_iter().next().expect("one drone")
}

/// One drone at the area's centre (47.60, -122.25) with a 25 km battery.
/// A long job (20 km with the way home) leaves it 15 km at the dropoff,
/// too little for a second long job but enough for a short one (12 km
/// from there) waiting behind it; after the short one it parks with 3 km,
/// recharges (visibly, on `GET /api/drones`) and only then takes the long
/// one, with the battery to fly it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drone_short_of_range_is_not_given_a_long_job_and_recharges() {
    let app = spawn_app_on(
        |a| {
            a.fleet_size = 1;
            a.depots = 1;
            a.sim_speed = 400.0;
            a.drone_range_km = 25.0;
            // 4 km of range per real second at this speed.
            a.drone_recharge_km_per_hour = 36.0;
        },
        Some(real_backends().await),
    )
    .await;
    // 5 km north of the depot, then 5 km on: 20 km with the way home.
    let long = |n| trip(n, "47.644966,-122.25", "47.689932,-122.25", "Small", 5.0);
    let first = app.post_delivery(&long(1)).await;
    wait_assigned(&app, &first, Duration::from_secs(20)).await;
    let second = app.post_delivery(&long(2)).await;
    // 1 km north, then 1 km on: 12 km from the first job's dropoff.
    let short = app
        .post_delivery(&trip(
            3,
            "47.608993,-122.25",
            "47.617986,-122.25",
            "Small",
            5.0,
        ))
        .await;
    let (short_at, _) = wait_assigned(&app, &short, Duration::from_secs(20)).await;
    assert!(
        assigned_at(&app, &second)
            .await
            .is_none_or(|at| at > short_at),
        "the long job, first in line, went to a drone that could not fly it"
    );
    app.wait_for_stage(&short, stage::COMPLETED, Duration::from_secs(20))
        .await;
    // Home with about 3 km: parked and charging while the long job waits.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while assigned_at(&app, &second).await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the long job never got the drone"
        );
        let list: serde_json::Value = app.get("/api/drones").await.json().await.expect("json");
        let drone = &list["drones"][0];
        if drone["status"] == "Available" {
            seen.push(drone["rangeLeftM"].as_f64().unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("limits: parked range while the long job waited: {seen:?}");
    assert!(
        seen.len() >= 2 && seen.windows(2).all(|w| w[1] >= w[0]) && seen[seen.len() - 1] > seen[0],
        "the parked drone recharges: {seen:?}"
    );
    assert!(seen[0] < 20_000.0, "it waited for range: {seen:?}");
    // Claimed with what the whole flight needs.
    let drone = only_drone(&app).await;
    if drone.delivery_id.as_deref() == Some(second.as_str()) {
        let battery = drone.battery.expect("a battery");
        let at_claim = battery.level_m + (drone.flown_m - drone.job_start_m);
        assert!(
            at_claim >= 19_990.0,
            "claimed with {at_claim} m for a 20 km flight"
        );
    }
    app.wait_for_stage(&second, stage::COMPLETED, Duration::from_secs(30))
        .await;
    app.wait_for_stage(&first, stage::COMPLETED, Duration::from_secs(5))
        .await;
    app.stop().await;
}

/// Three drones, one of each class, unlimited range. A package heavier
/// than the large drones carry is a 400 naming the limit; one only the
/// large drone carries waits while it is busy, though smaller drones are
/// free (and a light job posted after it is served by them at once), and
/// goes to the large drone when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_too_heavy_for_the_free_drones_waits_for_a_large_one() {
    let app = spawn_app_on(
        |a| {
            a.fleet_size = 3;
            a.depots = 1;
            a.sim_speed = 200.0;
            a.drone_range_km = 0.0;
        },
        Some(real_backends().await),
    )
    .await;
    let res = app
        .send_json(
            reqwest::Method::POST,
            "/api/deliveryrequests",
            &trip(0, "47.61,-122.25", "47.62,-122.25", "Small", 501.0),
        )
        .await;
    let problem = assert_problem(res, 400).await;
    let errors = problem["errors"].to_string();
    assert!(
        errors.contains("packageInfo.weight") && errors.contains("500 kg"),
        "{problem}"
    );
    // A large package, 10 km out and 10 km on: the large drone is busy a
    // while (about 7 s at this speed).
    let large = app
        .post_delivery(&trip(
            1,
            "47.689932,-122.25",
            "47.779864,-122.25",
            "Large",
            50.0,
        ))
        .await;
    let (_, large_drone) = wait_assigned(&app, &large, Duration::from_secs(20)).await;
    let heavy = app
        .post_delivery(&trip(2, "47.61,-122.25", "47.62,-122.25", "Small", 300.0))
        .await;
    let light = app
        .post_delivery(&trip(3, "47.61,-122.25", "47.62,-122.25", "Small", 3.0))
        .await;
    let (light_at, light_drone) = wait_assigned(&app, &light, Duration::from_secs(10)).await;
    assert_ne!(light_drone, large_drone);
    assert!(
        assigned_at(&app, &heavy).await.is_none(),
        "300 kg went to a drone that cannot carry it"
    );
    let (heavy_at, heavy_drone) = wait_assigned(&app, &heavy, Duration::from_secs(30)).await;
    assert_eq!(
        heavy_drone, large_drone,
        "only the large drone carries 300 kg"
    );
    assert!(heavy_at > light_at);
    let large_done = app
        .wait_for_stage(&large, stage::COMPLETED, Duration::from_secs(5))
        .await;
    eprintln!("limits: the large job ended {large_done}");
    app.wait_for_stage(&heavy, stage::COMPLETED, Duration::from_secs(30))
        .await;
    app.stop().await;
}

/// Five deliveries booked for a pickup 20 s ahead, with a 5 s lead time:
/// `Scheduled` with their pickup time and no drone; the engine is stopped
/// and a new one started on the same stores; each asks for its drone when
/// the lead time comes (not before), once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_pickups_start_at_their_lead_time_once_across_a_restart() {
    let configure = |a: &mut dronedelivery_engine::ServeArgs| {
        a.fleet_size = 10;
        a.depots = 1;
        a.sim_speed = 200.0;
        a.pickup_lead_secs = 5;
    };
    let backends = real_backends().await;
    let app = spawn_app_on(configure, Some(backends.clone())).await;
    let pickup = Utc::now() + chrono::Duration::seconds(20);
    let start = pickup - chrono::Duration::seconds(5);
    let mut ids = Vec::new();
    for n in 0..5 {
        let mut body = trip(10 + n, "47.61,-122.25", "47.62,-122.25", "Small", 1.0);
        body["pickupTime"] = json!(pickup.to_rfc3339());
        ids.push(app.post_delivery(&body).await);
    }
    // An unbooked one alongside starts at once.
    let now = app
        .post_delivery(&trip(20, "47.61,-122.25", "47.62,-122.25", "Small", 1.0))
        .await;
    wait_assigned(&app, &now, Duration::from_secs(10)).await;
    for id in &ids {
        let status = app.wait_for_stage(id, 6, Duration::from_secs(10)).await;
        assert_eq!(status["stageName"], "Scheduled");
        let booked: DateTime<Utc> =
            serde_json::from_value(status["scheduledFor"].clone()).expect("scheduledFor is a time");
        assert!((booked - pickup).num_milliseconds().abs() < 1, "{status}");
        assert!(status["droneId"].is_null(), "{status}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.stop().await;
    let app = spawn_app_on(configure, Some(backends)).await;
    let mut started = Vec::new();
    for id in &ids {
        let (at, _) = wait_assigned(&app, id, Duration::from_secs(30)).await;
        started.push(at);
        let events = app.engine.events(id).await.expect("events");
        let stages: Vec<DeliveryStage> = events.iter().map(|e| e.stage).collect();
        assert_eq!(
            stages
                .iter()
                .filter(|s| **s == DeliveryStage::Created)
                .count(),
            1,
            "started once: {stages:?}"
        );
        let created_at = events
            .iter()
            .find(|e| e.stage == DeliveryStage::Created)
            .map(|e| e.at)
            .unwrap_or_default();
        assert!(
            created_at >= start,
            "{id} started at {created_at}, before {start}"
        );
        assert!(
            created_at < start + chrono::Duration::seconds(3),
            "{id} started late: {created_at}, due {start}"
        );
    }
    eprintln!(
        "scheduling: due at {start}; started {:?} ms after",
        started
            .iter()
            .map(|at| (*at - start).num_milliseconds())
            .collect::<Vec<_>>()
    );
    for id in &ids {
        let status = app
            .wait_for_stage(id, stage::COMPLETED, Duration::from_secs(30))
            .await;
        assert!(status["scheduledFor"].is_null(), "{status}");
    }
    app.stop().await;
}

/// The tracking events of `id` as the events route serves them (the SSE
/// stream's `stage` events), as JSON.
async fn at_risk_events(app: &TestApp, id: &str) -> Vec<serde_json::Value> {
    app.engine
        .events(id)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.at_risk.is_some())
        .map(|e| serde_json::to_value(e).expect("json"))
        .collect()
}

/// One drone, flights of several seconds. A delivery whose deadline falls
/// before its drone can arrive is marked at risk when the drone reports its
/// ETA, with a tracking event, counted in `GET /api/fleet` and the gauge;
/// it is delivered late and counted as a miss. A second one waits for the
/// busy drone while its deadline passes: the durable timer marks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_cannot_be_met_raises_at_risk_and_the_event() {
    let app = spawn_app_on(
        |a| {
            a.fleet_size = 1;
            a.depots = 1;
            a.sim_speed = 100.0;
            a.drone_range_km = 0.0;
        },
        Some(real_backends().await),
    )
    .await;
    // 10 km out and 10 km on at 1.5 km/s: about 13 s to the dropoff.
    let mut late = trip(30, "47.689932,-122.25", "47.779864,-122.25", "Small", 1.0);
    let deadline = Utc::now() + chrono::Duration::seconds(4);
    late["deadline"] = json!(deadline.to_rfc3339());
    let late = app.post_delivery(&late).await;
    wait_assigned(&app, &late, Duration::from_secs(10)).await;
    let status = app
        .wait_for(&late, Duration::from_secs(5), |s| s["atRisk"] == true)
        .await;
    let reason = status["atRiskReason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.starts_with("expected at"), "{status}");
    let deadline_read: DateTime<Utc> =
        serde_json::from_value(status["deadline"].clone()).expect("a parsed deadline");
    assert!((deadline_read - deadline).num_milliseconds().abs() < 1);
    let events = at_risk_events(&app, &late).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["atRisk"], reason.as_str());
    assert_eq!(events[0]["stage"], stage::HEADED_TO_PICKUP);

    // Behind it, a nearby job due in 2 s: it waits for the only drone.
    let mut waiting = trip(31, "47.61,-122.25", "47.62,-122.25", "Small", 1.0);
    waiting["deadline"] = json!((Utc::now() + chrono::Duration::seconds(2)).to_rfc3339());
    let waiting = app.post_delivery(&waiting).await;
    let status = app
        .wait_for(&waiting, Duration::from_secs(8), |s| s["atRisk"] == true)
        .await;
    assert_eq!(status["stage"], stage::CREATED, "still waiting: {status}");
    assert!(
        status["atRiskReason"]
            .as_str()
            .is_some_and(|r| r.contains("passed")),
        "{status}"
    );
    let fleet: serde_json::Value = app.get("/api/fleet").await.json().await.expect("json");
    assert_eq!(fleet["atRisk"], 2, "{fleet}");
    let done = app
        .wait_for_stage(&late, stage::COMPLETED, Duration::from_secs(30))
        .await;
    assert_eq!(done["atRisk"], true);
    assert!(
        done["atRiskReason"]
            .as_str()
            .is_some_and(|r| r.starts_with("missed")),
        "{done}"
    );
    app.wait_for_stage(&waiting, stage::COMPLETED, Duration::from_secs(30))
        .await;
    let fleet: serde_json::Value = app.get("/api/fleet").await.json().await.expect("json");
    assert_eq!(
        fleet["atRisk"], 0,
        "only deliveries under way count: {fleet}"
    );
    app.stop().await;
}
