//! The Service Bus adapter's throughput against the local double of the
//! REST protocol: messages per second sent, received and completed, with
//! the adapter's pooled HTTP client (connections kept alive) and with
//! azure_core's own client (a new connection per request), in one run.
//!
//! ```sh
//! cargo bench -p dronedelivery-benches --bench servicebus -- --warm-up-time 1 --measurement-time 5
//! ```
//!
//! One iteration sends 64 messages concurrently, then receives and completes
//! them, 16 at a time, as the workflow does. A second group measures sends
//! alone, 256 concurrent sends as the gateway makes them under load, with
//! batch sends on (the default: concurrent sends to one queue share one
//! request) and off (`--send-batch-max 1`: a request per message); the
//! queue is emptied between iterations, outside the measured time. The double runs in the same
//! process (plain HTTP on loopback), so the figures show the adapter's and
//! the protocol's cost, not Azure's latency; the ratio between the two
//! clients is what connection reuse saves (more with TLS and a real
//! network, where a handshake costs round trips).

// Bench set-up: a failure should stop the run with its location; the
// criterion macros generate undocumented items.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dronedelivery_actors::domain::ownership::Fence;
use dronedelivery_actors::ports::{MessageQueue, Operation, QueueMessage};
use dronedelivery_engine::adapters::batch::BatchConfig;
use dronedelivery_engine::adapters::servicebus::double::{
    spawn_double, DoubleHandle, LISTEN_SEND_POLICY,
};
use dronedelivery_engine::adapters::servicebus::ServiceBusQueue;

const BATCH: usize = 64;
/// Concurrent sends of the send-only group.
const SENDS: usize = 256;
const ALL: &[Fence] = &[Fence {
    partition: 0,
    epoch: 1,
}];

async fn round_trip(queue: &Arc<ServiceBusQueue>) {
    let sends = (0..BATCH).map(|i| {
        let queue = Arc::clone(queue);
        tokio::spawn(async move {
            let message = QueueMessage::new(
                Operation::Delivery,
                &serde_json::json!({"deliveryId": format!("bench-{i}")}),
                None,
            );
            queue.send(message).await.expect("send");
        })
    });
    for send in sends.collect::<Vec<_>>() {
        send.await.expect("send task");
    }
    let mut done = 0;
    while done < BATCH {
        let got = queue
            .receive(ALL, 16, Duration::from_secs(5))
            .await
            .expect("receive");
        let completes: Vec<_> = got
            .into_iter()
            .map(|r| {
                let queue = Arc::clone(queue);
                tokio::spawn(async move { queue.complete(&r.lock).await.expect("complete") })
            })
            .collect();
        done += completes.len();
        for c in completes {
            c.await.expect("complete task");
        }
    }
}

/// Sends `SENDS` messages concurrently to `name`; the time of the sends
/// alone.
async fn sends(queue: &Arc<ServiceBusQueue>, double: &DoubleHandle, name: &str) -> Duration {
    let start = std::time::Instant::now();
    let sends: Vec<_> = (0..SENDS)
        .map(|i| {
            let queue = Arc::clone(queue);
            tokio::spawn(async move {
                let message = QueueMessage::new(
                    Operation::Delivery,
                    &serde_json::json!({"deliveryId": format!("bench-{i}")}),
                    Some(format!("corr-{i}")),
                );
                queue.send(message).await.expect("send");
            })
        })
        .collect();
    for send in sends {
        send.await.expect("send task");
    }
    let took = start.elapsed();
    assert_eq!(double.purge(name), SENDS, "every send is in the queue");
    took
}

fn servicebus(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_addr, double) = rt.block_on(spawn_double(Duration::from_secs(30), 10));
    let mut group = c.benchmark_group("servicebus");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    for (name, pooled, batch) in [
        ("pooled connections, batch sends", true, true),
        ("pooled connections", true, false),
        ("a connection per request", false, false),
    ] {
        let cfg = double.config_with(&format!("bench-{pooled}-{batch}"), LISTEN_SEND_POLICY);
        let queue = match (pooled, batch) {
            (true, true) => ServiceBusQueue::new(cfg),
            (true, false) => ServiceBusQueue::with_send_batch(cfg, BatchConfig::unbatched()),
            (false, _) => ServiceBusQueue::unpooled(cfg),
        }
        .expect("adapter");
        group.bench_function(format!("send+receive+complete {BATCH} ({name})"), |b| {
            b.to_async(&rt).iter(|| round_trip(&queue))
        });
        rt.block_on(queue.close());
    }
    group.finish();

    let mut group = c.benchmark_group("servicebus send");
    group.throughput(Throughput::Elements(SENDS as u64));
    group.sample_size(20);
    for (name, batch) in [
        ("batch sends", ServiceBusQueue::default_send_batch()),
        ("a request per message", BatchConfig::unbatched()),
    ] {
        let queue_name = format!("send-{}", batch.max);
        let queue = ServiceBusQueue::with_send_batch(
            double.config_with(&queue_name, LISTEN_SEND_POLICY),
            batch,
        )
        .expect("adapter");
        group.bench_function(format!("{SENDS} concurrent sends ({name})"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let queue = Arc::clone(&queue);
                let double = &double;
                let queue_name = queue_name.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += sends(&queue, double, &queue_name).await;
                    }
                    total
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, servicebus);
criterion_main!(benches);
