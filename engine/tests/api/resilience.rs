//! The tree survives failures on its own, on the real backends (Redis
//! Streams, Redis, MongoDB): crashed actors are restarted and resume from the
//! store, operator restarts lose nothing, a store outage opens the breaker
//! without dead-lettering anything (and fails fast only the requests that
//! need that store, while the engine stays ready), poison messages are dead-lettered and can
//! be replayed once their cause is fixed, and idle actors passivate and come
//! back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dronedelivery_actors::domain::ownership::Fence;
use dronedelivery_actors::domain::{
    DeliveryRecord, DeliveryStage, DroneRequest, DroneState, DroneStatus, TrackingEvent,
};
use dronedelivery_actors::ports::{
    Claimed, DeliveryStore, DroneStore, Operation, QueueMessage, Saved, StoreResult,
};
use serde_json::json;

use crate::helpers::{
    real_backends, ri_example, spawn_app_on, stage, SwitchableDeliveries, TestApp,
};

const LONG: Duration = Duration::from_secs(30);

/// A delivery store that panics once, on the first save of a delivery
/// entering `HeadedToPickup`: the delivery actor crashes in the middle of
/// applying a drone report.
struct PanicOnceDeliveries {
    inner: Arc<dyn DeliveryStore>,
    fired: AtomicBool,
}

#[async_trait]
impl DeliveryStore for PanicOnceDeliveries {
    fn backend(&self) -> &'static str {
        "faulty-memory"
    }
    async fn get(&self, id: &str) -> StoreResult<Option<DeliveryRecord>> {
        self.inner.get(id).await
    }
    async fn save(
        &self,
        record: &DeliveryRecord,
        event: Option<&TrackingEvent>,
        fence: Option<Fence>,
    ) -> StoreResult<Saved> {
        if record.stage == DeliveryStage::HeadedToPickup && !self.fired.swap(true, Ordering::SeqCst)
        {
            panic!("injected fault: delivery store crashed the delivery actor");
        }
        self.inner.save(record, event, fence).await
    }
    async fn events(&self, id: &str) -> StoreResult<Vec<TrackingEvent>> {
        self.inner.events(id).await
    }
    async fn awaiting_drone(&self) -> StoreResult<Vec<String>> {
        self.inner.awaiting_drone().await
    }
    async fn due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.inner.due(now, limit).await
    }
    async fn at_risk_count(&self) -> StoreResult<u64> {
        self.inner.at_risk_count().await
    }
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// A drone store that panics once, when a drone first stores that it picked
/// up its package: the drone actor crashes mid-flight.
struct PanicOnceDrones {
    inner: Arc<dyn DroneStore>,
    fired: AtomicBool,
}

#[async_trait]
impl DroneStore for PanicOnceDrones {
    fn backend(&self) -> &'static str {
        "faulty-memory"
    }
    async fn get(&self, id: &str) -> StoreResult<Option<DroneState>> {
        self.inner.get(id).await
    }
    async fn seed(&self, drones: &[DroneState]) -> StoreResult<usize> {
        self.inner.seed(drones).await
    }
    async fn claim(
        &self,
        job: &DroneRequest,
        fence: Option<Fence>,
        now: DateTime<Utc>,
    ) -> StoreResult<Claimed> {
        self.inner.claim(job, fence, now).await
    }
    async fn put(&self, drone: &DroneState, fence: Option<Fence>) -> StoreResult<bool> {
        if drone.status == DroneStatus::HeadedToDropoff && !self.fired.swap(true, Ordering::SeqCst)
        {
            panic!("injected fault: drone store crashed the drone actor");
        }
        self.inner.put(drone, fence).await
    }
    async fn release(
        &self,
        drone: &DroneState,
        delivery_id: &str,
        fence: Option<Fence>,
    ) -> StoreResult<bool> {
        self.inner.release(drone, delivery_id, fence).await
    }
    async fn list(&self) -> StoreResult<Vec<DroneState>> {
        self.inner.list().await
    }
    async fn counts(&self) -> StoreResult<(u64, u64)> {
        self.inner.counts().await
    }
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

async fn stages(app: &TestApp, id: &str) -> Vec<DeliveryStage> {
    app.engine
        .events(id)
        .await
        .expect("the delivery's events")
        .iter()
        .map(|e| e.stage)
        .collect()
}

#[tokio::test]
async fn a_crashed_delivery_actor_is_restarted_and_the_delivery_completes() {
    let mut backends = real_backends().await;
    let faulty = Arc::new(PanicOnceDeliveries {
        inner: Arc::clone(&backends.deliveries),
        fired: AtomicBool::new(false),
    });
    backends.deliveries = faulty.clone();
    let app = spawn_app_on(|_| {}, Some(backends)).await;
    let id = app.post_delivery(&ri_example()).await;
    app.wait_for_stage(&id, stage::COMPLETED, LONG).await;
    assert!(
        faulty.fired.load(Ordering::SeqCst),
        "the fault was never injected"
    );
    // The report lost with the crashed actor was recovered from the drone's
    // later reports: every stage is recorded once, in order.
    assert_eq!(
        stages(&app, &id).await,
        [
            DeliveryStage::Created,
            DeliveryStage::HeadedToPickup,
            DeliveryStage::HeadedToDropoff,
            DeliveryStage::Completed
        ]
    );
    let tree = app.engine.supervisor_tree().await;
    let deliveries = tree.iter().find(|s| s.name == "deliveries");
    assert!(deliveries.is_some_and(|d| d.restarts >= 1), "{tree:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_crashed_drone_actor_is_restarted_and_resumes_its_flight() {
    let mut backends = real_backends().await;
    let faulty = Arc::new(PanicOnceDrones {
        inner: Arc::clone(&backends.drones),
        fired: AtomicBool::new(false),
    });
    backends.drones = faulty.clone();
    let app = spawn_app_on(|a| a.fleet_size = 3, Some(backends)).await;
    let id = app.post_delivery(&ri_example()).await;
    app.wait_for_stage(&id, stage::COMPLETED, LONG).await;
    assert!(
        faulty.fired.load(Ordering::SeqCst),
        "the fault was never injected"
    );
    let fleet = app.engine.fleet().await.expect("no fleet");
    assert!(fleet.restarts >= 1, "{fleet:?}");
    assert_eq!(fleet.drones, 3, "the drone came back");
    app.stop().await;
}

#[tokio::test]
async fn operator_restarts_during_a_burst_lose_no_delivery() {
    let app = spawn_app_on(|a| a.fleet_size = 50, Some(real_backends().await)).await;
    let mut ids = Vec::new();
    for i in 0..500 {
        let mut body = ri_example();
        body["pickupLocation"] = json!(format!("pickup {i}"));
        body["dropOffLocation"] = json!(format!("dropoff {i}"));
        ids.push(app.post_delivery(&body).await);
        match i {
            100 => {
                let s = app.engine.restart_supervisor("fleet").await;
                assert!(
                    s.as_ref().is_ok_and(|s| s.status.name() == "running"),
                    "{s:?}"
                );
            }
            250 => {
                let s = app.engine.restart_supervisor("consumers").await;
                assert!(s.is_ok(), "{s:?}");
            }
            400 => {
                let s = app.engine.restart_supervisor("deliveries").await;
                assert!(s.is_ok(), "{s:?}");
            }
            _ => {}
        }
    }
    for id in &ids {
        app.wait_for_stage(id, stage::COMPLETED, Duration::from_secs(90))
            .await;
    }
    for id in &ids {
        let created = stages(&app, id)
            .await
            .iter()
            .filter(|s| **s == DeliveryStage::Created)
            .count();
        assert_eq!(created, 1, "{id} created {created} times");
    }
    assert!(matches!(
        app.engine.restart_supervisor("nope").await,
        Err(dronedelivery_actors::CommandError::NotFound)
    ));
    app.stop().await;
}

#[tokio::test]
async fn a_dead_letter_is_replayed_once_its_cause_is_fixed() {
    let app = spawn_app_on(
        |a| {
            a.max_delivery_attempts = 2;
            // Kept twice this long before its last attempt.
            a.lock_duration_secs = 1;
        },
        Some(real_backends().await),
    )
    .await;
    // A reschedule for a delivery that does not exist (yet): retried, then
    // dead-lettered with the reason.
    let reschedule = QueueMessage::new(
        Operation::Reschedule,
        &json!({"deliveryId": "late-1", "deadline": "after the fix"}),
        None,
    );
    app.engine.submit(reschedule.clone()).await.unwrap();
    let deadline = tokio::time::Instant::now() + LONG;
    let letter = loop {
        let (letters, _) = app
            .engine
            .dead_letters(0, 10)
            .await
            .expect("the dead letters");
        if let Some(l) = letters.into_iter().find(|l| l.id == reschedule.message_id) {
            break l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(letter.reason.contains("not found"), "{}", letter.reason);
    assert_eq!(letter.attempts, 2);

    // Fix the cause: the delivery now exists (slow drones keep it reschedulable).
    app.submit_create("late-1").await;
    app.wait_for("late-1", LONG, |s| s["stage"].is_u64()).await;

    let replayed = app.engine.replay_dead_letter(&reschedule.message_id).await;
    assert!(replayed.is_ok(), "{replayed:?}");
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let d = app.engine.delivery("late-1").await.ok().flatten();
        if d.as_ref()
            .is_some_and(|d| d.delivery.deadline == "after the fix")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replayed reschedule never applied: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (left, total) = app
        .engine
        .dead_letters(0, 10)
        .await
        .expect("the dead letters");
    assert!(
        left.iter().all(|l| l.id != reschedule.message_id) && total == 0,
        "{left:?}"
    );
    assert!(matches!(
        app.engine.replay_dead_letter("no-such-letter").await,
        Err(dronedelivery_actors::CommandError::NotFound)
    ));
    app.stop().await;
}

/// Delivery actors registered in this engine.
fn live_deliveries(app: &TestApp) -> usize {
    let prefix = format!("{}/delivery/", app.engine.context().config.instance);
    ractor::registry::registered()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .count()
}

/// Waits until the queue is empty and no message is in flight.
async fn wait_until_queue_drained(app: &TestApp, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while app.engine.queue_depth().await.ok().flatten().unwrap_or(1) > 0
        || !app.engine.context().in_flight.is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "creation did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn idle_deliveries_past_the_live_limit_stop_within_a_second() {
    const N: usize = 300;
    const LIMIT: usize = 50;
    // One slow drone: every delivery but one waits, idle. Their idle
    // timeout is ten minutes, so only the limit can stop them in time.
    let app = spawn_app_on(
        |a| {
            a.fleet_size = 1;
            a.sim_speed = 1.0;
            a.passivate_after_secs = 600;
            a.max_live_deliveries = LIMIT as u64;
            a.consumers = 8;
        },
        None,
    )
    .await;
    for i in 0..N {
        app.submit_create(&format!("limited-{i}")).await;
    }
    let ctx = app.engine.context();
    let live = || live_deliveries(&app);
    wait_until_queue_drained(&app, Duration::from_secs(60)).await;
    // Those activated past the limit stop after about a second; those
    // activated under it keep their long timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while live() > LIMIT + 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} delivery actors still live, limit {LIMIT}",
            live()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // (Workers activate concurrently, so a few of the first ones may
    // already see the count past the limit.)
    assert!(
        live() >= LIMIT / 2,
        "the limit stopped more than it should: {} live",
        live()
    );
    let counted = ctx.live_deliveries.load(Ordering::Relaxed);
    assert!(
        counted.abs_diff(live()) <= 1,
        "counted {counted} live deliveries, {} registered",
        live()
    );
    // Every delivery is still there, waiting, read back from the store.
    for i in 0..N {
        let id = format!("limited-{i}");
        let record = app.engine.delivery(&id).await.ok().flatten();
        assert!(record.is_some(), "{id} lost");
    }
    app.stop().await;
}

#[tokio::test]
async fn ten_thousand_passivated_deliveries_come_back_from_the_store() {
    const N: usize = 10_000;
    // One slow drone: almost every delivery waits, its actor idles and
    // passivates after a second.
    let app = spawn_app_on(
        |a| {
            a.fleet_size = 1;
            a.sim_speed = 1.0;
            a.passivate_after_secs = 1;
            a.consumers = 8;
        },
        Some(real_backends().await),
    )
    .await;
    let ids: Vec<String> = (0..N).map(|i| format!("passive-{i}")).collect();
    for id in &ids {
        app.submit_create(id).await;
    }
    let live = || live_deliveries(&app);
    // All created...
    wait_until_queue_drained(&app, Duration::from_secs(120)).await;
    // ...then passivated.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while live() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} delivery actors still live",
            live()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every one reads back correctly from the store.
    for id in &ids {
        let record = app.engine.delivery(id).await.ok().flatten();
        let record = record.unwrap_or_else(|| panic!("{id} lost"));
        assert_eq!(record.delivery.id, *id);
        assert!(!record.stage.is_terminal(), "{id}: {:?}", record.stage);
    }
    // A message re-activates a passivated actor: cancel them all.
    for id in &ids {
        app.engine
            .submit(QueueMessage::new(Operation::Cancel, &json!(id), None))
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for id in &ids {
        loop {
            let stage = app
                .engine
                .delivery(id)
                .await
                .ok()
                .flatten()
                .map(|r| r.stage);
            if stage == Some(DeliveryStage::Cancelled) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} was never cancelled: {stage:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_store_outage_opens_the_breaker_and_nothing_is_dead_lettered() {
    let mut backends = real_backends().await;
    let store = SwitchableDeliveries::wrap(&mut backends);
    let app = spawn_app_on(|a| a.max_delivery_attempts = 3, Some(backends)).await;
    store.set_down(true);
    let mut ids = Vec::new();
    for i in 0..30 {
        let mut body = ri_example();
        body["pickupLocation"] = json!(format!("pickup {i}"));
        ids.push(app.post_delivery(&body).await);
    }
    // Well past what three attempts would take without the breaker.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let breaker = app.engine.context().breakers.deliveries.state();
    assert_ne!(breaker, dronedelivery_actors::breaker::BreakerState::Closed);
    // Readiness does not follow a dependency: every replica would leave
    // the load balancer together.
    assert_eq!(
        app.get("/readyz").await.status(),
        200,
        "still ready while a store is down"
    );
    // The probe has seen it (it runs every 2 s): reads that need the store
    // fail at once, naming it; the others are served.
    let report = wait_for_dependency(&app, "deliveries", false).await;
    assert_eq!(report["backend"], "switchable-memory");
    assert_eq!(report["lastError"], "backend unavailable: injected outage");
    assert!(report["downSince"].is_string(), "{report}");
    // A slow store as well as a failing one: the request must not wait.
    store.set_delay(Duration::from_secs(10));
    let asked = std::time::Instant::now();
    let res = app.get(&format!("/api/deliveries/{}", ids[0])).await;
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "a request for a down dependency waited {:?}",
        asked.elapsed()
    );
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let problem: serde_json::Value = res.json().await.expect("a problem document");
    assert_eq!(problem["dependency"], "deliveries", "{problem}");
    assert_eq!(
        app.get("/api/packages/no-such-package").await.status(),
        404,
        "a request that needs only another store is served"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap_or_default();
    assert!(
        metrics.contains(r#"dronedelivery_dependency_up{dependency="deliveries"} 0"#),
        "{metrics}"
    );
    store.set_delay(Duration::ZERO);
    store.set_down(false);
    wait_for_dependency(&app, "deliveries", true).await;
    for id in &ids {
        app.wait_for_stage(id, stage::COMPLETED, Duration::from_secs(60))
            .await;
    }
    let (letters, total) = app
        .engine
        .dead_letters(0, 10)
        .await
        .expect("the dead letters");
    assert_eq!(
        total, 0,
        "a transient outage dead-lettered messages: {letters:?}"
    );
    assert_eq!(
        app.engine.context().breakers.deliveries.state(),
        dronedelivery_actors::breaker::BreakerState::Closed
    );
    app.stop().await;
}

/// Polls `/healthz/dependencies` until `name` is `up` (or down), and
/// returns its entry.
async fn wait_for_dependency(app: &TestApp, name: &str, up: bool) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let res = app.get("/healthz/dependencies").await;
        assert_eq!(res.status(), 200, "the report is always 200");
        let report: serde_json::Value = res.json().await.expect("the report");
        let entry = report["dependencies"]
            .as_array()
            .and_then(|all| all.iter().find(|d| d["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing from {report}"));
        if entry["up"] == up {
            assert_eq!(report["status"], if up { "up" } else { "degraded" });
            return entry;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never became up={up}: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_delivery_no_drone_can_take_is_compensated_and_can_be_replayed() {
    let app = spawn_app_on(
        |a| {
            a.fleet_size = 1;
            a.sim_speed = 1.0;
            a.max_drone_wait_secs = 1;
        },
        Some(real_backends().await),
    )
    .await;
    let busy = app.post_delivery(&ri_example()).await;
    app.wait_for_stage(&busy, stage::HEADED_TO_PICKUP, LONG)
        .await;
    let waiting = app.post_delivery(&ri_example()).await;

    // Compensated: cancelled with the reason, dead-lettered, in the history.
    app.wait_for_stage(&waiting, stage::CANCELLED, LONG).await;
    let record = app.engine.delivery(&waiting).await.ok().flatten();
    let reason = record
        .and_then(|r| r.cancel_reason)
        .map(|r| r.to_string())
        .unwrap_or_default();
    assert!(reason.contains("no drone"), "{reason}");
    let letter_id = format!("compensated-{waiting}");
    let (letters, _) = app
        .engine
        .dead_letters(0, 10)
        .await
        .expect("the dead letters");
    let letter = letters.iter().find(|l| l.id == letter_id);
    assert!(
        letter.is_some_and(|l| l.reason.contains("no drone")),
        "{letters:?}"
    );
    // The drone's own delivery is untouched.
    assert_eq!(
        app.status(&busy).await.map(|s| s["stage"].clone()),
        Some(json!(stage::HEADED_TO_PICKUP))
    );

    // Fix the cause (free the drone), replay: the delivery is taken up again.
    let res = app
        .client
        .delete(app.url(&format!("/api/deliveryrequests/{busy}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    app.wait_for_stage(&busy, stage::CANCELLED, LONG).await;
    let replayed = app.engine.replay_dead_letter(&letter_id).await;
    assert!(replayed.is_ok(), "{replayed:?}");
    app.wait_for_stage(&waiting, stage::HEADED_TO_PICKUP, LONG)
        .await;
    app.stop().await;
}
