//! The `deliveryhistory` collection: one document per finished delivery,
//! `{_id: <delivery id>, ownerId, droneId, stage, distanceM, assignedHours,
//! packageWeight, createdAt, finishedAt}`, summed per owner and month for
//! utilisation and the invoicing summaries.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use dronedelivery_actors::domain::DeliveryStage;
use dronedelivery_actors::ports::{
    HistoryEntry, HistoryStore, MonthSummary, StoreResult, Utilization,
};
use futures::TryStreamExt;
use mongodb::bson::serde_helpers::chrono_datetime_as_bson_datetime;
use mongodb::bson::{self, doc, Document};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

use super::{
    collection, encode_error, number, ping, store_error, upsert_batcher, upsert_statement, HISTORY,
};
use crate::adapters::batch::{BatchConfig, Batcher};
use crate::adapters::memory::METRES_PER_MILE;

/// A finished delivery as stored (BSON dates, so months are date ranges on
/// the `{ownerId, finishedAt}` index).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryDoc {
    #[serde(rename = "_id")]
    delivery_id: String,
    owner_id: String,
    drone_id: Option<String>,
    stage: DeliveryStage,
    distance_m: f64,
    assigned_hours: f64,
    #[serde(default)]
    package_weight: f64,
    #[serde(with = "chrono_datetime_as_bson_datetime")]
    created_at: DateTime<Utc>,
    #[serde(with = "chrono_datetime_as_bson_datetime")]
    finished_at: DateTime<Utc>,
}

impl From<&HistoryEntry> for HistoryDoc {
    fn from(e: &HistoryEntry) -> Self {
        Self {
            delivery_id: e.delivery_id.clone(),
            owner_id: e.owner_id.clone(),
            drone_id: e.drone_id.clone(),
            stage: e.stage,
            distance_m: e.distance_m,
            assigned_hours: e.assigned_hours,
            package_weight: e.package_weight,
            created_at: e.created_at,
            finished_at: e.finished_at,
        }
    }
}

/// Finished deliveries in the `deliveryhistory` collection, recorded in
/// batches (see the [module docs](super)).
#[derive(Debug, Clone)]
pub struct MongoHistoryStore {
    db: Database,
    entries: Collection<HistoryDoc>,
    records: Batcher<HistoryEntry, ()>,
}

impl MongoHistoryStore {
    /// The store on `db` (indexes are made by [`super::connect`]), its
    /// records batched with the default [`BatchConfig`]. Needs a Tokio
    /// runtime.
    pub fn new(db: &Database) -> Self {
        Self::with_batching(db, BatchConfig::default())
    }

    /// The store with its records batched by `batch`.
    pub fn with_batching(db: &Database, batch: BatchConfig) -> Self {
        let records = upsert_batcher(
            db,
            HISTORY,
            "deliveryhistory.record",
            batch,
            record_of,
            |_| (),
        );
        Self {
            db: db.clone(),
            entries: collection(db, HISTORY),
            records,
        }
    }
}

/// The statement recording `entry`: the whole document replaced by delivery
/// id, so recording the same delivery again keeps one document.
fn record_of(entry: &HistoryEntry) -> StoreResult<Document> {
    let document = bson::to_document(&HistoryDoc::from(entry))
        .map_err(|e| encode_error("deliveryhistory.record", e))?;
    Ok(upsert_statement(&entry.delivery_id, document))
}

/// `[first day of the month, first day of the next month)` at midnight UTC,
/// or `None` for an invalid month.
fn month_range(year: i32, month: u32) -> Option<(bson::DateTime, bson::DateTime)> {
    let start = NaiveDate::from_ymd_opt(year, month, 1)?;
    let end = if month == 12 {
        NaiveDate::from_ymd_opt(year.checked_add(1)?, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)?
    };
    let at_midnight = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .map(|t| bson::DateTime::from_chrono(t.and_utc()))
    };
    Some((at_midnight(start)?, at_midnight(end)?))
}

/// The `$match` stage of an owner's deliveries that ended in a month (on
/// the `{ownerId, finishedAt}` index), or `None` for an invalid month.
fn month_match(owner_id: &str, year: i32, month: u32) -> Option<Document> {
    let (start, end) = month_range(year, month)?;
    Some(doc! { "$match": {
        "ownerId": owner_id,
        "finishedAt": { "$gte": start, "$lt": end },
    } })
}

#[async_trait]
impl HistoryStore for MongoHistoryStore {
    fn backend(&self) -> &'static str {
        "mongodb"
    }

    async fn record(&self, entry: &HistoryEntry) -> StoreResult<()> {
        self.records.submit(entry.clone()).await
    }

    async fn utilization(&self, owner_id: &str, year: i32, month: u32) -> StoreResult<Utilization> {
        let Some(matching) = month_match(owner_id, year, month) else {
            return Ok(Utilization::default());
        };
        let pipeline = [
            matching,
            doc! { "$group": {
                "_id": null,
                "distance": { "$sum": "$distanceM" },
                "hours": { "$sum": "$assignedHours" },
            } },
        ];
        let mut cursor = self
            .entries
            .aggregate(pipeline)
            .await
            .map_err(|e| store_error("deliveryhistory.utilization", e))?;
        let sums: Option<Document> = cursor
            .try_next()
            .await
            .map_err(|e| store_error("deliveryhistory.utilization", e))?;
        Ok(sums.map_or_else(Utilization::default, |d| Utilization {
            traveled_miles: number(&d, "distance") / METRES_PER_MILE,
            assigned_hours: number(&d, "hours"),
        }))
    }

    async fn month_summary(
        &self,
        owner_id: &str,
        year: i32,
        month: u32,
    ) -> StoreResult<MonthSummary> {
        let Some(matching) = month_match(owner_id, year, month) else {
            return Ok(MonthSummary::default());
        };
        let pipeline = [
            matching,
            doc! { "$group": {
                "_id": "$stage",
                "count": { "$sum": 1 },
                "weight": { "$sum": "$packageWeight" },
            } },
        ];
        let mut cursor = self
            .entries
            .aggregate(pipeline)
            .await
            .map_err(|e| store_error("deliveryhistory.summary", e))?;
        let mut summary = MonthSummary::default();
        while let Some(group) = cursor
            .try_next()
            .await
            .map_err(|e| store_error("deliveryhistory.summary", e))?
        {
            // The stage is stored as its code (see `DeliveryStage`).
            let stage = group.get("_id").cloned();
            let stage: Option<DeliveryStage> = stage.and_then(|s| bson::from_bson(s).ok());
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let count = number(&group, "count").max(0.0) as u64;
            if let Some(stage) = stage {
                summary.add(stage, count, number(&group, "weight"));
            }
        }
        Ok(summary)
    }

    async fn ping(&self) -> StoreResult<()> {
        ping(&self.db).await
    }
}

#[cfg(test)]
mod tests {
    use super::month_range;

    #[test]
    fn month_range_spans_one_calendar_month() {
        let (start, end) = month_range(2024, 12).expect("valid month");
        assert_eq!(
            start.try_to_rfc3339_string().ok().as_deref(),
            Some("2024-12-01T00:00:00Z")
        );
        assert_eq!(
            end.try_to_rfc3339_string().ok().as_deref(),
            Some("2025-01-01T00:00:00Z")
        );
        let (start, end) = month_range(2024, 2).expect("valid month");
        assert_eq!(
            start.try_to_rfc3339_string().ok().as_deref(),
            Some("2024-02-01T00:00:00Z")
        );
        assert_eq!(
            end.try_to_rfc3339_string().ok().as_deref(),
            Some("2024-03-01T00:00:00Z")
        );
        assert!(month_range(2024, 0).is_none());
        assert!(month_range(2024, 13).is_none());
    }
}
