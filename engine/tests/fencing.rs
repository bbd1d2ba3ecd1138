//! Fenced writes in a real Redis (`REDIS_URL`): two engines that both
//! believe they own a delivery's partition, one with a lease taken over
//! since. Whatever the interleaving of their writes, the store accepts only
//! the current owner's; the stale owner's are refused with `Fenced` and
//! change nothing.

// Test code: a failed precondition should panic, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use chrono::Utc;
use dronedelivery_actors::domain::lifecycle::{self, Command, NewDelivery, Rules};
use dronedelivery_actors::domain::ownership::{partition_of, Fence, LeaseAnswer, LeaseOp};
use dronedelivery_actors::domain::{DeliveryRecord, DeliveryRequest, DeliveryStage, ServiceArea};
use dronedelivery_actors::ports::{DeliveryStore, OwnershipStore, Saved};
use dronedelivery_engine::adapters::redis::{connect, RedisConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const PARTITIONS: u32 = 16;

fn created(id: &str) -> DeliveryRecord {
    let request = DeliveryRequest::from_message(&serde_json::json!({
        "deliveryId": id,
        "ownerId": "owner",
        "pickupLocation": "47.60,-122.30",
        "dropoffLocation": "47.65,-122.20",
        "deadline": "",
        "confirmationRequired": "None",
        "packageInfo": {"packageId": "p", "size": "Small", "weight": 1.0},
    }))
    .unwrap();
    let area = ServiceArea::default();
    let command = Command::Create(Box::new(NewDelivery {
        request,
        correlation_id: None,
    }));
    let rules = Rules {
        area: &area,
        drone_speed_mps: 15.0,
        pickup_lead: chrono::Duration::minutes(5),
    };
    lifecycle::apply(None, command, rules, Utc::now())
        .unwrap()
        .change
        .unwrap()
        .record
}

/// Which engine writes next, and whether it writes the next version of
/// its own copy or repeats its last one.
#[derive(Debug, Clone, Copy)]
struct Write {
    stale_writer: bool,
}

#[test]
fn a_stale_owner_is_refused_in_every_interleaving() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    let writes = proptest::collection::vec(
        any::<bool>().prop_map(|stale_writer| Write { stale_writer }),
        1..24,
    );
    runner
        .run(&writes, |writes| {
            rt.block_on(async {
                let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
                let stores = connect(&RedisConfig::new(common::redis_url(), prefix.as_str()))
                    .await
                    .expect("Redis must be running (REDIS_URL, default redis://127.0.0.1:6379)");
                let id = uuid::Uuid::new_v4().to_string();
                let partition = partition_of(&id, PARTITIONS);
                let short = Duration::from_millis(50);
                let long = Duration::from_secs(60);
                // "old" owns the partition, its lease lapses (a long pause),
                // "new" takes over with a newer epoch.
                let LeaseAnswer::Held(old) = stores
                    .ownership
                    .lease(partition, "old", LeaseOp::Acquire, short)
                    .await
                    .unwrap()
                else {
                    panic!("free partition");
                };
                let base = created(&id);
                let old_fence = Fence {
                    partition,
                    epoch: old.epoch,
                };
                prop_assert_eq!(
                    stores
                        .deliveries
                        .save(&base, None, Some(old_fence))
                        .await
                        .unwrap(),
                    Saved::Written
                );
                tokio::time::sleep(Duration::from_millis(120)).await;
                let LeaseAnswer::Held(new) = stores
                    .ownership
                    .lease(partition, "new", LeaseOp::Acquire, long)
                    .await
                    .unwrap()
                else {
                    panic!("lapsed lease taken over");
                };
                let new_fence = Fence {
                    partition,
                    epoch: new.epoch,
                };
                // Both go on from the stored record, each with its own copy.
                let mut old_copy = base.clone();
                let mut new_copy = base.clone();
                let mut accepted = base.clone();
                for w in &writes {
                    if w.stale_writer {
                        // The stale owner's writes are refused, whatever
                        // version it writes, and change nothing.
                        let _ = old_copy.advance(DeliveryStage::Cancelled, None);
                        let saved = stores
                            .deliveries
                            .save(&old_copy, None, Some(old_fence))
                            .await
                            .unwrap();
                        prop_assert_eq!(saved, Saved::Fenced);
                    } else {
                        let stage = if new_copy.stage == DeliveryStage::Created {
                            DeliveryStage::HeadedToPickup
                        } else {
                            DeliveryStage::HeadedToDropoff
                        };
                        let event = new_copy.advance(stage, None);
                        let saved = stores
                            .deliveries
                            .save(&new_copy, Some(&event), Some(new_fence))
                            .await
                            .unwrap();
                        prop_assert_eq!(saved, Saved::Written);
                        accepted = new_copy.clone();
                    }
                    let stored = stores.deliveries.get(&id).await.unwrap();
                    prop_assert_eq!(stored.as_ref(), Some(&accepted));
                }
                // Without a fence a write is checked only by version: the
                // stale copy's higher version would win. That is why every
                // owner's write carries its fence.
                common::cleanup(&common::redis_url(), &prefix).await;
                Ok(())
            })
        })
        .unwrap();
}
