//! The Redis stores against a real server (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`). Each test works under its own random key
//! prefix, so tests run in parallel on one server, and deletes its keys at
//! the end.

// Test code: a failed precondition should panic, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::redis_url;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use dronedelivery_actors::domain::ownership::{partition_of, Fence, LeaseAnswer, LeaseOp};
use dronedelivery_actors::domain::{
    ConfirmationRequired, Delivery, DeliveryRecord, DeliveryStage, DroneRequest, DroneState,
    Location, PackageSize, TrackingEvent, UserAccount,
};
use dronedelivery_actors::ports::{
    Claimed, DeliveryStore, DroneStore, IdempotencyStore, OwnershipStore, Saved,
};
use dronedelivery_engine::adapters::pool_contract;
use dronedelivery_engine::adapters::redis::{connect, Keys, RedisConfig, RedisStores};

fn fresh_config() -> RedisConfig {
    RedisConfig::new(
        redis_url(),
        format!("test-{}", uuid::Uuid::new_v4().simple()),
    )
}

async fn stores(cfg: &RedisConfig) -> RedisStores {
    connect(cfg)
        .await
        .expect("Redis must be running (REDIS_URL, default redis://127.0.0.1:6379)")
}

async fn raw(cfg: &RedisConfig) -> ::redis::aio::MultiplexedConnection {
    common::raw(&cfg.url).await
}

async fn pttl(cfg: &RedisConfig, key: &str) -> i64 {
    ::redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut raw(cfg).await)
        .await
        .unwrap_or_else(|e| panic!("PTTL {key}: {e}"))
}

async fn cleanup(cfg: &RedisConfig) {
    common::cleanup(&cfg.url, &cfg.prefix).await;
}

fn record(id: &str) -> DeliveryRecord {
    let now = Utc::now();
    DeliveryRecord {
        delivery: Delivery {
            id: id.to_owned(),
            owner: UserAccount::for_owner("owner-1"),
            pickup: Location::new(47.6, -122.3),
            dropoff: Location::new(47.7, -122.2),
            deadline: "soon".to_owned(),
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
        correlation_id: Some("corr-1".to_owned()),
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

fn created_event(r: &DeliveryRecord) -> TrackingEvent {
    TrackingEvent {
        delivery_id: r.delivery.id.clone(),
        stage: r.stage,
        location: None,
        at: r.created_at,
        at_risk: None,
    }
}

async fn save(store: &dyn DeliveryStore, r: &DeliveryRecord, e: Option<&TrackingEvent>) -> Saved {
    store
        .save(r, e, None)
        .await
        .unwrap_or_else(|err| panic!("save {} v{}: {err}", r.delivery.id, r.version))
}

async fn get(store: &dyn DeliveryStore, id: &str) -> Option<DeliveryRecord> {
    store
        .get(id)
        .await
        .unwrap_or_else(|e| panic!("get {id}: {e}"))
}

async fn events(store: &dyn DeliveryStore, id: &str) -> Vec<TrackingEvent> {
    store
        .events(id)
        .await
        .unwrap_or_else(|e| panic!("events {id}: {e}"))
}

async fn awaiting(store: &dyn DeliveryStore) -> Vec<String> {
    store.awaiting_drone().await.expect("awaiting_drone")
}

#[tokio::test]
async fn save_get_and_events_round_trip() {
    let cfg = fresh_config();
    let s = stores(&cfg).await;
    let d = s.deliveries.as_ref();
    assert_eq!(d.backend(), "redis");
    d.ping().await.expect("ping");
    assert_eq!(get(d, "missing").await, None);
    assert!(events(d, "missing").await.is_empty());

    let mut r = record("d1");
    let first = created_event(&r);
    save(d, &r, Some(&first)).await;
    assert_eq!(get(d, "d1").await.as_ref(), Some(&r));
    assert_eq!(events(d, "d1").await, vec![first.clone()]);

    let second = r.advance(DeliveryStage::HeadedToPickup, Some(Location::new(1.0, 2.0)));
    save(d, &r, Some(&second)).await;
    assert_eq!(
        get(d, "d1").await.map(|x| x.stage),
        Some(DeliveryStage::HeadedToPickup)
    );
    assert_eq!(events(d, "d1").await, vec![first, second]);

    // A save without an event leaves the log alone.
    r.pickup_eta = Some(Utc::now());
    save(d, &r, None).await;
    assert_eq!(get(d, "d1").await.as_ref(), Some(&r));
    assert_eq!(events(d, "d1").await.len(), 2);

    // Live records never expire.
    let keys = Keys::new(&cfg.prefix);
    assert_eq!(pttl(&cfg, &keys.delivery("d1")).await, -1);
    assert_eq!(pttl(&cfg, &keys.delivery_events("d1")).await, -1);
    cleanup(&cfg).await;
}

#[tokio::test]
async fn an_older_version_never_overwrites_a_newer_one() {
    let cfg = fresh_config();
    let s = stores(&cfg).await;
    let d = s.deliveries.as_ref();
    let v1 = record("d1");
    let mut v3 = v1.clone();
    let _ = v3.advance(DeliveryStage::HeadedToPickup, None);
    let e3 = v3.advance(DeliveryStage::HeadedToDropoff, None);
    assert_eq!(v3.version, 3);
    assert_eq!(save(d, &v3, Some(&e3)).await, Saved::Written);

    // A stale write (late retry of version 1) is refused, event included,
    // and the writer is told.
    assert_eq!(save(d, &v1, Some(&created_event(&v1))).await, Saved::Stale);
    assert_eq!(get(d, "d1").await.as_ref(), Some(&v3));
    assert_eq!(events(d, "d1").await, vec![e3.clone()]);
    assert!(
        awaiting(d).await.is_empty(),
        "the stale Created stage must not count"
    );

    // The same version is written again (one record, several events).
    let extra = TrackingEvent {
        location: Some(Location::new(3.0, 4.0)),
        ..e3.clone()
    };
    assert_eq!(save(d, &v3, Some(&extra)).await, Saved::Written);
    assert_eq!(events(d, "d1").await, vec![e3, extra]);
    cleanup(&cfg).await;
}

/// A save whose answer was lost (Redis killed after applying it, before
/// replying) is retried by the delivery actor: the retry must not append its
/// event a second time. Seen as doubled `Completed` and `HeadedToPickup`
/// events when Redis was killed mid-run (engine/tests/faults_services.rs,
/// scenario 3).
#[tokio::test]
async fn a_retried_save_appends_its_event_once() {
    let cfg = fresh_config();
    let s = stores(&cfg).await;
    let d = s.deliveries.as_ref();

    // A flush retried: the same record and the same event.
    let mut r = record("d1");
    let created = created_event(&r);
    save(d, &r, Some(&created)).await;
    let picked = r.advance(DeliveryStage::HeadedToPickup, Some(Location::new(1.0, 2.0)));
    let done = r.advance(DeliveryStage::Completed, Some(Location::new(3.0, 4.0)));
    save(d, &r, Some(&picked)).await;
    save(d, &r, Some(&done)).await;
    save(d, &r, Some(&done)).await;
    assert_eq!(events(d, "d1").await, vec![created.clone(), picked, done]);
    assert_eq!(get(d, "d1").await.as_ref(), Some(&r));

    // A flush retried after the record moved on: the actor stored the
    // pickup, lost the answer, and a later report advanced the record
    // before the retry, which carries the newer record and the same event.
    let mut r = record("d4");
    let created = created_event(&r);
    save(d, &r, Some(&created)).await;
    let picked = r.advance(DeliveryStage::HeadedToPickup, Some(Location::new(1.0, 2.0)));
    save(d, &r, Some(&picked)).await;
    let dropping = r.advance(
        DeliveryStage::HeadedToDropoff,
        Some(Location::new(5.0, 6.0)),
    );
    save(d, &r, Some(&picked)).await;
    save(d, &r, Some(&dropping)).await;
    assert_eq!(events(d, "d4").await, vec![created, picked, dropping]);

    // A create repeated after its first write's answer was lost: the same
    // version and stage, a later time. The record is rewritten, the event
    // log keeps the first event.
    let first = record("d2");
    save(d, &first, Some(&created_event(&first))).await;
    let mut again = record("d2");
    again.created_at = first.created_at + chrono::Duration::milliseconds(40);
    again.updated_at = again.created_at;
    save(d, &again, Some(&created_event(&again))).await;
    assert_eq!(events(d, "d2").await, vec![created_event(&first)]);
    assert_eq!(get(d, "d2").await.as_ref(), Some(&again));

    // The same stage entered again at a newer version is a new event.
    let mut r = record("d3");
    let e1 = r.advance(DeliveryStage::Rescheduled, None);
    save(d, &r, Some(&e1)).await;
    let e2 = r.advance(DeliveryStage::Rescheduled, None);
    save(d, &r, Some(&e2)).await;
    assert_eq!(events(d, "d3").await, vec![e1, e2]);
    cleanup(&cfg).await;
}

#[tokio::test]
async fn the_awaiting_drone_set_follows_the_stage() {
    let cfg = fresh_config();
    let s = stores(&cfg).await;
    let d = s.deliveries.as_ref();
    let mut a = record("a");
    let mut b = record("b");
    save(d, &a, None).await;
    save(d, &b, None).await;
    assert_eq!(awaiting(d).await, vec!["a".to_owned(), "b".to_owned()]);

    let e = a.advance(DeliveryStage::HeadedToPickup, None);
    save(d, &a, Some(&e)).await;
    assert_eq!(awaiting(d).await, vec!["b".to_owned()]);

    let e = a.advance(DeliveryStage::Rescheduled, None);
    save(d, &a, Some(&e)).await;
    assert_eq!(awaiting(d).await, vec!["a".to_owned(), "b".to_owned()]);

    let e = b.advance(DeliveryStage::Cancelled, None);
    save(d, &b, Some(&e)).await;
    let e = a.advance(DeliveryStage::HeadedToDropoff, None);
    save(d, &a, Some(&e)).await;
    assert!(awaiting(d).await.is_empty());
    cleanup(&cfg).await;
}

#[tokio::test]
async fn a_terminal_delivery_expires_after_the_retention_period() {
    let cfg = fresh_config();
    let s = stores(&cfg).await;
    let d = s.deliveries.as_ref();
    let keys = Keys::new(&cfg.prefix);
    let mut r = record("d1");
    save(d, &r, Some(&created_event(&r))).await;
    let done = r.advance(DeliveryStage::Completed, None);
    save(d, &r, Some(&done)).await;

    let retention = i64::try_from(cfg.retention.as_millis()).unwrap_or(i64::MAX);
    for key in [keys.delivery("d1"), keys.delivery_events("d1")] {
        let ttl = pttl(&cfg, &key).await;
        assert!(
            ttl > 0 && ttl <= retention,
            "{key}: TTL {ttl} ms, want (0, {retention}]"
        );
        assert!(
            ttl > retention - 60_000,
            "{key}: TTL {ttl} ms is far below the retention"
        );
    }
    // Logically deleted: still readable.
    assert_eq!(
        get(d, "d1").await.map(|x| x.stage),
        Some(DeliveryStage::Completed)
    );
    assert_eq!(events(d, "d1").await.len(), 2);

    // With a short retention it really goes away, record and events.
    let short = RedisConfig {
        retention: Duration::from_millis(300),
        ..cfg.clone()
    };
    let s2 = stores(&short).await;
    let mut c = record("d2");
    save(s2.deliveries.as_ref(), &c, Some(&created_event(&c))).await;
    let cancelled = c.advance(DeliveryStage::Cancelled, None);
    save(s2.deliveries.as_ref(), &c, Some(&cancelled)).await;
    assert!(get(s2.deliveries.as_ref(), "d2").await.is_some());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(get(s2.deliveries.as_ref(), "d2").await, None);
    assert!(events(s2.deliveries.as_ref(), "d2").await.is_empty());
    cleanup(&cfg).await;
}

#[tokio::test]
async fn the_control_plane_passes_the_contract() {
    let cfg = fresh_config();
    let s = stores(&cfg).await;
    assert_eq!(
        dronedelivery_actors::ports::ControlPlane::backend(s.control.as_ref()),
        "redis"
    );
    dronedelivery_engine::adapters::control_contract::run_all(s.control.clone()).await;
    cleanup(&cfg).await;
}

#[tokio::test]
async fn the_drone_pool_passes_the_contract() {
    let cfg = fresh_config();
    let s = stores(&cfg).await;
    assert_eq!(s.drones.backend(), "redis");
    s.drones.ping().await.expect("ping");
    pool_contract::run_all(s.drones.clone()).await;
    cleanup(&cfg).await;
}

#[tokio::test]
async fn a_drone_is_claimed_and_flown_only_under_its_delivery_s_current_lease() {
    let cfg = fresh_config();
    let s = stores(&cfg).await;
    let (drones, leases) = (s.drones.as_ref(), s.ownership.as_ref());
    let ttl = Duration::from_secs(30);
    let depot = Location::new(47.6, -122.3);
    drones
        .seed(&[DroneState::parked("drone-0001".into(), depot)])
        .await
        .expect("seed");
    let job = DroneRequest {
        delivery_id: "d-1".into(),
        ticket: 1,
        pickup: Location::new(47.61, -122.3),
        dropoff: Location::new(47.62, -122.3),
        expedited: false,
        deadline: None,
        package_size: PackageSize::Small,
        package_weight: 1.0,
    };
    let partition = partition_of(&job.delivery_id, 16);
    let LeaseAnswer::Held(old) = leases
        .lease(partition, "old", LeaseOp::Acquire, ttl)
        .await
        .expect("lease")
    else {
        panic!("a free partition is granted");
    };
    let old = Fence {
        partition,
        epoch: old.epoch,
    };
    let Claimed::Drone(drone) = drones
        .claim(&job, Some(old), Utc::now())
        .await
        .expect("claim")
    else {
        panic!("the free drone is claimed");
    };
    assert!(drones.put(&drone, Some(old)).await.expect("put"));
    // The partition moves to another engine: the old holder's claims and
    // writes are refused, the new holder's go through.
    leases
        .lease(partition, "old", LeaseOp::Release(old.epoch), ttl)
        .await
        .expect("release");
    let LeaseAnswer::Held(new) = leases
        .lease(partition, "new", LeaseOp::Acquire, ttl)
        .await
        .expect("lease")
    else {
        panic!("a released partition is granted");
    };
    let new = Fence {
        partition,
        epoch: new.epoch,
    };
    assert_eq!(
        drones
            .claim(&job, Some(old), Utc::now())
            .await
            .expect("claim"),
        Claimed::Fenced
    );
    let mut late = (*drone).clone();
    late.position = Location::new(0.0, 0.0);
    assert!(
        !drones.put(&late, Some(old)).await.expect("put"),
        "a stale holder moved the drone"
    );
    assert!(
        !drones
            .release(&late.released(Utc::now()), "d-1", Some(old))
            .await
            .expect("release"),
        "a stale holder released the drone"
    );
    assert_eq!(
        drones.get("drone-0001").await.expect("get"),
        Some((*drone).clone())
    );
    // The new holder adopts the same job: a repeated claim finds it.
    let Claimed::Drone(adopted) = drones
        .claim(&job, Some(new), Utc::now())
        .await
        .expect("claim")
    else {
        panic!("the delivery's drone is found again");
    };
    assert_eq!(
        (adopted.id.as_str(), adopted.claim),
        ("drone-0001", drone.claim)
    );
    assert!(drones.put(&adopted, Some(new)).await.expect("put"));
    assert!(drones
        .release(&adopted.released(Utc::now()), "d-1", Some(new))
        .await
        .expect("release"));
    assert_eq!(drones.counts().await.expect("counts"), (1, 1));
    cleanup(&cfg).await;
}

#[tokio::test]
async fn idempotency_keeps_the_first_answer() {
    let cfg = fresh_config();
    let s = stores(&cfg).await;
    let store = s.idempotency.as_ref();
    assert_eq!(store.backend(), "redis");
    let ttl = Duration::from_secs(60);
    let put = |key: &'static str, value: &'static str, ttl: Duration| async move {
        store
            .put_if_absent(key, value, ttl)
            .await
            .unwrap_or_else(|e| panic!("put_if_absent {key}: {e}"))
    };
    assert_eq!(put("k1", "first", ttl).await, None);
    assert_eq!(put("k1", "second", ttl).await, Some("first".to_owned()));
    assert_eq!(put("k2", "other", ttl).await, None);

    // Keys expire.
    assert_eq!(put("short", "a", Duration::from_millis(100)).await, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(put("short", "b", ttl).await, None);
    assert_eq!(put("short", "c", ttl).await, Some("b".to_owned()));
    cleanup(&cfg).await;
}

#[tokio::test]
async fn concurrent_idempotent_callers_have_exactly_one_winner() {
    let cfg = fresh_config();
    let s = stores(&cfg).await;
    let store = Arc::clone(&s.idempotency);
    let mut tasks = Vec::new();
    for n in 0..10 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let value = format!("answer-{n}");
            let got = store
                .put_if_absent("same-key", &value, Duration::from_secs(60))
                .await
                .expect("put_if_absent");
            (value, got)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task"));
    }
    let winners: Vec<&String> = results
        .iter()
        .filter(|(_, got)| got.is_none())
        .map(|(value, _)| value)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one caller stores its answer: {results:?}"
    );
    let seen: HashSet<&String> = results.iter().filter_map(|(_, got)| got.as_ref()).collect();
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![winners[0]],
        "every other caller gets the winner's answer"
    );
    cleanup(&cfg).await;
}
