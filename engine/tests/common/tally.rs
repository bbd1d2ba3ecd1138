//! The counts every fault scenario reports, taken from the stores
//! themselves (tracking events in Redis, packages and dead letters in
//! MongoDB), not from the engine's answers.

use std::collections::HashMap;

use mongodb::bson::{doc, Document};
use redis::AsyncCommands;
use serde_json::Value;

/// What a fault run ends with.
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests answered 202.
    pub accepted: usize,
    /// Requests answered 503 with a problem document: not accepted, the
    /// client may retry.
    pub refused: usize,
    pub completed: usize,
    pub cancelled: usize,
    pub dead_lettered: u64,
    /// Deliveries with a `Created` or terminal event stored more than
    /// once, or two `HeadedToPickup` (drone assignments) without a
    /// reschedule between them.
    pub duplicates: usize,
    /// Accepted deliveries not terminal at the end, or missing their
    /// `Created` event or their terminal event.
    pub lost: usize,
    /// Package documents under the run's package id prefix.
    pub packages: u64,
    /// Each dead letter's operation and reason, for the report.
    pub dead_letter_reasons: Vec<String>,
}

impl Tally {
    /// Counts the deliveries `ids` (all accepted) from the stores under
    /// `prefix` in Redis and in the MongoDB database `db`; `unfinished`
    /// says which were still not terminal when the run stopped waiting.
    pub async fn count(
        redis_url: &str,
        prefix: &str,
        db: &mongodb::Database,
        ids: &[String],
        unfinished: impl Fn(&str) -> bool,
        package_prefix: &str,
    ) -> Self {
        let mut tally = Self {
            accepted: ids.len(),
            ..Self::default()
        };
        let mut r = super::raw(redis_url).await;
        for id in ids {
            let key = format!("{prefix}:delivery:{id}:events");
            let events: Vec<String> = r
                .lrange(&key, 0, -1)
                .await
                .expect("LRANGE of a delivery's events");
            let mut stages: HashMap<u64, usize> = HashMap::new();
            // Drone assignments since the last reschedule (which legitimately
            // sends a delivery to a drone again).
            let (mut assigned, mut reassigned) = (0, false);
            for event in &events {
                let v: Value = serde_json::from_str(event).expect("tracking events are JSON");
                if let Some(stage) = v["stage"].as_u64() {
                    *stages.entry(stage).or_default() += 1;
                    match stage {
                        1 => assigned = 0,
                        2 => {
                            assigned += 1;
                            reassigned |= assigned > 1;
                        }
                        _ => {}
                    }
                }
            }
            let n = |stage: u64| stages.get(&stage).copied().unwrap_or(0);
            let (created, terminal) = (n(0), n(4) + n(5));
            if created > 1 || reassigned || terminal > 1 {
                tally.duplicates += 1;
                eprintln!("duplicated events of {id}: {events:#?}");
            }
            if unfinished(id) || created == 0 || terminal == 0 {
                tally.lost += 1;
                // What the stores hold of it, so that a failure explains
                // itself: its record and its events.
                let record: Option<String> = r
                    .get(format!("{prefix}:delivery:{id}"))
                    .await
                    .unwrap_or_default();
                eprintln!(
                    "unfinished delivery {id}: record {}; events {events:#?}",
                    record.as_deref().unwrap_or("(none)")
                );
            }
            tally.completed += usize::from(n(4) > 0);
            tally.cancelled += usize::from(n(4) == 0 && n(5) > 0);
        }
        let letters =
            db.collection::<Document>(dronedelivery_engine::adapters::mongo::DEAD_LETTERS);
        tally.dead_lettered = letters
            .count_documents(doc! {})
            .await
            .expect("count dead letters");
        if tally.dead_lettered > 0 {
            let mut cursor = letters.find(doc! {}).await.expect("list dead letters");
            while let Ok(true) = cursor.advance().await {
                if let Ok(letter) = cursor.deserialize_current() {
                    let operation = letter
                        .get_document("message")
                        .ok()
                        .and_then(|m| m.get_str("operation").ok())
                        .unwrap_or("?")
                        .to_owned();
                    let reason = letter.get_str("reason").unwrap_or("?");
                    tally
                        .dead_letter_reasons
                        .push(format!("{operation}: {reason}"));
                }
            }
        }
        tally.packages = db
            .collection::<Document>(dronedelivery_engine::adapters::mongo::PACKAGES)
            .count_documents(doc! { "_id": { "$regex": format!("^{package_prefix}") } })
            .await
            .expect("count packages");
        tally
    }

    /// The one-line summary of a scenario.
    pub fn line(&self, scenario: &str) -> String {
        format!(
            "{scenario}: accepted={} completed={} cancelled={} dead_lettered={} \
             duplicates={} lost={} packages={} refused={}",
            self.accepted,
            self.completed,
            self.cancelled,
            self.dead_lettered,
            self.duplicates,
            self.lost,
            self.packages,
            self.refused
        ) + &if self.dead_letter_reasons.is_empty() {
            String::new()
        } else {
            format!(" dead letters: {:?}", self.dead_letter_reasons)
        }
    }

    /// Prints the summary (`.config/nextest.toml` shows the scenarios'
    /// output even when they pass).
    pub fn report(&self, scenario: &str) {
        println!("{}", self.line(scenario));
    }

    /// The promise: every accepted delivery finished, exactly once.
    pub fn assert_nothing_lost_or_duplicated(&self) {
        assert_eq!(self.duplicates, 0, "duplicated effects: {self:?}");
        assert_eq!(self.lost, 0, "lost deliveries: {self:?}");
        assert_eq!(
            self.completed + self.cancelled,
            self.accepted,
            "unfinished deliveries: {self:?}"
        );
    }
}
