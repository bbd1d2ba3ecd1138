//! End to end on the real backends, with real `dronedelivery` processes:
//! Redis Streams queue, Redis stores, MongoDB stores. Needs Redis on
//! 127.0.0.1:6379 and a MongoDB-wire server on 127.0.0.1:27017
//! (`scripts/services.sh` starts both). Every test uses its own Redis key
//! prefix and MongoDB database, so tests run in parallel on one server.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
}

impl Shared {
    fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            prefix: format!("e2e-{}", &id[..12]),
            database: format!("dd_e2e_{}", &id[..12]),
        }
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(REDIS).unwrap_or_else(|e| panic!("{e}"));
        client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("redis: {e}"))
    }

    async fn mongo(&self) -> mongodb::Database {
        let client = mongodb::Client::with_uri_str(MONGO)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        client.database(&self.database)
    }

    fn spawn(&self, fleet_id: &str, extra: &[&str]) -> Engine {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dronedelivery"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--queue",
                "redis-streams",
                "--redis-url",
                REDIS,
                "--redis-prefix",
                &self.prefix,
            ])
            .args(["--mongodb-uri", &format!("{MONGO}/{}", self.database)])
            .args([
                "--fleet-id",
                fleet_id,
                "--fleet-size",
                "10",
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
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn dronedelivery: {e}"));
        Engine {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
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
        .unwrap_or_else(|e| panic!("{e}"))
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
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status(), 202);
        let v: Value = res.json().await.unwrap_or_default();
        v["deliveryId"].as_str().unwrap_or_default().to_owned()
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
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_default();
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
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success());
    }

    /// SIGTERM and wait for a clean exit.
    fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.child.wait().unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
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
        .unwrap_or_default();
    assert!(!keys.is_empty(), "no Redis key mentions {id}");
    let mut found_record = false;
    for key in &keys {
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut r)
            .await
            .unwrap_or_default();
        if kind == "string" {
            let raw: String = r.get(key).await.unwrap_or_default();
            let v: Value = serde_json::from_str(&raw).unwrap_or_default();
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
        .unwrap_or_default();
    assert_eq!(drones.len(), 10, "ten drones stored: {drones:?}");

    // MongoDB: the package and the history entry.
    let db = shared.mongo().await;
    let package = db
        .collection::<mongodb::bson::Document>("packages")
        .find_one(doc! {"_id": "mypackage"})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let package = package.unwrap_or_else(|| panic!("no package document"));
    assert_eq!(package.get_str("size").ok(), Some("Small"));
    let history = db
        .collection::<mongodb::bson::Document>("deliveryhistory")
        .find_one(doc! {"_id": &id})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(history.is_some(), "no delivery history for {id}");

    // Packages: the original 201/204/404 contract, on MongoDB.
    let url = |p: &str| format!("{}{p}", engine.base);
    let put = engine
        .client
        .put(url("/api/packages/e2e-pkg"))
        .json(&json!({"size": "Large", "weight": 2, "tag": "t"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(put.status(), 201);
    let put = engine
        .client
        .put(url("/api/packages/e2e-pkg"))
        .json(&json!({"size": "Small"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(put.status(), 204);
    let patch = engine
        .client
        .patch(url("/api/packages/e2e-pkg"))
        .json(&json!({"tag": "u"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(patch.status(), 204);
    let got: Value = engine
        .client
        .get(url("/api/packages/e2e-pkg"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
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
    .unwrap_or_else(|e| panic!("{e}"));
    let mut poison = dronedelivery_actors::ports::QueueMessage::new(
        dronedelivery_actors::ports::Operation::Delivery,
        &json!({"deliveryId": "poison"}),
        None,
    );
    poison.operation = "teleport".into();
    dronedelivery_actors::ports::MessageQueue::send(queue.as_ref(), poison.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let letters = db.collection::<mongodb::bson::Document>("deadletters");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let letter = loop {
        let found = letters
            .find_one(doc! {"_id": &poison.message_id})
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some(found) = found {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poison message was never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reason = letter.get_str("reason").unwrap_or_default();
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
    let mut ids = Vec::new();
    for i in 0..120 {
        let mut body = ri_example();
        body["pickupLocation"] = json!(format!("pickup {i}"));
        let via = if i % 2 == 0 { &a } else { &b };
        ids.push(via.post(&body).await);
    }
    for id in &ids {
        a.wait_completed(id, Duration::from_secs(60)).await;
    }
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

    // Exactly one Created event per delivery.
    let mut r = shared.redis().await;
    for id in &ids {
        let keys: Vec<String> = r
            .keys(format!("{}:*{id}*events*", shared.prefix))
            .await
            .unwrap_or_default();
        let mut created = 0;
        for key in keys {
            let events: Vec<String> = r.lrange(&key, 0, -1).await.unwrap_or_default();
            created += events.iter().filter(|e| e.contains("\"stage\":0")).count();
        }
        assert_eq!(created, 1, "delivery {id} created {created} times");
    }
    a.kill();
    b.kill();
    shared.cleanup().await;
}

#[tokio::test]
async fn a_killed_engines_unacknowledged_messages_are_claimed_and_finished() {
    let shared = Shared::new();
    // Short locks so the survivor claims quickly.
    let mut victim = shared.spawn("victim", &["--lock-duration-secs", "2"]);
    let mut survivor = shared.spawn("survivor", &["--lock-duration-secs", "2"]);
    victim.ready().await;
    survivor.ready().await;

    // Freeze the victim: a read it had blocked in Redis still takes
    // messages from the stream, which then sit unacknowledged in its pending
    // list, exactly as when a process dies after receiving. Whether its read
    // was blocked at that instant is timing, so repeat until it holds some.
    let mut r = shared.redis().await;
    let mut ids = Vec::new();
    let mut held = false;
    for attempt in 0..5 {
        victim.signal("STOP");
        let mut batch = Vec::new();
        for i in 0..40 {
            let mut body = ri_example();
            body["pickupLocation"] = json!(format!("pickup {attempt}-{i}"));
            batch.push(survivor.post(&body).await);
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
    victim.kill();

    for id in &ids {
        survivor.wait_completed(id, Duration::from_secs(60)).await;
    }
    survivor.kill();
    shared.cleanup().await;
}

/// Messages pending (received, unacknowledged) for consumers whose name
/// contains "victim".
async fn victim_pending(r: &mut redis::aio::MultiplexedConnection, prefix: &str) -> u64 {
    let streams: Vec<String> = r
        .keys(format!("{prefix}:stream:*"))
        .await
        .unwrap_or_default();
    let mut total = 0;
    for stream in streams {
        let kind: String = redis::cmd("TYPE")
            .arg(&stream)
            .query_async(r)
            .await
            .unwrap_or_default();
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
        let mut body = ri_example();
        body["pickupLocation"] = json!(format!("pickup {i}"));
        ids.push(first.post(&body).await);
    }
    // Stop while the queue is still full of work.
    let status = first.terminate();
    assert!(status.success(), "SIGTERM must exit 0, got {status}");

    // Everything accepted is finished by the next engine on the same stores.
    let mut second = shared.spawn("a", &[]);
    second.ready().await;
    for id in &ids {
        second.wait_completed(id, Duration::from_secs(90)).await;
    }
    second.kill();
    shared.cleanup().await;
}
