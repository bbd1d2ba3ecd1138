//! The Azure Service Bus queue adapter against the local double of the
//! Service Bus REST API (`adapters::servicebus::double`), which keeps the
//! service's semantics: peek-lock with expiring locks, delivery counts, the
//! service's own dead-lettering past `maxDeliveryCount`, SAS checks.
//!
//! - the queue contract every adapter passes (lock duration 1 s);
//! - interoperability with the reference implementation's messages (JSON
//!   body, `operation` and `Diagnostic-Id` application properties), and the
//!   exact wire shape the adapter writes;
//! - least privilege: a Listen+Send key runs the queue (the depth is then
//!   unknown), a missing right is the service's `401`;
//! - the service's own dead letters: listed and replayed;
//! - failures: a wrong key, lost locks, and the crate's traps (large
//!   sequence numbers, cancelled receives);
//! - connection string parsing;
//! - `real_namespace`: opt-in, against a real namespace when
//!   `DD_TEST_SERVICEBUS_CONNECTION_STRING` (and optionally
//!   `DD_TEST_SERVICEBUS_QUEUE`) is set; it needs an **empty** queue and a
//!   policy with Send, Listen and Manage rights (depth reads the management
//!   API).

// Test code: a failed precondition should panic, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use dronedelivery_actors::domain::ownership::Fence;
use dronedelivery_actors::ports::{DeadLetterSource, MessageQueue, Operation, QueueMessage};
use dronedelivery_engine::adapters::contract;
use dronedelivery_engine::adapters::lanes::Lanes;
use dronedelivery_engine::adapters::servicebus::double::{
    spawn_double, spawn_double_with, DoubleConfig, DOUBLE_NAMESPACE, DOUBLE_POLICY_KEY,
    DOUBLE_POLICY_NAME, LISTEN_POLICY, LISTEN_SEND_POLICY, SEND_POLICY,
};
use dronedelivery_engine::adapters::servicebus::{ServiceBusConfig, ServiceBusQueue};
use tokio::time::Instant;

/// Partition 0, the only one of a queue that is not spread over several.
const ALL: &[Fence] = &[Fence {
    partition: 0,
    epoch: 1,
}];

fn queue_on(addr: std::net::SocketAddr, queue: &str) -> Arc<ServiceBusQueue> {
    ServiceBusQueue::new(ServiceBusConfig {
        namespace: DOUBLE_NAMESPACE.to_owned(),
        queue: queue.to_owned(),
        policy_name: DOUBLE_POLICY_NAME.to_owned(),
        policy_key: DOUBLE_POLICY_KEY.to_owned(),
        partitions: 1,
        endpoint: Some(format!("http://{addr}")),
    })
    .expect("adapter")
}

fn message(n: u32) -> QueueMessage {
    QueueMessage::new(
        Operation::Delivery,
        &serde_json::json!({"deliveryId": format!("d-{n}")}),
        Some(format!("corr-{n}")),
    )
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_queue_contract() {
    let (addr, _double) = spawn_double(Duration::from_secs(1), 10).await;
    let queue = queue_on(addr, "contract");
    assert_eq!(queue.backend(), "servicebus");
    contract::run_all(queue, Duration::from_secs(1)).await;
}

/// With `--servicebus-expedited-queue`: a second queue read first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_an_expedited_lane_passes_the_queue_contract_and_overtakes_a_backlog() {
    let (addr, _double) = spawn_double(Duration::from_secs(1), 10).await;
    let lanes = |name: &str| {
        Lanes::new(
            queue_on(addr, name),
            queue_on(addr, &format!("{name}-expedited")),
        )
    };
    let queue = lanes("first");
    assert_eq!(queue.backend(), "servicebus");
    contract::run_all_with_lanes(queue, lanes("second"), Duration::from_secs(1)).await;
}

/// What the original Java ingestion service put on the queue: the Gson body
/// and the `operation` / `Diagnostic-Id` application properties, which the
/// REST protocol renders as JSON-quoted headers. A message id assigned by
/// the producer's SDK, nothing else.
#[tokio::test]
async fn reads_messages_produced_by_the_reference_implementation() {
    let (addr, double) = spawn_double(Duration::from_secs(30), 10).await;
    let url = format!("http://{addr}/ingestion/messages");
    let delivery_body = r#"{"deliveryId":"d-77","ownerId":"myowner","pickupLocation":"my pickup","dropoffLocation":"drop off","pickupTime":"May 8, 2019 8:00:00 PM","expedited":true,"deadline":"","confirmationRequired":"None","packageInfo":{"packageId":"mypackage","size":"Small","weight":10.0,"tag":"mytag"}}"#;
    let sent = [
        (delivery_body, "\"delivery\""),
        ("\"d-77\"", "\"cancel\""),
        // Not quoted: taken as it is.
        (
            r#"{"deliveryId":"d-77","pickupLocation":"x"}"#,
            "reschedule",
        ),
    ];
    for (i, (body, operation)) in sent.iter().enumerate() {
        let status = http()
            .post(&url)
            .header("Authorization", double.authorization("/ingestion"))
            .header("BrokerProperties", format!(r#"{{"MessageId":"ri-{i}"}}"#))
            .header("operation", *operation)
            .header("Diagnostic-Id", "\"|4bf92f3577b34da6a3ce929d0e0e4736.1.\"")
            .body(*body)
            .send()
            .await
            .expect("raw send")
            .status();
        assert_eq!(status.as_u16(), 201);
    }
    let queue = queue_on(addr, "ingestion");
    assert_eq!(queue.depth().await.ok().flatten(), Some(3));
    let mut got = Vec::new();
    while got.len() < 3 {
        let batch = queue
            .receive(ALL, 3, Duration::from_secs(2))
            .await
            .expect("receive");
        assert!(!batch.is_empty(), "three messages were sent");
        got.extend(batch);
    }
    let ops: Vec<&str> = got.iter().map(|r| r.message.operation.as_str()).collect();
    assert_eq!(ops, ["delivery", "cancel", "reschedule"], "FIFO, unquoted");
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.message.body, sent[i].0, "body unchanged");
        assert_eq!(r.message.message_id, format!("ri-{i}"));
        assert_eq!(
            r.message.correlation_id.as_deref(),
            Some("|4bf92f3577b34da6a3ce929d0e0e4736.1.")
        );
        assert_eq!(r.message.routing_key(), "d-77");
        assert_eq!(r.delivery_count, 1);
        let age = chrono::Utc::now() - r.message.enqueued_at;
        assert!(age.num_seconds().abs() < 5, "EnqueuedTimeUtc was read");
        queue.complete(&r.lock).await.expect("complete");
    }
    assert_eq!(queue.depth().await.ok().flatten(), Some(0));
}

/// The exact request the adapter writes, read back with raw HTTP.
#[tokio::test]
async fn writes_the_service_bus_wire_format() {
    let (addr, double) = spawn_double(Duration::from_secs(30), 10).await;
    let queue = queue_on(addr, "wire");
    let sent = message(1);
    queue.send(sent.clone()).await.expect("send");
    let response = http()
        .post(format!("http://{addr}/wire/messages/head?timeout=0"))
        .header("Authorization", double.authorization("/wire"))
        .send()
        .await
        .expect("raw peek-lock");
    assert_eq!(response.status().as_u16(), 201);
    let headers = response.headers().clone();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("operation"), "\"delivery\"");
    assert_eq!(header("diagnostic-id"), "\"corr-1\"");
    assert!(header("content-type").starts_with("application/json"));
    let props: serde_json::Value =
        serde_json::from_str(&header("brokerproperties")).expect("BrokerProperties");
    assert_eq!(props["MessageId"], sent.message_id.as_str());
    assert_eq!(props["DeliveryCount"], 1);
    let location = header("location");
    let lock_token = props["LockToken"].as_str().expect("LockToken is a string");
    assert!(
        location.ends_with(&format!(
            "/wire/messages/{}/{lock_token}",
            props["SequenceNumber"]
        )),
        "{location}"
    );
    let body = response.text().await.expect("the peek-lock body");
    assert_eq!(body, sent.body, "the JSON text unchanged");
    // Complete through the raw lock URL.
    let status = http()
        .delete(&location)
        .header("Authorization", double.authorization("/wire"))
        .send()
        .await
        .expect("raw complete")
        .status();
    assert_eq!(status.as_u16(), 200);
    let status = http()
        .delete(&location)
        .header("Authorization", double.authorization("/wire"))
        .send()
        .await
        .expect("raw complete")
        .status();
    assert_eq!(status.as_u16(), 410, "a settled lock is gone");
}

#[tokio::test]
async fn the_double_refuses_requests_without_a_valid_signature() {
    let (addr, double) = spawn_double(Duration::from_secs(30), 10).await;
    let url = format!("http://{addr}/q/messages/head?timeout=0");
    let no_auth = http().post(&url).send().await.map(|r| r.status().as_u16());
    assert_eq!(no_auth.ok(), Some(401));
    let bearer = http()
        .post(&url)
        .header("Authorization", "Bearer abc")
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(bearer.ok(), Some(401));
    let other_queue = http()
        .post(&url)
        .header("Authorization", double.authorization("/other"))
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(other_queue.ok(), Some(401), "a token for another entity");
    let empty = http()
        .post(&url)
        .header("Authorization", double.authorization("/q"))
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(empty.ok(), Some(204), "an empty queue");
}

#[tokio::test]
async fn a_wrong_key_is_refused() {
    let (addr, double) = spawn_double(Duration::from_secs(30), 10).await;
    let wrong = ServiceBusQueue::new(ServiceBusConfig {
        policy_key: "not-the-key".to_owned(),
        ..double.config("secured")
    })
    .expect("adapter");
    let err = wrong.send(message(1)).await.err();
    assert!(
        err.as_ref().is_some_and(|e| e.to_string().contains("401")),
        "send must fail with 401: {err:?}"
    );
    let err = wrong
        .receive(ALL, 1, Duration::from_millis(100))
        .await
        .err();
    assert!(
        err.as_ref().is_some_and(|e| e.to_string().contains("401")),
        "receive must fail, not look like an empty queue: {err:?}"
    );
    assert!(wrong.depth().await.is_err());
    assert_eq!(double.counts("secured").active, 0, "nothing was accepted");
    // The right key works on the same queue.
    let right = queue_on(addr, "secured");
    right.send(message(2)).await.expect("send");
    assert_eq!(right.depth().await.ok().flatten(), Some(1));
}

#[tokio::test]
async fn the_service_dead_letters_past_max_delivery_count() {
    let (addr, double) = spawn_double(Duration::from_secs(30), 2).await;
    let queue = queue_on(addr, "poison");
    let sent = message(9);
    queue.send(sent.clone()).await.expect("send");
    for attempt in 1..=2 {
        let got = queue
            .receive(ALL, 1, Duration::from_secs(2))
            .await
            .expect("receive");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].delivery_count, attempt);
        queue
            .abandon(&got[0].lock, Duration::ZERO)
            .await
            .expect("abandon");
    }
    let none = queue
        .receive(ALL, 1, Duration::from_millis(300))
        .await
        .expect("receive");
    assert!(none.is_empty(), "dead-lettered by the service");
    let dead = double.dead_lettered("poison");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, sent.message_id);
    assert_eq!(dead[0].delivery_count, 2);
    assert_eq!(dead[0].reason, "MaxDeliveryCountExceeded");
    assert_eq!(dead[0].body, sent.body);
}

/// Partitioned entities have sequence numbers beyond `i32`; the crate's own
/// `BrokerProperties` decoding would fail after the message was locked.
#[tokio::test]
async fn large_sequence_numbers_do_not_strand_messages() {
    let cfg = DoubleConfig {
        first_sequence_number: 3 << 48,
        ..DoubleConfig::new(Duration::from_secs(30), 10)
    };
    let (addr, _double) = spawn_double_with(cfg).await.expect("double");
    let queue = queue_on(addr, "partitioned");
    queue.send(message(1)).await.expect("send");
    let got = queue
        .receive(ALL, 1, Duration::from_secs(2))
        .await
        .expect("receive");
    assert_eq!(got.len(), 1);
    assert!(
        got[0].lock.0.contains(&(3_i64 << 48).to_string()),
        "{:?}",
        got[0].lock
    );
    queue.complete(&got[0].lock).await.expect("complete");
}

/// The lock token is the lock URL: another adapter instance (another
/// process, after a restart) can settle it.
#[tokio::test]
async fn a_lock_can_be_settled_by_another_instance() {
    let (addr, _double) = spawn_double(Duration::from_secs(30), 10).await;
    let receiver = queue_on(addr, "shared");
    let other = queue_on(addr, "shared");
    receiver.send(message(1)).await.expect("send");
    let got = receiver
        .receive(ALL, 1, Duration::from_secs(2))
        .await
        .expect("receive");
    assert_eq!(got.len(), 1);
    other.renew(&got[0].lock).await.expect("renew elsewhere");
    other
        .complete(&got[0].lock)
        .await
        .expect("complete elsewhere");
    assert!(
        receiver.complete(&got[0].lock).await.is_err(),
        "already settled"
    );
    let foreign = dronedelivery_actors::ports::LockToken(
        "https://elsewhere.example/other/messages/1/abc".into(),
    );
    assert!(
        other.complete(&foreign).await.is_err(),
        "not a lock URL of this queue"
    );
}

/// A delay of several lock durations: the adapter keeps renewing the lock,
/// then unlocks; the service's delivery count goes on rising.
#[tokio::test]
async fn a_delay_longer_than_the_lock_is_honoured() {
    let (addr, double) = spawn_double(Duration::from_secs(1), 10).await;
    let queue = queue_on(addr, "delayed");
    queue.send(message(1)).await.expect("send");
    let first = queue
        .receive(ALL, 1, Duration::from_secs(2))
        .await
        .expect("receive");
    assert_eq!(first.len(), 1);
    let abandoned = Instant::now();
    queue
        .abandon(&first[0].lock, Duration::from_millis(3200))
        .await
        .expect("abandon");
    assert!(
        queue.complete(&first[0].lock).await.is_err(),
        "a handed-back lock no longer settles"
    );
    let early = queue
        .receive(ALL, 1, Duration::from_millis(2500))
        .await
        .expect("receive");
    assert!(
        early.is_empty(),
        "came back after {:?}",
        abandoned.elapsed()
    );
    assert_eq!(
        double.counts("delayed").locked,
        1,
        "held under a renewed lock"
    );
    let later = queue
        .receive(ALL, 1, Duration::from_secs(5))
        .await
        .expect("receive");
    assert_eq!(later.len(), 1);
    assert!(abandoned.elapsed() >= Duration::from_millis(3000));
    assert_eq!(later[0].delivery_count, 2, "one unlock, no expiry");
    queue.complete(&later[0].lock).await.expect("complete");
}

/// A receive whose caller stops waiting loses nothing: the message its
/// partition's receiver locks meanwhile goes to the next receive (not after
/// its 60 s lock), and closing the queue hands back what was received ahead.
#[tokio::test]
async fn a_dropped_receive_loses_nothing_and_close_hands_back() {
    let (addr, double) = spawn_double(Duration::from_secs(60), 10).await;
    let queue = queue_on(addr, "dropped");
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        queue.receive(ALL, 1, Duration::from_secs(3)),
    )
    .await;
    assert!(gave_up.is_err(), "nothing to receive yet");
    queue.send(message(1)).await.expect("send");
    let got = queue
        .receive(ALL, 1, Duration::from_secs(4))
        .await
        .expect("receive");
    assert_eq!(got.len(), 1, "received well before its 60 s lock expired");
    queue
        .abandon(&got[0].lock, Duration::ZERO)
        .await
        .expect("abandon");
    // The receiver locks it again at once, ahead of any caller.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = double.counts("dropped");
    assert_eq!((counts.active, counts.locked), (0, 1), "{counts:?}");
    queue.close().await;
    let counts = double.counts("dropped");
    assert_eq!((counts.active, counts.locked), (1, 0), "{counts:?}");
    assert!(
        queue
            .receive(ALL, 1, Duration::from_millis(300))
            .await
            .expect("receive")
            .is_empty(),
        "a closed queue receives nothing"
    );
}

fn partitioned_on(
    addr: std::net::SocketAddr,
    queue: &str,
    partitions: u32,
) -> Arc<ServiceBusQueue> {
    ServiceBusQueue::new(ServiceBusConfig {
        namespace: DOUBLE_NAMESPACE.to_owned(),
        queue: queue.to_owned(),
        policy_name: DOUBLE_POLICY_NAME.to_owned(),
        policy_key: DOUBLE_POLICY_KEY.to_owned(),
        partitions,
        endpoint: Some(format!("http://{addr}")),
    })
    .expect("adapter")
}

fn holding(partitions: &[u32]) -> Vec<Fence> {
    partitions
        .iter()
        .map(|&partition| Fence {
            partition,
            epoch: 1,
        })
        .collect()
}

/// Receives from `from` until `want` messages came or `within` passed.
async fn drain(
    queue: &ServiceBusQueue,
    from: &[Fence],
    want: usize,
    within: Duration,
) -> Vec<dronedelivery_actors::ports::ReceivedMessage> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        got.extend(
            queue
                .receive(from, want - got.len(), Duration::from_millis(200))
                .await
                .expect("receive"),
        );
    }
    got
}

/// Each partition is its own queue (`{queue}` for partition 0,
/// `{queue}-{n}` for the others): a message goes to its delivery's
/// partition, an engine reads only the partitions it holds, and a partition
/// given up hands what was received ahead of it straight to its next holder
/// instead of after the lock duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_queues_and_each_holder_reads_its_own() {
    use dronedelivery_actors::domain::ownership::partition_of;
    let (addr, double) = spawn_double(Duration::from_secs(30), 10).await;
    let a = partitioned_on(addr, "parts", 4);
    let b = partitioned_on(addr, "parts", 4);
    let mut per_partition = [0u64; 4];
    for n in 0..40 {
        let m = message(n);
        per_partition[partition_of(&m.routing_key(), 4) as usize] += 1;
        a.send(m).await.expect("send");
    }
    assert!(per_partition.iter().all(|&n| n > 0), "{per_partition:?}");
    let queues = ["parts", "parts-1", "parts-2", "parts-3"];
    for (p, name) in queues.iter().enumerate() {
        assert_eq!(double.counts(name).active, per_partition[p], "{name}");
    }
    assert_eq!(
        b.depth().await.ok().flatten(),
        Some(40),
        "depth sums the partitions"
    );

    let (from_a, from_b) = (holding(&[0, 1]), holding(&[2, 3]));
    let want_a = (per_partition[0] + per_partition[1]) as usize;
    let got_a = drain(&a, &from_a, want_a, Duration::from_secs(10)).await;
    let got_b = drain(&b, &from_b, 40 - want_a, Duration::from_secs(10)).await;
    assert_eq!((got_a.len(), got_b.len()), (want_a, 40 - want_a));
    for (got, mine) in [(&got_a, [0, 1]), (&got_b, [2, 3])] {
        for r in got {
            let home = partition_of(&r.message.routing_key(), 4);
            assert_eq!(r.partition, Some(home), "{:?}", r.message.message_id);
            assert!(mine.contains(&home), "read a partition not held");
        }
    }
    for r in got_a.iter().chain(&got_b) {
        a.complete(&r.lock).await.expect("complete");
    }

    // A holds everything and its receivers lock ahead; then it gives up 2
    // and 3, and B, taking them, gets their messages at once.
    let nothing = a
        .receive(&holding(&[0, 1, 2, 3]), 1, Duration::from_millis(300))
        .await
        .expect("receive");
    assert!(nothing.is_empty());
    let later: Vec<QueueMessage> = (100..140).map(message).collect();
    let moving = later
        .iter()
        .filter(|m| partition_of(&m.routing_key(), 4) >= 2)
        .count();
    for m in &later {
        b.send(m.clone()).await.expect("send");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        double.counts("parts-2").locked + double.counts("parts-3").locked > 0,
        "A's receivers locked partitions 2 and 3 ahead"
    );
    let kept = drain(&a, &from_a, 40 - moving, Duration::from_secs(10)).await;
    let started = Instant::now();
    let moved = drain(&b, &from_b, moving, Duration::from_secs(20)).await;
    assert_eq!((kept.len(), moved.len()), (40 - moving, moving));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "given back, not left to its 30 s lock: {:?}",
        started.elapsed()
    );
    assert!(moved.iter().all(|r| r.partition.is_some_and(|p| p >= 2)));
    for r in kept.iter().chain(&moved) {
        b.complete(&r.lock).await.expect("complete");
    }
    for name in queues {
        let c = double.counts(name);
        assert_eq!((c.active, c.locked), (0, 0), "{name}: {c:?}");
    }
}

#[tokio::test]
async fn waits_are_kept() {
    let (addr, _double) = spawn_double(Duration::from_secs(30), 10).await;
    let queue = queue_on(addr, "waits");
    for (wait, max) in [(250, 700), (1500, 2300)] {
        let started = Instant::now();
        let got = queue
            .receive(ALL, 5, Duration::from_millis(wait))
            .await
            .expect("receive");
        let took = started.elapsed();
        assert!(got.is_empty());
        assert!(
            took >= Duration::from_millis(wait) && took < Duration::from_millis(max),
            "wait {wait} ms took {took:?}"
        );
    }
    // A long poll wakes as soon as a message arrives.
    let waiter = {
        let q = Arc::clone(&queue);
        tokio::spawn(async move { q.receive(ALL, 1, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    queue.send(message(1)).await.expect("send");
    let got = waiter.await.expect("join").expect("receive");
    assert_eq!(got.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn shutdown_ends_pending_long_polls() {
    let (addr, double) = spawn_double(Duration::from_secs(30), 10).await;
    let queue = queue_on(addr, "stopping");
    let waiter = {
        let q = Arc::clone(&queue);
        tokio::spawn(async move { q.receive(ALL, 1, Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    double.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), waiter).await;
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(queue.send(message(1)).await.is_err(), "the double is gone");
}

#[test]
fn parses_connection_strings() {
    let with_entity = "Endpoint=sb://i-abc123.servicebus.windows.net/;SharedAccessKeyName=WorkflowServiceAccessKey;SharedAccessKey=AbC+dE/f12=;EntityPath=i-abc123";
    let cfg = ServiceBusConfig::from_connection_string(with_entity, None).expect("parse");
    assert_eq!(cfg.namespace, "i-abc123");
    assert_eq!(cfg.queue, "i-abc123");
    assert_eq!(cfg.policy_name, "WorkflowServiceAccessKey");
    assert_eq!(cfg.policy_key, "AbC+dE/f12=", "the '=' padding is kept");
    assert_eq!(cfg.endpoint, None);
    assert!(
        !format!("{cfg:?}").contains("AbC+dE"),
        "the key is not printed"
    );
    let same = ServiceBusConfig::from_connection_string(with_entity, Some("i-abc123"));
    assert_eq!(same.ok(), Some(cfg));
    assert!(
        ServiceBusConfig::from_connection_string(with_entity, Some("other")).is_err(),
        "EntityPath and queue disagree"
    );

    let without = "endpoint=sb://NS1.servicebus.windows.net;sharedaccesskeyname=Root;sharedaccesskey=k==;TransportType=Amqp";
    let cfg = ServiceBusConfig::from_connection_string(without, Some("deliveries")).expect("parse");
    assert_eq!(cfg.namespace, "ns1");
    assert_eq!(cfg.queue, "deliveries");
    assert_eq!(cfg.policy_key, "k==");
    assert!(
        ServiceBusConfig::from_connection_string(without, None).is_err(),
        "no queue"
    );

    for bad in [
        "SharedAccessKeyName=a;SharedAccessKey=b;EntityPath=q",
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKey=b;EntityPath=q",
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=a;EntityPath=q",
        "Endpoint=sb://localhost;SharedAccessKeyName=a;SharedAccessKey=b;EntityPath=q",
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessSignature=SharedAccessSignature sr=x;EntityPath=q",
        "garbage",
    ] {
        let err = ServiceBusConfig::from_connection_string(bad, Some("q"));
        assert!(err.is_err(), "{bad}");
    }
    let err = ServiceBusConfig::from_connection_string(
        "Endpoint=sb://localhost;SharedAccessKeyName=a;SharedAccessKey=topsecret",
        Some("q"),
    )
    .expect_err("a host outside servicebus.windows.net is refused")
    .to_string();
    assert!(
        !err.contains("topsecret"),
        "errors do not carry the key: {err}"
    );
}

/// Against a real namespace, when configured. The queue must be empty and
/// the policy needs Send, Listen and Manage rights. Note that the service
/// refreshes `ActiveMessageCount` asynchronously, so the contract's depth
/// checks can race it.
#[tokio::test]
async fn real_namespace() {
    let Ok(connection_string) = std::env::var("DD_TEST_SERVICEBUS_CONNECTION_STRING") else {
        println!("skipped: set DD_TEST_SERVICEBUS_CONNECTION_STRING (and optionally DD_TEST_SERVICEBUS_QUEUE)");
        return;
    };
    let queue_name = std::env::var("DD_TEST_SERVICEBUS_QUEUE").ok();
    let cfg = ServiceBusConfig::from_connection_string(&connection_string, queue_name.as_deref())
        .expect("DD_TEST_SERVICEBUS_CONNECTION_STRING");
    let queue = ServiceBusQueue::new(cfg).expect("adapter");
    contract::send_receive_complete(queue.as_ref()).await;
    contract::abandon_redelivers_with_a_higher_count(queue.as_ref()).await;
}

/// A key with Listen and Send (what the reference implementation's services
/// used) runs the queue; only the depth needs Manage, and without it the
/// depth is unknown rather than an error. A key lacking a right gets the
/// service's `401`.
#[tokio::test]
async fn a_listen_send_key_runs_the_queue_and_the_depth_is_unknown() {
    let (_addr, double) = spawn_double(Duration::from_secs(30), 10).await;
    let engine = ServiceBusQueue::new(double.config_with("least", LISTEN_SEND_POLICY)).unwrap();
    engine.send(message(1)).await.expect("send with Send");
    let got = engine
        .receive(ALL, 1, Duration::from_secs(2))
        .await
        .expect("receive with Listen");
    assert_eq!(got.len(), 1);
    engine.complete(&got[0].lock).await.expect("complete");
    assert_eq!(engine.depth().await.ok(), Some(None), "no Manage: unknown");
    assert_eq!(engine.depth().await.ok(), Some(None), "and not asked again");
    assert!(engine.ping().await.is_ok(), "healthy from its own requests");
    let root = ServiceBusQueue::new(double.config("least")).unwrap();
    assert_eq!(root.depth().await.ok(), Some(Some(0)), "Manage reads it");

    let sender = ServiceBusQueue::new(double.config_with("least", SEND_POLICY)).unwrap();
    sender.send(message(2)).await.expect("send with Send");
    let err = sender
        .receive(ALL, 1, Duration::from_millis(200))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("401"), "receive without Listen: {err}");
    assert!(
        sender.ping().await.is_err(),
        "the failing receive is what ping reports"
    );
    let listener = ServiceBusQueue::new(double.config_with("least", LISTEN_POLICY)).unwrap();
    let err = listener.send(message(3)).await.err().map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("401")),
        "send without Send: {err:?}"
    );
    // The double answers what the service answers.
    let res = http()
        .get(format!("{}/least?api-version=2017-04", double.endpoint()))
        .header(
            "authorization",
            double.authorization_as("/least", LISTEN_SEND_POLICY),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body = res.text().await.unwrap_or_default();
    assert!(body.contains("'Manage' claim(s) are required"), "{body}");
}

/// Messages Service Bus dead-letters on its own (past `MaxDeliveryCount`,
/// and expired on a queue that dead-letters expired messages) are in its
/// dead-letter subqueue: listed with the service's reason and description,
/// left in place by a listing, and replayed (sent back, then removed from
/// the subqueue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_own_dead_letters_are_listed_and_replayed() {
    let cfg = DoubleConfig {
        default_time_to_live: Some(Duration::from_secs(2)),
        dead_lettering_on_message_expiration: true,
        ..DoubleConfig::new(Duration::from_secs(30), 2)
    };
    let (_addr, double) = spawn_double_with(cfg).await.expect("double");
    // One queue whose message is abandoned past the limit, one whose
    // message nobody reads (no receiver reads it ahead) until it expires.
    let queue = ServiceBusQueue::new(double.config_with("dlq", LISTEN_SEND_POLICY)).unwrap();
    let idle = ServiceBusQueue::new(double.config_with("ttl", LISTEN_SEND_POLICY)).unwrap();
    let poison = message(1);
    queue.send(poison.clone()).await.expect("send");
    for _ in 0..2 {
        let got = queue.receive(ALL, 1, Duration::from_secs(2)).await.unwrap();
        assert_eq!(got.len(), 1);
        queue.abandon(&got[0].lock, Duration::ZERO).await.unwrap();
    }
    let expiring = message(2);
    idle.send(expiring.clone()).await.expect("send");
    let deadline = Instant::now() + Duration::from_secs(10);
    let expired = loop {
        let letters = idle.dead_letters(10).await.expect("list");
        if letters.len() == 1 || Instant::now() > deadline {
            assert_eq!(letters.len(), 1, "{letters:#?}");
            break letters[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(expired.message.message_id, expiring.message_id);
    assert_eq!(expired.reason, "TTLExpiredException");
    assert!(expired.id.starts_with("servicebus:ttl:"), "{}", expired.id);
    let letters = queue.dead_letters(10).await.expect("list");
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let exhausted = letters[0].clone();
    assert_eq!(exhausted.message.message_id, poison.message_id);
    assert_eq!(exhausted.reason, "MaxDeliveryCountExceeded");
    assert!(exhausted.description.is_some());
    assert_eq!(exhausted.source, DeadLetterSource::Broker);
    assert_eq!(exhausted.message.operation, "delivery");
    assert_eq!(exhausted.message.body, poison.body);
    assert_eq!(exhausted.message.correlation_id, poison.correlation_id);
    assert!(
        exhausted.id.starts_with("servicebus:dlq:"),
        "{}",
        exhausted.id
    );
    // A listing leaves them where they are, for Azure's tools too.
    assert_eq!(double.counts("dlq").dead_lettered, 1);
    assert_eq!(queue.dead_letters(10).await.unwrap().len(), 1);

    let replayed = idle
        .replay_dead_letter(&expired.id)
        .await
        .expect("replay")
        .expect("found");
    assert_eq!(replayed.message_id, expiring.message_id);
    assert!(
        double.dead_lettered("ttl").is_empty(),
        "removed from the subqueue after the send"
    );
    let back = idle.receive(ALL, 1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(back.len(), 1, "back on the queue");
    assert_eq!(back[0].message.message_id, expiring.message_id);
    assert_eq!(back[0].message.body, expiring.body);
    idle.complete(&back[0].lock).await.unwrap();
    assert!(
        idle.replay_dead_letter(&expired.id)
            .await
            .unwrap()
            .is_none(),
        "replayed once"
    );
    assert!(
        queue
            .replay_dead_letter(&expired.id)
            .await
            .unwrap()
            .is_none(),
        "another queue's dead letter"
    );
    assert_eq!(double.dead_lettered("dlq").len(), 1);
    assert!(queue
        .replay_dead_letter("not-ours")
        .await
        .unwrap()
        .is_none());
}

/// Concurrent sends to one queue share batch sends (group commit): far
/// fewer requests than messages, and every message arrives once, with its
/// id, body and custom properties, exactly as a single send delivers them.
/// With batching off every message is its own request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_share_batch_sends_and_arrive_as_single_sends_do() {
    const N: u32 = 300;
    let (_addr, double) = spawn_double(Duration::from_secs(30), 10).await;
    let queue = ServiceBusQueue::new(double.config_with("grouped", LISTEN_SEND_POLICY)).unwrap();
    let before = double.send_requests();
    let sent: Vec<QueueMessage> = (0..N)
        .map(|n| {
            let mut m = message(n);
            if n % 2 == 0 {
                m.traceparent = Some(format!("00-{n:032x}-{n:016x}-01"));
            }
            m
        })
        .collect();
    let sends: Vec<_> = sent
        .iter()
        .cloned()
        .map(|m| {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move { queue.send(m).await })
        })
        .collect();
    for send in sends {
        send.await.expect("send task").expect("send");
    }
    let requests = double.send_requests() - before;
    assert!(
        requests <= u64::from(N) / 3,
        "{N} concurrent sends took {requests} requests"
    );
    let got = drain(&queue, ALL, N as usize, Duration::from_secs(20)).await;
    assert_eq!(got.len(), N as usize, "every message arrives");
    let mut by_id: std::collections::HashMap<_, _> = sent
        .into_iter()
        .map(|m| (m.message_id.clone(), m))
        .collect();
    for r in &got {
        let want = by_id
            .remove(&r.message.message_id)
            .expect("sent once, received once");
        assert_eq!(r.message.body, want.body);
        assert_eq!(r.message.operation, "delivery");
        assert_eq!(r.message.correlation_id, want.correlation_id);
        assert_eq!(r.message.traceparent, want.traceparent);
        queue.complete(&r.lock).await.expect("complete");
    }
    assert!(by_id.is_empty());

    let alone = ServiceBusQueue::with_send_batch(
        double.config_with("alone", LISTEN_SEND_POLICY),
        dronedelivery_engine::adapters::batch::BatchConfig::unbatched(),
    )
    .unwrap();
    let before = double.send_requests();
    let sends: Vec<_> = (0..20)
        .map(|n| {
            let alone = Arc::clone(&alone);
            tokio::spawn(async move { alone.send(message(n)).await })
        })
        .collect();
    for send in sends {
        send.await.expect("send task").expect("send");
    }
    assert_eq!(double.send_requests() - before, 20, "batching off");
}

/// Messages larger together than one batch request may carry are split
/// over several requests, and all arrive; a batch refused by the service
/// (no Send right) fails every send it carried and enqueues nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_are_split_and_a_refused_batch_fails_its_sends() {
    let (_addr, double) = spawn_double(Duration::from_secs(30), 10).await;
    let queue = ServiceBusQueue::new(double.config_with("large", LISTEN_SEND_POLICY)).unwrap();
    let before = double.send_requests();
    let sends: Vec<_> = (0..12)
        .map(|n| {
            let queue = Arc::clone(&queue);
            let big = QueueMessage::new(
                Operation::Delivery,
                &serde_json::json!({"deliveryId": format!("big-{n}"), "pad": "x".repeat(60_000)}),
                None,
            );
            tokio::spawn(async move { queue.send(big).await })
        })
        .collect();
    for send in sends {
        send.await.expect("send task").expect("send");
    }
    let requests = double.send_requests() - before;
    assert!(
        requests >= 4,
        "720 kB in at most 192 KiB per request: {requests}"
    );
    let got = drain(&queue, ALL, 12, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 12);

    let listener = ServiceBusQueue::new(double.config_with("refused", LISTEN_POLICY)).unwrap();
    let sends: Vec<_> = (0..40)
        .map(|n| {
            let listener = Arc::clone(&listener);
            tokio::spawn(async move { listener.send(message(n)).await })
        })
        .collect();
    for send in sends {
        let err = send.await.expect("send task").err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("401")),
            "every send of a refused batch fails: {err:?}"
        );
    }
    assert_eq!(double.counts("refused").active, 0, "nothing enqueued");
}

/// The double's batch send as the protocol has it: a JSON array whose
/// `UserProperties` come back as a single send's custom-property headers;
/// a batch with one bad message enqueues none of it; one over the size
/// limit is `403`.
#[tokio::test]
async fn the_double_speaks_the_batch_send_protocol() {
    let (addr, double) = spawn_double(Duration::from_secs(30), 10).await;
    let post = |body: String| {
        http()
            .post(format!("http://{addr}/raw/messages"))
            .header("Authorization", double.authorization("/raw"))
            .header("Content-Type", "application/vnd.microsoft.servicebus.json")
            .body(body)
            .send()
    };
    let batch = serde_json::json!([
        {"Body": "{\"deliveryId\":\"b-1\"}", "BrokerProperties": {"MessageId": "m-1", "ContentType": "application/json"},
         "UserProperties": {"operation": "delivery", "Diagnostic-Id": "c-1"}},
        {"Body": "second", "UserProperties": {"operation": "cancel"}},
    ]);
    assert_eq!(post(batch.to_string()).await.unwrap().status(), 201);
    assert_eq!(double.counts("raw").active, 2);
    let response = http()
        .post(format!("http://{addr}/raw/messages/head?timeout=0"))
        .header("Authorization", double.authorization("/raw"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("operation"), "\"delivery\"");
    assert_eq!(header("diagnostic-id"), "\"c-1\"");
    assert!(header("content-type").starts_with("application/json"));
    assert!(header("brokerproperties").contains("\"MessageId\":\"m-1\""));
    assert_eq!(response.text().await.unwrap(), "{\"deliveryId\":\"b-1\"}");

    for bad in [
        serde_json::json!([{"Body": "ok"}, {"Body": 7}]).to_string(),
        serde_json::json!([{"Body": "ok"}, {"Body": "x", "UserProperties": []}]).to_string(),
        serde_json::json!([]).to_string(),
        "not json".to_owned(),
    ] {
        assert_eq!(post(bad.clone()).await.unwrap().status(), 400, "{bad}");
    }
    let huge = serde_json::json!([{"Body": "x".repeat(300 * 1024)}]).to_string();
    assert_eq!(post(huge).await.unwrap().status(), 403);
    let counts = double.counts("raw");
    assert_eq!(
        counts.active + counts.locked,
        2,
        "nothing of a refused batch"
    );
}
