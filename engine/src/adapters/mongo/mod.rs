//! MongoDB adapters: packages, dead letters, delivery history and notify-me
//! requests.
//!
//! Written against MongoDB's documented semantics with the official driver,
//! so a real MongoDB, Cosmos DB for MongoDB or a wire-compatible server (the
//! tests use SecantusDB, started by `scripts/services.sh`) can sit behind
//! `DD_MONGODB_URI` with no code change.
//!
//! # Database
//!
//! [`MongoConfig::database`] names it; when absent the database comes from the
//! URI path (`mongodb://host/dronedelivery`), as in the original Package
//! service, and defaults to [`DEFAULT_DATABASE`].
//!
//! # Collections, ids and indexes
//!
//! | collection | `_id` | document | indexes |
//! |---|---|---|---|
//! | [`PACKAGES`] | package id (string) | `{_id, size, weight, tag}` (the original's shape; absent fields are `null`) | `_id` only |
//! | [`DEAD_LETTERS`] | queue message id | `{_id, message, reason, attempts, firstSeen, lastSeen}` | `{lastSeen: -1}` (listing, newest first) |
//! | [`HISTORY`] | delivery id | `{_id, ownerId, droneId, stage, distanceM, assignedHours, createdAt, finishedAt}` | `{ownerId: 1, finishedAt: 1}` (utilisation of one owner in one month) |
//! | [`NOTIFY_ME`] | `ObjectId` | `{_id, deliveryId, emailAddress, sms, createdAt}` | `{deliveryId: 1, createdAt: 1}` (a delivery's requests, oldest first) |
//!
//! Timestamps are BSON dates (millisecond precision, so they sort and range
//! correctly); the dead letter's embedded queue message keeps its JSON shape.
//! Indexes are created by [`connect`] with fixed names and options, which
//! MongoDB treats as a no-op when they already exist, so any number of
//! engines may start against the same database.
//!
//! # The atomic package upsert
//!
//! The original service ran `insertOne` and, on a duplicate-key error, an
//! `updateOne` filtered by `{_id, tag}`: two steps, racy, and a different
//! `tag` for the same id turned into a 500. Here `PUT` is a single upsert
//! statement `{q: {_id}, u: {$set: {size, weight, tag}}, upsert: true}`
//! (sent with others, see below); the server lists it among `upserted` only
//! when it inserted, which gives
//! [`Upserted::Created`](dronedelivery_actors::domain::Upserted::Created)
//! versus `Updated` without a read. Every field is `$set`, `null` included,
//! so a `PUT` with no body still creates the document. Two concurrent
//! upserts of a new id may both miss the document and one insert then fails
//! with duplicate key (11000; MongoDB ≥ 4.2 retries this itself): the adapter
//! retries that write, which now matches and reports `Updated`, so exactly
//! one caller sees `Created`. The same retry covers the other upserts
//! (dead letters, history).
//!
//! # Batched upserts
//!
//! Package upserts and history records come from many tasks at once (the
//! workflow's workers, concurrent `PUT`s). Each store puts them through a
//! [`Batcher`](crate::adapters::batch::Batcher): what arrives together goes
//! to the server as **one `update` command carrying one statement per
//! upsert**, unordered ([`upsert_many`]). The server answers per statement:
//! `upserted` lists the indexes it inserted (`Created`; the others matched:
//! `Updated`), `writeErrors` the ones it refused. A refused statement fails
//! its own caller only; one refused as a duplicate key (two upserts of a
//! new id racing) is sent again, like the single upsert's retry. A command
//! that fails as a whole fails each of its callers with that error. The
//! command is the classic `update` with several statements, which every
//! MongoDB-compatible server takes (the newer `bulkWrite` command needs
//! MongoDB 8).
//!
//! Package reads are batched the same way: the ids asked together are read
//! with one `find` of `{_id: {$in: [...]}}` and each caller gets its own
//! package (or none).
//!
//! # Errors
//!
//! Driver and server errors become
//! [`StoreError::Unavailable`](dronedelivery_actors::ports::StoreError) (logged
//! at `warn`); a stored document that does not decode becomes
//! `StoreError::Corrupt`.

mod deadletters;
mod history;
mod notify;
mod packages;

use std::sync::Arc;
use std::time::Duration;

use dronedelivery_actors::ports::StoreError;
use mongodb::bson::{doc, Document};
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};

use crate::adapters::batch::{BatchConfig, Batcher};

pub use deadletters::MongoDeadLetterStore;
pub use history::MongoHistoryStore;
pub use notify::MongoNotifyMeStore;
pub use packages::MongoPackageStore;

/// Database used when neither the configuration nor the URI names one.
pub const DEFAULT_DATABASE: &str = "dronedelivery";
/// Packages collection (the original Package service's `COLLECTION_NAME` default).
pub const PACKAGES: &str = "packages";
/// Dead letters collection.
pub const DEAD_LETTERS: &str = "deadletters";
/// Finished deliveries collection.
pub const HISTORY: &str = "deliveryhistory";
/// Notify-me requests collection.
pub const NOTIFY_ME: &str = "notifymerequests";

/// Server selection timeout used when the URI sets none
/// (`serverSelectionTimeoutMS`): the driver's 30 s default would make a
/// readiness probe hang far longer than its own timeout.
const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait of a store's `ping` (what the readiness probe runs). While
/// the server is down the driver waits for it up to the server selection
/// timeout; the probe answers "not ready" well before, and before the
/// chart's 2 s probe timeout, so it reports the reason rather than timing
/// out. Connecting ([`connect`]) still waits the full selection timeout.
pub const PING_TIMEOUT: Duration = Duration::from_millis(1500);

/// Duplicate key (`E11000`).
const DUPLICATE_KEY: i32 = 11000;

/// Attempts of an upsert that lost an insert race (see the module docs).
const UPSERT_ATTEMPTS: usize = 3;

/// Where the MongoDB stores live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MongoConfig {
    /// Connection string, e.g. `mongodb://127.0.0.1:27017/dronedelivery`.
    pub uri: String,
    /// Database name; `None` takes it from the URI path, else
    /// [`DEFAULT_DATABASE`].
    pub database: Option<String>,
}

impl MongoConfig {
    /// A configuration taking the database from the URI.
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            database: None,
        }
    }
}

/// The MongoDB-backed stores, sharing one client (and its connection pool).
#[derive(Debug, Clone)]
pub struct MongoStores {
    /// Packages.
    pub packages: Arc<MongoPackageStore>,
    /// Dead letters.
    pub dead_letters: Arc<MongoDeadLetterStore>,
    /// Finished deliveries.
    pub history: Arc<MongoHistoryStore>,
    /// Notify-me requests.
    pub notify: Arc<MongoNotifyMeStore>,
    db: Database,
}

impl MongoStores {
    /// Builds the stores on an already configured database: pings it and
    /// creates the indexes (idempotent). Upserts are batched with the
    /// default [`BatchConfig`].
    pub async fn open(db: Database) -> Result<Self, StoreError> {
        Self::open_with(db, BatchConfig::default()).await
    }

    /// [`Self::open`] with upserts batched by `batch` (see the [module
    /// docs](self)).
    pub async fn open_with(db: Database, batch: BatchConfig) -> Result<Self, StoreError> {
        db.run_command(doc! { "ping": 1 })
            .await
            .map_err(|e| store_error("ping", e))?;
        ensure_indexes(&db).await?;
        Ok(Self {
            packages: Arc::new(MongoPackageStore::with_batching(&db, batch)),
            dead_letters: Arc::new(MongoDeadLetterStore::new(&db)),
            history: Arc::new(MongoHistoryStore::with_batching(&db, batch)),
            notify: Arc::new(MongoNotifyMeStore::new(&db)),
            db,
        })
    }

    /// The database the stores use.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Runs `{ping: 1}` on the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        ping(&self.db).await
    }
}

/// Connects, pings, creates indexes idempotently, returns the stores.
///
/// The database is [`MongoConfig::database`], else the URI's path, else
/// [`DEFAULT_DATABASE`]. An invalid URI or an unreachable server gives
/// [`StoreError::Unavailable`].
pub async fn connect(cfg: &MongoConfig) -> Result<MongoStores, StoreError> {
    connect_with(cfg, BatchConfig::default()).await
}

/// [`connect`] with upserts batched by `batch`.
pub async fn connect_with(
    cfg: &MongoConfig,
    batch: BatchConfig,
) -> Result<MongoStores, StoreError> {
    let mut options = ClientOptions::parse(&cfg.uri)
        .await
        .map_err(|e| store_error("parse MongoDB URI", e))?;
    if options.app_name.is_none() {
        options.app_name = Some("dronedelivery".to_owned());
    }
    if options.server_selection_timeout.is_none() {
        options.server_selection_timeout = Some(DEFAULT_SERVER_SELECTION_TIMEOUT);
    }
    let name = cfg
        .database
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| options.default_database.clone())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
    let client = Client::with_options(options).map_err(|e| store_error("create client", e))?;
    let stores = MongoStores::open_with(client.database(&name), batch).await?;
    tracing::info!(database = %name, "connected to MongoDB");
    Ok(stores)
}

/// Creates every collection's indexes. Same names and options each time, so
/// a repeated call is a no-op on the server.
async fn ensure_indexes(db: &Database) -> Result<(), StoreError> {
    let indexes: [(&str, Document, &str); 3] = [
        (DEAD_LETTERS, doc! { "lastSeen": -1 }, "lastSeen_-1"),
        (
            HISTORY,
            doc! { "ownerId": 1, "finishedAt": 1 },
            "ownerId_1_finishedAt_1",
        ),
        (
            NOTIFY_ME,
            doc! { "deliveryId": 1, "createdAt": 1 },
            "deliveryId_1_createdAt_1",
        ),
    ];
    for (collection, keys, name) in indexes {
        let model = IndexModel::builder()
            .keys(keys)
            .options(IndexOptions::builder().name(name.to_owned()).build())
            .build();
        db.collection::<Document>(collection)
            .create_index(model)
            .await
            .map_err(|e| store_error("create index", e))?;
    }
    Ok(())
}

/// `{ping: 1}` on `db`, given up after [`PING_TIMEOUT`].
pub(crate) async fn ping(db: &Database) -> Result<(), StoreError> {
    match tokio::time::timeout(PING_TIMEOUT, db.run_command(doc! { "ping": 1 })).await {
        Ok(answer) => answer.map(|_| ()).map_err(|e| store_error("ping", e)),
        Err(_) => Err(StoreError::Unavailable(format!(
            "mongodb ping: no answer within {PING_TIMEOUT:?}"
        ))),
    }
}

/// Maps a driver error: a document that does not (de)serialise is
/// [`StoreError::Corrupt`], everything else [`StoreError::Unavailable`].
pub(crate) fn store_error(op: &str, e: MongoError) -> StoreError {
    match e.kind.as_ref() {
        ErrorKind::BsonDeserialization(_) | ErrorKind::BsonSerialization(_) => {
            tracing::error!(operation = op, error = %e, "MongoDB document does not decode");
            StoreError::Corrupt(format!("{op}: {e}"))
        }
        _ => {
            tracing::warn!(operation = op, error = %e, "MongoDB operation failed");
            StoreError::Unavailable(format!("mongodb {op}: {e}"))
        }
    }
}

/// A value that does not convert to BSON: nothing to retry.
pub(crate) fn encode_error(op: &str, e: impl std::fmt::Display) -> StoreError {
    tracing::error!(operation = op, error = %e, "value does not encode to BSON");
    StoreError::Corrupt(format!("{op}: {e}"))
}

/// True for an error of the connection rather than of the command: the
/// command may not have reached the server, and sending it again is safe
/// when it is idempotent.
fn is_transient(e: &MongoError) -> bool {
    matches!(
        e.kind.as_ref(),
        ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. }
    ) || e.contains_label("RetryableWriteError")
}

/// True for a duplicate-key error, which an upsert gets when a concurrent
/// upsert inserted the same `_id` between its match and its insert.
pub(crate) fn is_duplicate_key(e: &MongoError) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// Runs an upsert, retrying it when it lost an insert race to a concurrent
/// upsert of the same `_id` (the retry then matches the inserted document).
pub(crate) async fn retry_upsert<T, F, Fut>(op: &str, mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = mongodb::error::Result<T>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if tries < UPSERT_ATTEMPTS && is_duplicate_key(&e) => {
                tracing::debug!(operation = op, "upsert lost an insert race; retrying");
            }
            Err(e) => return Err(store_error(op, e)),
        }
    }
}

/// One upsert statement of an `update` command: the document `_id` = `id`,
/// changed by `update` (an update with operators, or a replacement).
pub(crate) fn upsert_statement(id: &str, update: Document) -> Document {
    doc! { "q": { "_id": id }, "u": update, "upsert": true }
}

/// Runs `statements` (see [`upsert_statement`]) on `collection` as one
/// unordered `update` command and answers one result per statement, in
/// order: `Ok(true)` when it inserted, `Ok(false)` when it matched. A
/// statement refused as a duplicate key is sent again (up to
/// [`UPSERT_ATTEMPTS`] in all); another refusal fails that statement; a
/// failed command fails them all. See the [module docs](self).
pub(crate) async fn upsert_many(
    db: &Database,
    collection: &str,
    op: &str,
    statements: Vec<Document>,
) -> Vec<Result<bool, StoreError>> {
    let n = statements.len();
    let mut results: Vec<Option<Result<bool, StoreError>>> = vec![None; n];
    // Indexes (into `statements`) still to send.
    let mut todo: Vec<usize> = (0..n).collect();
    for attempt in 1..=UPSERT_ATTEMPTS {
        if todo.is_empty() {
            break;
        }
        let updates: Vec<mongodb::bson::Bson> = todo
            .iter()
            .filter_map(|&i| {
                statements
                    .get(i)
                    .cloned()
                    .map(mongodb::bson::Bson::Document)
            })
            .collect();
        let command = doc! { "update": collection, "updates": updates, "ordered": false };
        let reply = match db.run_command(command).await {
            Ok(reply) => reply,
            // Every statement is an idempotent upsert: a command lost on a
            // broken connection is sent again whole (what the driver's
            // retryable writes did for the single upsert).
            Err(e) if attempt < UPSERT_ATTEMPTS && is_transient(&e) => {
                tracing::debug!(operation = op, error = %e, "batched upsert interrupted; sending it again");
                continue;
            }
            Err(e) => {
                let e = store_error(op, e);
                for i in todo {
                    results[i] = Some(Err(e.clone()));
                }
                break;
            }
        };
        if let Ok(concern) = reply.get_document("writeConcernError") {
            let e = StoreError::Unavailable(format!("mongodb {op}: write concern: {concern}"));
            tracing::warn!(operation = op, error = %e, "MongoDB batch not acknowledged");
            for i in todo {
                results[i] = Some(Err(e.clone()));
            }
            break;
        }
        // Positions in this command → statement indexes.
        let sent = std::mem::take(&mut todo);
        let at = |position: &Document| {
            position
                .get_i32("index")
                .ok()
                .and_then(|p| usize::try_from(p).ok())
                .or_else(|| {
                    position
                        .get_i64("index")
                        .ok()
                        .and_then(|p| usize::try_from(p).ok())
                })
                .and_then(|p| sent.get(p).copied())
        };
        let mut inserted = vec![false; n];
        for u in reply.get_array("upserted").into_iter().flatten() {
            if let Some(i) = u.as_document().and_then(at) {
                inserted[i] = true;
            }
        }
        let mut refused: Vec<Option<Document>> = vec![None; n];
        for w in reply.get_array("writeErrors").into_iter().flatten() {
            if let Some(w) = w.as_document() {
                if let Some(i) = at(w) {
                    refused[i] = Some(w.clone());
                }
            }
        }
        for &i in &sent {
            match refused[i].take() {
                None => results[i] = Some(Ok(inserted[i])),
                Some(w) => {
                    let code = w.get_i32("code").unwrap_or_default();
                    if code == DUPLICATE_KEY && attempt < UPSERT_ATTEMPTS {
                        tracing::debug!(operation = op, "upsert lost an insert race; retrying");
                        todo.push(i);
                    } else {
                        let why = w.get_str("errmsg").unwrap_or("refused");
                        tracing::warn!(
                            operation = op,
                            code,
                            error = why,
                            "MongoDB refused an upsert"
                        );
                        results[i] = Some(Err(StoreError::Unavailable(format!(
                            "mongodb {op}: {why} (code {code})"
                        ))));
                    }
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(StoreError::Unavailable(format!(
                    "mongodb {op}: no answer for this statement"
                )))
            })
        })
        .collect()
}

/// A [`Batcher`] of upserts into `collection`: each call's statement is
/// made by `statement` (one that cannot be made fails alone), the others
/// share one command ([`upsert_many`]), and each caller is answered
/// `answer(inserted)`. What the package and history stores batch with.
pub(crate) fn upsert_batcher<T, R>(
    db: &Database,
    collection: &'static str,
    op: &'static str,
    batch: BatchConfig,
    statement: fn(&T) -> Result<Document, StoreError>,
    answer: fn(bool) -> R,
) -> Batcher<T, R>
where
    T: Send + 'static,
    R: Send + 'static,
{
    let db = db.clone();
    Batcher::spawn(op, batch, move |items: Vec<T>| {
        let db = db.clone();
        async move {
            let mut statements = Vec::with_capacity(items.len());
            // Each statement sent holds its place with an error, replaced
            // by its own answer below, in order.
            let unanswered = || {
                Err(StoreError::Unavailable(format!(
                    "mongodb {op}: no answer for this statement"
                )))
            };
            let mut results: Vec<Result<R, StoreError>> = Vec::with_capacity(items.len());
            let mut sent = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match statement(item) {
                    Ok(s) => {
                        statements.push(s);
                        sent.push(i);
                        results.push(unanswered());
                    }
                    Err(e) => results.push(Err(e)),
                }
            }
            if !statements.is_empty() {
                let answers = upsert_many(&db, collection, op, statements).await;
                for (i, a) in sent.into_iter().zip(answers) {
                    results[i] = a.map(answer);
                }
            }
            results
        }
    })
}

/// A typed collection of `db`.
fn collection<T: Send + Sync>(db: &Database, name: &str) -> Collection<T> {
    db.collection::<T>(name)
}

/// Reads a number that `$sum` may return as double, int or long.
fn number(d: &Document, key: &str) -> f64 {
    use mongodb::bson::Bson;
    match d.get(key) {
        Some(Bson::Double(v)) => *v,
        Some(Bson::Int32(v)) => f64::from(*v),
        // Sums of i64 beyond 2^53 lose precision; metres and hours never get there.
        #[allow(clippy::cast_precision_loss)]
        Some(Bson::Int64(v)) => *v as f64,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts connections and never answers (down, or
    /// unreachable behind a proxy): the driver would wait out its server
    /// selection timeout; the readiness ping gives up after [`PING_TIMEOUT`].
    #[tokio::test]
    async fn ping_gives_up_quickly_when_the_server_does_not_answer() -> Result<(), String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let options = ClientOptions::parse(format!(
            "mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=30000&connectTimeoutMS=30000"
        ))
        .await
        .map_err(|e| e.to_string())?;
        let client = Client::with_options(options).map_err(|e| e.to_string())?;
        let store = MongoPackageStore::new(&client.database("db"));
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            dronedelivery_actors::ports::PackageStore::ping(&store),
        )
        .await
        .map_err(|_| "the ping waited for the server selection timeout")?;
        match answer {
            Err(StoreError::Unavailable(why)) => assert!(why.contains("no answer"), "{why}"),
            other => panic!("expected an unavailable store, got {other:?}"),
        }
        silent.abort();
        Ok(())
    }

    /// Against the real server (`DD_TEST_MONGODB_URI`, as the stores'
    /// tests): in one command, a statement the server refuses fails alone,
    /// the others are applied and answered inserted or matched by their own
    /// index, and two statements of one new id insert it once.
    #[tokio::test]
    async fn a_batch_answers_each_statement_and_a_refused_one_fails_alone() -> Result<(), String> {
        let uri = std::env::var("DD_TEST_MONGODB_URI")
            .unwrap_or_else(|_| "mongodb://127.0.0.1:27017".to_owned());
        let client = Client::with_uri_str(&uri)
            .await
            .map_err(|e| e.to_string())?;
        let db = client.database(&format!("dd_test_batch_{}", std::process::id()));
        let set = |tag: &str| doc! { "$set": { "tag": tag } };
        let first = upsert_many(&db, "c", "test", vec![upsert_statement("a", set("1"))]).await;
        assert!(matches!(first[..], [Ok(true)]), "{first:?}");
        let statements = vec![
            upsert_statement("a", set("2")),
            upsert_statement("b", set("1")),
            upsert_statement("c", doc! { "$noSuchOperator": { "tag": "x" } }),
            upsert_statement("d", set("1")),
            upsert_statement("d", set("2")),
        ];
        let answers = upsert_many(&db, "c", "test", statements).await;
        let _ = db.drop().await;
        assert_eq!(answers.len(), 5);
        assert!(matches!(answers[0], Ok(false)), "a matched: {answers:?}");
        assert!(matches!(answers[1], Ok(true)), "b inserted: {answers:?}");
        assert!(answers[2].is_err(), "c refused: {answers:?}");
        assert!(
            matches!(answers[3], Ok(true)),
            "d inserted once: {answers:?}"
        );
        assert!(matches!(answers[4], Ok(false)), "then matched: {answers:?}");
        Ok(())
    }
}
