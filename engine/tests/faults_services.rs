//! Fault injection on the real services, with real `dronedelivery`
//! processes: scenarios 3 and 4 of docs/reliability.md.
//!
//! - Scenario 3: a private `redis-server` (AOF, `appendfsync always`) is
//!   killed with `SIGKILL` while deliveries are in flight, kept down, then
//!   started again on the same port and directory.
//! - Scenario 4: a private SecantusDB (the MongoDB-wire server
//!   `scripts/services.sh` installs) is killed with `SIGKILL` and kept down
//!   for 30 s while deliveries keep arriving, then started again on the same
//!   data directory.
//!
//! Each test starts its own server for the backend it takes down, so the
//! shared servers (Redis on 6379, MongoDB on 27017) that other tests use in
//! parallel are never disturbed; the backend left alone is the shared one,
//! with a private Redis key prefix or MongoDB database. Each test prints one
//! summary line (`scenario N (...): accepted=… completed=… cancelled=…
//! dead_lettered=… duplicates=… lost=… packages=… refused=…`), counted from
//! the stores, and asserts on the counts, never on timing. The engine's log goes to a file in the test's temporary
//! directory; its tail is printed when a test fails.
//!
//! Needs `redis-server` on the `PATH` and SecantusDB at
//! `/opt/secantus/bin/secantusd-rs` (override: `DD_SECANTUS_BIN`).

// Test code: a failed precondition should panic, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::bson::doc;
use serde_json::{json, Value};
use tokio::time::Instant;

mod common;

use common::tally::Tally;

/// The shared Redis (scenario 4 uses it with a private prefix).
const SHARED_REDIS: &str = "redis://127.0.0.1:6379";
/// The shared MongoDB-wire server (scenario 3 uses it with a private database).
const SHARED_MONGO: &str = "mongodb://127.0.0.1:27017";

// ------------------------------------------------------------------ helpers

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

fn unique(tag: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{tag}-{}", &id[..12])
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The last `lines` lines of a log file.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends `sig` (`KILL`, `TERM`, …) to a process.
fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// A server process of a test (Redis or SecantusDB), killed on drop.
struct Server {
    child: Option<Child>,
    what: &'static str,
}

impl Server {
    fn start(what: &'static str, program: &str, args: &[String], log: &Path) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().unwrap();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        Self {
            child: Some(child),
            what,
        }
    }

    /// Stops the server with `sig` and waits for the process to end.
    fn stop(&mut self, sig: &str) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), sig);
            let status = child.wait().unwrap();
            eprintln!("{} stopped with SIG{sig}: {status}", self.what);
        }
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One engine process.
struct Engine {
    child: Child,
    base: String,
    client: reqwest::Client,
    log: PathBuf,
}

/// What one `POST /api/deliveryrequests` gave.
enum Posted {
    /// 202: queued, with the delivery id.
    Accepted(String),
    /// 503 with a problem document: refused, the client may retry; the
    /// dependency it names when the engine knew it was down.
    Refused(Option<String>),
}

impl Engine {
    fn spawn(redis: &str, prefix: &str, mongo: &str, log: PathBuf, extra: &[&str]) -> Self {
        let port = free_port();
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = Command::new(env!("CARGO_BIN_EXE_dronedelivery"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--queue", "redis-streams", "--redis-url", redis])
            .args(["--redis-prefix", prefix, "--mongodb-uri", mongo])
            .args(["--fleet-id", "f", "--fleet-size", "50"])
            .args(["--sim-speed", "2000", "--tick-ms", "20"])
            .args(["--retry-delay-ms", "50", "--lock-duration-secs", "10"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn dronedelivery");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            log,
        }
    }

    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "dronedelivery exited: {status}; log tail:\n{}",
                tail(&self.log, 60)
            );
        }
    }

    /// `/readyz`'s status, `None` when it gave no answer.
    async fn readyz(&self) -> Option<u16> {
        let res = self
            .client
            .get(format!("{}/readyz", self.base))
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .ok()?;
        Some(res.status().as_u16())
    }

    /// Waits until `/readyz` answers 200.
    async fn ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            self.assert_alive();
            if self.readyz().await == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "engine never became ready; log tail:\n{}",
                tail(&self.log, 60)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn post(&self, body: &Value) -> Posted {
        let res = self
            .client
            .post(format!("{}/api/deliveryrequests", self.base))
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let v: Value = res.json().await.unwrap_or_default();
        match status {
            202 => Posted::Accepted(
                v["deliveryId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("202 without a deliveryId: {v}"))
                    .to_owned(),
            ),
            503 => {
                assert!(
                    content_type.starts_with("application/problem+json")
                        && v["status"] == 503
                        && v["title"].is_string(),
                    "a refusal must be a problem document: {content_type} {v}"
                );
                Posted::Refused(v["dependency"].as_str().map(str::to_owned))
            }
            other => panic!("POST answered {other}: {v}"),
        }
    }

    /// Whether `/healthz/dependencies` reports `name` up (`None`: no answer).
    async fn dependency_up(&self, name: &str) -> Option<bool> {
        let res = self
            .client
            .get(format!("{}/healthz/dependencies", self.base))
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .ok()?;
        let report: Value = res.json().await.ok()?;
        report["dependencies"]
            .as_array()?
            .iter()
            .find(|d| d["name"] == name)?["up"]
            .as_bool()
    }

    /// A GET's status and JSON body (`None`: no answer).
    async fn get_json(&self, path: &str) -> Option<(u16, Value)> {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .ok()?;
        let status = res.status().as_u16();
        Some((status, res.json().await.unwrap_or_default()))
    }

    /// The delivery's stage (`None`: unknown or not answered).
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

    /// The Prometheus text.
    async fn metrics(&self) -> String {
        match self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
        {
            Ok(res) => res.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The value of the first sample of `name` whose labels contain `labels`.
    async fn gauge(&self, name: &str, labels: &str) -> Option<f64> {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .find_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A delivery request with its own package id.
fn request(package_id: &str, n: usize) -> Value {
    json!({
       "confirmationRequired": "None", "deadline": "", "dropOffLocation": format!("drop off {n}"),
       "expedited": true, "ownerId": "faults",
       "packageInfo": {"packageId": package_id, "size": "Small", "tag": "faults", "weight": 10},
       "pickupLocation": format!("pickup {n}"), "pickupTime": "2019-05-08T20:00:00.000Z"
    })
}

async fn redis_connection(url: &str) -> Option<redis::aio::MultiplexedConnection> {
    redis::Client::open(url)
        .ok()?
        .get_multiplexed_async_connection()
        .await
        .ok()
}

async fn redis_answers(url: &str) -> bool {
    let Some(mut c) = redis_connection(url).await else {
        return false;
    };
    redis::cmd("PING")
        .query_async::<String>(&mut c)
        .await
        .is_ok_and(|p| p == "PONG")
}

/// A MongoDB client that gives up quickly on a server that is down.
async fn mongo_client(uri: &str) -> mongodb::Client {
    let mut options = mongodb::options::ClientOptions::parse(uri).await.unwrap();
    options.server_selection_timeout = Some(Duration::from_secs(3));
    mongodb::Client::with_options(options).unwrap()
}

async fn mongo_answers(uri: &str) -> bool {
    mongo_client(uri)
        .await
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .is_ok()
}

/// Polls `check` until it holds; panics after `within`.
async fn wait_for<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ------------------------------------------------------------------- counts

/// Waits (up to `within`) until every delivery of `ids` is terminal by the
/// status API, then counts from the stores: tracking events in Redis, dead
/// letters and packages in MongoDB.
async fn tally(
    engine: &mut Engine,
    ids: &[String],
    redis_url: &str,
    prefix: &str,
    db: &mongodb::Database,
    package_prefix: &str,
    within: Duration,
) -> Tally {
    let deadline = Instant::now() + within;
    let mut open: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let mut last_report = Instant::now();
    while !open.is_empty() && Instant::now() < deadline {
        engine.assert_alive();
        let mut finished = Vec::new();
        for id in &open {
            if matches!(engine.stage(id).await, Some(4 | 5)) {
                finished.push(*id);
            }
        }
        for id in finished {
            open.remove(id);
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            eprintln!(
                "{} of {} deliveries not terminal yet",
                open.len(),
                ids.len()
            );
            last_report = Instant::now();
        }
        if !open.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    Tally::count(
        redis_url,
        prefix,
        db,
        ids,
        |id| open.contains(id),
        package_prefix,
    )
    .await
}

/// Prints the summary and, when something is off, the engine's log tail.
fn report(scenario: &str, counts: &Tally, engine: &Engine) {
    counts.report(scenario);
    if counts.lost + counts.duplicates > 0 || counts.dead_lettered > 0 {
        eprintln!("engine log tail:\n{}", tail(&engine.log, 80));
    }
}

// --------------------------------------------------------------- scenario 3

/// Scenario 3: Redis restarted mid-run.
///
/// A private `redis-server` (the shared one on 6379 serves other tests) runs
/// with `--appendonly yes --appendfsync always` in a temporary directory and
/// holds the queue (Redis Streams) and the delivery, drone and idempotency
/// stores; MongoDB is the shared server with a private database. 500
/// deliveries are accepted, then the Redis process is killed with `SIGKILL`
/// while they are in flight, kept down for at least 5 s (a request posted
/// meanwhile must be refused with a 503 problem document, never accepted)
/// and started again on the same port and directory, so it reloads the AOF.
///
/// Proves: `/readyz` keeps answering 200 while Redis is down (readiness does
/// not follow dependencies), `/healthz/dependencies` reports the queue down
/// and up again after the restart without restarting the engine (its
/// connections reconnect), a request posted meanwhile is refused at once
/// with a 503 naming the queue; every
/// accepted delivery ends terminal with exactly one `Created`, one drone
/// assignment and one `Completed` event; nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_3_redis_killed_and_restarted_mid_run_loses_nothing() {
    const COUNT: usize = 500;
    let dir = TempDir::new("dd-faults-redis");
    let data = dir.path().join("redis");
    std::fs::create_dir_all(&data).unwrap();
    let port = free_port();
    let redis_url = format!("redis://127.0.0.1:{port}");
    let redis_args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--dir",
        &data.display().to_string(),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let redis_log = dir.path().join("redis.log");
    let mut redis = Server::start("redis-server", "redis-server", &redis_args, &redis_log);
    wait_for(
        "private redis-server answers",
        Duration::from_secs(30),
        || redis_answers(&redis_url),
    )
    .await;

    let prefix = unique("faults3");
    let database = format!("dd_{}", prefix.replace('-', "_"));
    let mongo_uri = format!("{SHARED_MONGO}/{database}");
    let mut engine = Engine::spawn(
        &redis_url,
        &prefix,
        &mongo_uri,
        dir.path().join("engine.log"),
        &[],
    );
    engine.ready(Duration::from_secs(120)).await;

    // 500 deliveries, posted by 16 concurrent clients.
    let engine = Arc::new(engine);
    let mut posts = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let engine = Arc::clone(&engine);
        let prefix = prefix.clone();
        posts.spawn(async move {
            let mut ids = Vec::new();
            for i in (worker..COUNT).step_by(16) {
                match engine.post(&request(&format!("{prefix}-pkg-{i}"), i)).await {
                    Posted::Accepted(id) => ids.push(id),
                    Posted::Refused(_) => panic!("refused while Redis was up"),
                }
            }
            ids
        });
    }
    let mut ids = Vec::with_capacity(COUNT);
    while let Some(batch) = posts.join_next().await {
        ids.extend(batch.unwrap());
    }
    let mut engine = Arc::into_inner(engine).expect("engine still shared");
    let created_before = engine
        .gauge("dronedelivery_deliveries_created_total", "")
        .await
        .unwrap_or(0.0);
    let completed_before = engine
        .gauge("dronedelivery_deliveries_completed_total", "")
        .await
        .unwrap_or(0.0);

    // Kill Redis with everything in flight.
    redis.stop("KILL");
    let down_since = Instant::now();
    let mut ready = 0;
    let mut not_ready = 0;
    let mut refused = 0;
    let mut seen_down = false;
    let mut slowest_probe = Duration::ZERO;
    while down_since.elapsed() < Duration::from_secs(5) || !seen_down {
        engine.assert_alive();
        let asked = Instant::now();
        let answer = engine.readyz().await;
        slowest_probe = slowest_probe.max(asked.elapsed());
        match answer {
            Some(200) => ready += 1,
            Some(503) => not_ready += 1,
            other => eprintln!("/readyz while Redis is down: {other:?}"),
        }
        if engine.dependency_up("queue").await == Some(false) {
            seen_down = true;
        }
        assert!(
            down_since.elapsed() < Duration::from_secs(120),
            "/healthz/dependencies never reported the queue down while Redis was down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A request arriving now cannot be queued: it must be refused at once,
    // naming what is down.
    let asked = Instant::now();
    let posted = engine
        .post(&request(&format!("{prefix}-refused"), COUNT))
        .await;
    let refusal_took = asked.elapsed();
    match posted {
        Posted::Refused(dependency) => {
            assert_eq!(
                dependency.as_deref(),
                Some("queue"),
                "the refusal names the queue"
            );
            refused += 1;
        }
        Posted::Accepted(id) => panic!("{id} accepted while its queue was down"),
    }
    let outage = down_since.elapsed();

    // Same port, same directory: Redis reloads its AOF.
    let mut redis = Server::start("redis-server", "redis-server", &redis_args, &redis_log);
    wait_for(
        "restarted redis-server answers",
        Duration::from_secs(60),
        || redis_answers(&redis_url),
    )
    .await;
    assert!(redis.running());
    let back = Instant::now();
    engine.ready(Duration::from_secs(120)).await;
    let mut queue_back = false;
    while !queue_back {
        queue_back = engine.dependency_up("queue").await == Some(true);
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "the queue is still reported down a minute after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "scenario 3: Redis down {outage:?} (readiness answered 200 {ready} times and 503 \
         {not_ready} times, the slowest probe took {slowest_probe:?}, the refusal \
         {refusal_took:?}; before the kill {created_before} deliveries were created and \
         {completed_before} completed), reported up again {:?} after the restart",
        back.elapsed()
    );
    assert_eq!(
        not_ready, 0,
        "readiness must not follow a dependency: every replica would leave the load balancer"
    );
    assert!(
        refusal_took < Duration::from_secs(3),
        "a request for a down dependency must fail fast, took {refusal_took:?}"
    );

    let db = mongo_client(&mongo_uri).await.database(&database);
    let mut counts = tally(
        &mut engine,
        &ids,
        &redis_url,
        &prefix,
        &db,
        &format!("{prefix}-pkg-"),
        Duration::from_secs(300),
    )
    .await;
    counts.refused = refused;
    report("scenario 3 (redis restart)", &counts, &engine);
    // Clean up before asserting, so a failed run leaves nothing on the
    // shared MongoDB (the counts are printed above).
    drop(engine);
    drop(redis);
    let _ = db.drop().await;

    assert_eq!(counts.accepted, COUNT);
    assert_eq!(counts.lost, 0, "accepted deliveries not finished");
    assert_eq!(counts.duplicates, 0, "deliveries with a duplicated event");
    assert_eq!(counts.dead_lettered, 0, "dead letters");
    assert_eq!(
        counts.completed + counts.cancelled,
        COUNT,
        "terminal deliveries"
    );
    assert_eq!(counts.packages, COUNT as u64, "one package per request");
}

// --------------------------------------------------------------- scenario 4

/// The SecantusDB binary.
fn secantus_bin() -> String {
    std::env::var("DD_SECANTUS_BIN").unwrap_or_else(|_| "/opt/secantus/bin/secantusd-rs".into())
}

/// Scenario 4: MongoDB stopped for 30 s mid-run.
///
/// A private SecantusDB (the shared one on 27017 serves other tests) runs on
/// a free port with its own data directory and holds the packages, delivery
/// history and dead letters; the queue and the delivery stores are the
/// shared Redis with a private key prefix. Clients post deliveries
/// continuously before, during and after the outage. The server is really
/// stopped, not frozen: its process is killed with `SIGKILL` (a crash, the
/// harshest stop) and nothing listens on its port for 30 s; then it is
/// started again on the same data directory. SecantusDB keeps its data on
/// disk (WiredTiger, reopened intact across restarts) and runs with
/// `--sync-on-commit`, so every acknowledged write is in its fsynced log (as
/// journaled, majority writes are on a production MongoDB): the packages
/// written before the crash are still there afterwards, and the test counts
/// them with the rest.
///
/// Proves: `/readyz` answers 200 throughout (readiness does not follow
/// dependencies) while `/healthz/dependencies` reports the packages store
/// down, package reads fail fast with a 503 naming it and status reads
/// (Redis) are served; the packages breaker opens (seen in `/metrics`); messages wait in
/// the queue or are retried with backoff and none is dead-lettered for the
/// outage; requests posted during the outage are still accepted (the queue
/// is up) or refused with a 503 problem document; once MongoDB is back the
/// work resumes and every accepted delivery ends terminal, with no
/// duplicated event and one package document per accepted request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_4_mongodb_stopped_for_30_s_opens_the_breaker_and_loses_nothing() {
    let dir = TempDir::new("dd-faults-mongo");
    let data = dir.path().join("mongo");
    std::fs::create_dir_all(&data).unwrap();
    let port = free_port();
    let mongo_args: Vec<String> = [
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--storage-path",
        &data.display().to_string(),
        "--cache-size",
        "128M",
        "--log-file-max",
        "16MB",
        "--sync-on-commit",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mongo_log = dir.path().join("mongo.log");
    let bin = secantus_bin();
    let private_mongo = format!("mongodb://127.0.0.1:{port}");
    let mut mongo = Server::start("secantusd", &bin, &mongo_args, &mongo_log);
    wait_for(
        "private SecantusDB answers",
        Duration::from_secs(120),
        || mongo_answers(&private_mongo),
    )
    .await;

    let prefix = unique("faults4");
    let database = format!("dd_{}", prefix.replace('-', "_"));
    let mongo_uri = format!("{private_mongo}/{database}");
    let mut engine = Engine::spawn(
        SHARED_REDIS,
        &prefix,
        &mongo_uri,
        dir.path().join("engine.log"),
        &[],
    );
    engine.ready(Duration::from_secs(120)).await;

    // Clients posting continuously until told to stop.
    let engine = Arc::new(engine);
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let ids = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let mut posts = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (engine, stop, next, ids, refused, prefix) = (
            Arc::clone(&engine),
            Arc::clone(&stop),
            Arc::clone(&next),
            Arc::clone(&ids),
            Arc::clone(&refused),
            prefix.clone(),
        );
        posts.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let i = usize::try_from(next.fetch_add(1, Ordering::SeqCst)).unwrap_or(0);
                match engine.post(&request(&format!("{prefix}-pkg-{i}"), i)).await {
                    Posted::Accepted(id) => ids
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(id),
                    Posted::Refused(_) => {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        });
    }
    let accepted_id = |ids: &Mutex<Vec<String>>| {
        ids.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .first()
            .cloned()
            .unwrap_or_default()
    };
    let accepted = || {
        ids.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    };

    // Before: work flows.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = accepted();

    // The outage: the process is killed, nothing listens for 30 s.
    mongo.stop("KILL");
    let down_since = Instant::now();
    let mut breaker_opened = false;
    let mut not_ready = 0;
    let mut packages_refused = 0;
    let mut status_served = 0;
    let probe_id = accepted_id(&ids);
    while down_since.elapsed() < Duration::from_secs(30) {
        if engine
            .gauge("dronedelivery_breaker_state", "backend=\"packages\"")
            .await
            == Some(1.0)
        {
            breaker_opened = true;
        }
        if engine.readyz().await != Some(200) {
            not_ready += 1;
        }
        if engine.dependency_up("packages").await == Some(false) {
            // Reads that need MongoDB fail fast, naming it; reads from
            // Redis are served.
            if let Some((503, problem)) = engine
                .get_json(&format!("/api/packages/{prefix}-pkg-0"))
                .await
            {
                assert_eq!(problem["dependency"], "packages", "{problem}");
                packages_refused += 1;
            }
            if let Some((200, _)) = engine
                .get_json(&format!("/api/deliveries/{probe_id}/status"))
                .await
            {
                status_served += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let during = accepted() - before;

    let mut mongo = Server::start("secantusd", &bin, &mongo_args, &mongo_log);
    wait_for(
        "restarted SecantusDB answers",
        Duration::from_secs(120),
        || mongo_answers(&private_mongo),
    )
    .await;
    assert!(mongo.running());

    // After: keep posting a little, then stop the clients.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    while let Some(done) = posts.join_next().await {
        done.unwrap();
    }
    let mut engine = Arc::into_inner(engine).expect("engine still shared");
    engine.ready(Duration::from_secs(120)).await;
    let ids = std::mem::take(
        &mut *ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let after = ids.len() - before - during;
    let settled = |outcome: &str, text: &str| {
        text.lines()
            .filter(|l| l.starts_with("dronedelivery_queue_messages_total"))
            .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let text = engine.metrics().await;
    let deadlettered_metric = settled("deadlettered", &text);
    let deferred = settled("deferred", &text);
    eprintln!(
        "scenario 4: accepted {before} before, {during} during and {after} after the outage; \
         {not_ready} readiness answers other than 200 while MongoDB was down; {packages_refused} \
         package reads refused naming it and {status_served} status reads served meanwhile; \
         breaker opened: {breaker_opened}; {deferred} messages put back for a retry with backoff"
    );

    let db = mongo_client(&mongo_uri).await.database(&database);
    let mut counts = tally(
        &mut engine,
        &ids,
        SHARED_REDIS,
        &prefix,
        &db,
        &format!("{prefix}-pkg-"),
        Duration::from_secs(300),
    )
    .await;
    counts.refused = usize::try_from(refused.load(Ordering::SeqCst)).unwrap_or(usize::MAX);
    report("scenario 4 (mongodb stopped 30 s)", &counts, &engine);
    // Clean up before asserting, so a failed run leaves nothing on the
    // shared Redis; the private MongoDB goes with the temporary directory.
    drop(engine);
    common::cleanup(SHARED_REDIS, &prefix).await;
    drop(mongo);

    assert!(breaker_opened, "the packages breaker never opened");
    assert_eq!(
        not_ready, 0,
        "readiness must not follow a dependency: every replica would leave the load balancer"
    );
    assert!(
        packages_refused > 0,
        "no package read was refused naming MongoDB's store while it was down"
    );
    assert!(
        status_served > 0,
        "no status read (Redis) was served while MongoDB was down"
    );
    assert!(
        before > 0 && after > 0,
        "deliveries accepted before and after the outage"
    );
    assert_eq!(counts.lost, 0, "accepted deliveries not finished");
    assert_eq!(counts.duplicates, 0, "deliveries with a duplicated event");
    assert_eq!(counts.dead_lettered, 0, "dead letters");
    assert_eq!(deadlettered_metric, 0.0, "messages dead-lettered");
    assert_eq!(
        counts.completed + counts.cancelled,
        counts.accepted,
        "terminal deliveries"
    );
    assert_eq!(
        counts.packages, counts.accepted as u64,
        "one package document per accepted request"
    );
}
