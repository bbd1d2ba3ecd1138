//! Partition leases and membership in a real Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`): the Lua scripts must decide exactly as the
//! domain's lease rules do, and expiry runs on the server's clock.

// Test code: a failed precondition should panic, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use dronedelivery_actors::domain::ownership::{
    Lease, LeaseAnswer, LeaseOp, LeaseRules, ModelStore, PartitionId,
};
use dronedelivery_actors::ports::OwnershipStore;
use dronedelivery_engine::adapters::redis::{connect, RedisConfig, RedisStores};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const PARTITIONS: u32 = 4;
const ENGINES: [&str; 3] = ["a", "b", "c"];

async fn stores(prefix: &str) -> RedisStores {
    connect(&RedisConfig::new(common::redis_url(), prefix))
        .await
        .expect("Redis must be running (REDIS_URL, default redis://127.0.0.1:6379)")
}

fn prefix() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

/// One step of a case: an engine, a partition, an operation; renew and
/// release name an epoch by index into the epochs granted so far (or one
/// never granted).
#[derive(Debug, Clone)]
enum Step {
    Acquire(usize, PartitionId),
    Renew(usize, PartitionId, usize),
    Release(usize, PartitionId, usize),
}

fn step() -> impl Strategy<Value = Step> {
    let engine = 0..ENGINES.len();
    let partition = 0..PARTITIONS;
    prop_oneof![
        (engine.clone(), partition.clone()).prop_map(|(e, p)| Step::Acquire(e, p)),
        (engine.clone(), partition.clone(), 0usize..8).prop_map(|(e, p, x)| Step::Renew(e, p, x)),
        (engine, partition, 0usize..8).prop_map(|(e, p, x)| Step::Release(e, p, x)),
    ]
}

/// The answer without its expiry time (the two clocks differ).
fn shape(answer: &LeaseAnswer) -> String {
    let lease = |l: &Lease| format!("{}@{}", l.owner, l.epoch);
    match answer {
        LeaseAnswer::Held(l) => format!("held {}", lease(l)),
        LeaseAnswer::Taken(l) => format!("taken {}", lease(l)),
        LeaseAnswer::Lost => "lost".into(),
        LeaseAnswer::Released => "released".into(),
    }
}

#[test]
fn the_lease_script_decides_as_the_lease_rules() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    // A lease lasts far longer than a case: expiry is the next test's job.
    let ttl = Duration::from_secs(3600);
    runner
        .run(&proptest::collection::vec(step(), 1..40), |steps| {
            rt.block_on(async {
                let prefix = prefix();
                let redis = stores(&prefix).await.ownership;
                let mut model = ModelStore::new(
                    PARTITIONS,
                    LeaseRules {
                        ttl_ms: ttl.as_millis() as u64,
                    },
                );
                // Epochs granted so far, in order (both sides number them
                // 1, 2, … from a fresh counter).
                let mut epochs: Vec<u64> = Vec::new();
                let epoch_at = |epochs: &[u64], i: usize| epochs.get(i).copied().unwrap_or(999);
                for (n, s) in steps.iter().enumerate() {
                    let (engine, partition, op) = match *s {
                        Step::Acquire(e, p) => (e, p, LeaseOp::Acquire),
                        Step::Renew(e, p, x) => (e, p, LeaseOp::Renew(epoch_at(&epochs, x))),
                        Step::Release(e, p, x) => (e, p, LeaseOp::Release(epoch_at(&epochs, x))),
                    };
                    let engine = ENGINES[engine];
                    let want = model.lease(partition, engine, op, 0);
                    let got = redis.lease(partition, engine, op, ttl).await.unwrap();
                    prop_assert_eq!(shape(&got), shape(&want), "step {} of {:?}", n, steps);
                    if let LeaseAnswer::Held(l) = &got {
                        if !epochs.contains(&l.epoch) {
                            epochs.push(l.epoch);
                        }
                    }
                }
                // The snapshot agrees with the model too.
                let (leases, now) = redis.leases(PARTITIONS).await.unwrap();
                prop_assert!(now > 0);
                let owners = |ls: &[Option<Lease>]| -> Vec<Option<(String, u64)>> {
                    ls.iter()
                        .map(|l| l.as_ref().map(|l| (l.owner.clone(), l.epoch)))
                        .collect()
                };
                prop_assert_eq!(owners(&leases), owners(model.leases()));
                common::cleanup(&common::redis_url(), &prefix).await;
                Ok(())
            })
        })
        .unwrap();
}

#[tokio::test]
async fn a_lapsed_lease_is_taken_over_with_a_newer_epoch_on_the_servers_clock() {
    let prefix = prefix();
    let redis = stores(&prefix).await.ownership;
    let short = Duration::from_millis(150);
    let long = Duration::from_secs(60);
    let LeaseAnswer::Held(first) = redis.lease(0, "a", LeaseOp::Acquire, short).await.unwrap()
    else {
        panic!("a free partition is granted");
    };
    // Live: another engine is refused and told who holds it.
    let taken = redis.lease(0, "b", LeaseOp::Acquire, long).await.unwrap();
    assert_eq!(taken, LeaseAnswer::Taken(first.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (leases, now) = redis.leases(1).await.unwrap();
    assert!(
        !leases[0].as_ref().unwrap().is_live(now),
        "lapsed on the server's clock"
    );
    let LeaseAnswer::Held(second) = redis.lease(0, "b", LeaseOp::Acquire, long).await.unwrap()
    else {
        panic!("a lapsed lease is taken over");
    };
    assert_eq!(second.owner, "b");
    assert!(second.epoch > first.epoch);
    // The old holder can neither renew nor release it any more.
    let renew = redis
        .lease(0, "a", LeaseOp::Renew(first.epoch), long)
        .await
        .unwrap();
    assert_eq!(renew, LeaseAnswer::Lost);
    let release = redis
        .lease(0, "a", LeaseOp::Release(first.epoch), long)
        .await
        .unwrap();
    assert_eq!(release, LeaseAnswer::Lost);
    // The holder hands it over; the next grant is newer still.
    let release = redis
        .lease(0, "b", LeaseOp::Release(second.epoch), long)
        .await
        .unwrap();
    assert_eq!(release, LeaseAnswer::Released);
    let LeaseAnswer::Held(third) = redis.lease(0, "a", LeaseOp::Acquire, long).await.unwrap()
    else {
        panic!("a released partition is granted");
    };
    assert!(third.epoch > second.epoch);
    common::cleanup(&common::redis_url(), &prefix).await;
}

#[tokio::test]
async fn membership_lapses_on_the_servers_clock_and_leave_is_immediate() {
    let prefix = prefix();
    let redis = stores(&prefix).await.ownership;
    let live = redis
        .heartbeat("b", Duration::from_millis(150))
        .await
        .unwrap();
    assert_eq!(live, ["b"]);
    let live = redis.heartbeat("a", Duration::from_secs(60)).await.unwrap();
    assert_eq!(live, ["a", "b"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let live = redis.heartbeat("c", Duration::from_secs(60)).await.unwrap();
    assert_eq!(live, ["a", "c"], "b stopped heartbeating");
    redis.leave("a").await.unwrap();
    let live = redis.heartbeat("c", Duration::from_secs(60)).await.unwrap();
    assert_eq!(live, ["c"]);
    common::cleanup(&common::redis_url(), &prefix).await;
}
