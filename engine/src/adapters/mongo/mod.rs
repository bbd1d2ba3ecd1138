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
//! `tag` for the same id turned into a 500. Here `PUT` is a single
//! `updateOne({_id}, {$set: {size, weight, tag}}, {upsert: true})`; the server
//! reports `upsertedId` only when it inserted, which gives
//! [`Upserted::Created`](dronedelivery_actors::domain::Upserted::Created)
//! versus `Updated` without a read. Every field is `$set`, `null` included,
//! so a `PUT` with no body still creates the document. Two concurrent
//! upserts of a new id may both miss the document and one insert then fails
//! with duplicate key (11000; MongoDB ≥ 4.2 retries this itself): the adapter
//! retries that write, which now matches and reports `Updated`, so exactly
//! one caller sees `Created`. The same retry covers the other upserts
//! (dead letters, history).
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
    /// creates the indexes (idempotent).
    pub async fn open(db: Database) -> Result<Self, StoreError> {
        db.run_command(doc! { "ping": 1 })
            .await
            .map_err(|e| store_error("ping", e))?;
        ensure_indexes(&db).await?;
        Ok(Self {
            packages: Arc::new(MongoPackageStore::new(&db)),
            dead_letters: Arc::new(MongoDeadLetterStore::new(&db)),
            history: Arc::new(MongoHistoryStore::new(&db)),
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
    let stores = MongoStores::open(client.database(&name)).await?;
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
}
