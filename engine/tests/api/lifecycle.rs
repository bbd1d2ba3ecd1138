//! The delivery lifecycle end to end: stages, reschedule, cancel, waiting for
//! a drone, idempotent redelivery, dead letters.

use std::time::Duration;

use dronedelivery_actors::domain::DeliveryStage;
use dronedelivery_actors::ports::{Operation, QueueMessage};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, ri_example, spawn_app, spawn_app_with, stage};

const LONG: Duration = Duration::from_secs(20);

fn stages(events: &[dronedelivery_actors::domain::TrackingEvent]) -> Vec<DeliveryStage> {
    events.iter().map(|e| e.stage).collect()
}

#[tokio::test]
async fn a_delivery_goes_through_every_stage_to_completed() {
    let app = spawn_app().await;
    let id = app.post_delivery(&ri_example()).await;
    let done = app.wait_for_stage(&id, stage::COMPLETED, LONG).await;
    assert!(done["droneId"].is_string());
    let events = app
        .engine
        .context()
        .backends
        .deliveries
        .events(&id)
        .await
        .expect("the delivery's events");
    assert_eq!(
        stages(&events),
        [
            DeliveryStage::Created,
            DeliveryStage::HeadedToPickup,
            DeliveryStage::HeadedToDropoff,
            DeliveryStage::Completed
        ]
    );
    // ETAs are real predictions, not "now + 10 min": the delivery ETA follows the pickup ETA.
    let pickup =
        chrono::DateTime::parse_from_rfc3339(done["pickupETA"].as_str().unwrap_or_default());
    let delivery =
        chrono::DateTime::parse_from_rfc3339(done["deliveryETA"].as_str().unwrap_or_default());
    assert!(
        matches!((pickup, delivery), (Ok(p), Ok(d)) if p <= d),
        "{done}"
    );

    // The finished flight is in the history, counted for the owner's month.
    let now = chrono::Utc::now();
    let used = app
        .engine
        .context()
        .backends
        .history
        .utilization(
            "myowner",
            chrono::Datelike::year(&now),
            chrono::Datelike::month(&now),
        )
        .await
        .expect("the owner's utilization");
    assert!(
        used.traveled_miles > 0.5 && used.assigned_hours > 0.0,
        "{used:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn status_tracks_the_drone_while_it_flies() {
    // Real-time speed: the drone is still on its way while we look.
    let app = spawn_app_with(|a| a.sim_speed = 1.0).await;
    let id = app.post_delivery(&ri_example()).await;
    let first = app.wait_for_stage(&id, stage::HEADED_TO_PICKUP, LONG).await;
    let p1 = first["lastKnownLocation"].clone();
    assert!(p1["latitude"].is_number(), "{first}");
    let moved = app
        .wait_for(&id, LONG, |s| s["lastKnownLocation"] != p1)
        .await;
    assert_eq!(moved["stage"], stage::HEADED_TO_PICKUP);
    app.stop().await;
}

#[tokio::test]
async fn reschedule_changes_the_route_and_the_delivery_still_completes() {
    let app = spawn_app_with(|a| a.sim_speed = 1.0).await;
    let id = app.post_delivery(&ri_example()).await;
    app.wait_for_stage(&id, stage::HEADED_TO_PICKUP, LONG).await;

    let res = app
        .send_json(
            Method::PATCH,
            &format!("/api/deliveryrequests/{id}"),
            &json!({"deliveryId": "ignored", "pickupLocation": "47.61,-122.20", "deadline": "tomorrow"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.expect("the answer text"), id);

    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let d: Value = app
            .get(&format!("/api/deliveries/{id}"))
            .await
            .json()
            .await
            .expect("a JSON delivery");
        if d["pickup"]["latitude"] == 47.61 && d["deadline"] == "tomorrow" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reschedule never applied: {d}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.wait_for_stage(&id, stage::HEADED_TO_PICKUP, LONG).await;
    let events = app
        .engine
        .context()
        .backends
        .deliveries
        .events(&id)
        .await
        .expect("the delivery's events");
    assert_eq!(
        stages(&events),
        [
            DeliveryStage::Created,
            DeliveryStage::HeadedToPickup,
            DeliveryStage::Rescheduled,
            DeliveryStage::HeadedToPickup
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_delivery_waits_for_a_drone_and_cancel_frees_it() {
    let app = spawn_app_with(|a| {
        a.sim_speed = 1.0;
        a.fleet_size = 1;
    })
    .await;
    let first = app.post_delivery(&ri_example()).await;
    let flying = app
        .wait_for_stage(&first, stage::HEADED_TO_PICKUP, LONG)
        .await;
    let second = app.post_delivery(&ri_example()).await;
    app.wait_for_stage(&second, stage::CREATED, LONG).await;
    // No free drone: the second waits; it is not failed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.status(&second).await.map(|s| s["stage"].clone()),
        Some(json!(stage::CREATED))
    );

    let res = app
        .client
        .delete(app.url(&format!("/api/deliveryrequests/{first}")))
        .send()
        .await;
    assert_eq!(res.map(|r| r.status().as_u16()).ok(), Some(204));
    app.wait_for_stage(&first, stage::CANCELLED, LONG).await;

    // The only drone was released and now serves the waiting delivery.
    let served = app
        .wait_for_stage(&second, stage::HEADED_TO_PICKUP, LONG)
        .await;
    assert_eq!(served["droneId"], flying["droneId"]);

    // Cancelling again is idempotent.
    let res = app
        .client
        .delete(app.url(&format!("/api/deliveryrequests/{first}")))
        .send()
        .await;
    assert_eq!(res.map(|r| r.status().as_u16()).ok(), Some(204));
    app.stop().await;
}

#[tokio::test]
async fn completed_deliveries_cannot_be_changed() {
    let app = spawn_app().await;
    let id = app.post_delivery(&ri_example()).await;
    app.wait_for_stage(&id, stage::COMPLETED, LONG).await;
    let res = app
        .client
        .delete(app.url(&format!("/api/deliveryrequests/{id}")))
        .send()
        .await;
    assert_problem(res.unwrap(), 409).await;
    let res = app
        .send_json(
            Method::PATCH,
            &format!("/api/deliveryrequests/{id}"),
            &json!({"deadline": "x"}),
        )
        .await;
    assert_problem(res, 409).await;
    app.stop().await;
}

#[tokio::test]
async fn a_redelivered_message_has_no_second_effect() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.submit_create("dup-1").await;
    }
    app.wait_for_stage("dup-1", stage::COMPLETED, LONG).await;
    // Let any duplicate finish too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = app
        .engine
        .context()
        .backends
        .deliveries
        .events("dup-1")
        .await
        .expect("the delivery's events");
    let created = events
        .iter()
        .filter(|e| e.stage == DeliveryStage::Created)
        .count();
    let completed = events
        .iter()
        .filter(|e| e.stage == DeliveryStage::Completed)
        .count();
    assert_eq!((created, completed), (1, 1), "{events:?}");
    app.stop().await;
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_with_a_reason() {
    // A short lock: a reschedule of a delivery that never appears is kept
    // twice that long before its last attempt.
    let app = spawn_app_with(|a| {
        a.max_delivery_attempts = 3;
        a.lock_duration_secs = 1;
    })
    .await;
    let dead = &app.engine.context().backends.dead_letters;

    // Unknown operation: dead-lettered at once.
    let mut msg = QueueMessage::new(Operation::Cancel, &json!("x"), None);
    msg.operation = "explode".into();
    app.engine.submit(msg.clone()).await.unwrap();
    // Not JSON.
    let mut garbage = QueueMessage::new(Operation::Delivery, &json!({}), None);
    garbage.body = "{not json".into();
    app.engine.submit(garbage.clone()).await.unwrap();
    // A reschedule of a delivery that never appears: retried, then given up.
    let res = app
        .send_json(
            Method::PATCH,
            "/api/deliveryrequests/ghost",
            &json!({"deadline": "x"}),
        )
        .await;
    assert_eq!(res.status(), 200);

    let deadline = tokio::time::Instant::now() + LONG;
    while dead.count().await.unwrap_or(0) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead letters: {:?}",
            dead.list(0, 10).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let letters = dead.list(0, 10).await.expect("the dead letters");
    let reason_of = |op: &str| {
        letters
            .iter()
            .find(|l| l.message.operation == op)
            .map(|l| (l.reason.clone(), l.attempts))
    };
    assert!(reason_of("explode").is_some_and(|(r, n)| r.contains("unknown operation") && n == 1));
    assert!(letters
        .iter()
        .any(|l| l.id == garbage.message_id && l.reason.contains("not JSON")));
    let (reason, attempts) = reason_of("reschedule").unwrap_or_default();
    assert!(
        reason.contains("not found") && attempts == 3,
        "{reason} after {attempts}"
    );
    // The queue is empty: nothing is stuck behind the poison.
    assert_eq!(app.engine.queue_depth().await.ok().flatten(), Some(0));

    // Dead letters are counted by reason kind, never by free text.
    let metrics = app
        .get("/metrics")
        .await
        .text()
        .await
        .expect("the metrics text");
    for kind in ["unknown_operation", "not_json", "retries_exhausted"] {
        let label = format!("dronedelivery_dead_letters_total{{reason=\"{kind}\"}}");
        assert!(metrics.contains(&label), "{label} missing:\n{metrics}");
    }

    // And healthy traffic still flows.
    let id = app.post_delivery(&ri_example()).await;
    app.wait_for_stage(&id, stage::COMPLETED, LONG).await;
    app.stop().await;
}

#[tokio::test]
async fn many_concurrent_deliveries_all_complete() {
    let app = spawn_app_with(|a| a.fleet_size = 20).await;
    let mut ids = Vec::new();
    for i in 0..200 {
        let mut body = ri_example();
        body["pickupLocation"] = json!(format!("pickup {i}"));
        body["dropOffLocation"] = json!(format!("dropoff {i}"));
        ids.push(app.post_delivery(&body).await);
    }
    for id in &ids {
        app.wait_for_stage(id, stage::COMPLETED, Duration::from_secs(60))
            .await;
    }
    app.stop().await;
}
