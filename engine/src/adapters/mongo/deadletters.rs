//! The `deadletters` collection:
//! `{_id: <message id>, message, reason, attempts, firstSeen, lastSeen}`.

use std::future::IntoFuture;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dronedelivery_actors::ports::{
    DeadLetter, DeadLetterSource, DeadLetterStore, QueueMessage, StoreResult,
};
use futures::TryStreamExt;
use mongodb::bson::serde_helpers::chrono_datetime_as_bson_datetime;
use mongodb::bson::{self, doc, to_bson};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

use super::{collection, encode_error, ping, retry_upsert, store_error, DEAD_LETTERS};

/// A dead letter as stored. The timestamps are BSON dates (millisecond
/// precision) so that listing sorts by time.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeadLetterDoc {
    #[serde(rename = "_id")]
    id: String,
    message: QueueMessage,
    reason: String,
    attempts: u32,
    #[serde(with = "chrono_datetime_as_bson_datetime")]
    first_seen: DateTime<Utc>,
    #[serde(with = "chrono_datetime_as_bson_datetime")]
    last_seen: DateTime<Utc>,
}

impl From<DeadLetterDoc> for DeadLetter {
    fn from(d: DeadLetterDoc) -> Self {
        Self {
            id: d.id,
            message: d.message,
            reason: d.reason,
            attempts: d.attempts,
            first_seen: d.first_seen,
            last_seen: d.last_seen,
            source: DeadLetterSource::Engine,
            description: None,
        }
    }
}

/// Dead letters in the `deadletters` collection, listed newest `lastSeen`
/// first.
#[derive(Debug, Clone)]
pub struct MongoDeadLetterStore {
    db: Database,
    letters: Collection<DeadLetterDoc>,
}

impl MongoDeadLetterStore {
    /// The store on `db` (indexes are made by [`super::connect`]).
    pub fn new(db: &Database) -> Self {
        Self {
            db: db.clone(),
            letters: collection(db, DEAD_LETTERS),
        }
    }
}

#[async_trait]
impl DeadLetterStore for MongoDeadLetterStore {
    fn backend(&self) -> &'static str {
        "mongodb"
    }

    async fn put(&self, letter: DeadLetter) -> StoreResult<()> {
        let message = to_bson(&letter.message).map_err(|e| encode_error("deadletters.put", e))?;
        let filter = doc! { "_id": &letter.id };
        // The first dead-lettering keeps the message and when it happened; a
        // repeat only moves reason, attempts and lastSeen.
        let update = doc! {
            "$setOnInsert": {
                "firstSeen": bson::DateTime::from_chrono(letter.first_seen),
                "message": message,
            },
            "$set": {
                "reason": &letter.reason,
                "attempts": i64::from(letter.attempts),
                "lastSeen": bson::DateTime::from_chrono(letter.last_seen),
            },
        };
        retry_upsert("deadletters.put", || {
            self.letters
                .update_one(filter.clone(), update.clone())
                .upsert(true)
                .into_future()
        })
        .await
        .map(|_| ())
    }

    async fn list(&self, offset: usize, limit: usize) -> StoreResult<Vec<DeadLetter>> {
        if limit == 0 {
            // A limit of 0 means "no limit" to MongoDB.
            return Ok(Vec::new());
        }
        let cursor = self
            .letters
            .find(doc! {})
            .sort(doc! { "lastSeen": -1, "_id": -1 })
            .skip(u64::try_from(offset).unwrap_or(u64::MAX))
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(|e| store_error("deadletters.list", e))?;
        cursor
            .map_ok(DeadLetter::from)
            .try_collect()
            .await
            .map_err(|e| store_error("deadletters.list", e))
    }

    async fn get(&self, id: &str) -> StoreResult<Option<DeadLetter>> {
        self.letters
            .find_one(doc! { "_id": id })
            .await
            .map(|d| d.map(DeadLetter::from))
            .map_err(|e| store_error("deadletters.get", e))
    }

    async fn count(&self) -> StoreResult<u64> {
        self.letters
            .count_documents(doc! {})
            .await
            .map_err(|e| store_error("deadletters.count", e))
    }

    async fn remove(&self, id: &str) -> StoreResult<bool> {
        self.letters
            .delete_one(doc! { "_id": id })
            .await
            .map(|r| r.deleted_count > 0)
            .map_err(|e| store_error("deadletters.remove", e))
    }

    async fn ping(&self) -> StoreResult<()> {
        ping(&self.db).await
    }
}
