//! Scheduling that honours the request, on the real backends (Redis
//! Streams queue, Redis and MongoDB stores) with a small fleet and a
//! backlog: the order in which waiting deliveries get drones.

use std::time::Duration;

use chrono::{DateTime, Utc};
use dronedelivery_actors::domain::DeliveryStage;
use serde_json::json;

use crate::helpers::{real_backends, ri_example, spawn_app_on, TestApp};

/// When `id` got its drone (its `HeadedToPickup` event), if it has one.
async fn assigned_at(app: &TestApp, id: &str) -> Option<DateTime<Utc>> {
    app.engine
        .events(id)
        .await
        .ok()?
        .into_iter()
        .find(|e| e.stage == DeliveryStage::HeadedToPickup)
        .map(|e| e.at)
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
