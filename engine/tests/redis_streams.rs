//! The Redis Streams queue against a real server (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`): the queue contract every adapter passes, a
//! consumer that dies with messages in flight, and the wire format. Each
//! test works under its own random key prefix and deletes its keys at the
//! end.

// Test code: a failed precondition should panic, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::redis_url;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use dronedelivery_actors::domain::ownership::{partition_of, Fence};
use dronedelivery_actors::ports::{MessageQueue, Operation, QueueMessage, ReceivedMessage};
use dronedelivery_engine::adapters::contract;
use dronedelivery_engine::adapters::lanes::Lanes;
use dronedelivery_engine::adapters::redis::{Keys, RedisStreamsQueue, StreamsConfig};

/// The one partition of a queue with the default configuration.
const ALL: &[Fence] = &[Fence {
    partition: 0,
    epoch: 1,
}];

fn fresh_config(lock: Duration) -> StreamsConfig {
    let mut cfg = StreamsConfig::new(
        redis_url(),
        format!("test-{}", uuid::Uuid::new_v4().simple()),
    );
    cfg.lock_duration = lock;
    cfg
}

async fn queue(cfg: &StreamsConfig) -> Arc<RedisStreamsQueue> {
    RedisStreamsQueue::connect(cfg.clone())
        .await
        .expect("Redis must be running (REDIS_URL, default redis://127.0.0.1:6379)")
}

async fn raw(cfg: &StreamsConfig) -> ::redis::aio::MultiplexedConnection {
    common::raw(&cfg.url).await
}

async fn cleanup(cfg: &StreamsConfig) {
    common::cleanup(&cfg.url, &cfg.prefix).await;
}

fn message(n: usize) -> QueueMessage {
    QueueMessage::new(
        Operation::Delivery,
        &serde_json::json!({"deliveryId": format!("d-{n}"), "n": n}),
        Some(format!("corr-{n}")),
    )
}

async fn send(q: &dyn MessageQueue, m: QueueMessage) {
    q.send(m).await.expect("send");
}

async fn receive_all(q: &dyn MessageQueue, want: usize, within: Duration) -> Vec<ReceivedMessage> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < want && tokio::time::Instant::now() < deadline {
        let batch = q
            .receive(ALL, want - got.len(), Duration::from_millis(200))
            .await
            .expect("receive");
        got.extend(batch);
    }
    got
}

async fn depth(q: &dyn MessageQueue) -> u64 {
    q.depth()
        .await
        .expect("depth")
        .expect("Redis Streams knows its depth")
}

#[tokio::test]
async fn passes_the_queue_contract() {
    let lock = Duration::from_millis(1000);
    let cfg = fresh_config(lock);
    let q = queue(&cfg).await;
    assert_eq!(q.backend(), "redis-streams");
    contract::run_all(q, lock).await;
    cleanup(&cfg).await;
}

/// The engine's Redis Streams queue: the streams `{stream}` and
/// `{stream}-expedited`, read expedited first.
#[tokio::test]
async fn with_an_expedited_lane_passes_the_queue_contract_and_overtakes_a_backlog() {
    let lock = Duration::from_millis(1000);
    let cfg = fresh_config(lock);
    let lanes = |stream: &str| {
        let mut normal = cfg.clone();
        normal.stream = stream.to_owned();
        let mut expedited = cfg.clone();
        expedited.stream = format!("{stream}-expedited");
        async move { Lanes::new(queue(&normal).await, queue(&expedited).await) }
    };
    let q = lanes("first").await;
    assert_eq!(q.backend(), "redis-streams");
    contract::run_all_with_lanes(q, lanes("second").await, lock).await;
    cleanup(&cfg).await;
}

#[tokio::test]
async fn messages_of_a_dead_consumer_are_taken_over_after_the_lock_duration() {
    let lock = Duration::from_millis(1000);
    let mut cfg_a = fresh_config(lock);
    cfg_a.consumer = "a".to_owned();
    let cfg_b = StreamsConfig {
        consumer: "b".to_owned(),
        ..cfg_a.clone()
    };
    let a = queue(&cfg_a).await;
    let b = queue(&cfg_b).await;
    // Both read the partition under the same epoch before anything is
    // pending, so `b` does not take it over as newly gained.
    for q in [&a, &b] {
        assert!(q
            .receive(ALL, 1, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty());
    }
    let mut sent = HashSet::new();
    for n in 0..5 {
        let m = message(n);
        sent.insert(m.message_id.clone());
        send(a.as_ref(), m).await;
    }

    // `a` takes all five and is "killed": it never settles them.
    let taken = receive_all(a.as_ref(), 5, Duration::from_secs(5)).await;
    assert_eq!(taken.len(), 5);
    assert!(taken.iter().all(|r| r.delivery_count == 1));
    let started = tokio::time::Instant::now();
    assert_eq!(a.pending().await.ok(), Some(5));
    assert_eq!(
        depth(b.as_ref()).await,
        0,
        "locked messages are not waiting"
    );

    // Within the lock duration `b` gets nothing.
    let early = b
        .receive(ALL, 10, Duration::from_millis(300))
        .await
        .expect("receive");
    assert!(early.is_empty(), "b took locked messages early: {early:?}");

    // Afterwards it takes all five over, as second deliveries.
    let got = receive_all(b.as_ref(), 5, Duration::from_secs(10)).await;
    assert!(started.elapsed() >= lock - Duration::from_millis(50));
    assert_eq!(got.len(), 5);
    let ids: HashSet<String> = got.iter().map(|r| r.message.message_id.clone()).collect();
    assert_eq!(ids, sent);
    assert!(
        got.iter().all(|r| r.delivery_count == 2),
        "delivery counts: {:?}",
        got.iter().map(|r| r.delivery_count).collect::<Vec<_>>()
    );
    for r in &got {
        b.complete(&r.lock).await.expect("complete");
    }
    // The dead consumer's locks are worthless now.
    for r in &taken {
        assert!(
            a.complete(&r.lock).await.is_err(),
            "a stale lock settled a message"
        );
    }
    assert_eq!(depth(a.as_ref()).await, 0);
    assert_eq!(a.pending().await.ok(), Some(0));
    let none = b
        .receive(ALL, 10, Duration::from_millis(200))
        .await
        .expect("receive");
    assert!(none.is_empty());
    cleanup(&cfg_a).await;
}

#[tokio::test]
async fn entries_carry_the_queue_message_fields() {
    let cfg = fresh_config(Duration::from_secs(30));
    let q = queue(&cfg).await;
    let stream = Keys::new(&cfg.prefix).stream(&cfg.stream);
    let mut c = raw(&cfg).await;

    // What `send` writes.
    let with_corr = message(1);
    let mut without_corr = message(2);
    without_corr.correlation_id = None;
    send(q.as_ref(), with_corr.clone()).await;
    send(q.as_ref(), without_corr.clone()).await;
    let entries: Vec<(String, HashMap<String, String>)> = ::redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .expect("XRANGE");
    assert_eq!(entries.len(), 2);
    let f = &entries[0].1;
    assert_eq!(f.get("id"), Some(&with_corr.message_id));
    assert_eq!(f.get("operation").map(String::as_str), Some("delivery"));
    assert_eq!(f.get("body"), Some(&with_corr.body));
    assert_eq!(f.get("correlation_id").map(String::as_str), Some("corr-1"));
    let enqueued = f
        .get("enqueued_at")
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    assert_eq!(
        enqueued.map(|t| t.with_timezone(&chrono::Utc)),
        Some(with_corr.enqueued_at)
    );
    assert!(!entries[1].1.contains_key("correlation_id"));

    // ...and it reads back intact.
    let got = receive_all(q.as_ref(), 2, Duration::from_secs(5)).await;
    let messages: Vec<&QueueMessage> = got.iter().map(|r| &r.message).collect();
    assert_eq!(messages, vec![&with_corr, &without_corr]);
    for r in &got {
        q.complete(&r.lock).await.expect("complete");
    }

    // An entry written by another producer with the same field names.
    let body = r#"{"deliveryId":"ext-1"}"#;
    ::redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("id")
        .arg("external-1")
        .arg("operation")
        .arg("cancel")
        .arg("body")
        .arg(body)
        .arg("enqueued_at")
        .arg("2024-05-08T20:00:00Z")
        .query_async::<String>(&mut c)
        .await
        .expect("XADD");
    let got = receive_all(q.as_ref(), 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let m = &got[0].message;
    assert_eq!(m.message_id, "external-1");
    assert_eq!(Operation::parse(&m.operation), Some(Operation::Cancel));
    assert_eq!(m.body, body);
    assert_eq!(m.routing_key(), "ext-1");
    assert_eq!(m.correlation_id, None);
    assert_eq!(m.enqueued_at.to_rfc3339(), "2024-05-08T20:00:00+00:00");
    assert_eq!(got[0].delivery_count, 1);
    q.complete(&got[0].lock).await.expect("complete");
    let len: u64 = ::redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut c)
        .await
        .expect("XLEN");
    assert_eq!(len, 0, "settled entries are deleted from the stream");
    cleanup(&cfg).await;
}

#[tokio::test]
async fn delayed_redelivery_waits_in_the_delayed_set() {
    let cfg = fresh_config(Duration::from_secs(30));
    let q = queue(&cfg).await;
    let delayed = Keys::new(&cfg.prefix).stream_delayed(&cfg.stream);
    let mut c = raw(&cfg).await;
    let sent = message(1);
    send(q.as_ref(), sent.clone()).await;

    let mut lock = None;
    for attempt in 1..=3u32 {
        let got = receive_all(q.as_ref(), 1, Duration::from_secs(5)).await;
        assert_eq!(got.len(), 1, "attempt {attempt}");
        assert_eq!(got[0].message, sent);
        assert_eq!(got[0].delivery_count, attempt);
        if attempt == 3 {
            lock = Some(got[0].lock.clone());
            break;
        }
        q.abandon(&got[0].lock, Duration::from_millis(400))
            .await
            .expect("abandon");
        assert!(
            q.abandon(&got[0].lock, Duration::ZERO).await.is_err(),
            "settled twice"
        );
        let parked: u64 = ::redis::cmd("ZCARD")
            .arg(&delayed)
            .query_async(&mut c)
            .await
            .expect("ZCARD");
        assert_eq!(parked, 1);
        assert_eq!(
            depth(q.as_ref()).await,
            1,
            "a delayed message counts as waiting"
        );
        assert_eq!(q.pending().await.ok(), Some(0));
    }
    let lock = lock.expect("no third delivery");
    q.renew(&lock).await.expect("renew");
    q.dead_letter(&lock, "test").await.expect("dead_letter");
    assert!(
        q.renew(&lock).await.is_err(),
        "a settled lock cannot be renewed"
    );
    assert_eq!(depth(q.as_ref()).await, 0);
    cleanup(&cfg).await;
}

#[tokio::test]
async fn a_lost_consumer_group_is_recreated() {
    let cfg = fresh_config(Duration::from_secs(30));
    let q = queue(&cfg).await;
    let stream = Keys::new(&cfg.prefix).stream(&cfg.stream);
    let mut c = raw(&cfg).await;
    // As after a restart of a server without persistence.
    ::redis::cmd("DEL")
        .arg(&stream)
        .query_async::<()>(&mut c)
        .await
        .expect("DEL");
    assert_eq!(depth(q.as_ref()).await, 0);
    let sent = message(1);
    send(q.as_ref(), sent.clone()).await;
    assert_eq!(depth(q.as_ref()).await, 1);
    let got = receive_all(q.as_ref(), 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, sent);
    q.complete(&got[0].lock).await.expect("complete");
    cleanup(&cfg).await;
}

#[tokio::test]
async fn a_long_wait_returns_as_soon_as_a_message_arrives() {
    let cfg = fresh_config(Duration::from_secs(30));
    let q = queue(&cfg).await;
    let q2 = Arc::clone(&q);
    let waiter = tokio::spawn(async move { q2.receive(ALL, 1, Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The blocked read has its own connection: other commands go through.
    let asked = tokio::time::Instant::now();
    assert_eq!(depth(q.as_ref()).await, 0);
    assert!(
        asked.elapsed() < Duration::from_millis(300),
        "depth waited {:?} behind the blocking read",
        asked.elapsed()
    );
    let started = tokio::time::Instant::now();
    send(q.as_ref(), message(1)).await;
    let got = waiter.await.expect("task").expect("receive");
    assert_eq!(got.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "woke after {:?}",
        started.elapsed()
    );
    q.complete(&got[0].lock).await.expect("complete");
    cleanup(&cfg).await;
}

/// The fences of `partitions` under `epoch`.
fn fences(partitions: &[u32], epoch: u64) -> Vec<Fence> {
    partitions
        .iter()
        .map(|&partition| Fence { partition, epoch })
        .collect()
}

#[tokio::test]
async fn each_partition_is_its_own_stream_and_moves_with_its_lease() {
    let mut cfg = fresh_config(Duration::from_secs(60));
    cfg.partitions = 4;
    cfg.consumer = "first".to_owned();
    let first = queue(&cfg).await;
    let second = queue(&StreamsConfig {
        consumer: "second".to_owned(),
        ..cfg.clone()
    })
    .await;
    let mut by_partition: HashMap<u32, HashSet<String>> = HashMap::new();
    for n in 0..40 {
        let m = message(n);
        let p = partition_of(&m.routing_key(), 4);
        by_partition
            .entry(p)
            .or_default()
            .insert(m.message_id.clone());
        send(first.as_ref(), m).await;
    }
    assert_eq!(by_partition.len(), 4, "40 ids spread over every partition");
    // Each message sits in its partition's stream.
    let mut c = raw(&cfg).await;
    for (p, ids) in &by_partition {
        let key = first.stream_key(*p).expect("a partition of the queue");
        let len: usize = ::redis::cmd("XLEN")
            .arg(key)
            .query_async(&mut c)
            .await
            .expect("XLEN");
        assert_eq!(len, ids.len(), "stream of partition {p}");
    }
    assert_eq!(depth(first.as_ref()).await, 40);

    // `first` holds partitions 0 and 1 and receives only their messages.
    let held = fences(&[0, 1], 1);
    let mut got: Vec<ReceivedMessage> = Vec::new();
    let want = by_partition[&0].len() + by_partition[&1].len();
    for _ in 0..20 {
        if got.len() >= want {
            break;
        }
        let batch = first
            .receive(&held, 100, Duration::from_millis(100))
            .await
            .expect("receive");
        got.extend(batch);
    }
    assert_eq!(got.len(), want);
    for r in &got {
        let p = r
            .partition
            .expect("a partitioned queue names the partition");
        assert!(p < 2, "read a message of partition {p}");
        assert!(by_partition[&p].contains(&r.message.message_id));
    }
    assert_eq!(first.pending().await.ok(), Some(want as u64));

    // `second` takes partition 1 over under a newer epoch: the messages
    // `first` holds unsettled there move at once, long before their locks
    // expire, and `first` can no longer settle them.
    let moved = second
        .receive(&fences(&[1], 2), 100, Duration::from_millis(500))
        .await
        .expect("receive");
    let ids: HashSet<String> = moved.iter().map(|r| r.message.message_id.clone()).collect();
    assert_eq!(ids, by_partition[&1]);
    assert!(moved.iter().all(|r| r.delivery_count == 2));
    for r in got.iter().filter(|r| r.partition == Some(1)) {
        assert!(
            first.complete(&r.lock).await.is_err(),
            "a stale holder settled a message"
        );
    }
    for r in got.iter().filter(|r| r.partition == Some(0)) {
        first.complete(&r.lock).await.expect("complete");
    }
    for r in &moved {
        second.complete(&r.lock).await.expect("complete");
    }
    // Partitions 2 and 3 are untouched until someone reads them.
    let rest = by_partition[&2].len() + by_partition[&3].len();
    assert_eq!(depth(first.as_ref()).await, rest as u64);
    assert_eq!(first.pending().await.ok(), Some(0));
    cleanup(&cfg).await;
}
