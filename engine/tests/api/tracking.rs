//! Following and finishing a delivery from the client's side: the live SSE
//! stream, drone utilisation, notify-me requests, confirmations, and
//! idempotent delivery requests (`Idempotency-Key`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Datelike;
use dronedelivery_actors::domain::ownership::Fence;
use dronedelivery_actors::domain::DeliveryStage;
use dronedelivery_actors::ports::{
    LockToken, MessageQueue, QueueMessage, ReceivedMessage, StoreError, StoreResult,
};
use dronedelivery_engine::memory;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, confirmation, ri_example, spawn_app, spawn_app_on, spawn_app_with, stage,
    TestApp,
};

const LONG: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- SSE

/// One server-sent event.
#[derive(Debug, Clone)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: Value,
}

/// Parses complete events (`\n\n`-terminated) off the front of `buffer`.
fn drain_events(buffer: &mut String, out: &mut Vec<SseEvent>) {
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let mut event = String::from("message");
        let mut id = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if !data.is_empty() {
            let data = serde_json::from_str(&data)
                .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {data}"));
            out.push(SseEvent { event, id, data });
        }
    }
}

/// Reads a whole event stream; panics if it has not ended within `within`.
async fn read_stream(mut res: reqwest::Response, within: Duration) -> Vec<SseEvent> {
    let deadline = tokio::time::Instant::now() + within;
    let mut buffer = String::new();
    let mut events = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(remaining, res.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                drain_events(&mut buffer, &mut events);
            }
            Ok(Ok(None)) => return events,
            Ok(Err(e)) => panic!("stream failed: {e}; events so far: {events:?}"),
            Err(_) => panic!("the stream did not end within {within:?}; events: {events:?}"),
        }
    }
}

async fn open_stream(app: &TestApp, id: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut req = app
        .client
        .get(app.url(&format!("/api/deliveries/{id}/events")))
        .header("accept", "text/event-stream");
    if let Some(last) = last_event_id {
        req = req.header("last-event-id", last);
    }
    req.send().await.unwrap()
}

fn stage_names(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event == "stage")
        .map(|e| e.data["stageName"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// Waits until the delivery is known to the store (a 202 only means queued).
async fn wait_until_known(app: &TestApp, id: &str) -> Value {
    app.wait_for(id, LONG, |_| true).await
}

#[tokio::test]
async fn the_event_stream_sends_every_stage_and_ends_by_itself() {
    let app = spawn_app().await;
    let id = app.post_delivery(&ri_example()).await;
    wait_until_known(&app, &id).await;
    let res = open_stream(&app, &id, None).await;
    assert_eq!(res.status(), 200);
    let ct = header(&res, "content-type").unwrap_or_default();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let events = read_stream(res, LONG).await;
    assert_eq!(
        stage_names(&events),
        ["Created", "HeadedToPickup", "HeadedToDropoff", "Completed"],
        "{events:?}"
    );
    let stages: Vec<&SseEvent> = events.iter().filter(|e| e.event == "stage").collect();
    for (n, e) in stages.iter().enumerate() {
        assert_eq!(e.id.as_deref(), Some((n + 1).to_string().as_str()));
        assert_eq!(e.data["deliveryId"], id.as_str());
        assert!(
            e.data["at"].is_string() && e.data["stage"].is_u64(),
            "{e:?}"
        );
    }
    assert_eq!(
        events.last().map(|e| e.event.as_str()),
        Some("stage"),
        "the terminal stage event comes last"
    );

    // An EventSource reconnecting after the end is told to stop (204).
    let res = open_stream(&app, &id, Some("4")).await;
    assert_eq!(res.status(), 204);
    // One that missed the last two gets just those.
    let events = read_stream(open_stream(&app, &id, Some("2")).await, LONG).await;
    assert_eq!(stage_names(&events), ["HeadedToDropoff", "Completed"]);
    app.stop().await;
}

#[tokio::test]
async fn the_event_stream_follows_the_drone_live() {
    // Slow enough that the flight takes a few seconds of polling.
    let app = spawn_app_with(|a| a.sim_speed = 1_000.0).await;
    let id = app.post_delivery(&ri_example()).await;
    wait_until_known(&app, &id).await;
    let res = open_stream(&app, &id, None).await;
    assert_eq!(res.status(), 200);
    let events = read_stream(res, Duration::from_secs(60)).await;
    assert_eq!(
        stage_names(&events),
        ["Created", "HeadedToPickup", "HeadedToDropoff", "Completed"],
        "{events:?}"
    );
    let positions: Vec<&SseEvent> = events.iter().filter(|e| e.event == "position").collect();
    assert!(positions.len() >= 2, "{events:?}");
    for p in &positions {
        assert!(p.data["droneId"].is_string(), "{p:?}");
        assert!(p.data["location"]["latitude"].is_number(), "{p:?}");
        assert!(p.data["stage"].is_u64(), "{p:?}");
        assert!(p.data.get("pickupETA").is_some() && p.data.get("deliveryETA").is_some());
    }
    // Consecutive positions differ: one is sent per change.
    for pair in positions.windows(2) {
        assert_ne!(pair[0].data["location"], pair[1].data["location"]);
    }
    app.stop().await;
}

#[tokio::test]
async fn the_event_stream_of_an_unknown_delivery_is_404() {
    let app = spawn_app().await;
    let body = assert_problem(open_stream(&app, "no-such-delivery", None).await, 404).await;
    assert!(body["detail"]
        .as_str()
        .is_some_and(|d| d.contains("no-such-delivery")));
    app.stop().await;
}

// ---------------------------------------------------------------- utilization

#[tokio::test]
async fn utilization_sums_the_owners_finished_deliveries() {
    let app = spawn_app().await;
    let id = app.post_delivery(&ri_example()).await;
    app.wait_for_stage(&id, stage::COMPLETED, LONG).await;
    let now = chrono::Utc::now();
    let (year, month) = (now.year(), now.month());
    let path =
        format!("/api/DroneDeliveries/Utilization?ownerId=myowner&year={year}&month={month}");
    // The history entry is written as the delivery finishes: poll briefly.
    let deadline = tokio::time::Instant::now() + LONG;
    let used = loop {
        let res = app.get(&path).await;
        if res.status() == 200 {
            break res.json::<Value>().await.unwrap();
        }
        assert_eq!(res.status(), 404);
        assert!(
            tokio::time::Instant::now() < deadline,
            "no utilization recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        used["traveledMiles"].as_f64().unwrap_or(0.0) > 0.0,
        "{used}"
    );
    assert!(
        used["assignedHours"].as_f64().unwrap_or(0.0) > 0.0,
        "{used}"
    );

    let other_month = month % 12 + 1;
    let res = app
        .get(&format!(
            "/api/dronedeliveries/utilization?ownerId=myowner&year={year}&month={other_month}"
        ))
        .await;
    assert_problem(res, 404).await;
    let res = app
        .get(&format!(
            "/api/dronedeliveries/utilization?ownerId=someoneelse&year={year}&month={month}"
        ))
        .await;
    assert_problem(res, 404).await;

    for (query, field) in [
        (format!("year={year}&month={month}"), "ownerId"),
        (format!("ownerId=&year={year}&month={month}"), "ownerId"),
        (format!("ownerId=myowner&year={year}&month=13"), "month"),
        (format!("ownerId=myowner&year={year}&month=0"), "month"),
        (format!("ownerId=myowner&year=0&month={month}"), "year"),
        (format!("ownerId=myowner&year=twenty&month={month}"), "year"),
    ] {
        let res = app
            .get(&format!("/api/dronedeliveries/utilization?{query}"))
            .await;
        let body = assert_problem(res, 400).await;
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
    }
    app.stop().await;
}

// ---------------------------------------------------------------- recipient

#[tokio::test]
async fn notify_me_and_no_confirmation_while_the_drone_flies() {
    // Real-time speed: the delivery is still under way.
    let app = spawn_app_with(|a| a.sim_speed = 1.0).await;
    let id = app.post_delivery(&ri_example()).await;
    wait_until_known(&app, &id).await;

    let path = format!("/api/deliveries/{id}/NotifyMeRequests");
    let res = app
        .send_json(
            Method::POST,
            &path,
            &json!({"emailAddress": "me@example.com", "sms": "+1 555 0100"}),
        )
        .await;
    assert_eq!(res.status(), 204);
    let res = app
        .send_json(Method::POST, &path, &json!({"sms": "+1 555 0100"}))
        .await;
    assert_eq!(res.status(), 204);
    let stored = app
        .engine
        .context()
        .backends
        .notify
        .list(&id)
        .await
        .expect("the notify-me requests");
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].email_address.as_deref(), Some("me@example.com"));

    for bad in [
        json!({}),
        json!({"emailAddress": "not-an-address"}),
        json!({"emailAddress": 42}),
    ] {
        let res = app.send_json(Method::POST, &path, &bad).await;
        let body = assert_problem(res, 400).await;
        assert!(body["errors"][0]["field"].is_string(), "{bad}: {body}");
    }
    let res = app
        .send_json(
            Method::POST,
            "/api/deliveries/ghost/notifymerequests",
            &json!({"emailAddress": "me@example.com"}),
        )
        .await;
    assert_problem(res, 404).await;

    let res = app
        .send_json(
            Method::POST,
            &format!("/api/deliveries/{id}/confirmations"),
            &confirmation(),
        )
        .await;
    let body = assert_problem(res, 409).await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not delivered yet")),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_completed_delivery_can_be_confirmed() {
    let app = spawn_app().await;
    let id = app.post_delivery(&ri_example()).await;
    app.wait_for_stage(&id, stage::COMPLETED, LONG).await;
    let path = format!("/api/deliveries/{id}/confirmations");

    let mut invalid = confirmation();
    invalid["confirmationType"] = json!(9);
    invalid["geoCoordinates"]["latitude"] = json!("north");
    let body = assert_problem(app.send_json(Method::POST, &path, &invalid).await, 400).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|f| f["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        fields,
        ["geoCoordinates.latitude", "confirmationType"],
        "{body}"
    );

    let res = app.send_json(Method::POST, &path, &confirmation()).await;
    assert_eq!(res.status(), 200);
    // A repeat is accepted; the first confirmation is kept.
    let mut second = confirmation();
    second["confirmationBlob"] = json!("other");
    let res = app.send_json(Method::POST, &path, &second).await;
    assert_eq!(res.status(), 200);
    let record = app
        .engine
        .delivery(&id)
        .await
        .unwrap()
        .expect("the delivery is still stored");
    let stored = record.confirmation.expect("confirmation not stored");
    assert_eq!(stored.confirmation_blob, "cGljdHVyZQ==");
    assert_eq!(stored.geo_coordinates.latitude, 47.61);

    // The delivery is still readable.
    let res = app.get(&format!("/api/deliveries/{id}")).await;
    assert_eq!(res.status(), 200);

    let res = app
        .send_json(
            Method::POST,
            "/api/deliveries/ghost/confirmations",
            &confirmation(),
        )
        .await;
    assert_problem(res, 404).await;
    app.stop().await;
}

// ---------------------------------------------------------------- idempotency

async fn post_with_key(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/deliveryrequests"))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// How many `Created` events the delivery has.
async fn created_events(app: &TestApp, id: &str) -> usize {
    app.engine
        .events(id)
        .await
        .expect("the delivery's events")
        .iter()
        .filter(|e| e.stage == DeliveryStage::Created)
        .count()
}

#[tokio::test]
async fn a_repeated_idempotency_key_replays_the_first_answer() {
    let app = spawn_app().await;
    let first = post_with_key(&app, "order-42", &ri_example()).await;
    assert_eq!(first.status(), 202);
    assert_eq!(header(&first, "idempotent-replayed"), None);
    let location = header(&first, "location");
    let first: Value = first.json().await.unwrap();
    let id = first["deliveryId"].as_str().unwrap_or_default().to_owned();
    assert_eq!(location, Some(format!("/api/deliveries/{id}")));

    // Same key, same request (keys in another order): the same answer.
    let mut reordered = serde_json::Map::new();
    if let Some(obj) = ri_example().as_object() {
        for (k, v) in obj.iter().rev() {
            reordered.insert(k.clone(), v.clone());
        }
    }
    let second = post_with_key(&app, "order-42", &Value::Object(reordered)).await;
    assert_eq!(second.status(), 202);
    assert_eq!(
        header(&second, "idempotent-replayed").as_deref(),
        Some("true")
    );
    assert_eq!(header(&second, "location"), location);
    let second: Value = second.json().await.unwrap();
    assert_eq!(second, first);

    // Same key, another request: 422.
    let mut other = ri_example();
    other["dropOffLocation"] = json!("somewhere else");
    assert_problem(post_with_key(&app, "order-42", &other).await, 422).await;
    // An invalid key: 400; an invalid body with a fresh key stores nothing.
    assert_problem(post_with_key(&app, "has space", &ri_example()).await, 400).await;
    assert_problem(post_with_key(&app, "order-43", &json!({})).await, 400).await;
    let res = post_with_key(&app, "order-43", &ri_example()).await;
    assert_eq!(res.status(), 202);
    assert_eq!(header(&res, "idempotent-replayed"), None);

    // One delivery was created, and it completes.
    app.wait_for_stage(&id, stage::COMPLETED, LONG).await;
    let third = post_with_key(&app, "order-42", &ri_example()).await;
    assert_eq!(
        header(&third, "idempotent-replayed").as_deref(),
        Some("true")
    );
    assert_eq!(created_events(&app, &id).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_delivery() {
    let app = Arc::new(spawn_app().await);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let app = Arc::clone(&app);
        tasks.push(tokio::spawn(async move {
            let res = post_with_key(&app, "burst-1", &ri_example()).await;
            let replayed = header(&res, "idempotent-replayed").is_some();
            assert_eq!(res.status(), 202);
            let body: Value = res.json().await.unwrap();
            (
                body["deliveryId"]
                    .as_str()
                    .expect("a deliveryId in the answer")
                    .to_owned(),
                replayed,
            )
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let id = answers[0].0.clone();
    assert!(answers.iter().all(|(i, _)| *i == id), "{answers:?}");
    assert_eq!(answers.iter().filter(|(_, replayed)| !replayed).count(), 1);
    app.wait_for_stage(&id, stage::COMPLETED, LONG).await;
    // Give duplicates queued by the repeats time to be processed (and ignored).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(created_events(&app, &id).await, 1);
    assert_eq!(app.engine.queue_depth().await.ok().flatten(), Some(0));
    match Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("a task still holds the app"),
    }
}

/// A memory queue whose next `fail_next` sends fail, as a broker outage.
struct FlakyQueue {
    inner: Arc<memory::MemoryQueue>,
    fail_next: AtomicU32,
}

#[async_trait]
impl MessageQueue for FlakyQueue {
    fn backend(&self) -> &'static str {
        "flaky-memory"
    }
    async fn send(&self, message: QueueMessage) -> StoreResult<()> {
        let failing = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(StoreError::Unavailable("injected broker outage".into()));
        }
        self.inner.send(message).await
    }
    async fn receive(
        &self,
        from: &[Fence],
        max: usize,
        wait: Duration,
    ) -> StoreResult<Vec<ReceivedMessage>> {
        self.inner.receive(from, max, wait).await
    }
    async fn complete(&self, lock: &LockToken) -> StoreResult<()> {
        self.inner.complete(lock).await
    }
    async fn abandon(&self, lock: &LockToken, delay: Duration) -> StoreResult<()> {
        self.inner.abandon(lock, delay).await
    }
    async fn dead_letter(&self, lock: &LockToken, reason: &str) -> StoreResult<()> {
        self.inner.dead_letter(lock, reason).await
    }
    async fn renew(&self, lock: &LockToken) -> StoreResult<()> {
        self.inner.renew(lock).await
    }
    async fn depth(&self) -> StoreResult<Option<u64>> {
        self.inner.depth().await
    }
}

#[tokio::test]
async fn a_retry_after_a_failed_submit_is_queued_not_stuck() {
    let mut backends = memory::backends(Duration::from_secs(30), 10_000);
    let queue = Arc::new(FlakyQueue {
        inner: memory::MemoryQueue::new(Duration::from_secs(30), 10_000),
        fail_next: AtomicU32::new(0),
    });
    backends.queue = queue.clone();
    let app = spawn_app_on(|_| {}, Some(backends)).await;
    let engine = app.engine.clone();
    let post = || {
        app.client
            .post(app.url("/api/deliveryrequests"))
            .header("idempotency-key", "retry-me")
            .json(&ri_example())
            .send()
    };

    queue.fail_next.store(1, Ordering::SeqCst);
    let res = post().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(engine.queue_depth().await.ok().flatten(), Some(0));

    // The retry finds the key but no delivery: it queues the request again.
    let res = post().await.unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(header(&res, "idempotent-replayed").as_deref(), Some("true"));
    let body: Value = res.json().await.unwrap();
    let id = body["deliveryId"]
        .as_str()
        .expect("a deliveryId in the answer")
        .to_owned();

    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let record = engine.delivery(&id).await.unwrap();
        if record.is_some_and(|r| r.stage == DeliveryStage::Completed) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never completed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let created = engine
        .events(&id)
        .await
        .expect("the delivery's events")
        .iter()
        .filter(|e| e.stage == DeliveryStage::Created)
        .count();
    assert_eq!(created, 1);

    app.stop().await;
}
