//! Micro-benchmarks of the actor runtime and the stores:
//! `cargo bench -p dronedelivery-benches --bench actors_and_stores`.
//!
//! - `actor/call round trip`: one ractor `call` (message in, reply out) to a
//!   trivial actor: the floor under every actor interaction.
//! - `workflow/process delivery (memory stores)`: one `delivery` queue message
//!   through the workflow with the in-memory backends: package upsert,
//!   delivery actor activation, the `Created` save and the fleet request.
//! - `redis/save delivery`: one record-plus-event save (one Lua script call)
//!   to the Redis at `DD_BENCH_REDIS_URL` (default `redis://127.0.0.1:6379`),
//!   alone and 64 at a time over the shared multiplexed connection (how the
//!   workflow's concurrent actors use it). Skipped when Redis is unreachable.
#![allow(missing_docs)]
// Benchmark code: a failed setup step should panic, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dronedelivery_actors::domain::{
    ConfirmationRequired, Delivery, DeliveryRecord, DeliveryRequest, DeliveryStage, Location,
    UserAccount,
};
use dronedelivery_actors::ports::{DeliveryStore, Operation, QueueMessage};
use dronedelivery_actors::workflow::{process, Outcome};
use dronedelivery_actors::{Engine, TreeConfig};
use dronedelivery_benches::ri_example;
use futures::future::join_all;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

struct Echo;

impl Actor for Echo {
    type Msg = RpcReplyPort<u64>;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        reply: Self::Msg,
        count: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        *count += 1;
        let _ = reply.send(*count);
        Ok(())
    }
}

fn actor_round_trip(c: &mut Criterion) {
    let rt = runtime();
    let (actor, _) = rt.block_on(Actor::spawn(None, Echo, ())).unwrap();
    c.bench_function("actor/call round trip", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(actor.call(|reply| reply, None).await.ok()) })
    });
    actor.stop(None);
}

fn delivery_message() -> QueueMessage {
    let id = uuid::Uuid::new_v4().to_string();
    let mut body = ri_example();
    body["packageInfo"]["packageId"] = serde_json::json!(format!("p-{id}"));
    let req = DeliveryRequest::from_external(&body, id).unwrap();
    QueueMessage::new(Operation::Delivery, &req.to_message_json(), None)
}

fn workflow_step(c: &mut Criterion) {
    let rt = runtime();
    let backends = dronedelivery_engine::memory::backends(Duration::from_secs(60), 10_000_000);
    let config = TreeConfig {
        instance: "bench-workflow".into(),
        fleet_size: 10,
        consumers: 1,
        passivate_after: Duration::from_secs(3600),
        ..TreeConfig::default()
    };
    let (engine, _tree) = rt.block_on(Engine::start(config, backends)).unwrap();
    let ctx = engine.context().clone();
    c.bench_function("workflow/process delivery (memory stores)", |b| {
        b.to_async(&rt).iter_batched(
            delivery_message,
            |message| {
                let ctx = ctx.clone();
                async move {
                    let outcome = process(&ctx, &message).await;
                    assert_eq!(outcome, Outcome::Done);
                }
            },
            BatchSize::SmallInput,
        )
    });
    rt.block_on(engine.shutdown());
}

fn record(id: String) -> DeliveryRecord {
    let now = Utc::now();
    DeliveryRecord {
        delivery: Delivery {
            id,
            owner: UserAccount::for_owner("owner-1"),
            pickup: Location::new(47.6, -122.3),
            dropoff: Location::new(47.7, -122.2),
            deadline: String::new(),
            expedited: true,
            confirmation_required: ConfirmationRequired::None,
            drone_id: None,
        },
        stage: DeliveryStage::Created,
        package_id: "package-1".to_owned(),
        pickup_location: "47.6,-122.3".to_owned(),
        dropoff_location: "47.7,-122.2".to_owned(),
        pickup_time: None,
        pickup_eta: None,
        delivery_eta: None,
        correlation_id: None,
        created_at: now,
        updated_at: now,
        version: 1,
        ticket: 1,
        confirmation: None,
        cancel_reason: None,
        package_weight: 0.0,
        package_size: None,
        wake_at: None,
        at_risk: None,
    }
}

fn redis_saves(c: &mut Criterion) {
    let rt = runtime();
    let url =
        std::env::var("DD_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let cfg = dronedelivery_engine::adapters::redis::RedisConfig::new(url.clone(), prefix);
    let stores = match rt.block_on(dronedelivery_engine::adapters::redis::connect(&cfg)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("redis/save skipped: {url} unreachable ({e})");
            return;
        }
    };
    let store = stores.deliveries.clone();
    let mut group = c.benchmark_group("redis/save delivery");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one", |b| {
        b.to_async(&rt).iter_batched(
            || {
                let mut r = record(uuid::Uuid::new_v4().to_string());
                let e = r.advance(DeliveryStage::Created, None);
                (r, e)
            },
            |(r, e)| {
                let store = store.clone();
                async move {
                    store.save(&r, Some(&e), None).await.unwrap();
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("64 concurrent", |b| {
        b.to_async(&rt).iter_batched(
            || {
                (0..64)
                    .map(|_| {
                        let mut r = record(uuid::Uuid::new_v4().to_string());
                        let e = r.advance(DeliveryStage::Created, None);
                        (r, e)
                    })
                    .collect::<Vec<_>>()
            },
            |batch| {
                let store = store.clone();
                async move {
                    let saves = batch.iter().map(|(r, e)| store.save(r, Some(e), None));
                    for result in join_all(saves).await {
                        result.unwrap();
                    }
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
    // Leave nothing behind: the keys carry the run's own prefix.
    if let Ok(client) = redis::Client::open(url) {
        if let Ok(mut conn) = client.get_connection() {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", cfg.prefix))
                .query(&mut conn)
                .unwrap_or_default();
            for chunk in keys.chunks(1000) {
                let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
            }
        }
    }
}

criterion_group!(benches, actor_round_trip, workflow_step, redis_saves);
criterion_main!(benches);
