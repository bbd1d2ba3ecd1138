//! Contract tests of the MongoDB stores against a real MongoDB-wire server.
//!
//! Needs a server on 127.0.0.1:27017 (`scripts/services.sh` installs and
//! starts one) or `DD_TEST_MONGODB_URI`. Each test works in its own database,
//! `dd_test_<uuid>`, and drops it at the end, so tests run in parallel on one
//! server.

// Test code: a failed precondition should panic, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use dronedelivery_actors::domain::{DeliveryStage, Package, PackagePatch, PackageSize, Upserted};
use dronedelivery_actors::ports::{
    DeadLetter, DeadLetterSource, DeadLetterStore, HistoryEntry, HistoryStore, NotifyMeRequest,
    NotifyMeStore, Operation, PackageStore, QueueMessage, StoreError,
};
use dronedelivery_engine::adapters::mongo::{
    connect, MongoConfig, MongoStores, DEAD_LETTERS, HISTORY, NOTIFY_ME, PACKAGES,
};
use futures::future::join_all;
use mongodb::bson::{doc, Document};
use serde_json::json;

const METRES_PER_MILE: f64 = 1_609.344;

fn server_uri() -> String {
    std::env::var("DD_TEST_MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".to_owned())
}

/// A fresh database for one test.
struct TestDb {
    name: String,
    stores: MongoStores,
}

impl TestDb {
    async fn new() -> Self {
        let name = format!("dd_test_{}", uuid::Uuid::new_v4().simple());
        let stores = connect(&config(&name))
            .await
            .expect("connect to the MongoDB-wire server (DD_TEST_MONGODB_URI, default mongodb://127.0.0.1:27017)");
        Self { name, stores }
    }

    async fn drop_db(self) {
        self.stores
            .database()
            .drop()
            .await
            .expect("drop the test database");
    }
}

fn config(database: &str) -> MongoConfig {
    MongoConfig {
        uri: server_uri(),
        database: Some(database.to_owned()),
    }
}

/// A UTC instant with millisecond precision (what BSON dates keep).
fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, ms: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .expect("valid date")
        + Duration::milliseconds(ms)
}

fn package(id: &str, size: Option<PackageSize>, weight: Option<f64>, tag: Option<&str>) -> Package {
    Package {
        id: id.to_owned(),
        size,
        weight,
        tag: tag.map(str::to_owned),
    }
}

#[tokio::test]
async fn package_contract() {
    let t = TestDb::new().await;
    let store = &t.stores.packages;
    assert_eq!(store.backend(), "mongodb");
    store.ping().await.expect("ping");

    let first = package(
        "pkg-1",
        Some(PackageSize::Small),
        Some(2.5),
        Some("fragile"),
    );
    let created = store.upsert(&first).await.expect("upsert");
    assert_eq!(created, Upserted::Created);
    let got = store.get("pkg-1").await.expect("get");
    assert_eq!(got.as_ref(), Some(&first));

    // A second PUT replaces every field, absent ones included.
    let second = package("pkg-1", Some(PackageSize::Large), None, Some("heavy"));
    let updated = store.upsert(&second).await.expect("upsert");
    assert_eq!(updated, Upserted::Updated);
    let got = store.get("pkg-1").await.expect("get");
    assert_eq!(got.as_ref(), Some(&second));

    // An identical PUT is still an update (matched, nothing modified).
    let again = store.upsert(&second).await.expect("upsert");
    assert_eq!(again, Upserted::Updated);

    // PATCH changes only the given fields.
    let patch = PackagePatch {
        weight: Some(7.25),
        ..PackagePatch::default()
    };
    let patched = store.patch("pkg-1", &patch).await.expect("patch");
    let expected = package("pkg-1", Some(PackageSize::Large), Some(7.25), Some("heavy"));
    assert_eq!(patched.as_ref(), Some(&expected));
    let got = store.get("pkg-1").await.expect("get");
    assert_eq!(got.as_ref(), Some(&expected));

    let patch = PackagePatch {
        size: Some(PackageSize::Medium),
        tag: Some("t2".to_owned()),
        ..PackagePatch::default()
    };
    let patched = store.patch("pkg-1", &patch).await.expect("patch");
    let expected = package("pkg-1", Some(PackageSize::Medium), Some(7.25), Some("t2"));
    assert_eq!(patched.as_ref(), Some(&expected));

    // An empty patch of an existing package returns it unchanged.
    let same = store
        .patch("pkg-1", &PackagePatch::default())
        .await
        .expect("patch");
    assert_eq!(same.as_ref(), Some(&expected));

    // Unknown ids.
    let missing = store
        .patch(
            "nope",
            &PackagePatch {
                weight: Some(1.0),
                ..PackagePatch::default()
            },
        )
        .await
        .expect("patch");
    assert_eq!(missing, None);
    let missing = store
        .patch("nope", &PackagePatch::default())
        .await
        .expect("patch");
    assert_eq!(missing, None);
    assert_eq!(store.get("nope").await.expect("get"), None);

    // PUT with no body creates an empty package.
    let empty = package("pkg-empty", None, None, None);
    let created = store.upsert(&empty).await.expect("upsert");
    assert_eq!(created, Upserted::Created);
    let got = store.get("pkg-empty").await.expect("get");
    assert_eq!(got.as_ref(), Some(&empty));

    // The stored shape is the original's: {_id, size, weight, tag}.
    let raw = t
        .stores
        .database()
        .collection::<Document>(PACKAGES)
        .find_one(doc! { "_id": "pkg-1" })
        .await
        .expect("raw find")
        .expect("raw document missing");
    assert_eq!(
        raw,
        doc! { "_id": "pkg-1", "size": "Medium", "weight": 7.25, "tag": "t2" }
    );

    t.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_upserts_of_a_new_id_create_it_once() {
    let t = TestDb::new().await;
    let store = Arc::clone(&t.stores.packages);
    for round in 0..3 {
        let id = format!("race-{round}");
        let tasks = (0..20).map(|i| {
            let store = Arc::clone(&store);
            let p = package(&id, Some(PackageSize::Small), Some(f64::from(i)), None);
            tokio::spawn(async move { store.upsert(&p).await })
        });
        let outcomes: Vec<Upserted> = join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.expect("task").expect("upsert"))
            .collect();
        let created = outcomes.iter().filter(|o| **o == Upserted::Created).count();
        assert_eq!(created, 1, "round {round}: {outcomes:?}");
        let count = t
            .stores
            .database()
            .collection::<Document>(PACKAGES)
            .count_documents(doc! { "_id": &id })
            .await
            .expect("count");
        assert_eq!(count, 1);
    }
    t.drop_db().await;
}

/// Upserts that arrive together share commands (batched): each caller is
/// still answered for its own package, and every package is stored with
/// its own fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_upserts_are_each_answered_and_stored() {
    let t = TestDb::new().await;
    let store = Arc::clone(&t.stores.packages);
    // Half of the ids exist already.
    for i in (0..300).step_by(2) {
        let p = package(&format!("many-{i}"), None, Some(0.0), Some("old"));
        assert_eq!(store.upsert(&p).await.expect("seed"), Upserted::Created);
    }
    let tasks = (0..300).map(|i| {
        let store = Arc::clone(&store);
        let p = package(
            &format!("many-{i}"),
            Some(PackageSize::Medium),
            Some(f64::from(i)),
            Some("new"),
        );
        tokio::spawn(async move { (i, store.upsert(&p).await) })
    });
    for (i, outcome) in join_all(tasks).await.into_iter().map(|r| r.expect("task")) {
        let expected = if i % 2 == 0 {
            Upserted::Updated
        } else {
            Upserted::Created
        };
        assert_eq!(outcome.expect("upsert"), expected, "package {i}");
    }
    for i in [0, 1, 150, 299] {
        let stored = store
            .get(&format!("many-{i}"))
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(stored.weight, Some(f64::from(i)));
        assert_eq!(stored.tag.as_deref(), Some("new"));
    }
    t.drop_db().await;
}

fn letter(
    id: &str,
    attempts: u32,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    reason: &str,
) -> DeadLetter {
    let mut message = QueueMessage::new(
        Operation::Delivery,
        &json!({ "deliveryId": format!("d-{id}") }),
        Some("corr-1".to_owned()),
    );
    message.message_id = id.to_owned();
    message.enqueued_at = first;
    DeadLetter {
        id: id.to_owned(),
        message,
        reason: reason.to_owned(),
        attempts,
        first_seen: first,
        last_seen: last,
        source: DeadLetterSource::Engine,
        description: None,
    }
}

#[tokio::test]
async fn dead_letter_put_twice_keeps_one_document_and_first_seen() {
    let t = TestDb::new().await;
    let store = &t.stores.dead_letters;
    assert_eq!(store.backend(), "mongodb");
    store.ping().await.expect("ping");

    let t0 = at(2024, 3, 1, 10, 0, 123);
    let t1 = at(2024, 3, 1, 10, 5, 456);
    let first = letter("m-1", 3, t0, t0, "invalid body");
    store.put(first.clone()).await.expect("put");
    assert_eq!(store.get("m-1").await.expect("get"), Some(first.clone()));

    // Dead-lettered again: same id, later time, more attempts, new reason; a
    // different message body must not overwrite the first one.
    let mut second = letter("m-1", 5, t1, t1, "still invalid");
    second.message.body = "{\"other\":true}".to_owned();
    store.put(second).await.expect("put");

    assert_eq!(store.count().await.expect("count"), 1);
    let got = store
        .get("m-1")
        .await
        .expect("get")
        .expect("dead letter missing");
    assert_eq!(got.attempts, 5);
    assert_eq!(got.reason, "still invalid");
    assert_eq!(got.last_seen, t1);
    assert_eq!(got.first_seen, t0);
    assert_eq!(got.message, first.message);

    assert_eq!(store.get("m-2").await.expect("get"), None);
    t.drop_db().await;
}

#[tokio::test]
async fn dead_letters_list_newest_first_with_paging() {
    let t = TestDb::new().await;
    let store = &t.stores.dead_letters;
    assert!(store.list(0, 10).await.expect("list").is_empty());

    // Inserted out of time order: listing follows lastSeen, not insertion.
    for (id, minute) in [("a", 3), ("b", 1), ("c", 4), ("d", 2), ("e", 0)] {
        let when = at(2024, 5, 1, 12, minute, 0);
        store
            .put(letter(id, 1, when, when, "r"))
            .await
            .expect("put");
    }
    // "e" is dead-lettered again, latest of all.
    store
        .put(letter(
            "e",
            2,
            at(2024, 5, 1, 12, 0, 0),
            at(2024, 5, 1, 13, 0, 0),
            "r2",
        ))
        .await
        .expect("put");
    assert_eq!(store.count().await.expect("count"), 5);

    let ids = |v: Vec<DeadLetter>| v.into_iter().map(|l| l.id).collect::<Vec<_>>();
    let page = |offset, limit| async move { store.list(offset, limit).await.expect("list") };
    assert_eq!(ids(page(0, 10).await), ["e", "c", "a", "d", "b"]);
    assert_eq!(ids(page(0, 2).await), ["e", "c"]);
    assert_eq!(ids(page(2, 2).await), ["a", "d"]);
    assert_eq!(ids(page(4, 2).await), ["b"]);
    assert!(page(5, 2).await.is_empty());
    assert!(page(0, 0).await.is_empty());

    let indexes = t
        .stores
        .database()
        .collection::<Document>(DEAD_LETTERS)
        .list_index_names()
        .await
        .expect("list indexes");
    assert!(indexes.iter().any(|n| n == "lastSeen_-1"), "{indexes:?}");
    t.drop_db().await;
}

fn entry(
    id: &str,
    owner: &str,
    distance_m: f64,
    hours: f64,
    finished: DateTime<Utc>,
) -> HistoryEntry {
    HistoryEntry {
        delivery_id: id.to_owned(),
        owner_id: owner.to_owned(),
        drone_id: Some("drone-1".to_owned()),
        stage: DeliveryStage::Completed,
        distance_m,
        assigned_hours: hours,
        created_at: finished - Duration::hours(1),
        finished_at: finished,
        package_weight: 2.5,
    }
}

#[tokio::test]
async fn history_is_idempotent_and_utilization_sums_one_owner_month() {
    let t = TestDb::new().await;
    let store = &t.stores.history;
    assert_eq!(store.backend(), "mongodb");
    store.ping().await.expect("ping");

    let zero = store.utilization("o1", 2024, 2).await.expect("utilization");
    assert_eq!(zero.traveled_miles, 0.0);
    assert_eq!(zero.assigned_hours, 0.0);

    let entries = [
        // Counted: o1, February 2024 (first and last instants of the month).
        entry("d1", "o1", 1_609.344, 1.5, at(2024, 2, 1, 0, 0, 0)),
        entry("d2", "o1", 3_218.688, 2.0, at(2024, 2, 29, 23, 59, 59_999)),
        // Not counted: other month on each side, other owner.
        entry("d3", "o1", 100_000.0, 10.0, at(2024, 3, 1, 0, 0, 0)),
        entry("d4", "o1", 100_000.0, 10.0, at(2024, 1, 31, 23, 59, 59_999)),
        entry("d5", "o2", 100_000.0, 10.0, at(2024, 2, 10, 12, 0, 0)),
    ];
    for e in &entries {
        store.record(e).await.expect("record");
    }
    // Recorded again (a redelivered message): still counted once.
    store.record(&entries[0]).await.expect("record");
    let count = t
        .stores
        .database()
        .collection::<Document>(HISTORY)
        .count_documents(doc! { "_id": "d1" })
        .await
        .expect("count");
    assert_eq!(count, 1);

    let u = store.utilization("o1", 2024, 2).await.expect("utilization");
    assert!((u.traveled_miles - 3.0).abs() < 1e-9, "{u:?}");
    assert!((u.assigned_hours - 3.5).abs() < 1e-9, "{u:?}");

    // The invoicing summary of the same month: two completed (2.5 each),
    // and a cancelled one counted apart, its weight not delivered.
    let mut cancelled = entry("d7", "o1", 0.0, 0.0, at(2024, 2, 15, 8, 0, 0));
    cancelled.stage = DeliveryStage::Cancelled;
    store.record(&cancelled).await.expect("record");
    let summary = store.month_summary("o1", 2024, 2).await.expect("summary");
    assert_eq!(
        (summary.completed, summary.cancelled),
        (2, 1),
        "{summary:?}"
    );
    assert!((summary.total_weight - 5.0).abs() < 1e-9, "{summary:?}");
    let none = store.month_summary("o9", 2024, 2).await.expect("summary");
    assert_eq!(
        (none.completed, none.cancelled, none.total_weight),
        (0, 0, 0.0)
    );

    let o2 = store.utilization("o2", 2024, 2).await.expect("utilization");
    assert!((o2.traveled_miles - 100_000.0 / METRES_PER_MILE).abs() < 1e-9);
    assert!((o2.assigned_hours - 10.0).abs() < 1e-9);

    // December rolls over into January of the next year.
    store
        .record(&entry(
            "d6",
            "o3",
            1_609.344,
            1.0,
            at(2024, 12, 31, 23, 0, 0),
        ))
        .await
        .expect("record");
    store
        .record(&entry("d7", "o3", 1_609.344, 1.0, at(2025, 1, 1, 0, 0, 0)))
        .await
        .expect("record");
    let dec = store
        .utilization("o3", 2024, 12)
        .await
        .expect("utilization");
    assert!((dec.traveled_miles - 1.0).abs() < 1e-9 && (dec.assigned_hours - 1.0).abs() < 1e-9);

    // Re-recording with changed values replaces (last write wins).
    store
        .record(&entry(
            "d6",
            "o3",
            3_218.688,
            4.0,
            at(2024, 12, 31, 23, 0, 0),
        ))
        .await
        .expect("record");
    let dec = store
        .utilization("o3", 2024, 12)
        .await
        .expect("utilization");
    assert!((dec.traveled_miles - 2.0).abs() < 1e-9 && (dec.assigned_hours - 4.0).abs() < 1e-9);

    // Invalid months give zero rather than an error.
    for month in [0, 13] {
        let u = store
            .utilization("o1", 2024, month)
            .await
            .expect("utilization");
        assert_eq!((u.traveled_miles, u.assigned_hours), (0.0, 0.0));
    }

    let indexes = t
        .stores
        .database()
        .collection::<Document>(HISTORY)
        .list_index_names()
        .await
        .expect("list indexes");
    assert!(
        indexes.iter().any(|n| n == "ownerId_1_finishedAt_1"),
        "{indexes:?}"
    );
    t.drop_db().await;
}

#[tokio::test]
async fn notify_me_requests_are_listed_per_delivery_oldest_first() {
    let t = TestDb::new().await;
    let store = &t.stores.notify;
    assert_eq!(store.backend(), "mongodb");
    store.ping().await.expect("ping");

    let request = |delivery: &str, email: Option<&str>, sms: Option<&str>, when| NotifyMeRequest {
        delivery_id: delivery.to_owned(),
        email_address: email.map(str::to_owned),
        sms: sms.map(str::to_owned),
        created_at: when,
    };
    let later = request("d1", None, Some("+15550100"), at(2024, 6, 1, 9, 30, 0));
    let earlier = request("d1", Some("a@example.com"), None, at(2024, 6, 1, 9, 0, 0));
    let other = request(
        "d2",
        Some("b@example.com"),
        Some("+15550101"),
        at(2024, 6, 1, 8, 0, 0),
    );
    for r in [&later, &earlier, &other] {
        store.add(r).await.expect("add");
    }
    // The same request twice is two requests (no natural key).
    store.add(&later).await.expect("add");

    let d1 = store.list("d1").await.expect("list");
    assert_eq!(d1, vec![earlier, later.clone(), later]);
    let d2 = store.list("d2").await.expect("list");
    assert_eq!(d2, vec![other]);
    assert!(store.list("d3").await.expect("list").is_empty());

    let indexes = t
        .stores
        .database()
        .collection::<Document>(NOTIFY_ME)
        .list_index_names()
        .await
        .expect("list indexes");
    assert!(
        indexes.iter().any(|n| n.starts_with("deliveryId_1")),
        "{indexes:?}"
    );
    t.drop_db().await;
}

#[tokio::test]
async fn connect_twice_on_one_database_is_idempotent() {
    let t = TestDb::new().await;
    t.stores
        .packages
        .upsert(&package("keep", Some(PackageSize::Small), Some(1.0), None))
        .await
        .expect("upsert");

    // A second engine on the same database: indexes already exist.
    let again = connect(&config(&t.name)).await.expect("second connect");
    again.ping().await.expect("ping");
    let got = again.packages.get("keep").await.expect("get");
    assert_eq!(got.map(|p| p.weight), Some(Some(1.0)));
    for collection in [DEAD_LETTERS, HISTORY, NOTIFY_ME] {
        let names = again
            .database()
            .collection::<Document>(collection)
            .list_index_names()
            .await
            .expect("list indexes");
        // `_id_` plus exactly one index of ours.
        assert_eq!(names.len(), 2, "{collection}: {names:?}");
    }
    t.drop_db().await;
}

#[tokio::test]
async fn database_comes_from_the_uri_path_when_not_configured() {
    let name = format!("dd_test_{}", uuid::Uuid::new_v4().simple());
    let base = server_uri();
    let uri = format!("{}/{name}", base.trim_end_matches('/'));
    let stores = connect(&MongoConfig {
        uri,
        database: None,
    })
    .await
    .expect("connect");
    assert_eq!(stores.database().name(), name);
    let t = TestDb { name, stores };
    t.drop_db().await;
}

#[tokio::test]
async fn a_document_that_does_not_decode_is_corrupt() {
    let t = TestDb::new().await;
    t.stores
        .database()
        .collection::<Document>(PACKAGES)
        .insert_one(doc! { "_id": "bad", "size": "Enormous", "weight": "heavy" })
        .await
        .expect("insert");
    match t.stores.packages.get("bad").await {
        Err(StoreError::Corrupt(_)) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
    t.drop_db().await;
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // Nothing listens on port 1; fail fast instead of the 10 s default.
    let cfg = MongoConfig {
        uri: "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300&connectTimeoutMS=300".to_owned(),
        database: None,
    };
    match connect(&cfg).await {
        Err(StoreError::Unavailable(_)) => {}
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(_) => panic!("expected Unavailable, got a connection"),
    }
    let bad = MongoConfig {
        uri: "not-a-uri".to_owned(),
        database: None,
    };
    assert!(matches!(
        connect(&bad).await,
        Err(StoreError::Unavailable(_))
    ));
}
