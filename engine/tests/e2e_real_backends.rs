//! End to end on the real backends, with real `dronedelivery` processes:
//! Redis Streams queue, Redis stores, MongoDB stores. Needs Redis on
//! 127.0.0.1:6379 and a MongoDB-wire server on 127.0.0.1:27017
//! (`scripts/services.sh` starts both). Every test uses its own Redis key
//! prefix and MongoDB database, so tests run in parallel on one server.

// Test code: a failed precondition should panic, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::tally::Tally;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use dronedelivery_actors::domain::ownership::partition_of;
use mongodb::bson::doc;
use redis::AsyncCommands;
use serde_json::{json, Value};

const REDIS: &str = "redis://127.0.0.1:6379";
const MONGO: &str = "mongodb://127.0.0.1:27017";

/// One engine process.
struct Engine {
    child: Child,
    base: String,
    client: reqwest::Client,
}

/// What the processes of one test share.
struct Shared {
    prefix: String,
    database: String,
    /// The queue's flags: Redis Streams under `prefix`, or Service Bus.
    queue: Vec<String>,
}

impl Shared {
    fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            prefix: format!("e2e-{}", &id[..12]),
            database: format!("dd_e2e_{}", &id[..12]),
            queue: ["--queue", "redis-streams"].map(String::from).to_vec(),
        }
    }

    /// Engines on the Service Bus queue of `cfg` (a double's settings; one
    /// queue per partition, and as many for the expedited lane), with the
    /// same Redis and MongoDB stores.
    fn on_service_bus(cfg: &dronedelivery_engine::adapters::servicebus::ServiceBusConfig) -> Self {
        let mut shared = Self::new();
        shared.queue = vec![
            "--queue".into(),
            "servicebus".into(),
            "--servicebus-namespace".into(),
            cfg.namespace.clone(),
            "--servicebus-queue".into(),
            cfg.queue.clone(),
            // Expedited creates (the example request is expedited) travel
            // in the lane's own queues.
            "--servicebus-expedited-queue".into(),
            format!("{}-expedited", cfg.queue),
            "--servicebus-policy-name".into(),
            cfg.policy_name.clone(),
            "--servicebus-policy-key".into(),
            cfg.policy_key.clone(),
            "--servicebus-endpoint".into(),
            cfg.endpoint.clone().unwrap_or_default(),
        ];
        shared
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(REDIS).unwrap();
        client
            .get_multiplexed_async_connection()
            .await
            .expect("redis")
    }

    async fn mongo(&self) -> mongodb::Database {
        let client = mongodb::Client::with_uri_str(MONGO).await.unwrap();
        client.database(&self.database)
    }

    fn spawn(&self, fleet_id: &str, extra: &[&str]) -> Engine {
        self.spawn_with_fleet(fleet_id, 10, extra)
    }

    fn spawn_with_fleet(&self, fleet_id: &str, fleet_size: u32, extra: &[&str]) -> Engine {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dronedelivery"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(&self.queue)
            .args(["--redis-url", REDIS, "--redis-prefix", &self.prefix])
            .args(["--mongodb-uri", &format!("{MONGO}/{}", self.database)])
            .args([
                "--fleet-id",
                fleet_id,
                "--fleet-size",
                &fleet_size.to_string(),
                "--sim-speed",
                "2000",
                "--tick-ms",
                "20",
            ])
            .args(["--retry-delay-ms", "50"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if std::env::var_os("TEST_LOG").is_none() {
            cmd.stderr(Stdio::null());
        }
        let child = cmd.spawn().expect("spawn dronedelivery");
        Engine {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        }
    }

    /// The engine holding partition `p`'s lease, as stored.
    async fn lease_owner(
        &self,
        r: &mut redis::aio::MultiplexedConnection,
        p: u32,
    ) -> Option<String> {
        redis::cmd("HGET")
            .arg(format!("{}:lease:{p}", self.prefix))
            .arg("owner")
            .query_async(r)
            .await
            .expect("HGET")
    }

    /// Waits until the 16 partitions are spread over `engines` holders.
    async fn wait_balanced(&self, r: &mut redis::aio::MultiplexedConnection, engines: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut owners = std::collections::BTreeMap::<String, u32>::new();
            for p in 0..16 {
                if let Some(owner) = self.lease_owner(r, p).await {
                    *owners.entry(owner).or_default() += 1;
                }
            }
            let total: u32 = owners.values().sum();
            if owners.len() == engines && total == 16 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "partitions never balanced over {engines} engines: {owners:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Deletes this test's keys and database.
    async fn cleanup(&self) {
        common::cleanup(REDIS, &self.prefix).await;
        let _ = self.mongo().await.drop().await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

fn ri_example() -> Value {
    json!({
       "confirmationRequired": "None", "deadline": "", "dropOffLocation": "drop off", "expedited": true,
       "ownerId": "myowner",
       "packageInfo": {"packageId": "mypackage", "size": "Small", "tag": "mytag", "weight": 10},
       "pickupLocation": "my pickup", "pickupTime": "2019-05-08T20:00:00.000Z"
    })
}

impl Engine {
    /// Waits until `/readyz` answers 200 (the tree is up and every backend answers).
    async fn ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("dronedelivery exited during start-up: {status}");
            }
            if let Ok(res) = self
                .client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
            {
                if res.status() == 200 {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "engine never became ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn post(&self, body: &Value) -> String {
        let res = self
            .client
            .post(format!("{}/api/deliveryrequests", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
        let v: Value = res.json().await.expect("a JSON answer");
        v["deliveryId"]
            .as_str()
            .expect("a deliveryId in the answer")
            .to_owned()
    }

    async fn stage(&self, id: &str) -> Option<u64> {
        let res = self
            .client
            .get(format!("{}/api/deliveries/{id}/status", self.base))
            .send()
            .await
            .ok()?;
        if res.status() != 200 {
            return None;
        }
        res.json::<Value>().await.ok()?["stage"].as_u64()
    }

    async fn wait_completed(&self, id: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.stage(id).await != Some(4) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} never completed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sum of a counter's samples whose label set contains `labels`.
    async fn counter(&self, name: &str, labels: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .expect("the metrics text");
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// SIGTERM and wait for a clean exit.
    fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.child.wait().unwrap()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

impl Shared {
    /// Waits up to `within` for every delivery in `ids` to reach a terminal
    /// stage (what is still unfinished then counts as lost), and tallies
    /// them. `package_prefix` selects this scenario's package documents.
    async fn settle(
        &self,
        engine: &Engine,
        ids: &[String],
        package_prefix: &str,
        within: Duration,
    ) -> Tally {
        let deadline = tokio::time::Instant::now() + within;
        let mut unfinished = std::collections::HashSet::new();
        for id in ids {
            while !matches!(engine.stage(id).await, Some(4 | 5)) {
                if tokio::time::Instant::now() >= deadline {
                    unfinished.insert(id.as_str());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Tally::count(
            REDIS,
            &self.prefix,
            &self.mongo().await,
            ids,
            |id| unfinished.contains(id),
            package_prefix,
        )
        .await
    }
}

/// The RI example with a distinct pickup and package per `tag`, so each
/// delivery and package of a scenario can be counted.
fn numbered_request(tag: &str) -> Value {
    let mut body = ri_example();
    body["pickupLocation"] = json!(format!("pickup {tag}"));
    body["packageInfo"]["packageId"] = json!(format!("package-{tag}"));
    body
}

#[tokio::test]
async fn the_original_flow_end_to_end_leaves_its_data_in_redis_and_mongodb() {
    let shared = Shared::new();
    let mut engine = shared.spawn("a", &[]);
    engine.ready().await;
    let id = engine.post(&ri_example()).await;
    engine.wait_completed(&id, Duration::from_secs(30)).await;

    // Redis: the delivery document and its tracking events.
    let mut r = shared.redis().await;
    let keys: Vec<String> = r
        .keys(format!("{}:*{id}*", shared.prefix))
        .await
        .expect("KEYS");
    assert!(!keys.is_empty(), "no Redis key mentions {id}");
    let mut found_record = false;
    for key in &keys {
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut r)
            .await
            .expect("TYPE");
        if kind == "string" {
            let raw: String = r.get(key).await.expect("GET");
            let v: Value =
                serde_json::from_str(&raw).expect("a string key of the delivery holds JSON");
            if v["delivery"]["id"] == id.as_str() {
                assert_eq!(v["stage"], 4, "{v}");
                found_record = true;
            }
        }
    }
    assert!(
        found_record,
        "the delivery record is not in Redis: {keys:?}"
    );
    let drones: Vec<String> = r
        .keys(format!("{}:drone:*", shared.prefix))
        .await
        .expect("KEYS");
    assert_eq!(drones.len(), 10, "ten drones stored: {drones:?}");

    // MongoDB: the package and the history entry.
    let db = shared.mongo().await;
    let package = db
        .collection::<mongodb::bson::Document>("packages")
        .find_one(doc! {"_id": "mypackage"})
        .await
        .unwrap();
    let package = package.expect("no package document");
    assert_eq!(package.get_str("size").ok(), Some("Small"));
    let history = db
        .collection::<mongodb::bson::Document>("deliveryhistory")
        .find_one(doc! {"_id": &id})
        .await
        .unwrap();
    assert!(history.is_some(), "no delivery history for {id}");

    // Packages: the original 201/204/404 contract, on MongoDB.
    let url = |p: &str| format!("{}{p}", engine.base);
    let put = engine
        .client
        .put(url("/api/packages/e2e-pkg"))
        .json(&json!({"size": "Large", "weight": 2, "tag": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let put = engine
        .client
        .put(url("/api/packages/e2e-pkg"))
        .json(&json!({"size": "Small"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let patch = engine
        .client
        .patch(url("/api/packages/e2e-pkg"))
        .json(&json!({"tag": "u"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 204);
    let got: Value = engine
        .client
        .get(url("/api/packages/e2e-pkg"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .expect("a JSON package");
    assert_eq!(
        got,
        json!({"id": "e2e-pkg", "size": "Small", "weight": null, "tag": "u"})
    );
    let missing = engine.client.get(url("/api/packages/none")).send().await;
    assert_eq!(missing.map(|r| r.status().as_u16()).ok(), Some(404));

    // A poison message put on the stream by another producer ends in the
    // MongoDB dead-letter collection with its reason, without blocking.
    let queue = dronedelivery_engine::adapters::redis::RedisStreamsQueue::connect(
        dronedelivery_engine::adapters::redis::StreamsConfig::new(REDIS, shared.prefix.clone()),
    )
    .await
    .unwrap();
    let mut poison = dronedelivery_actors::ports::QueueMessage::new(
        dronedelivery_actors::ports::Operation::Delivery,
        &json!({"deliveryId": "poison"}),
        None,
    );
    poison.operation = "teleport".into();
    dronedelivery_actors::ports::MessageQueue::send(queue.as_ref(), poison.clone())
        .await
        .unwrap();
    let letters = db.collection::<mongodb::bson::Document>("deadletters");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let letter = loop {
        let found = letters
            .find_one(doc! {"_id": &poison.message_id})
            .await
            .unwrap();
        if let Some(found) = found {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poison message was never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reason = letter
        .get_str("reason")
        .expect("the dead letter has a reason");
    assert!(reason.contains("unknown operation"), "{letter}");
    let after = engine.post(&ri_example()).await;
    engine.wait_completed(&after, Duration::from_secs(30)).await;

    // The data outlives the process: a new engine on the same stores reads it.
    assert!(engine.terminate().success(), "SIGTERM must exit 0");
    let mut again = shared.spawn("a", &[]);
    again.ready().await;
    assert_eq!(again.stage(&id).await, Some(4));
    again.kill();
    shared.cleanup().await;
}

#[tokio::test]
async fn two_engines_on_one_stream_split_the_work_without_duplicates() {
    let shared = Shared::new();
    let mut a = shared.spawn("a", &[]);
    let mut b = shared.spawn("b", &[]);
    a.ready().await;
    b.ready().await;
    // The engines split the partitions, hence the messages.
    shared.wait_balanced(&mut shared.redis().await, 2).await;
    let mut ids = Vec::new();
    for i in 0..120 {
        let via = if i % 2 == 0 { &a } else { &b };
        ids.push(via.post(&numbered_request(&format!("split-{i}"))).await);
    }
    let tally = shared
        .settle(&a, &ids, "package-split-", Duration::from_secs(60))
        .await;
    tally.report("scenario 2 (two engines on one stream)");
    tally.assert_nothing_lost_or_duplicated();
    assert_eq!((tally.completed, tally.dead_lettered), (120, 0));
    let done_a = a
        .counter(
            "dronedelivery_queue_messages_total",
            "outcome=\"completed\"",
        )
        .await;
    let done_b = b
        .counter(
            "dronedelivery_queue_messages_total",
            "outcome=\"completed\"",
        )
        .await;
    assert!(
        done_a > 0.0 && done_b > 0.0,
        "both engines must work: a={done_a} b={done_b}"
    );
    assert_eq!(
        done_a + done_b,
        120.0,
        "each message processed exactly once: a={done_a} b={done_b}"
    );

    a.kill();
    b.kill();
    shared.cleanup().await;
}

#[tokio::test]
async fn a_killed_engines_unacknowledged_messages_are_claimed_and_finished() {
    let shared = Shared::new();
    // Short leases so the survivor takes the victim's partitions over
    // quickly (their messages in flight move with them).
    let fast = ["--lock-duration-secs", "2", "--lease-secs", "2"];
    let mut victim = shared.spawn("victim", &fast);
    victim.ready().await;
    let mut survivor = shared.spawn("survivor", &fast);
    survivor.ready().await;
    let mut r = shared.redis().await;
    shared.wait_balanced(&mut r, 2).await;

    // Freeze the victim: a read it had blocked in Redis still takes
    // messages from the stream, which then sit unacknowledged in its pending
    // list, exactly as when a process dies after receiving. Whether its read
    // was blocked at that instant is timing, so repeat until it holds some.
    let mut ids = Vec::new();
    let mut held = false;
    let mut frozen = tokio::time::Instant::now();
    for attempt in 0..5 {
        victim.signal("STOP");
        frozen = tokio::time::Instant::now();
        let mut batch = Vec::new();
        for i in 0..40 {
            let tag = format!("claim-{attempt}-{i}");
            // Normal requests: an idle engine's blocked read waits on the
            // queue's normal lane (see `adapters::lanes`); expedited ones
            // would wait in the expedited streams, which it only polls.
            let mut request = numbered_request(&tag);
            request["expedited"] = json!(false);
            batch.push(survivor.post(&request).await);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        ids.extend(batch);
        if victim_pending(&mut r, &shared.prefix).await > 0 {
            held = true;
            break;
        }
        victim.signal("CONT");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(held, "the frozen engine never held a message");
    // The deliveries of the frozen engine's partitions do not exist yet:
    // their messages wait in its streams or in its pending lists.
    let victim_tag = format!("-{}-", victim.child.id());
    let mut victims = std::collections::HashSet::new();
    for p in 0..16u32 {
        let owner = shared.lease_owner(&mut r, p).await;
        if owner.is_some_and(|o| o.contains(&victim_tag)) {
            victims.insert(p);
        }
    }
    let mut stranded = Vec::new();
    for id in &ids {
        let theirs = victims.contains(&partition_of(id, 16));
        if theirs && survivor.stage(id).await.is_none() {
            stranded.push(id.clone());
        }
    }
    assert!(!stranded.is_empty(), "nothing waited for the frozen engine");
    victim.kill();
    let killed = tokio::time::Instant::now();

    // Hand-over: the survivor takes the partitions once the leases lapse
    // (2 s) and processes their messages, those the dead engine held first.
    let (mut first, mut left) = (None, stranded.clone());
    while !left.is_empty() && killed.elapsed() < Duration::from_secs(60) {
        let mut still = Vec::new();
        for id in left {
            if survivor.stage(&id).await.is_none() {
                still.push(id);
            }
        }
        if still.len() < stranded.len() && first.is_none() {
            first = Some(frozen.elapsed());
        }
        left = still;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It last renewed its leases (every 400 ms) before it froze: they
    // lapse 1.6 to 2 s after the freeze.
    println!(
        "scenario 2 hand-over (lease 2 s): {} messages of the frozen, then killed engine's partitions; \
         the first processed {:.2} s and all {:.2} s after it froze (killed at {:.2} s)",
        stranded.len(),
        first.unwrap_or_default().as_secs_f64(),
        frozen.elapsed().as_secs_f64(),
        (killed - frozen).as_secs_f64()
    );

    let tally = shared
        .settle(&survivor, &ids, "package-claim-", Duration::from_secs(60))
        .await;
    tally.report("scenario 2 (an engine killed holding messages; the survivor claims them)");
    tally.assert_nothing_lost_or_duplicated();
    assert_eq!(tally.dead_lettered, 0, "{tally:?}");
    survivor.kill();
    shared.cleanup().await;
}

/// Messages pending (received, unacknowledged) for consumers whose name
/// contains "victim".
async fn victim_pending(r: &mut redis::aio::MultiplexedConnection, prefix: &str) -> u64 {
    let streams: Vec<String> = r.keys(format!("{prefix}:stream:*")).await.expect("KEYS");
    let mut total = 0;
    for stream in streams {
        let kind: String = redis::cmd("TYPE")
            .arg(&stream)
            .query_async(r)
            .await
            .expect("TYPE");
        if kind != "stream" {
            continue;
        }
        let consumers: redis::Value = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&stream)
            .arg("workflow")
            .query_async(r)
            .await
            .unwrap_or(redis::Value::Nil);
        if let redis::Value::Array(list) = consumers {
            for consumer in list {
                let fields: Vec<redis::Value> = match consumer {
                    redis::Value::Array(f) => f,
                    redis::Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                    _ => continue,
                };
                let text = |v: &redis::Value| match v {
                    redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    redis::Value::SimpleString(s) => s.clone(),
                    _ => String::new(),
                };
                let mut name = String::new();
                let mut pending = 0;
                for pair in fields.chunks(2) {
                    if let [k, v] = pair {
                        match text(k).as_str() {
                            "name" => name = text(v),
                            "pending" => {
                                if let redis::Value::Int(n) = v {
                                    pending = u64::try_from(*n).unwrap_or(0);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                if name.contains("victim") {
                    total += pending;
                }
            }
        }
    }
    total
}

#[tokio::test]
async fn sigterm_under_load_exits_cleanly_and_loses_nothing() {
    let shared = Shared::new();
    let mut first = shared.spawn("a", &["--shutdown-grace-secs", "10"]);
    first.ready().await;
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(first.post(&numbered_request(&format!("term-{i}"))).await);
    }
    // Stop while the queue is still full of work.
    let status = first.terminate();
    assert!(status.success(), "SIGTERM must exit 0, got {status}");

    // Everything accepted is finished by the next engine on the same stores.
    let mut second = shared.spawn("a", &[]);
    second.ready().await;
    let tally = shared
        .settle(&second, &ids, "package-term-", Duration::from_secs(90))
        .await;
    tally.report("scenario 7 (SIGTERM with 200 queued: exit 0, the next engine finishes)");
    tally.assert_nothing_lost_or_duplicated();
    assert_eq!((tally.completed, tally.dead_lettered), (200, 0));
    assert_eq!(tally.packages, 200);
    second.kill();
    shared.cleanup().await;
}

/// Scenario 1 of docs/reliability.md: `kill -9` of the engine while 2,000
/// accepted deliveries are in flight, then a restart on the same stores.
/// Every delivery ends Completed, with exactly one `Created` and one
/// `Completed` event and one drone assignment (`HeadedToPickup`), one
/// package document per package id, no dead letters, and the counts are
/// printed.
#[tokio::test]
async fn kill_9_with_two_thousand_in_flight_then_restart_loses_and_duplicates_nothing() {
    const COUNT: usize = 2_000;
    let shared = Shared::new();
    let args = ["--lock-duration-secs", "3"];
    let mut first = shared.spawn_with_fleet("a", 200, &args);
    first.ready().await;
    let first = Arc::new(first);
    let mut posts = tokio::task::JoinSet::new();
    for worker in 0..32 {
        let engine = Arc::clone(&first);
        posts.spawn(async move {
            let mut ids = Vec::new();
            for i in (worker..COUNT).step_by(32) {
                ids.push(engine.post(&numbered_request(&format!("kill-{i}"))).await);
            }
            ids
        });
    }
    let mut ids = Vec::with_capacity(COUNT);
    while let Some(batch) = posts.join_next().await {
        ids.extend(batch.unwrap());
    }
    assert_eq!(ids.len(), COUNT);
    let mut first = Arc::into_inner(first).expect("engine still shared");
    let done_before = first
        .counter("dronedelivery_deliveries_completed_total", "")
        .await;
    // No warning: SIGKILL, mid-flight.
    first.signal("KILL");
    let _ = first.child.wait();

    let mut second = shared.spawn_with_fleet("a", 200, &args);
    second.ready().await;
    let tally = shared
        .settle(&second, &ids, "package-kill-", Duration::from_secs(180))
        .await;
    tally.report(&format!(
        "scenario 1 (kill -9 with {COUNT} in flight, {done_before} completed before the kill)"
    ));
    tally.assert_nothing_lost_or_duplicated();
    assert_eq!(tally.completed, COUNT, "{tally:?}");
    assert_eq!(tally.dead_lettered, 0, "{tally:?}");
    assert_eq!(tally.packages, COUNT as u64, "one package document per id");
    second.kill();
    shared.cleanup().await;
}

/// Scenario 5 of docs/reliability.md on the real queue: poison messages put
/// straight on the Redis stream, between two bursts of healthy requests,
/// are dead-lettered (in MongoDB) with a reason after the configured
/// attempts, and nothing waits behind them: every healthy delivery
/// completes and the consumer group has nothing left pending.
#[tokio::test]
async fn poison_messages_on_the_real_queue_are_dead_lettered_without_blocking_others() {
    use dronedelivery_actors::ports::{MessageQueue, Operation, QueueMessage};
    use dronedelivery_engine::adapters::redis::{RedisStreamsQueue, StreamsConfig};

    let shared = Shared::new();
    // The ghost (a reschedule of a delivery that never appears) is kept
    // twice the lock duration before its last attempt.
    let mut engine = shared.spawn(
        "a",
        &["--max-delivery-attempts", "3", "--lock-duration-secs", "3"],
    );
    engine.ready().await;
    let queue = RedisStreamsQueue::connect(StreamsConfig::new(REDIS, shared.prefix.clone()))
        .await
        .expect("redis");

    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(engine.post(&numbered_request(&format!("poison-{i}"))).await);
    }
    // An operation nobody knows.
    let mut unknown = QueueMessage::new(Operation::Cancel, &json!("x"), None);
    unknown.operation = "explode".into();
    // A body that is not JSON.
    let mut garbage = QueueMessage::new(Operation::Delivery, &json!({}), None);
    garbage.body = "{not json".into();
    // A package that can never be stored: its weight is negative.
    let mut heavy = numbered_request("poison-negative");
    heavy["packageInfo"]["weight"] = json!(-5);
    heavy["deliveryId"] = json!("poison-negative");
    let invalid = QueueMessage::new(Operation::Delivery, &heavy, None);
    // A reschedule of a delivery that never appears: retried, then given up.
    let ghost = QueueMessage::new(
        Operation::Reschedule,
        &json!({"deliveryId": "ghost", "deadline": "soon"}),
        None,
    );
    let poison = [&unknown, &garbage, &invalid, &ghost];
    for message in poison {
        queue.send(message.clone()).await.expect("send");
    }
    for i in 100..200 {
        ids.push(engine.post(&numbered_request(&format!("poison-{i}"))).await);
    }

    let tally = shared
        .settle(&engine, &ids, "package-poison-", Duration::from_secs(60))
        .await;
    // The ghost's retries may still be running after the healthy traffic
    // finished: wait for all four letters.
    let letters = shared
        .mongo()
        .await
        .collection::<mongodb::bson::Document>(dronedelivery_engine::adapters::mongo::DEAD_LETTERS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while letters.count_documents(doc! {}).await.unwrap_or(0) < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "poison messages were not all dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tally = Tally {
        dead_lettered: letters.count_documents(doc! {}).await.unwrap_or(0),
        ..tally
    };
    tally.report("scenario 5 (4 poison messages between 200 healthy requests)");
    tally.assert_nothing_lost_or_duplicated();
    assert_eq!((tally.completed, tally.packages), (200, 200), "{tally:?}");
    assert_eq!(tally.dead_lettered, 4, "only the poison is dead-lettered");
    for (message, reason, attempts) in [
        (&unknown, "unknown operation", 1),
        (&garbage, "not JSON", 1),
        (&invalid, "weight", 1),
        (&ghost, "not found", 3),
    ] {
        let letter = letters
            .find_one(doc! { "_id": &message.message_id })
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("{} was not dead-lettered", message.operation));
        let got = letter
            .get_str("reason")
            .expect("the dead letter has a reason");
        assert!(
            got.contains(reason),
            "{}: reason {got:?} should mention {reason:?}",
            message.operation
        );
        assert_eq!(
            letter
                .get_i64("attempts")
                .expect("the dead letter counts its attempts"),
            attempts,
            "{}: attempts",
            message.operation
        );
    }
    // Nothing is stuck behind the poison.
    assert_eq!(queue.depth().await.ok().flatten(), Some(0), "queue depth");
    engine.kill();
    shared.cleanup().await;
}

/// What samples of `GET /api/drones` saw during a run.
#[derive(Debug, Default)]
struct DroneSamples {
    samples: usize,
    /// (sample, delivery) where one delivery was on two drones at once.
    double_held: Vec<(usize, String)>,
    /// (sample, drone) where one drone was listed twice.
    listed_twice: Vec<(usize, String)>,
    /// Every drone each delivery was seen with.
    seen: std::collections::HashMap<String, std::collections::HashSet<String>>,
}

impl DroneSamples {
    fn record(&mut self, list: &Value) {
        let n = self.samples;
        self.samples += 1;
        let mut drones = std::collections::HashSet::new();
        let mut holders = std::collections::HashMap::<String, String>::new();
        for d in list["drones"].as_array().into_iter().flatten() {
            let id = d["id"].as_str().unwrap_or_default().to_owned();
            if !drones.insert(id.clone()) {
                self.listed_twice.push((n, id.clone()));
            }
            if let Some(delivery) = d["deliveryId"].as_str() {
                if holders.insert(delivery.to_owned(), id.clone()).is_some() {
                    self.double_held.push((n, delivery.to_owned()));
                }
                self.seen.entry(delivery.to_owned()).or_default().insert(id);
            }
        }
    }
}

/// Samples `GET /api/drones` every 25 ms from whichever of `bases` answers,
/// until `stop` is set.
fn sample_drones(
    bases: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<DroneSamples> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut samples = DroneSamples::default();
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let live = bases.lock().unwrap().clone();
            for base in live {
                let got = client
                    .get(format!("{base}/api/drones"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await;
                if let Ok(res) = got.and_then(|r| r.error_for_status()) {
                    if let Ok(list) = res.json::<Value>().await {
                        samples.record(&list);
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        samples
    })
}

impl Engine {
    /// Cancels a delivery (`DELETE`); the status answered.
    async fn cancel(&self, id: &str) -> u16 {
        self.client
            .delete(format!("{}/api/deliveryrequests/{id}", self.base))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Reschedules a delivery to another dropoff (`PATCH`); the status answered.
    async fn reschedule(&self, id: &str, dropoff: &str) -> u16 {
        self.client
            .patch(format!("{}/api/deliveryrequests/{id}", self.base))
            .json(&json!({ "dropOffLocation": dropoff }))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Restarts a supervisor through the admin API; the status answered.
    async fn restart(&self, supervisor: &str, token: &str) -> u16 {
        self.client
            .post(format!(
                "{}/admin/supervisors/{supervisor}/restart",
                self.base
            ))
            .bearer_auth(token)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }
}

/// The multi-engine scenario: three engines share the partitions
/// and one pool of drones; deliveries are posted round-robin and some are
/// cancelled or rescheduled through another engine at once; mid-run one
/// engine is killed with `kill -9` and restarted, one is stopped for good
/// (scale-down), a fourth joins (scale-up) and `fleet` is restarted on one
/// while deliveries wait for drones. Counted from the stores: every
/// delivery ended once, cancels ended Cancelled, and the drone list never
/// showed a delivery on two drones or a drone twice. Then every engine is
/// stopped with work queued and in flight, and one new engine finishes it.
#[tokio::test]
async fn engines_join_die_and_leave_and_every_delivery_has_one_owner_and_one_drone() {
    let shared = Shared::new();
    join_die_and_leave(&shared, "").await.kill();
    shared.cleanup().await;
}

/// Scenarios 9 and 10 with the engines on Service Bus (the protocol
/// double, one queue per partition, 5 s locks) with a least-privilege key
/// (Listen and Send: what the reference implementation's services used),
/// Redis and MongoDB stores.
/// A killed engine's locked messages come back when their locks expire (no
/// claim over Service Bus); everything else is as on Redis Streams. The
/// double runs in this test's runtime, so the runtime has threads to spare
/// while the test blocks waiting for an engine to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_service_bus_engines_join_die_and_leave_and_every_delivery_has_one_owner() {
    use dronedelivery_engine::adapters::servicebus::double::{spawn_double, LISTEN_SEND_POLICY};
    let (_addr, double) = spawn_double(Duration::from_secs(5), 10).await;
    let shared = Shared::on_service_bus(&double.config_with("deliveries", LISTEN_SEND_POLICY));
    let mut last = join_die_and_leave(&shared, " on Service Bus").await;
    // Every message was settled on the partition queues (the last ones
    // within a moment of their deliveries finishing), none dead-lettered
    // by the service.
    let layout = dronedelivery_engine::adapters::servicebus::ServiceBusConfig {
        partitions: 16,
        ..double.config("deliveries")
    };
    let names: Vec<String> = (0..16).map(|p| layout.partition_queue(p)).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<_> = names
            .iter()
            .map(|n| (n, double.counts(n)))
            .filter(|(_, c)| c.active + c.locked + c.scheduled + c.dead_lettered > 0)
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "unsettled on Service Bus: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last.kill();
    shared.cleanup().await;
}

/// The body of scenarios 9 and 10 (see the test above); `on` names the
/// queue in the tally lines. Returns the last engine, still running.
async fn join_die_and_leave(shared: &Shared, on: &str) -> Engine {
    const TOKEN: &str = "scale-token";
    let args = [
        "--lease-secs",
        "2",
        "--lock-duration-secs",
        "5",
        "--admin-token",
        TOKEN,
    ];
    // One pool of 24 drones, seeded by whichever engine starts first.
    let start = |shared: &Shared| shared.spawn_with_fleet("pool", 24, &args);
    let mut engines: Vec<Option<Engine>> = Vec::new();
    for _ in 0..3 {
        let mut e = start(shared);
        e.ready().await;
        engines.push(Some(e));
    }
    let mut r = shared.redis().await;
    shared.wait_balanced(&mut r, 3).await;
    let bases = Arc::new(std::sync::Mutex::new(
        engines
            .iter()
            .flatten()
            .map(|e| e.base.clone())
            .collect::<Vec<_>>(),
    ));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_drones(Arc::clone(&bases), Arc::clone(&stop));

    let live = |engines: &[Option<Engine>]| -> Vec<usize> {
        engines
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|_| i))
            .collect()
    };
    let (mut ids, mut cancelled, mut rescheduled) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..240 {
        match i {
            60 => {
                // kill -9 of engine 0, restarted at once.
                if let Some(e) = engines[0].as_mut() {
                    e.kill();
                }
                let mut e = start(shared);
                e.ready().await;
                engines[0] = Some(e);
            }
            110 => {
                // Scale-down: engine 1 stops for good.
                if let Some(mut e) = engines[1].take() {
                    assert!(e.terminate().success(), "SIGTERM must exit 0");
                }
            }
            150 => {
                // Scale-up: a fourth engine joins.
                let mut e = start(shared);
                e.ready().await;
                engines.push(Some(e));
            }
            190 => {
                // An operator restarts `fleet` on engine 2 under a backlog.
                let e = engines[2].as_ref().expect("engine 2 runs");
                assert_eq!(e.restart("fleet", TOKEN).await, 200);
            }
            _ => {}
        }
        *bases.lock().unwrap() = engines.iter().flatten().map(|e| e.base.clone()).collect();
        let up = live(&engines);
        let via = engines[up[i % up.len()]].as_ref().expect("a live engine");
        let other = engines[up[(i + 1) % up.len()]]
            .as_ref()
            .expect("a live engine");
        let id = via.post(&numbered_request(&format!("scale-{i}"))).await;
        // Some deliveries are cancelled or rescheduled through another
        // engine at once.
        if i % 6 == 0 {
            assert_eq!(other.cancel(&id).await, 204, "cancel {id}");
            cancelled.push(id.clone());
        } else if i % 6 == 3 {
            assert_eq!(other.reschedule(&id, &format!("dropoff {i}")).await, 200);
            rescheduled.push(id.clone());
        }
        ids.push(id);
    }
    let up = live(&engines);
    let reader = engines[up[0]].as_ref().expect("a live engine");
    let tally = shared
        .settle(reader, &ids, "package-scale-", Duration::from_secs(120))
        .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let samples = sampler.await.expect("the sampler");
    tally.report(&format!(
        "scenario 9{on} (three engines; kill -9 and restart, scale-down, scale-up, fleet restart)"
    ));
    let switched: Vec<&String> = samples
        .seen
        .iter()
        .filter(|(id, drones)| drones.len() > 1 && !rescheduled.contains(id))
        .map(|(id, _)| id)
        .collect();
    println!(
        "scenario 9{on} drones: samples={} deliveries_seen={} double_held={} listed_twice={} \
         switched_drone_without_reschedule={}",
        samples.samples,
        samples.seen.len(),
        samples.double_held.len(),
        samples.listed_twice.len(),
        switched.len()
    );
    tally.assert_nothing_lost_or_duplicated();
    // The one dead letter a kill -9 may cause on Service Bus: a cancel or a
    // reschedule the killed engine had received stays locked until its lock
    // expires, and by then the (fast-simulated) delivery may have
    // completed, or picked up its package; the follow-up is then refused
    // with that reason. Nothing else may be dead-lettered.
    let late = |op: &str| {
        let reasons = ["completed", "picked up"]
            .map(|what| format!("{op}: not possible: the delivery is already {what}"));
        tally
            .dead_letter_reasons
            .iter()
            .filter(|r| reasons.contains(r))
            .count()
    };
    let (late_cancels, late_reschedules) = (late("cancel"), late("reschedule"));
    let (allowed, allowed_reschedules) = if on.is_empty() {
        (0, 0)
    } else {
        (late_cancels, late_reschedules)
    };
    assert_eq!(
        tally.dead_lettered,
        (allowed + allowed_reschedules) as u64,
        "{tally:?}"
    );
    assert_eq!(
        tally.completed + tally.cancelled,
        ids.len(),
        "every delivery ended: {tally:?}"
    );
    assert!(samples.samples > 20, "too few samples: {}", samples.samples);
    assert!(samples.double_held.is_empty(), "{:?}", samples.double_held);
    assert!(
        samples.listed_twice.is_empty(),
        "{:?}",
        samples.listed_twice
    );
    assert!(
        switched.is_empty(),
        "held by two drones one after the other: {switched:?}"
    );
    // Every cancelled delivery is cancelled, except the ones whose cancel is
    // the late one allowed above: those completed first, one per such dead
    // letter.
    let mut completed_first = 0;
    for id in &cancelled {
        match reader.stage(id).await {
            Some(5) => {}
            Some(4) => completed_first += 1,
            other => panic!("{id} was cancelled at once, yet is in stage {other:?}"),
        }
    }
    assert_eq!(
        completed_first, allowed,
        "cancelled deliveries that completed instead, against late cancels dead-lettered"
    );

    // Scale to zero with work queued and in flight, then back to one.
    let mut more = Vec::new();
    for i in 0..60 {
        let up = live(&engines);
        let via = engines[up[i % up.len()]].as_ref().expect("a live engine");
        more.push(via.post(&numbered_request(&format!("zero-{i}"))).await);
    }
    for (n, slot) in engines.iter_mut().enumerate() {
        if let Some(mut e) = slot.take() {
            if n % 2 == 0 {
                e.kill();
            } else {
                assert!(e.terminate().success(), "SIGTERM must exit 0");
            }
        }
    }
    let mut last = start(shared);
    last.ready().await;
    let tally = shared
        .settle(&last, &more, "package-zero-", Duration::from_secs(120))
        .await;
    tally.report(&format!(
        "scenario 10{on} (every engine stopped with work in flight; one new engine)"
    ));
    tally.assert_nothing_lost_or_duplicated();
    last
}

impl Engine {
    /// An admin call: status and JSON body (`Null` when there is none).
    async fn admin(&self, method: reqwest::Method, path: &str, token: &str) -> (u16, Value) {
        let res = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("admin call");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// `POST /admin/supervisors/fleet/restart?engine=ID` through this engine.
    async fn restart_fleet_on(&self, engine: &str, token: &str) -> (u16, Value) {
        self.admin(
            reqwest::Method::POST,
            &format!("/admin/supervisors/fleet/restart?engine={engine}"),
            token,
        )
        .await
    }

    /// The engine's own id.
    async fn id(&self, token: &str) -> String {
        let (status, view) = self
            .admin(reqwest::Method::GET, "/admin/cluster", token)
            .await;
        assert_eq!(status, 200, "{view}");
        view["engineId"].as_str().expect("engineId").to_owned()
    }
}

/// `fleet`'s restart count on `engine`, read through `via`.
async fn fleet_restarts(via: &Engine, engine: &str, token: &str) -> u64 {
    let (status, tree) = via
        .admin(
            reqwest::Method::GET,
            &format!("/admin/supervisors?engine={engine}"),
            token,
        )
        .await;
    assert_eq!(status, 200, "{tree}");
    assert_eq!(tree["engine"], engine);
    tree["supervisors"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "fleet"))
        .and_then(|f| f["restarts"].as_u64())
        .expect("fleet in the tree")
}

/// Runs `dronedelivery admin --url BASE --token TOKEN ARGS…`.
async fn admin_cli(base: &str, token: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dronedelivery"));
    cmd.args(["admin", "--url", base, "--token", token])
        .args(args)
        .env("RUST_LOG", "warn");
    tokio::task::spawn_blocking(move || cmd.output().expect("run the CLI"))
        .await
        .expect("the CLI")
}

/// Scenario 11: operators reach every engine through the gateway, in the
/// split layout (one gateway, two workers). Through the gateway's admin API
/// and the CLI: the cluster lists all three with their roles; worker 2's
/// tree is read; `fleet` is restarted on worker 2 only (its restart count
/// rises, worker 1's does not), then on every worker as a rolling restart
/// (one line per engine) during a burst of deliveries, none lost; a
/// restart aimed at a killed worker is a clear 504 at once, and a 404 once
/// its card has lapsed.
#[tokio::test]
async fn operators_reach_every_engine_through_the_gateway() {
    const TOKEN: &str = "ops-token";
    let shared = Shared::new();
    let args = |role: &'static str| ["--role", role, "--admin-token", TOKEN, "--lease-secs", "2"];
    let mut gateway = shared.spawn("g", &args("gateway"));
    let mut w1 = shared.spawn("w1", &args("worker"));
    let mut w2 = shared.spawn("w2", &args("worker"));
    for e in [&mut gateway, &mut w1, &mut w2] {
        e.ready().await;
    }
    let (id1, id2) = (w1.id(TOKEN).await, w2.id(TOKEN).await);
    let gateway_id = gateway.id(TOKEN).await;

    // The cluster, as the gateway sees it: three members with their roles;
    // the workers hold the partitions.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, view) = gateway
            .admin(reqwest::Method::GET, "/admin/cluster", TOKEN)
            .await;
        assert_eq!(status, 200, "{view}");
        let members: Vec<(String, String, usize, bool)> = view["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().unwrap_or_default().to_owned(),
                    m["role"].as_str().unwrap_or_default().to_owned(),
                    m["partitions"].as_array().map_or(0, Vec::len),
                    m["ready"] == true,
                )
            })
            .collect();
        let role = |id: &str| members.iter().find(|m| m.0 == id).map(|m| m.1.as_str());
        let held: usize = members.iter().map(|m| m.2).sum();
        if members.len() == 3
            && role(&gateway_id) == Some("gateway")
            && role(&id1) == Some("worker")
            && role(&id2) == Some("worker")
            && held == 16
            && members.iter().all(|m| m.3)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cluster never showed three ready members: {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Worker 2's tree, through the gateway; a restart of fleet there only.
    let (before1, before2) = (
        fleet_restarts(&gateway, &id1, TOKEN).await,
        fleet_restarts(&gateway, &id2, TOKEN).await,
    );
    let (status, restarted) = gateway.restart_fleet_on(&id2, TOKEN).await;
    assert_eq!(status, 200, "{restarted}");
    assert_eq!(restarted["name"], "fleet");
    assert_eq!(fleet_restarts(&gateway, &id2, TOKEN).await, before2 + 1);
    assert_eq!(fleet_restarts(&gateway, &id1, TOKEN).await, before1);
    let (status, all) = gateway
        .admin(reqwest::Method::GET, "/admin/supervisors?engine=all", TOKEN)
        .await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["engines"].as_array().map(Vec::len), Some(3), "{all}");

    // The CLI, through the gateway.
    let cli = admin_cli(&gateway.base, TOKEN, &["supervisors", "--engine", &id2]).await;
    assert!(cli.status.success(), "{cli:?}");
    let tree: Value = serde_json::from_slice(&cli.stdout).expect("JSON");
    assert_eq!(tree["engine"], id2.as_str());

    // A rolling restart of fleet on every worker, by the CLI, during a
    // burst of deliveries.
    let poster = {
        let base = gateway.base.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut ids = Vec::new();
            for i in 0..150 {
                let res = client
                    .post(format!("{base}/api/deliveryrequests"))
                    .json(&numbered_request(&format!("ops-{i}")))
                    .send()
                    .await
                    .expect("post");
                assert_eq!(res.status(), 202);
                let v: Value = res.json().await.expect("JSON");
                ids.push(v["deliveryId"].as_str().expect("id").to_owned());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            ids
        })
    };
    let rolling = admin_cli(
        &gateway.base,
        TOKEN,
        &["restart", "fleet", "--engine", "all"],
    )
    .await;
    let progress = String::from_utf8_lossy(&rolling.stderr).into_owned();
    assert!(rolling.status.success(), "{progress}");
    for line in ["[1/2]", "[2/2]"] {
        assert!(
            progress
                .lines()
                .any(|l| l.starts_with(line) && l.ends_with("ready")),
            "no progress line {line}: {progress}"
        );
    }
    assert_eq!(fleet_restarts(&gateway, &id1, TOKEN).await, before1 + 1);
    assert_eq!(fleet_restarts(&gateway, &id2, TOKEN).await, before2 + 2);
    let ids = poster.await.expect("poster");
    let tally = shared
        .settle(&gateway, &ids, "package-ops-", Duration::from_secs(120))
        .await;
    tally
        .report("scenario 11 (gateway + two workers; fleet restarted on one, then rolling on all)");
    tally.assert_nothing_lost_or_duplicated();

    // A restart aimed at a killed worker: 504 at once while its card
    // lives, 404 once it has lapsed.
    w1.kill();
    let started = tokio::time::Instant::now();
    let (status, problem) = gateway.restart_fleet_on(&id1, TOKEN).await;
    assert_eq!(status, 504, "{problem}");
    assert!(
        problem["detail"].as_str().is_some_and(|d| d.contains(&id1)),
        "{problem}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (status, problem) = gateway.restart_fleet_on(&id1, TOKEN).await;
    assert_eq!(status, 404, "{problem}");
    let cli = admin_cli(
        &gateway.base,
        TOKEN,
        &["restart", "fleet", "--engine", &id1],
    )
    .await;
    assert!(!cli.status.success(), "a dead engine's restart fails");
    w2.kill();
    gateway.kill();
    shared.cleanup().await;
}

/// Scenario 12: Azure Service Bus as shipped, whole engines against the
/// protocol double with a Listen+Send key (no Manage right), the queues set
/// up with `MaxDeliveryCount` 3, 3 s locks and dead-lettering of expired
/// messages; engines allow 10 delivery attempts, so the service gives up on
/// a failing message before the engine does.
///
/// 1. Five delivery requests sent with a 1 s time to live while no engine
///    runs expire: the double dead-letters them (`TTLExpiredException`).
/// 2. An engine starts and is ready although the key cannot read the queue
///    depth (no depth value in the metrics; the queue is reported up).
/// 3. Poison: an unknown operation and a body that is not JSON are
///    dead-lettered by the engine with its reason; a reschedule of a
///    delivery that never appears is retried until the double dead-letters
///    it (`MaxDeliveryCountExceeded`).
/// 4. Two hundred deliveries are posted by 16 clients; the engine is killed
///    with `kill -9` as soon as the last is accepted, with messages in
///    flight, and a new one takes over (the locks of the dead one expire
///    and the messages come back).
/// 5. `GET /admin/deadletters` lists both kinds side by side, with their
///    sources and reasons; the expired requests are replayed and complete,
///    the ghost is dead-lettered by the service again, a poison message
///    replayed is dead-lettered by the engine again.
///
/// Proves: every accepted delivery and every replayed request completes
/// exactly once (`lost=0 duplicates=0`), and what the service dead-letters
/// is listed and replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_service_bus_with_a_listen_send_key_dead_letters_are_listed_and_replayed() {
    use dronedelivery_actors::ports::{MessageQueue, Operation, QueueMessage};
    use dronedelivery_engine::adapters::servicebus::double::{
        spawn_double_with, DoubleConfig, LISTEN_SEND_POLICY,
    };
    use dronedelivery_engine::adapters::servicebus::{ServiceBusConfig, ServiceBusQueue};
    const TOKEN: &str = "sb-token";
    const COUNT: usize = 200;

    let cfg = DoubleConfig {
        dead_lettering_on_message_expiration: true,
        ..DoubleConfig::new(Duration::from_secs(3), 3)
    };
    let (_addr, double) = spawn_double_with(cfg).await.expect("double");
    let engine_key = double.config_with("deliveries", LISTEN_SEND_POLICY);
    let shared = Shared::on_service_bus(&engine_key);
    let producer = ServiceBusQueue::new(ServiceBusConfig {
        partitions: 16,
        ..double.config("deliveries")
    })
    .expect("adapter");

    // 1. Requests that expire before anyone reads them.
    let http = reqwest::Client::new();
    let mut expired_ids = Vec::new();
    for i in 0..5 {
        let id = format!("sb12-ttl-{i}");
        let mut body = numbered_request(&format!("sb12-ttl-{i}"));
        body["deliveryId"] = json!(id);
        let res = http
            .post(format!("{}/deliveries/messages", double.endpoint()))
            .header("authorization", double.authorization("/deliveries"))
            .header(
                "brokerproperties",
                json!({"MessageId": format!("ttl-message-{i}"), "TimeToLive": 1}).to_string(),
            )
            .header("operation", "\"delivery\"")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("send to the double");
        assert_eq!(res.status(), 201);
        expired_ids.push(id);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while double.dead_lettered("deliveries").len() < 5 {
        assert!(tokio::time::Instant::now() < deadline, "nothing expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 2. Ready with a key that cannot read the depth.
    let args = [
        "--max-delivery-attempts",
        "10",
        "--lock-duration-secs",
        "3",
        "--admin-token",
        TOKEN,
    ];
    let mut first = shared.spawn_with_fleet("sb12", 20, &args);
    first.ready().await;
    let metrics = first
        .client
        .get(format!("{}/metrics", first.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("dronedelivery_queue_depth ")),
        "the depth is unknown without Manage, not a made-up value"
    );

    // 3. Poison.
    let mut unknown = QueueMessage::new(Operation::Cancel, &json!("x"), None);
    unknown.operation = "explode".into();
    let mut garbage = QueueMessage::new(Operation::Delivery, &json!({}), None);
    garbage.body = "{not json".into();
    let ghost = QueueMessage::new(
        Operation::Reschedule,
        &json!({"deliveryId": "sb12-ghost", "deadline": "soon"}),
        None,
    );
    for message in [&unknown, &garbage, &ghost] {
        producer.send(message.clone()).await.expect("send");
    }

    // 4. Work in flight, then kill -9 and take over.
    let first = Arc::new(first);
    let mut posts = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let engine = Arc::clone(&first);
        posts.spawn(async move {
            let mut ids = Vec::new();
            for i in (worker..COUNT).step_by(16) {
                ids.push(engine.post(&numbered_request(&format!("sb12-{i}"))).await);
            }
            ids
        });
    }
    let mut ids = Vec::with_capacity(COUNT);
    while let Some(batch) = posts.join_next().await {
        ids.extend(batch.expect("posting task"));
    }
    let mut first = Arc::into_inner(first).expect("engine still shared");
    // A whole number of deliveries (an absent counter sums to -0.0).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let done_before = first
        .counter("dronedelivery_deliveries_completed_total", "")
        .await
        .max(0.0) as u64;
    first.signal("KILL");
    let _ = first.child.wait();
    let mut second = shared.spawn_with_fleet("sb12", 20, &args);
    second.ready().await;

    // 5. Both kinds listed side by side.
    let listed = |engine: &Engine| {
        let engine_base = engine.base.clone();
        let client = engine.client.clone();
        async move {
            let res = client
                .get(format!("{engine_base}/admin/deadletters?limit=100"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("list dead letters");
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.expect("a page")
        }
    };
    let find = |page: &Value, message_id: &str| -> Option<Value> {
        page["items"]
            .as_array()?
            .iter()
            .find(|l| l["message"]["messageId"] == message_id)
            .cloned()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let page = loop {
        let page = listed(&second).await;
        let all_there = [&unknown, &garbage, &ghost]
            .iter()
            .all(|m| find(&page, &m.message_id).is_some())
            && (0..5).all(|i| find(&page, &format!("ttl-message-{i}")).is_some());
        if all_there {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every dead letter is listed: {page:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(page["total"], 8, "{page:#}");
    for (message, source, reason) in [
        (&unknown, "engine", "unknown operation"),
        (&garbage, "engine", "not JSON"),
        (&ghost, "broker", "MaxDeliveryCountExceeded"),
    ] {
        let letter = find(&page, &message.message_id).unwrap_or_default();
        assert_eq!(letter["source"], source, "{letter:#}");
        let got = letter["reason"].as_str().unwrap_or_default();
        assert!(got.contains(reason), "{got:?} should mention {reason:?}");
    }
    let mut replayed = 0;
    for i in 0..5 {
        let letter = find(&page, &format!("ttl-message-{i}")).unwrap_or_default();
        assert_eq!(letter["source"], "broker");
        assert_eq!(letter["reason"], "TTLExpiredException");
        let id = letter["id"].as_str().unwrap_or_default().to_owned();
        let (status, body) = second
            .admin(
                reqwest::Method::POST,
                &format!("/admin/deadletters/{id}/replay"),
                TOKEN,
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["operation"], "delivery");
        replayed += 1;
    }
    // A poison message replayed fails again, under the same id.
    let (status, _) = second
        .admin(
            reqwest::Method::POST,
            &format!("/admin/deadletters/{}/replay", garbage.message_id),
            TOKEN,
        )
        .await;
    assert_eq!(status, 202);
    // And the ghost replayed is given up by the service again.
    let ghost_id = find(&page, &ghost.message_id).unwrap_or_default()["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, _) = second
        .admin(
            reqwest::Method::POST,
            &format!("/admin/deadletters/{ghost_id}/replay"),
            TOKEN,
        )
        .await;
    assert_eq!(status, 202);

    let mut all = ids.clone();
    all.extend(expired_ids);
    let mut tally = shared
        .settle(&second, &all, "package-sb12-", Duration::from_secs(120))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let page = loop {
        let page = listed(&second).await;
        let ghost_again = find(&page, &ghost.message_id)
            .is_some_and(|l| l["id"] != ghost_id.as_str() && l["source"] == "broker");
        if ghost_again && find(&page, &garbage.message_id).is_some() && page["total"] == 3 {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replayed poison was not dead-lettered again: {page:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    tally.dead_lettered = page["total"].as_u64().unwrap_or(0);
    tally.report(&format!(
        "scenario 12 on Service Bus with a Listen+Send key (kill -9 after {COUNT} accepted, \
         {done_before} completed before it; {replayed} expired requests replayed)"
    ));
    tally.assert_nothing_lost_or_duplicated();
    assert_eq!(tally.dead_lettered, 3, "the poison only: {page:#}");
    assert_eq!(tally.completed, COUNT + 5, "{tally:?}");
    assert_eq!(tally.packages, (COUNT + 5) as u64, "{tally:?}");
    second.kill();
    shared.cleanup().await;
}

/// Scheduled pickups survive their engine: two engines share the
/// partitions; twelve deliveries are booked 15 s ahead (lead time 2 s);
/// the engine holding some of them is killed with `kill -9` while they are
/// `Scheduled`; the survivor takes its partitions over (2 s leases) and
/// starts every one, once, not before its time. Counted from Redis: one
/// `Created` event per delivery, none before it was due.
#[tokio::test]
async fn scheduled_pickups_of_a_killed_engine_start_on_time_once_on_the_survivor() {
    let shared = Shared::new();
    let args = ["--pickup-lead-secs", "2", "--lease-secs", "2"];
    let mut victim = shared.spawn("a", &args);
    victim.ready().await;
    let mut survivor = shared.spawn("b", &args);
    survivor.ready().await;
    let mut r = shared.redis().await;
    shared.wait_balanced(&mut r, 2).await;
    let pickup = chrono::Utc::now() + chrono::Duration::seconds(15);
    let due = pickup - chrono::Duration::seconds(2);
    let mut ids = Vec::new();
    for i in 0..12 {
        let mut body = numbered_request(&format!("booked-{i}"));
        body["pickupTime"] = json!(pickup.to_rfc3339());
        ids.push(survivor.post(&body).await);
    }
    for id in &ids {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while survivor.stage(id).await != Some(6) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} never Scheduled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Which of them the victim holds.
    let victim_tag = format!("-{}-", victim.child.id());
    let mut theirs = 0;
    for id in &ids {
        let owner = shared.lease_owner(&mut r, partition_of(id, 16)).await;
        theirs += usize::from(owner.is_some_and(|o| o.contains(&victim_tag)));
    }
    assert!(
        theirs > 0,
        "the victim held none of the scheduled deliveries"
    );
    victim.kill();
    for id in &ids {
        survivor.wait_completed(id, Duration::from_secs(60)).await;
    }
    let mut early = Vec::new();
    let mut starts = Vec::new();
    for id in &ids {
        let events: Vec<String> = r
            .lrange(format!("{}:delivery:{id}:events", shared.prefix), 0, -1)
            .await
            .expect("LRANGE");
        let created: Vec<chrono::DateTime<chrono::Utc>> = events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .filter(|e| e["stage"] == 0)
            .filter_map(|e| serde_json::from_value(e["at"].clone()).ok())
            .collect();
        assert_eq!(created.len(), 1, "{id} started {} times", created.len());
        if created[0] < due {
            early.push(id.clone());
        }
        starts.push((created[0] - due).num_milliseconds());
    }
    eprintln!(
        "scheduled takeover: {theirs} of {} on the killed engine; started {starts:?} ms after due",
        ids.len()
    );
    assert!(early.is_empty(), "started before their time: {early:?}");
    shared.cleanup().await;
}
