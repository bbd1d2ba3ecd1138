//! `store_limit pipeline`: the stores' work of end-to-end deliveries, with
//! no HTTP and no actors: the ceiling of this machine for this design.
//!
//! It calls the engine's own adapters (`dronedelivery-engine`), so the
//! commands and the batching are the engine's, not an imitation. For each
//! delivery, what the engine does in the window scenario d of
//! `benches/run.sh` measures (from the request to the workflow's
//! completion of its message, the drone taken):
//!
//! 1. the gateway's send to the Redis stream (`XADD`), in the expedited
//!    lane's stream for an expedited request, whose lane is remembered
//!    first (the gateway's `SET NX` of the lane marker);
//! 2. a consumer's batched receive (the receive script, `XREADGROUP`);
//! 3. the package upsert (MongoDB, batched);
//! 4. the delivery actor's load and its save of the created record with
//!    its event, fenced by the partition's lease (the save script);
//! 5. the fleet's claim of the nearest drone that can take the job, fenced
//!    (the claim script), and the save of the assigned record;
//! 6. the completion of the message (`XACK`, `XDEL`);
//! 7. the drone's release, standing in for the end of its flight, so the
//!    pool of free drones stays as large as the fleet.
//!
//! The requests are `loadgen`'s (`dronedelivery_benches::delivery_request`:
//! every other one expedited, a third each of the three sizes), turned into
//! queue messages by the gateway's own rules, and the queue has the
//! engine's two lanes, read together. The records and events are made by
//! the same pure rules the actors use (`lifecycle::apply`). What it leaves
//! out, the engine pays on top: the HTTP, the actors and their messages,
//! the flights' position writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::Utc;
use dronedelivery_actors::domain::lifecycle::{self, Command, NewDelivery, Rules};
use dronedelivery_actors::domain::ownership::{partition_of, Fence, LeaseAnswer, LeaseOp};
use dronedelivery_actors::domain::{
    DeliveryRequest, DroneReport, DroneState, FleetSpec, Package, ServiceArea,
};
use dronedelivery_actors::ports::{
    Claimed, DeliveryStore, DroneStore, IdempotencyStore, MessageQueue, Operation, OwnershipStore,
    PackageStore, QueueMessage, ReceivedMessage,
};
use dronedelivery_engine::adapters::batch::BatchConfig;
use dronedelivery_engine::adapters::lanes::Lanes;
use dronedelivery_engine::adapters::mongo::{self, MongoConfig};
use dronedelivery_engine::adapters::redis::{
    self as redis_adapter, RedisConfig, RedisStreamsQueue, StreamsConfig,
};
use dronedelivery_gateway::deliveryrequests;
use dronedelivery_gateway::idempotency::KEY_TTL;
use serde_json::json;
use tokio::sync::Semaphore;

/// What the pipeline run is given.
pub struct Args {
    pub redis_url: String,
    pub mongodb_uri: String,
    pub count: usize,
    pub senders: usize,
    pub consumers: usize,
    pub prefetch: usize,
    pub receive_max: usize,
    pub partitions: u32,
    pub fleet_size: usize,
    pub batch: BatchConfig,
}

struct Stores {
    queue: Arc<dyn MessageQueue>,
    /// Where the gateway remembers an expedited create's lane.
    markers: Arc<dyn IdempotencyStore>,
    deliveries: Arc<dyn DeliveryStore>,
    drones: Arc<dyn DroneStore>,
    packages: Arc<dyn PackageStore>,
    fences: Vec<Fence>,
    area: ServiceArea,
}

/// Runs the pipeline; returns its figures as JSON.
pub async fn run(a: Args) -> anyhow::Result<serde_json::Value> {
    let tag = format!("store-limit-{}", std::process::id());
    let redis = redis_adapter::connect(&RedisConfig::new(a.redis_url.clone(), tag.clone()))
        .await
        .context("connect to Redis")?;
    let mut streams = StreamsConfig::new(a.redis_url.clone(), tag.clone());
    streams.partitions = a.partitions;
    // The engine's two lanes (see `backends`): `{stream}-expedited` too.
    let mut lane = streams.clone();
    lane.stream = format!("{}-expedited", streams.stream);
    let normal: Arc<dyn MessageQueue> = RedisStreamsQueue::connect(streams)
        .await
        .context("Redis stream")?;
    let expedited: Arc<dyn MessageQueue> = RedisStreamsQueue::connect(lane)
        .await
        .context("expedited Redis stream")?;
    let queue = Lanes::new(normal, expedited);
    let db = format!("store_limit_pipeline_{}", std::process::id());
    let mongo = mongo::connect_with(
        &MongoConfig {
            uri: a.mongodb_uri.clone(),
            database: Some(db),
        },
        a.batch,
    )
    .await
    .context("connect to MongoDB")?;

    // This process holds every partition's lease, as one engine would.
    let mut fences = Vec::new();
    for partition in 0..a.partitions {
        match redis
            .ownership
            .lease(partition, &tag, LeaseOp::Acquire, Duration::from_secs(600))
            .await?
        {
            LeaseAnswer::Held(lease) => fences.push(Fence {
                partition,
                epoch: lease.epoch,
            }),
            other => bail!("partition {partition}: {other:?}"),
        }
    }
    // The engine's fleet: its mix, payloads and batteries, at its depots.
    let area = ServiceArea::default();
    let spec = FleetSpec::default();
    let depots = area.depots(4);
    let classes = spec.mix.classes(a.fleet_size);
    let now = Utc::now();
    let fleet: Vec<DroneState> = (0..a.fleet_size)
        .map(|i| {
            DroneState::parked(format!("drone-{i:04}"), depots[i % depots.len()])
                .with_limits(spec.payload(&classes, i), spec.battery(1000.0, now))
        })
        .collect();
    redis.drones.seed(&fleet).await?;

    let stores = Arc::new(Stores {
        queue: queue.clone(),
        markers: redis.idempotency.clone(),
        deliveries: redis.deliveries.clone(),
        drones: redis.drones.clone(),
        packages: mongo.packages.clone(),
        fences,
        area,
    });
    let requests: Arc<Vec<(String, String, bool)>> = Arc::new(
        (0..a.count)
            .map(|i| request(&tag, i))
            .collect::<anyhow::Result<_>>()?,
    );
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_now();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..a.senders.max(1) {
        let (stores, requests, sent) = (stores.clone(), requests.clone(), sent.clone());
        let senders = a.senders.max(1);
        tasks.push(tokio::spawn(async move {
            for i in (s..requests.len()).step_by(senders) {
                let (id, body, expedited) = &requests[i];
                let mut message = QueueMessage::with_body(Operation::Delivery, body.clone(), None);
                if *expedited {
                    // As the gateway does (`deliveryrequests::queue_delivery`):
                    // the lane is remembered before the create is sent.
                    let marked = stores
                        .markers
                        .put_if_absent(
                            &deliveryrequests::lane_key(id),
                            deliveryrequests::EXPEDITED,
                            KEY_TTL,
                        )
                        .await;
                    message.expedited = marked.is_ok();
                }
                if stores.queue.send(message).await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let goal = a.count as u64;
    // One pump receives, as the engine's does (a second receiver in the
    // same process would take over the first one's fresh messages while
    // the partitions are new to it), and hands each message to one of
    // `consumers` workers; at most `prefetch` messages are held unsettled.
    let workers = Arc::new(Semaphore::new(a.consumers.max(1)));
    let held = Arc::new(Semaphore::new(a.prefetch.max(1)));
    {
        let (stores, done, failed) = (stores.clone(), done.clone(), failed.clone());
        let max = a.receive_max.max(1);
        tasks.push(tokio::spawn(async move {
            while done.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < goal {
                let room = held.available_permits().min(max);
                if room == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let Ok(batch) = stores
                    .queue
                    .receive(&stores.fences, room, Duration::from_millis(200))
                    .await
                else {
                    continue;
                };
                for received in batch {
                    let Ok(hold) = held.clone().try_acquire_owned() else {
                        break;
                    };
                    let Ok(worker) = workers.clone().acquire_owned().await else {
                        break;
                    };
                    let (stores, done, failed) = (stores.clone(), done.clone(), failed.clone());
                    tokio::spawn(async move {
                        match deliver(&stores, &received).await {
                            Ok(()) => {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                    eprintln!("store_limit pipeline: a delivery failed: {e:#}");
                                }
                            }
                        }
                        drop(worker);
                        drop(hold);
                    });
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while done.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < goal
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_after = cpu_now();
    for t in tasks {
        t.abort();
    }
    let done = done.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    // Clean up: the run's keys and database.
    let _ = mongo.database().drop().await;
    if let Err(e) = dronedelivery_benches::cleanup::redis(&a.redis_url, &tag).await {
        eprintln!("store_limit pipeline: cleanup of {tag}: {e:#}");
    }
    let per_sec = done as f64 / secs;
    let per_delivery = |name: &str| {
        let used = cpu_after.get(name).copied().unwrap_or(0.0)
            - cpu_before.get(name).copied().unwrap_or(0.0);
        (used * 1e6 / done.max(1) as f64).round()
    };
    let cpu = json!({
        "bench_us": per_delivery("self"),
        "redis_us": per_delivery("redis-server"),
        "mongodb_us": per_delivery("secantusd-rs") + per_delivery("mongod"),
    });
    eprintln!(
        "store_limit pipeline: {done} deliveries ({failed} failed) in {secs:.2} s: {per_sec:.0} deliveries/s; CPU per delivery: {cpu}"
    );
    Ok(
        json!({"kind": "pipeline", "deliveries": done, "failed": failed, "seconds": secs,
        "deliveries_per_sec": per_sec, "sent": sent.load(Ordering::Relaxed),
        "consumers": a.consumers, "receive_max": a.receive_max, "partitions": a.partitions,
        "fleet_size": a.fleet_size, "batch_max": a.batch.max, "cpu_per_delivery": cpu}),
    )
}

/// CPU seconds (user + system) used so far by this process (`self`) and by
/// the processes named `redis-server`, `secantusd-rs` and `mongod` (the
/// stores on this machine), from `/proc`.
fn cpu_now() -> std::collections::HashMap<String, f64> {
    // Clock ticks per second (`getconf CLK_TCK`): 100 on Linux.
    const HZ: f64 = 100.0;
    let ticks = |stat: &str| -> Option<f64> {
        // The fields after the parenthesised command name; utime and stime
        // are the 12th and 13th of them.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / HZ)
    };
    let read = |path: std::path::PathBuf| std::fs::read_to_string(path).ok();
    let mut out = std::collections::HashMap::new();
    if let Some(t) = read("/proc/self/stat".into()).as_deref().and_then(ticks) {
        out.insert("self".to_owned(), t);
    }
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path();
        let Some(comm) = read(path.join("comm")) else {
            continue;
        };
        let name = comm.trim();
        if ["redis-server", "secantusd-rs", "mongod"].contains(&name) {
            if let Some(t) = read(path.join("stat")).as_deref().and_then(ticks) {
                *out.entry(name.to_owned()).or_insert(0.0) += t;
            }
        }
    }
    out
}

/// Request `i` as the gateway queues it: `loadgen`'s request read by the
/// gateway's rules, with its delivery id; returns the id, the message body
/// and whether it is expedited.
fn request(tag: &str, i: usize) -> anyhow::Result<(String, String, bool)> {
    let value = dronedelivery_benches::delivery_request(tag, i, None);
    let id = format!("{tag}-{i}");
    let request = DeliveryRequest::from_external(&value, id.clone())
        .map_err(|e| anyhow::anyhow!("request {i}: {e:?}"))?;
    Ok((id, request.message_body(), request.expedited))
}

/// The stores' work of one delivery (see the module docs).
async fn deliver(stores: &Stores, received: &ReceivedMessage) -> anyhow::Result<()> {
    let value: serde_json::Value = serde_json::from_str(&received.message.body)?;
    let request = DeliveryRequest::from_message(&value).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let id = request.delivery_id.clone();
    let fence = stores
        .fences
        .iter()
        .copied()
        .find(|f| f.partition == partition_of(&id, stores.fences.len() as u32));
    stores
        .packages
        .upsert(&Package::from(&request.package))
        .await?;
    let rules = Rules {
        area: &stores.area,
        drone_speed_mps: 15.0,
        pickup_lead: chrono::Duration::seconds(60),
    };
    let current = stores.deliveries.get(&id).await?;
    let now = Utc::now();
    let new = Box::new(NewDelivery {
        request,
        correlation_id: None,
    });
    let decision = lifecycle::apply(current.as_ref(), Command::Create(new), rules, now)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(change) = decision.change else {
        bail!("nothing to create");
    };
    let record = change.record;
    save(stores, &record, &change.events, fence).await?;
    let job = lifecycle::drone_request(&record);
    if let Claimed::Drone(drone) = stores.drones.claim(&job, fence, now).await? {
        let report = DroneReport::Assigned {
            ticket: job.ticket,
            drone_id: drone.id.clone(),
            position: drone.position,
            pickup_eta: now + chrono::Duration::seconds(60),
            delivery_eta: now + chrono::Duration::seconds(120),
        };
        let decision = lifecycle::apply(Some(&record), Command::Drone(report), rules, now)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(change) = decision.change {
            save(stores, &change.record, &change.events, fence).await?;
        }
        stores.queue.complete(&received.lock).await?;
        stores
            .drones
            .release(&drone.released(Utc::now()), &id, fence)
            .await?;
    } else {
        stores.queue.complete(&received.lock).await?;
    }
    Ok(())
}

/// Saves `record` with each of its events, as the delivery actor does (one
/// save without an event when there is none).
async fn save(
    stores: &Stores,
    record: &dronedelivery_actors::domain::DeliveryRecord,
    events: &[dronedelivery_actors::domain::TrackingEvent],
    fence: Option<Fence>,
) -> anyhow::Result<()> {
    if events.is_empty() {
        stores.deliveries.save(record, None, fence).await?;
    }
    for event in events {
        let saved = stores.deliveries.save(record, Some(event), fence).await?;
        if !saved.is_stored() {
            bail!("save refused: {saved:?}");
        }
    }
    Ok(())
}
