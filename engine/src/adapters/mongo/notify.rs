//! The `notifymerequests` collection:
//! `{_id: ObjectId, deliveryId, emailAddress, sms, createdAt}`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dronedelivery_actors::ports::{NotifyMeRequest, NotifyMeStore, StoreResult};
use futures::TryStreamExt;
use mongodb::bson::doc;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::serde_helpers::chrono_datetime_as_bson_datetime;
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

use super::{collection, ping, store_error, NOTIFY_ME};

/// A notify-me request as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotifyMeDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
    delivery_id: String,
    #[serde(default)]
    email_address: Option<String>,
    #[serde(default)]
    sms: Option<String>,
    #[serde(with = "chrono_datetime_as_bson_datetime")]
    created_at: DateTime<Utc>,
}

impl From<NotifyMeDoc> for NotifyMeRequest {
    fn from(d: NotifyMeDoc) -> Self {
        Self {
            delivery_id: d.delivery_id,
            email_address: d.email_address,
            sms: d.sms,
            created_at: d.created_at,
        }
    }
}

/// Notify-me requests in the `notifymerequests` collection.
#[derive(Debug, Clone)]
pub struct MongoNotifyMeStore {
    db: Database,
    requests: Collection<NotifyMeDoc>,
}

impl MongoNotifyMeStore {
    /// The store on `db` (indexes are made by [`super::connect`]).
    pub fn new(db: &Database) -> Self {
        Self {
            db: db.clone(),
            requests: collection(db, NOTIFY_ME),
        }
    }

    /// Runs `{ping: 1}` on the database.
    pub async fn ping(&self) -> StoreResult<()> {
        ping(&self.db).await
    }
}

#[async_trait]
impl NotifyMeStore for MongoNotifyMeStore {
    fn backend(&self) -> &'static str {
        "mongodb"
    }

    async fn add(&self, request: &NotifyMeRequest) -> StoreResult<()> {
        let document = NotifyMeDoc {
            id: ObjectId::new(),
            delivery_id: request.delivery_id.clone(),
            email_address: request.email_address.clone(),
            sms: request.sms.clone(),
            created_at: request.created_at,
        };
        self.requests
            .insert_one(&document)
            .await
            .map(|_| ())
            .map_err(|e| store_error("notifymerequests.add", e))
    }

    async fn list(&self, delivery_id: &str) -> StoreResult<Vec<NotifyMeRequest>> {
        let cursor = self
            .requests
            .find(doc! { "deliveryId": delivery_id })
            .sort(doc! { "createdAt": 1, "_id": 1 })
            .await
            .map_err(|e| store_error("notifymerequests.list", e))?;
        cursor
            .map_ok(NotifyMeRequest::from)
            .try_collect()
            .await
            .map_err(|e| store_error("notifymerequests.list", e))
    }
}
