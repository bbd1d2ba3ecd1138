//! The queue contract: one conformance suite that every [`MessageQueue`]
//! adapter must pass, so the workflow can rely on the same peek-lock
//! semantics whichever broker runs underneath.
//!
//! Each check starts from an **empty** queue whose lock duration is
//! `lock_duration` (keep it short, about a second, so expiry is observable).
//! The checks panic with a message on the first violation.
//!
//! Test support: compiled only with the engine's `test-support` feature.

// Test support: a check that fails panics, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use dronedelivery_actors::domain::ownership::Fence;
use dronedelivery_actors::ports::{MessageQueue, Operation, QueueMessage, ReceivedMessage};

/// The partitions read: a queue under test has one partition (queues that
/// are not partitioned ignore it).
const ALL: &[Fence] = &[Fence {
    partition: 0,
    epoch: 1,
}];

fn message(n: usize) -> QueueMessage {
    QueueMessage::new(
        Operation::Delivery,
        &serde_json::json!({"deliveryId": format!("contract-{n}"), "n": n}),
        Some(format!("corr-{n}")),
    )
}

async fn receive_all(
    queue: &dyn MessageQueue,
    want: usize,
    within: Duration,
) -> Vec<ReceivedMessage> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < want && tokio::time::Instant::now() < deadline {
        let batch = queue
            .receive(ALL, want - got.len(), Duration::from_millis(200))
            .await
            .expect("receive failed");
        got.extend(batch);
    }
    got
}

/// Runs every check in order on `queue`.
pub async fn run_all(queue: Arc<dyn MessageQueue>, lock_duration: Duration) {
    send_receive_complete(queue.as_ref()).await;
    abandon_redelivers_with_a_higher_count(queue.as_ref()).await;
    abandon_with_delay_hides_the_message(queue.as_ref()).await;
    expired_locks_redeliver(queue.as_ref(), lock_duration).await;
    renew_keeps_the_lock(queue.as_ref(), lock_duration).await;
    dead_letter_removes(queue.as_ref()).await;
    competing_receivers_get_disjoint_messages(Arc::clone(&queue)).await;
}

/// A sent message is received once, intact (body, operation, correlation
/// id, W3C trace context), with delivery count 1, and is gone once
/// completed.
pub async fn send_receive_complete(queue: &dyn MessageQueue) {
    let mut sent = message(1);
    sent.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    sent.tracestate = Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7".into());
    queue.send(sent.clone()).await.expect("send");
    assert_eq!(
        queue.depth().await.ok().flatten(),
        Some(1),
        "depth after one send"
    );
    let got = receive_all(queue, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "the sent message must be received");
    let r = &got[0];
    assert_eq!(r.message.message_id, sent.message_id);
    assert_eq!(r.message.operation, "delivery");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.message.body).ok(),
        serde_json::from_str::<serde_json::Value>(&sent.body).ok()
    );
    assert_eq!(r.message.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(r.message.traceparent, sent.traceparent, "traceparent");
    assert_eq!(r.message.tracestate, sent.tracestate, "tracestate");
    assert_eq!(r.delivery_count, 1);
    assert_eq!(
        queue.depth().await.ok().flatten(),
        Some(0),
        "a locked message is not waiting"
    );
    queue.complete(&r.lock).await.expect("complete");
    let again = queue
        .receive(ALL, 1, Duration::from_millis(300))
        .await
        .unwrap_or_default();
    assert!(
        again.is_empty(),
        "a completed message must not come back: {again:?}"
    );
}

/// An abandoned message comes back with delivery count 2.
pub async fn abandon_redelivers_with_a_higher_count(queue: &dyn MessageQueue) {
    queue.send(message(2)).await.expect("send");
    let first = receive_all(queue, 1, Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    queue
        .abandon(&first[0].lock, Duration::ZERO)
        .await
        .expect("abandon");
    let second = receive_all(queue, 1, Duration::from_secs(5)).await;
    assert_eq!(second.len(), 1, "an abandoned message must be redelivered");
    assert_eq!(second[0].message.message_id, first[0].message.message_id);
    assert_eq!(second[0].delivery_count, 2);
    queue.complete(&second[0].lock).await.expect("complete");
}

/// An abandon with a delay keeps the message invisible for about that long.
pub async fn abandon_with_delay_hides_the_message(queue: &dyn MessageQueue) {
    queue.send(message(3)).await.expect("send");
    let first = receive_all(queue, 1, Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    let delay = Duration::from_millis(1500);
    queue.abandon(&first[0].lock, delay).await.expect("abandon");
    let early = queue
        .receive(ALL, 1, Duration::from_millis(300))
        .await
        .unwrap_or_default();
    assert!(early.is_empty(), "the message came back before its delay");
    let later = receive_all(queue, 1, Duration::from_secs(10)).await;
    assert_eq!(later.len(), 1, "the delayed message must come back");
    queue.complete(&later[0].lock).await.expect("complete");
}

/// A message whose lock expires is delivered again, and the old lock can no
/// longer settle it.
pub async fn expired_locks_redeliver(queue: &dyn MessageQueue, lock_duration: Duration) {
    queue.send(message(4)).await.expect("send");
    let first = receive_all(queue, 1, Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    let second = receive_all(queue, 1, lock_duration * 4 + Duration::from_secs(5)).await;
    assert_eq!(
        second.len(),
        1,
        "an unsettled message must come back after its lock expires"
    );
    assert_eq!(second[0].message.message_id, first[0].message.message_id);
    assert!(second[0].delivery_count >= 2);
    assert!(
        queue.complete(&first[0].lock).await.is_err(),
        "a lock that expired and was taken over must not settle the message"
    );
    queue.complete(&second[0].lock).await.expect("complete");
}

/// Renewing a lock keeps the message from being redelivered past its
/// original lock duration.
pub async fn renew_keeps_the_lock(queue: &dyn MessageQueue, lock_duration: Duration) {
    queue.send(message(5)).await.expect("send");
    let first = receive_all(queue, 1, Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    let step = lock_duration / 2;
    for _ in 0..4 {
        tokio::time::sleep(step).await;
        queue.renew(&first[0].lock).await.expect("renew");
    }
    let stolen = queue
        .receive(ALL, 1, Duration::from_millis(100))
        .await
        .unwrap_or_default();
    assert!(
        stolen.is_empty(),
        "a renewed lock must not expire: {stolen:?}"
    );
    queue.complete(&first[0].lock).await.expect("complete");
}

/// A dead-lettered message leaves the queue for good.
pub async fn dead_letter_removes(queue: &dyn MessageQueue) {
    queue.send(message(6)).await.expect("send");
    let first = receive_all(queue, 1, Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    queue
        .dead_letter(&first[0].lock, "contract test")
        .await
        .expect("dead_letter");
    let again = queue
        .receive(ALL, 1, Duration::from_millis(300))
        .await
        .unwrap_or_default();
    assert!(
        again.is_empty(),
        "a dead-lettered message must not come back"
    );
    assert_eq!(queue.depth().await.ok().flatten(), Some(0));
}

/// Several concurrent receivers split the messages: each is received by
/// exactly one of them.
pub async fn competing_receivers_get_disjoint_messages(queue: Arc<dyn MessageQueue>) {
    const N: usize = 40;
    for n in 0..N {
        queue.send(message(100 + n)).await.expect("send");
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let q = Arc::clone(&queue);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = q
                    .receive(ALL, 3, Duration::from_millis(300))
                    .await
                    .unwrap_or_default();
                if batch.is_empty() {
                    break;
                }
                for r in batch {
                    q.complete(&r.lock).await.expect("complete");
                    mine.push(r.message.message_id);
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), N, "every message received exactly once");
    assert_eq!(unique.len(), N, "no message received twice");
}
