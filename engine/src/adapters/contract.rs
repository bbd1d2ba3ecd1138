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

use async_trait::async_trait;
use dronedelivery_actors::domain::ownership::Fence;
use dronedelivery_actors::ports::{
    DeadLetter, LockToken, MessageQueue, Operation, QueueMessage, ReceivedMessage, StoreResult,
};

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

/// Runs [`run_all`] on two fresh queues with an expedited lane
/// ([`crate::adapters::lanes`]): on `queue` with normal messages and on
/// `expedited_run` with every message expedited (the lane keeps the
/// peek-lock semantics of its broker), then the checks of the lanes
/// themselves on `queue`. Two queues, because the contract starts from a
/// queue nothing has received from yet.
pub async fn run_all_with_lanes(
    queue: Arc<dyn MessageQueue>,
    expedited_run: Arc<dyn MessageQueue>,
    lock_duration: Duration,
) {
    run_all(Arc::clone(&queue), lock_duration).await;
    run_all(Arc::new(AllExpedited(expedited_run)), lock_duration).await;
    expedited_overtakes_a_backlog(queue.as_ref()).await;
    the_normal_lane_keeps_its_share(queue.as_ref()).await;
}

/// A queue whose messages are all sent expedited, and which checks that
/// each comes back marked so.
struct AllExpedited(Arc<dyn MessageQueue>);

#[async_trait]
impl MessageQueue for AllExpedited {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    fn partitioned(&self) -> bool {
        self.0.partitioned()
    }
    async fn send(&self, mut message: QueueMessage) -> StoreResult<()> {
        message.expedited = true;
        self.0.send(message).await
    }
    async fn receive(
        &self,
        from: &[Fence],
        max: usize,
        wait: Duration,
    ) -> StoreResult<Vec<ReceivedMessage>> {
        let got = self.0.receive(from, max, wait).await?;
        for r in &got {
            assert!(
                r.message.expedited,
                "a message sent expedited came back normal"
            );
        }
        Ok(got)
    }
    async fn complete(&self, lock: &LockToken) -> StoreResult<()> {
        self.0.complete(lock).await
    }
    async fn abandon(&self, lock: &LockToken, delay: Duration) -> StoreResult<()> {
        self.0.abandon(lock, delay).await
    }
    async fn dead_letter(&self, lock: &LockToken, reason: &str) -> StoreResult<()> {
        self.0.dead_letter(lock, reason).await
    }
    async fn renew(&self, lock: &LockToken) -> StoreResult<()> {
        self.0.renew(lock).await
    }
    async fn depth(&self) -> StoreResult<Option<u64>> {
        self.0.depth().await
    }
    async fn dead_letters(&self, max: usize) -> StoreResult<Vec<DeadLetter>> {
        self.0.dead_letters(max).await
    }
    async fn replay_dead_letter(&self, id: &str) -> StoreResult<Option<QueueMessage>> {
        self.0.replay_dead_letter(id).await
    }
}

/// Receives and completes until `want` messages came or `within` passed,
/// `batch` at a time; whether each was expedited, in the order received.
async fn drain_in_order(
    queue: &dyn MessageQueue,
    want: usize,
    batch: usize,
    within: Duration,
) -> Vec<bool> {
    let deadline = tokio::time::Instant::now() + within;
    let mut order = Vec::new();
    while order.len() < want && tokio::time::Instant::now() < deadline {
        let got = queue
            .receive(ALL, batch, Duration::from_millis(200))
            .await
            .expect("receive failed");
        for r in got {
            queue.complete(&r.lock).await.expect("complete");
            order.push(r.message.expedited);
        }
    }
    order
}

/// Sends `normal` normal messages, then `expedited` expedited ones, after
/// a first receive (queues that receive ahead start doing so on it) and
/// gives such queues a moment to fetch what was sent.
async fn send_lanes(queue: &dyn MessageQueue, first: usize, normal: usize, expedited: usize) {
    let _ = queue.receive(ALL, 1, Duration::from_millis(100)).await;
    for n in 0..normal {
        queue.send(message(first + n)).await.expect("send");
    }
    for n in 0..expedited {
        let mut m = message(first + normal + n);
        m.expedited = true;
        queue.send(m).await.expect("send");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Expedited messages sent behind a backlog of normal ones are received
/// within the next two batches, not after the backlog.
pub async fn expedited_overtakes_a_backlog(queue: &dyn MessageQueue) {
    send_lanes(queue, 300, 30, 3).await;
    let order = drain_in_order(queue, 33, 5, Duration::from_secs(20)).await;
    assert_eq!(order.len(), 33, "every message is received");
    let positions: Vec<usize> = (0..order.len()).filter(|&i| order[i]).collect();
    assert_eq!(positions.len(), 3, "three expedited messages: {order:?}");
    assert!(
        positions.iter().all(|&i| i < 10),
        "expedited messages must overtake the backlog: received at {positions:?}"
    );
}

/// A flood of expedited messages does not stop the normal lane: with one
/// message per receive, the normal ones come within their share of the
/// receives, long before the flood is drained.
pub async fn the_normal_lane_keeps_its_share(queue: &dyn MessageQueue) {
    let every = crate::adapters::lanes::NORMAL_FIRST_EVERY as usize;
    send_lanes(queue, 400, 4, 40).await;
    let order = drain_in_order(queue, 44, 1, Duration::from_secs(30)).await;
    assert_eq!(order.len(), 44, "every message is received");
    let normal: Vec<usize> = (0..order.len()).filter(|&i| !order[i]).collect();
    assert_eq!(normal.len(), 4);
    assert!(
        normal.iter().all(|&i| i < 4 * every + every),
        "normal messages must get one receive in {every}: received at {normal:?}"
    );
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
