//! Micro-benchmarks of the hot paths. `cargo bench -p dronedelivery-benches`.
#![allow(missing_docs)]
// Benchmark code: a failed setup step should panic, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use dronedelivery_actors::domain::geo::resolve_location;
use dronedelivery_actors::domain::{DeliveryRequest, ServiceArea};
use dronedelivery_actors::ports::{MessageQueue, Operation, QueueMessage};
use dronedelivery_benches::ri_example;
use dronedelivery_engine::memory::MemoryQueue;

fn ingestion(c: &mut Criterion) {
    let raw = ri_example().to_string();
    c.bench_function("ingest/parse+validate+serialize", |b| {
        b.iter(|| {
            let value: serde_json::Value = serde_json::from_str(black_box(&raw)).unwrap();
            let req = DeliveryRequest::from_external(
                &value,
                "00000000-0000-0000-0000-000000000000".into(),
            );
            let req = req.unwrap();
            let msg = QueueMessage::with_body(Operation::Delivery, req.message_body(), None);
            black_box((req.external_body(), msg))
        })
    });
    // The same through `serde_json::Value` for both outputs, as the gateway
    // did before (kept to show the difference).
    c.bench_function("ingest/parse+validate+serialize via Value", |b| {
        b.iter(|| {
            let value: serde_json::Value = serde_json::from_str(black_box(&raw)).unwrap();
            let req = DeliveryRequest::from_external(
                &value,
                "00000000-0000-0000-0000-000000000000".into(),
            );
            let req = req.unwrap();
            let msg = QueueMessage::new(Operation::Delivery, &req.to_message_json(), None);
            black_box((req.to_external_json(), msg))
        })
    });
}

fn geo(c: &mut Criterion) {
    let area = ServiceArea::default();
    c.bench_function("geo/resolve named location", |b| {
        b.iter(|| resolve_location(black_box("221B Baker Street"), &area))
    });
    c.bench_function("geo/resolve coordinates", |b| {
        b.iter(|| resolve_location(black_box("0,47.6062,-122.3321"), &area))
    });
}

fn queue(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let q = MemoryQueue::new(Duration::from_secs(60), 1_000_000);
    let body = ri_example();
    c.bench_function("queue/in-process send+receive+complete", |b| {
        b.to_async(&rt).iter(|| async {
            q.send(QueueMessage::new(Operation::Delivery, &body, None))
                .await
                .unwrap();
            let got = q.receive(&[], 1, Duration::ZERO).await.unwrap();
            for m in &got {
                q.complete(&m.lock).await.unwrap();
            }
            black_box(got.len())
        })
    });
}

criterion_group!(benches, ingestion, geo, queue);
criterion_main!(benches);
