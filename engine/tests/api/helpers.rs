//! `spawn_app()` and client helpers shared by the tests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dronedelivery_actors::domain::ownership::Fence;
use dronedelivery_actors::domain::{DeliveryRecord, TrackingEvent};
use dronedelivery_actors::ports::{DeliveryStore, Saved, StoreResult};
use dronedelivery_actors::Engine;
use dronedelivery_engine::{Application, ServeArgs};
use serde_json::{json, Value};

/// A running application and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub engine: Engine,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Fast simulation: drones cross the service area in well under a second.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Same, with settings adjusted by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut ServeArgs)) -> TestApp {
    spawn_app_on(configure, None).await
}

/// Same, on the given backends (e.g. with injected faults) instead of the
/// embedded ones.
pub async fn spawn_app_on(
    configure: impl FnOnce(&mut ServeArgs),
    backends: Option<dronedelivery_actors::Backends>,
) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        dronedelivery_engine::telemetry::init_logging(
            dronedelivery_engine::config::LogFormat::Text,
        );
    }
    let mut args = ServeArgs::defaults();
    args.listen = "127.0.0.1:0".parse().unwrap();
    args.sim_speed = 2_000.0;
    args.tick_ms = 20;
    args.fleet_size = 10;
    args.retry_delay_ms = 20;
    configure(&mut args);
    let app = match backends {
        Some(b) => Application::build_with(&args, b).await,
        None => Application::build(&args).await,
    };
    let app = app.expect("app did not start");
    let address = format!("http://{}", app.address());
    let engine = app.engine().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        client: reqwest::Client::new(),
        engine,
        stop: Some(stop),
        server: Some(server),
    }
}

/// The original system's example request (`deployment.md`).
pub fn ri_example() -> Value {
    json!({
       "confirmationRequired": "None",
       "deadline": "",
       "dropOffLocation": "drop off",
       "expedited": true,
       "ownerId": "myowner",
       "packageInfo": {"packageId": "mypackage", "size": "Small", "tag": "mytag", "weight": 10},
       "pickupLocation": "my pickup",
       "pickupTime": "2019-05-08T20:00:00.000Z"
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> reqwest::Response {
        self.client
            .request(method, self.url(path))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// POSTs a delivery request, asserts 202 and returns the new id.
    pub async fn post_delivery(&self, body: &Value) -> String {
        let res = self
            .send_json(reqwest::Method::POST, "/api/deliveryrequests", body)
            .await;
        assert_eq!(res.status(), 202, "POST /api/deliveryrequests");
        let body: Value = res.json().await.unwrap();
        body["deliveryId"]
            .as_str()
            .unwrap_or_else(|| panic!("no deliveryId in {body}"))
            .to_owned()
    }

    /// Queues the create of delivery `id` (the reference example's body)
    /// straight to the engine, as the gateway would, without HTTP.
    pub async fn submit_create(&self, id: &str) {
        let mut body = ri_example();
        body["deliveryId"] = json!(id);
        let request = dronedelivery_actors::domain::DeliveryRequest::from_message(&body).unwrap();
        self.engine
            .submit(dronedelivery_actors::ports::QueueMessage::new(
                dronedelivery_actors::ports::Operation::Delivery,
                &request.to_message_json(),
                None,
            ))
            .await
            .unwrap();
    }

    /// The status document, or `None` while the delivery is unknown or
    /// its store is reported down (a `503` naming the dependency, which a
    /// client retries after `Retry-After`).
    pub async fn status(&self, id: &str) -> Option<Value> {
        let res = self.get(&format!("/api/deliveries/{id}/status")).await;
        match res.status().as_u16() {
            200 => Some(res.json().await.unwrap()),
            404 => None,
            503 => {
                let problem: Value = res.json().await.unwrap_or_default();
                assert!(
                    problem["dependency"].is_string(),
                    "status of {id}: a 503 that names no dependency: {problem}"
                );
                None
            }
            other => panic!("status of {id}: HTTP {other}"),
        }
    }

    /// Polls the status until `pred` holds; panics with the last status after `within`.
    pub async fn wait_for(
        &self,
        id: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        let mut last = None;
        while tokio::time::Instant::now() < deadline {
            if let Some(s) = self.status(id).await {
                if pred(&s) {
                    return s;
                }
                last = Some(s);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("delivery {id} never reached the expected state; last status: {last:?}");
    }

    /// Waits for a stage (by its integer code).
    pub async fn wait_for_stage(&self, id: &str, stage: u64, within: Duration) -> Value {
        self.wait_for(id, within, |s| s["stage"] == stage).await
    }

    /// Stops the application gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let result = server.await.expect("server task");
            result.expect("server");
        }
    }
}

/// Stage codes (the original's integers).
#[allow(dead_code)]
pub mod stage {
    pub const CREATED: u64 = 0;
    pub const RESCHEDULED: u64 = 1;
    pub const HEADED_TO_PICKUP: u64 = 2;
    pub const HEADED_TO_DROPOFF: u64 = 3;
    pub const COMPLETED: u64 = 4;
    pub const CANCELLED: u64 = 5;
}

/// A recipient's confirmation of receipt (`POST .../confirmations`).
pub fn confirmation() -> Value {
    json!({
        "dateTime": {"dateTimeValue": "2019-05-08T20:30:00Z"},
        "geoCoordinates": {"altitude": 0, "latitude": 47.61, "longitude": -122.33},
        "confirmationType": "Picture",
        "confirmationBlob": "cGljdHVyZQ=="
    })
}

/// A response header as text (empty when absent or not text).
pub fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Asserts an RFC 9457 problem response and returns its body.
pub async fn assert_problem(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status(), status);
    let ct = header(&res, "content-type");
    assert!(
        ct.starts_with("application/problem+json"),
        "content-type was {ct:?}"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string(), "{body}");
    body
}

/// A delivery store that can be switched off: every call fails as if the
/// server were unreachable.
pub struct SwitchableDeliveries {
    inner: Arc<dyn DeliveryStore>,
    down: AtomicBool,
    delay_ms: AtomicU64,
}

impl SwitchableDeliveries {
    /// Wraps `backends.deliveries` in place and returns the switch.
    pub fn wrap(backends: &mut dronedelivery_actors::Backends) -> Arc<Self> {
        let store = Arc::new(Self {
            inner: Arc::clone(&backends.deliveries),
            down: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
        });
        backends.deliveries = store.clone();
        store
    }

    /// Takes the store down (every call fails) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Makes every call take `delay` longer (a slow server).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    async fn check(&self) -> StoreResult<()> {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.down.load(Ordering::SeqCst) {
            Err(dronedelivery_actors::ports::StoreError::Unavailable(
                "injected outage".into(),
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl DeliveryStore for SwitchableDeliveries {
    fn backend(&self) -> &'static str {
        "switchable-memory"
    }
    async fn get(&self, id: &str) -> StoreResult<Option<DeliveryRecord>> {
        self.check().await?;
        self.inner.get(id).await
    }
    async fn save(
        &self,
        record: &DeliveryRecord,
        event: Option<&TrackingEvent>,
        fence: Option<Fence>,
    ) -> StoreResult<Saved> {
        self.check().await?;
        self.inner.save(record, event, fence).await
    }
    async fn events(&self, id: &str) -> StoreResult<Vec<TrackingEvent>> {
        self.check().await?;
        self.inner.events(id).await
    }
    async fn due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        self.check().await?;
        self.inner.due(now, limit).await
    }
    async fn at_risk_count(&self) -> StoreResult<u64> {
        self.check().await?;
        self.inner.at_risk_count().await
    }
    async fn awaiting_drone(&self) -> StoreResult<Vec<String>> {
        self.check().await?;
        self.inner.awaiting_drone().await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.check().await
    }
}

/// The real backends, under a key prefix and database of this test's own:
/// Redis Streams queue, Redis stores, MongoDB stores (`scripts/services.sh`
/// starts the servers).
pub async fn real_backends() -> dronedelivery_actors::Backends {
    real_backends_with(|_| {}).await
}

/// Same, with the settings that shape the backends (partitions, lock
/// duration) adjusted by `configure`; the engines on them need the same.
pub async fn real_backends_with(
    configure: impl FnOnce(&mut dronedelivery_engine::ServeArgs),
) -> dronedelivery_actors::Backends {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut args = dronedelivery_engine::ServeArgs::defaults();
    args.queue = dronedelivery_engine::config::QueueKind::RedisStreams;
    args.redis_url = "redis://127.0.0.1:6379".parse().ok();
    args.redis_prefix = format!("res-{}", &id[..12]);
    args.mongodb_uri = format!("mongodb://127.0.0.1:27017/res_{}", &id[..12])
        .parse()
        .ok();
    args.lock_duration_secs = 5;
    configure(&mut args);
    dronedelivery_engine::backends::connect(&args)
        .await
        .expect("real backends")
        .backends
}
