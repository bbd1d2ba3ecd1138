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
//! them, 16 at a time, as the workflow does. The double runs in the same
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
use dronedelivery_engine::adapters::servicebus::double::{spawn_double, LISTEN_SEND_POLICY};
use dronedelivery_engine::adapters::servicebus::ServiceBusQueue;

const BATCH: usize = 64;
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
    for (name, pooled) in [
        ("pooled connections", true),
        ("a connection per request", false),
    ] {
        let cfg = double.config_with(&format!("bench-{pooled}"), LISTEN_SEND_POLICY);
        let queue = if pooled {
            ServiceBusQueue::new(cfg)
        } else {
            ServiceBusQueue::unpooled(cfg)
        }
        .expect("adapter");
        group.bench_function(format!("send+receive+complete {BATCH} ({name})"), |b| {
            b.to_async(&rt).iter(|| round_trip(&queue))
        });
        rt.block_on(queue.close());
    }
    group.finish();
}

criterion_group!(benches, servicebus);
criterion_main!(benches);
